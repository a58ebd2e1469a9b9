"""The `top` job: dataset examples. Scan a collection of images (or query an index of a past
scan) and, for every selected channel of every selected layer, find the K images that excite it
most (or least), then draw the receptive-field window of each peak unit and report it.

Three ways in, one answer:

* a scan without an index keeps a streaming TopK per layer in memory;
* a scan with ``index`` writes every image's per-channel statistics into an ActivationIndex
  (resumable, incremental, refusing other weights or preprocessing), then queries it;
* ``index`` without images answers from the index alone (no weights read, no forward pass
  unless ``overlay`` asks for the maps).

``engine='ray'`` runs the scan on a Ray cluster (cnnviz.rayscan), writing the same index.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TextIO

import numpy as np

from ..capture import hook_points
from ..device import Placement, place
from ..detect import describe, is_detector, transform_params
from ..errors import ImageError, UsageError
from ..index import (PART_IMAGES, PART_SECONDS, ActivationIndex, IndexStoreError, describe_layers, differences,
                     make_provenance)
from ..io import DEFAULT_MAX_PIXELS, indices_tag, output_name, size_tag
from ..layers import ConvLayer, conv_layers, select_layers
from ..util import parse_size
from ..maps import resolve_channels
from ..models import LoadedModel, weights_digest
from ..sources import ModelSpec, architecture, load, parse_source
from ..patches import Patch, Row, page_rows, paginate_examples, render_examples
from ..progress import Progress, around_bars
from ..rayscan import ray_scan
from ..render import Picture, check_cmap
from ..rf import Field, receptive_fields
from ..scan import SCORES, Example, LayerStats, Preprocess, TopK, expand_images, image_id, in_shard, parse_shard, scan
from ..topdraw import display_cache, example_row, example_title, overlay_maps
from .output import Output, Record, Say, default, quiet, request_tags

ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class TopRequest:
    """Everything `cnnviz top` can be asked (defaults = the CLI's).

    ``images``: files, folders, globs, '-' (paths on ``stdin``); empty with ``index`` = query the
    index. ``layers``/``channels``: selectors; ``k`` examples per channel ranked by ``score``
    ('max' or 'mean' of the channel's map), least first with ``bottom``. ``size``/``crop``: the
    input (default: the weights' crop size, the classifier's Resize + CenterCrop). ``index``: an
    index folder to build, extend or query; ``image``: with ``index``, report the channels this
    image excites most and its rank in each. ``shard`` 'I/N': scan only that part of the list.
    ``part_images``/``part_seconds``: an index part (the unit of resumption) is committed at that
    many images or that many seconds after the last, whichever comes first (0 s: by count only).
    ``max_side``: no picture side exceeds it (px); a grid that would is paged (``-p01``, ...).
    ``given``: the fields the caller set on purpose (the CLI: options on the command line); a
    query answers with the index's own model, weights, stage and preprocessing, and refuses those
    of them that say otherwise instead of ignoring them."""

    images: tuple[str, ...] = ()
    model: str | ModelSpec = "resnet50"  # a --model source, or the ModelSpec of the model options
    weights: str = "DEFAULT"
    seed: int = 0
    layers: tuple[str, ...] = ()
    stage: str = "conv"
    channels: str | None = None
    k: int = 9
    score: str = "max"
    bottom: bool = False
    size: str | int | None = None
    crop: bool = True
    max_pixels: int | None = None
    batch_size: int = 32
    workers: int | None = None
    strict: bool = False
    index: str | None = None
    image: str | None = None
    shard: str | None = None
    engine: str = "local"
    pictures: bool = True
    overlay: bool = False
    separate: bool = False
    tile: int = 112
    cmap: str = "inferno"
    alpha: float = 0.6
    part_images: int = PART_IMAGES
    part_seconds: float = PART_SECONDS
    max_side: int = 8192
    given: frozenset[str] = frozenset()
    device: str = "auto"
    precision: str = "fp32"
    quiet: bool = False


@dataclass
class LayerResult:
    """The examples of one layer: {channel: [entry]}, entry = {path, image, score, max, mean,
    unit [y, x], box [y0, x0, y1, x1]} (box: inclusive input pixels of the preprocessed image,
    may extend into the padding), best first; plus the pictures written for it: per channel the
    one its examples start on (``pictures``) and every one holding some of them (``pages``)."""

    layer: ConvLayer
    examples: dict[int, list[Record]]
    field: Field
    pictures: dict[int, str] = field(default_factory=dict)
    pages: dict[int, list[str]] = field(default_factory=dict)


@dataclass
class TopResult:
    """What a run found: per layer its examples; how many images were scanned now, skipped as
    unreadable, listed on stdin but missing (skipped), already in the index; how many the answer
    ranks (``images``); and what made the numbers (model, weights, preprocessing, stage)."""

    layers: list[LayerResult]
    model_name: str = ""
    weights: str = ""
    stage: str = "conv"
    prep: Preprocess | None = None
    model: LoadedModel | None = field(default=None, repr=False)
    scanned: int = 0
    skipped: int = 0
    missing: int = 0
    already: int = 0
    images: int = 0
    seconds: float = 0.0


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))


def run_top(req: TopRequest, *, output: Output | None = None, model: LoadedModel | None = None, say: Say = quiet,
            stdin: TextIO | None = None) -> TopResult:
    """Scan and/or query, then write one grid PNG per layer (or one strip per channel with
    ``separate``; pages ``-p01``, ``-p02``, ... where a picture would exceed ``req.max_side``)
    through ``output`` (default ``Output('.')``) and report one record per channel (see docs/top.md,
    ``--json``; ``picture``/``pictures`` name the PNGs holding its examples), each layer's as
    soon as its pictures are written. ``Output('-')`` streams the run's one picture (a usage
    error up front if it draws more). Every usage error is raised before weights or pixels are
    read. ``model``: an already loaded model (else ``req.model`` is loaded with ``req.weights``, on
    ``req.device``)."""
    with _place(req, say).autocast(model.model if model is not None else None):
        return _run_top(req, output=output, model=model, say=say, stdin=stdin)


def _run_top(req: TopRequest, *, output: Output | None, model: LoadedModel | None, say: Say,
             stdin: TextIO | None) -> TopResult:
    t0 = time.perf_counter()
    output = Output(".") if output is None else output
    _check(req)
    if req.image is not None:
        raise UsageError("--image is a query: call image_query (or the CLI) for it")
    if not req.images and not req.index:
        raise UsageError("no images: pass IMAGES (files, folders, globs, '-' for a list on stdin) or --index DIR to query an index")
    if not req.pictures and output.streaming:
        raise UsageError("-o - streams a picture to stdout, but --no-pictures draws none; drop -o -")
    if not req.images:
        result = _query(req, output=output, model=model, say=say)
    elif req.engine == "ray" and req.index is None:  # Ray actors write an index: a temporary one
        with tempfile.TemporaryDirectory(prefix="cnnviz-top-") as tmp:
            result = _scan(replace(req, index=os.path.join(tmp, "index")), output=output, model=model, say=say,
                           stdin=stdin)
    else:
        result = _scan(req, output=output, model=model, say=say, stdin=stdin)
    for lr in _draw(req, result, output=output, model=model) if req.pictures else result.layers:
        for c, entries in lr.examples.items():
            rec: Record = {"layer": lr.layer.index, "name": lr.layer.name, "alias": lr.layer.alias or None,
                           "channel": c, "score": req.score, "order": "bottom" if req.bottom else "top",
                           "receptive_field": lr.field.as_dict()["receptive_field"], "examples": entries}
            if c in lr.pictures:
                rec["picture"] = lr.pictures[c]
                rec["pictures"] = lr.pages[c]
            output.report(rec)
    result.seconds = time.perf_counter() - t0
    return result


def _check(req: TopRequest) -> None:
    if req.score not in SCORES:
        raise UsageError(f"unknown --score {req.score!r}; choose max or mean")
    if req.k < 1:
        raise UsageError(f"-k must be at least 1, not {req.k}")
    if req.engine not in ENGINES:
        raise UsageError(f"unknown --engine {req.engine!r}; choose local or ray")
    if req.shard is not None:
        parse_shard(req.shard)
        if not req.index:
            raise UsageError("--shard writes one part of a scan: give it an --index DIR (then 'cnnviz top merge')")
    if req.image is not None and not req.index:
        raise UsageError("--image asks an index: give --index DIR")
    if req.image is not None and req.images:
        raise UsageError("--image queries the index; scan IMAGES in a separate command first")
    if req.engine == "ray" and not req.images:
        raise UsageError("--engine ray runs a scan: pass IMAGES")
    if req.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {req.batch_size}")
    if req.tile < 8:
        raise UsageError(f"--tile must be at least 8 px, not {req.tile}")
    if req.pictures:
        check_cmap(req.cmap)
        # --tile too large for --max-side: the same planner, on a stand-in row, before any work
        paginate_examples([Row("99999", [Patch(np.zeros((1, 1, 3), np.uint8), "-0.000123", "image.jpg")])], k=1,
                          tile=req.tile, max_side=req.max_side)


# ---------------------------------------------------------------- planning


def _preprocess(req: TopRequest, lm: LoadedModel) -> Preprocess:
    if lm.channels_in != 3:
        raise UsageError(f"top scans RGB images; {lm.name} takes {lm.channels_in}-channel input, which the index's "
                         f"preprocessing does not record (use 'cnnviz maps' for such models)")
    if lm.limits:
        raise UsageError(f"top runs images in batches at their own sizes, but {'; '.join(lm.limits.values())}")
    return batch_preprocess(lm, size=req.size, crop=req.crop, max_pixels=req.max_pixels)


def batch_preprocess(lm: LoadedModel, *, size: str | int | None, crop: bool, max_pixels: int | None) -> Preprocess:
    """The Preprocess of a batched scan (top, compare): ``size`` None = the weights' crop size;
    'HxW' resizes exactly (not with ``crop``). UsageError for a size out of range."""
    shape: int | tuple[int, int]
    if size is None:
        shape = lm.crop_size
    elif str(size).strip().isdigit():
        shape = int(str(size).strip())
        if not 1 <= shape <= 8192:
            raise UsageError(f"--size {shape} out of range; use 1..8192 pixels")
    else:
        shape = parse_size(str(size))
        if crop:
            raise UsageError("--size HxW resizes exactly; it cannot be combined with the centre crop (add --no-crop)")
    detector = None
    if lm.task == "detection" and is_detector(lm.model):  # the model's own resize, on equal-size squares
        if not crop or isinstance(shape, tuple):
            raise UsageError(f"a detector resizes each photo itself ({describe(lm.model)}), so photos of other shapes "
                             f"give inputs of other sizes; scans batch them as centre squares: keep --crop and --size S")
        detector = transform_params(lm.model, shape)
    return Preprocess(size=shape, crop=crop, resize_size=lm.resize_size, crop_size=lm.crop_size, mean=tuple(lm.mean),
                      std=tuple(lm.std), max_pixels=max_pixels or DEFAULT_MAX_PIXELS, interpolation=lm.interpolation,
                      detector=detector)


def _select(req: TopRequest, net: Any, *, allowed: Sequence[int] | None = None, model_name: str = "") -> tuple[list[ConvLayer], dict[int, list[int]]]:
    """Layers and {layer index: channels} of the request on ``net`` (any device)."""
    every = conv_layers(net)
    if req.layers:
        layers = select_layers(every, req.layers, model_name=model_name)
    elif allowed is not None:
        layers = [every[i] for i in allowed]
    else:
        raise UsageError("no layer: pass --layer SEL (e.g. -l block4_conv1 or -l 10; 'cnnviz layers' lists them)")
    if allowed is not None:
        extra = [lay for lay in layers if lay.index not in allowed]
        if extra:
            held = describe_layers([{"index": i, "name": every[i].name, "alias": every[i].alias} for i in allowed])
            raise UsageError(f"layer {extra[0].index} {extra[0].alias or extra[0].name} is not in the index; it holds {held}")
    chans = {lay.index: resolve_channels(req.channels, lay.out_channels, layer_name=lay.name) for lay in layers}
    return layers, chans


def _fields(net: Any, layers: Sequence[ConvLayer], size: tuple[int, int]) -> dict[str, Field]:
    return receptive_fields(net, size=size, layers=[lay.name for lay in layers])


def _input_hw(prep: Preprocess) -> tuple[int, int]:
    """The preprocessed size used for geometry (exact with crop or HxW; a square otherwise: the
    field numbers (lo, hi, jump) of a conv net do not depend on the input size)."""
    return prep.size if isinstance(prep.size, tuple) else (int(prep.size), int(prep.size))


def _layer_dicts(layers: Sequence[ConvLayer]) -> list[dict[str, Any]]:
    return [{"index": lay.index, "name": lay.name, "alias": lay.alias or None, "channels": lay.out_channels} for lay in layers]


def _prepare(req: TopRequest, output: Output, layers: Sequence[ConvLayer], chans: dict[int, list[int]], *,
             model_name: str, weights: str, stage: str) -> None:
    """The output, checked before any weights or pixels are read: the folder is created; a stream
    (-o -) must get exactly one picture, counted here with stand-in labels (pages included)."""
    if not req.pictures:
        return
    if not output.streaming:
        output.prepare(None)
        return
    why = ""
    if len(layers) > 1:
        why = f"one picture per layer, {len(layers)} layers"
    elif req.separate and len(chans[layers[0].index]) > 1:
        why = f"--separate: one strip per channel, {len(chans[layers[0].index])} channels"
    else:
        lay = layers[0]
        rows = [Row(f"{c}", [_STAND_IN] * req.k) for c in chans[lay.index]]
        text = _title(req, model_name=model_name, weights=weights, layer=lay, stage=stage, images=10**9, rf=999,
                      channel=chans[lay.index][0] if req.separate else None)
        pages = len(paginate_examples(rows, k=req.k, tile=req.tile, title=text, max_side=req.max_side)[1])
        if pages > 1:
            why = (f"{len(rows)} channel(s) x {req.k} examples need {pages} pages of --max-side {req.max_side} px")
    output.prepare(2 if why else 1, message=f"-o - streams exactly one PNG to stdout, but this run draws more ({why}); "
                                            f"use -o DIR")


_STAND_IN = Patch(np.zeros((1, 1, 3), np.uint8), "-0.000123", "image_000000.jpg")


# ---------------------------------------------------------------- scanning


def _scan(req: TopRequest, *, output: Output, model: LoadedModel | None, say: Say, stdin: TextIO | None) -> TopResult:
    say = around_bars(say)  # skipped files are reported while the scan's bar is drawn
    arch = model or architecture(_spec(req))
    layers, chans = _select(req, arch.model, model_name=_spec(req).source)
    hook_points(arch.model, layers, req.stage)  # --stage act not available: usage error now
    _prepare(req, output, layers, chans, model_name=arch.name, weights=model.weights if model else req.weights,
             stage=req.stage)
    missing: list[str] = []

    def on_missing(path: str, message: str) -> None:  # a listed path deleted since: skipped like an unreadable file
        if req.strict:
            raise ImageError(message + " (--strict)")
        say(f"cnnviz: warning: skipped {message}")
        missing.append(path)

    paths = expand_images(req.images, stdin=stdin, on_missing=on_missing)
    if req.shard is not None:
        shard = parse_shard(req.shard)
        paths = [p for p in paths if in_shard(p, shard)]
        say(f"top: shard {shard[0]}/{shard[1]}: {len(paths)} image(s)")
    lm = model or load(_spec(req), device=_place(req).device)
    prep = _preprocess(req, lm)
    workers = default_workers() if req.workers is None else req.workers
    layers = [conv_layers(lm.model)[lay.index] for lay in layers]  # the real modules
    field_of = _fields(arch.model, layers, _input_hw(prep))  # on 'meta' for registry models: free
    result = TopResult(layers=[], model_name=lm.name, weights=lm.weights, stage=req.stage, prep=prep, model=lm,
                       missing=len(missing))

    def skip(path: str, message: str) -> None:
        say(f"cnnviz: warning: skipped {message}")

    if req.index is None:
        tops = {lay.name: TopK(chans[lay.index], req.k, score=req.score, bottom=req.bottom) for lay in layers}
        ids = np.asarray([image_id(p) for p in paths], np.int64)

        def on_batch(pos: list[int], stats: dict[str, LayerStats]) -> None:
            for name, t in tops.items():
                t.update(ids[pos], stats[name])

        with Progress(len(paths), desc="top", unit="image", quiet=req.quiet) as progress:
            counts = scan(lm.model, layers, paths, prep=prep, on_batch=on_batch, stage=req.stage,
                          batch_size=req.batch_size, workers=workers, strict=req.strict, on_skip=skip,
                          on_progress=progress.goto)
        result.scanned, result.skipped, result.images = counts.scanned, len(counts.skipped), counts.scanned
        path_of = dict(zip(ids.tolist(), paths))
        for lay in layers:
            ex = tops[lay.name].result()
            result.layers.append(LayerResult(lay, {c: _entries(ex[c], path_of, field_of[lay.name]) for c in chans[lay.index]},
                                             field_of[lay.name]))
        return result

    # With an index: statistics of every channel go to disk, the answer comes from a query.
    prov = make_provenance(model=lm.name, weights=lm.weights, weights_sha256=weights_digest(lm.model),
                           preprocess=prep.as_dict(), stage=req.stage, layers=_layer_dicts(layers))
    idx = ActivationIndex.create_or_open(req.index, prov)
    _check_index_layers(idx, layers)
    with idx:
        known = idx.images()
        todo, changed = [], 0
        for p in paths:
            a = os.path.abspath(p)
            got = known.get(image_id(a))
            if got is None:
                todo.append(a)
            elif not got.ok and _changed(a, got):
                todo.append(a)  # an unreadable file that changed since: try again
            elif got.ok and _changed(a, got):
                changed += 1
        result.already = len(paths) - len(todo)
        if result.already:
            say(f"top: {result.already} of {len(paths)} image(s) already in {req.index}; scanning {len(todo)}")
        if changed:
            say(f"cnnviz: warning: {changed} indexed file(s) changed on disk since their scan; the index keeps their "
                f"old values (scan into a new --index to refresh them)")
        if req.engine == "ray":
            counts = ray_scan(idx, lm, layers, todo, prep=prep, stage=req.stage, batch_size=req.batch_size,
                              part_images=req.part_images, strict=req.strict, actors=req.workers, say=say)
        else:
            writer = idx.writer(part_images=req.part_images, part_seconds=req.part_seconds)

            def on_index_batch(pos: list[int], stats: dict[str, LayerStats]) -> None:
                writer.add([todo[i] for i in pos], stats)

            def skip_and_record(path: str, message: str) -> None:
                skip(path, message)
                writer.skip(path, message)

            try:
                with Progress(len(todo), desc="top", unit="image", quiet=req.quiet) as progress:
                    counts = scan(lm.model, layers, todo, prep=prep, on_batch=on_index_batch, stage=req.stage,
                                  batch_size=req.batch_size, workers=workers, strict=req.strict,
                                  on_skip=skip_and_record, on_progress=progress.goto)
            except BaseException:
                # Ctrl-C, --strict, a full disk...: the complete batches are committed, so the
                # same command continues from here (the buffer never holds a partial batch).
                writer.flush()
                raise
            writer.flush()
        result.scanned, result.skipped = counts.scanned, len(counts.skipped)
    result.images = idx.count()
    result.layers = _answer(req, idx, layers, chans, field_of)
    return result


def _changed(path: str, got: Any) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (int(st.st_size), int(st.st_mtime_ns)) != (got.bytes, got.mtime_ns)


def _check_index_layers(idx: ActivationIndex, layers: Sequence[ConvLayer]) -> None:
    for lay in layers:
        d = idx.layer(lay.index)
        if d["name"] != lay.name:
            raise IndexStoreError(f"index {idx.root!r} layer {lay.index} is {d['name']}, not {lay.name}")


def _answer(req: TopRequest, idx: ActivationIndex, layers: Sequence[ConvLayer], chans: dict[int, list[int]],
            field_of: dict[str, Field]) -> list[LayerResult]:
    out = []
    found: list[tuple[ConvLayer, dict[int, list[Example]]]] = []
    ids: set[int] = set()
    for lay in layers:
        ex = idx.top(layer=lay.index, channels=chans[lay.index], k=req.k, score=req.score, bottom=req.bottom)
        found.append((lay, ex))
        ids.update(e.image for row in ex.values() for e in row)
    path_of = idx.paths(ids)
    for lay, ex in found:
        out.append(LayerResult(lay, {c: _entries(ex.get(c, []), path_of, field_of[lay.name]) for c in chans[lay.index]},
                               field_of[lay.name]))
    return out


def _entries(examples: Sequence[Example], path_of: dict[int, str], fld: Field) -> list[Record]:
    return [{"path": path_of.get(e.image, "?"), "image": e.image, "score": e.score, "max": e.max, "mean": e.mean,
             "unit": list(e.unit), "box": list(fld.box(e.unit))} for e in examples]


# ---------------------------------------------------------------- answering from an index alone


_BF16_REFUSED = ("top ranks images over a whole dataset, and an index is compared with later scans and queries; "
                 "bfloat16 keeps 3 significant digits and would reorder near ties")


def _place(req: TopRequest, say: Say | None = None) -> Placement:
    """--device and --precision checked (and, with ``say``, an accelerator chosen by 'auto'
    announced): fp32 always (see _BF16_REFUSED); --engine ray runs on its workers' CPUs. Cheap:
    the loaders call it again for the device."""
    if req.engine == "ray":
        if req.device.strip().lower() not in ("auto", "cpu"):
            raise UsageError(f"--engine ray runs the model on the Ray workers' CPUs; --device {req.device} applies to "
                             f"--engine local")
        return place("cpu", req.precision, bf16_refused=_BF16_REFUSED)
    return place(req.device, req.precision, say=say, bf16_refused=_BF16_REFUSED)


def _spec(req: TopRequest) -> ModelSpec:
    """The request's model as a ModelSpec (the CLI passes one; library callers may pass a name)."""
    return req.model if isinstance(req.model, ModelSpec) else ModelSpec(req.model, weights=req.weights, seed=req.seed)


def _index_model(idx: ActivationIndex, model: LoadedModel | None) -> LoadedModel:
    if model is not None:
        return model
    return architecture(idx.provenance["model"])


def _index_prep(idx: ActivationIndex) -> Preprocess:
    return Preprocess.from_dict(idx.provenance["preprocess"])


def _check_given(req: TopRequest, idx: ActivationIndex, model: LoadedModel | None) -> None:
    """Refuse the options of ``req.given`` that contradict the index a query answers from (it
    uses the index's own model, weights, stage and preprocessing whatever the options say).
    Explicit weights are loaded and compared by hash, as a scan into the index would."""
    prov, pre = idx.provenance, idx.provenance.get("preprocess", {})
    have: dict[str, Any] = {}
    want: dict[str, Any] = {}
    if "model" in req.given:
        have["model"], want["model"] = prov["model"], parse_source(_spec(req).source).label
    if "stage" in req.given:
        have["stage"], want["stage"] = prov["stage"], req.stage
    pre_have, pre_want = {}, {}
    if "size" in req.given and req.size is not None:
        text = str(req.size).strip()
        pre_have["size"], pre_want["size"] = pre.get("size"), int(text) if text.isdigit() else list(parse_size(text))
    if "crop" in req.given:
        pre_have["crop"], pre_want["crop"] = pre.get("crop"), req.crop
    if pre_want:
        have["preprocess"], want["preprocess"] = pre_have, pre_want
    diff = differences(have, want, there="given")
    if "weights" in req.given and not any(d.startswith("model ") for d in diff):
        lm = model or load(replace(_spec(req), source=_spec(req).source if "model" in req.given else prov["model"]))
        diff += differences({"weights": prov["weights"], "weights_sha256": prov["weights_sha256"]},
                            {"weights": lm.weights, "weights_sha256": weights_digest(lm.model)}, there="given")
    if diff:
        raise IndexStoreError(f"index {req.index!r} answers with the settings it was built with, but the command asks "
                              f"for others: {'; '.join(diff)}; drop them, or scan IMAGES with them into another --index")


def _query(req: TopRequest, *, output: Output, model: LoadedModel | None, say: Say) -> TopResult:
    idx = ActivationIndex.open(req.index)  # type: ignore[arg-type]
    _check_given(req, idx, model)
    if model is not None and model.name != idx.provenance["model"]:
        raise IndexStoreError(f"index {req.index!r} was built with model {idx.provenance['model']}, not {model.name}")
    arch = _index_model(idx, model)
    layers, chans = _select(req, arch.model, allowed=[d["index"] for d in idx.layers], model_name=idx.provenance["model"])
    _check_index_layers(idx, layers)
    prov = idx.provenance
    _prepare(req, output, layers, chans, model_name=prov["model"], weights=prov["weights"], stage=prov["stage"])
    field_of = _fields(arch.model, layers, _input_hw(_index_prep(idx)))
    return TopResult(layers=_answer(req, idx, layers, chans, field_of), images=idx.count(), model_name=prov["model"],
                     weights=prov["weights"], stage=prov["stage"], prep=_index_prep(idx), model=model)


def image_query(req: TopRequest, *, model: LoadedModel | None = None) -> list[Record]:
    """``req.image`` against ``req.index``: per layer, the ``req.k`` channels (among
    ``req.channels``) this image excites most by ``req.score``, with its rank among the index's
    images in each (1 = the channel's best). An indexed image is answered from the index alone;
    any other image runs once through the index's model (its weights, checked by hash, its
    preprocessing and stage) and is ranked as if it were added (``"indexed": false``)."""
    _check(req)
    where = _place(req)
    idx = ActivationIndex.open(req.index)  # type: ignore[arg-type]
    _check_given(req, idx, model)
    arch = _index_model(idx, model)
    layers, chans = _select(req, arch.model, allowed=[d["index"] for d in idx.layers], model_name=idx.provenance["model"])
    field_of = _fields(arch.model, layers, _input_hw(_index_prep(idx)))
    path = os.path.abspath(req.image)  # type: ignore[arg-type]
    known = idx.lookup([image_id(path)]).get(image_id(path))
    if known is not None and known.ok:
        found = {lay.index: idx.image_channels(path, layer=lay.index, k=req.k, score=req.score,
                                               channels=None if req.channels is None else chans[lay.index])
                 for lay in layers}
    else:
        with where.autocast(model.model if model is not None else None):
            found = _rank_new_image(req, idx, layers, chans, path, model)
    out = []
    for lay in layers:
        rows = found[lay.index]
        for r in rows:
            r["box"] = list(field_of[lay.name].box(tuple(r["unit"])))
        out.append({"layer": lay.index, "name": lay.name, "alias": lay.alias or None, "image": path, "score": req.score,
                    "indexed": known is not None and known.ok, "channels": rows})
    return out


def _rank_new_image(req: TopRequest, idx: ActivationIndex, layers: Sequence[ConvLayer], chans: dict[int, list[int]],
                    path: str, model: LoadedModel | None) -> dict[int, list[Record]]:
    """{layer index: rows as ActivationIndex.image_channels gives them} for an image outside the
    index: one forward pass with the index's weights, preprocessing and stage, ranked by the index."""
    if not os.path.isfile(path):
        raise ImageError(f"image {path!r} does not exist (and is not in index {req.index!r})")
    prov = idx.provenance
    lm = _index_weights(req, model=model, need=f"ranking {os.path.basename(path)!r} (not in the index)",
                        otherwise="scan it into the index instead")
    got: dict[str, LayerStats] = {}
    scan(lm.model, list(layers), [path], prep=_index_prep(idx), stage=prov["stage"], batch_size=1, workers=0,
         on_batch=lambda _pos, stats: got.update(stats), on_skip=_refuse)
    found: dict[int, list[Record]] = {}
    for lay in layers:
        st = got[lay.name]
        values = st.score(req.score)[0]
        allowed = chans[lay.index] if req.channels is not None else range(values.shape[0])
        best = sorted(allowed, key=lambda c: (np.isnan(values[c]), -values[c], c))[: req.k]
        ranks = idx.rank_scores(lay.index, {c: float(values[c]) for c in best}, score=req.score)
        found[lay.index] = [{"channel": int(c), "score": float(values[c]), "max": float(st.max[0, c]),
                             "mean": float(st.mean[0, c]), "unit": [int(v) for v in st.unit[0, c]],
                             "rank": ranks[c][0], "of": ranks[c][1]} for c in best]
    return found


# ---------------------------------------------------------------- pictures


def _title(req: TopRequest, **kw: Any) -> str:
    """The title of a layer's grid (or, with ``channel``, of that channel's strip): topdraw's, with the request's ranking."""
    return example_title(k=req.k, score=req.score, bottom=req.bottom, overlay=req.overlay, **kw)


def _draw(req: TopRequest, result: TopResult, *, output: Output, model: LoadedModel | None) -> Iterator[LayerResult]:
    """Write each layer's pictures through ``output``, then yield the layer (its ``pictures`` filled in)."""
    lm = result.model or model
    if req.overlay and lm is None:  # a query: the index's own model and weights, checked by hash
        lm = _index_weights(req, need="--overlay", otherwise="rerun the query without --overlay")
    displays = display_cache(result.prep)
    for lr in result.layers:
        maps: dict[tuple[int, int], np.ndarray] = {}
        if req.overlay and lm is not None:
            maps = overlay_maps(lm.model, lr.layer, lr.examples, prep=result.prep, stage=result.stage,
                                batch_size=req.batch_size)
        channels = list(lr.examples)
        rows = [example_row(c, lr.examples[c], displays, maps, cmap=req.cmap, alpha=req.alpha) for c in channels]
        rf = lr.field.as_dict()["receptive_field"]
        kind = f"{'bottom' if req.bottom else 'top'}-{req.score}"
        meta = {"Software": "cnnviz", "model": result.model_name, "weights": result.weights, "layer": lr.layer.index,
                "name": lr.layer.name, "stage": result.stage, "score": req.score,
                "order": "bottom" if req.bottom else "top", "k": req.k, "images": result.images}
        title = partial(_title, req, model_name=result.model_name, weights=result.weights, layer=lr.layer,
                        stage=result.stage, images=result.images, rf=rf)
        tags = _tags(req, result, lr.layer, channels)
        if req.separate:  # one picture (or pages) per channel
            groups = [([i], title(channel=c), (f"c{c:04d}",)) for i, c in enumerate(channels)]
        else:
            groups = [(list(range(len(rows))), title(), ())]
        for members, text, tag in groups:
            group = [rows[i] for i in members]
            cols, pages = paginate_examples(group, k=req.k, tile=req.tile, title=text, max_side=req.max_side)
            if output.streaming and len(pages) > 1:
                raise UsageError(f"-o - streams exactly one PNG to stdout, but this picture needs {len(pages)} pages "
                                 f"of --max-side {req.max_side} px; use -o DIR")
            for p, page in enumerate(pages, 1):
                img = render_examples(page_rows(group, page), k=cols, tile=req.tile, title=text, max_height=req.max_side)
                chans = [channels[members[line.row]] for line in page]
                ranks = [[ch, line.start + 1, line.stop] for ch, line in zip(chans, page)]
                name = output_name(result.model_name, lr.layer.index, lr.layer.slug, *tag, kind=kind,
                                   tags=[*tags, f"p{p:02d}" if len(pages) > 1 else None])
                page_meta = {**meta, "channels": list(dict.fromkeys(chans)), "examples": ranks, "page": p,
                             "pages": len(pages)}
                path = output.png(name, Picture(img, metadata=page_meta))
                for ch in dict.fromkeys(chans):
                    lr.pictures.setdefault(ch, path)
                    lr.pages.setdefault(ch, []).append(path)
        yield lr


def _tags(req: TopRequest, result: TopResult, layer: ConvLayer, channels: list[int]) -> list[str | None]:
    """File-name tags of what makes the pictures differ from a default run's (docs
    "Output names"), in a fixed order: the channel selection of a grid (a --separate strip already names
    its channel), the stage, -k, --overlay (its alpha and colormap), --tile, --max-side, then the
    input size and crop actually used (an index's, for a query). --bottom and --score are in the
    name's kind ('bottom-mean'); pages add '-p01', ... after the tags."""
    sel = None if req.separate or channels == list(range(layer.out_channels)) else indices_tag("c", channels)
    overlay = ["overlay" + (f"{req.alpha:g}" if req.alpha != default(TopRequest, "alpha") else ""),
               *request_tags(req, [("{}", "cmap")])] if req.overlay else []
    prep = result.prep
    size = None if prep is None or prep.size == prep.crop_size else prep.size  # HxW: always tagged
    return [sel, "act" if result.stage != "conv" else None, *request_tags(req, [("k{}", "k")]), *overlay,
            *request_tags(req, [("tile{}", "tile"), ("side{}", "max_side")]), *size_tag(size),
            "nocrop" if prep is not None and not prep.crop else None]


def _refuse(path: str, message: str) -> None:
    """An unreadable --image: its own message (a scan's --strict note would not apply)."""
    raise ImageError(message)


def _index_weights(req: TopRequest, *, model: LoadedModel | None = None, need: str, otherwise: str) -> LoadedModel:
    """The index's model with its weights (``model`` if given), for what ``need`` names; refused
    (IndexStoreError ending in ``otherwise``) if they are not the weights the index was built with."""
    prov = ActivationIndex.open(req.index).provenance  # type: ignore[arg-type]
    lm = model or load(ModelSpec(prov["model"], weights=prov["weights"], seed=req.seed), device=_place(req).device)
    if weights_digest(lm.model) != prov["weights_sha256"]:
        raise IndexStoreError(f"{need} needs the weights of index {req.index!r} ({prov['weights']}), but those "
                              f"loaded now differ (sha256); {otherwise}")
    return lm


# ---------------------------------------------------------------- merging


def merge_indexes(out: str, sources: Sequence[str]) -> dict[str, int]:
    """`cnnviz top merge`: shard indexes -> one index (see cnnviz.index.merge)."""
    from ..index import merge

    return merge(out, sources)


__all__ = ["TopRequest", "TopResult", "LayerResult", "run_top", "image_query", "merge_indexes", "default_workers",
           "batch_preprocess"]
