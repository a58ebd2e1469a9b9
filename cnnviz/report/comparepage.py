"""The report's comparison page (`cnnviz report ... --with B`): this report's model (A) against
model B over the report's images, as `cnnviz compare` measures it: the CKA matrix as a heat map,
the diagonal profile (how similar each layer stayed, for a shared architecture) and the channels
that changed most, each linked to this report's layer and channel pages and, when B has a report
of its own (``--with-report DIR``), to B's.

The numbers come in as a plain dict, ``cnnviz.jobs.compare.CompareResult.as_dict()`` (the report
does not import the jobs); this module draws the heat map (cnnviz.comparedraw) and writes
``compare.html``. :func:`channel_links` gives the channel pages their "compare" entries, in the
report's ``compare_links`` shape: {(layer index, channel): [(label, relative href)]}.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..io import save_png
from .cache import Cache, digest
from .pages import _img, _skeleton, _write, channel_page, esc, layer_page
from .site import Site

PAGE = "compare.html"


@dataclass(frozen=True)
class Comparison:
    """What the page shows: ``data``, a CompareResult.as_dict() of this report's model (A) against
    B; ``other_report``: B's report folder (absolute; None: B's pages are not linked)."""

    data: Mapping[str, Any]
    other_report: str | None = None


def _label(layer: Mapping[str, Any]) -> str:
    return layer.get("alias") or layer["name"]


def _b_layers(data: Mapping[str, Any]) -> dict[str, int]:
    """B's layer index by its pairing key (alias, else name), as compare pairs layers."""
    return {_label(x): int(x["index"]) for x in data["b"]["layers"]}


class _Other:
    """Hrefs into B's report, relative to this report's folder; only pages that exist there."""

    def __init__(self, folder: str | None, out: str):
        self.folder = folder
        self.rel = None if folder is None else os.path.relpath(folder, out).replace(os.sep, "/")

    def page(self, name: str) -> str | None:
        if self.folder is None or not os.path.isfile(os.path.join(self.folder, name)):
            return None
        return f"{self.rel}/{name}"

    def channel(self, layer: int, channel: int) -> str | None:
        base = self.page(channel_page(layer))
        return None if base is None else f"{base}#{channel}"


def channel_links(site: Site, comparison: Comparison, *, out: str) -> dict[tuple[int, int], list[tuple[str, str]]]:
    """{(A's layer index, channel): [(label, href)]} for every matched channel of a layer in this
    report: its match in B with the correlation (to this page's row for the layer, and to B's
    channel page when B's report is given)."""
    data = comparison.data
    other = _Other(comparison.other_report, out)
    shown = {lay.index for lay in site.layers}
    b_index = _b_layers(data)
    b_name = f"{data['b']['model']} {os.path.basename(str(data['b']['weights']))}"
    links: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for u in data.get("units", []):
        if u["layer"] not in shown:
            continue
        j = b_index.get(u.get("alias") or u["name"])
        for c, (m, r) in enumerate(zip(u["match"], u["corr"])):
            if m < 0:
                continue
            corr = "n/a" if r is None else f"{r:.2f}"
            entry = [(f"matched in B ({b_name}): channel {m}, correlation {corr} over the images",
                      f"{PAGE}#layer-{u['layer']}")]
            href = None if j is None else other.channel(j, m)
            if href:
                entry.append((f"channel {m} in B's report", href))
            links[(int(u["layer"]), c)] = entry
    return links


def write_compare_page(site: Site, out: str, comparison: Comparison, *, cache: Cache, cmap: str = "viridis") -> str:
    """Draw the heat map (cached in ``cache``) and write compare.html into ``out``; returns its name."""
    from ..comparedraw import heatmap

    data = comparison.data
    other = _Other(comparison.other_report, out)
    rows = [_label(x) for x in data["a"]["layers"]]
    cols = [_label(x) for x in data["b"]["layers"]]
    cka = np.array([[np.nan if v is None else v for v in row] for row in data["cka"]], np.float64).reshape(len(rows), len(cols))
    a_name = f"{data['a']['model']} {os.path.basename(str(data['a']['weights']))}"
    b_name = f"{data['b']['model']} {os.path.basename(str(data['b']['weights']))}"
    key = digest("compare-heatmap", rows, cols, cka.round(7).tolist(), a_name, b_name, data["stage"], cmap)
    e = cache.get(key)
    if e is None:
        how = "exact" if data["estimator"] == "exact" else "minibatch estimate"
        pic = heatmap(cka, rows=rows, cols=cols, row_title=f"A: {a_name}", col_title=f"B: {b_name}",
                      title=f"{data['similarity']} ({how}) \u00b7 stage {data['stage']} \u00b7 {data['images']:,} images",
                      legend=f"{data['kernel']} CKA", cmap=cmap)
        rel = f"img/compare-{key}.png"
        save_png(os.path.join(out, rel), pic.pixels, metadata={"Software": f"cnnviz {__version__}", "kind": "cka",
                                                                "model_a": a_name, "model_b": b_name})
        e = cache.put(key, [rel], src=rel, w=int(pic.pixels.shape[1]), h=int(pic.pixels.shape[0]))
    _write(out, PAGE, _html(site, data, other, e, a_name, b_name))
    return PAGE


def _a_layer(site: Site, index: int, text: str) -> str:
    shown = {lay.index for lay in site.layers}
    return f'<a href="{esc(layer_page(index))}">{esc(text)}</a>' if index in shown else esc(text)


def _b_layer(other: _Other, index: int | None, text: str) -> str:
    href = None if index is None else other.page(layer_page(index))
    return f'<a href="{esc(href)}">{esc(text)}</a>' if href else esc(text)


def _cell(v: float | None, digits: int = 4) -> str:
    return "\u2013" if v is None else f"{v:.{digits}f}"


def _bar(v: float | None) -> str:
    """A CKA (0..1) as a bar, for reading a profile down the page."""
    w = 0.0 if v is None else max(0.0, min(1.0, float(v)))
    return f'<span class=bar style="display:inline-block;height:.7em;width:{100 * w:.1f}px;background:#3b6ea5"></span>'


def _html(site: Site, data: Mapping[str, Any], other: _Other, heat: Mapping[str, Any], a_name: str, b_name: str) -> str:
    lm = site.lm
    b_index = _b_layers(data)
    diff_prep = data["a"]["preprocess"] != data["b"]["preprocess"]
    facts = [
        ("A (this report)", a_name),
        ("B", b_name + ("" if other.folder is None else " (its report is linked)")),
        ("similarity", f"{data['similarity']}, {data['estimator']}"
                       + ("" if data["estimator"] == "exact" else " (standard errors in the JSON of cnnviz compare)")),
        ("features", f"stage {data['stage']}, spatial {data['spatial']}"
                     + (" (each channel's mean over the map)" if data["spatial"] == "mean" else "")),
        ("images", f"{data['images']:,} (the report's images" + (f"; {data['skipped']} unreadable skipped" if data["skipped"] else "") + ")"),
        ("preprocessing", "each side its own (they differ)" if diff_prep else "the same for A and B"),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    head = (f'<h1>{esc(data["a"]["model"])} <small>vs</small> {esc(data["b"]["model"])}</h1><dl class=facts>{dl}</dl>'
            '<p class=hint>Linear CKA (Kornblith et al. 2019, unbiased HSIC) between every layer of A in this report and '
            'every layer of B: 1 means the two layers represent the images the same way up to a rotation and scale.</p>')
    heat_sec = (f'<section id=matrix><h2>Layer by layer</h2><a href="{esc(heat["src"])}">'
                f'{_img(heat["src"], "CKA matrix of A against B", w=heat["w"], h=heat["h"], cls="wide")}</a>'
                '<p class=hint>rows: A\u2019s layers, columns: B\u2019s, in depth order.</p></section>')
    units = {u["layer"]: u for u in data.get("units", [])}
    if data["profile"]:
        trs = []
        for p in data["profile"]:
            u = units.get(p["layer"])
            lab = p.get("alias") or p["name"]
            med = "\u2013" if u is None or u["median_corr"] is None else f'{u["median_corr"]:.3f}'
            moved = "\u2013" if u is None else f'{u["moved"]} of {u["channels"]}'
            trs.append(f'<tr><td data-v="{p["layer"]}">{p["layer"]}</td><td>{_a_layer(site, p["layer"], lab)}</td>'
                       f'<td>{_cell(p["cka"])} {_bar(p["cka"])}</td><td>{med}</td><td>{moved}</td>'
                       f'<td>{_b_layer(other, b_index.get(lab), lab)}</td>'
                       + (f'<td><a href="#layer-{p["layer"]}">changed channels</a></td>' if u else "<td></td>") + "</tr>")
        prof = ('<section id=profile-cka><h2>Diagonal profile: how similar each layer stayed</h2>'
                '<table class=compare><thead><tr><th>#</th><th>layer (A)</th><th>CKA with B\u2019s same layer</th>'
                '<th>median matched correlation</th><th>channels matched to another index</th><th>layer in B</th><th></th>'
                f'</tr></thead><tbody>{"".join(trs)}</tbody></table></section>')
    else:
        trs = []
        for i, lay in enumerate(data["a"]["layers"]):
            row = [v for v in data["cka"][i]]
            vals = [(-1.0 if v is None else v) for v in row]
            j = int(np.argmax(vals)) if vals else 0
            b = data["b"]["layers"][j]
            trs.append(f'<tr><td>{lay["index"]}</td><td>{_a_layer(site, lay["index"], _label(lay))}</td>'
                       f'<td>{_b_layer(other, b["index"], _label(b))}</td><td>{_cell(row[j])} {_bar(row[j])}</td></tr>')
        prof = ('<section id=profile-cka><h2>Each layer of A and its most similar layer of B</h2>'
                '<table class=compare><thead><tr><th>#</th><th>layer (A)</th><th>most similar layer of B</th><th>CKA</th>'
                f'</tr></thead><tbody>{"".join(trs)}</tbody></table>'
                '<p class=hint>A and B differ in architecture: no unit matching.</p></section>')
    secs = []
    for u in data.get("units", []):
        lab = u.get("alias") or u["name"]
        j = b_index.get(lab)
        trs = []
        for row in u["changed_most"]:
            c, m = row["channel"], row["match"]
            a_link = (f'<a href="{esc(channel_page(u["layer"], c))}">channel {c}</a>'
                      if u["layer"] in {lay.index for lay in site.layers} else f"channel {c}")
            b_href = None if j is None or m < 0 else other.channel(j, m)
            b_text = "unmatched" if m < 0 else f"channel {m}"
            b_link = f'<a href="{esc(b_href)}">{esc(b_text)}</a>' if b_href else esc(b_text)
            trs.append(f"<tr><td>{a_link}</td><td>{b_link}</td><td>{_cell(row['corr'], 3)}</td>"
                       f"<td>{_cell(row['identity_corr'], 3)}</td></tr>")
        title = f"{u['layer']} {lab}"
        secs.append(f'<section id="layer-{u["layer"]}" class=changed><h3>{_a_layer(site, u["layer"], title)}'
                    f' <small>{len(u["changed_most"])} of {u["channels"]} channels</small></h3>'
                    '<table class=compare><thead><tr><th>A</th><th>its match in B</th><th>correlation</th>'
                    f'<th>with B\u2019s same index</th></tr></thead><tbody>{"".join(trs)}</tbody></table></section>')
    changed = ""
    if secs:
        changed = ('<section id=changed><h2>Channels that changed most</h2><p class=hint>Per layer, each channel of A is '
                   'matched to one of B by the correlation of their spatially averaged activations over the images '
                   '(Hungarian matching); the lowest matched correlations first. A channel of A opens its page in this '
                   'report' + ("; its match opens in B\u2019s report" if other.folder else
                               " (give --with-report DIR to link B\u2019s own report)") + ".</p>" + "".join(secs) + "</section>")
    body = head + heat_sec + prof + changed
    return _skeleton(title=f"{data['a']['model']} vs {data['b']['model']} \u00b7 cnnviz report", body=body, page="compare",
                     crumbs=[("index.html", f"{lm.name} report"), (None, f"compared with {data['b']['model']}")],
                     nav={"up": "index.html"})


__all__ = ["Comparison", "PAGE", "channel_links", "write_compare_page"]
