"""The model at a glance: one row per layer, in depth order, of its strongest channels.

Each row is one small picture (a *row sprite*: ``ATLAS_K`` thumbnails side by side) that the
model page crops into one link per channel, so a 53-layer model page loads 53 small lazy images.
A thumbnail is

* with a ``cnnviz top`` index that holds the layer: the channel's best dataset example, the
  input window (receptive field) of its peak unit on the image of the index that excites it
  most, as ``top`` cuts it (``patches.crop_window``: hatched where the window leaves the image);
  windows smaller than ``MIN_WINDOW`` px are shown with the context around them and the true
  window outlined; channels are ranked by that best example's score (the index's max);
* otherwise: the channel's map on the report image where its mean activation is highest (the
  tile of that image's sprite, each map on its own min..max), channels ranked by their mean
  activation averaged over the report's images.

This module also writes the per-image pages (``image-NN.html``: the input, its feature-map sheet,
CAMs and included pictures) and the search data (``data/search.js``) behind the search box in
every page header: data as a script, not fetched, so it works from ``file://``.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from ..io import write_atomic
from .cache import Cache, digest
from .site import SHEET_MAPS, Site

if TYPE_CHECKING:
    from ..layers import ConvLayer

ATLAS_K = 8  # thumbnails per layer row (8 x 112 px + the layer column fit a 1366 px screen)
THUMB = 112  # px, the longer side of a thumbnail
MIN_WINDOW = 32  # px: receptive fields smaller than this are shown inside this much context, outlined
JPEG_QUALITY = 85
GAP = 6  # px of page background between the thumbnails of a row picture
BACKGROUND = (250, 251, 252)  # the stylesheet's --bg


# ---------------------------------------------------------------- build phase


def atlas_rows(site: Site, cache: Cache, out: str, *, index: str | None, k: int = ATLAS_K,
               step: Callable[[int], None] = lambda n: None) -> dict[str, int]:
    """Fill ``site.atlas[layer index]`` = {src, w, h, source: 'index'|'maps', channels: [{c,
    score, image}]} for every report layer that has a source (an index holding it, else feature
    maps). Returns counts {'computed': rows drawn now, 'reused': rows from the cache}."""
    counts = {"computed": 0, "reused": 0}
    held: set[int] = set()
    idx = None
    if index:
        from ..index import ActivationIndex

        idx = ActivationIndex.open(index)
        held = {int(d["index"]) for d in idx.layers}
    displays = None
    for lay in site.layers:
        e = None
        if idx is not None and lay.index in held:
            prov = idx.provenance
            state = [prov.get("weights_sha256"), prov.get("preprocess"), prov.get("stage"), sorted(idx.part_dirs())]
            key = digest("atlas-index", state, lay.index, lay.name, k, THUMB, GAP, MIN_WINDOW, JPEG_QUALITY)
            e = cache.get(key)
            if e is None:
                if displays is None:
                    displays = _displays(prov)
                e = _index_row(site, idx, lay, displays, out, key, k)
                e = None if e is None else cache.put(key, e.pop("files"), **e)
                counts["computed"] += e is not None
            else:
                counts["reused"] += 1
        if e is None:
            srcs = [site.maps[(im.id, lay.index)]["src"] for im in site.images if (im.id, lay.index) in site.maps]
            if srcs:
                key = digest("atlas-maps", srcs, lay.index, k, THUMB, GAP)
                e = cache.get(key)
                if e is None:
                    e = _maps_row(site, lay, out, key, k)
                    e = cache.put(key, e.pop("files"), **e)
                    counts["computed"] += 1
                else:
                    counts["reused"] += 1
        if e is not None:
            site.atlas[lay.index] = e
        step(1)
    return counts


def index_preprocess(prov: dict[str, Any]) -> Any:
    """The index's own preprocessing: the scan.Preprocess its provenance records."""
    from ..scan import Preprocess

    p = dict(prov["preprocess"])
    for name in ("size", "mean", "std"):
        if isinstance(p.get(name), list):
            p[name] = tuple(p[name])
    return Preprocess(**p)


def _displays(prov: dict[str, Any]) -> Any:
    """The display images of the index's files, each read once (topdraw's image cache)."""
    from ..topdraw import display_cache

    return display_cache(index_preprocess(prov), budget=256 << 20)


def _index_row(site: Site, idx: Any, lay: "ConvLayer", displays: Any, out: str, key: str,
               k: int) -> dict[str, Any] | None:
    import math

    best = idx.top(layer=lay.index, channels=range(lay.out_channels), k=1, score="max")
    ranked = sorted((c for c, ex in best.items() if ex and math.isfinite(ex[0].score)),
                    key=lambda c: (-best[c][0].score, c))[:k]
    if not ranked:
        return None
    paths = idx.paths({best[c][0].image for c in ranked})
    tiles, chans = [], []
    for c in ranked:
        ex = best[c][0]
        path = paths.get(ex.image, "")
        disp = displays.get(path) if path else None
        tiles.append(_window_thumb(disp, site, lay, tuple(ex.unit)))
        chans.append({"c": c, "score": _r(ex.score), "image": os.path.basename(path)})
    return _save_row(out, f"img/atlas-{key}.jpg", tiles, chans, source="index")


def _window_thumb(disp: np.ndarray | None, site: Site, lay: "ConvLayer", unit: tuple[int, int]) -> np.ndarray:
    """The receptive-field window of ``unit`` on ``disp`` as a THUMB px square (context added
    and the window outlined when it is smaller than MIN_WINDOW)."""
    from ..patches import crop_window

    img = np.zeros((1, 1, 3), np.uint8) if disp is None else disp
    f = site.field_of(tuple(img.shape[:2]) if disp is not None else tuple(site.size[-2:]), lay)
    if f is None:  # no geometric field (a global layer): the whole image
        return _fit(img, THUMB, Image.Resampling.BILINEAR)
    y0, x0, y1, x1 = (int(v) for v in f.box(unit))
    h, w = y1 - y0 + 1, x1 - x0 + 1
    side = max(h, w, MIN_WINDOW)
    cy, cx = y0 + (h - side) // 2, x0 + (w - side) // 2  # centred context box
    pix, _inside = crop_window(img, (cy, cx, cy + side - 1, cx + side - 1))
    thumb = _fit(pix, THUMB, Image.Resampling.LANCZOS if side > THUMB else Image.Resampling.NEAREST)
    if side > max(h, w):  # outline the true window inside its context
        s = THUMB / side
        im = Image.fromarray(thumb)
        d = ImageDraw.Draw(im)
        box = [(x0 - cx) * s - 1, (y0 - cy) * s - 1, (x1 - cx + 1) * s, (y1 - cy + 1) * s]
        d.rectangle(box, outline=(255, 255, 255), width=3)
        d.rectangle(box, outline=(230, 30, 30), width=1)
        thumb = np.asarray(im)
    return thumb


def _maps_row(site: Site, lay: "ConvLayer", out: str, key: str, k: int) -> dict[str, Any]:
    entries = [(im, site.maps[(im.id, lay.index)]) for im in site.images if (im.id, lay.index) in site.maps]
    means = np.array([e["mean"] for _im, e in entries], dtype=np.float64)  # (images, channels)
    avg = np.nan_to_num(means.mean(axis=0), nan=-np.inf)
    ranked = sorted(range(len(avg)), key=lambda c: (-avg[c], c))[:k]
    sprites: dict[str, np.ndarray] = {}
    tiles, chans = [], []
    for c in ranked:
        n = int(np.nan_to_num(means[:, c], nan=-np.inf).argmax())
        im, e = entries[n]
        if e["src"] not in sprites:
            with Image.open(os.path.join(out, e["src"])) as pic:
                sprites[e["src"]] = np.asarray(pic.convert("RGB"))
        g = e["sprite"]
        x, y = (c % g["cols"]) * (g["tw"] + g["gap"]), (c // g["cols"]) * (g["th"] + g["gap"])
        tile = sprites[e["src"]][y:y + g["th"], x:x + g["tw"]]
        tiles.append(_fit(tile, THUMB, Image.Resampling.NEAREST if max(tile.shape[:2]) <= THUMB else Image.Resampling.BOX))
        chans.append({"c": c, "score": _r(float(avg[c])), "image": im.name})
    return _save_row(out, f"img/atlas-{key}.png", tiles, chans, source="maps")


def _fit(pix: np.ndarray, px: int, resample: Any) -> np.ndarray:
    """``pix`` scaled so that its longer side is ``px``, centred on a px x px white square."""
    h, w = pix.shape[:2]
    s = px / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(pix)).resize((nw, nh), resample))
    if (nh, nw) == (px, px):
        return small
    canvas = np.full((px, px, 3), 255, np.uint8)
    oy, ox = (px - nh) // 2, (px - nw) // 2
    canvas[oy:oy + nh, ox:ox + nw] = small
    return canvas


def _save_row(out: str, rel: str, tiles: Sequence[np.ndarray], chans: list[dict[str, Any]], *,
              source: str) -> dict[str, Any]:
    sep = np.empty((THUMB, GAP, 3), np.uint8)
    sep[:] = BACKGROUND
    strip = np.concatenate([part for t in tiles for part in (sep, t)][1:], axis=1)
    buf = io.BytesIO()
    pic = Image.fromarray(strip)
    if rel.endswith(".jpg"):
        pic.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        pic.save(buf, format="PNG", optimize=True)
    write_atomic(os.path.join(out, rel), buf.getvalue())
    return {"files": [rel], "src": rel, "w": int(strip.shape[1]), "h": int(strip.shape[0]), "thumb": THUMB, "gap": GAP,
            "source": source, "channels": chans}


def _r(v: float) -> float:
    return float(f"{float(v):.4g}")


# ---------------------------------------------------------------- HTML


def image_page(n: int) -> str:
    return f"image-{n:02d}.html"


def _e(v: Any) -> str:
    import html

    return html.escape(str(v), quote=True)


def _rf_px(lay: "ConvLayer") -> int | None:
    rf = lay.receptive_field
    if rf is None:
        return None
    return int(max(rf)) if isinstance(rf, (list, tuple)) else int(rf)


def _rf_glyph(lay: "ConvLayer", size: Sequence[int]) -> str:
    """A small square standing for the input with the receptive field drawn at scale inside it."""
    rf, side = _rf_px(lay), max(int(v) for v in size[-2:]) if size else 224
    if rf is None:
        return '<span class="rfglyph none" title="no receptive field (global layer)"></span>'
    frac = min(1.0, rf / side)
    px = max(2.0, 40 * frac)
    return (f'<span class=rfglyph title="receptive field {rf} px of the {side} px input">'
            f'<span style="width:{px:.1f}px;height:{px:.1f}px"></span></span>')


def atlas_section(site: Site, *, channel_href: Callable[[int, int], str], layer_href: Callable[[int], str],
                  fmt: Callable[[Any], str] = str) -> str:
    """The model page's "at a glance" section: one row per report layer."""
    rows = []
    any_index = any(e.get("source") == "index" for e in site.atlas.values())
    for lay in site.layers:
        e = site.atlas.get(lay.index)
        rf = _rf_px(lay)
        shape = lay.output_shape
        meta = (f'<a class=lname href="{_e(layer_href(lay.index))}">{lay.index} {_e(lay.name)}</a>'
                + (f'<span class=lalias>{_e(lay.alias)}</span>' if lay.alias else "")
                + f'<span class=lfacts>{lay.in_channels}\u2192{lay.out_channels} ch, {_e(fmt(lay.kernel_size))}'
                f'{" /" + _e(fmt(lay.stride)) if lay.stride not in (1, [1, 1], (1, 1)) else ""}'
                f'{", out " + _e(fmt(shape[1:])) if shape else ""}</span>'
                f'<span class=lrf>{_rf_glyph(lay, site.size)} rf {rf if rf is not None else chr(0x2013)} px</span>')
        if e is None:
            thumbs = '<span class=hint>no images: see the layer page for its filters</span>'
        else:
            thumbs = row_thumbs(e, lay.index, channel_href=channel_href)
            if e["source"] == "maps" and any_index:
                meta += '<span class=lsrc>not in the index: maps</span>'
        rows.append(f'<div class=arow id="L{lay.index}"><div class=ameta>{meta}</div><div class=athumbs>{thumbs}</div></div>')
    if any_index:
        how = ("each channel shown by its best dataset example: the input window (receptive field) of the unit where "
               "it peaks, on the image of the index that excites it most (small windows: outlined in red within "
               "their surroundings); channels ranked by that maximum")
    else:
        how = ("each channel shown by its feature map on the image that excites it most, channels ranked by mean "
               "activation over the report\u2019s images (give --index for dataset examples)")
    return (f'<section id=atlas><h2>The model at a glance</h2><p class=hint>The {ATLAS_K} strongest channels of every '
            f'layer, first layer at the top: {how}. The square beside each layer is the input with the receptive '
            f'field drawn to scale. Click a thumbnail to open the channel.</p>{"".join(rows)}</section>')


def row_thumbs(e: dict[str, Any], layer: int, *, channel_href: Callable[[int, int], str]) -> str:
    """One atlas row: its picture (one lazy image, the thumbnails side by side) under one link per
    thumbnail, each with the channel number below; in percentages, so the row can shrink."""
    th, gap, w = e["thumb"], e.get("gap", 0), e["w"]
    how = ("best dataset example (index max {s:.3g}, {im})" if e["source"] == "index"
           else "map on {im}, mean over the images {s:.3g}")
    links = "".join(
        f'<a class=thumb href="{_e(channel_href(layer, ch["c"]))}" aria-label="channel {ch["c"]}" '
        f'title="channel {ch["c"]}: {_e(how.format(s=ch["score"], im=ch["image"]))}" '
        f'style="left:{100 * i * (th + gap) / w:.4f}%;width:{100 * th / w:.4f}%"><span class=cap>{ch["c"]}</span></a>'
        for i, ch in enumerate(e["channels"]))
    return (f'<span class=tstrip style="width:{w}px"><img src="{_e(e["src"])}" alt="" width="{w}" height="{e["h"]}" '
            f'loading="lazy" decoding="async">{links}</span>')


def layer_section(site: Site, lay: "ConvLayer", *, channel_href: Callable[[int, int], str]) -> str:
    """The layer page's "strongest channels": its row of the model page, with what it shows."""
    e = site.atlas.get(lay.index)
    if e is None:
        return ""
    how = ("their best dataset examples (the peak unit's input window on the index image that excites each most)"
           if e["source"] == "index" else "their maps on the image that excites each most (mean over the report’s images)")
    return (f'<section id=strongest><h2>Strongest channels</h2><p class=hint>the {len(e["channels"])} channels of this '
            f'layer that respond most, by {how}; click one to open it.</p><div class=athumbs>'
            f'{row_thumbs(e, lay.index, channel_href=channel_href)}</div></section>')


def image_strip(site: Site) -> str:
    """Thumbnails of the report's images, each a link to its page."""
    if not site.images:
        return ('<section id=images><h2>Images</h2><p>No images were given: layer pages show filters and receptive '
                'fields only (add image files or --sample to see feature maps).</p></section>')
    figs = []
    for n, im in enumerate(site.images):
        inp = site.inputs[im.id]
        s = 112 / max(inp["w"], inp["h"])
        figs.append(f'<a class=imthumb href="{_e(image_page(n))}"><img src="{_e(inp["src"])}" alt="{_e(im.name)}" '
                    f'width="{round(inp["w"] * s)}" height="{round(inp["h"] * s)}" loading="lazy" decoding="async">'
                    f'<span class=cap title="{_e(im.name)}">{_e(im.name)}</span></a>')
    return (f'<section id=images><h2>Images</h2><p class=hint>{len(site.images)} image(s); open one for its strongest '
            f'maps in every layer.</p><div class=imstrip>{"".join(figs)}</div></section>')


def _sheet_links(site: Site, im: Any, *, k: int, layer_href: Callable[[int], str],
                 channel_href: Callable[[int, int], str]) -> str:
    """The sheet's tiles as links: per layer, its ``k`` strongest channels on this image (by mean
    activation, ties to the lower channel: the sheet's own order), each a link to its channel."""
    rows = []
    for lay in site.layers:
        e = site.maps.get((im.id, lay.index))
        if e is None:
            continue
        order = (site.sheets.get(im.id) or {}).get("order", {}).get(str(lay.index)) \
            or sorted(range(len(e["mean"])), key=lambda c: (-e["mean"][c], c))[:k]  # sheets of earlier runs
        chans = " ".join(f'<a href="{_e(channel_href(lay.index, c))}" title="mean {e["mean"][c]:.3g}, max {e["max"][c]:.3g}">'
                         f'{c}</a>' for c in order)
        rows.append(f'<tr><th><a href="{_e(layer_href(lay.index))}">{lay.index} {_e(lay.alias or lay.name)}</a></th>'
                    f'<td>{chans}</td></tr>')
    if not rows:
        return ""
    return (f'<details class=sheetlinks open><summary>the sheet\u2019s channels, layer by layer</summary>'
            f'<table>{"".join(rows)}</table></details>')


def image_html(site: Site, n: int, *, skeleton: Callable[..., str], layer_href: Callable[[int], str],
               channel_href: Callable[[int, int], str], included: Callable[[Sequence[dict[str, Any]]], str]) -> str:
    """The page of image ``n``: the input as the model sees it, its sheet (the strongest maps of
    every layer), its CAMs and the pictures other commands made of it."""
    lm = site.lm
    im = site.images[n]
    inp = site.inputs[im.id]
    sheet = site.sheets.get(im.id)
    pager = ("<p class=pager>" + (f'<a rel=prev href="{_e(image_page(n - 1))}">\u2190 previous image</a>' if n > 0 else "<span></span>")
             + '<a href="index.html">model page</a>'
             + (f'<a rel=next href="{_e(image_page(n + 1))}">next image \u2192</a>' if n + 1 < len(site.images) else "<span></span>")
             + "</p>")
    body = (f'<h1>{_e(im.name)}</h1>{pager}<div class=row>'
            f'<figure><img src="{_e(inp["src"])}" alt="{_e(im.name)}" width="{inp["w"]}" height="{inp["h"]}" class=thumb>'
            f'<figcaption>input as the model sees it, {inp["w"]}\u00d7{inp["h"]}</figcaption></figure></div>'
            + included([e for e in site.included if e["image"] == im.id and e["layer"] is None]))
    if sheet:
        links = _sheet_links(site, im, k=SHEET_MAPS, layer_href=layer_href, channel_href=channel_href)
        body += (f'<section id=sheet><h2>Strongest maps of every layer</h2><p class=hint>the {SHEET_MAPS} strongest maps '
                 f'(by mean activation) of every layer in this report, first layer at the top, each on its own scale; '
                 f'beside it, each layer and channel as a link.</p>'
                 f'<div class=row><figure class=sheet><a href="{_e(sheet["src"])}"><img src="{_e(sheet["src"])}" '
                 f'alt="feature-map sheet of {_e(im.name)}" width="{sheet["w"]}" height="{sheet["h"]}" loading="lazy" '
                 f'decoding="async"></a></figure>{links}</div></section>')
    nav = {"up": "index.html"}
    if n > 0:
        nav["prev"] = image_page(n - 1)
    if n + 1 < len(site.images):
        nav["next"] = image_page(n + 1)
    return skeleton(title=f"{im.name} \u00b7 {lm.name}", body=body, page="image", nav=nav,
                    crumbs=[("index.html", f"{lm.name} report"), (None, f"image {im.name}")])


def remove_stale_image_pages(out: str, *, keep: int) -> int:
    """Delete ``image-NN.html`` pages of images this report no longer has (NN >= ``keep``), only
    those cnnviz wrote (they would point at pictures --prune removes); returns how many went."""
    import re

    gone = 0
    for name in os.listdir(out):
        m = re.fullmatch(r"image-(\d+)\.html", name)
        if not m or int(m.group(1)) < keep:
            continue
        path = os.path.join(out, name)
        try:
            with open(path, encoding="utf-8") as f:
                ours = "<footer>made by cnnviz " in f.read()
        except (OSError, UnicodeDecodeError):
            ours = False
        if ours:
            os.remove(path)
            gone += 1
    return gone


def search_data(site: Site) -> dict[str, Any]:
    """What the search box resolves: every conv layer [index, name, alias, channels, in report]."""
    shown = {lay.index for lay in site.layers}
    return {"layers": [[lay.index, lay.name, lay.alias or "", lay.out_channels, lay.index in shown] for lay in site.every]}


SEARCH_BOX = ('<form class=search role=search onsubmit="return false"><input id=jump type=search list=jump-list '
              'placeholder="jump: layer or layer:channel" aria-label="jump to a layer or layer:channel, then Enter" '
              'autocomplete=off spellcheck=false><datalist id=jump-list></datalist><output id=jump-msg></output></form>')
