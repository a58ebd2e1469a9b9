"""Build a report folder: compute (or reuse from the folder's cache) every picture and number,
then write the pages.

The work is ordered so that the expensive parts run once and only for what is missing:
filters (weights only), then one forward pass per batch of images over every requested layer
(hooks only there, stopped after the last), rendering each layer's sprite the moment it is
captured, then the optional maximize images, then the pages (cheap, always rewritten).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..device import autocast
from ..errors import UsageError
from ..io import ensure_dir, save_png
from ..layers import ConvLayer, conv_layers
from ..maps import iter_batches, stream_maps
from ..models import LoadedModel, weights_digest
from ..optimize import DEFAULT_STEPS
from ..progress import Progress
from ..rf import catalog
from ..util import device_of
from . import pages, pictures
from .site import SHEET_MAPS, ReportImage, Site
from .cache import Cache, digest
from .atlas import atlas_rows
from .cams import CamMaker, image_cams
from .examples import ExampleQuery, check_index, index_examples

DEFAULT_TOP = 16


@dataclass
class ReportResult:
    """What a build did: the folder, its entry page, counts, and timings (seconds)."""

    output: str
    index: str
    layers: int
    images: int
    channels: int
    pages: int
    computed: dict[str, int] = field(default_factory=dict)  # pictures made this run, by kind
    reused: dict[str, int] = field(default_factory=dict)  # pictures taken from the cache, by kind
    seconds: float = 0.0
    bytes: int = 0


def build_report(
    lm: LoadedModel,
    images: Sequence[ReportImage],
    *,
    output: str,
    layers: Sequence[ConvLayer] | None = None,
    stage: str = "conv",
    top: int = DEFAULT_TOP,
    cmap: str = "viridis",
    batch_size: int = 8,
    maximize: Mapping[int, Sequence[int]] | None = None,
    maximize_steps: int = DEFAULT_STEPS,
    maximize_seed: int = 0,
    maximize_precision: str = "auto",
    include: Sequence[str] = (),
    index: str | None = None,
    index_k: int = 9,
    examples: ExampleQuery | None = None,
    cam: CamMaker | None = None,
    force: bool = False,
    prune: bool = False,
    progress: bool = False,
    preprocessing: str = "",
    workers: int | None = None,
    architecture: Any = None,
    precision: str = "fp32",
    compare_links: Mapping[tuple[int, int], Sequence[tuple[str, str]]] | None = None,
    comparison: Any = None,
) -> ReportResult:
    """Write the report of ``lm`` on ``images`` into ``output`` (created if needed).

    ``layers``: conv layers of ``lm.model`` to include (default all); ``stage``: 'act' or 'conv'
    (see cnnviz.capture); ``top``: maps shown per image on a layer page before 'show all';
    ``maximize``: {layer index: channels} to synthesise, in ``maximize_steps`` steps with
    ``maximize_seed`` and ``maximize_precision`` (cnnviz.optimize.maximize); ``include``: folders
    of other cnnviz commands' pictures (cam, top, maps, ...) to copy in and show on the page of
    their layer or image (see _include); ``index``: a `cnnviz top --index` folder of the same
    model and weights, whose ``index_k`` best images per channel go on the channel pages, asked
    through ``examples`` (the top job: cnnviz.jobs.report.index_query); ``preprocessing``: a
    sentence for the model page; ``cam``: the cam job (cnnviz.jobs.report.cam_maker) making
    each image's Grad-CAM of its top class for the model page (None: no CAM); ``progress``:
    False (default: a library call says nothing), True (the progress bar, cnnviz.progress: on
    stderr when it is a terminal);
    ``architecture``: the same network on the 'meta' device (models.build_meta_model), used for
    shapes and receptive fields so that no full forward pass is spent on them (default: ``lm.model``);
    ``precision``: 'fp32' or 'bf16' (cnnviz.device) of the feature maps' forward passes (maximize
    has its own, ``maximize_precision``; the CAMs are Grad-CAMs, always fp32);
    ``comparison``: a cnnviz.report.comparepage.Comparison (``cnnviz report --with``): a page
    comparing this model with another, linked from the model page, whose channel links are added
    to ``compare_links``.
    ``compare_links``: {(layer index, channel): [(label, report-relative href)]} for the channel
    pages' comparison slot (cnnviz compare's pages). Channel pages also show the results of
    ``cnnviz ablate --index`` kept beside ``index`` (cnnviz.ablatestore), when there are any.
    Re-running on the same folder recomputes only what is missing; ``prune`` then deletes the
    pictures of earlier runs that this one does not show. Raises CnnvizError."""
    t0 = time.perf_counter()
    if top < 1:
        raise UsageError(f"--top must be at least 1, not {top}")
    if index:
        check_index(index, stage=stage, lm=lm)  # before the folder is made or a picture drawn
    if index and examples is None:
        raise TypeError("build_report(index=...) needs examples=, the query answering it (cnnviz.jobs.report.index_query)")
    out = ensure_dir(output)
    cache = Cache(out, force=force)
    for sub in ("img", "data", "assets"):
        ensure_dir(os.path.join(out, sub))
    images = list(images)
    size = tuple(images[0].x.shape[1:]) if images else (lm.crop_size, lm.crop_size)
    net = lm.model if architecture is None else architecture
    every = catalog(net, size=size)
    if net is not lm.model:  # geometry from the twin, modules (weights, hooks) from the real network
        for lay, real in zip(every, conv_layers(lm.model)):
            lay.module = real.module
    chosen = list(every) if layers is None else [every[lay.index] for lay in layers]
    if not chosen:
        raise UsageError("the report needs at least one conv layer")
    wfp = weights_digest(lm.model, scope="features")
    for im in images:
        # the file is part of the identity: two files of the same pixels are two inputs, each drawn once
        im.id = im.id or digest(os.path.abspath(im.source) if im.source not in ("", "-") else im.name, im.x)[:12]
    n_max = sum(len(v) for v in (maximize.values() if maximize else []))
    # inputs + profile + rf boxes, filters, maps + sheets, maximize, examples, pages
    total = (len(images) + 1 + len(chosen)) + len(chosen) + len(images) * (len(chosen) + 1) + n_max \
        + len(chosen) * bool(index) + len(chosen) + (2 * len(chosen) + 2 + len(images))
    prog = Progress(total, desc="report", unit="step", quiet=not progress)
    stats = _Counts()
    try:
        site = Site(lm=lm, images=images, layers=chosen, every=every, stage=stage, top=top, cmap=cmap,
                     size=size, wfp=wfp, preprocessing=preprocessing, include=list(include), net=net,
                     precision=precision,
                     compare_links={k: list(v) for k, v in (compare_links or {}).items()})
        site.circuits = _circuits(net, every)
        with ThreadPoolExecutor(max_workers=workers or max(1, min(8, os.cpu_count() or 1))) as pool:
            prog.describe("inputs and receptive fields")
            _inputs(site, cache, out, stats, prog)
            prog.describe("filters")
            _filters(site, cache, out, stats, prog, pool)
            prog.describe("feature maps")
            with autocast(precision, device_of(lm.model)):
                _maps(site, cache, out, stats, prog, pool, batch_size)
            cache.save()
            if maximize:
                prog.describe("maximize")
                _maximize(site, cache, out, stats, prog, maximize, steps=maximize_steps, seed=maximize_seed,
                          precision=maximize_precision)
                cache.save()
        if index:
            prog.describe("dataset examples")
            got = index_examples(site, cache, out, index=index, k=index_k, query=examples, step=prog.update)  # type: ignore[arg-type]
            for made in (True, False):
                if got["computed" if made else "reused"]:
                    stats.add("examples", made, got["computed" if made else "reused"])
            cache.save()
        if index:
            _ablations(site, out)
        prog.describe("model at a glance")
        got = atlas_rows(site, cache, out, index=index, step=prog.update)
        for made in (True, False):
            if got["computed" if made else "reused"]:
                stats.add("atlas", made, got["computed" if made else "reused"])
        cache.save()
        if cam is not None and images:
            prog.describe("class activation maps")
            got = image_cams(site, cache, out, make=cam)
            for made in (True, False):
                if got["computed" if made else "reused"]:
                    stats.add("cam", made, got["computed" if made else "reused"])
            cache.save()
        if include:
            prog.describe("included pictures")
            _include(site, cache, out, stats)
        prog.describe("pages")
        if comparison is not None:
            from .comparepage import write_compare_page

            from .comparepage import channel_links

            site.compare_page = write_compare_page(site, out, comparison, cache=cache, cmap=cmap)
            for k, v in channel_links(site, comparison, out=out).items():
                site.compare_links.setdefault(k, []).extend(v)
        n_pages = pages.write_site(site, out, step=prog.update) + int(comparison is not None)
        if prune:
            stats.add("pruned files", True, cache.prune())
        cache.save()
    finally:
        prog.close()
    size_bytes = sum(os.path.getsize(os.path.join(dp, f)) for dp, _d, fs in os.walk(out) for f in fs)
    return ReportResult(output=out, index=os.path.join(out, "index.html"), layers=len(chosen), images=len(images),
                        channels=sum(lay.out_channels for lay in chosen), pages=n_pages, computed=stats.computed,
                        reused=stats.reused, seconds=time.perf_counter() - t0, bytes=size_bytes)


class _Counts:
    def __init__(self) -> None:
        self.computed: dict[str, int] = {}
        self.reused: dict[str, int] = {}

    def add(self, kind: str, computed: bool, n: int = 1) -> None:
        d = self.computed if computed else self.reused
        d[kind] = d.get(kind, 0) + n


def _png(out: str, rel: str, pixels: np.ndarray, palette: bytes | None = None, **meta: Any) -> str:
    save_png(os.path.join(out, rel), pixels, palette=palette, metadata={"Software": f"cnnviz {__version__}", **meta})
    return rel


# ---------------------------------------------------------------- phases


def _circuits(net: Any, every: Sequence[ConvLayer]) -> Any:
    """The model's wiring for the channel pages' circuit view (None: torch.fx cannot trace it)."""
    from ..errors import TraceError
    from .circuits import wiring

    try:
        return wiring(net, every)
    except TraceError:
        return None


def _ablations(site: Site, out: str) -> None:
    """`cnnviz ablate` results kept beside the top index, per report layer (channelpage's slot)."""
    from .channelpage import ablation_entry, copy_curves, read_ablation

    for lay in site.layers:
        res = read_ablation(site, lay)
        if res is not None and res.channels:
            site.ablation[lay.index] = ablation_entry(res, curves=copy_curves(out, res.curves_png))


def _inputs(site: Site, cache: Cache, out: str, stats: _Counts, prog: Progress) -> None:
    lm = site.lm
    for im in site.images:
        key = digest("input", im.id, im.display)
        e = cache.get(key)
        if e is None:
            rel = _png(out, f"img/in-{key}.png", im.display, image=im.name)
            e = cache.put(key, [rel], src=rel, w=int(im.display.shape[1]), h=int(im.display.shape[0]))
        site.inputs[im.id] = e
        prog.update()
    # the receptive-field profile (architecture only) and each layer's centre-unit box on the first image
    key = digest("profile", lm.name, [(x.index, x.receptive_field, x.jump) for x in site.every], site.size)
    e = cache.get(key)
    if e is None:
        fig = pictures.profile(lm.name, site.every, tuple(site.size))  # type: ignore[arg-type]
        e = cache.put(key, [], src=None) if fig is None else cache.put(key, [f"img/rf-profile-{key}.png"], src=f"img/rf-profile-{key}.png")
        if fig is not None:
            _png(out, e["src"], fig, model=lm.name, kind="receptive field profile")
        stats.add("rf profile", True)
    else:
        stats.add("rf profile", False)
    site.profile = e
    prog.update()
    first = site.images[0] if site.images else None
    for lay in site.layers:
        if first is not None:
            hw = tuple(first.display.shape[:2])
            f = site.field_of(hw, lay)
            if f is not None:
                unit = (f.size[0] // 2, f.size[1] // 2)
                box = f.box(unit)
                key = digest("rf", lm.name, lay.index, lay.name, first.id, box)
                e = cache.get(key)
                stats.add("rf", e is None)
                if e is None:
                    name = f"{lay.index} {lay.name}" + (f" ({lay.alias})" if lay.alias else "")
                    rf = "x".join(map(str, f.rf)) if f.rf[0] != f.rf[1] else str(f.rf[0])
                    legend = (f"{name}: unit {unit[0]},{unit[1]} of {f.size[0]}x{f.size[1]}, rf {rf} px, "
                              f"rows {box[0]}..{box[2]}, cols {box[1]}..{box[3]}")
                    pic = pictures.rf_picture(first.display, box, f.center(unit),
                                              title=f"{lm.name} \u00b7 theoretical receptive field of the centre unit",
                                              legend=legend)
                    rel = _png(out, f"img/rf-{key}.png", pic, model=lm.name, layer=lay.index, name=lay.name,
                               box=list(box), unit=list(unit))
                    e = cache.put(key, [rel], src=rel, box=list(box), unit=list(unit), w=int(pic.shape[1]),
                                  h=int(pic.shape[0]))
                site.rf[lay.index] = e
        prog.update()


def _filters(site: Site, cache: Cache, out: str, stats: _Counts, prog: Progress, pool: ThreadPoolExecutor) -> None:
    from ..filters import weight_stats

    lm = site.lm

    def one(lay: ConvLayer) -> tuple[int, dict[str, Any], bool]:
        key = digest("filters", site.wfp, lay.index, lay.name)
        e = cache.get(key)
        if e is not None:
            return lay.index, e, False
        w = lay.module.weight.detach().cpu().float().numpy()  # type: ignore[union-attr]
        pics, mode, rects = pictures.filter_pictures(w, groups=lay.groups)
        files, pages_ = [], []
        for p, pic in enumerate(pics):
            rel = _png(out, f"img/filters-{key}-{p}.png", pic.pixels, pic.palette, model=lm.name,
                       weights=lm.weights, layer=lay.index, name=lay.name, mode=mode)
            files.append(rel)
            pages_.append({"src": rel, "w": pic.width, "h": pic.height})
        st = weight_stats(w)
        return lay.index, {"files": files, "pages": pages_, "mode": mode, "rects": rects,
                           "stats": {k: _r(v) for k, v in st.items()}, "key": key}, True

    for idx, e, made in pool.map(one, site.layers):
        if made:
            key = e.pop("key")
            e = cache.put(key, e.pop("files"), **e)
        site.filters[idx] = e
        stats.add("filters", made)
        prog.update()


def _maps(site: Site, cache: Cache, out: str, stats: _Counts, prog: Progress, pool: ThreadPoolExecutor,
          batch_size: int) -> None:
    """Sprites, statistics and the sheet of every image; the forward pass only for images that
    miss something, and then over every layer (the sheet needs them all)."""
    lm = site.lm
    keys: dict[tuple[str, int], str] = {}
    todo: list[ReportImage] = []
    for im in site.images:
        missing = False
        for lay in site.layers:
            k = digest("maps", site.wfp, im.id, lay.index, lay.name, site.stage, site.cmap, *_computed_in(site.precision))
            keys[(im.id, lay.index)] = k
            e = cache.get(k)
            if e is None:
                missing = True
            else:
                site.maps[(im.id, lay.index)] = e
        skey = digest("sheet", site.wfp, im.id, [x.index for x in site.layers], site.stage, site.cmap,
                      *_computed_in(site.precision))
        keys[(im.id, -1)] = skey
        e = cache.get(skey)
        if e is None:
            missing = True
        else:
            site.sheets[im.id] = e
        if missing:
            todo.append(im)
        else:
            stats.add("maps", False, len(site.layers))
            stats.add("sheet", False)
            prog.update(len(site.layers) + 1)
    if not todo:
        return
    pending: list[ReportImage] = []
    futures: list[tuple[ReportImage, ConvLayer, Future[Any]]] = []
    rows: dict[str, list[tuple[int, Any]]] = {}

    def render(im: ReportImage, lay: ConvLayer, m: np.ndarray) -> tuple[dict[str, Any] | None, Any]:
        k = keys[(im.id, lay.index)]
        st = pictures.map_stats(m)
        row = pictures.sheet_row(m, st["mean"], label=f"{lay.index} {lay.alias or lay.name}", k=SHEET_MAPS)
        if (im.id, lay.index) in site.maps:
            return None, row
        pixels, palette, geo = pictures.map_sprite(m, cmap=site.cmap)
        rel = _png(out, f"img/maps-{k}.png", pixels, palette, image=im.name, model=lm.name, weights=lm.weights,
                   layer=lay.index, name=lay.name, stage=site.stage, cmap=site.cmap,
                   layout=f"{m.shape[0]} maps of {m.shape[1]}x{m.shape[2]}, {geo.cols} columns, gap {geo.gap} px, "
                          f"each map on its own min..max")
        e = {"files": [rel], "src": rel, "sprite": geo.as_dict(), "shape": [int(s) for s in m.shape],
             "mean": [_r(v) for v in st["mean"]], "max": [_r(v) for v in st["max"]],
             "peak": st["peak"].tolist(), "zero_fraction": _r(float(np.count_nonzero(m == 0) / m.size))}
        return e, row

    def collect(limit: int) -> None:
        while len(futures) > limit:
            im, lay, fut = futures.pop(0)
            e, row = fut.result()
            if e is not None:
                e = cache.put(keys[(im.id, lay.index)], e.pop("files"), **e)
                site.maps[(im.id, lay.index)] = e
            stats.add("maps", e is not None)
            rows.setdefault(im.id, []).append((lay.index, row))
            prog.update()

    def batches() -> Any:
        for batch in iter_batches(todo, batch_size=batch_size, key=lambda im: im.x.shape):
            pending[:] = batch
            yield np.stack([im.x for im in batch])
            collect(0)
            for im in batch:
                _sheet(site, cache, out, stats, im, rows.pop(im.id, []), keys[(im.id, -1)])
                prog.update()
            cache.save()  # an interrupted build keeps what it finished

    def on_layer(_b: int, lay: ConvLayer, arr: np.ndarray) -> None:
        for k, im in enumerate(pending):
            futures.append((im, lay, pool.submit(render, im, lay, np.array(arr[k]))))
        collect(4 * (pool._max_workers))  # bounded: at most a few layers' maps in flight

    stream_maps(lm.model, site.layers, batches(), stage=site.stage, on_layer=on_layer)


def _sheet(site: Site, cache: Cache, out: str, stats: _Counts, im: ReportImage, rows: list[tuple[int, Any]],
           key: str) -> None:
    if im.id in site.sheets:
        stats.add("sheet", False)
        return
    order = {str(i): [int(c) for c in r.channels] for i, r in rows}  # the image page links each tile
    rows = [r for _, r in sorted(rows, key=lambda t: t[0])]
    title = (f"{im.name} \u00b7 {site.lm.name} {site.lm.weights} \u00b7 stage {site.stage} \u00b7 "
             f"top {SHEET_MAPS} maps per layer by mean activation, each on its own scale")
    pic = pictures.sheet(rows, cmap=site.cmap, title=title)
    rel = _png(out, f"img/sheet-{key}.png", pic, image=im.name, model=site.lm.name, weights=site.lm.weights,
               stage=site.stage, layers=[r.label for r in rows])
    site.sheets[im.id] = cache.put(key, [rel], src=rel, w=int(pic.shape[1]), h=int(pic.shape[0]), order=order)
    stats.add("sheet", True)


def _computed_in(precision: str) -> tuple[str, ...]:
    """The cache-key part of a picture's precision: none for fp32 (the keys of earlier runs, made
    in fp32, stay valid), the name otherwise (a bf16 picture is not an fp32 one)."""
    return () if precision in ("fp32", "auto") else (precision,)


def _maximize(site: Site, cache: Cache, out: str, stats: _Counts, prog: Progress, channels: Mapping[int, Sequence[int]],
              *, steps: int, seed: int, precision: str) -> None:
    from ..optimize import maximize

    lm = site.lm
    by_index = {lay.index: lay for lay in site.every}
    for idx, chans in channels.items():
        lay = by_index[idx]
        keys = {c: digest("maximize", site.wfp, idx, lay.name, c, site.stage, steps, seed, *_computed_in(precision))
                for c in chans}
        missing = []
        for c in chans:
            e = cache.get(keys[c])
            if e is None:
                missing.append(c)
            else:
                site.maximized[(idx, c)] = e
                stats.add("maximize", False)
                prog.update()
        if not missing:
            continue
        res = maximize(lm.model, targets=missing, layer=lay, stage=site.stage, steps=steps, seed=seed,
                       mean=lm.mean, std=lm.std, precision=precision)
        tiles = pictures.maximize_tiles(res.images)
        for i, c in enumerate(missing):
            rel = _png(out, f"img/max-{keys[c]}.png", tiles[i], model=lm.name, weights=lm.weights, layer=idx,
                       name=lay.name, channel=c, steps=steps, seed=seed, stage=site.stage)
            site.maximized[(idx, c)] = cache.put(keys[c], [rel], src=rel, value=_r(float(res.values[i])),
                                                 steps=steps)
            stats.add("maximize", True)
            prog.update()


PICTURE_EXT = (".png", ".jpg", ".jpeg")


def _include(site: Site, cache: Cache, out: str, stats: _Counts) -> None:
    """Copy the pictures of other cnnviz commands into the report and file each under the layer
    or image it is about: from its PNG metadata (cnnviz writes ``model``, ``layer`` and ``image``),
    else from its name ({model}-{index:02d}-{name}-... or {image stem}-{model}-...); the rest go on
    the model page. Copies are content-addressed: re-running copies nothing new."""
    from PIL import Image

    from ..io import write_atomic

    by_index = {lay.index: lay for lay in site.layers}
    for folder in site.include:
        if not os.path.isdir(folder):
            raise UsageError(f"--include {folder!r} is not a folder")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not (name.lower().endswith(PICTURE_EXT) and os.path.isfile(path)):
                continue
            with open(path, "rb") as f:
                data = f.read()
            try:
                with Image.open(path) as im:
                    meta = dict(getattr(im, "text", {}) or {})
            except OSError:
                continue  # not a picture after all
            ext = os.path.splitext(name)[1].lower()
            key = digest("include", data)
            rel = f"img/inc-{key}{ext}"
            if cache.get(key) is None:
                write_atomic(os.path.join(out, rel), data)
                cache.put(key, [rel])
                stats.add("included", True)
            else:
                stats.add("included", False)
            layer = image = None
            if meta.get("model") == site.lm.name and str(meta.get("layer", "")).isdigit():
                layer = int(meta["layer"]) if int(meta["layer"]) in by_index else None
            if layer is None:
                for idx, lay in by_index.items():
                    if f"{site.lm.name}-{idx:02d}-{lay.slug}-" in name:
                        layer = idx
                        break
            for im in site.images:
                src = os.path.basename(im.source or im.name)
                stem = os.path.splitext(src)[0]
                if (meta.get("image") and os.path.basename(str(meta["image"])) == src) or name.startswith(f"{stem}-{site.lm.name}-"):
                    image = im.id
                    break
            entry = {"src": rel, "name": name, "layer": layer, "image": image,
                     "kind": meta.get("kind") or meta.get("method") or ""}
            chans = str(meta.get("channels", ""))
            if layer is not None and meta.get("objective") and chans.replace(",", "").isdigit():
                # cnnviz maximize's picture: the channels it shows (a feature visualization per channel)
                entry.update(kind="maximize", channels=[int(c) for c in chans.split(",")], weights=meta.get("weights"))
            site.included.append(entry)


def _r(v: float) -> float:
    """Four significant digits: what a page shows, at a fraction of the bytes."""
    v = float(v)
    if not math.isfinite(v) or v == 0:
        return 0.0 if not math.isfinite(v) else v
    return float(f"{v:.4g}")

