"""The `ablate` job: how much a classifier needs each channel of one layer, measured by removing
the channel on a set of images (cnnviz.ablate), with a ranked table, a bar chart, removal curves
and one JSON file of everything.

Labels: by default the intact model's own top-1 (the numbers then measure *agreement* with the
intact model); ``labels_from='folders'`` takes each image's folder name (ImageFolder layout)
matched to the model's class names or indices; any other value is a CSV file of path,label rows.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch

from .. import ablate as ab
from .. import ablatestore as ab_store
from ..ablatedraw import Bar, curves_chart, effects_chart
from ..cam import CamLayer, _check_logits, _outputs, check_spatial, resolve_layers
from ..device import place
from ..errors import ImageError, UsageError
from ..io import indices_tag, output_name, write_atomic
from ..maps import resolve_channels
from ..models import LoadedModel, weights_digest
from ..progress import Progress, around_bars
from ..scan import Preprocess, expand_images, load_batches, parse_shard
from ..select import index_ranges
from ..sources import ModelSpec, architecture, as_spec, load
from ..util import device_of, eval_mode
from .output import Output, Record, Say, quiet

_BF16_REFUSED = "ablate measures drops in probability smaller than bfloat16's rounding"

ENGINES = ("local", "ray")

#: Dataset examples (or filter tiles) per bar of the chart.
THUMBS = 3

#: Above this many bytes of preprocessed images, each pass decodes the images again instead of
#: keeping them in memory (the passes: mean, effects, curves).
KEEP_BYTES = 512 * 2**20


@dataclass(frozen=True, kw_only=True)
class AblateRequest:
    """Everything `cnnviz ablate` can be asked (defaults = the CLI's).

    ``images``: files, folders, globs, '-' (paths on ``stdin``). ``layers``: one layer (a module
    name such as 'features.12' or 'layer4', or a conv selector read at ``stage``; required). ``channels``: the channels to remove one at a time (selector; None: all);
    ``groups``: instead, selections removed together, one unit each. ``labels_from``: None
    (the intact model's top-1), 'folders' or a CSV path. ``ablation``: 'zero' or 'mean' (each
    unit of the layer's output set to its mean over the images). ``sort``: the drop that ranks
    the units ('probability', 'accuracy', 'logit'). ``top``: rows of the text table and bars of
    the chart (TSV/JSON hold every unit). ``curves``: the cumulative removal curves."""

    images: tuple[str, ...] = ()
    model: ModelSpec | str = "resnet50"
    layers: tuple[str, ...] = ()  # required: exactly one
    stage: str = "act"
    channels: str | None = None
    groups: tuple[str, ...] = ()
    labels_from: str | None = None
    ablation: str = "zero"
    per_class: bool = False
    sort: str = "probability"
    top: int = 30
    curves: bool = True
    size: str | int | None = None
    crop: bool = True
    max_pixels: int | None = None
    batch_size: int = 32
    workers: int | None = 0
    strict: bool = False
    index: str | None = None
    shard: str | None = None
    engine: str = "local"
    device: str = "auto"
    precision: str = "fp32"
    quiet: bool = False


@dataclass
class Unit:
    """One ablated unit: its ``label`` ('12' or '0:16'), the ``channels`` removed together, its
    scores with it removed and the drops (accuracy and probability in points), the classes it
    hurts most as (class index, name, accuracy drop, probability drop, images)."""

    label: str
    channels: list[int]
    accuracy: float
    probability: float
    logit: float
    accuracy_drop: float
    probability_drop: float
    logit_drop: float
    rank: int = 0
    hurts: list[tuple[int, str, float, float, int]] = field(default_factory=list)

    def as_dict(self) -> Record:
        return {"rank": self.rank, "unit": self.label, "channels": self.channels, "accuracy": self.accuracy,
                "probability": self.probability, "logit": self.logit, "accuracy_drop": self.accuracy_drop,
                "probability_drop": self.probability_drop, "logit_drop": self.logit_drop,
                "hurts": [{"class": c, "name": n, "accuracy_drop": a, "probability_drop": p, "images": k}
                          for c, n, a, p, k in self.hurts]}


@dataclass
class AblateResult:
    """A run: the units ranked (most needed first), the intact scores, the curves
    ({order: [(units removed, accuracy %, mean probability %)]}), what was measured and the files."""

    model_name: str
    layer: str
    channels: int
    images: int
    ablation: str
    labels: str  # 'model' (agreement with the intact model), 'folders' or the CSV path
    sort: str
    intact: dict[str, float]
    units: list[Unit]
    curves: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    traced: bool = True
    why: str = ""
    skipped: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    shard: str | None = None  # 'I/N' for a shard's partial result (no curves, no files)
    parts: str = ""  # where a shard left its finished blocks

    @property
    def metric(self) -> str:
        """'agreement' with default labels (the intact model's top-1), else 'accuracy'."""
        return "agreement" if self.labels == "model" else "accuracy"

    def as_dict(self) -> Record:
        return {"model": self.model_name, "layer": self.layer, **({"shard": self.shard, "parts": self.parts} if self.shard else {}), "channels": self.channels, "images": self.images,
                "ablation": self.ablation, "labels": self.labels, "metric": self.metric, "sort": self.sort,
                "intact": self.intact, "tail": "traced" if self.traced else "full network (slower): " + self.why,
                "units": [u.as_dict() for u in self.units],
                "curves": {k: [{"removed": n, "accuracy": a, "probability": p} for n, a, p in v] for k, v in self.curves.items()},
                "files": self.files}


def _check(req: AblateRequest) -> None:
    if req.ablation not in ab.FILLS:
        raise UsageError(f"unknown --ablation {req.ablation!r}; choose {' or '.join(ab.FILLS)}")
    if req.sort not in ab.METRICS:
        raise UsageError(f"unknown --sort {req.sort!r}; choose {', '.join(ab.METRICS)}")
    if req.top < 1:
        raise UsageError(f"--top must be at least 1, not {req.top}")
    if req.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {req.batch_size}")
    if req.groups and req.channels is not None:
        raise UsageError("--channels and --group both choose what is removed: give one of them")
    if not req.layers:
        # no default: the layer cam explains is, in SqueezeNet, the class-score maps themselves
        raise UsageError("ablate needs a layer: pass -l/--layer (e.g. -l features.12 or -l layer4; 'cnnviz layers' "
                         "lists the conv layers)")
    if len(req.layers) > 1:
        raise UsageError("ablate measures one layer at a time: give one --layer")
    if req.labels_from not in (None, "folders") and not os.path.isfile(req.labels_from):
        raise UsageError(f"--labels-from {req.labels_from!r}: not 'folders' and no such CSV file")
    if not req.images:
        raise UsageError("no images: pass IMAGES (files, folders, globs, '-' for a list on stdin)")
    if req.shard is not None:
        parse_shard(req.shard)
    if req.engine not in ENGINES:
        raise UsageError(f"unknown --engine {req.engine!r}; choose {' or '.join(ENGINES)}")


def _layer(req: AblateRequest, net: torch.nn.Module, model_name: str) -> CamLayer:
    layers = resolve_layers(net, list(req.layers), stage=req.stage, model_name=model_name)
    if len(layers) != 1:
        raise UsageError(f"ablate measures one layer at a time, but --layer {','.join(req.layers)} selects {len(layers)}")
    return layers[0]


def _units(req: AblateRequest, count: int, layer: str) -> list[tuple[str, list[int]]]:
    if req.groups:
        out = []
        for g in req.groups:
            chans = resolve_channels(g, count, layer_name=layer)
            out.append((index_ranges(chans), chans))
        return out
    return [(str(c), [c]) for c in resolve_channels(req.channels, count, layer_name=layer)]


# ---------------------------------------------------------------- labels


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def class_lookup(categories: Sequence[str], classes: int) -> Callable[[str], int | None]:
    """A function: a label (a class name, forgiving case, '_' and '-', or an index) -> class
    index, or None when it matches none. A name shared by several classes (ImageNet's two
    'crane's) matches none of them: name such a folder by its index."""
    table: dict[str, list[int]] = {}
    for i, n in enumerate(categories):
        table.setdefault(_norm(n), []).append(i)

    def find(label: str) -> int | None:
        text = label.strip()
        if text.isdigit():
            i = int(text)
            return i if i < classes else None
        hits = table.get(_norm(text), [])
        return hits[0] if len(hits) == 1 else None

    return find


def _unmatched_message(bad: Sequence[str], categories: Sequence[str], source: str, model: str) -> str:
    shown = []
    for name in bad[:4]:
        near = difflib.get_close_matches(name, categories, n=1, cutoff=0.5)
        shown.append(f"{name!r}" + (f" (nearest: {near[0]!r})" if near else ""))
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    return (f"{len(bad)} label(s) from {source} match no class of {model}: {', '.join(shown)}{more}; labels are class "
            f"names ('cnnviz models' / --labels FILE) or class indices")


def folder_labels(paths: Sequence[str], *, categories: Sequence[str], classes: int, model: str) -> list[int]:
    """Each image's class from the name of the folder holding it (ImageFolder layout)."""
    find = class_lookup(categories, classes)
    names = [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
    out = [find(n) for n in names]
    bad = sorted({n for n, i in zip(names, out) if i is None})
    if bad:
        raise UsageError(_unmatched_message(bad, categories, "folder names", model))
    return [int(i) for i in out]  # type: ignore[arg-type]


def csv_labels(paths: Sequence[str], csv_path: str, *, categories: Sequence[str], classes: int, model: str) -> list[int]:
    """Each image's class from a CSV of path,label rows (a header row path,label is skipped;
    relative paths are relative to the CSV's folder, or match by file name when unique)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--labels-from {csv_path!r}: cannot read it ({exc})") from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    base = os.path.dirname(os.path.abspath(csv_path))
    by_path: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for r in rows:
        if len(r) < 2:
            raise UsageError(f"--labels-from {csv_path!r}: row {r!r} is not path,label")
        p, lab = r[0].strip(), r[1].strip()
        by_path[os.path.normpath(os.path.join(base, p))] = lab
        by_name.setdefault(os.path.basename(p), []).append(lab)
    labels, missing = [], []
    for p in paths:
        lab = by_path.get(os.path.normpath(os.path.abspath(p)))
        if lab is None:
            cand = by_name.get(os.path.basename(p), [])
            lab = cand[0] if len(cand) == 1 else None
        if lab is None:
            missing.append(p)
        labels.append(lab)
    if missing:
        raise UsageError(f"{len(missing)} image(s) have no label in {csv_path}: "
                         + ", ".join(repr(m) for m in missing[:4]) + (" ..." if len(missing) > 4 else ""))
    find = class_lookup(categories, classes)
    out = [find(str(lab)) for lab in labels]
    bad = sorted({str(lab) for lab, i in zip(labels, out) if i is None})
    if bad:
        raise UsageError(_unmatched_message(bad, categories, csv_path, model))
    return [int(i) for i in out]  # type: ignore[arg-type]


# ---------------------------------------------------------------- the run


def _preprocess(req: AblateRequest, lm: LoadedModel) -> Preprocess:
    from .top import TopRequest, _preprocess as top_preprocess

    # the same images as `top` sees them (size, crop, limits)
    return top_preprocess(TopRequest(size=req.size, crop=req.crop, max_pixels=req.max_pixels), lm)


class _Images:
    """The readable images as batches of (x, positions), decoded once and kept in memory when
    small (KEEP_BYTES), else decoded again on every pass."""

    def __init__(self, paths: Sequence[str], prep: Preprocess, *, batch_size: int, workers: int, strict: bool, say: Say,
                 device: torch.device):
        self.paths, self.prep, self.batch_size, self.workers, self.strict = list(paths), prep, batch_size, workers, strict
        self.say, self.device = say, device
        self.kept: list[tuple[torch.Tensor, list[int]]] | None = None
        self.bad: set[int] = set()
        self._first = True

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[int]]]:
        if self.kept is not None:
            yield from self.kept
            return
        kept: list[tuple[torch.Tensor, list[int]]] | None = [] if self._first else None
        size = 0
        for loaded in load_batches(self.paths, self.prep, batch_size=self.batch_size, workers=self.workers):
            for pos, message in loaded.errors:
                if self.strict:
                    raise ImageError(message)
                if pos not in self.bad:
                    self.bad.add(pos)
                    self.say(f"cnnviz: warning: skipped {message}")
            for batch in loaded.batches:
                x = batch.x.to(self.device)
                if kept is not None:
                    size += x.numel() * x.element_size()
                    if size <= KEEP_BYTES:
                        kept.append((x, batch.positions))
                    else:
                        kept = None
                yield x, batch.positions
        if self._first:
            self._first = False
            self.kept = kept


def run_ablate(req: AblateRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet,
               stdin: TextIO | None = None) -> AblateResult:
    """Measure every unit of the request (one channel, or one ``groups`` selection), write the
    bar chart, the curves (PNG and CSV) and the run as JSON through ``output`` (a folder), and
    return the result, units ranked by their drop in ``req.sort``. Usage errors come before
    weights or pixels are read (except label checks, which need the model's class names)."""
    t0 = time.perf_counter()
    say = around_bars(say)  # skipped files are reported while the bar is drawn
    _check(req)
    if output.streaming:
        raise UsageError("ablate writes a chart, curves and a JSON file: give an output folder with -o DIR, not -o -")
    spec = as_spec(req.model)
    arch = model or architecture(spec)
    if arch.task != "classification":  # accuracy/agreement of a top-1 class has no per-pixel meaning
        raise UsageError(f"ablate measures a classifier's accuracy or top-1 agreement; {arch.name} is a {arch.task} model "
                         f"(per-pixel or per-box outputs): explain it with 'cnnviz cam' instead")
    layer = _layer(req, arch.model, spec.source)
    check_spatial(arch.model, [layer])
    seen = _outputs(arch.model, (224, 224), [layer.point.module]).get(layer.point.module, [])
    if len(seen) > layer.point.call and isinstance(seen[layer.point.call], torch.Tensor):
        count = int(seen[layer.point.call].shape[1])
    else:
        count = None
    paths = expand_images(req.images, stdin=stdin)
    if len(paths) < 2:
        raise UsageError(f"ablate needs at least 2 images, got {len(paths)}: effects are averages over images")
    placement = place(req.device, req.precision, say=say, bf16_refused=_BF16_REFUSED)
    output.prepare(None)
    lm = model or load(spec, device=placement.device)
    net = lm.model
    if count is None:
        count = int(_outputs(net, (lm.crop_size, lm.crop_size), [layer.point.module])[layer.point.module][layer.point.call].shape[1])
    units = _units(req, count, layer.name)
    _check_classifier(lm)
    classes = lm.num_classes or len(lm.categories) or 0
    names = list(lm.categories)
    if req.labels_from == "folders":
        labels = folder_labels(paths, categories=names, classes=classes or 10**9, model=lm.name)
    elif req.labels_from is not None:
        labels = csv_labels(paths, req.labels_from, categories=names, classes=classes or 10**9, model=lm.name)
    else:
        labels = [-1] * len(paths)
    label_arr = torch.as_tensor(labels, dtype=torch.long)
    prep = _preprocess(req, lm)
    images_key = ab_store.files_digest(paths)
    device = device_of(net)
    images = _Images(paths, prep, batch_size=req.batch_size, workers=req.workers or 0, strict=req.strict, say=say, device=device)
    split = ab.LayerSplit(net, layer.point)
    phase = quiet if req.quiet else say  # what the run is doing: muted by --quiet, warnings are not
    if not split.traced:
        phase(f"ablate: {split.why} after {layer.name}: every ablation runs the whole network (slower)")

    shard = parse_shard(req.shard) if req.shard is not None else None
    idx = _open_index(req, lm) if req.index is not None else None
    sets = [u for _, u in units]
    progress = Progress(len(paths), desc="ablate", unit="image", quiet=req.quiet)
    try:
        def with_labels() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, pos in images:
                yield x, label_arr[pos]

        phase(f"ablate: running {len(paths)} image(s) up to {layer.name}")
        was_traced = split.traced
        sweep = ab.Sweep(split, with_labels, mean=req.ablation == "mean", on_batch=progress.update)
        sweep.prepare()
        progress.update(len(images.bad))  # skipped files count as done
        if was_traced and not split.traced:
            phase(f"ablate: {split.why} after {layer.name}: every ablation runs the whole network (slower)")
        if sweep.images < 2:
            raise UsageError(f"ablate needs at least 2 readable images, got {sweep.images}")
        size = sweep.block_size(len(sets))
        about = {"model": lm.name, "weights": lm.weights, "weights_sha256": weights_digest(lm.model), "layer": layer.name,
                 "point": [layer.point.module, layer.point.call], "stage": req.stage, "preprocess": prep.as_dict(),
                 "batch_size": req.batch_size, "device": device.type, "images": images_key,
                 "labels": ab_store.digest(labels), "ablation": req.ablation}
        identity = ab_store.digest(about)
        key = ab_store.digest({**about, "units": sets, "block": size, "tail": split.traced})
        parts = ab_store.Parts(output.target, key, about={**about, "units": len(sets), "block": size}).open()
        unit_blocks = ab.blocks(len(sets), size=size)
        mine = [b for b in range(len(unit_blocks)) if shard is None or b % shard[1] == shard[0]]
        got = _run_blocks(sweep, parts, "units", sets, unit_blocks, mine, progress=progress, phase=phase, engine=req.engine,
                          what=f"removing {len(sets)} unit(s) of {layer.name} on {sweep.images} image(s)"
                               + (f", shard {shard[0]}/{shard[1]} ({sum(len(unit_blocks[b]) for b in mine)} of them)"
                                  if shard else ""))
        if shard is not None:
            if idx is not None:
                phase(f"ablate: --index {req.index} gets the results from the run without --shard that combines the shards")
            result = _shard_result(req, lm, layer, count, sweep, units, unit_blocks, got, names)
            result.parts = parts.dir
            result.seconds = time.perf_counter() - t0
            return result
        effects = sweep.effects(sets, [ab.BlockSums.from_arrays(got[b]) for b in range(len(unit_blocks))])
        order = ab.ranking(effects, by=req.sort)
        result = _result(req, lm, layer, count, effects, units, order, names, split, skipped=len(images.bad))
        if req.curves and len(units) >= 2:
            points = ab.curve_points(len(units))
            plan = ab.curve_sets(sets, ab.curve_orders(order), points)
            csets = [chans for _, _, chans in plan]
            cblocks = ab.blocks(len(csets), size=size)
            cgot = _run_blocks(sweep, parts, "curves", csets, cblocks, list(range(len(cblocks))), progress=progress,
                               phase=phase, engine=req.engine, what=f"removal curves ({len(ab.RANDOM_SEEDS) + 2} orders, {len(csets)} points)")
            curve = sweep.effects(csets, [ab.BlockSums.from_arrays(cgot[b]) for b in range(len(cblocks))])
            for j, (name, k, _) in enumerate(plan):
                result.curves.setdefault(name, []).append((k, float(curve.accuracy[1 + j]) * 100, float(curve.probability[1 + j]) * 100))
    except KeyboardInterrupt:
        progress.close()
        if "parts" in locals():
            say(f"ablate: interrupted; {parts.count('units')} finished block(s) kept in {parts.dir}: "
                f"rerun the same command to resume")
        raise
    finally:
        progress.close()
    mapping = index_layers(lm, layer, idx) if idx is not None else {}
    thumbs = _thumbnails(req, lm, layer, result, idx, mapping, say=say)
    curves_png = _write(req, result, output=output, unit="groups" if req.groups else "channels", thumbs=thumbs,
                        thumbs_kind="examples" if idx is not None else "filters")
    if idx is not None:
        path = _store(req, result, idx, mapping, identity=identity, about=about, curves_png=curves_png)
        result.files.append(path)
        output.report({"path": path, "kind": "table"})
    parts.remove()
    result.seconds = time.perf_counter() - t0
    return result


def _run_blocks(sweep: ab.Sweep, parts: ab_store.Parts, kind: str, sets: list[list[int]], blocks: list[range],
                todo: list[int], *, progress: Progress, phase: Say, what: str, engine: str = "local") -> dict[int, dict[str, Any]]:
    """The sums of blocks ``todo`` of ``sets``: read from ``parts`` when finished before, else
    measured and saved there as each finishes."""
    got: dict[int, dict[str, Any]] = {}
    for b in todo:
        arrays = parts.load(kind, b, rows=len(blocks[b]))
        if arrays is not None:
            got[b] = arrays
    left = [b for b in todo if b not in got]
    done = sum(len(blocks[b]) for b in got)
    phase(f"ablate: {what}" + (f"; {done} already measured in {parts.dir}" if got else ""))
    progress.describe(f"ablate {kind}")
    progress.goto(0, sum(len(blocks[b]) for b in todo))
    progress.update(done)
    delay = float(os.environ.get("CNNVIZ_ABLATE_BLOCK_DELAY", "0") or 0)  # tests: time to interrupt a run

    def finished(b: int, arrays: dict[str, Any]) -> None:
        parts.save(kind, b, arrays)
        got[b] = arrays
        progress.update(len(blocks[b]))
        if delay:
            time.sleep(delay)

    if engine == "ray" and left:
        from ..ablateray import ray_blocks

        data = [(x, lab) for (x, _), lab in zip(sweep.batches(), sweep.labels)]
        ray_blocks(sweep.split.model, sweep.split.point, data, sweep.fill, [(b, [sets[i] for i in blocks[b]]) for b in left],
                   on_block=finished, traced=sweep.split.traced, say=phase)
        return got
    for b in left:
        finished(b, sweep.block([sets[i] for i in blocks[b]]).arrays())
    return got


def _result(req: AblateRequest, lm: LoadedModel, layer: CamLayer, count: int, effects: ab.Effects,
            units: list[tuple[str, list[int]]], order: list[int], names: list[str], split: ab.LayerSplit, *,
            skipped: int) -> AblateResult:
    drops = {m: effects.drop(m) for m in ab.METRICS}
    ranked: list[Unit] = []
    for rank, i in enumerate(order, 1):
        label, chans = units[i]
        hurts = []
        if req.per_class:
            hurts = [(c, names[c] if c < len(names) else str(c), a, p, k) for c, a, p, k in ab.hurt_classes(effects, i)]
        ranked.append(Unit(label, chans, float(effects.accuracy[1 + i]) * 100, float(effects.probability[1 + i]) * 100,
                           float(effects.logit[1 + i]), float(drops["accuracy"][i]), float(drops["probability"][i]),
                           float(drops["logit"][i]), rank, hurts))
    return AblateResult(model_name=lm.name, layer=layer.name, channels=count, images=effects.images, ablation=req.ablation,
                        labels=req.labels_from or "model", sort=req.sort,
                        intact={"accuracy": float(effects.accuracy[0]) * 100, "probability": float(effects.probability[0]) * 100,
                                "logit": float(effects.logit[0])},
                        units=ranked, traced=split.traced, why=split.why, skipped=skipped)


def _shard_result(req: AblateRequest, lm: LoadedModel, layer: CamLayer, count: int, sweep: ab.Sweep,
                  units: list[tuple[str, list[int]]], blocks: list[range], got: dict[int, dict[str, Any]],
                  names: list[str]) -> AblateResult:
    """A shard's own units, ranked among themselves (the run without --shard ranks them all)."""
    pos = [i for b in sorted(got) for i in blocks[b]]
    sub = [units[i] for i in pos]
    effects = sweep.effects([u for _, u in sub], [ab.BlockSums.from_arrays(got[b]) for b in sorted(got)])
    result = _result(req, lm, layer, count, effects, sub, ab.ranking(effects, by=req.sort), names, sweep.split, skipped=0)
    result.shard = req.shard
    return result


# ---------------------------------------------------------------- beside a top index


def _open_index(req: AblateRequest, lm: LoadedModel) -> Any:
    """The `top` index of ``--index``, refused when it was built with other weights (its pages
    would pair these effects with another network's channels)."""
    from ..index import ActivationIndex

    idx = ActivationIndex.open(req.index)  # type: ignore[arg-type]
    if idx.provenance.get("weights_sha256") != weights_digest(lm.model):
        raise UsageError(f"--index {req.index!r} was built with other weights ({idx.provenance.get('weights')}, "
                         f"{idx.provenance.get('model')}) than this run's ({lm.weights}, {lm.name})")
    return idx


def index_layers(lm: LoadedModel, layer: CamLayer, idx: Any) -> dict[str, tuple[int, int, int]]:
    """{index layer name: (its catalog index, first channel of ``layer``'s output it is, channels)}
    for every layer of the index whose output (at the index's stage) is a block of channels of
    ``layer``'s output: the layer itself read at the same point, or one input of a concatenation
    (SqueezeNet's Fire output = expand1x1 ++ expand3x3). Found on one forward pass of a random
    image: equal values, not names."""
    from ..capture import hook_points
    from ..layers import conv_layers

    net = lm.model
    catalog = {c.index: c for c in conv_layers(net)}
    held = [catalog[int(d["index"])] for d in idx.layers if int(d["index"]) in catalog]
    if not held:
        return {}
    points = hook_points(net, held, idx.provenance.get("stage", "conv"))  # type: ignore[arg-type]
    wanted = {layer.point.module, *[p.module for p in points]}
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name: str) -> Any:
        def f(_m: Any, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                seen.setdefault(name, []).append(out.detach().clone())
        return f

    modules = dict(net.named_modules())
    handles = [modules[n].register_forward_hook(hook(n)) for n in wanted if n in modules]
    h, w = lm.input_hw or (lm.crop_size, lm.crop_size)
    g = torch.Generator().manual_seed(0)
    try:
        with eval_mode(net), torch.inference_mode():
            net(torch.randn(1, lm.channels_in, h, w, generator=g).to(device_of(net)))
    finally:
        for handle in handles:
            handle.remove()
    outs = seen.get(layer.point.module, [])
    if len(outs) <= layer.point.call:
        return {}
    full = outs[layer.point.call]
    found: dict[str, tuple[int, int, int]] = {}
    for conv, p in zip(held, points):
        got = seen.get(p.module, [])
        if len(got) <= p.call:
            continue
        part = got[p.call]
        if part.dim() != 4 or full.dim() != 4 or part.shape[2:] != full.shape[2:] or part.shape[1] > full.shape[1]:
            continue
        if not bool(part.any()):
            continue  # all zero: equal to any dead block, tells nothing
        n = part.shape[1]
        for off in range(full.shape[1] - n + 1):
            if torch.equal(full[:, off:off + n], part):
                found[conv.name] = (conv.index, off, n)
                break
    return found


def _store(req: AblateRequest, result: AblateResult, idx: Any, mapping: dict[str, tuple[int, int, int]], *,
           identity: str, about: dict[str, Any], curves_png: bytes | None) -> str:
    rows = []
    for u in result.units:
        top = u.hurts[0] if req.per_class and u.hurts else None
        rows.append({"unit": u.label, "channels": list(u.channels), "points": u.accuracy_drop, "prob_drop": u.probability_drop,
                     "logit_drop": u.logit_drop, "accuracy": u.accuracy, "probability": u.probability, "logit": u.logit,
                     "hurts": top[1] if top else None, "hurts_class": top[0] if top else None,
                     "hurts_points": top[2] if top else None, "metric": result.metric, "images": result.images})
    curves = [(o, n, a, p) for o, v in result.curves.items() for n, a, p in v] if result.curves else None
    return ab_store.write_layer_ablation(
        index_dir=str(req.index), layer=result.layer, ablation=result.ablation, identity=identity,
        about={**about, "metric": result.metric, "images": result.images, "labels_from": result.labels},
        rows=rows, channels=result.channels, index_layers={k: (off, n) for k, (_, off, n) in mapping.items()},
        curves=curves, curve_units=len(result.units) if curves else 0, curves_png=curves_png)


def _thumbnails(req: AblateRequest, lm: LoadedModel, layer: CamLayer, result: AblateResult, idx: Any,
                mapping: dict[str, tuple[int, int, int]], *, say: Say) -> dict[str, list[np.ndarray]]:
    """{unit label: pictures} for the bars of the chart: each single channel's best dataset
    examples in the ``--index`` (where one of its layers holds the channel), else, for a layer
    reading RGB, the channel's filter as a colour tile; {} when there is neither."""
    shown = [u for u in result.units[:req.top] if len(u.channels) == 1 and not req.groups]
    if not shown:
        return {}
    if idx is not None:
        return _example_thumbnails(req, lm, shown, mapping, say=say)
    return _filter_thumbnails(lm, layer, shown)


def _example_thumbnails(req: AblateRequest, lm: LoadedModel, shown: list[Unit], mapping: dict[str, tuple[int, int, int]],
                        *, say: Say) -> dict[str, list[np.ndarray]]:
    from ..errors import CnnvizError
    from ..patches import crop_window
    from .top import TopRequest, run_top

    where: dict[int, list[tuple[str, int]]] = {}  # index layer -> [(unit label, its channel there)]
    for u in shown:
        c = u.channels[0]
        for _name, (li, off, n) in mapping.items():
            if off <= c < off + n:
                where.setdefault(li, []).append((u.label, c - off))
                break
    if not where:
        say(f"ablate: no layer of --index {req.index} holds the channels of {shown[0].label and 'this layer'}: "
            f"the chart has no dataset examples (index a conv layer whose output this layer is)")
        return {}
    out: dict[str, list[np.ndarray]] = {}
    for li, pairs in where.items():
        chans = sorted({c for _, c in pairs})
        try:
            top = run_top(TopRequest(index=req.index, layers=(str(li),), channels=",".join(map(str, chans)), k=THUMBS,
                                     pictures=False, quiet=True), output=Output("."), model=lm)
        except CnnvizError as exc:
            say(f"cnnviz: warning: no dataset examples from --index {req.index}: {exc}")
            return {}
        ex, prep = top.layers[0].examples, top.prep
        for label, c in pairs:
            pics = []
            for e in ex.get(c, [])[:THUMBS]:
                try:
                    disp = prep(e["path"])[1]
                except CnnvizError:
                    continue
                pics.append(crop_window(disp, tuple(e["box"]))[0])
            out[label] = pics
    return out


def _filter_thumbnails(lm: LoadedModel, layer: CamLayer, shown: list[Unit]) -> dict[str, list[np.ndarray]]:
    modules = dict(lm.model.named_modules())
    conv = modules.get(layer.name[:-4] if layer.name.endswith(":act") else layer.name)
    if not isinstance(conv, torch.nn.Conv2d) or conv.in_channels != 3 or conv.groups != 1:
        return {}
    w = conv.weight.detach().float().cpu().numpy()
    out = {}
    for u in shown:
        f = np.transpose(w[u.channels[0]], (1, 2, 0))
        f = f / (float(np.abs(f).max()) or 1.0)  # (k, k, 3) in [-1, 1], on its own scale: a weak filter shows its pattern
        out[u.label] = [np.clip((f + 1) * 127.5, 0, 255).astype(np.uint8)]
    return out


def _check_classifier(lm: LoadedModel) -> None:
    """ModelError now, before any image is read, unless the model's output is (N, classes)."""
    h, w = lm.input_hw or (lm.crop_size, lm.crop_size)
    net = lm.model
    with eval_mode(net), torch.inference_mode():
        _check_logits(net(torch.zeros(1, lm.channels_in, h, w, device=device_of(net))))


def _tags(req: AblateRequest, units: Sequence[Unit]) -> list[str]:
    tags = []
    if req.channels is not None:
        tags.append(indices_tag("c", sorted(u.channels[0] for u in units)))
    if req.groups:
        tags.append(f"g{len(req.groups)}")
    if req.ablation != "zero":
        tags.append(req.ablation)
    if req.labels_from is not None:
        tags.append("folders" if req.labels_from == "folders" else "csv")
    return tags


def _write(req: AblateRequest, result: AblateResult, *, output: Output, unit: str,
           thumbs: dict[str, list[np.ndarray]] | None = None, thumbs_kind: str = "examples") -> bytes | None:
    """Write the chart, the curves (PNG, CSV) and the JSON; returns the curves PNG's bytes."""
    base = [result.model_name, result.layer]
    tags = _tags(req, result.units)
    what = f"{result.images} image(s), {result.ablation}-ablation"
    curves_png = None
    thumbs = thumbs or {}
    bars = [Bar(("ch " if len(u.channels) == 1 and not req.groups else "") + u.label, u.accuracy_drop, u.probability_drop,
                u.hurts[0][1] if u.hurts else "", tuple(thumbs.get(u.label, ()))) for u in result.units[:req.top]]
    title = (f"{result.model_name} {result.layer}: the {len(bars)} {unit} whose removal costs most "
             f"(by {result.sort}; {what}; {result.metric} intact {result.intact['accuracy']:.1f}%)")
    caption = None
    if thumbs:
        caption = ("each channel's best dataset examples in the index" if thumbs_kind == "examples"
                   else "each channel's filter (RGB, grey = 0, each on its own scale)")
    path = output.png(output_name(*base, kind="ablate", tags=tags),
                      effects_chart(bars, title=title, metric_label=result.metric, thumbs_caption=caption))
    result.files.append(path)
    output.report({"path": path, "kind": "chart"})
    if result.curves:
        pts = {k: [(n, a) for n, a, _ in v] for k, v in result.curves.items()}
        title = f"{result.model_name} {result.layer}: {result.metric} as {unit} are removed ({what})"
        path = output.png(output_name(*base, kind="ablate-curves", tags=tags),
                          curves_chart(pts, title=title, total=len(result.units), unit=unit, metric_label=result.metric))
        result.files.append(path)
        output.report({"path": path, "kind": "curves"})
        with open(path, "rb") as f:
            curves_png = f.read()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["order", "removed", result.metric, "probability"])
        for k, v in result.curves.items():
            for n, a, p in v:
                w.writerow([k, n, f"{a:.6f}", f"{p:.6f}"])
        path = write_atomic(output.path(output_name(*base, kind="ablate-curves", tags=tags, ext="csv")), buf.getvalue().encode())
        result.files.append(path)
        output.report({"path": path, "kind": "curves-table"})
    path = output.path(output_name(*base, kind="ablate", tags=tags, ext="json"))
    result.files.append(path)
    write_atomic(path, (json.dumps(result.as_dict(), indent=1) + "\n").encode())
    output.report({"path": path, "kind": "json"})
    return curves_png


# ---------------------------------------------------------------- the table


def table_rows(result: AblateResult, *, limit: int | None = None) -> list[list[str]]:
    """The ranked table as strings: a header row, then one row per unit (at most ``limit``)."""
    m = result.metric
    head = ["rank", "unit", f"{m}_drop", "probability_drop", "logit_drop", m, "probability", "logit", "hurts_most"]
    rows = [head]
    for u in result.units[:limit]:
        hurts = "; ".join(_hurt_text(n, a, p, k, metric=m) for _, n, a, p, k in u.hurts)
        rows.append([str(u.rank), u.label, f"{u.accuracy_drop:.2f}", f"{u.probability_drop:.3f}", f"{u.logit_drop:.4f}",
                     f"{u.accuracy:.2f}", f"{u.probability:.3f}", f"{u.logit:.4f}", hurts])
    return rows


def _hurt_text(name: str, acc: float, prob: float, images: int, *, metric: str) -> str:
    """'tabby (accuracy -50.0, probability -12.30 pts; 2 img)', the accuracy part only when it moved."""
    moved = f"{metric} -{acc:.1f}, " if round(acc, 1) > 0 else ""
    return f"{name} ({moved}probability -{prob:.2f} pts; {images} img)"


def text_table(result: AblateResult, *, limit: int | None) -> str:
    """A header naming what was measured, then aligned columns (the ``limit`` first units)."""
    labels = ("the intact model's own top-1 (so: agreement with the intact model, 100% before removal)"
              if result.labels == "model" else f"from {result.labels}")
    shown = len(result.units) if limit is None else min(limit, len(result.units))
    lines = [f"# {result.model_name} {result.layer}: {result.ablation}-ablation of {len(result.units)} unit(s) on "
             f"{result.images} image(s); labels: {labels}",
             f"# intact: {result.metric} {result.intact['accuracy']:.2f}%, mean probability {result.intact['probability']:.3f}%, "
             f"mean logit {result.intact['logit']:.4f}; drops in points (logit: raw); ranked by {result.sort} drop; "
             f"{shown} of {len(result.units)} shown"]
    rows = table_rows(result, limit=limit)
    if not any(r[-1] for r in rows[1:]):
        rows = [r[:-1] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.rjust(widths[i]) if i < 8 else c for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


__all__ = ["AblateRequest", "AblateResult", "Unit", "class_lookup", "csv_labels", "folder_labels", "run_ablate", "table_rows",
           "text_table"]
