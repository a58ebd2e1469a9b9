"""`cnnviz cam` on an object detector: each detection above --score-threshold (or the --box K-th)
explained by its score plus the IoU with its own box (pytorch-grad-cam's FasterRCNNBoxScoreTarget),
one panel per box and method, with the box, its class name and score drawn.

Every cam method runs unchanged on :class:`cnnviz.detect.DetectionScores`, which maps the model
input to one score per chosen box, as a classifier maps it to one logit per class."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..cam import METHODS, CamLayer, explain, mass_box, peak, resolve_layers
from ..capture import HookPoint
from ..detect import DetectionScores, describe, detect, pick
from ..detectdraw import box_picture
from ..device import Placement
from ..errors import UsageError
from ..io import output_name
from ..layers import conv_layers
from ..models import LoadedModel
from ..progress import Progress
from ..sources import ModelSpec, load
from ..util import class_name, device_of
from .output import Output, Record, Say

@dataclass(frozen=True)
class CamHelpers:
    """The classifier cam job's own pieces reused per box (cnnviz.jobs.cam passes them: this module
    does not import it back): what a picture shows, its opacity exponent, --metrics, file-name tags."""

    shown: Callable[..., Any]
    gamma: Callable[..., float]
    metrics: Callable[..., dict[str, float]]
    tags: Callable[..., list[str]]


def default_layer(model: torch.nn.Module) -> CamLayer:
    """The finest output of the detector's feature pyramid (``backbone.fpn.layer_blocks.0``: the
    highest-resolution level, which carries the top-down path's semantics), else the last conv of
    its backbone (SSD)."""
    names = dict(model.named_modules())
    if "backbone.fpn.layer_blocks.0" in names:
        return CamLayer("backbone.fpn.layer_blocks.0", HookPoint("backbone.fpn.layer_blocks.0", 0))
    convs = [c.name for c in conv_layers(model) if c.name.startswith("backbone.")]
    if not convs:
        raise UsageError("the detector has no conv in its backbone to compute a map on; pick one with --layer")
    return CamLayer(convs[-1], HookPoint(convs[-1], 0))


def _check(req: Any, methods: list[str]) -> None:
    if req.classes or req.top is not None:
        raise UsageError("a detector's explanations are chosen by box: use --box K or --score-threshold P, "
                         "not --class/--top")
    if getattr(req, "region", None):
        raise UsageError("--region is for segmentation models; a detector's explanations are chosen by --box K or "
                         "--score-threshold P")
    if req.sanity:
        raise UsageError("--sanity is not available for detectors yet (its layer re-initialisation targets classifiers)")


def run_detection_cam(req: Any, *, spec: ModelSpec, arch: LoadedModel, methods: list[str], where: Placement,
                      output: Output, model: LoadedModel | None, say: Say, t0: float, helpers: CamHelpers) -> None:
    """The cam job for a detector (``req`` a CamRequest; see cnnviz.jobs.cam.run_cam)."""
    _check(req, methods)
    sources = req.inputs.check()
    layers = (resolve_layers(arch.model, list(req.layers), stage=req.stage, model_name=spec.source)
              if req.layers else [default_layer(arch.model)])
    files = len(sources) * len(methods) if req.box is not None else None
    output.prepare(files, npy=req.npy, message=f"-o - streams exactly one PNG to stdout, but this run writes one per "
                                                 f"box and method ({len(methods)} method(s)); use -o DIR, or --box K "
                                                 f"with one method")
    if output.streaming and req.box is None:
        raise UsageError("-o - streams exactly one PNG: pick one detection with --box K")
    lm = model or load(spec, device=where.device)
    net = lm.model
    names = lm.categories
    n_images, n_boxes = 0, 0
    progress = Progress(len(sources) * len(methods), desc="cam", unit="image", quiet=req.quiet)
    for im in req.inputs.read(lm):
        x = torch.from_numpy(im.x)[None].to(device_of(net))
        if _one_pass(req, methods):  # --box K, a gradient CAM: its own forward finds the box
            scorer = DetectionScores(net, [], [], valid=im.valid, pick_box=req.box)
            e = explain(scorer, x, [0], method=methods[0], layers=layers, batch_size=req.batch_size)
            d = scorer.picked
            _write(req, lm, im, methods[0], layers, req.box, d, float(e.logits[0, 0]), e.raw[0], e.norm[0], scorer, x[0],
                   names, output, col=0, helpers=helpers)
            progress.update(1)
            n_boxes, n_images = n_boxes + 1, n_images + 1
            continue
        chosen = pick(detect(net, x, valid=im.valid), box=req.box, score_threshold=req.score_threshold)
        for method in methods:
            progress.describe(f"cam {method}")
            # --batch-size boxes at a time: a gradient method runs one batched forward of the
            # detector per box (each row of the batch is the image, its target one box)
            for c0 in range(0, len(chosen), req.batch_size):
                part = chosen[c0:c0 + req.batch_size]
                scorer = DetectionScores(net, [d.box for _, d in part], [d.label for _, d in part], valid=im.valid)
                xs = x.expand(len(part), *x.shape[1:])
                e = explain(scorer, xs, list(range(len(part))), method=method, layers=layers, ig_steps=req.ig_steps,
                            smooth=req.smooth, noise=req.noise, seed=spec.seed, batch_size=req.batch_size)
                for j, (k, d) in enumerate(part):
                    _write(req, lm, im, method, layers, k, d, float(e.logits[j, j]), e.raw[j], e.norm[j], scorer,
                           xs[j], names, output, col=j, helpers=helpers)
            progress.update(1)
        n_boxes += len(chosen)
        n_images += 1
    progress.close()
    say(f"cam: {output.written} file(s) for {n_boxes} box(es) in {n_images} image(s), {len(methods)} method(s) of "
        f"{lm.name} ({lm.weights}; {describe(net, _size(req))}), layer {', '.join(layer.name for layer in layers)} "
        f"in {time.perf_counter() - t0:.1f}s")


def _one_pass(req: Any, methods: list[str]) -> bool:
    """One detection explained by one CAM method whose first forward is the clean image: the
    detection pass and the explanation's pass are one (DetectionScores' pick_box)."""
    return req.box is not None and len(methods) == 1 and METHODS[methods[0]].kind == "cam" and not req.smooth


def _size(req: Any) -> int | None:
    s = req.inputs.size
    return int(s) if s is not None and str(s).strip().isdigit() else None


def _write(req: Any, lm: LoadedModel, im: Any, method: str, layers: list[CamLayer], k: int, d: Any, target: float,
           raw: np.ndarray, norm: np.ndarray, scorer: DetectionScores, x1: torch.Tensor, names: list[str],
           output: Output, *, col: int, helpers: CamHelpers) -> None:
    uses = METHODS[method].uses_layers
    y, xp = peak(norm)
    y0, x0, y1, x1 = mass_box(norm, mass=0.2)
    record: Record = {
        "image": im.source, "method": method, "layers": [layer.name for layer in layers] if uses else [],
        "box_index": k, "box": [round(v, 2) for v in d.box], "label": d.label, "class_name": class_name(names, d.label),
        "score": round(d.score, 6), "target": round(target, 6), "size": [int(norm.shape[0]), int(norm.shape[1])],
        "input": [int(v) for v in im.x.shape[-2:]], "valid": list(im.valid or im.x.shape[-2:]),
        "peak": [y, xp], "box20": [y0, x0, y1, x1],
    }
    if req.metrics:
        record.update(helpers.metrics(scorer, x1, col, norm, lm, req))
    stem = output_name(im.label, lm.name, method.replace("+", "p"), f"box{k}", kind="cam",
                       tags=helpers.tags(req, lm, layers if req.layers else None, [method]))
    if req.npy:
        record["npy"] = output.npy(stem[:-len(".png")] + ".npy", np.stack([raw, norm]).astype(np.float32))
    where = f" at {', '.join(layer.name for layer in layers)}" if uses else ""
    title = [] if req.bare else [
        f"box {k}: {class_name(names, d.label)} score {d.score:.3g} \u00b7 explained: score + IoU with this box",
        f"{method}{where} \u00b7 {lm.name} {lm.weights} \u00b7 {im.label}", im.fed]
    shown, top = helpers.shown(method, norm)
    picture = box_picture(im.display, shown, d.box, f"{k}: {class_name(names, d.label)} {d.score:.2f}", title=title,
                          cmap=req.cmap, alpha=req.alpha, legend=not req.bare,
                          value_max=float(raw.min() + top * (raw.max() - raw.min())), gamma=helpers.gamma(method))
    meta = {"Software": "cnnviz", **{key: v for key, v in record.items() if key != "path"}}
    output.report({"path": output.png(stem, picture, metadata=meta), **record})

