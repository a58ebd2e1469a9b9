"""What a channel page shows beyond its maps: large dataset examples, the circuit around the
channel ("built from" the previous conv's channels, "feeds into" the next one's), its feature
visualization, and the slots of the ablation and comparison results.

The page itself is drawn by assets/report.js from the layer's data file; this module computes
that data (:func:`channel_data`, merged into pages.layer_data) and the layer page's sections
that come with it (:func:`layer_sections`). Pure reading of ``site``; nothing here runs the model.
"""
from __future__ import annotations

import html
import os
import shlex
from typing import TYPE_CHECKING, Any

import numpy as np

from .circuits import Wiring, consumers_of, incoming, strongest
from .examples import example_box

if TYPE_CHECKING:
    from ..layers import ConvLayer
    from .site import Site

BUILT_K = 9  # input channels shown under "built from" (the 6 to 9)
FEEDS_K = 6  # output channels per consumer layer under "feeds into"
FEEDS_LAYERS = 2  # consumer layers shown (a residual stream is read by every later block of its stage)


def esc(v: Any) -> str:
    """Text safe inside HTML text and double-quoted attributes (pages.esc; pages imports this module)."""
    return html.escape(str(v), quote=True)


def _r(v: float) -> float:
    return float(f"{float(v):.3g}")


class _Norms:
    """Each conv's (norm, mean) of circuits.incoming, computed once per report."""

    def __init__(self, site: "Site"):
        self.site = site
        self.memo: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self.memo:
            lay = self.site.every[index]
            w = lay.module.weight.detach().float().cpu().numpy()  # type: ignore[union-attr]
            self.memo[index] = incoming(w, groups=lay.groups)
        return self.memo[index]


def _norms(site: "Site") -> _Norms:
    n = getattr(site, "_circuit_norms", None)
    if n is None:
        n = _Norms(site)
        site._circuit_norms = n  # type: ignore[attr-defined]
    return n


class _Refs:
    """The pictures a layer's channel pages point into, each listed once: example images and
    map sprites (indices into ``images`` / ``sprites``), and thumbnails of other channels."""

    def __init__(self, site: "Site"):
        self.site = site
        self.images: list[dict[str, Any]] = []
        self.image_at: dict[str, int] = {}
        self.sprites: list[dict[str, Any]] = []
        self.sprite_at: dict[tuple[str, int], int] = {}
        self.thumbs: dict[str, list[Any]] = {}

    def image(self, iid: str) -> int:
        if iid not in self.image_at:
            im = self.site.example_images.get(iid, {"src": None, "name": "?", "w": 0, "h": 0})
            self.image_at[iid] = len(self.images)
            self.images.append({k: im[k] for k in ("src", "name", "w", "h")})
        return self.image_at[iid]

    def examples(self, rows: list[list[Any]]) -> list[list[Any]]:
        return [[self.image(r[0]), r[1], *r[2:]] for r in rows]

    def thumb(self, layer: int, channel: int) -> None:
        """Channel ``channel`` of ``layer``'s thumbnail: its best example ([image, y0, x0, y1, x1])
        or else its map on the report image where it peaks highest (["m", sprite])."""
        key = f"{layer}:{channel}"
        if key in self.thumbs:
            return
        ex = self.site.examples.get((layer, channel))
        if ex and ex["top"]:
            iid, _score, *where = ex["top"][0]
            if self.site.example_images.get(iid, {}).get("src"):
                self.thumbs[key] = [self.image(iid), *example_box(self.site, layer, where)]
                return
        best, best_v = None, -np.inf
        for im in self.site.images:
            e = self.site.maps.get((im.id, layer))
            if e is not None and channel < len(e["max"]) and e["max"][channel] > best_v:
                best, best_v = im.id, e["max"][channel]
        if best is not None:
            if (best, layer) not in self.sprite_at:
                e = self.site.maps[(best, layer)]
                self.sprite_at[(best, layer)] = len(self.sprites)
                self.sprites.append({"src": e["src"], "sprite": e["sprite"]})
            self.thumbs[key] = ["m", self.sprite_at[(best, layer)]]


def channel_data(site: "Site", lay: "ConvLayer") -> dict[str, Any]:
    """The channel pages' data of layer ``lay`` (JSON-ready), beside pages.layer_data's:
    ``examples`` per channel (a list; null without) {top, bottom: [[image, score, unit y, unit
    x] or [image, score, y0, x0, y1, x1]]} (image: index into ``exImages``; a unit's window is
    ``exField``'s box: [lo_y, lo_x, hi_y, hi_x, jump_y, jump_x]), ``circuit`` (built from /
    feeds into, see :func:`_circuit`), ``thumbs``, ``sprites``, ``layerTitles``, ``inReport``
    (layer indices with pages), ``maxIncluded``, ``maximizeHint``, ``ablation`` and ``compare``."""
    refs = _Refs(site)
    examples: list[Any] = [None] * lay.out_channels
    for (i, c), v in sorted(site.examples.items()):
        if i == lay.index and c < lay.out_channels:
            examples[c] = {w: [[refs.image(r[0]), *r[1:]] for r in v.get(w, [])] for w in ("top", "bottom")}
    circuit = _circuit(site, lay, refs)
    return {
        "examples": examples if any(e is not None for e in examples) else [],
        "exField": site.example_fields.get(lay.index),
        "circuit": circuit,
        "exImages": refs.images,
        "thumbs": refs.thumbs,
        "sprites": refs.sprites,
        "layerTitles": {str(x.index): x.alias or x.name for x in site.every},
        "inReport": [x.index for x in site.layers],
        "maxIncluded": _max_included(site, lay),
        "maximizeHint": maximize_hint(site, lay),
        "ablation": _ablation(site, lay),
        "compare": {str(c): [[label, href] for label, href in links]
                    for (i, c), links in sorted(site.compare_links.items()) if i == lay.index and links},
    }


def _signed(norm: float, mean: float) -> float:
    """A weight's norm with the sign of its mean (3 significant digits): one number per edge."""
    return _r(norm) * (-1.0 if mean < 0 else 1.0)


def _circuit(site: "Site", lay: "ConvLayer", refs: _Refs) -> dict[str, Any]:
    """``built``: per channel [[input channel, ±norm], ...] strongest first (the sign: of the
    kernel's mean); ``producers``: [[layer or None (the image), offset, channels, via]] that map an
    input channel to its producers' channels (nearest first); ``feeds``: per channel, per consumer
    of ``consumers`` ([[layer, offset]]), [[its channel, ±norm], ...]; ``share``: the part of each
    filter's squared norm in its shown inputs; ``merge``: the ops between this conv and its
    producers; ``unknown``: why a producer was not found (or the model is not traceable)."""
    wires: dict[int, Wiring] | None = site.circuits
    if wires is None or lay.index not in wires:
        return {"unknown": "torch.fx cannot trace this model, so its wiring is unknown", "built": [], "feeds": [],
                "consumers": [], "more": 0, "merge": [], "image": False, "producers": []}
    norms = _norms(site)
    wire = wires[lay.index]
    norm, mean = norms(lay.index)
    built = []
    for c, top in enumerate(strongest(norm, k=BUILT_K)):
        for i in top:
            for p, ch in wire.producers(i):
                if p is not None:
                    refs.thumb(p, ch)
                    break
        built.append([[i, _signed(norm[c, i], mean[c, i])] for i in top])
    sq = norm.astype(np.float64) ** 2
    share = np.sort(sq, axis=1)[:, ::-1][:, :BUILT_K].sum(axis=1) / np.maximum(sq.sum(axis=1), 1e-30)
    cons = consumers_of(wires, lay.index)
    shown = cons[:FEEDS_LAYERS]
    feeds: list[list[Any]] = [[] for _ in range(lay.out_channels)]
    for m, offset in shown:
        mn, mm = norms(m)
        cols = mn[:, offset:offset + lay.out_channels].T  # (this layer's channels, consumer's outputs)
        for c, top in enumerate(strongest(cols, k=FEEDS_K)):
            for o in top:
                refs.thumb(m, o)
            feeds[c].append([[o, _signed(cols[c, o], mm[o, offset + c])] for o in top])
    own = None
    w = lay.module.weight if lay.module is not None else None
    if w is not None and any(x.layer is None for x in wire.sources) and w.shape[1] == 3:
        own = {"k": [int(w.shape[2]), int(w.shape[3])], "px": own_scale_rgb(w.detach().float().cpu().numpy())}
    return {"built": built, "share": [round(float(v), 3) for v in share], "inputs": int(norm.shape[1]), "rgb": own,
            "feeds": feeds, "consumers": [[m, off] for m, off in shown], "more": len(cons) - len(shown),
            "merge": list(wire.merged), "unknown": wire.unknown,
            "image": any(x.layer is None for x in wire.sources) and not wire.unknown,
            "producers": [[x.layer, x.offset, x.channels, list(x.via)] for x in wire.sources]}


def own_scale_rgb(weight: np.ndarray) -> list[list[int]]:
    """Per filter of a first layer (O, 3, kh, kw): its kernel as kh x kw RGB pixels on its own
    symmetric scale (0 -> 128, +max|w| -> 255, -max|w| -> 0), flattened row by row (r, g, b per
    pixel), so a weak filter shows its pattern too. Pure."""
    w = np.asarray(weight, dtype=np.float64)
    m = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    v = 0.5 + 0.5 * w / np.maximum(m, 1e-30)[:, None, None, None]
    px = np.clip(np.round(v * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (O, kh, kw, 3)
    return [row.reshape(-1).tolist() for row in px]


def _max_included(site: "Site", lay: "ConvLayer") -> dict[str, list[dict[str, Any]]]:
    """Pictures of `cnnviz maximize` copied in with --include that cover a channel of this layer:
    {channel: [{src, name, single (one channel alone), weights (when not the report's)}]}."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in site.included:
        if e.get("layer") != lay.index or not e.get("channels"):
            continue
        other = e.get("weights") if e.get("weights") not in (None, "", site.lm.weights) else None
        for c in e["channels"]:
            out.setdefault(str(c), []).append({"src": e["src"], "name": e["name"], "single": len(e["channels"]) == 1,
                                               "weights": other})
    return out


def maximize_hint(site: "Site", lay: "ConvLayer") -> str:
    """The command that makes this layer's feature visualizations (``{c}``: the channel) for
    `report --include`: cnnviz maximize with the report's model and weights, one PNG per channel."""
    model = shlex.quote(site.lm.name)
    weights = "" if site.lm.weights in ("DEFAULT", "") else f" --weights {shlex.quote(str(site.lm.weights))}"
    return (f"cnnviz maximize -m {model}{weights} -l {lay.index} -c {{c}} --separate -o maximize "
            f"&& cnnviz report ... --include maximize")


def _ablation(site: "Site", lay: "ConvLayer") -> dict[str, Any] | None:
    got = site.ablation.get(lay.index)
    if not got:
        return None
    return got


def read_ablation(site: "Site", lay: "ConvLayer") -> Any:
    """cnnviz.ablatestore's results for ``lay`` beside the report's top index (None: no index, no
    results, or no ablatestore module in this cnnviz)."""
    info = site.index_info
    if not info:
        return None
    try:
        from ..ablatestore import read_layer_ablation  # type: ignore[import-not-found]
    except ImportError:
        return None
    # the conv's own output first; else its activation (`cnnviz ablate`'s default stage, stored as 'name:act')
    return (read_layer_ablation(index_dir=info["folder"], layer=lay.name)
            or read_layer_ablation(index_dir=info["folder"], layer=f"{lay.name}:act"))


def ablation_entry(res: Any, *, curves: str | None) -> dict[str, Any]:
    """A LayerAblation (cnnviz.ablatestore) as the pages' JSON: per channel [points, hurts,
    hurts_points, prob_drop]; ``curves``: the report-relative path of its copied curves PNG."""
    first = next(iter(res.channels.values()), None)
    return {
        "ablation": res.ablation, "curves": curves, "stage": "act" if str(res.layer).endswith(":act") else "conv",
        "metric": first.metric if first else "", "images": first.images if first else 0,
        "channels": {str(c): [_r(a.points), a.hurts, None if a.hurts_points is None else _r(a.hurts_points),
                              _r(a.prob_drop)] for c, a in res.channels.items()},
    }


def layer_sections(site: "Site", lay: "ConvLayer") -> str:
    """The layer page's sections that come from this module: the ablation curves."""
    a = site.ablation.get(lay.index)
    if not a:
        return ""
    body = ""
    if a.get("curves"):
        body = (f'<img src="{esc(a["curves"])}" alt="ablation curves of layer {lay.index}" class=wide loading="lazy" '
                f'decoding="async">')
    worst = sorted(((v[0], int(c)) for c, v in a["channels"].items()), key=lambda t: (-t[0], t[1]))[:5]
    items = "".join(f'<li><a href="{esc(f"channel-{lay.index:02d}.html#{c}")}">channel {c}</a>: '
                    f'{p:+.3g} points</li>' for p, c in worst)
    return (f'<section id=ablation><h2>Ablation</h2><p class=hint>{esc(a["ablation"])} ablation of each channel '
            f'(<code>cnnviz ablate</code>) for {len(a["channels"])} of its {lay.out_channels} channels, {esc(a["metric"])} on '
            f'{a["images"]} images; the channels whose removal costs the most:</p><ol>{items}</ol>{body}</section>')


def copy_curves(out: str, path: str | None) -> str | None:
    """The ablation curves PNG copied into the report (content-addressed), its relative path."""
    if not path or not os.path.isfile(path):
        return None
    from ..io import write_atomic
    from .cache import digest

    with open(path, "rb") as f:
        data = f.read()
    rel = f"img/ablation-{digest('ablation curves', data)}.png"
    if not os.path.isfile(os.path.join(out, rel)):
        write_atomic(os.path.join(out, rel), data)
    return rel
