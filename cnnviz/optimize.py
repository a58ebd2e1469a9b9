"""Activation maximization: synthesise the input that excites a channel, a unit or a class logit.

Four swappable parts, as in Lucid/Lucent, written with plain torch ops:

* **parametrisation** (``image_param``): a batch of images as a Fourier spectrum scaled by 1/f with
  the ImageNet colour correlation folded in (``"fft"``, Lucid's default), or raw pixels
  (``"pixel"``, the naive baseline); either way squashed to [0, 1] by a sigmoid;
* **transforms** (``Transforms``): pad, jitter, random scale, random rotation and a second jitter,
  composed into one affine map per image and applied with a single ``affine_grid``/``grid_sample``
  that also resamples to the size the model sees (one interpolation, not five);
* **objectives**: mean activation of a channel, its centre unit, or a class logit (before softmax);
* **the loop** (``maximize``): Adam on a batch with one image per target, the forward pass stopped
  at the target layer (``cnnviz.capture``), hooks removed, the model's mode and ``requires_grad``
  flags restored.

Every image draws its start and its transforms from its own generator seeded by (seed, target), so
a target's image does not depend on which other targets share its batch: batched and one-by-one
runs give the same pictures, and the same seed gives the same pictures.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .capture import Capture, Stage, hook_points
from .device import PRECISIONS, autocast, bf16_native, resolve_device, resolve_precision  # noqa: F401 (re-exported)
from .errors import CnnvizError, SelectionError, UsageError
from .layers import ConvLayer
from .models import IMAGENET_MEAN, IMAGENET_STD
from .progress import Progress
from .render import fit_text, label_tiles, tile_factor, tile_grid, title_strip, to_uint8, upscale, vstack, wrap_text
from .select import select_indices
from .util import device_of, eval_mode, layer_names

Objective = Literal["channel", "neuron", "class"]
Param = Literal["fft", "pixel"]
OBJECTIVES = ("channel", "neuron", "class")
PARAMS = ("fft", "pixel")

DEFAULT_STEPS = 256
DEFAULT_LR = 0.05
DEFAULT_SIZE = 128
MIN_MODEL_SIZE = 224  # images smaller than this are upscaled for the model, as Lucent does

# Square root of the ImageNet RGB colour covariance (Lucid's `color_correlation_svd_sqrt`),
# normalised so its largest column norm is 1: decorrelated noise -> natural colour statistics.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
_FFT_MAGIC = 4.0  # Lucid's divisor of the inverse FFT: keeps the start grey instead of saturated


# ---------------------------------------------------------------------------------------------
# per-image randomness


def _generators(seed: int, targets: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded by (seed, target) only."""
    gens = []
    for t in targets:
        state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(t) & 0xFFFFFFFF]).generate_state(2, np.uint64)
        gens.append(torch.Generator().manual_seed(int(state[0] >> np.uint64(1))))
    return gens


# ---------------------------------------------------------------------------------------------
# parametrisation


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """(h, w // 2 + 1) spatial frequency magnitudes (cycles / pixel) of a real 2D FFT."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


@dataclass
class ImageParam:
    """A batch of N images (N, 3, H, W) in [0, 1] as a function of the leaf tensor ``param``."""

    param: torch.Tensor
    kind: str
    size: tuple[int, int]
    decorrelate: bool
    scale: torch.Tensor | None = None
    color: torch.Tensor | None = field(default=None, repr=False)

    def __call__(self) -> torch.Tensor:
        h, w = self.size
        if self.kind == "fft":
            spectrum = torch.view_as_complex(self.param * self.scale)  # type: ignore[operator]
            x = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / _FFT_MAGIC
        else:
            x = self.param
        if self.decorrelate:
            x = torch.einsum("nchw,dc->ndhw", x, self.color)
        return torch.sigmoid(x)


def image_param(
    generators: Sequence[torch.Generator],
    *,
    size: tuple[int, int],
    kind: Param = "fft",
    decorrelate: bool = True,
    sd: float = 0.01,
    decay_power: float = 1.0,
    device: torch.device | str = "cpu",
) -> ImageParam:
    """One image per generator, each started from its own N(0, sd) draw (so per-target repeatable).

    ``fft``: a spectrum (N, 3, H, W//2+1, 2) whose amplitudes are scaled by 1/max(f, 1/max(H, W))
    ** decay_power, so every frequency band starts with equal energy in the picture and the
    optimiser's steps are not dominated by pixel noise. ``pixel``: (N, 3, H, W) logits.
    """
    h, w = size
    if kind not in PARAMS:
        raise UsageError(f"unknown parametrisation {kind!r}; choose {' or '.join(PARAMS)}")
    device = torch.device(device)
    shape: tuple[int, ...] = (3, h, w // 2 + 1, 2) if kind == "fft" else (3, h, w)
    with torch.inference_mode(False):
        start = torch.stack([torch.randn(shape, generator=g) * sd for g in generators]).to(device)
        param = start.requires_grad_(True)
        scale = None
        if kind == "fft":
            s = 1.0 / np.maximum(rfft2d_freqs(h, w), 1.0 / max(h, w)) ** decay_power
            scale = torch.tensor(s, dtype=torch.float32, device=device)[None, None, :, :, None]
        color = torch.tensor(COLOR_CORRELATION, device=device)
    return ImageParam(param=param, kind=kind, size=(h, w), decorrelate=decorrelate, scale=scale, color=color)


# ---------------------------------------------------------------------------------------------
# transforms


@dataclass(frozen=True)
class Transforms:
    """Random transforms applied at every step, in the spirit of Lucid's ``standard_transforms``.

    pad: grey border in image pixels; jitter/jitter2: maximum shift in pixels (uniform in
    [-j/2, j/2]) before and after scaling/rotation; scale: (min, max) zoom; rotate: maximum angle
    in degrees (uniform in [-rotate, rotate]).
    """

    pad: int = 12
    jitter: float = 8.0
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    jitter2: float = 4.0

    @classmethod
    def none(cls) -> "Transforms":
        return cls(pad=0, jitter=0.0, scale=(1.0, 1.0), rotate=0.0, jitter2=0.0)

    def check(self) -> "Transforms":
        if self.pad < 0 or self.jitter < 0 or self.jitter2 < 0 or self.rotate < 0:
            raise UsageError("transform amounts (pad, jitter, rotate) must be >= 0")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise UsageError(f"scale range must satisfy 0 < min <= max, got {lo}..{hi}")
        return self


def model_size(size: tuple[int, int], *, pad: int, min_size: int = MIN_MODEL_SIZE) -> tuple[int, int, float]:
    """(H, W, factor) the model sees for an image of ``size`` with ``pad``: the padded canvas,
    upscaled by ``factor`` >= 1 until its smaller side is at least ``min_size``."""
    ph, pw = size[0] + 2 * pad, size[1] + 2 * pad
    factor = max(1.0, min_size / min(ph, pw))
    return max(1, round(ph * factor)), max(1, round(pw * factor)), factor


def transform_params(generators: Sequence[torch.Generator], t: Transforms) -> torch.Tensor:
    """(N, 6) float64 random draws per image, from that image's generator: first jitter x, y
    (pixels), scale, angle (radians), second jitter x, y (pixels)."""
    rows = []
    for g in generators:
        u = torch.rand(7, generator=g, dtype=torch.float64)
        jx, jy = (u[0] - 0.5) * t.jitter, (u[1] - 0.5) * t.jitter
        lo, hi = t.scale
        s = lo + (hi - lo) * u[2]
        a = math.radians(t.rotate) * (2 * u[3] - 1)
        j2x, j2y = (u[4] - 0.5) * t.jitter2, (u[5] - 0.5) * t.jitter2
        rows.append(torch.stack([jx, jy, s, a, j2x, j2y]))
    return torch.stack(rows)


def affine_theta(draws: torch.Tensor, *, size: tuple[int, int], pad: int) -> torch.Tensor:
    """(N, 2, 3) float32 ``affine_grid`` matrices mapping output (model input) coordinates to image
    coordinates, both normalised to [-1, 1] (align_corners=False).

    The image (H, W) sits at the centre of a canvas padded by ``pad``; a point p (pixels from the
    centre) goes to q = J2 + R (s (p + J1)), so p = R^-1 (q - J2) / s - J1."""
    h, w = size
    ph, pw = h + 2 * pad, w + 2 * pad
    jx, jy, s, a, j2x, j2y = draws.T
    cos, sin = torch.cos(a), torch.sin(a)
    # R^-1 = [[cos, sin], [-sin, cos]] in (x right, y down) pixel coordinates
    rinv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (N, 2, 2)
    d_out = torch.tensor([[pw / 2, 0.0], [0.0, ph / 2]], dtype=draws.dtype)
    d_img_inv = torch.tensor([[2.0 / w, 0.0], [0.0, 2.0 / h]], dtype=draws.dtype)
    lin = d_img_inv @ rinv @ d_out / s[:, None, None]
    j2 = torch.stack([j2x, j2y], -1)[..., None]
    j1 = torch.stack([jx, jy], -1)[..., None]
    off = d_img_inv @ (-(rinv @ j2) / s[:, None, None] - j1)
    return torch.cat([lin, off], -1).float()


def apply_transforms(
    images: torch.Tensor, theta: torch.Tensor, *, out_size: tuple[int, int]
) -> torch.Tensor:
    """Resample ``images`` (N, 3, H, W) in [0, 1] through ``theta`` (N, 2, 3) to (N, 3, *out_size);
    everything outside the image is grey 0.5 (the padding). Differentiable in ``images``."""
    grid = F.affine_grid(theta.to(images.device), [images.shape[0], images.shape[1], *out_size], align_corners=False)
    out = F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + 0.5


# ---------------------------------------------------------------------------------------------
# objectives


def objective_values(out: torch.Tensor, targets: torch.Tensor, objective: Objective) -> torch.Tensor:
    """(N,) objective per image: ``out`` is (N, C, h, w) activations or (N, K) logits; image i is
    scored on channel/class ``targets[i]``: spatial mean (channel), centre unit (neuron), logit."""
    idx = torch.arange(out.shape[0], device=out.device)
    sel = out[idx, targets.to(out.device)]
    if objective == "class":
        return sel
    if out.ndim != 4:
        raise CnnvizError(f"expected (N, C, h, w) activations, got shape {tuple(out.shape)}")
    if objective == "neuron":
        return sel[:, out.shape[2] // 2, out.shape[3] // 2]
    return sel.mean(dim=(1, 2))


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters with requires_grad False inside (no weight gradients), flags restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


class _Scorer:
    """Forward pass to the objective: hooks on the target layer (stopping the pass there) or the
    full model for class logits. Use as a context manager."""

    def __init__(self, model: nn.Module, layer: ConvLayer | str | None, stage: Stage, grad: bool):
        self.model = model
        self.points = hook_points(model, [layer], stage) if layer is not None else None
        self.grad = grad
        self._stack = contextlib.ExitStack()
        self.cap: Capture | None = None

    def __enter__(self) -> "_Scorer":
        if self.points is not None:
            self.cap = self._stack.enter_context(Capture(self.model, self.points, grad=self.grad, on_cpu=False))
        else:
            self._stack.enter_context(eval_mode(self.model))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.cap is not None and self.points is not None:
            return self.cap.run(x)[self.points[0]]
        with (torch.enable_grad() if self.grad else torch.inference_mode()):
            out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim != 2:
            raise CnnvizError(f"class objective needs (N, classes) logits; the model returns shape {tuple(out.shape)}")
        return out


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class Maximized:
    """Result of ``maximize``: one image per target, in the order given."""

    targets: list[int]
    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    values: np.ndarray  # (N,) float64: objective of each final image, untransformed (see evaluate)
    history: np.ndarray  # (steps, N) float32: objective at each step (on the transformed input)
    steps: int
    input_size: tuple[int, int]  # (H, W) the model saw during optimisation
    precision: str = "fp32"  # what ran: 'fp32' or 'bf16' ('auto' resolved)


def _check_targets(model: nn.Module, layer: ConvLayer | str | None, objective: str, targets: Sequence[int]) -> None:
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown objective {objective!r}; choose {', '.join(OBJECTIVES)}")
    if (objective == "class") != (layer is None):
        raise UsageError("the class objective takes no layer; channel and neuron objectives need one")
    if not targets:
        raise SelectionError("no targets to maximize")
    if layer is not None:
        name = layer_names([layer])[0]
        conv = dict(model.named_modules()).get(name)
        count = layer.out_channels if isinstance(layer, ConvLayer) else getattr(conv, "out_channels", None)
        bad = [t for t in targets if count is not None and not 0 <= t < count]
        if bad:
            raise SelectionError(f"channel {bad[0]} out of range: {name} has {count} channels")
    else:
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        count = heads[-1].out_features if heads else None
        bad = [t for t in targets if count is not None and not 0 <= t < count]
        if bad:
            raise SelectionError(f"class {bad[0]} out of range: the model has {count} classes")


_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _norm_tensors(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m, s


def maximize(
    model: nn.Module,
    *,
    targets: Sequence[int],
    layer: ConvLayer | str | None = None,
    objective: Objective = "channel",
    stage: Stage = "conv",
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    param: Param = "fft",
    decorrelate: bool = True,
    transforms: Transforms | None = Transforms(),
    min_model_size: int = MIN_MODEL_SIZE,
    seed: int = 0,
    batch_size: int = 16,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    precision: str = "fp32",
    progress: bool | Callable[[int, int], None] = False,
    desc: str = "",
) -> Maximized:
    """Gradient ascent in input space: one image per target maximising its objective.

    ``targets``: channel indices of ``layer`` (objective 'channel' or 'neuron'), or class indices
    (objective 'class', ``layer=None``: the model's output logits, before softmax).
    ``size``: image (H, W) in pixels; the model sees it padded and upscaled so its smaller side is
    at least ``min_model_size`` (see ``model_size``). ``transforms=None`` disables them.
    Targets are optimised ``batch_size`` at a time as one batch; the model runs on its own device.
    ``precision``: 'fp32', 'bf16' (autocast of the forward/backward pass; the image, the optimiser
    and the reported values stay float32) or 'auto' (bf16 where the CPU computes it natively).
    ``progress``: True for the progress bar (cnnviz.progress: on stderr when it is a terminal),
    or a callback(done_steps, total_steps).
    """
    targets = [int(t) for t in targets]
    _check_targets(model, layer, objective, targets)
    if steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    if not lr > 0:
        raise UsageError(f"--lr must be > 0, got {lr}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(hw) < 8 or max(hw) > 4096:
        raise UsageError(f"--size {hw[0]}x{hw[1]} out of range; use 8..4096 pixels per side")
    tf = (transforms or Transforms.none()).check()
    in_h, in_w, _ = model_size(hw, pad=tf.pad, min_size=min_model_size)
    device = device_of(model)
    precision = resolve_precision(precision, device)
    amp = autocast(precision, device)

    total = steps * math.ceil(len(targets) / batch_size)
    bar = Progress(total, desc=desc or "maximize", unit="step", quiet=progress is not True)
    callback = progress if callable(progress) else None

    images, values, history = [], [], []
    done = 0
    try:
        with torch.inference_mode(False), frozen(model):
            m, s = _norm_tensors(mean, std, device)  # created outside inference mode: saved for backward
            for start in range(0, len(targets), batch_size):
                chunk = targets[start : start + batch_size]
                gens = _generators(seed, chunk)
                img = image_param(gens, size=hw, kind=param, decorrelate=decorrelate, device=device)
                tgt = torch.tensor(chunk, device=device)
                opt = torch.optim.Adam([img.param], lr=lr)
                hist = np.empty((steps, len(chunk)), dtype=np.float32)
                with _Scorer(model, layer, stage, grad=True) as score, torch.enable_grad():
                    for i in range(steps):
                        theta = affine_theta(transform_params(gens, tf), size=hw, pad=tf.pad)
                        x = apply_transforms(img(), theta, out_size=(in_h, in_w))
                        if m.shape[1] == 1:  # a grayscale model sees the luma of the RGB image (ITU-R 601-2, as PIL)
                            x = (x * _LUMA.to(x.device)).sum(1, keepdim=True)
                        with amp:
                            out = score((x - m) / s)
                        obj = objective_values(out.float(), tgt, objective)
                        opt.zero_grad(set_to_none=True)
                        # sum, not mean: each image's gradient is independent of the batch size
                        (-obj.sum()).backward()
                        opt.step()
                        hist[i] = obj.detach().float().cpu().numpy()
                        done += 1
                        if bar.active:
                            bar.update(1, objective=f"{float(hist[i].mean()):.3g}")
                        if callback is not None:
                            callback(done, total)
                with torch.no_grad():
                    final = img().detach()
                images.append(final.permute(0, 2, 3, 1).float().cpu().numpy())
                values.append(evaluate(model, final, targets=chunk, layer=layer, objective=objective, stage=stage,
                                       factor=model_size(hw, pad=tf.pad, min_size=min_model_size)[2], mean=mean, std=std))
                history.append(hist)
    finally:
        bar.close()
    return Maximized(
        targets=targets,
        images=np.concatenate(images),
        values=np.concatenate(values),
        history=np.concatenate(history, axis=1),
        steps=steps,
        input_size=(in_h, in_w),
        precision=precision,
    )


def evaluate(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    targets: Sequence[int],
    layer: ConvLayer | str | None = None,
    objective: Objective = "channel",
    stage: Stage = "conv",
    factor: float | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """(N,) float64 objective of ``images`` ((N, 3, H, W) tensor or (N, H, W, 3) array, [0, 1])
    with no random transform: each image upscaled by ``factor`` (default: to a smaller side of
    MIN_MODEL_SIZE, as during optimisation), normalised, one forward pass (stopped at ``layer``)."""
    device = device_of(model)
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images).float()
    if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    x = x.to(device)
    h, w = x.shape[-2:]
    if factor is None:
        factor = max(1.0, MIN_MODEL_SIZE / min(h, w))
    if factor != 1.0:
        x = F.interpolate(x, size=(round(h * factor), round(w * factor)), mode="bilinear", align_corners=False)
    m, s = _norm_tensors(mean, std, device)
    if m.shape[1] == 1:
        x = (x * _LUMA.to(x.device)).sum(1, keepdim=True)
    with _Scorer(model, layer, stage, grad=False) as score:
        out = score((x - m) / s)
    return objective_values(out, torch.tensor([int(t) for t in targets]), objective).double().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# class selection


def _norm_name(s: str) -> str:
    return " ".join(s.lower().replace("_", " ").replace("-", " ").split())


_NUMERIC = re.compile(r"^[\d:+\-\s]+$")


def resolve_classes(specs: str | Sequence[str], categories: Sequence[str], *, count: int | None = None) -> list[int]:
    """Class indices for ``--class`` values: indices and slices (the selector grammar), 'all', or
    names from the weights' categories matched forgivingly: case, '_' and '-' ignored
    ('tennis_ball', 'Tennis Ball'), then a unique substring ('tennis'), then a glob ('*terrier').
    A name shared by several classes ('crane') selects all of them. Raises SelectionError."""
    if isinstance(specs, str):
        specs = [specs]
    count = len(categories) if count is None else count
    if count < 1:
        raise SelectionError("the model has no class outputs")
    normed = [_norm_name(c) for c in categories]
    out: list[int] = []

    def add(idx: Sequence[int]) -> None:
        out.extend(i for i in idx if i not in out)

    for spec in specs:
        for term in (t.strip() for t in str(spec).split(",")):
            if not term:
                raise SelectionError(f"empty term in class selector {spec!r}; use e.g. 852, 'tennis ball' or 0:10")
            if _NUMERIC.match(term) or term.lower() == "all":
                add(select_indices(term, count, what="class"))
                continue
            if not categories:
                raise SelectionError(
                    f"cannot look up class {term!r}: these weights carry no category names; use class indices 0..{count - 1}, "
                    "or name the classes with --labels FILE (one name per line)"
                )
            key = _norm_name(term)
            if set("*?[") & set(key):
                hits = [i for i, n in enumerate(normed) if fnmatch.fnmatchcase(n, key)]
                if not hits:
                    raise SelectionError(f"pattern {term!r} matches no class name")
                add(hits)
                continue
            hits = [i for i, n in enumerate(normed) if n == key]
            if not hits:
                hits = [i for i, n in enumerate(normed) if re.search(rf"\b{re.escape(key)}\b", n)]
                if len(hits) > 1 and len({normed[i] for i in hits}) > 1:
                    shown = ", ".join(f"{categories[i]!r} ({i})" for i in hits[:6]) + (" ..." if len(hits) > 6 else "")
                    raise SelectionError(f"class {term!r} is ambiguous: {shown}; give the full name or the index")
            if not hits:
                close = difflib.get_close_matches(key, normed, n=3, cutoff=0.6)
                sugg = f" (did you mean {', '.join(repr(categories[normed.index(c)]) for c in close)}?)" if close else ""
                raise SelectionError(f"unknown class {term!r}{sugg}; give a name from the weights' {len(categories)} categories or an index 0..{count - 1}")
            add(hits)
    if not out:
        raise SelectionError("class selector selects nothing")
    return out


# ---------------------------------------------------------------- the picture

MIN_TILE_PX = 96  # grid tiles of smaller images are enlarged (nearest neighbour) to this
LABEL_PX = 11  # tile label font size
TITLE_PX = 13


def recipe_note(*, param: str, decorrelate: bool, transforms: Transforms | None) -> str:
    """Title words for a non-default recipe, e.g. 'pixel · no transforms' ('' for Lucid's default:
    fft, decorrelated, transforms)."""
    words = []
    if param != "fft":
        words.append(param)
    if decorrelate != (param == "fft"):
        words.append("decorrelated" if decorrelate else "not decorrelated")
    if transforms is None:
        words.append("no transforms")
    return " · ".join(words)


def grid_title(*, model: str, weights: str, steps: int, layer: ConvLayer | None = None, stage: str = "conv",
               objective: str = "channel", recipe: str = "") -> str:
    """The title of a maximize grid, parts joined by ' · ' (where maximize_grid wraps it)."""
    short = os.path.basename(weights) if os.sep in weights else weights  # a checkpoint path: its file name
    if layer is None:
        title = f"{model} class logits · {steps} steps · weights {short}"
    else:
        label = f"{layer.alias} ({layer.name})" if layer.alias else layer.name
        title = f"{model} {label} · {stage} · {objective} · {steps} steps · weights {short}"
    return f"{title} · {recipe}" if recipe else title


def maximize_grid(images: np.ndarray, *, targets: Sequence[int], class_names: Sequence[str] | None = None,
                  title: str = "", labels: bool = True) -> np.ndarray:
    """Maximize images (N, H, W, 3) (uint8, or float in [0, 1]) -> one grid picture (H', W', 3)
    uint8: tiles enlarged (nearest neighbour) until the shorter side is at least MIN_TILE_PX, each
    labelled with its target ('ch 7', or '207 golden retriever' with ``class_names``), ``title``
    on top wrapped at its ' · ' separators. ``labels=False``: the bare grid, no text."""
    tiles = np.asarray(images)
    if tiles.dtype != np.uint8:
        tiles = to_uint8(tiles)
    factor = tile_factor(tiles.shape[1], tiles.shape[2], MIN_TILE_PX)
    if factor > 1:  # tiny images: enlarged so they (and their labels) can be seen
        tiles = upscale(tiles, factor)
    if not labels:
        return tile_grid(tiles, gap=2)
    w = tiles.shape[2]
    if class_names is None:
        texts = [f"ch {t}" for t in targets]
    else:
        texts = [fit_text(f"{t} {name}", width=w - 2, size=9) for t, name in zip(targets, class_names)]
    grid = tile_grid(label_tiles(tiles, texts, size=LABEL_PX), gap=2)
    if not title:
        return grid
    lines = wrap_text(title, width=grid.shape[1] - 8, size=TITLE_PX, sep=" · ", cut=True)  # fits narrow grids
    return vstack([title_strip("\n".join(lines), width=grid.shape[1], size=TITLE_PX, x=4, top=3, bottom=2), grid])
