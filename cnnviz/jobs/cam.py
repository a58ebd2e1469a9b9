"""The `cam` job: class activation maps and gradient attributions of images, pictures, .npy,
faithfulness metrics and the randomisation sanity check."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import faithfulness as fa
from ..cam import METHODS, CamLayer, check_spatial, default_layer, explain, mass_box, peak, predict, resolve_layers, resolve_methods
from ..camdraw import DEFAULT_CMAP, SheetCell, cam_picture, comparison_sheet, display_top, sanity_strip
from ..device import Placement, place
from ..errors import SelectionError, UsageError
from ..io import indices_tag, output_name, text_tag
from ..maps import iter_batches
from ..models import LoadedModel
from ..optimize import resolve_classes
from ..progress import Progress
from ..segment import backbone_layer
from ..render import check_cmap
from ..sources import ModelSpec, architecture, as_spec, load
from ..util import class_name, device_of, eval_mode
from . import camseg
from .inputs import ImageInputs, InputImage, size_tags
from .output import Output, Record, Say, quiet, request_tags


@dataclass(frozen=True, kw_only=True)
class CamRequest:
    """Everything `cnnviz cam` can be asked (defaults = the CLI's). ``classes``: --class values
    (names or indices; empty: the top ``top`` predicted classes, default 1); ``model``: a
    ModelSpec (source, weights, seed, preprocessing) or a source string; ``methods``: names,
    'all'; ``layers``: selectors (empty: the default layer); ``smooth``/``noise``: SmoothGrad;
    ``metrics``: deletion/insertion AUC and confidence drop/increase per map; ``sanity``:
    cascading randomisation strip per map."""

    inputs: ImageInputs
    model: ModelSpec | str = "resnet50"
    layers: tuple[str, ...] = ()
    stage: str = "act"
    classes: tuple[str, ...] = ()
    top: int | None = None
    region: str | None = None
    methods: tuple[str, ...] = ("gradcam",)
    ig_steps: int = 50
    smooth: int = 0
    noise: float = 0.15
    cmap: str = DEFAULT_CMAP
    alpha: float = 0.6
    npy: bool = False
    metrics: bool = False
    metric_steps: int = 100
    sanity: bool = False
    batch_size: int = 16
    score_threshold: float = 0.5  # detectors: the detections explained (cnnviz.jobs.camdetect)
    box: int | None = None
    bare: bool = False
    device: str = "auto"
    precision: str = "fp32"
    quiet: bool = False


@dataclass
class _Pair:
    im: InputImage
    target: int
    prob: float
    logit: float
    dense: Any = None  # camseg.DenseTarget on a segmentation model: target is its class, dense.index its output

    @property
    def output(self) -> int:
        """The index of the explained output of the network the maps are computed on."""
        return self.target if self.dense is None else self.dense.index


def run_cam(req: CamRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet) -> None:
    """Write one heat-map PNG per (image, class, method) (several methods: one comparison sheet
    of every image and class), with ``npy`` a (2, H, W) float32 .npy per map ([raw, normalised]),
    with ``sanity`` a strip per map, reporting each file. Usage errors come before any weights
    or pixels are read. The model runs on ``req.device`` (``model``: where it is) in
    ``req.precision``; bf16 only for methods without gradients (see :func:`bf16_refusal`)."""
    where = place(req.device, req.precision, say=say, bf16_refused=bf16_refusal(resolve_methods(req.methods)))
    with where.autocast(model.model if model is not None else None):
        _run_cam(req, where=where, output=output, model=model, say=say)


def bf16_refusal(methods: list[str]) -> str | None:
    """Why ``methods`` cannot run in bfloat16, or None. Methods built on gradients (Grad-CAM and
    kin, the input attributions) are refused: bf16 keeps 8 bits of mantissa, and their maps are
    sums and products of small gradients that cancel (integrated gradients would also lose its
    completeness). Forward-only methods (eigencam, scorecam, ablationcam) are fine."""
    grad = [m for m in methods if METHODS[m].grad]
    if not grad:
        return None
    forward = ", ".join(n for n, m in METHODS.items() if not m.grad)
    return (f"{grad[0]} is computed from gradients, which bfloat16 rounds to 3 significant digits "
            f"(bf16 applies to the forward-only methods: {forward})")


def _run_cam(req: CamRequest, *, where: Placement, output: Output, model: LoadedModel | None, say: Say) -> None:
    t0 = time.perf_counter()
    check_cmap(req.cmap)
    methods = resolve_methods(req.methods)
    sources = req.inputs.check()
    _check_options(req, methods)
    spec = as_spec(req.model)
    arch = architecture(spec)
    if arch.task == "detection":  # boxes, not classes: one panel per detection (cnnviz.jobs.camdetect)
        from .camdetect import CamHelpers, run_detection_cam

        return run_detection_cam(req, spec=spec, arch=arch, methods=methods, where=where, output=output, model=model,
                                 say=say, t0=t0, helpers=CamHelpers(shown=_shown, gamma=_gamma, metrics=_metrics, tags=_tags))
    dense_default = arch.task == "segmentation" and not req.layers
    layers = ([backbone_layer(arch.model)] if dense_default
              else resolve_layers(arch.model, list(req.layers) or None, stage=req.stage, model_name=spec.source))
    check_spatial(arch.model, layers)
    fixed = _classes(req, arch) if req.classes else None
    per_image = len(fixed) if fixed is not None else (req.top or 1)
    sheet = len(methods) > 1
    files = (1 if sheet else len(sources) * per_image * len(methods)) + (len(sources) * per_image * len(methods) if req.sanity else 0)
    output.prepare(files, npy=req.npy, message=f"-o - streams exactly one PNG to stdout, but this run writes {files} "
                                               f"({len(sources)} image(s) x {per_image} class(es) x {len(methods)} method(s)"
                                               + (" + sanity strips" if req.sanity else "") + "); use -o DIR")
    standard = layers if dense_default else [default_layer(arch.model)]

    def tags(shown: list[str]) -> list[str]:
        return _tags(req, arch, layers if any(map(_uses_layers, shown)) and layers != standard else None, shown)

    lm = model or load(spec, device=where.device)
    net = lm.model
    per_pass = 1 if "batch" in lm.limits else req.batch_size  # a program that takes batches of one
    names = lm.categories
    cells: list[tuple[_Pair, dict[str, np.ndarray], dict[str, Record]]] = []
    n_images = 0
    summary: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    # one step per map (image x class x method): --method all --top 2 on a big model is minutes
    progress = Progress(len(sources) * per_image * len(methods), desc="cam", unit="map", quiet=req.quiet)
    for batch in iter_batches(req.inputs.read(lm), batch_size=per_pass, key=lambda im: im.x.shape):
        x = torch.from_numpy(np.stack([im.x for im in batch])).to(device_of(net))
        dense, logits = _dense_batch(net, x, batch, fixed, req, names, lm)
        scorer, layers_run = (net, layers) if dense is None else (dense.net, camseg.scorer_layers(layers))
        pairs, rows = [], []
        if dense is not None:
            pairs = [_Pair(batch[t.row], t.cls, t.prob, t.score, dense=t) for t in dense.targets]
            rows = [t.row for t in dense.targets]
        probs = torch.softmax(logits, 1)
        for i, im in enumerate(batch if dense is None else []):
            if fixed is not None:
                targets = fixed
                if max(targets) >= logits.shape[1]:
                    raise SelectionError(f"class index {max(targets)} out of range: the model has {logits.shape[1]} classes "
                                         f"(0..{logits.shape[1] - 1})")
            else:
                k = min(req.top or 1, logits.shape[1])
                targets = probs[i].topk(k).indices.tolist()
            for t in targets:
                pairs.append(_Pair(im, int(t), float(probs[i, t]), float(logits[i, t])))
                rows.append(i)
        xs = x[rows]
        ts = [p.output for p in pairs]
        maps: dict[str, Any] = {}
        for method in methods:
            progress.describe(f"cam {method}")
            maps[method] = explain(scorer, xs, ts, method=method, layers=layers_run, ig_steps=req.ig_steps, smooth=req.smooth,
                                   noise=req.noise, seed=spec.seed, batch_size=per_pass)
            progress.update(len(pairs))
        for j, pair in enumerate(pairs):
            per_norm: dict[str, np.ndarray] = {}
            per_record: dict[str, Record] = {}
            for method in methods:
                e = maps[method]
                raw, norm = e.raw[j], e.norm[j]
                record = _record(pair, method, layers, norm, names)
                if req.metrics:
                    scores = (_metrics(net, xs[j], pair.target, norm, lm, req) if dense is None
                              else _metrics(dense.probs, xs[j], pair.output, norm, lm, req, probabilities=True))
                    record.update(scores)
                    summary[method].append(scores)
                stem = output_name(pair.im.label, lm.name, method.replace("+", "p"), pair.target, kind="cam",
                                   tags=tags([method]))
                if req.npy:
                    record["npy"] = output.npy(stem[:-len(".png")] + ".npy", np.stack([raw, norm]).astype(np.float32))
                if not sheet:
                    title = [] if req.bare else _title(pair, lm, method, layers, names, req)
                    shown, top = _shown(method, norm)
                    picture = cam_picture(pair.im.display, shown, title=title, cmap=req.cmap, alpha=req.alpha,
                                          legend=not req.bare, value_max=float(raw.min() + top * (raw.max() - raw.min())),
                                          gamma=_gamma(method),
                                          outline=None if dense is None else camseg.outline_at(pair.dense, shown.shape))
                    meta = {"Software": "cnnviz", **{k: v for k, v in record.items() if k != "path"}}
                    output.report({"path": output.png(stem, picture, metadata=meta), **record})
                else:
                    per_norm[method], per_record[method] = norm, record
                if req.sanity:
                    _sanity(scorer, xs[j:j + 1], pair, method, layers_run, norm, lm, req, output, names, tags([method]))
            if sheet:
                cells.append((pair, per_norm, per_record))
        n_images += len(batch)
    progress.close()
    if sheet:
        # the sheet is named after its first image: the other images, the methods (unless all)
        # and the classes are tags
        labels = list(dict.fromkeys(p.im.label for p, _, _ in cells))
        sheet_tags = [text_tag("and-", ",".join(labels[1:]), count=len(labels) - 1) if len(labels) > 1 else None,
                      text_tag("m-", ",".join(methods), count=len(methods)) if methods != list(METHODS) else None,
                      indices_tag("cls", fixed) if fixed is not None else None, *tags(methods)]
        _write_sheet(cells, methods, lm, layers, names, req, output, sheet_tags)
    if req.metrics:
        say(_metrics_table(summary))
    say(f"cam: {output.written} file(s) for {n_images} image(s), {len(methods)} method(s) of {lm.name} ({lm.weights}), "
        f"layer {', '.join(layer.name for layer in layers)} in {time.perf_counter() - t0:.1f}s")


def _dense_batch(net: Any, x: torch.Tensor, batch: list[InputImage], fixed: list[int] | None, req: CamRequest,
                 names: list[str], lm: LoadedModel) -> tuple[camseg.DenseBatch | None, torch.Tensor]:
    """(the segmentation targets of a batch (cnnviz.jobs.camseg), its dense logits) or, for a
    classifier, (None, its logits (N, classes)). A torchvision classifier is known by its task; a
    user's own model by its output (one forward either way)."""
    if lm.task == "classification" and lm.kind == "torchvision" and not req.region:
        return None, predict(net, x)
    out, logits = camseg.dense_output(net, x)
    if logits is None:
        if req.region:
            raise UsageError(f"--region explains a segmentation model's per-pixel logits; {lm.name} outputs no "
                             "(N, classes, H, W) map")
        return None, camseg.classifier_logits(out)
    dense = camseg.segmentation_batch(net, logits, batch, classes=fixed, top=req.top, region=req.region, names=names)
    return dense, logits.new_zeros(1, 1)


def _uses_layers(method: str) -> bool:
    """Whether ``method`` reads a layer (CAMs, guided Grad-CAM) rather than the input alone."""
    return METHODS[method].uses_layers


def _shown(method: str, norm: np.ndarray) -> tuple[np.ndarray, float]:
    """What the picture shows: CAMs as they are; input attributions clipped at the 99th percentile
    of their values (camdraw.display_top), which is returned as the top of the scale. The data
    (--npy, --json) keep the raw values."""
    if METHODS[method].kind != "input":
        return norm, 1.0
    top = display_top(norm)
    return np.clip(norm / top, 0.0, 1.0), top


def _gamma(method: str) -> float:
    """Overlay opacity exponent (camdraw.overlay): CAMs are smooth, input gradients speckled."""
    return 1.0 if METHODS[method].kind == "input" else 0.5


def _check_options(req: CamRequest, methods: list[str]) -> None:
    if req.smooth < 0:
        raise UsageError(f"--smooth must be 0 (off) or a number of noisy samples, not {req.smooth}")
    if req.smooth and not req.noise > 0:
        raise UsageError(f"--noise must be positive with --smooth, not {req.noise}")
    if req.ig_steps < 1:
        raise UsageError(f"--ig-steps must be at least 1, not {req.ig_steps}")
    if req.top is not None and req.classes:
        raise UsageError("give either --class or --top, not both")
    if req.top is not None and req.top < 1:
        raise UsageError(f"--top must be at least 1, not {req.top}")
    if req.metric_steps < 1:
        raise UsageError(f"--metric-steps must be at least 1, not {req.metric_steps}")
    if not 0 <= req.alpha <= 1:
        raise UsageError(f"--alpha must be between 0 and 1, not {req.alpha}")
    if "guided-gradcam" in methods and len(req.layers) > 1:
        raise UsageError("guided-gradcam takes one layer")


def _classes(req: CamRequest, arch: LoadedModel) -> list[int]:
    """--class values resolved on the model's category names (--labels FILE, else the weights'),
    indices checked against its class count, before any weights are read (the architecture of a
    checkpoint has the checkpoint's head). A model whose output width shows only when it runs is
    checked against its logits later."""
    return resolve_classes(list(req.classes), arch.categories, count=_class_count(arch) or len(arch.categories) or 1_000_000)


def _class_count(arch: LoadedModel) -> int | None:
    """How many classes the model outputs: a graph archive's recorded width, else the width of its
    output for a zero image (on 'meta' this costs nothing); None without an (N, classes) output."""
    if arch.num_classes:
        return int(arch.num_classes)
    net = arch.model
    hw = arch.input_hw or (arch.crop_size, arch.crop_size)
    try:
        with eval_mode(net), torch.inference_mode():
            out = net(torch.zeros(1, arch.channels_in, *hw, device=device_of(net)))
    except Exception:  # the real run reports a model that cannot take this input
        return None
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def _tags(req: CamRequest, arch: LoadedModel, layers: list[CamLayer] | None, methods: list[str]) -> list[str]:
    """File-name tags of the non-default options that change the pictures of ``methods``
    (docs/output-names.md): the layers read (``layers``; None: the default layer), the top-K of
    a sheet, the integrated-gradients steps, SmoothGrad, colours, layout and the input size."""
    smooth = req.smooth > 0
    options = [("top{}", "top")] if len(methods) > 1 else []
    options += [("ig{}", "ig_steps")] if any(METHODS[m].uses("ig_steps") for m in methods) else []
    options += [("smooth{}", "smooth")] + ([("noise{}", "noise")] if smooth else [])
    options += [("{}", "cmap"), ("alpha{}", "alpha"), ("bare", "bare")]
    where = [text_tag("layer-", ",".join(layer.name for layer in layers), count=len(layers))] if layers else []
    return [*where, *request_tags(req, options), *size_tags(req.inputs.size, arch, crop=req.inputs.crop)]


def _record(pair: _Pair, method: str, layers: list[CamLayer], norm: np.ndarray, names: list[str]) -> Record:
    y, x = peak(norm)
    y0, x0, y1, x1 = mass_box(norm, mass=0.2)
    rec: Record = {
        "image": pair.im.source, "method": method,
        "layers": [layer.name for layer in layers] if _uses_layers(method) else [],
        "class": pair.target, "class_name": class_name(names, pair.target), "probability": round(pair.prob, 6),
        "logit": round(pair.logit, 6), "size": [int(norm.shape[0]), int(norm.shape[1])], "peak": [y, x],
        "box20": [y0, x0, y1, x1],
    }
    if pair.dense is not None:
        rec.update(camseg.record_fields(pair.dense))
        del rec["logit"]
    return rec


def _title(pair: _Pair, lm: LoadedModel, method: str, layers: list[CamLayer], names: list[str], req: CamRequest) -> list[str]:
    where = f" at {', '.join(layer.name for layer in layers)}" if _uses_layers(method) else ""
    smooth = f", SmoothGrad {req.smooth}x noise {req.noise:g}" if req.smooth else ""
    head = (f"{class_name(names, pair.target)} ({pair.target}) p={pair.prob:.3g}" if pair.dense is None
            else camseg.title_line(pair.dense, names))
    note = "" if lm.categories or not lm.pretrained else " [no category names]"
    return [head + note, f"{method}{where}{smooth} \u00b7 {lm.name} {lm.weights} \u00b7 {pair.im.label}"]


def _metrics(net: Any, x: torch.Tensor, target: int, norm: np.ndarray, lm: LoadedModel, req: CamRequest, *,
             probabilities: bool = False) -> dict[str, float]:
    """``probabilities``: ``net`` outputs probabilities already (a segmentation model's mean class
    probability over the target's region), else logits (softmax taken)."""
    kw = {"steps": req.metric_steps, "batch_size": req.batch_size * 2, "probabilities": probabilities}
    dele = fa.causal_curve(net, x, target, norm, mode="deletion", **kw)
    ins = fa.causal_curve(net, x, target, norm, mode="insertion", **kw)
    drop, inc = fa.confidence_change(net, x[None], [target], norm[None], mean=lm.mean, std=lm.std, probabilities=probabilities)
    return {"deletion_auc": round(fa.auc(dele), 6), "insertion_auc": round(fa.auc(ins), 6),
            "drop": round(float(drop[0]), 6), "increase": float(inc[0])}


def _metrics_table(summary: dict[str, list[dict[str, float]]]) -> str:
    lines = [f"{'method':<22}{'deletion AUC':>14}{'insertion AUC':>15}{'avg drop %':>12}{'increase %':>12}   (n)"]
    for method, rows in summary.items():
        if not rows:
            continue
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        lines.append(f"{method:<22}{mean['deletion_auc']:>14.4f}{mean['insertion_auc']:>15.4f}"
                     f"{100 * mean['drop']:>12.1f}{100 * mean['increase']:>12.1f}   ({len(rows)})")
    return "\n".join(lines)


def _sanity(net: Any, x1: torch.Tensor, pair: _Pair, method: str, layers: list[CamLayer], norm: np.ndarray,
            lm: LoadedModel, req: CamRequest, output: Output, names: list[str], tags: list[str]) -> None:
    def compute(model: Any) -> np.ndarray:
        return explain(model, x1, [pair.output], method=method, layers=layers, ig_steps=req.ig_steps, smooth=req.smooth,
                       noise=req.noise, seed=seed, batch_size=req.batch_size).norm

    seed = as_spec(req.model).seed
    original, steps = fa.cascading_randomization(net, compute, seed=seed)
    for s in steps:  # a segmentation scorer holds the model as 'model': name its modules as the model does
        s.label = s.label.removeprefix("model.") if pair.dense is not None else s.label
    labels = ["original", *(f"+{s.label}" for s in steps)]
    scores = ["", *(f"r={_fmt(s.spearman[0])} ssim={_fmt(s.ssim[0])}" for s in steps)]
    title = [] if req.bare else [
        f"sanity check (Adebayo et al. 2018): {method} for {class_name(names, pair.target)} ({pair.target}), "
        f"{lm.name} {lm.weights}, {pair.im.label}",
        "layers re-initialised cumulatively from the top; r = Spearman rank correlation, ssim = SSIM to the original"]
    picture = sanity_strip(pair.im.display, [_shown(method, m)[0] for m in [original[0], *(s.maps[0] for s in steps)]],
                           labels, scores, title=title, cmap=req.cmap, alpha=req.alpha, gamma=_gamma(method))
    rec: Record = {"kind": "sanity", "image": pair.im.source, "method": method, "class": pair.target,
                   "steps": [{"randomized": s.label, "spearman": _num(s.spearman[0]), "ssim": _num(s.ssim[0])} for s in steps]}
    stem = output_name(pair.im.label, lm.name, method.replace("+", "p"), pair.target, kind="sanity", tags=tags)
    output.report({"path": output.png(stem, picture, metadata={"Software": "cnnviz", **rec}), **rec})


def _fmt(v: float) -> str:
    """A similarity for the strip: 'n/a' when undefined (a constant map has no ranks); a value
    that rounds to zero is '0.00', never '-0.00'."""
    if not np.isfinite(v):
        return "n/a"
    text = f"{v:.2f}"
    return "0.00" if text == "-0.00" else text


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def _write_sheet(cells: list[tuple[_Pair, dict[str, np.ndarray], dict[str, Record]]], methods: list[str], lm: LoadedModel, layers: list[CamLayer],
                 names: list[str], req: CamRequest, output: Output, tags: list[str | None]) -> None:
    grid = [[SheetCell(p.im.display, _shown(m, norms[m])[0], gamma=_gamma(m), alone=METHODS[m].kind == "input")
             for m in methods] for p, norms, _ in cells]
    row_labels = [f"{p.im.label}: {class_name(names, p.target)[:24]} {p.prob:.3g}" for p, _, _ in cells]
    title = [] if req.bare else [
        f"{lm.name} {lm.weights} \u00b7 layer {', '.join(layer.name for layer in layers)}"
        + (f" \u00b7 SmoothGrad {req.smooth}x noise {req.noise:g}" if req.smooth else ""),
        "rows: image, class, probability \u00b7 columns: methods \u00b7 CAMs: each map scaled to its own [0, 1], over the photo",
        "input attributions (saliency, gradients): |attribution| clipped at its 99th percentile, colours alone"]
    caption = "map value: CAMs 0..max; input attributions 0..99th percentile (brighter clipped)"
    picture = comparison_sheet(grid, row_labels=row_labels, col_labels=methods, title=title, cmap=req.cmap, alpha=req.alpha,
                               caption=caption)
    records = [recs[m] for _, _, recs in cells for m in methods]
    first = cells[0][0].im.label
    rec: Record = {"kind": "sheet", "methods": methods, "images": list(dict.fromkeys(p.im.source for p, _, _ in cells)),
                   "cells": records}
    meta = {"Software": "cnnviz", "model": lm.name, "weights": lm.weights, "methods": methods,
            "layers": [layer.name for layer in layers]}
    output.report({"path": output.png(output_name(first, lm.name, kind="cam-sheet", tags=tags), picture, metadata=meta), **rec})
