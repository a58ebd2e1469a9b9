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
    var top = el("div", { "class": "row" });
    if (D.filters && D.filters.rects && D.filters.rects[c] && D.filters.rects[c][3] > 0) {
      var r = D.filters.rects[c], pg = D.filters.pages[r[0]];
      var f = el("figure", { "class": "filter" });
      f.appendChild(rectCrop(pg.src, pg.w, pg.h, r, TILE));
      var how = { heatmap: "its 1\u00d71 weights, one per input channel (left to right)",
                  mean: "its filter, averaged over its " + D.layer["in"] + " input channels",
                  rgb: "its filter (input channels as R, G, B; mid-grey = 0)" }[D.filters.mode] || "its filter";
      f.appendChild(el("figcaption", null, how + (D.filters.mode === "rgb" ? "" : "; red +, blue \u2212") + ", on the layer's scale"));
      top.appendChild(f);
    }
    var mx = D.maximize[String(c)];
    if (mx) {
      var fm = el("figure", { "class": "maximize" });
      fm.appendChild(el("img", { src: mx.src, alt: "image that excites channel " + c + " most", "class": "max" }));
      fm.appendChild(el("figcaption", null, "what it looks for (activation maximization, objective " + fmt(mx.value) + ")"));
      top.appendChild(fm);
    }
    if (top.hasChildNodes()) root.appendChild(top);
    var ex = D.examples && D.examples[String(c)];
    if (ex) {
      var sec = el("section", { "class": "examples" });
      sec.appendChild(el("h2", null, "Dataset examples"));
      sec.appendChild(el("p", { "class": "hint" },
        "the " + ex.examples.length + " images of the index (" + D.index.images + " images, cnnviz top) with the highest " +
        D.index.score + " activation of this channel, each cropped to the input window of its peak unit (hatched: zero padding)"));
      if (ex.src) sec.appendChild(el("img", { src: ex.src, alt: "dataset examples of channel " + c, "class": "strip", loading: "lazy" }));
      var ol = el("ol", { "class": "examples" });
      ex.examples.forEach(function (e) { ol.appendChild(el("li", null, e.name + " \u00b7 " + fmt(e.score))); });
      sec.appendChild(ol);
      root.appendChild(sec);
    }
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

  if (page === "index") setupTable();
  else if (page === "layer") setupLayer();
  else if (page === "channel") setupChannel();
})();
