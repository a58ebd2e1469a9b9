"""Dataset examples for the channel pages, from an index written by ``cnnviz top --index``.

For every report layer the index holds, the `top` job answers from the index alone (no forward
pass, no pictures): per channel, the K images that excite it most and the few that excite it
least, each with the input window (receptive field) of its peak unit. Each example image is
stored once, as the model saw it (the index's preprocessing), as one JPEG that every channel
page crops in the browser: the large patch around the window and the whole image with the
window drawn come from the same file, and an image that is an example of many channels is
still one file.
The job is handed in as an :class:`ExampleQuery` (cnnviz.jobs.report does): the site never calls
back into the jobs. The index must come from the same model and the same weights (SHA-256 of
the state dict).
"""
from __future__ import annotations

import io
import os
from typing import Any, Protocol

from PIL import Image

from ..errors import IndexStoreError, UsageError
from ..index import ActivationIndex, describe_layers
from ..io import write_atomic
from ..models import weights_digest
from ..scan import Preprocess
from .cache import Cache, digest
from .site import Site


_RANKS = {"conv": "the conv layers' outputs", "act": "the activations that follow the conv layers"}


def check_index(index: str, *, stage: str, lm: Any = None) -> ActivationIndex:
    """The index of ``report --index``, refused (IndexStoreError) when its examples would not be
    this report's: ranked at another stage than the report's maps, or (with the loaded model
    ``lm``) made by another model or other weights (SHA-256)."""
    idx = ActivationIndex.open(index)
    prov = idx.provenance
    if lm is not None and prov.get("model") != lm.name:
        raise IndexStoreError(f"index {index!r} was built with model {prov.get('model')}, not {lm.name}")
    if lm is not None and prov.get("weights_sha256") != weights_digest(lm.model):
        raise IndexStoreError(f"index {index!r} was built with other weights ({prov.get('weights')}) than the report's "
                              f"({lm.weights}); its examples would not be this network's")
    have = prov.get("stage")
    if have != stage:
        raise IndexStoreError(f"index {index!r} ranks {_RANKS.get(str(have), 'another stage')} (stage {have}), but this "
                              f"report shows stage {stage}; give the report --stage {have}, or scan an index with "
                              f"--stage {stage}")
    return idx


class ExampleQuery(Protocol):
    """Answers one layer from an index alone: the `top` job on index ``index``, layer number
    ``layer``, ``k`` examples per channel (the least exciting first with ``bottom``), no pictures;
    returns its records (per channel: ``channel``, ``examples`` [{``path``, ``image`` (id),
    ``score``, ``unit`` [y, x], ``box`` [y0, x0, y1, x1] (inclusive input pixels, may reach into
    the padding)}])."""

    def __call__(self, *, index: str, layer: int, k: int, bottom: bool = False) -> list[dict[str, Any]]: ...


BOTTOM_K = 5  # least-exciting examples shown per channel (after the top ones)
JPEG_QUALITY = 85


def index_examples(site: Site, cache: Cache, out: str, *, index: str, k: int, query: ExampleQuery,
                   step: Any = lambda n: None) -> dict[str, int]:
    """Fill ``site.examples[(layer, channel)]`` ({'top': [...], 'bottom': [...]}, each example
    [image id, score, unit y, unit x], the unit's window being ``site.example_fields[layer]``'s
    box, or [image id, score, y0, x0, y1, x1] where a window is not that), ``site.example_fields``
    ({layer: [lo_y, lo_x, hi_y, hi_x, jump_y, jump_x]}) and ``site.example_images`` ({image id:
    {src, name, w, h}}) from the index folder ``index`` (``query`` answering the layers the
    report's cache lacks); returns counts {'computed': layers queried now, 'reused': layers from
    the report's cache}."""
    lm = site.lm
    idx = check_index(index, stage=site.stage, lm=lm)
    prov = idx.provenance
    held = {d["index"] for d in idx.layers}
    layers = [lay for lay in site.layers if lay.index in held]
    if not layers:
        raise UsageError(f"index {index!r} holds none of the report's layers (it holds {describe_layers(idx.layers)}); "
                         f"add them with -l")
    n_images = idx.count()
    bottom_k = min(BOTTOM_K, k, max(0, n_images - k))  # no bottom row that repeats the top one
    site.index_info = {"images": n_images, "score": "max", "k": k, "bottom": bottom_k, "stage": prov.get("stage"),
                       "folder": os.path.abspath(index)}
    prep = Preprocess.from_dict(prov["preprocess"])
    hw = prep.size if isinstance(prep.size, tuple) else (prep.size, prep.size)
    counts = {"computed": 0, "reused": 0}
    state = [prov.get("weights_sha256"), prov.get("preprocess"), prov.get("stage"), sorted(idx.part_dirs())]
    paths: dict[str, str] = {}
    for lay in layers:
        f = site.field_of(tuple(hw), lay)
        fld = None if f is None else [f.lo[0], f.lo[1], f.hi[0], f.hi[1], f.jump[0], f.jump[1]]
        key = digest("examples", state, lay.index, lay.name, k, bottom_k, fld, 3)
        e = cache.get(key)
        if e is None:
            e = cache.put(key, [], **_query(query, index, lay, k, bottom_k, fld))
            counts["computed"] += 1
        else:
            counts["reused"] += 1
        site.example_fields[lay.index] = fld
        ids = [str(i) for i in e["ids"]]
        paths.update(zip(ids, e["paths"]))
        for c, v in e["channels"].items():
            site.examples[(lay.index, int(c))] = {w: [[ids[r[0]], *r[1:]] for r in v[w]] for w in ("top", "bottom")}
        step(1)
    _example_images(site, cache, out, paths, prep)
    return counts


def _query(query: ExampleQuery, index: str, lay: Any, k: int, bottom_k: int, fld: list[int] | None) -> dict[str, Any]:
    """One layer from the index: per channel its top (and bottom) examples, compactly (image ids
    listed once, a window as its unit when it is the field's box of that unit)."""
    channels: dict[str, dict[str, list[list[Any]]]] = {}
    at: dict[int, int] = {}
    ids: list[int] = []
    paths: list[str] = []
    for which, n in (("top", k), ("bottom", bottom_k)):
        if n <= 0:
            continue
        for rec in query(index=index, layer=lay.index, k=n, bottom=which == "bottom"):
            rows = []
            for ex in rec["examples"]:
                iid = int(ex["image"])
                if iid not in at:
                    at[iid] = len(ids)
                    ids.append(iid)
                    paths.append(ex["path"])
                (y, x), box = ex["unit"], [int(v) for v in ex["box"]]
                same = fld is not None and box == [fld[0] + y * fld[4], fld[1] + x * fld[5],
                                                   fld[2] + y * fld[4], fld[3] + x * fld[5]]
                rows.append([at[iid], float(f"{float(ex['score']):.4g}"), *([int(y), int(x)] if same else box)])
            channels.setdefault(str(rec["channel"]), {"top": [], "bottom": []})[which] = rows
    return {"channels": channels, "ids": ids, "paths": paths}


def _example_images(site: Site, cache: Cache, out: str, paths: dict[str, str], prep: Preprocess) -> None:
    """One JPEG per example image, as the model saw it (``prep``): the pages crop it. A file
    that can no longer be read gets no picture (its examples say so) and is retried next run."""
    from ..errors import ImageError

    for iid, path in sorted(paths.items()):
        name = os.path.basename(path)
        try:
            st = os.stat(path)
            key = digest("example image", path, st.st_size, st.st_mtime_ns, prep.as_dict(), JPEG_QUALITY)
        except OSError:
            site.example_images[iid] = {"src": None, "name": name, "w": 0, "h": 0}
            continue
        e = cache.get(key)
        if e is None:
            try:
                _x, display = prep(path)
            except (ImageError, OSError):
                site.example_images[iid] = {"src": None, "name": name, "w": 0, "h": 0}
                continue
            rel = f"img/ex-{key}.jpg"
            buf = io.BytesIO()
            Image.fromarray(display).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            write_atomic(os.path.join(out, rel), buf.getvalue())
            e = cache.put(key, [rel], src=rel, w=int(display.shape[1]), h=int(display.shape[0]))
        site.example_images[iid] = {"src": e["src"], "name": name, "w": e["w"], "h": e["h"]}


def best_example(site: Site, layer: int, channel: int) -> dict[str, Any] | None:
    """The channel's best dataset example for a thumbnail: {src, name, w, h, box [y0, x0, y1, x1],
    score} (the image as the model saw it and the peak unit's window in it), None without one."""
    ex = site.examples.get((layer, channel))
    if not ex or not ex["top"]:
        return None
    iid, score, *where = ex["top"][0]
    im = site.example_images.get(iid)
    if im is None or im["src"] is None:
        return None
    return {**im, "box": example_box(site, layer, where), "score": score}


def example_box(site: Site, layer: int, where: list[int]) -> list[int]:
    """The window [y0, x0, y1, x1] of an example's ``where`` (its unit [y, x], or the window itself)."""
    f = site.example_fields.get(layer)
    if len(where) == 4 or f is None:
        return list(where)
    y, x = where
    return [f[0] + y * f[4], f[1] + x * f[5], f[2] + y * f[4], f[3] + x * f[5]]
