"""The `compare` job: what differs between two networks (two checkpoints of one architecture, or
two architectures), layer by layer (linear CKA) and, for a shared architecture, unit by unit
(channels matched by activation correlation).

Both models see the same images, each through its own preprocessing; the images stream through
both in batches and only running sums are kept (cnnviz.compare), so memory does not grow with the
number of images. Every usage error is raised before weights or pixels are read, and every file is
written at the end: an error leaves no partial output.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ..capture import Capture, HookPoint, hook_points
from ..compare import (MIN_IMAGES, LinearCKA, MinibatchCKA, UnitMatch, centered_gram, match_units, pairs_of, rbf_from_gram,
                       same_architecture)
from ..device import place
from ..errors import ImageError, UsageError
from ..io import output_name
from ..layers import ConvLayer, conv_layers, select_layers
from ..models import LoadedModel
from ..render import check_cmap
from ..scan import Preprocess, expand_images, load_batches
from ..sources import ModelSpec, architecture, as_spec, load
from ..util import class_name, device_of
from ..progress import Progress, around_bars
from .output import Output, Record, Say, quiet
from .top import batch_preprocess, default_workers

SPATIAL = ("mean", "flatten")
_BF16_REFUSED = ("compare's exact estimator is checked against float32 references to 1e-6; bfloat16 keeps 3 "
                 "significant digits")
KERNELS = ("linear", "rbf")


@dataclass(frozen=True, kw_only=True)
class CompareRequest:
    """Everything `cnnviz compare` can be asked (defaults = the CLI's).

    ``model`` (A) and ``with_model`` (B): model sources with their weights (ModelSpec or a
    --model string). ``layers``/``with_layers``: selectors on A and B (empty: every conv layer).
    ``stage``: conv output or after its activation. ``spatial``: 'mean' (features = each channel's
    spatial mean: exact streaming CKA) or 'flatten' (every unit a feature: the minibatch estimator
    over minibatches of ``batch_size`` images, with its standard error). ``kernel`` 'rbf': RBF CKA
    (bandwidth: the median distance of each minibatch), always by the minibatch estimator. ``same_units``: match
    channel c to channel c instead of the Hungarian matching. ``top``: channels in the "changed
    most" list per layer. ``size``/``crop``: as in top, applied by each side with its own weights'
    preprocessing. ``index``/``with_index``: 'cnnviz top' indexes of A and B (their own weights,
    stage and preprocessing, checked): the ``top`` channels that changed most get ``examples``
    dataset examples before (A) and after (B, the matched channel), side by side in one picture.
    ``cam``: a cam method (cnnviz.cammethods) for attribution drift: per image, A's and B's maps
    for the same class (``classes``: --class values; empty: A's top-1 prediction), each at its
    side's default cam layer, side by side with their Spearman rank correlation over the pixels."""

    images: tuple[str, ...] = ()
    model: ModelSpec | str = "resnet50"
    with_model: ModelSpec | str = "resnet50"
    layers: tuple[str, ...] = ()
    with_layers: tuple[str, ...] = ()
    stage: str = "act"
    spatial: str = "mean"
    kernel: str = "linear"
    same_units: bool = False
    top: int = 10
    size: str | int | None = None
    crop: bool = True
    max_pixels: int | None = None
    batch_size: int = 32
    workers: int | None = None
    strict: bool = False
    npy: bool = False
    picture: bool = True
    cmap: str = "viridis"
    index: str | None = None
    with_index: str | None = None
    examples: int = 9
    cam: str | None = None
    classes: tuple[str, ...] = ()
    device: str = "auto"
    precision: str = "fp32"
    quiet: bool = False


@dataclass
class LayerUnits:
    """Unit matching of one layer shared by A and B."""

    layer: ConvLayer
    units: UnitMatch
    top: int

    def as_dict(self) -> Record:
        u = self.units

        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        changed = [{"channel": c, "match": int(u.match[c]), "corr": num(u.corr[c]), "identity_corr": num(u.identity[c])}
                   for c in u.changed_most(self.top)]
        moved = int(np.sum((u.match >= 0) & (u.match != np.arange(len(u.match)))))
        return {"layer": self.layer.index, "name": self.layer.name, "alias": self.layer.alias or None,
                "channels": len(u.match), "moved": moved, "median_corr": num(np.nanmedian(u.corr)) if np.any(~np.isnan(u.corr)) else None,
                "match": u.match.tolist(), "corr": [num(v) for v in u.corr], "changed_most": changed}


@dataclass
class CompareResult:
    """What a comparison found: the CKA matrix (len(layers_a), len(layers_b)) in depth order, its
    standard error (flatten mode; None when exact), the images used and skipped, and for a shared
    architecture the diagonal profile and the unit matching per layer."""

    layers_a: list[ConvLayer]
    layers_b: list[ConvLayer]
    cka: np.ndarray
    stderr: np.ndarray | None
    images: int
    skipped: int
    dropped: int
    name_a: str
    name_b: str
    weights_a: str
    weights_b: str
    stage: str
    spatial: str
    kernel: str
    prep_a: Preprocess
    prep_b: Preprocess
    same_architecture: bool
    units: list[LayerUnits] = field(default_factory=list)
    drift: Record | None = None
    seconds: float = 0.0

    def profile(self) -> list[tuple[ConvLayer, float]]:
        """(layer, CKA of A's layer with B's layer of the same name), for a shared architecture."""
        if not self.same_architecture:
            return []
        return [(self.layers_a[i], float(self.cka[i, j]))
                for i, j in pairs_of([_key(x) for x in self.layers_a], [_key(x) for x in self.layers_b])]

    def as_dict(self) -> Record:
        def side(name: str, weights: str, layers: list[ConvLayer], prep: Preprocess) -> Record:
            return {"model": name, "weights": weights, "preprocess": prep.as_dict(),
                    "layers": [{"index": x.index, "name": x.name, "alias": x.alias or None, "channels": x.out_channels}
                               for x in layers]}

        def nums(a: np.ndarray) -> list[list[float | None]]:
            return [[None if np.isnan(v) else round(float(v), 7) for v in row] for row in a]

        return {"kind": "compare", "similarity": f"{self.kernel} CKA (unbiased HSIC)", "kernel": self.kernel,
                "stage": self.stage,
                "spatial": self.spatial, "estimator": "exact" if self.stderr is None else "minibatch",
                "images": self.images, "skipped": self.skipped, "dropped": self.dropped,
                "a": side(self.name_a, self.weights_a, self.layers_a, self.prep_a),
                "b": side(self.name_b, self.weights_b, self.layers_b, self.prep_b),
                "cka": nums(self.cka), "stderr": None if self.stderr is None else nums(self.stderr),
                "same_architecture": self.same_architecture,
                "profile": [{"layer": lay.index, "name": lay.name, "alias": lay.alias or None,
                             "cka": None if np.isnan(v) else round(v, 7)} for lay, v in self.profile()],
                "units": [u.as_dict() for u in self.units], "drift": self.drift, "seconds": round(self.seconds, 3)}


def run_compare(req: CompareRequest, *, output: Output | None = None, model: LoadedModel | None = None,
                with_model: LoadedModel | None = None, say: Say = quiet, stdin: TextIO | None = None) -> CompareResult:
    """Run the images through A and B, compute the CKA matrix (and the unit matching for a shared
    architecture), then write the heat map (and with ``npy`` the matrix) through ``output`` and
    report one record per file. ``model``/``with_model``: already loaded A and B."""
    t0 = time.perf_counter()
    say = around_bars(say)  # skipped files are reported while the bar is drawn
    output = Output(".") if output is None else output
    _check(req)
    where = place(req.device, req.precision, say=say, bf16_refused=_BF16_REFUSED)
    spec_a, spec_b, sel_a, sel_b, drift, paths, indexes = _plan(req, model=model, with_model=with_model, stdin=stdin)
    files = int(req.picture) + (2 if req.npy and req.spatial == "flatten" else int(req.npy)) + int(indexes is not None)
    files += 0 if drift is None else len(paths) * (len(drift.classes) if drift.classes else 1)
    output.prepare(files, npy=req.npy,
                   message="-o - streams exactly one PNG to stdout; with --npy or --no-pictures use -o DIR")
    la = model or load(spec_a, device=where.device)
    lb = with_model or load(spec_b, device=where.device)
    for lm, which in ((la, "A"), (lb, "B")):
        if lm.channels_in != 3:
            raise UsageError(f"compare reads RGB images; {which} ({lm.name}) takes {lm.channels_in}-channel input")
        if lm.limits:
            raise UsageError(f"compare runs images in batches, but {which}: {'; '.join(lm.limits.values())}")
    prep_a = batch_preprocess(la, size=req.size, crop=req.crop, max_pixels=req.max_pixels)
    prep_b = batch_preprocess(lb, size=req.size, crop=req.crop, max_pixels=req.max_pixels)
    if prep_a.as_dict() != prep_b.as_dict():
        say(f"compare: A and B preprocess the images differently, each as its weights expect: A {_describe(prep_a)}; "
            f"B {_describe(prep_b)}")
    layers_a = [conv_layers(la.model)[x.index] for x in sel_a]
    layers_b = [conv_layers(lb.model)[x.index] for x in sel_b]
    same = same_architecture([(_key(x), x.out_channels) for x in layers_a], [(_key(x), x.out_channels) for x in layers_b])
    diag = pairs_of([_key(x) for x in layers_a], [_key(x) for x in layers_b]) if same else []
    if req.spatial == "mean" and req.kernel == "linear":
        exact = LinearCKA([x.out_channels for x in layers_a], [x.out_channels for x in layers_b])
        units_cka, mini = exact, None
    else:
        exact, mini = None, MinibatchCKA(len(layers_a), len(layers_b))
        units_cka = LinearCKA([x.out_channels for x in layers_a], [x.out_channels for x in layers_b], pairs=diag) \
            if same else None
    workers = max(1, default_workers() // 2) if req.workers is None else req.workers
    flat = req.spatial == "flatten"
    stream = _Stream(la, layers_a, req.stage, gram=flat), _Stream(lb, layers_b, req.stage, gram=flat)
    skipped, dropped, done = 0, 0, 0
    with stream[0].capture, stream[1].capture, Progress(len(paths), desc="compare", unit="image",
                                                         quiet=req.quiet) as progress:
        steps = zip(load_batches(paths, prep_a, batch_size=req.batch_size, workers=workers),
                    load_batches(paths, prep_b, batch_size=req.batch_size, workers=workers))
        for step_a, step_b in steps:
            bad = {p: m for p, m in (*step_a.errors, *step_b.errors)}
            if bad and req.strict:
                raise ImageError(next(iter(bad.values())) + " (--strict)")
            for message in dict.fromkeys(bad.values()):
                say(f"cnnviz: warning: skipped {message}")
            fa, fb = stream[0].run(step_a.batches), stream[1].run(step_b.batches)
            ok = sorted(set(fa.positions) & set(fb.positions))
            skipped += len(bad)
            done += len(ok) + len(bad)
            if ok:
                ia, ib = fa.rows(ok), fb.rows(ok)
                if units_cka is not None:
                    units_cka.update([f[ia] for f in fa.means], [f[ib] for f in fb.means])
                if mini is not None:
                    if len(ok) >= MIN_IMAGES:
                        mini.update(*(_kernel(req, f, rows) for f, rows in ((fa, ia), (fb, ib))))
                    else:
                        dropped += len(ok)
            progress.goto(done)
    used = (units_cka.n if units_cka is not None else 0) if mini is None else mini.n + dropped
    if used - dropped < MIN_IMAGES or (mini is not None and mini.k == 0):
        raise ImageError(f"only {used - dropped} readable image(s) in minibatches of {MIN_IMAGES} or more; "
                         f"the unbiased CKA estimator needs at least {MIN_IMAGES}")
    if dropped:
        say(f"compare: {dropped} image(s) in minibatches of fewer than the {MIN_IMAGES} images the estimator needs "
            f"(the last one, or ones with unreadable files): left out")
    if exact is not None:
        cka, err = exact.matrix(), None
    else:
        cka, err = mini.matrix(), mini.stderr()  # type: ignore[union-attr]
    result = CompareResult(layers_a=layers_a, layers_b=layers_b, cka=cka, stderr=err, images=used - dropped,
                           skipped=skipped, dropped=dropped, name_a=la.name, name_b=lb.name, weights_a=la.weights,
                           weights_b=lb.weights, stage=req.stage, spatial=req.spatial, kernel=req.kernel, prep_a=prep_a,
                           prep_b=prep_b,
                           same_architecture=same)
    if units_cka is not None:
        for i, j in diag:
            result.units.append(LayerUnits(layers_a[i], match_units(units_cka.correlation(i, j),
                                                                    same_units=req.same_units), req.top))
    _write(req, result, output)
    if indexes is not None:
        _write_examples(req, result, indexes, la, lb, output=output, say=say)
    if drift is not None:
        result.drift = _write_drift(req, drift, result, paths, la, lb, prep_a, prep_b, output=output)
    result.seconds = time.perf_counter() - t0
    return result


def _plan(req: CompareRequest, *, model: LoadedModel | None, with_model: LoadedModel | None,
          stdin: TextIO | None) -> tuple[ModelSpec, ModelSpec, list[ConvLayer], list[ConvLayer], _Drift | None, list[str],
                                         tuple[Any, Any] | None]:
    """Every check that needs no weights and no pixels: the layers on each side's architecture
    (on 'meta' where the source allows), the stage, the input channels, --cam, the image count,
    the indexes. Returns the specs, the selections, the drift plan, the image paths, the indexes."""
    spec_a, spec_b = as_spec(req.model), as_spec(req.with_model)
    arch_a = model or architecture(spec_a)
    arch_b = with_model or architecture(spec_b)
    sel_a = _select(arch_a, req.layers, side="A", source=spec_a.source)
    sel_b = _select(arch_b, req.with_layers, side="B", source=spec_b.source)
    hook_points(arch_a.model, sel_a, req.stage)  # --stage act not available: a usage error now
    hook_points(arch_b.model, sel_b, req.stage)
    if arch_a.channels_in != arch_b.channels_in:
        raise UsageError(f"the models take different inputs: A ({spec_a.source}) {arch_a.channels_in} channel(s), "
                         f"B ({spec_b.source}) {arch_b.channels_in}; both must see the same images")
    drift = _plan_drift(req, arch_a, arch_b)
    paths = expand_images(req.images, stdin=stdin)
    if len(paths) < MIN_IMAGES:
        raise UsageError(f"{len(paths)} image(s): the unbiased CKA estimator needs at least {MIN_IMAGES}")
    return spec_a, spec_b, sel_a, sel_b, drift, paths, _open_indexes(req, sel_a, sel_b)


def check_compare(req: CompareRequest, *, model: LoadedModel | None = None, stdin: TextIO | None = None) -> None:
    """Raise the usage errors :func:`run_compare` would raise before reading weights or pixels,
    without running anything (a report checks its comparison before it creates its folder)."""
    _check(req)
    _plan(req, model=model, with_model=None, stdin=stdin)


def _kernel(req: CompareRequest, feats: _Features, rows: np.ndarray) -> np.ndarray:
    """(L, n, n) kernel matrices of one minibatch on one side."""
    if req.spatial == "flatten":
        grams = feats.grams(rows)
    else:
        grams = np.stack([centered_gram(f[rows]) for f in feats.means])
    return rbf_from_gram(grams) if req.kernel == "rbf" else grams


def _check(req: CompareRequest) -> None:
    if req.spatial not in SPATIAL:
        raise UsageError(f"unknown --spatial {req.spatial!r}; choose mean or flatten")
    if req.kernel not in KERNELS:
        raise UsageError(f"unknown --kernel {req.kernel!r}; choose linear or rbf")
    if req.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {req.batch_size}")
    if (req.spatial == "flatten" or req.kernel == "rbf") and req.batch_size < MIN_IMAGES:
        what = "--spatial flatten" if req.spatial == "flatten" else "--kernel rbf"
        raise UsageError(f"{what} estimates CKA per minibatch of --batch-size images; it needs at least "
                         f"{MIN_IMAGES}, not {req.batch_size}")
    if req.spatial == "flatten":
        if not req.crop and (req.size is None or str(req.size).strip().isdigit()):
            raise UsageError("--spatial flatten needs every image at one size: keep --crop or give --size HxW")
    if req.top < 1:
        raise UsageError(f"--top must be at least 1, not {req.top}")
    if (req.index is None) != (req.with_index is None):
        raise UsageError("dataset examples before and after need both indexes: give --index and --with-index")
    if req.index is not None and not req.picture:
        raise UsageError("--index draws the changed channels' dataset examples; drop --no-pictures")
    if req.picture:
        check_cmap(req.cmap)
    if req.classes and req.cam is None:
        raise UsageError("--class picks the class of --cam's maps; add --cam")
    if req.cam is not None and not req.picture:
        raise UsageError("--cam draws A's and B's maps side by side; drop --no-pictures")


def _select(lm: LoadedModel, specs: Sequence[str], *, side: str, source: str) -> list[ConvLayer]:
    every = conv_layers(lm.model)
    if not every:
        raise UsageError(f"{side} ({source}) has no Conv2d layer to compare")
    return select_layers(every, specs or ("all",), model_name=source)


def _describe(prep: Preprocess) -> str:
    size = "x".join(map(str, prep.size)) if isinstance(prep.size, tuple) else str(prep.size)
    how = f"resize {prep.resize_size} ({prep.interpolation}), crop {size}" if prep.crop else f"size {size}"
    mean = ",".join(f"{v:g}" for v in prep.mean)
    std = ",".join(f"{v:g}" for v in prep.std)
    return f"{how}, mean {mean}, std {std}"


class _Features:
    """One step's features of one side: per layer the spatial means (n, C) float64 and, in flatten
    mode, the centred Gram matrix of each batch; rows in the order of ``positions``."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.means: list[np.ndarray] = []
        self._grams: list[list[np.ndarray]] = []  # per batch, per layer

    def rows(self, ok: Sequence[int]) -> np.ndarray:
        where = {p: r for r, p in enumerate(self.positions)}
        return np.array([where[p] for p in ok], np.int64)

    def grams(self, rows: np.ndarray) -> np.ndarray:
        """(L, n, n) Gram matrices of the images ``rows`` (one batch per step in flatten mode)."""
        if len(self._grams) != 1:
            raise UsageError("--spatial flatten needs every image at one size: keep --crop or give --size HxW")
        return np.stack([g[np.ix_(rows, rows)] for g in self._grams[0]])


class _Stream:
    """One model with hooks on its selected layers; :meth:`run` turns a loader step into _Features."""

    def __init__(self, lm: LoadedModel, layers: Sequence[ConvLayer], stage: str, *, gram: bool):
        self.points = hook_points(lm.model, list(layers), stage)
        self.index = {p: [i for i, q in enumerate(self.points) if q == p] for p in self.points}
        self.gram = gram
        self.device = device_of(lm.model)
        self.n = len(layers)
        self._means: list[Any] = [None] * self.n
        self._gram: list[Any] = [None] * self.n
        self.capture = Capture(lm.model, self.points, on_output=self._hook)

    def _hook(self, point: HookPoint, t: Any) -> None:
        x = t.float()
        mean = x.mean(dim=(2, 3)).double().cpu().numpy()
        g = None
        if self.gram:
            f = x.flatten(1)
            f = f - f.mean(dim=0, keepdim=True)  # HSIC_1 is translation invariant; keeps float32 products small
            g = (f @ f.T).double().cpu().numpy()
            del f
        for i in self.index[point]:
            self._means[i] = mean
            self._gram[i] = g

    def run(self, batches: Sequence[Any]) -> _Features:
        out = _Features()
        parts: list[list[np.ndarray]] = [[] for _ in range(self.n)]
        for batch in batches:
            self.capture.run(batch.x.to(self.device))
            out.positions.extend(batch.positions)
            for i in range(self.n):
                parts[i].append(self._means[i])
            if self.gram:
                out._grams.append(list(self._gram))
        out.means = [np.concatenate(p) if p else np.zeros((0, 0)) for p in parts]
        return out


def _key(layer: ConvLayer) -> str:
    """What pairs a layer of A with one of B: its alias where it has one (block2_conv1 is
    features.5 in vgg16 and features.7 in vgg16_bn), else its name."""
    return layer.alias or layer.name


def _label(layer: ConvLayer) -> str:
    return layer.alias or layer.name


def _write(req: CompareRequest, result: CompareResult, output: Output) -> None:
    a = f"{result.name_a} {os.path.basename(result.weights_a)}"
    b = f"{result.name_b} {os.path.basename(result.weights_b)}"
    tags = [None if req.stage == "act" else req.stage, None if req.spatial == "mean" else req.spatial,
            None if req.kernel == "linear" else req.kernel]
    stem = (result.name_a, "vs", result.name_b)
    meta = {"Software": "cnnviz", "model_a": result.name_a, "weights_a": result.weights_a, "model_b": result.name_b,
            "weights_b": result.weights_b, "stage": result.stage, "spatial": result.spatial, "images": result.images}
    if req.picture:
        from ..comparedraw import heatmap

        how = "exact" if result.stderr is None else f"minibatch of {req.batch_size}, max stderr {np.nanmax(result.stderr):.3g}"
        title = (f"{req.kernel} CKA \u00b7 stage {result.stage} \u00b7 spatial {result.spatial} ({how}) \u00b7 "
                 f"{result.images:,} images")
        pic = heatmap(result.cka, rows=[_label(x) for x in result.layers_a], cols=[_label(x) for x in result.layers_b],
                      row_title=f"A: {a}", col_title=f"B: {b}", title=title, cmap=req.cmap, legend=f"{req.kernel} CKA")
        path = output.png(output_name(*stem, kind="cka", tags=tags), pic.with_metadata(meta))
        output.report({"path": path, "kind": "heatmap"})
    if req.npy:
        path = output.npy(output_name(*stem, kind="cka", ext="npy", tags=tags), result.cka.astype(np.float64))
        output.report({"path": path, "kind": "matrix", "rows": [x.name for x in result.layers_a],
                       "cols": [x.name for x in result.layers_b]})
        if result.stderr is not None:
            path = output.npy(output_name(*stem, kind="cka-stderr", ext="npy", tags=tags), result.stderr)
            output.report({"path": path, "kind": "stderr"})


# ---------------------------------------------------------------- dataset examples before and after


def _open_indexes(req: CompareRequest, sel_a: Sequence[ConvLayer], sel_b: Sequence[ConvLayer]) -> tuple[Any, Any] | None:
    """The two 'cnnviz top' indexes, opened and checked against the request's stage (the weights
    are checked by hash once loaded)."""
    if req.index is None:
        return None
    from ..index import ActivationIndex

    out = []
    for path, which in ((req.index, "--index"), (req.with_index, "--with-index")):
        idx = ActivationIndex.open(path)  # type: ignore[arg-type]
        if idx.provenance["stage"] != req.stage:
            raise UsageError(f"{which} {path!r} ranks stage {idx.provenance['stage']}, this comparison stage "
                             f"{req.stage}; use --stage {idx.provenance['stage']} or an index scanned at {req.stage}")
        out.append(idx)
    return out[0], out[1]


def _write_examples(req: CompareRequest, result: CompareResult, indexes: tuple[Any, Any], la: LoadedModel,
                    lb: LoadedModel, *, output: Output, say: Say) -> None:
    """One picture: per channel that changed most (over the layers both indexes hold), its dataset
    examples in A's index (left) and those of its match in B's index (right)."""
    from ..models import weights_digest
    from ..patches import Patch, Row, crop_window, render_examples
    from .top import TopRequest, run_top

    for idx, lm, which in ((indexes[0], la, "--index"), (indexes[1], lb, "--with-index")):
        if idx.provenance["weights_sha256"] != weights_digest(lm.model):
            raise UsageError(f"{which} {str(idx.root)!r} was built with other weights ({idx.provenance['weights']}) "
                             f"than {'A' if which == '--index' else 'B'}'s ({lm.weights})")
    held = [{int(d["index"]) for d in idx.layers} for idx in indexes]
    rows = [(row["corr"], u.layer, row) for u in result.units for row in u.as_dict()["changed_most"]
            if row["corr"] is not None and u.layer.index in held[0] and u.layer.index in held[1]]
    rows.sort(key=lambda r: (r[0], r[1].index, r[2]["channel"]))
    rows = rows[: req.top]
    if not rows:
        say("compare: no changed channel is in both indexes' layers: no dataset examples drawn")
        return

    def examples(index: str, lm: LoadedModel, layer: int, channels: list[int]) -> tuple[dict[int, list[Record]], Preprocess]:
        top = run_top(TopRequest(index=index, layers=(str(layer),), channels=",".join(map(str, sorted(set(channels)))),
                                 k=req.examples, pictures=False), output=Output("."), model=lm)
        return top.layers[0].examples, top.prep  # type: ignore[return-value]

    def patches(entries: list[Record], prep: Preprocess) -> list[Patch]:
        out = []
        for e in entries:
            def pixels(e: Record = e) -> np.ndarray:
                try:
                    disp = prep(e["path"])[1]
                except ImageError:
                    disp = np.zeros((0, 0, 3), np.uint8)
                return crop_window(disp, tuple(e["box"]))[0]
            out.append(Patch(pixels, f"{e['score']:.3g}", os.path.basename(e["path"])))
        return out

    left, right = [], []
    by_layer: dict[int, list[tuple[float, ConvLayer, Record]]] = {}
    for r in rows:
        by_layer.setdefault(r[1].index, []).append(r)
    found: dict[tuple[int, int, str], tuple[list[Record], Preprocess]] = {}
    for layer, group in by_layer.items():
        ex_a, prep_a = examples(req.index, la, layer, [g[2]["channel"] for g in group])  # type: ignore[arg-type]
        ex_b, prep_b = examples(req.with_index, lb, layer, [g[2]["match"] for g in group])  # type: ignore[arg-type]
        for g in group:
            found[(layer, g[2]["channel"], "a")] = (ex_a[g[2]["channel"]], prep_a)
            found[(layer, g[2]["match"], "b")] = (ex_b[g[2]["match"]], prep_b)
    for corr, lay, row in rows:
        name = _label(lay)
        left.append(Row(f"{name} c{row['channel']}", patches(*found[(lay.index, row["channel"], "a")])))
        right.append(Row(f"c{row['match']} r={corr:.2f}", patches(*found[(lay.index, row["match"], "b")])))
    k = req.examples
    img_a = render_examples(left, k=k, tile=96, title=f"A: {result.name_a} {os.path.basename(result.weights_a)}\n"
                                                         f"top {k} dataset examples of the channel")
    img_b = render_examples(right, k=k, tile=96, title=f"B: {result.name_b} {os.path.basename(result.weights_b)}\n"
                                                         f"its match in B (r = correlation)")
    h = max(img_a.shape[0], img_b.shape[0])
    pad = lambda im: np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=255)  # noqa: E731
    gap = np.full((h, 16, 3), 255, np.uint8)
    from ..render import Picture

    pic = Picture(np.ascontiguousarray(np.concatenate([pad(img_a), gap, pad(img_b)], axis=1)),
                  metadata={"Software": "cnnviz", "model_a": result.name_a, "weights_a": result.weights_a,
                            "model_b": result.name_b, "weights_b": result.weights_b, "stage": result.stage,
                            "channels": [[lay.index, row["channel"], row["match"]] for _, lay, row in rows]})
    path = output.png(output_name(result.name_a, "vs", result.name_b, kind="changed-examples",
                                  tags=[None if req.stage == "act" else req.stage]), pic)
    output.report({"path": path, "kind": "examples",
                   "channels": [{"layer": lay.index, "name": lay.name, "channel": row["channel"], "match": row["match"],
                                 "corr": corr} for corr, lay, row in rows]})


# ---------------------------------------------------------------- attribution drift


@dataclass(frozen=True)
class _Drift:
    """What --cam will draw: the method, each side's layer (None for an input attribution) and the
    --class indices (empty: A's top-1 per image)."""

    method: str
    layer_a: Any
    layer_b: Any
    classes: tuple[int, ...]


def _plan_drift(req: CompareRequest, arch_a: LoadedModel, arch_b: LoadedModel) -> _Drift | None:
    """--cam checked on the architectures (no weights read): one known method, each side's layer
    (the cam command's default: the block ending with the last spatial conv's activation), the
    classes resolved on A's names, both sides explaining the same classes, and both sides seeing
    the same part of each image (the maps are compared pixel by pixel)."""
    if req.cam is None:
        return None
    from ..cam import METHODS, default_layer, resolve_methods
    from ..optimize import resolve_classes
    from .cam import _class_count

    for arch, side in ((arch_a, "A"), (arch_b, "B")):
        if arch.task != "classification":  # drift is measured on one class's map of a classifier
            raise UsageError(f"--cam compares both sides' maps of one class of a classifier; {side} ({arch.name}) is a "
                             f"{arch.task} model: explain it with 'cnnviz cam' instead")
    methods = resolve_methods(req.cam)
    if len(methods) != 1:
        raise UsageError(f"--cam takes one method, not {len(methods)} ({', '.join(methods)})")
    method = methods[0]
    layers = [default_layer(arch.model) if METHODS[method].uses_layers else None for arch in (arch_a, arch_b)]
    count_a, count_b = _class_count(arch_a), _class_count(arch_b)
    if count_a and count_b and count_a != count_b:
        raise UsageError(f"--cam explains one class on both sides, but A ({arch_a.name}) has {count_a} classes and B "
                         f"({arch_b.name}) {count_b}")
    if arch_a.categories and arch_b.categories and list(arch_a.categories) != list(arch_b.categories):
        raise UsageError(f"--cam explains one class on both sides, but A ({arch_a.name}) and B ({arch_b.name}) name "
                         "their classes differently")
    classes = tuple(resolve_classes(list(req.classes), arch_a.categories or arch_b.categories,
                                    count=count_a or count_b or 1_000_000)) if req.classes else ()
    if req.crop:
        pa = batch_preprocess(arch_a, size=req.size, crop=True, max_pixels=req.max_pixels)
        pb = batch_preprocess(arch_b, size=req.size, crop=True, max_pixels=req.max_pixels)
        if pa.resize_size * pb.crop_size != pb.resize_size * pa.crop_size:
            raise UsageError(f"--cam compares the two maps pixel by pixel, but A and B crop different parts of each image "
                             f"(A: resize {pa.resize_size}, crop {pa.crop_size}; B: resize {pb.resize_size}, crop "
                             f"{pb.crop_size}); add --no-crop")
    return _Drift(method, layers[0], layers[1], classes)


def _write_drift(req: CompareRequest, plan: _Drift, result: CompareResult, paths: Sequence[str], la: LoadedModel,
                 lb: LoadedModel, prep_a: Preprocess, prep_b: Preprocess, *, output: Output) -> Record:
    """Per image (and class): A's and B's ``plan.method`` maps for the same class, side by side
    with their Spearman rank correlation over the pixels (B's map resampled to A's grid when the
    two sides see the image at different sizes); one PNG each. Returns the drift record."""
    import torch

    from ..cam import METHODS, explain, predict
    from ..comparedraw import DriftPanel, drift_picture
    from ..faithfulness import spearman
    from ..io import image_label
    from ..maps import resize_maps
    from .cam import _gamma, _shown

    names = la.categories or lb.categories
    spec = METHODS[plan.method]
    where_a = plan.layer_a.name if plan.layer_a is not None else "the input"
    where_b = plan.layer_b.name if plan.layer_b is not None else "the input"
    chosen = "--class" if plan.classes else "A's top-1"
    rows: list[Record] = []
    seen: dict[str, int] = {}
    chunk = max(1, min(req.batch_size, 16))  # a backward pass keeps every activation: bounded batches
    with Progress(len(paths), desc=f"compare --cam {plan.method}", unit="image", quiet=req.quiet) as progress:
        for start in range(0, len(paths), chunk):
            items = []
            for path in paths[start:start + chunk]:
                try:
                    items.append((path, prep_a(path), prep_b(path)))
                except ImageError:
                    pass  # reported (or refused with --strict) by the CKA pass
            progress.update(min(chunk, len(paths) - start))
            if not items:
                continue
            xa = torch.from_numpy(np.stack([a[0] for _, a, _ in items])).to(device_of(la.model))
            xb = torch.from_numpy(np.stack([b[0] for _, _, b in items])).to(device_of(lb.model))
            logits_a = predict(la.model, xa)
            if plan.classes and max(plan.classes) >= logits_a.shape[1]:
                raise UsageError(f"class index {max(plan.classes)} out of range: A has {logits_a.shape[1]} classes")
            targets = [list(plan.classes) if plan.classes else [int(logits_a[i].argmax())] for i in range(len(items))]
            rows_of = [i for i, ts in enumerate(targets) for _ in ts]
            flat = [t for ts in targets for t in ts]
            ea = explain(la.model, xa[rows_of], flat, method=plan.method,
                         layers=[plan.layer_a] if plan.layer_a is not None else None, seed=0, batch_size=chunk)
            eb = explain(lb.model, xb[rows_of], flat, method=plan.method,
                         layers=[plan.layer_b] if plan.layer_b is not None else None, seed=0, batch_size=chunk)
            if ea.logits.shape[1] != eb.logits.shape[1]:
                raise UsageError(f"--cam explains one class on both sides, but A outputs {ea.logits.shape[1]} classes "
                                 f"and B {eb.logits.shape[1]}")
            pa, pb = _softmax(ea.logits), _softmax(eb.logits)
            for j, (i, t) in enumerate(zip(rows_of, flat)):
                path, (_, disp_a), (_, disp_b) = items[i]
                ma, mb = ea.norm[j], eb.norm[j]
                mb_on_a = mb if mb.shape == ma.shape else np.clip(resize_maps(mb[None], ma.shape, mode="bilinear")[0], 0, 1)
                rho = spearman(ma, mb_on_a)
                label = image_label(path)
                seen[label] = seen.get(label, 0) + 1
                label = label if seen[label] == 1 else f"{label}_{seen[label]}"
                cls = class_name(names, t)
                rho_text = "n/a (a constant map)" if not np.isfinite(rho) else f"{rho:.3f}"
                top_a, top_b = int(pa[j].argmax()), int(pb[j].argmax())

                def side(which: str, lm: LoadedModel, where: str, p: np.ndarray, top: int) -> list[str]:
                    return [f"{which}: {lm.name} {os.path.basename(lm.weights)}", f"{plan.method} at {where}",
                            f"p({cls[:20]}) = {p[t]:.3f}" + ("" if top == t else f"; top-1 {class_name(names, top)[:18]}")]

                title = [f"attribution drift · {plan.method} for class {cls} ({t}), {chosen} · {label}",
                         f"Spearman rank correlation of A's and B's maps over {ma.shape[0]}x{ma.shape[1]} pixels: "
                         f"rho = {rho_text}"]
                shown_a, shown_b = _shown(plan.method, ma)[0], _shown(plan.method, mb)[0]
                alone = spec.kind == "input"
                pic = drift_picture([
                    DriftPanel(disp_a, None, [label, f"{disp_a.shape[0]}x{disp_a.shape[1]} px as A sees it"]),
                    DriftPanel(disp_a, shown_a, side("A", la, where_a, pa[j], top_a), gamma=_gamma(plan.method), alone=alone),
                    DriftPanel(disp_b, shown_b, side("B", lb, where_b, pb[j], top_b), gamma=_gamma(plan.method), alone=alone),
                ], title=title, cmap="inferno", legend="map value, each map scaled to its own [0, 1]"
                   + (" and clipped at its 99th percentile" if alone else ""))
                rec: Record = {"kind": "drift", "image": path, "method": plan.method, "class": t, "class_name": cls,
                               "class_from": chosen, "rho": None if not np.isfinite(rho) else round(float(rho), 6),
                               "a": {"layer": where_a, "probability": round(float(pa[j][t]), 6), "top1": top_a},
                               "b": {"layer": where_b, "probability": round(float(pb[j][t]), 6), "top1": top_b}}
                stem = output_name(label, result.name_a, "vs", result.name_b, plan.method.replace("+", "p"), t,
                                   kind="drift", tags=[None if not plan.classes else "cls"])
                meta = {"Software": "cnnviz", "model_a": result.name_a, "weights_a": result.weights_a,
                        "model_b": result.name_b, "weights_b": result.weights_b, **{k: v for k, v in rec.items()
                                                                                     if k in ("method", "class", "rho")}}
                rec = {"path": output.png(stem, pic.with_metadata(meta)), **rec}
                output.report(rec)
                rows.append(rec)
    rhos = [r["rho"] for r in rows if r["rho"] is not None]
    return {"method": plan.method, "layer_a": where_a, "layer_b": where_b, "class_from": chosen,
            "median_rho": round(float(np.median(rhos)), 6) if rhos else None, "images": rows}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["CompareRequest", "CompareResult", "LayerUnits", "check_compare", "run_compare", "SPATIAL"]
