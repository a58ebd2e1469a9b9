"""Object detectors (torchvision's Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD and users' models
built the same way): what their convs really see, and their detections as a classifier-shaped score.

A torchvision detector resizes and normalises inside its ``transform`` (GeneralizedRCNNTransform:
normalise, resize the shorter side to ``min_size`` with the longer side at most ``max_size`` or to
a ``fixed_size``, then pad the batch with zeros to a multiple of ``size_divisible``). cnnviz does
that step itself, once, with the model's own transform (:func:`model_input`), so every command's
input tensor is exactly the tensor the backbone reads, and every picture drawn over it is in the
same pixels. The model's ``transform`` is then replaced by :class:`FedTransform`, which takes such
tensors as they are (module names do not change: it is still ``transform``), and the detector's
own ``forward`` runs unchanged after it: boxes come out in the input tensor's pixels.

:class:`DetectionScores` turns a detector into an (N, 3, H, W) -> (N, boxes) module: column k is
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` for box k alone (its score plus its IoU with the box
it matches among the new detections, 0 when none overlaps by more than ``iou_threshold`` with the
same label), so every cam method (gradients, Score-CAM, Ablation-CAM, integrated gradients,
deletion/insertion) explains a box as it explains a class.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UsageError


def _rcnn_transform_type() -> type:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return GeneralizedRCNNTransform


def is_detector(model: nn.Module) -> bool:
    """True for a torchvision-style detector: a ``transform`` (GeneralizedRCNNTransform, or the
    FedTransform that replaced it) and a ``backbone``."""
    t = getattr(model, "transform", None)
    return isinstance(t, (FedTransform, _rcnn_transform_type())) and isinstance(getattr(model, "backbone", None), nn.Module)


class FedTransform(nn.Module):
    """Stands in for a detector's GeneralizedRCNNTransform when the input is already normalised,
    resized and padded (:func:`model_input`): batches pass through unchanged (zero-padded to a
    multiple of ``size_divisible`` only if they are not yet), each image's valid size is the
    tensor's size unless :meth:`valid` says otherwise, and boxes stay in the input's pixels.
    ``original`` is the model's own transform (not a submodule: names and state dict unchanged)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        object.__setattr__(self, "original", original)
        self._valid: list[tuple[int, int]] | None = None

    @contextlib.contextmanager
    def valid(self, sizes: Sequence[tuple[int, int]] | None) -> Iterator[None]:
        """Inside the block, the batch's images are ``sizes`` (h, w) before their padding (boxes
        are clipped to them, as the model does)."""
        old, self._valid = self._valid, None if sizes is None else [tuple(map(int, s)) for s in sizes]  # type: ignore[misc]
        try:
            yield
        finally:
            self._valid = old

    def forward(self, images: Any, targets: Any = None) -> tuple[Any, Any]:
        from torchvision.models.detection.image_list import ImageList

        x = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        if x.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) batch, got {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        d = int(getattr(self.original, "size_divisible", 1) or 1)
        ph, pw = -(-h // d) * d, -(-w // d) * d
        if (ph, pw) != (h, w):
            x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h))
        sizes = self._valid if self._valid is not None and len(self._valid) == x.shape[0] else [(h, w)] * x.shape[0]
        return ImageList(x, sizes), targets

    def postprocess(self, result: Any, image_shapes: Any, original_image_sizes: Any) -> Any:
        return result


def original_transform(model: nn.Module) -> nn.Module:
    """The model's own GeneralizedRCNNTransform (also once FedTransform replaced it)."""
    t = model.transform
    return t.original if isinstance(t, FedTransform) else t  # type: ignore[return-value]


def prepare(model: nn.Module) -> dict[str, Any]:
    """Replace ``model.transform`` by a FedTransform (in place; once) and return the LoadedModel
    fields of the input the convs see: mean/std (of the normalised tensor, for pictures and
    baselines), ``crop_size``/``resize_size`` = the resize target (``min_size``)."""
    t = original_transform(model)
    if not isinstance(model.transform, FedTransform):
        model.transform = FedTransform(t)
    side = int(t.fixed_size[0]) if t.fixed_size else int(t.min_size[-1])
    return {"mean": tuple(float(v) for v in t.image_mean), "std": tuple(float(v) for v in t.image_std),
            "crop_size": side, "resize_size": side}


def resized_transform(model: nn.Module, size: int | None) -> nn.Module:
    """The model's transform, or a copy resizing the shorter side to ``size`` (the longer side
    capped at the same ratio as the model's max_size; a fixed-size model: ``size`` x ``size``)."""
    t = original_transform(model)
    if size is None:
        return t
    t = copy.copy(t)
    if t.fixed_size:
        t.fixed_size = (int(size), int(size))
        t.min_size, t.max_size = (int(size),), int(size)
    else:
        t.max_size = max(int(size), round(size * t.max_size / t.min_size[-1]))
        t.min_size = (int(size),)
    return t


def describe(model: nn.Module, size: int | None = None) -> str:
    """How the model resizes, in words, for messages and docs."""
    t = resized_transform(model, size)
    if t.fixed_size:
        return f"resized to {t.fixed_size[0]}x{t.fixed_size[1]} by the model"
    pad = f", zero-padded to a multiple of {t.size_divisible}" if t.size_divisible > 1 else ""
    return f"shorter side {t.min_size[-1]} px (longer at most {t.max_size}) by the model{pad}"


@dataclass(frozen=True)
class ModelInput:
    """One image as the detector's backbone reads it: ``x`` (3, H, W) float32 (normalised,
    resized, zero-padded), ``display`` (H, W, 3) uint8 (the same pixels, black padding), ``valid``
    (h, w) the resized image inside the padding."""

    x: np.ndarray
    display: np.ndarray
    valid: tuple[int, int]


def transform_params(model: nn.Module, size: int | None = None) -> dict[str, Any]:
    """The model's transform (resized_transform) as plain values: picklable, recordable in an index."""
    t = resized_transform(model, size)
    return {"min_size": int(t.min_size[-1]), "max_size": int(t.max_size), "image_mean": [float(v) for v in t.image_mean],
            "image_std": [float(v) for v in t.image_std], "size_divisible": int(t.size_divisible),
            "fixed_size": list(t.fixed_size) if t.fixed_size else None}


def model_input(model: nn.Module | dict[str, Any], rgb: np.ndarray, *, size: int | None = None) -> ModelInput:
    """``rgb`` (H, W, 3) uint8 through the detector's own transform (normalise, resize, pad),
    exactly as its forward would: ``transform([image])`` with image = rgb / 255 (torchvision's
    ToTensor). ``size``: another shorter side than the model's (see resized_transform);
    ``model`` may be transform_params' dict instead of the model."""
    if isinstance(model, dict):
        p = dict(model)
        fixed = p.pop("fixed_size")
        t = _rcnn_transform_type()(**p, fixed_size=tuple(fixed) if fixed else None).eval()
    else:
        t = resized_transform(model, size)
    img = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    with torch.inference_mode():
        batch, _ = t([img])
    x = batch.tensors[0].float()
    h, w = batch.image_sizes[0]
    mean = torch.as_tensor(t.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(t.image_std, dtype=torch.float32)[:, None, None]
    disp = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().copy()
    disp[h:], disp[:, w:] = 0, 0
    return ModelInput(x=x.numpy(), display=disp, valid=(int(h), int(w)))


# ---------------------------------------------------------------- detections and box scores


@dataclass(frozen=True)
class Detection:
    """One box in input pixels: (x0, y0, x1, y1) as torchvision gives it, label index, score."""

    box: tuple[float, float, float, float]
    label: int
    score: float


def detect(model: nn.Module, x: torch.Tensor, *, valid: tuple[int, int] | None = None) -> list[Detection]:
    """The detections of one image ``x`` (1, 3, H, W) (model input), best first, as the model
    returns them (its own score threshold and NMS)."""
    with torch.inference_mode(), _valid(model, [valid] if valid else None):
        out = model(x)[0]
    return [Detection(tuple(float(v) for v in b), int(lab), float(s))  # type: ignore[arg-type]
            for b, lab, s in zip(out["boxes"].float(), out["labels"], out["scores"].float())]


@contextlib.contextmanager
def _valid(model: nn.Module, sizes: Sequence[tuple[int, int]] | None) -> Iterator[None]:
    t = getattr(model, "transform", None)
    if isinstance(t, FedTransform):
        with t.valid(sizes):
            yield
    else:
        yield


def box_scores(outputs: Sequence[dict[str, torch.Tensor]], boxes: torch.Tensor, labels: Sequence[int],
               *, iou_threshold: float = 0.5) -> torch.Tensor:
    """(N, K): for each image's detections ``outputs[i]`` and each reference box k (``boxes`` (K, 4)
    x0 y0 x1 y1, ``labels`` K), pytorch-grad-cam's FasterRCNNBoxScoreTarget of that box alone: the
    score plus the IoU of the detection that overlaps box k most, when that IoU exceeds
    ``iou_threshold`` and its label is ``labels[k]``; else 0."""
    from torchvision.ops import box_iou

    rows = []
    for out in outputs:
        det = out["boxes"]
        cols = []
        for k in range(len(labels)):
            zero = det.new_zeros(()) if det.numel() else boxes.new_zeros(())
            if det.shape[0] == 0:
                cols.append(zero)
                continue
            ious = box_iou(boxes[k:k + 1].to(det), det)[0]
            j = ious.argmax()
            hit = bool(ious[j] > iou_threshold) and int(out["labels"][j]) == int(labels[k])
            cols.append(ious[j] + out["scores"][j] if hit else zero * ious[j])
        rows.append(torch.stack(cols))
    return torch.stack(rows)


class _RowSparseGrad(torch.autograd.Function):
    """Identity on ``out`` (rows = regions of interest) whose backward recomputes only the rows
    with a nonzero gradient, ``recompute(rows, *feats)``, and backpropagates through those into
    ``feats``. The gradient is the dense one (the other rows contribute exact zeros), at the cost
    of the rows a box score reads (one) instead of every proposal (1000)."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, recompute: Any, *feats: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.recompute = recompute
        ctx.save_for_backward(*feats)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        feats = ctx.saved_tensors
        rows = grad.flatten(1).abs().sum(1).nonzero().flatten()
        if rows.numel() == 0:
            return (None, None, *[torch.zeros_like(f) for f in feats])
        with torch.enable_grad():
            leaves = [f.detach().requires_grad_(True) for f in feats]
            out = ctx.recompute(rows, *leaves)
            grads = torch.autograd.grad(out, leaves, grad[rows], allow_unused=True)
        return (None, None, *[torch.zeros_like(f) if g is None else g for f, g in zip(feats, grads)])


@contextlib.contextmanager
def sparse_box_grads(detector: nn.Module) -> Iterator[None]:
    """Inside the block, gradients through a two-stage detector's box branch (RoIAlign + box head,
    run on every proposal) are computed for the proposals that reach the score only (exactly the
    same gradient; see _RowSparseGrad). No effect without gradients or on one-stage detectors."""
    roi = getattr(detector, "roi_heads", None)
    pool, head = getattr(roi, "box_roi_pool", None), getattr(roi, "box_head", None)
    if pool is None or head is None:
        yield
        return
    seen: dict[str, Any] = {}

    def on_pool(_m: nn.Module, args: Any, _out: Any) -> None:
        seen["args"] = args

    def on_head(_m: nn.Module, _args: Any, out: torch.Tensor) -> Any:
        if not (torch.is_grad_enabled() and out.requires_grad and "args" in seen):
            return None
        feats_in, boxes, shapes = seen.pop("args")
        keys = list(feats_in)
        counts = [len(b) for b in boxes]

        def recompute(rows: torch.Tensor, *feats: torch.Tensor) -> torch.Tensor:
            picked, start = [], 0
            for b, n in zip(boxes, counts):  # rows index the concatenation of every image's boxes
                mine = rows[(rows >= start) & (rows < start + n)] - start
                picked.append(b[mine])
                start += n
            return head(pool(dict(zip(keys, feats)), picked, shapes))

        return _RowSparseGrad.apply(out.detach(), recompute, *[feats_in[k] for k in keys])

    handles = [pool.register_forward_hook(on_pool), head.register_forward_hook(on_head)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class DetectionScores(nn.Module):
    """A detector seen as a classifier: (N, 3, H, W) model inputs -> (N, K) box scores
    (:func:`box_scores`) of K reference boxes, each image's valid size ``valid``. The detector's
    children are this module's children under their own names (``backbone.body.layer2.0.conv1``),
    so layer names and hooks are the detector's."""

    def __init__(self, detector: nn.Module, boxes: Sequence[Sequence[float]], labels: Sequence[int], *,
                 valid: tuple[int, int] | None = None, iou_threshold: float = 0.5, pick_box: int | None = None):
        super().__init__()
        object.__setattr__(self, "detector", detector)
        for name, child in detector.named_children():
            self.add_module(name, child)
        self.register_buffer("boxes", torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)), persistent=False)
        self.labels = [int(v) for v in labels]
        self.valid_hw = valid
        self.iou_threshold = iou_threshold
        # pick_box K (no boxes given): the reference is the K-th detection of the first batch this
        # module sees, which must be the clean image: a gradient CAM then needs no separate
        # detection pass (the reference box is the detection itself: IoU 1, its own score)
        self.pick_box = pick_box
        self.picked: Detection | None = None

    def train(self, mode: bool = True) -> "DetectionScores":
        super().train(mode)
        self.detector.training = mode  # the children are shared; the detector's own flag too
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [self.valid_hw] * x.shape[0] if self.valid_hw else None
        with _valid(self.detector, sizes), sparse_box_grads(self.detector):
            outs = self.detector(x)
        if self.pick_box is not None and self.picked is None:
            found = [Detection(tuple(float(v) for v in b), int(lab), float(sc))  # type: ignore[arg-type]
                     for b, lab, sc in zip(outs[0]["boxes"].detach().float(), outs[0]["labels"], outs[0]["scores"].detach().float())]
            self.picked = pick(found, box=self.pick_box, score_threshold=0.0)[0][1]
            self.boxes = torch.tensor([self.picked.box], dtype=torch.float32, device=x.device)
            self.labels = [self.picked.label]
        scores = box_scores(outs, self.boxes, self.labels, iou_threshold=self.iou_threshold)
        # a row with no matching detection is a constant 0: keep it in the graph (zero gradients)
        return scores + 0.0 * x.flatten(1).sum(1, keepdim=True)


def pick(detections: Sequence[Detection], *, box: int | None, score_threshold: float) -> list[tuple[int, Detection]]:
    """The detections a cam explains: (index, detection) of ``box`` alone, else of every one
    scoring at least ``score_threshold``. Raises UsageError (one line) when there is none."""
    if box is not None:
        if not 0 <= box < len(detections):
            raise UsageError(f"--box {box}: the model found {len(detections)} box(es) in this image"
                             + (f" (0..{len(detections) - 1})" if detections else ""))
        return [(box, detections[box])]
    chosen = [(i, d) for i, d in enumerate(detections) if d.score >= score_threshold]
    if not chosen:
        best = f"; the best scores {detections[0].score:.3g}" if detections else ""
        raise UsageError(f"no detection scores at least --score-threshold {score_threshold:g}{best} "
                         f"({len(detections)} box(es) in all); lower the threshold or pick one with --box K")
    return chosen
