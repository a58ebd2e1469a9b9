"""`cnnviz cam` on a segmentation model: which pixels' logits are explained, as a scorer every
cam method runs on (cnnviz.segment.SegmentationScores), and what the picture and records add."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cam import CamLayer, METHODS
from ..capture import HookPoint
from ..errors import ModelError, SelectionError, UsageError
from ..segment import SegmentationScores, class_pixels, dense_logits, load_region, ranked_classes, resize_mask, scorer_layer_name
from ..util import class_name, eval_mode
from .inputs import InputImage


@dataclass
class DenseTarget:
    """One explained (image, class, region): ``row`` in the batch, ``cls`` the class, ``index`` its
    output of the scorer, ``score`` the explained number (the class's logits summed over the
    region), ``prob`` the class's mean probability over it, ``pixels`` its size at the model's
    output resolution, ``share`` its fraction of the image, ``region`` 'predicted' or the mask's
    path, ``mask`` (h, w) bool, and ``predicted`` the pixels predicted as ``cls`` (the outline drawn)."""

    row: int
    cls: int
    index: int
    score: float
    prob: float
    pixels: int
    share: float
    region: str
    mask: np.ndarray
    predicted: np.ndarray


@dataclass
class DenseBatch:
    """The scorers of one batch: ``net`` (sums of logits, what every method explains) and
    ``probs`` (mean probabilities over the same regions, for --metrics), and the targets."""

    net: SegmentationScores
    probs: SegmentationScores
    targets: list[DenseTarget]


def dense_output(net: nn.Module, x: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """One forward of ``x`` without gradients: (the raw output, its (N, C, h, w) logits or None
    when the output is not dense)."""
    with eval_mode(net), torch.inference_mode():
        out = net(x)
    logits = dense_logits(out)
    return out, None if logits is None else logits.float()


def classifier_logits(out: Any) -> torch.Tensor:
    """(N, classes) float32 logits of a classifier's output; ModelError for anything else."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model has no classifier head and no per-pixel class map: its output is {shape}, not "
                         "(N, classes) or (N, classes, H, W)")
    return out.float()


def check_methods(methods: list[str]) -> None:
    """Every registered method explains a scalar per input, which the scorer gives: all run.
    Kept as the one place to refuse a method on dense targets (none needs refusing today)."""
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"unknown method {m!r}")


def scorer_layers(layers: list[CamLayer]) -> list[CamLayer]:
    """The model's layers as layers of its SegmentationScores (same display names)."""
    return [CamLayer(layer.name, HookPoint(scorer_layer_name(layer.point.module), layer.point.call)) for layer in layers]


def segmentation_batch(net: nn.Module, logits: torch.Tensor, batch: list[InputImage], *, classes: list[int] | None,
                       top: int | None, region: str | None, names: list[str]) -> DenseBatch:
    """The targets of ``batch`` (its dense ``logits`` (N, C, h, w) on the intact inputs): with
    ``classes``, each of them over the pixels predicted as it (``region``: over the region); else
    the ``top`` (default 1) classes covering most pixels, background (class 0 of VOC-style
    categories) last. Raises SelectionError for a class predicted nowhere (without ``region``)."""
    n_cls = int(logits.shape[1])
    if classes is not None and max(classes) >= n_cls:
        raise SelectionError(f"class index {max(classes)} out of range: the model has {n_cls} classes (0..{n_cls - 1})")
    probs = torch.softmax(logits, 1)
    pred = logits.argmax(1).cpu().numpy()
    h, w = pred.shape[-2:]
    background = 0 if names and names[0].strip("_").lower() in ("background", "bg") else None
    targets: list[DenseTarget] = []
    masks: list[np.ndarray] = []
    for i, im in enumerate(batch):
        user = _region(region, im, (h, w)) if region else None
        if classes is not None:
            chosen = list(classes)
        elif user is not None:  # the classes predicted inside the region, most pixels first
            chosen = ranked_classes(pred[i][user], n_cls, background=background)[:top or 1]
        else:
            chosen = ranked_classes(pred[i], n_cls, background=background)[:top or 1]
        for c in chosen:
            predicted = pred[i] == c
            mask = user if user is not None else predicted
            if not mask.any():
                counts = class_pixels(pred[i], n_cls)
                seen = ", ".join(f"{class_name(names, k)} {100 * counts[k] / counts.sum():.0f}%"
                                 for k in ranked_classes(pred[i], n_cls, background=None)[:4])
                raise SelectionError(f"{class_name(names, c)} ({c}) is predicted at no pixel of {im.label} (predicted: {seen}); "
                                     "explain a predicted class, or give --region MASK to explain its logits over a region")
            m = torch.from_numpy(mask).to(logits.device)
            targets.append(DenseTarget(
                row=i, cls=int(c), index=len(targets), score=float((logits[i, c] * m).sum()),
                prob=float(probs[i, c][m].mean()), pixels=int(mask.sum()), share=float(mask.mean()),
                region=region or "predicted", mask=mask, predicted=predicted))
            masks.append(mask)
    stack = torch.from_numpy(np.stack(masks)).to(logits.device)
    cls = [t.cls for t in targets]
    return DenseBatch(net=SegmentationScores(net, stack, cls), probs=SegmentationScores(net, stack, cls, score="prob"),
                      targets=targets)


def _region(path: str, im: InputImage, out_hw: tuple[int, int]) -> np.ndarray:
    """--region at the model's output resolution (h, w) bool."""
    in_hw = (int(im.x.shape[-2]), int(im.x.shape[-1]))
    size = _image_size(im)
    mask = load_region(path, image_size=size or (in_hw[1], in_hw[0]), input_size=in_hw)
    return resize_mask(mask, out_hw)


def _image_size(im: InputImage) -> tuple[int, int] | None:
    """(W, H) of the original image file (its header only), None for stdin."""
    if im.source == "-" or not os.path.isfile(im.source):
        return None
    from PIL import Image

    with Image.open(im.source) as f:
        return f.size


def outline_at(t: DenseTarget, size: tuple[int, int]) -> np.ndarray:
    """The predicted mask of ``t`` at the display size (H, W) (bool), for the picture's outline."""
    return resize_mask(t.predicted, size)


def title_line(t: DenseTarget, names: list[str]) -> str:
    """The picture's first title line for a dense target."""
    where = "its pixels" if t.region == "predicted" else os.path.basename(t.region)[:24]
    return f"{class_name(names, t.cls)} ({t.cls}) logits over {where} ({100 * t.share:.1f}%), mean p={t.prob:.3g}; outline: predicted"


def record_fields(t: DenseTarget) -> dict[str, Any]:
    """--json fields of a dense target (besides class and class_name)."""
    return {"target": "segmentation", "region": t.region, "region_pixels": t.pixels,
            "region_share": round(t.share, 6), "score": round(t.score, 6), "probability": round(t.prob, 6)}
