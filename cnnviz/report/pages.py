"""The report's HTML: the model page, one page per layer, one channel page per layer (the channel
is chosen by the URL fragment, ``channel-07.html#12``, so every channel of a 2048-channel layer is a
page without 2048 files), and one data file per layer that the layer and channel pages share.

Every name that comes from outside (image files, layers, classes) goes through ``esc`` (HTML) or
``js_data`` (a JSON literal that cannot close a script); the scripts build their DOM with
``textContent`` only. Data are plain ``<script src>`` files, not fetched JSON, so the site works
from ``file://`` as well as from any static host; nothing is loaded from the network.
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..io import write_atomic

from . import atlas
from .channelpage import channel_data, layer_sections
from .site import Site

if TYPE_CHECKING:
    from ..layers import ConvLayer

ASSETS = ("report.css", "report.js")
TILE_PX = 96  # display size of the longer side of a map tile on layer pages


def esc(v: Any) -> str:
    """Text (any value) safe inside HTML text and double-quoted attributes."""
    return html.escape(str(v), quote=True)


def js_data(obj: Any) -> str:
    """A JSON literal that is also safe inside HTML and scripts: no '<', '>', '&', U+2028/9 left raw."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def layer_page(index: int) -> str:
    return f"layer-{index:02d}.html"


def channel_page(index: int, channel: int | None = None) -> str:
    return f"channel-{index:02d}.html" + ("" if channel is None else f"#{channel}")


def _write(out: str, rel: str, text: str) -> None:
    path = os.path.join(out, rel)
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return  # unchanged: keep the file (and its mtime) as it is
    except OSError:
        pass
    write_atomic(path, data)


def _fmt(v: Any) -> str:
    if v is None:
        return "\u2013"
    if isinstance(v, (list, tuple)):
        return "\u00d7".join(str(x) for x in v)
    return str(v)


def _num(v: Any) -> float:
    """Sort key of a table cell: a number (geometric mean of pairs), -1 when missing."""
    if v is None:
        return -1.0
    if isinstance(v, (list, tuple)):
        p = 1.0
        for x in v:
            p *= float(x)
        return p ** (1.0 / len(v)) if v else -1.0
    return float(v)


def _skeleton(*, title: str, body: str, crumbs: Sequence[tuple[str | None, str]], page: str,
              nav: dict[str, str] | None = None, scripts: Sequence[str] = ()) -> str:
    trail = " <span class=sep>\u203a</span> ".join(
        f'<a href="{esc(h)}">{esc(t)}</a>' if h else f"<span>{esc(t)}</span>" for h, t in crumbs)
    attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in (nav or {}).items())
    links = "".join(f'<link rel="{k}" href="{esc(v)}">' for k, v in (nav or {}).items() if k in ("prev", "next"))
    js = "".join(f'<script src="{esc(s)}"></script>' for s in (*scripts, "data/search.js", "assets/report.js"))
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"assets/report.css\">"
        f"{links}</head>\n<body data-page=\"{esc(page)}\"{attrs}>\n<header><nav class=crumbs>{trail}</nav>"
        f"{atlas.SEARCH_BOX}<span class=keys>keys: \u2190 \u2192 previous / next, u up, / search</span></header>\n"
        f"<main>\n{body}\n</main>\n<footer>made by cnnviz {esc(__version__)}: static files, no network needed"
        f"</footer>\n{js}\n</body></html>\n"
    )


def _crop(src: str, sprite: dict[str, int], c: int, *, px: int = TILE_PX) -> str:
    """An <img> of the whole sprite inside a box that shows only tile ``c`` at ``px`` (longer side)."""
    tw, th, gap, cols = sprite["tw"], sprite["th"], sprite["gap"], sprite["cols"]
    s = px / max(tw, th)
    x, y = (c % cols) * (tw + gap), (c // cols) * (th + gap)
    cls = "crop px" if s >= 1 else "crop"
    return (f'<span class="{cls}" style="width:{tw * s:.2f}px;height:{th * s:.2f}px">'
            f'<img src="{esc(src)}" loading="lazy" decoding="async" alt="" '
            f'style="width:{sprite["width"] * s:.2f}px;height:{sprite["height"] * s:.2f}px;'
            f'left:{-x * s:.2f}px;top:{-y * s:.2f}px"></span>')


def _img(src: str, alt: str, *, w: int | None = None, h: int | None = None, cls: str = "", lazy: bool = True) -> str:
    size = f' width="{w}" height="{h}"' if w and h else ""
    return (f'<img src="{esc(src)}" alt="{esc(alt)}"{size}' + (' loading="lazy" decoding="async"' if lazy else "")
            + (f' class="{esc(cls)}"' if cls else "") + ">")


def _included(entries: Sequence[dict[str, Any]]) -> str:
    """Pictures copied in from other cnnviz commands (--include), each captioned with its file name."""
    if not entries:
        return ""
    figs = "".join(f'<figure class=included><a href="{esc(e["src"])}">{_img(e["src"], e["name"])}</a>'
                   f'<figcaption>{esc(e["name"])}</figcaption></figure>' for e in entries)
    return f'<div class="row included">{figs}</div>'


def _layer_title(lay: "ConvLayer") -> str:
    return f"{lay.index} {lay.name}" + (f" ({lay.alias})" if lay.alias else "")


# ---------------------------------------------------------------- the site


def write_site(site: Site, out: str, *, step: Callable[[int], None] = lambda n: None) -> int:
    """Write assets, data files and pages; returns the number of HTML pages."""
    for name in ASSETS:
        _write(out, f"assets/{name}", resources.files(__package__).joinpath("assets", name).read_text("utf-8"))
    layers = site.layers
    _write(out, "data/search.js", "window.CNNVIZ_SEARCH = " + js_data(atlas.search_data(site)) + ";\n")
    _write(out, "index.html", model_page(site))
    step(1)
    for n in range(len(site.images)):
        _write(out, atlas.image_page(n), atlas.image_html(site, n, skeleton=_skeleton, layer_href=layer_page,
                                                          channel_href=channel_page, included=_included))
        step(1)
    atlas.remove_stale_image_pages(out, keep=len(site.images))
    for k, lay in enumerate(layers):
        prev = layers[k - 1].index if k > 0 else None
        nxt = layers[k + 1].index if k + 1 < len(layers) else None
        _write(out, f"data/layer-{lay.index:02d}.js", "window.CNNVIZ_LAYER = " + js_data(layer_data(site, lay, prev, nxt)) + ";\n")
        _write(out, layer_page(lay.index), layer_html(site, lay, prev, nxt))
        _write(out, channel_page(lay.index), channel_html(site, lay, prev, nxt))
        step(2)
    step(1)
    return 1 + 2 * len(layers) + len(site.images)


def _params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def model_page(site: Site) -> str:
    lm = site.lm
    n_params = _params(lm.model)
    shown = {lay.index for lay in site.layers}
    facts = [
        ("model", lm.name),
        ("weights", lm.weights),
        ("parameters", f"{n_params:,}"),
        ("conv layers", f"{len(site.every)} ({len(site.layers)} in this report)"),
        ("preprocessing", site.preprocessing or f"resize, normalise with mean {lm.mean} std {lm.std}"),
        ("feature maps", f"stage {site.stage}" + (" (after the activation that follows each conv)" if site.stage == "act"
                                                  else " (each conv's own output)") + f", colormap {site.cmap}, each map on its own min..max"),
        ("images", str(len(site.images))),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    cols = [("#", "num"), ("name", "text"), ("alias", "text"), ("in", "num"), ("out", "num"), ("kernel", "num"),
            ("stride", "num"), ("groups", "num"), ("output", "num"), ("params", "num"), ("rf", "num"), ("jump", "num")]
    head = "".join(f'<th data-type="{t}" aria-sort="none"><button type="button">{esc(c)}</button></th>' for c, t in cols)
    rows = []
    for lay in site.every:
        link = lay.index in shown
        name = f'<a href="{esc(layer_page(lay.index))}">{esc(lay.name)}</a>' if link else esc(lay.name)
        out_shape = lay.output_shape
        cells = [
            (lay.index, str(lay.index)), (None, name), (None, esc(lay.alias or "")),
            (lay.in_channels, str(lay.in_channels)), (lay.out_channels, str(lay.out_channels)),
            (_num(lay.kernel_size), esc(_fmt(lay.kernel_size))), (_num(lay.stride), esc(_fmt(lay.stride))),
            (lay.groups, str(lay.groups)),
            (out_shape[0] * out_shape[1] * out_shape[2] if out_shape else -1, esc(_fmt(out_shape))),
            (lay.params, f"{lay.params:,}"), (_num(lay.receptive_field), esc(_fmt(lay.receptive_field))),
            (_num(lay.jump), esc(_fmt(lay.jump))),
        ]
        tds = "".join(f'<td data-v="{v:g}">{h}</td>' if v is not None else f"<td>{h}</td>" for v, h in cells)
        rows.append(f'<tr class="{"" if link else "off"}">{tds}</tr>')
    table = (
        '<section id=layers><h2>Conv layers</h2>'
        '<p class=tools><label>filter <input id=filter type=search placeholder="name, alias or index, e.g. layer3 or block4" '
        'autocomplete=off></label> <span id=count></span> <span class=hint>click a column to sort</span></p>'
        f'<table id=layer-table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class=hint>rf: receptive field and jump in input pixels (at the report\u2019s input size); output: '
        'channels \u00d7 height \u00d7 width. Layers not in this report are greyed out.</p></section>'
    )
    prof = ""
    if site.profile and site.profile.get("src"):
        prof = (f'<section id=profile><h2>Receptive field profile</h2>'
                f'{_img(site.profile["src"], f"receptive field and jump of every conv layer of {lm.name}", cls="wide")}</section>')
    rest = [e for e in site.included if e["image"] is None and e["layer"] is None]
    other = f'<section id=included><h2>Other pictures</h2>{_included(rest)}</section>' if rest else ""
    images = atlas.image_strip(site)
    glance = atlas.atlas_section(site, channel_href=channel_page, layer_href=layer_page, fmt=_fmt)
    start = site.layers[0]
    body = (f'<h1>{esc(lm.name)} <small>{esc(lm.weights)}</small></h1><dl class=facts>{dl}</dl>'
            f'<p class=start>Start with the first layer: <a href="{esc(layer_page(start.index))}">{esc(_layer_title(start))}</a>, '
            'then use \u2190 \u2192 to move between layers.</p>'
            + (f'<p class=start>Compared with another model: <a href="{esc(site.compare_page)}">what changed, layer by '
               'layer and channel by channel</a>.</p>' if site.compare_page else "")
            + f"{images}{glance}{table}{prof}{other}")
    return _skeleton(title=f"{lm.name} \u00b7 cnnviz report", body=body, crumbs=[(None, f"{lm.name} report")], page="index",
                     nav={"next": layer_page(start.index)})


def layer_data(site: Site, lay: "ConvLayer", prev: int | None, nxt: int | None) -> dict[str, Any]:
    """What the layer and channel pages' script needs, in plain JSON."""
    imgs = []
    for im in site.images:
        e = site.maps.get((im.id, lay.index))
        inp = site.inputs[im.id]
        f = site.field_of(tuple(im.display.shape[:2]), lay)
        imgs.append({
            "id": im.id, "name": im.name, "thumb": inp["src"], "w": inp["w"], "h": inp["h"],
            "field": None if f is None else {"lo": list(f.lo), "hi": list(f.hi), "jump": list(f.jump)},
            "map": None if e is None else {k: e[k] for k in ("src", "sprite", "shape", "mean", "max", "peak")},
        })
    filt = site.filters.get(lay.index)
    maxi = {str(c): {"src": e["src"], "value": e.get("value")} for (i, c), e in site.maximized.items() if i == lay.index}
    extra = channel_data(site, lay)  # examples, circuit, feature visualization, ablation, compare (channelpage.py)
    return {
        "model": {"name": site.lm.name, "weights": site.lm.weights},
        "layer": {"index": lay.index, "name": lay.name, "alias": lay.alias, "out": lay.out_channels,
                  "in": lay.in_channels, "rf": lay.receptive_field, "jump": lay.jump, "shape": lay.output_shape,
                  "title": _layer_title(lay)},
        "prev": prev, "next": nxt, "stage": site.stage,
        "images": imgs,
        "filters": None if filt is None else {"pages": filt["pages"], "rects": filt["rects"], "mode": filt["mode"]},
        "maximize": maxi,
        "index": site.index_info if extra["examples"] else None,
        **extra,
    }


def layer_html(site: Site, lay: "ConvLayer", prev: int | None, nxt: int | None) -> str:
    lm = site.lm
    facts = [("channels", f"{lay.in_channels} \u2192 {lay.out_channels}"), ("kernel", _fmt(lay.kernel_size)),
             ("stride", _fmt(lay.stride)), ("padding", _fmt(lay.padding)), ("groups", lay.groups),
             ("output", _fmt(lay.output_shape)), ("parameters", f"{lay.params:,}"),
             ("receptive field", f"{_fmt(lay.receptive_field)} px, jump {_fmt(lay.jump)} px")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    pager = ("<p class=pager>" + (f'<a rel=prev href="{esc(layer_page(prev))}">\u2190 layer {prev}</a>' if prev is not None else "<span></span>")
             + f'<a href="{esc(channel_page(lay.index, 0))}">channels of this layer</a>'
             + (f'<a rel=next href="{esc(layer_page(nxt))}">layer {nxt} \u2192</a>' if nxt is not None else "<span></span>") + "</p>")
    filt = site.filters.get(lay.index)
    fsec = ""
    if filt:
        st = filt["stats"]
        how = {"rgb": "each filter as a colour tile (input channels 0/1/2 as R/G/B), one symmetric scale for the layer",
               "mean": "each filter averaged over its input channels, one symmetric scale for the layer (red +, blue \u2212)",
               "heatmap": "1\u00d71 kernels: the [out, in] weight matrix, one row per filter (red +, blue \u2212)",
               "channels": "filters \u00d7 input channels"}.get(filt["mode"], filt["mode"])
        pics = "".join(f'<div class="overlay-host filters" data-page="{p}">{_img(pg["src"], f"filters of layer {lay.index}, page {p + 1}", w=pg["w"], h=pg["h"])}</div>'
                       for p, pg in enumerate(filt["pages"]))
        fsec = (f'<section id=filters><h2>Filters</h2><p class=hint>{esc(how)}; weights {st["min"]:.3g}..{st["max"]:.3g}, '
                f'std {st["std"]:.3g}. Click a filter to open its channel.</p>{pics}</section>')
    rf = site.rf.get(lay.index)
    rsec = ""
    if rf:
        rsec = (f'<section id=rf><h2>Receptive field</h2>{_img(rf["src"], f"receptive field of the centre unit of layer {lay.index}", w=rf["w"], h=rf["h"])}'
                f'<p class=hint>the input window one unit of this layer sees: the centre unit, rows {rf["box"][0]}..{rf["box"][2]}, '
                f'columns {rf["box"][1]}..{rf["box"][3]} (dashed: zero padding).</p></section>')
    isecs = []
    for n, im in enumerate(site.images):
        e = site.maps.get((im.id, lay.index))
        if e is None:
            continue
        order = sorted(range(len(e["mean"])), key=lambda c: (-e["mean"][c], c))[: site.top]
        tiles = "".join(
            f'<a class=tile href="{esc(channel_page(lay.index, c))}" title="channel {c}: mean {e["mean"][c]:.3g}, max {e["max"][c]:.3g}">'
            f'{_crop(e["src"], e["sprite"], c)}<span class=cap>ch {c} <small>{e["mean"][c]:.3g}</small></span></a>' for c in order)
        inp = site.inputs[im.id]
        isecs.append(
            f'<article class=image data-image="{n}"><h3>{esc(im.name)}</h3><div class=row>'
            f'<figure>{_img(inp["src"], im.name, w=inp["w"], h=inp["h"], cls="thumb small")}</figure>'
            f'<div><p class=hint>top {len(order)} of {lay.out_channels} channels by mean activation '
            f'(each map on its own scale; maps {e["shape"][1]}\u00d7{e["shape"][2]})</p><div class=tiles>{tiles}</div>'
            f'<p><button type=button class=show-all data-image="{n}">show all {lay.out_channels} maps</button></p>'
            f'<div class="all-maps" hidden></div></div></div></article>')
    msec = ""
    maxi = sorted((c, e) for (i, c), e in site.maximized.items() if i == lay.index)
    if maxi:
        tiles = "".join(f'<a class=tile href="{esc(channel_page(lay.index, c))}">{_img(e["src"], f"channel {c} maximized", cls="max")}'
                        f'<span class=cap>ch {c}</span></a>' for c, e in maxi)
        msec = f'<section id=maximize><h2>What channels look for (activation maximization)</h2><div class=tiles>{tiles}</div></section>'
    if any(i == lay.index for i, _c in site.examples):
        info = site.index_info or {}
        msec += (f'<section id=examples><h2>Dataset examples</h2><p>Each channel page shows the {info.get("k", "")} images '
                 f'of the index ({info.get("images", 0):,} images, <code>cnnviz top</code>) that excite the channel most, '
                 f'cropped to the input window of the peak unit: <a href="{esc(channel_page(lay.index, 0))}">start with '
                 f'channel 0</a>.</p></section>')
    inc = [e for e in site.included if e["layer"] == lay.index]
    if inc:
        msec += f'<section id=included><h2>From other cnnviz commands</h2>{_included(inc)}</section>'
    maps_sec = (f'<section id=maps><h2>Feature maps</h2>{"".join(isecs)}</section>' if isecs else "")
    msec += layer_sections(site, lay)
    strongest = atlas.layer_section(site, lay, channel_href=channel_page)
    body = (f'<h1>{esc(_layer_title(lay))}</h1>{pager}<dl class=facts>{dl}</dl>{strongest}{maps_sec}{fsec}{rsec}{msec}')
    nav = {"up": "index.html"}
    if prev is not None:
        nav["prev"] = layer_page(prev)
    if nxt is not None:
        nav["next"] = layer_page(nxt)
    return _skeleton(title=f"{_layer_title(lay)} \u00b7 {lm.name}", body=body, page="layer", nav=nav,
                     crumbs=[("index.html", f"{lm.name} report"), (None, f"layer {_layer_title(lay)}")],
                     scripts=[f"data/layer-{lay.index:02d}.js"])


def channel_html(site: Site, lay: "ConvLayer", prev: int | None, nxt: int | None) -> str:
    lm = site.lm
    body = (f'<h1><span id=ch-title>{esc(_layer_title(lay))}, channel <span id=ch-num>0</span></span></h1>'
            '<p class=pager><a id=ch-prev rel=prev href="#">\u2190 previous channel</a>'
            f'<a href="{esc(layer_page(lay.index))}">layer page</a>'
            '<label>channel <input id=ch-input type=number min=0 step=1></label>'
            '<a id=ch-next rel=next href="#">next channel \u2192</a></p>'
            '<div id=channel><noscript>This page shows one channel at a time and needs JavaScript; the layer page works without it.</noscript></div>')
    nav = {"up": layer_page(lay.index)}
    if prev is not None:
        nav["prevlayer"] = channel_page(prev)
    if nxt is not None:
        nav["nextlayer"] = channel_page(nxt)
    return _skeleton(title=f"channel \u00b7 {_layer_title(lay)} \u00b7 {lm.name}", body=body, page="channel", nav=nav,
                     crumbs=[("index.html", f"{lm.name} report"), (layer_page(lay.index), f"layer {_layer_title(lay)}"),
                             (None, "channel")],
                     scripts=[f"data/layer-{lay.index:02d}.js"])
