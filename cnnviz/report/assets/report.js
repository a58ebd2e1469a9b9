/* cnnviz report: table sorting and filtering, keyboard navigation, the "show all maps" grids and
   the channel pages. Plain DOM, no libraries, no network. Every text from the data goes in with
   textContent (never innerHTML), so names from files cannot inject markup. */
(function () {
  "use strict";
  var TILE = 96;
  var body = document.body;
  var page = body.getAttribute("data-page");
  var D = window.CNNVIZ_LAYER || null;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "\u2013";
    if (Array.isArray(v)) return v.join("\u00d7");
    if (typeof v === "number") return Number(v.toPrecision(3)).toString();
    return String(v);
  }
  function pad2(n) { return (n < 10 ? "0" : "") + n; }
  function channelHref(layer, c) { return "channel-" + pad2(layer) + ".html#" + c; }

  /* a box showing tile c of a sprite at `px` (longer side), built from the sprite's geometry */
  function crop(src, g, c, px, extraClass) {
    var s = px / Math.max(g.tw, g.th);
    var x = (c % g.cols) * (g.tw + g.gap), y = Math.floor(c / g.cols) * (g.th + g.gap);
    var box = el("span", { "class": "crop" + (s >= 1 ? " px" : "") + (extraClass ? " " + extraClass : "") });
    box.style.width = (g.tw * s) + "px";
    box.style.height = (g.th * s) + "px";
    var img = el("img", { src: src, alt: "", loading: "lazy", decoding: "async" });
    img.style.width = (g.width * s) + "px";
    img.style.height = (g.height * s) + "px";
    img.style.left = (-x * s) + "px";
    img.style.top = (-y * s) + "px";
    box.appendChild(img);
    return box;
  }
  /* the same tile stretched over its whole (positioned) parent, in percentages */
  function cropFill(src, g, c, cls) {
    var x = (c % g.cols) * (g.tw + g.gap), y = Math.floor(c / g.cols) * (g.th + g.gap);
    var box = el("span", { "class": "crop fill px " + cls });
    var img = el("img", { src: src, alt: "", loading: "lazy", decoding: "async" });
    img.style.width = (100 * g.width / g.tw) + "%";
    img.style.height = (100 * g.height / g.th) + "%";
    img.style.left = (-100 * x / g.tw) + "%";
    img.style.top = (-100 * y / g.th) + "%";
    box.appendChild(img);
    return box;
  }
  function rectCrop(src, pw, ph, r, px) {  /* r = [page, x, y, w, h] in picture pixels */
    var s = Math.min(px / Math.max(r[3], r[4]), 64);
    var box = el("span", { "class": "crop" + (s >= 1 ? " px" : "") });
    box.style.width = (r[3] * s) + "px";
    box.style.height = Math.max(r[4] * s, 8) + "px";
    var img = el("img", { src: src, alt: "", loading: "lazy", decoding: "async" });
    img.style.width = (pw * s) + "px";
    img.style.height = (ph * s * Math.max(1, 8 / (r[4] * s))) + "px";
    img.style.left = (-r[1] * s) + "px";
    img.style.top = (-r[2] * s * Math.max(1, 8 / (r[4] * s))) + "px";
    box.appendChild(img);
    return box;
  }

  /* ------------------------------------------------------------ keyboard navigation */
  function go(attr) {
    var href = body.getAttribute("data-" + attr);
    if (href) { window.location.href = href; return true; }
    return false;
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    var t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    var k = ev.key, done = false;
    if (page === "channel") {
      if (k === "ArrowLeft" || k === "p") done = stepChannel(-1);
      else if (k === "ArrowRight" || k === "n") done = stepChannel(1);
      else if (k === "[") done = go("prevlayer");
      else if (k === "]") done = go("nextlayer");
      else if (k === "u" || k === "ArrowUp" || k === "Escape") done = go("up");
    } else {
      if (k === "ArrowLeft" || k === "p") done = go("prev");
      else if (k === "ArrowRight" || k === "n") done = go("next");
      else if (k === "u" || k === "Escape") done = go("up");
    }
    if (done) ev.preventDefault();
  });

  /* ------------------------------------------------------------ model page: the layer table */
  function setupTable() {
    var table = document.getElementById("layer-table");
    if (!table) return;
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var heads = table.tHead.rows[0].cells;
    var filter = document.getElementById("filter");
    var count = document.getElementById("count");
    function key(row, i, type) {
      var c = row.cells[i];
      if (type === "num") return parseFloat(c.getAttribute("data-v"));
      return c.textContent.toLowerCase();
    }
    Array.prototype.forEach.call(heads, function (th, i) {
      th.querySelector("button").addEventListener("click", function () {
        var type = th.getAttribute("data-type");
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        var sorted = rows.slice().sort(function (a, b) {
          var x = key(a, i, type), y = key(b, i, type);
          if (x < y) return -dir;
          if (x > y) return dir;
          return key(a, 0, "num") - key(b, 0, "num");
        });
        sorted.forEach(function (r) { tbody.appendChild(r); });
      });
    });
    function apply() {
      var q = filter.value.trim().toLowerCase(), n = 0;
      rows.forEach(function (r) {
        var hay = r.cells[0].textContent + " " + r.cells[1].textContent + " " + r.cells[2].textContent;
        var show = !q || hay.toLowerCase().indexOf(q) >= 0;
        r.hidden = !show;
        if (show) n++;
      });
      count.textContent = n + " of " + rows.length + " layers";
    }
    filter.addEventListener("input", apply);
    apply();
  }

  /* ------------------------------------------------------------ layer page */
  function overlayLinks(host, pw, ph, rects, hrefOf, titleOf) {
    /* transparent links over a picture: one per rectangle [x, y, w, h] (picture pixels) */
    var layer = el("div", { "class": "overlay" });
    rects.forEach(function (r, i) {
      if (!r) return;
      var a = el("a", { href: hrefOf(i), title: titleOf(i), "aria-label": titleOf(i) });
      a.style.left = (100 * r[0] / pw) + "%";
      a.style.top = (100 * r[1] / ph) + "%";
      a.style.width = (100 * r[2] / pw) + "%";
      a.style.height = (100 * r[3] / ph) + "%";
      layer.appendChild(a);
    });
    host.appendChild(layer);
  }
  function setupLayer() {
    if (!D) return;
    var L = D.layer.index;
    if (D.filters && D.filters.rects) {
      var hosts = document.querySelectorAll(".overlay-host.filters");
      Array.prototype.forEach.call(hosts, function (host) {
        var p = parseInt(host.getAttribute("data-page"), 10), pg = D.filters.pages[p];
        var rects = D.filters.rects.map(function (r) { return r[0] === p && r[3] > 0 ? [r[1], r[2], r[3], r[4]] : null; });
        overlayLinks(host, pg.w, pg.h, rects, function (c) { return channelHref(L, c); },
                     function (c) { return "filter " + c; });
      });
    }
    Array.prototype.forEach.call(document.querySelectorAll("button.show-all"), function (btn) {
      btn.addEventListener("click", function () {
        var n = parseInt(btn.getAttribute("data-image"), 10), im = D.images[n], m = im.map;
        var box = btn.parentNode.nextElementSibling;
        if (!box.hasChildNodes()) {
          var g = m.sprite;
          var fit = Math.min(8, 1100 / g.width);  /* about 1100 px wide: whole pixels when enlarging */
          var s = fit >= 1 ? Math.floor(fit) : fit;
          var host = el("div", { "class": "overlay-host all" + (s >= 1 ? " px" : "") });
          host.style.width = (g.width * s) + "px";
          var img = el("img", { src: m.src, alt: "all " + D.layer.out + " maps of " + im.name });
          img.style.width = (g.width * s) + "px";
          host.appendChild(img);
          var rects = [];
          for (var c = 0; c < D.layer.out; c++) {
            rects.push([(c % g.cols) * (g.tw + g.gap), Math.floor(c / g.cols) * (g.th + g.gap), g.tw, g.th]);
          }
          overlayLinks(host, g.width, g.height, rects, function (c) { return channelHref(L, c); },
                       function (c) { return "channel " + c + ": mean " + fmt(m.mean[c]) + ", max " + fmt(m.max[c]); });
          box.appendChild(el("p", { "class": "hint" }, "channels in order, " + g.cols + " per row; hover for numbers, click to open a channel"));
          box.appendChild(host);
        }
        box.hidden = !box.hidden;
        btn.textContent = (box.hidden ? "show all " : "hide all ") + D.layer.out + " maps";
      });
    });
  }

  /* ------------------------------------------------------------ channel page */
  var current = 0, opacity = 0;
  function overlayOpacity() { return opacity; }
  function channelFromHash() {
    var c = parseInt((window.location.hash || "#0").slice(1), 10);
    if (!(c >= 0)) c = 0;
    return Math.min(c, D.layer.out - 1);
  }
  function stepChannel(d) {
    var c = current + d;
    if (c < 0 || c >= D.layer.out) return false;
    window.location.hash = "#" + c;
    return true;
  }
  function rank(values, c) {
    var v = values[c], r = 1;
    for (var i = 0; i < values.length; i++) if (values[i] > v || (values[i] === v && i < c)) r++;
    return r;
  }
  function renderChannel() {
    var c = channelFromHash();
    current = c;
    var L = D.layer.index;
    document.getElementById("ch-num").textContent = String(c);
    document.title = "channel " + c + " \u00b7 " + D.layer.title + " \u00b7 " + D.model.name;
    var input = document.getElementById("ch-input");
    input.max = String(D.layer.out - 1);
    input.value = String(c);
    var prev = document.getElementById("ch-prev"), next = document.getElementById("ch-next");
    prev.href = "#" + Math.max(0, c - 1);
    next.href = "#" + Math.min(D.layer.out - 1, c + 1);
    prev.classList.toggle("disabled", c === 0);
    next.classList.toggle("disabled", c === D.layer.out - 1);
    var root = document.getElementById("channel");
    while (root.firstChild) root.removeChild(root.firstChild);
    root.appendChild(el("p", { "class": "hint" },
      "channel " + c + " of " + D.layer.out + " in " + D.layer.title + " of " + D.model.name + " (" + D.model.weights +
      "), stage " + D.stage + ". \u2190 \u2192 previous / next channel, [ ] previous / next layer, u layer page."));
    renderAtlas(root, c);  /* examples, feature visualization, built from, feeds into, slots */
    if (D.images.length) {
      root.appendChild(el("h2", null, "Its map on every image"));
      var ctl = el("p", { "class": "tools" });
      var lab = el("label", null, "map over the photo ");
      var range = el("input", { type: "range", id: "opacity", min: "0", max: "100", step: "5", value: String(Math.round(100 * overlayOpacity())) });
      range.addEventListener("input", function () {
        opacity = parseInt(range.value, 10) / 100;
        Array.prototype.forEach.call(document.querySelectorAll(".mapover"), function (e) { e.style.opacity = String(opacity); });
      });
      lab.appendChild(range);
      ctl.appendChild(lab);
      root.appendChild(ctl);
    }
    D.images.forEach(function (im) {
      var m = im.map;
      if (!m) return;
      var art = el("article", { "class": "image" });
      art.appendChild(el("h3", null, im.name));
      var row = el("div", { "class": "row" });
      var fig = el("figure", { "class": "photo" });
      var holder = el("span", { "class": "boxhost" });
      var scale = 224 / Math.max(im.w, im.h);
      var photo = el("img", { src: im.thumb, alt: im.name, width: String(Math.round(im.w * scale)), height: String(Math.round(im.h * scale)), loading: "lazy" });
      holder.appendChild(photo);
      var over = cropFill(m.src, m.sprite, c, "mapover");
      over.style.opacity = String(overlayOpacity());
      holder.appendChild(over);
      var peak = m.peak[c];
      if (im.field && peak) {
        var y0 = im.field.lo[0] + peak[0] * im.field.jump[0], x0 = im.field.lo[1] + peak[1] * im.field.jump[1];
        var y1 = im.field.hi[0] + peak[0] * im.field.jump[0], x1 = im.field.hi[1] + peak[1] * im.field.jump[1];
        var cy0 = Math.max(0, y0), cx0 = Math.max(0, x0), cy1 = Math.min(im.h - 1, y1), cx1 = Math.min(im.w - 1, x1);
        var b = el("span", { "class": "rfbox", title: "receptive field of the peak unit: rows " + y0 + ".." + y1 + ", columns " + x0 + ".." + x1 });
        b.style.left = (100 * cx0 / im.w) + "%";
        b.style.top = (100 * cy0 / im.h) + "%";
        b.style.width = (100 * (cx1 - cx0 + 1) / im.w) + "%";
        b.style.height = (100 * (cy1 - cy0 + 1) / im.h) + "%";
        holder.appendChild(b);
      }
      fig.appendChild(holder);
      fig.appendChild(el("figcaption", null, "box: the input window of the unit where the map peaks"));
      row.appendChild(fig);
      var fm2 = el("figure", { "class": "map" });
      fm2.appendChild(crop(m.src, m.sprite, c, 224));
      fm2.appendChild(el("figcaption", null, "the map, " + m.shape[1] + "\u00d7" + m.shape[2] + " (its own min..max)"));
      row.appendChild(fm2);
      var dl = el("dl", { "class": "facts" });
      [["mean", fmt(m.mean[c])], ["max", fmt(m.max[c])],
       ["rank by mean", rank(m.mean, c) + " of " + D.layer.out],
       ["peak unit", peak ? peak[0] + ", " + peak[1] : "\u2013"]].forEach(function (kv) {
        dl.appendChild(el("dt", null, kv[0]));
        dl.appendChild(el("dd", null, kv[1]));
      });
      row.appendChild(dl);
      art.appendChild(row);
      root.appendChild(art);
    });
  }
  function setupChannel() {
    if (!D) return;
    var input = document.getElementById("ch-input");
    input.addEventListener("change", function () {
      var c = parseInt(input.value, 10);
      if (c >= 0 && c < D.layer.out) window.location.hash = "#" + c;
    });
    window.addEventListener("hashchange", renderChannel);
    renderChannel();
  }

  /* ------------------------------------------------------------ atlas-model: the search box (every page header)
     Resolves "layer", "layer:channel" (also "layer#channel" or "layer channel") against window.CNNVIZ_SEARCH
     (data/search.js: [index, name, alias, channels, in report] per conv layer); a layer is its name, alias or
     index, matched exactly, else as a prefix, else as a substring (first in depth order). Enter jumps. */
  function findLayer(q, layers) {
    q = q.toLowerCase();
    var tests = [
      function (l) { return String(l[0]) === q || l[1].toLowerCase() === q || l[2].toLowerCase() === q; },
      function (l) { return l[1].toLowerCase().indexOf(q) === 0 || (l[2] && l[2].toLowerCase().indexOf(q) === 0); },
      function (l) { return l[1].toLowerCase().indexOf(q) >= 0 || (l[2] && l[2].toLowerCase().indexOf(q) >= 0); }
    ];
    for (var t = 0; t < tests.length; t++) {
      var hits = layers.filter(function (l) { return l[4] && tests[t](l); });
      if (hits.length) return hits[0];
      if (layers.some(tests[t])) return layers.filter(tests[t])[0];  /* known, but not in this report */
    }
    return null;
  }
  function resolveJump(text) {
    var S = window.CNNVIZ_SEARCH;
    var q = String(text || "").trim();
    if (!S || !q) return { error: "type a layer (name, alias or index) or layer:channel" };
    var m = /^(.*?)\s*[:#\s]\s*(\d+)$/.exec(q);
    var lq = m && m[1] ? m[1] : q, c = m && m[1] ? parseInt(m[2], 10) : null;
    var l = findLayer(lq, S.layers);
    if (!l && m) { l = findLayer(q, S.layers); c = null; }  /* a name that ends in digits */
    if (!l) return { error: "no layer matches \u201c" + lq + "\u201d" };
    if (!l[4]) return { error: "layer " + l[0] + " " + l[1] + " is not in this report (add it with -l)" };
    if (c !== null && c >= l[3]) return { error: l[1] + " has " + l[3] + " channels (0.." + (l[3] - 1) + ")" };
    return { href: c === null ? "layer-" + pad2(l[0]) + ".html" : channelHref(l[0], c) };
  }
  function setupSearch() {
    var input = document.getElementById("jump"), msg = document.getElementById("jump-msg");
    var list = document.getElementById("jump-list"), S = window.CNNVIZ_SEARCH;
    if (!input || !S) return;
    S.layers.forEach(function (l) {
      if (!l[4]) return;
      list.appendChild(el("option", { value: l[1] }, l[0] + (l[2] ? " " + l[2] : "") + ", " + l[3] + " channels"));
    });
    input.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape") { input.blur(); return; }
      if (ev.key !== "Enter") return;
      ev.preventDefault();
      var r = resolveJump(input.value);
      msg.textContent = r.error || "";
      if (r.href) {
        window.location.href = r.href;
      }
    });
    input.addEventListener("input", function () { msg.textContent = ""; });
    document.addEventListener("keydown", function (ev) {
      var t = ev.target;
      if (ev.key === "/" && !(t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA"))) {
        ev.preventDefault();
        input.focus();
        input.select();
      }
    });
  }
  window.cnnvizResolveJump = resolveJump;
  setupSearch();

  /* ============================================================ channel page: the atlas
     Large dataset examples (patch around the peak unit's window + the whole image), feature
     visualization, the circuit ("built from" / "feeds into", with links to those channels'
     pages), and the ablation and comparison slots. Data: channelpage.py's part of the layer file. */
  function pct(x) { return (100 * x) + "%"; }
  function layerName(L) { return (D.layerTitles && D.layerTitles[String(L)]) || ("layer " + L); }
  function inReport(L) { return L !== null && D.inReport && D.inReport.indexOf(L) >= 0; }
  function exImg(im, alt) {
    return el("img", { src: im.src, alt: alt, width: String(im.w), height: String(im.h), loading: "lazy", decoding: "async" });
  }
  function missing(cls) {
    var p = el("span", { "class": cls + " missing" });
    p.appendChild(el("span", null, "file no longer readable"));
    return p;
  }
  /* a square view around the window box [y0, x0, y1, x1] (inclusive, may pass the edges):
     1.6 times the window and at least 40 px, inside the image */
  function patchView(im, box) {
    var bh = box[2] - box[0] + 1, bw = box[3] - box[1] + 1;
    var v = Math.min(Math.max(Math.ceil(1.6 * Math.max(bh, bw)), 40), Math.min(im.w, im.h));
    var cy = (box[0] + box[2] + 1) / 2, cx = (box[1] + box[3] + 1) / 2;
    return { v: v, top: Math.min(Math.max(cy - v / 2, 0), im.h - v), left: Math.min(Math.max(cx - v / 2, 0), im.w - v) };
  }
  function windowBox(box, y, x, vh, vw, cls) {
    var w = el("span", { "class": cls || "win" });
    w.style.left = pct((box[1] - x) / vw);
    w.style.top = pct((box[0] - y) / vh);
    w.style.width = pct((box[3] - box[1] + 1) / vw);
    w.style.height = pct((box[2] - box[0] + 1) / vh);
    return w;
  }
  /* the patch: the view around the window, the window outlined at its true size, the rest dimmed */
  function patch(im, box, alt) {
    if (!im || !im.src) return missing("patch");
    var p = el("span", { "class": "patch" }), view = patchView(im, box);
    var img = exImg(im, alt);
    img.style.width = pct(im.w / view.v);
    img.style.height = pct(im.h / view.v);
    img.style.left = pct(-view.left / view.v);
    img.style.top = pct(-view.top / view.v);
    p.appendChild(img);
    p.appendChild(windowBox(box, view.top, view.left, view.v, view.v));
    return p;
  }
  /* the whole image (as the model saw it) with the window and its centre, the peak unit, drawn */
  function whole(im, box, alt) {
    if (!im || !im.src) return missing("whole");
    var p = el("span", { "class": "whole" });
    p.style.aspectRatio = im.w + " / " + im.h;
    p.appendChild(exImg(im, alt));
    var clipped = [Math.max(0, box[0]), Math.max(0, box[1]), Math.min(im.h - 1, box[2]), Math.min(im.w - 1, box[3])];
    p.appendChild(windowBox(clipped, 0, 0, im.h, im.w));
    var dot = el("span", { "class": "dot" });
    dot.style.left = pct((box[1] + box[3] + 1) / 2 / im.w);
    dot.style.top = pct((box[0] + box[2] + 1) / 2 / im.h);
    p.appendChild(dot);
    return p;
  }
  function rfText() {
    return D.layer.rf === null || D.layer.rf === undefined ? "" : " (" + fmt(D.layer.rf) + " px)";
  }
  function exampleGrid(rows, draw, cls) {
    var g = el("div", { "class": "grid " + (cls || "") });
    rows.forEach(function (r, k) {
      var im = D.exImages[r[0]], box = exampleBox(r);
      var f = el("figure");
      f.appendChild(draw(im, box, "example " + (k + 1) + ": " + (im ? im.name : "?")));
      var cap = el("figcaption");
      cap.appendChild(el("strong", null, fmt(r[1])));
      cap.appendChild(document.createTextNode(" " + (im ? im.name : "?")));
      f.appendChild(cap);
      g.appendChild(f);
    });
    return g;
  }
  /* an example [image, score, unit y, unit x] (its window: the layer's field at that unit) or
     [image, score, y0, x0, y1, x1] */
  function exampleBox(r) {
    if (r.length >= 6) return r.slice(2, 6);
    var f = D.exField;
    return [f[0] + r[2] * f[4], f[1] + r[3] * f[5], f[2] + r[2] * f[4], f[3] + r[3] * f[5]];
  }
  /* (producer layer or null, its channel) of input channel i, nearest first */
  function producers(C, i) {
    var out = [];
    C.producers.forEach(function (p) { if (p[1] <= i && i < p[1] + p[2]) out.push([p[0], i - p[1]]); });
    return out;
  }
  function examplesSection(root, c) {
    var ex = D.examples && D.examples[String(c)];
    if (!ex || !ex.top.length) return;
    var sec = el("section", { "class": "examples" });
    sec.appendChild(el("h2", null, "What excites it: dataset examples"));
    sec.appendChild(el("p", { "class": "hint" },
      "The " + ex.top.length + " of the index's " + D.index.images + " images (cnnviz top) where this channel's strongest unit is " +
      "highest (" + D.index.score + " activation, shown above each name). Each patch is the input around that unit: outlined, " +
      "its receptive field" + rfText() + " at its true size; the rest dimmed. Below, the same images whole, with the window " +
      "and the unit's centre (dot)."));
    sec.appendChild(exampleGrid(ex.top, patch, "patches"));
    sec.appendChild(exampleGrid(ex.top, whole, "wholes"));
    if (ex.bottom && ex.bottom.length) {
      sec.appendChild(el("h3", null, "Least excited"));
      sec.appendChild(el("p", { "class": "hint" },
        "the " + ex.bottom.length + " images where even its strongest unit stays lowest, around that unit"));
      sec.appendChild(exampleGrid(ex.bottom, patch, "patches small"));
    }
    root.appendChild(sec);
  }
  function featureVis(root, c) {
    var mx = D.maximize[String(c)], inc = (D.maxIncluded && D.maxIncluded[String(c)]) || [];
    var sec = el("section", { "class": "featvis" });
    sec.appendChild(el("h2", null, "Feature visualization"));
    var row = el("div", { "class": "row" });
    if (mx) {
      var f = el("figure");
      f.appendChild(el("img", { src: mx.src, alt: "image that excites channel " + c + " most", "class": "max big", width: "224", height: "224", loading: "lazy" }));
      f.appendChild(el("figcaption", null, "synthesised to excite it most (activation maximization, objective " + fmt(mx.value) + ")"));
      row.appendChild(f);
    }
    inc.forEach(function (e) {
      var f = el("figure");
      var a = el("a", { href: e.src });
      a.appendChild(el("img", { src: e.src, alt: e.name, "class": e.single ? "max big" : "maxgrid", loading: "lazy" }));
      f.appendChild(a);
      f.appendChild(el("figcaption", null, (e.single ? "" : "a grid that includes channel " + c + ": ") + e.name +
        (e.weights ? " (made with weights " + e.weights + ", not this report's)" : "")));
      row.appendChild(f);
    });
    if (row.hasChildNodes()) sec.appendChild(row);
    else {
      var p = el("p", { "class": "hint" }, "Not made for this channel. To add it: ");
      p.appendChild(el("code", null, D.maximizeHint.replace("{c}", String(c))));
      sec.appendChild(p);
    }
    root.appendChild(sec);
  }
  function thumb(L, ch) {
    var t = D.thumbs && D.thumbs[L + ":" + ch];
    if (t && t[0] === "m") {
      var s = D.sprites[t[1]];
      return crop(s.src, s.sprite, ch, 112, "thumbmap");
    }
    if (t) return patch(D.exImages[t[0]], t.slice(1), "best example of " + layerName(L) + " channel " + ch);
    return el("span", { "class": "patch none" }, "no picture");
  }
  function channelLink(L, ch, text) {
    return inReport(L) ? el("a", { href: channelHref(L, ch), "class": "walk" }, text) : el("span", { title: "not in this report" }, text);
  }
  function card(L, ch, norm, maxNorm, sign, extra) {
    var f = el("figure", { "class": "card" });
    var pic = L === null ? el("span", { "class": "patch none" }, "?") : thumb(L, ch);
    if (inReport(L)) {
      var a = el("a", { href: channelHref(L, ch), "aria-label": layerName(L) + " channel " + ch });
      a.appendChild(pic);
      f.appendChild(a);
    } else f.appendChild(pic);
    var cap = el("figcaption");
    var head = el("span", { "class": "who" });
    head.appendChild(channelLink(L, ch, (L === null ? "input" : layerName(L)) + " \u00b7 " + ch));
    cap.appendChild(head);
    var bar = el("span", { "class": "bar" });
    var fill = el("span", { "class": sign < 0 ? "neg" : "pos" });
    fill.style.width = pct(maxNorm > 0 ? norm / maxNorm : 0);
    bar.appendChild(fill);
    cap.appendChild(bar);
    cap.appendChild(el("span", { "class": "sign " + (sign < 0 ? "neg" : "pos"), title: "sign of the kernel's mean weight" },
      sign < 0 ? "\u2212" : "+"));
    cap.appendChild(document.createTextNode(" \u2016w\u2016 " + fmt(norm)));
    if (extra) cap.appendChild(extra);
    f.appendChild(cap);
    return f;
  }
  /* a first-layer filter on its own scale: kh x kw RGB pixels drawn on a canvas, enlarged */
  function ownScale(px, kh, kw) {
    var cv = el("canvas", { width: String(kw), height: String(kh), "class": "ownscale", role: "img",
                            "aria-label": "the filter on its own scale" });
    var ctx = cv.getContext("2d"), im = ctx.createImageData(kw, kh);
    for (var k = 0; k < kw * kh; k++) {
      im.data[4 * k] = px[3 * k]; im.data[4 * k + 1] = px[3 * k + 1]; im.data[4 * k + 2] = px[3 * k + 2]; im.data[4 * k + 3] = 255;
    }
    ctx.putImageData(im, 0, 0);
    var f = el("figure", { "class": "filter big" });
    f.appendChild(cv);
    f.appendChild(el("figcaption", null, "the same filter on its own scale (mid-grey = 0, full colour = its largest weight)"));
    return f;
  }
  function builtFrom(root, c) {
    var C = D.circuit;
    var sec = el("section", { "class": "circuit built" });
    sec.appendChild(el("h2", null, "Built from"));
    var rows = C && C.built ? C.built[c] || [] : [];
    var hasFilter = D.filters && D.filters.rects && D.filters.rects[c] && D.filters.rects[c][3] > 0;
    if (C && C.image || !rows.length) {
      if (C && C.image) sec.appendChild(el("p", { "class": "hint" }, "The first layer reads the image itself: its filter is the picture of what it adds up."));
      else sec.appendChild(el("p", { "class": "hint" }, "Which channels this one is built from is not known: " + (C && C.unknown || "no wiring")));
      if (hasFilter) {
        var r = D.filters.rects[c], pg = D.filters.pages[r[0]];
        var f = el("figure", { "class": "filter big" });
        f.appendChild(rectCrop(pg.src, pg.w, pg.h, r, 160));
        f.appendChild(el("figcaption", null, D.filters.mode === "rgb" ? "its filter on the layer's scale (input channels as R, G, B; mid-grey = 0)"
          : "its filter, averaged over its " + D.layer["in"] + " input channels (red +, blue \u2212)"));
        var row = el("div", { "class": "row" });
        row.appendChild(f);
        if (C && C.rgb && C.rgb.px[c]) row.appendChild(ownScale(C.rgb.px[c], C.rgb.k[0], C.rgb.k[1]));
        sec.appendChild(row);
      }
      root.appendChild(sec);
      return;
    }
    var notes = [];
    if (C.merge.indexOf("add") >= 0) notes.push("its input is a residual sum (add): input channel i is channel i of several convs; each card shows the nearest (its picture) and links the others");
    if (C.merge.indexOf("cat") >= 0) notes.push("its input is a concatenation (cat) along the channels: the numbers are each part's own");
    if (C.merge.indexOf("gate") >= 0) notes.push("its input is scaled by a squeeze-and-excitation gate (shown separately below each card)");
    if (C.unknown) notes.push("part of its input could not be traced: " + C.unknown);
    sec.appendChild(el("p", { "class": "hint" },
      "The " + rows.length + " of its " + C.inputs + " input channels its filter weighs most: \u2016w\u2016 is the L2 norm of the kernel " +
      "from that channel, + / \u2212 the sign of its mean weight (mostly adds or subtracts that channel). Together they hold " +
      Math.round(100 * C.share[c]) + "% of the filter's squared norm. Click one to walk down the network." +
      (notes.length ? " Note: " + notes.join("; ") + "." : "")));
    var max = rows.reduce(function (m, r) { return Math.max(m, Math.abs(r[1])); }, 0);
    var g = el("div", { "class": "grid cards" });
    rows.forEach(function (r) {
      var prods = producers(C, r[0]), first = prods.length ? prods[0] : [null, r[0]];
      var also = prods.slice(1).filter(function (p) { return p[0] !== null; }), extra = null;
      if (also.length) {  /* the same channel of the other convs of the sum (an add keeps the index) */
        extra = el("span", { "class": "also" }, "+ its " + (also.every(function (p) { return p[1] === first[1]; }) ? "channel " + first[1] + " " : "") + "in ");
        also.forEach(function (p, k) {
          if (k) extra.appendChild(document.createTextNode(", "));
          var a = channelLink(p[0], p[1], layerName(p[0]));
          a.setAttribute("title", layerName(p[0]) + " channel " + p[1]);
          extra.appendChild(a);
        });
      }
      g.appendChild(card(first[0], first[1], Math.abs(r[1]), max, r[1] < 0 ? -1 : 1, extra));
    });
    sec.appendChild(g);
    root.appendChild(sec);
  }
  function feedsInto(root, c) {
    var C = D.circuit;
    if (!C || !C.feeds) return;
    var rows = C.feeds[c] || [];
    var sec = el("section", { "class": "circuit feeds" });
    sec.appendChild(el("h2", null, "Feeds into"));
    if (!rows.some(function (r) { return r.length; })) {
      sec.appendChild(el("p", { "class": "hint" }, C.consumers.length ? "no channel of the next conv reads it (zero weights)"
        : "no later conv reads this layer's output directly (it goes to the classifier head, or through an op the wiring does not follow)"));
      root.appendChild(sec);
      return;
    }
    sec.appendChild(el("p", { "class": "hint" }, "the channels of the next conv layer(s) that read this one most (\u2016w\u2016: L2 norm of their kernel on it; + / \u2212: sign of its mean)" +
      (C.more ? "; " + C.more + " more layer(s) read it further down the residual stream" : "")));
    C.consumers.forEach(function (m, k) {
      var mine = rows[k] || [];
      if (!mine.length) return;
      sec.appendChild(el("h3", null, layerName(m[0])));
      var max = mine.reduce(function (a, r) { return Math.max(a, Math.abs(r[1])); }, 0);
      var g = el("div", { "class": "grid cards small" });
      mine.forEach(function (r) { g.appendChild(card(m[0], r[0], Math.abs(r[1]), max, r[1] < 0 ? -1 : 1, null)); });
      sec.appendChild(g);
    });
    root.appendChild(sec);
  }
  function slots(root, c) {
    var A = D.ablation && D.ablation.channels[String(c)];
    if (A) {
      var sec = el("section", { "class": "ablation" });
      sec.appendChild(el("h2", null, "Ablation"));
      sec.appendChild(el("p", null, "Removing this channel (" + D.ablation.ablation + " ablation" +
        (D.ablation.stage === "act" ? " after its activation" : "") + ") costs " + fmt(A[0]) + " points of " +
        D.ablation.metric + " on these " + D.ablation.images + " images" +
        (A[1] ? "; it hurts " + A[1] + " most (" + fmt(A[2]) + " points)" : "") + "."));
      root.appendChild(sec);
    }
    var links = D.compare && D.compare[String(c)];
    if (links && links.length) {
      var s2 = el("section", { "class": "compare" });
      s2.appendChild(el("h2", null, "Compared"));
      var ul = el("ul");
      links.forEach(function (l) { var li = el("li"); li.appendChild(el("a", { href: l[1] }, l[0])); ul.appendChild(li); });
      s2.appendChild(ul);
      root.appendChild(s2);
    }
  }
  function renderAtlas(root, c) {
    examplesSection(root, c);
    featureVis(root, c);
    builtFrom(root, c);
    feedsInto(root, c);
    slots(root, c);
  }

  if (page === "index") setupTable();
  else if (page === "layer") setupLayer();
  else if (page === "channel") setupChannel();
})();
