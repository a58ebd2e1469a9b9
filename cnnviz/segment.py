"""Dense (semantic segmentation) outputs and the scalar targets that explain them.

A segmentation model maps (N, 3, H, W) to per-pixel class logits (N, C, h, w) (torchvision's
models return ``{'out': ..., 'aux': ...}``, upsampled to the input; ``aux`` is the auxiliary
head, built with pretrained weights and run by every forward, but not the prediction).
:class:`SegmentationScores` turns one into a classifier-shaped scorer (N, 3, H, W) -> (N, K):
output ``k`` is the sum of class ``classes[k]``'s logits over the pixels of ``masks[k]``,
pytorch-grad-cam's ``SemanticSegmentationTarget`` (``(output[c] * mask).sum()``), so every
attribution method of cnnviz.cam runs on it unchanged with targets 0..K-1. ``score='prob'``
gives the class's mean softmax probability over the mask instead: a number in [0, 1] for
deletion/insertion curves (a sum of logits has no scale to compare).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ImageError, ModelError

__all__ = ["SegmentationScores", "dense_logits", "is_dense", "class_pixels", "ranked_classes", "outline",
           "load_region"]


def dense_logits(out: Any) -> torch.Tensor | None:
    """The (N, C, h, w) class logits of a model output: a 4-D tensor, or torchvision's dict's
    ``'out'``; None for anything else (a classifier's (N, classes), detections)."""
    if isinstance(out, Mapping):
        out = out.get("out")
    if isinstance(out, torch.Tensor) and out.dim() == 4:
        return out
    return None


def is_dense(out: Any) -> bool:
    return dense_logits(out) is not None


def _logits(out: Any) -> torch.Tensor:
    logits = dense_logits(out)
    if logits is None:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model's output is {shape}, not per-pixel class logits (N, classes, H, W) "
                         "or torchvision's {'out': (N, classes, H, W)}")
    return logits


class SegmentationScores(nn.Module):
    """(N, 3, H, W) -> (N, K): ``score='logit'``: sum over pixels of ``masks[k]`` (K, h, w), {0, 1}
    or weights, of class ``classes[k]``'s logit; ``score='prob'``: the class's softmax probability
    averaged over the mask (an empty mask: 0). ``masks`` are at the model's output resolution.

    The segmentation model is the child ``model``: a layer named ``backbone.layer4`` in it is
    ``model.backbone.layer4`` here (:func:`scorer_point` renames hook points)."""

    def __init__(self, model: nn.Module, masks: torch.Tensor, classes: Sequence[int], *, score: str = "logit"):
        super().__init__()
        if score not in ("logit", "prob"):
            raise ValueError(f"score must be 'logit' or 'prob', not {score!r}")
        if masks.dim() != 3 or masks.shape[0] != len(classes):
            raise ValueError(f"masks {tuple(masks.shape)} do not match {len(classes)} classes")
        self.model = model
        self.score = score
        self.register_buffer("masks", masks.float(), persistent=False)
        self.register_buffer("classes", torch.as_tensor(list(classes), dtype=torch.long), persistent=False)
        # a new Module is in training mode: restoring "its" mode after an eval pass must not
        # switch the wrapped model's BatchNorm to batch statistics
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = _logits(self.model(x))
        if tuple(logits.shape[-2:]) != tuple(self.masks.shape[-2:]):
            raise ModelError(f"the model's output is {tuple(logits.shape[-2:])} px here but the masks are "
                             f"{tuple(self.masks.shape[-2:])}: every input of one run must have the same size")
        if self.score == "prob":
            logits = torch.softmax(logits.float(), 1)
        per = logits[:, self.classes]  # (N, K, h, w)
        total = (per * self.masks[None]).sum((2, 3))
        if self.score == "prob":
            total = total / self.masks.sum((1, 2)).clamp(min=1e-12)[None]
        return total


def backbone_layer(model: nn.Module) -> Any:
    """The default CAM layer of a segmentation model: the last block of its ``backbone`` (ResNet
    ``backbone.layer4``, MobileNetV3 ``backbone.16``), where pytorch-grad-cam's segmentation
    tutorial reads it; the heads after it (ASPP, FCN head, LR-ASPP) mix in global context and end
    in the class logits themselves. A model without a ``backbone`` child: cam's usual default."""
    from .cam import CamLayer, default_layer
    from .capture import HookPoint

    body = getattr(model, "backbone", None)
    if not isinstance(body, nn.Module):
        return default_layer(model)
    inner = default_layer(body)
    name = f"backbone.{inner.point.module}"
    return CamLayer(f"backbone.{inner.name}", HookPoint(name, inner.point.call))


def scorer_layer_name(name: str) -> str:
    """Module name ``name`` of the segmentation model as a module name of its SegmentationScores."""
    return f"model.{name}" if name else "model"


def class_pixels(pred: np.ndarray, classes: int) -> np.ndarray:
    """Pixels predicted as each class: (classes,) int64 counts of the (h, w) argmax map ``pred``."""
    return np.bincount(np.asarray(pred, dtype=np.int64).ravel(), minlength=classes)[:classes]


def ranked_classes(pred: np.ndarray, classes: int, *, background: int | None = 0) -> list[int]:
    """Classes present in ``pred`` (h, w), most pixels first (ties: lower index); ``background``
    (VOC's class 0) goes last: it explains 'not an object', rarely the question."""
    counts = class_pixels(pred, classes)
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    return [c for c in present if c != background] + [c for c in present if c == background]


def outline(mask: np.ndarray, *, width: int = 1) -> np.ndarray:
    """(h, w) bool: pixels of ``mask`` (h, w) bool that touch a pixel outside it (4-neighbours,
    the image border does not count), grown inwards to ``width`` px. Pure."""
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    for _ in range(max(1, int(width))):
        p = np.pad(inner, 1, mode="edge")
        inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool mask resampled to ``size`` (H, W) by nearest neighbour (half-pixel centres)."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    if tuple(m.shape[-2:]) == tuple(size):
        return np.asarray(mask, dtype=bool)
    return F.interpolate(m, size=tuple(size), mode="nearest-exact")[0, 0].numpy() > 0.5


def load_region(path: str, *, image_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """The region of ``--region PATH``: an image whose non-zero pixels (any channel; alpha 0 is
    outside) mark it, the size of the original image (W, H) ``image_size`` or of the model's input
    (H, W) ``input_size``; returned as (H, W) bool at the input size (nearest neighbour).
    Raises ImageError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = np.asarray(im.convert("RGBA"))
                arr = (rgba[..., :3].max(-1) > 0) & (rgba[..., 3] > 0)
            else:
                arr = np.asarray(im.convert("L")) > 0
    except FileNotFoundError:
        raise ImageError(f"--region {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"--region {path!r} is not a readable image ({type(exc).__name__})") from None
    h, w = arr.shape
    iw, ih = image_size
    if (h, w) != (ih, iw) and (h, w) != tuple(input_size):
        raise ImageError(f"--region {path!r} is {w}x{h} px, but the image is {iw}x{ih} and the model sees it at "
                         f"{input_size[1]}x{input_size[0]}: the mask must have one of those sizes")
    if not arr.any():
        raise ImageError(f"--region {path!r} marks no pixel (every pixel is zero): nothing to explain")
    out = resize_mask(arr, input_size)
    if not out.any():
        raise ImageError(f"--region {path!r} is too thin to survive the resize to {input_size[1]}x{input_size[0]} px")
    return out
