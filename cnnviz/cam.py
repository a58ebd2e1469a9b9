"""Why the model decided: the CAM family over a layer's activations and gradients, and gradient
attributions at the input, for a batch of (image, target class) pairs.

Every method ends in one (H, W) map per pair at the input's resolution, in two forms:

* ``raw``: the method's own values, float32, before any scaling (a CAM after its ReLU, bilinearly
  resized; several layers: the mean of their per-layer [0, 1] maps, as pytorch-grad-cam fuses them);
* ``norm``: ``raw`` scaled to [0, 1] (min -> 0, max -> 1; a constant map -> 0).

The CAM methods reproduce pytorch-grad-cam 1.5 step for step (per-layer ReLU, min-max, bilinear
resize with half-pixel centres like ``cv2.resize``, mean over layers, min-max), the input
attributions reproduce Captum (saliency = max over colour channels of ``|d logit / d x|``;
input x gradient, integrated gradients with Gauss-Legendre steps from a zero baseline, guided
backprop: ``|sum over colour channels|``). Deliberate differences (EigenCAM's sign, Ablation-CAM
on signed layers, gradients of a conv followed by an in-place ReLU) are documented at the methods
and in docs/cam.md.

Targets are raw logits (the class score before softmax), as in both references.
"""
from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .cammethods import METHODS, Method, register, resolve_methods
from .capture import HookPoint, hook_points
from .errors import CnnvizError, ModelError, SelectionError, UsageError
from .graph import TraceError, trace
from .layers import conv_layers, select_layers
from .util import device_of, eval_mode, input_channels

# The method table is cnnviz.cammethods (torch-free, shared with the CLI): METHODS, Method,
# register and resolve_methods are re-exported here.


# ---------------------------------------------------------------- layers


@dataclass(frozen=True)
class CamLayer:
    """A layer whose output a CAM is computed on: display ``name`` and where it is read."""

    name: str
    point: HookPoint


def _outputs(model: nn.Module, size: tuple[int, int], names: Sequence[str] | None = None) -> dict[str, list[Any]]:
    """{module name: its outputs in call order} for one forward pass of a zero image of ``size``
    (every module, or ``names``). Runs where the model is: on 'meta' it costs nothing. {} when
    the model does not accept that input."""
    seen: dict[str, list[Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        def f(_m: nn.Module, _i: Any, out: Any) -> None:
            seen.setdefault(name, []).append(out)
        return f

    wanted = None if names is None else set(names)
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if wanted is None or n in wanted]
    try:
        with eval_mode(model), torch.inference_mode():
            model(torch.zeros(1, input_channels(model), *size, device=device_of(model)))
    except Exception:
        return {}
    finally:
        for h in handles:
            h.remove()
    return seen


def check_spatial(model: nn.Module, layers: Sequence[CamLayer], *, size: tuple[int, int] = (224, 224)) -> None:
    """UsageError unless every layer's output is (N, C, h, w) for an input of ``size`` (checked
    with one forward pass; on a 'meta' model before any weights are read)."""
    seen = _outputs(model, size, [layer.point.module for layer in layers])
    if not seen:
        return  # the model rejects this size: the real run reports it
    for layer in layers:
        outs = seen.get(layer.point.module, [])
        if len(outs) <= layer.point.call:
            raise UsageError(f"layer {layer.name} does not run in the model's forward pass")
        out = outs[layer.point.call]
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"layer {layer.name} has no spatial output (its output is {shape}, not (N, C, H, W)); "
                             "pick a conv layer or block")
        if out.shape[-2] * out.shape[-1] == 1:
            raise UsageError(_one_by_one(layer.name, tuple(out.shape)))


def _one_by_one(name: str, shape: tuple[int, ...]) -> str:
    return (f"layer {name} has a 1x1 output {shape}: a 1x1 map has no spatial information (stretched to the image it "
            "shows only rounding noise); pick a conv layer or block before the global pooling")


def default_layer(model: nn.Module, *, size: tuple[int, int] = (224, 224)) -> CamLayer:
    """The layer a practitioner picks: the block that ends with the network's last spatial
    Conv2d, i.e. the outermost module around the activation after that conv (its own output when
    no activation can be hooked after it) whose output still has that activation's h x w:
    ResNet-50 'layer4' (the last block's ReLU after the residual sum), VGG16 'features.29' (the
    ReLU after conv5_3: 'features' ends with a pooling), DenseNet 'features', Inception-v3
    'Mixed_7c' (the concatenation of its branches), ConvNeXt 'features' / timm 'stages' (the last
    block's output after its MLP and residual sum, not its depthwise conv). A conv whose output
    is 1x1 (a head after the global pooling, as timm's MobileNetV3 'conv_head') is skipped.
    ``size``: an input size the model accepts."""
    key = (tuple(name for name, _ in model.named_modules()), size)
    cached = _DEFAULTS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    convs = conv_layers(model)
    if not convs:
        raise ModelError("the model has no Conv2d layer to compute a class activation map on")
    seen = _outputs(model, size)
    layer = None
    for conv in reversed(convs):
        try:
            point = hook_points(model, [conv.name], "act")[0]
        except CnnvizError:
            point = HookPoint(conv.name, 0)
        outs = seen.get(point.module, [])
        out = outs[point.call] if len(outs) > point.call else None
        if not seen or (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1):
            layer = _block(seen, point)
            break
    if layer is None:
        raise ModelError("the model has no Conv2d layer with a spatial output (more than 1x1) to compute a class "
                         "activation map on")
    _DEFAULTS[model] = (key, layer)
    return layer


def _block(seen: dict[str, list[Any]], point: HookPoint) -> CamLayer:
    """The outermost module enclosing ``point`` (``seen``: _outputs of one forward) that runs once
    and returns an (N, C, h, w) tensor of the h x w read at ``point``: the block, stage or body
    whose output is where ``point``'s computation ends up before the network pools."""
    plain = CamLayer(point.module if point.call == 0 else f"{point.module}#{point.call}", point)
    outs = seen.get(point.module, [])
    if len(outs) <= point.call or not isinstance(outs[point.call], torch.Tensor):
        return plain
    hw = tuple(outs[point.call].shape[-2:])
    parts = point.module.split(".")
    for k in range(1, len(parts)):  # outermost first
        name = ".".join(parts[:k])
        got = seen.get(name, [])
        if len(got) == 1 and isinstance(got[0], torch.Tensor) and got[0].dim() == 4 and tuple(got[0].shape[-2:]) == hw:
            return CamLayer(name, HookPoint(name, 0))
    return plain


# model -> (its module names and the size used, its default layer): one naming forward per model.
_DEFAULTS: "weakref.WeakKeyDictionary[nn.Module, tuple[Any, CamLayer]]" = weakref.WeakKeyDictionary()


def resolve_layers(model: nn.Module, specs: str | Sequence[str] | None, *, stage: str = "act", model_name: str = "") -> list[CamLayer]:
    """``--layer`` values: None -> default_layer; an exact module name ('layer4', 'features.29')
    -> that module's output; otherwise the conv selector grammar (index, alias, slice, glob) over
    the conv catalog, read at ``stage`` ('act': after the conv's activation, 'conv': the conv's
    own output)."""
    if specs is None or (not isinstance(specs, str) and not specs):
        return [default_layer(model)]
    if isinstance(specs, str):
        specs = [specs]
    modules = dict(model.named_modules())
    catalog = conv_layers(model)
    out: list[CamLayer] = []
    for spec in specs:
        for term in (t.strip() for t in str(spec).split(",")):
            if term in modules and term and not isinstance(modules[term], nn.Conv2d):
                layers = [CamLayer(term, HookPoint(term, 0))]
            else:
                convs = select_layers(catalog, term, model_name=model_name)
                layers = [CamLayer(c.name if stage == "conv" else f"{c.name}:act", p)
                          for c, p in zip(convs, hook_points(model, convs, stage))]  # type: ignore[arg-type]
            out.extend(layer for layer in layers if layer not in out)
    return out


# ---------------------------------------------------------------- recording activations (and gradients)


class _Recorder:
    """Forward hooks at ``points`` keeping each output inside the autograd graph (so
    ``torch.autograd.grad(score, recorder.outputs)`` gives the gradients). The hook hands the
    network a clone, so an in-place op after the layer (VGG's ReLU(inplace=True) after a conv)
    changes the clone, never the recorded tensor. Hooks are removed on exit, also on error."""

    def __init__(self, model: nn.Module, points: Sequence[HookPoint]):
        modules = dict(model.named_modules())
        missing = [p.module for p in points if p.module not in modules]
        if missing:
            raise SelectionError(f"model has no module {missing[0]!r}")
        self.points = list(points)
        self._modules = {p.module: modules[p.module] for p in points}
        self._handles: list[Any] = []
        self._calls: dict[str, int] = {}
        self.outputs: dict[HookPoint, torch.Tensor] = {}

    def __enter__(self) -> "_Recorder":
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        self._calls.clear()
        self.outputs = {}

    def _hook(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            point = HookPoint(name, call)
            if point not in self.points:
                return None
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[-1] * out.shape[-2] < 1:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise UsageError(f"layer {name} has no spatial output (its output is {shape}, not (N, C, H, W)); pick a conv layer or block")
            if out.shape[-1] * out.shape[-2] == 1:  # at this input size (a small --size)
                raise UsageError(_one_by_one(name, tuple(out.shape)) + " or a larger --size")
            self.outputs[point] = out
            return out.clone()

        return hook

    def get(self, point: HookPoint) -> torch.Tensor:
        if point not in self.outputs:
            raise CnnvizError(f"layer {point.module} did not run in the forward pass")
        return self.outputs[point]


def _check_logits(out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model has no classifier head: its output is {shape}, not (N, classes)")
    return out


def _scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (N, classes) float32 of the batch ``x`` (N, 3, H, W), without gradients."""
    with eval_mode(model), torch.inference_mode():
        return _check_logits(model(x)).float()


def check_targets(targets: Sequence[int] | torch.Tensor, classes: int) -> None:
    for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets):
        if not 0 <= int(t) < classes:
            raise SelectionError(f"class index {int(t)} out of range: the model has {classes} classes (0..{classes - 1})")


def activations_and_grads(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, points: Sequence[HookPoint], *, grad: bool = True
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """One forward (and, with ``grad``, one backward) of ``x`` (N, 3, H, W): the logits (N, K),
    the activations at ``points`` (each (N, C, h, w), detached) and the gradients of the summed
    target logits with respect to them (same shapes; None without ``grad``)."""
    with eval_mode(model), _Recorder(model, points) as rec:
        if grad:
            with torch.inference_mode(False), torch.enable_grad():
                # The input requires grad so the graph exists even when the parameters are frozen.
                logits = _check_logits(model(x.detach().clone().requires_grad_(True)))
                check_targets(targets, logits.shape[1])
                acts = [rec.get(p) for p in points]
                grads = list(torch.autograd.grad(_scores(logits, targets).sum(), acts, allow_unused=True))
                grads = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)]
            return logits.detach(), [a.detach() for a in acts], [g.detach() for g in grads]
        with torch.inference_mode():
            logits = _check_logits(model(x))
            check_targets(targets, logits.shape[1])
            return logits, [rec.get(p) for p in points], [None for _ in points]


# ---------------------------------------------------------------- CAM methods: (acts, grads) -> (N, h, w)


def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    return (weights[:, :, None, None] * acts).sum(1)


def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_c mean_xy(dY/dA_c) * A_c."""
    return _weighted(grads.mean((2, 3)), acts)


def hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_c dY/dA_c * A_c, element-wise (no spatial averaging of the gradient)."""
    return (grads * acts).sum(1)


def gradcam_pp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights sum_xy relu(g) * a, a = g^2 / (2 g^2 + sum_xy(A) g^3), with the
    exponential-score closed form of the paper's eq. 19 (as pytorch-grad-cam)."""
    g2 = grads * grads
    g3 = g2 * grads
    s = acts.sum((2, 3), keepdim=True)
    aij = g2 / (2 * g2 + s * g3 + 1e-6)
    aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
    return _weighted((grads.clamp(min=0) * aij).sum((2, 3)), acts)


def xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """weights sum_xy g * A / (sum_xy A + eps)."""
    s = acts.sum((2, 3), keepdim=True)
    return _weighted((grads * acts / (s + 1e-7)).sum((2, 3)), acts)


def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_c relu(dY/dA_c) * A_c, element-wise."""
    return (grads.clamp(min=0) * acts).sum(1)


def first_component(a: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w): each position's centred C-vector projected on the first right
    singular vector (float64 SVD). Sign: the larger-magnitude lobe is made positive (the
    Seg-Eigen-CAM correction, eq. 13); pytorch-grad-cam 1.5's EigenCAM keeps whatever sign LAPACK
    returns, so its map is the ReLU of either lobe at random. See docs/cam.md."""
    n, c, h, w = a.shape
    m = a.double().reshape(n, c, h * w).transpose(1, 2)
    m = torch.nan_to_num(m) - torch.nan_to_num(m).mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = (m @ vh[:, 0, :, None]).squeeze(-1)
    flip = proj.min(1).values.abs() > proj.max(1).values.abs()
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(n, h, w).float()


def eigencam(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    return first_component(acts)


def eigengradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return first_component(grads * acts)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W) bilinear with half-pixel centres (= cv2.resize INTER_LINEAR)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.clone()
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each (h, w) map of (N, h, w) to [0, 1]: min -> 0, max -> 1, a constant map -> 0."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(1).values[:, None, None]
    span = flat.max(1).values[:, None, None] - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(maps))


def fuse(cams: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-layer CAMs (N, h_l, w_l) -> raw map (N, H, W) at ``size``: ReLU, then one layer: bilinear
    resize; several: the mean of each layer's min-max-scaled, resized map (pytorch-grad-cam's
    aggregation)."""
    cams = [c.clamp(min=0) for c in cams]
    if len(cams) == 1:
        return upsample(cams[0], size)
    return torch.stack([upsample(minmax(c), size) for c in cams]).mean(0)


# ---------------------------------------------------------------- gradients at the input


class _GuidedGrad(torch.autograd.Function):
    """Identity forward; backward passes only positive gradients (placed on a ReLU's output, the
    ReLU's own backward then applies its input mask: guided backpropagation)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g.clamp(min=0)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Every ``nn.ReLU`` module of ``model`` backpropagates guided (as Captum's and
    pytorch-grad-cam's GuidedBackprop: functional relu calls are not changed). Yields how many."""
    handles = [m.register_forward_hook(lambda _m, _i, out: _GuidedGrad.apply(out)) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def input_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, guided: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K), d target logit / d x (N, 3, H, W)) in one forward and one backward."""
    ctx = guided_relus(model) if guided else contextlib.nullcontext()
    with eval_mode(model), ctx, torch.inference_mode(False), torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        logits = _check_logits(model(xi))
        check_targets(targets, logits.shape[1])
        (g,) = torch.autograd.grad(_scores(logits, targets).sum(), xi)
    return logits.detach(), g


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in (0, 1) and weights of ``steps``-point Gauss-Legendre quadrature (Captum's default
    integrated-gradients rule)."""
    if steps < 1:
        raise UsageError(f"--ig-steps must be at least 1, not {steps}")
    p, w = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (p + 1.0), 0.5 * w


def integrated_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, steps: int = 50, batch_size: int = 32) -> torch.Tensor:
    """(x - 0) * integral_0^1 d score(a x) / d x da (N, 3, H, W): the baseline is zero in the
    model's normalised input space (the dataset's mean colour), the integral Gauss-Legendre with
    ``steps`` points; path points run through the model ``batch_size`` at a time."""
    alphas, weights = gauss_legendre(steps)
    n = x.shape[0]
    total = torch.zeros_like(x)
    pairs = [(i, k) for i in range(n) for k in range(steps)]
    per = max(1, batch_size)
    for s in range(0, len(pairs), per):
        chunk = pairs[s:s + per]
        idx = torch.tensor([i for i, _ in chunk], device=x.device)
        a = torch.tensor([alphas[k] for _, k in chunk], dtype=x.dtype, device=x.device)
        w = torch.tensor([weights[k] for _, k in chunk], dtype=x.dtype, device=x.device)
        _, g = input_gradients(model, x[idx] * a[:, None, None, None], targets[idx])
        total.index_add_(0, idx, g * w[:, None, None, None])
    return x * total


def saliency(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, max over colour channels of |d score / d x| (N, H, W))."""
    logits, g = input_gradients(model, x, targets)
    return logits, g.abs().amax(1)


def input_x_gradient(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, |sum over colour channels of x * d score / d x| (N, H, W))."""
    logits, g = input_gradients(model, x, targets)
    return logits, (x * g).sum(1).abs()


def guided_backprop(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, |sum over colour channels of the guided gradient| (N, H, W))."""
    logits, g = input_gradients(model, x, targets, guided=True)
    return logits, g.sum(1).abs()


def guided_gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, layers: Sequence[CamLayer]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, |sum over colour channels of the guided gradient x the [0, 1] Grad-CAM map| (N, H, W))."""
    if len(layers) != 1:
        raise UsageError("guided-gradcam takes one layer")
    logits, gb = input_gradients(model, x, targets, guided=True)
    _, cam = _cam_map(gradcam, True, model, x, targets, layers)
    return logits, (gb * minmax(cam)[:, None]).sum(1).abs()


def integrated_gradients_map(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, ig_steps: int = 50,
                             batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, |sum over colour channels of the integrated gradients| (N, H, W))."""
    logits = predict(model, x)
    check_targets(targets, logits.shape[1])
    return logits, integrated_gradients(model, x, targets, steps=ig_steps, batch_size=batch_size).sum(1).abs()


# ---------------------------------------------------------------- perturbation methods


# glibc mallopt parameters (malloc.h) and the values restored after the masked passes: the
# ceiling glibc's own dynamic threshold reaches once a tensor of 32 MiB or more has been freed
# (DEFAULT_MMAP_THRESHOLD_MAX), and its trim threshold at that point (twice it).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RESTORE_MMAP, _RESTORE_TRIM = 32 << 20, 64 << 20


@contextlib.contextmanager
def _reused_memory() -> Iterator[bool]:
    """Inside the block, freed tensor memory stays in the process for the next batch (glibc only;
    elsewhere nothing changes). Each masked forward of a full-size batch allocates buffers of
    100 MB and more (SqueezeNet's first conv output for 16 images at 224x448); glibc serves them
    with mmap and returns them on free, so every batch page-faults and zero-fills them again:
    40-50 % of Score-CAM's CPU time was system time. Afterwards the thresholds are set to what
    glibc's dynamic ones reach in such a run and the kept memory is handed back (malloc_trim).
    A user's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ is left alone. Yields whether
    the setting took effect."""
    if any(os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        yield False
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        yield False
        return
    try:
        yield ok
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _RESTORE_MMAP)
        libc.mallopt(_M_TRIM_THRESHOLD, _RESTORE_TRIM)
        libc.malloc_trim(0)


class _Forward:
    """``model(batch)`` -> logits, on the CPU in channels-last memory format: the masked passes of
    Score-CAM are whole-network forwards of full-size images, and oneDNN's convolutions, max
    pooling and channel concatenations run 2-2.5x faster on NHWC data than on NCHW (the profile in
    docs/benchmarks-cam.md); the results are the same up to float32 summation order. Only the
    input is converted (the model is not touched). A model that cannot take it (a ``view`` that
    needs contiguous strides) falls back to the plain layout for the rest of the run."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model
        self.channels_last = device.type == "cpu"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last and batch.dim() == 4:
            try:
                return _check_logits(self.model(batch.contiguous(memory_format=torch.channels_last)))
            except RuntimeError:
                self.channels_last = False
        return _check_logits(self.model(batch))


def scorecam_weights(model: nn.Module, x1: torch.Tensor, targets: torch.Tensor, acts1: torch.Tensor, *, point: HookPoint | None = None,
                     batch_size: int = 32) -> torch.Tensor:
    """Score-CAM channel weights (K, C) of ONE image ``x1`` (1, 3, H, W) for its K ``targets``:
    softmax over channels of each target's logit of the image times each channel's map of
    ``acts1`` (1, C, h, w), upsampled bilinearly with aligned corners and min-max scaled (as
    pytorch-grad-cam). The K classes share the masked passes (one set, C / ``batch_size``
    forwards, whatever K). A channel whose map is all zero masks the image to exactly zero: one
    such channel is scored, the others copy its score. ``point`` is not used."""
    c = acts1.shape[1]
    size = tuple(x1.shape[-2:])
    scores = torch.empty(len(targets), c, dtype=torch.float32, device=x1.device)
    forward = _Forward(model, x1.device)
    live = acts1[0].flatten(1).ne(0).any(1)
    dead = (~live).nonzero().flatten()
    idx = torch.cat([live.nonzero().flatten(), dead[:1]])
    with eval_mode(model), torch.inference_mode(), _reused_memory():
        for s in range(0, len(idx), batch_size):
            ch = idx[s:s + batch_size]
            up = F.interpolate(acts1[:, ch].float(), size=size, mode="bilinear", align_corners=True)[0]
            lo = up.flatten(1).min(1).values[:, None, None]
            hi = up.flatten(1).max(1).values[:, None, None]
            masks = (up - lo) / (hi - lo + 1e-8)
            out = forward(x1 * masks[:, None])
            scores[:, ch] = out[:, targets].T.float()
    if len(dead) > 1:
        scores[:, dead[1:]] = scores[:, dead[:1]]
    return torch.softmax(scores, dim=1)


def _frontier_tail(model: nn.Module, point: HookPoint) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule, Any, list[Any]] | None:
    """The part of ``model``'s graph after ``point`` as a GraphModule ``tail(act, *frontier)``,
    where ``frontier`` are the earlier values the tail also reads (e.g. a skip connection around
    the layer); with the whole graph as a GraphModule, its node of ``point`` and the frontier's
    nodes in it. None when the model cannot be traced with that module as a leaf (graph.trace,
    shared with capture and rf, cached per model)."""
    try:
        traced = trace(model, leaves=[point.module])
    except TraceError:
        return None
    # a copy: a GraphModule takes ownership of its graph, and the cached one holds no modules
    graph = torch.fx.Graph()
    copies: dict[Any, Any] = {}
    graph.output(graph.graph_copy(traced.graph, copies))
    hits = [copies[n] for n in traced.nodes if n.op == "call_module" and n.target == point.module
            and traced.call_index[n] == point.call]
    if not hits:
        return None
    start = hits[0]
    after: set[Any] = {start}
    for node in graph.nodes:  # topological order: a node after the layer reads one that is
        if node is not start and any(a in after for a in node.all_input_nodes):
            after.add(node)
    tail = torch.fx.Graph()
    env: dict[Any, Any] = {start: tail.placeholder("act")}
    frontier: list[Any] = []
    for node in graph.nodes:
        if node is start or node not in after:
            continue
        for a in node.all_input_nodes:
            if a not in env:
                env[a] = tail.placeholder(f"frontier_{len(frontier)}")
                frontier.append(a)
        env[node] = tail.node_copy(node, lambda a: env[a])
    outputs = [n for n in after if n.op == "output"]
    if not outputs:
        return None
    return torch.fx.GraphModule(model, tail), torch.fx.GraphModule(model, graph), start, frontier


class _Tail:
    """Runs the network from one layer's output on: a traced tail when possible (the layers
    before are never recomputed), else the full network with the layer's output replaced."""

    def __init__(self, model: nn.Module, x1: torch.Tensor, point: HookPoint):
        self.model, self.x1, self.point = model, x1, point
        self.gm: torch.fx.GraphModule | None = None
        built = _frontier_tail(model, point)
        if built is None:
            return
        gm, full, start, frontier = built
        interp = torch.fx.Interpreter(full, garbage_collect_values=False)
        with torch.inference_mode():
            ref = interp.run(x1)
        values = [interp.env[f] for f in frontier]
        act = interp.env[start]
        self.frontier = values
        self.gm = gm
        # Trust the tail only if it reproduces the network's output for a batch of two.
        try:
            with torch.inference_mode():
                got = self._run_tail(torch.cat([act, act]))
            if not (isinstance(ref, torch.Tensor) and torch.allclose(got, torch.cat([ref, ref]), rtol=1e-4, atol=1e-5)):
                self.gm = None
        except Exception:
            self.gm = None

    def _run_tail(self, acts: torch.Tensor) -> torch.Tensor:
        b = acts.shape[0]
        extra = [v.expand(b, *v.shape[1:]) if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == 1 else v for v in self.frontier]
        return self.gm(acts, *extra)  # type: ignore[misc]

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of replacement outputs ``acts`` (B, C, h, w) of the layer."""
        if self.gm is not None:
            return _check_logits(self._run_tail(acts))
        module = dict(self.model.named_modules())[self.point.module]
        calls = {"n": 0}

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> Any:
            calls["n"] += 1
            return acts if calls["n"] - 1 == self.point.call else None

        handle = module.register_forward_hook(hook)
        try:
            return _check_logits(self.model(self.x1.expand(acts.shape[0], *self.x1.shape[1:])))
        finally:
            handle.remove()


def ablationcam_weights(model: nn.Module, x1: torch.Tensor, targets: torch.Tensor, acts1: torch.Tensor, *, point: HookPoint,
                        batch_size: int = 32) -> torch.Tensor:
    """Ablation-CAM channel weights (K, C) of ONE image ``x1`` (1, 3, H, W) for its K ``targets``:
    (y - y_c) / y, y the target logit and y_c the logit with channel c of the layer's output
    ``acts1`` (1, C, h, w) set to zero. Only the network after the layer (at ``point``) runs for
    the ablated copies (see _Tail), once for all K classes; an all-zero channel changes nothing
    and is skipped (weight 0). pytorch-grad-cam 1.5 replaces a channel by min - 1e7 (cumulating
    within a batch) instead of zero when the layer's output has no zero: see docs/cam.md."""
    c = acts1.shape[1]
    weights = torch.zeros(len(targets), c, dtype=torch.float32, device=x1.device)
    with eval_mode(model), torch.inference_mode():
        tail = _Tail(model, x1, point)
        y = tail(acts1)[0, targets].float()[:, None]
        idx = acts1[0].flatten(1).ne(0).any(1).nonzero().flatten()
        for s in range(0, len(idx), batch_size):
            ch = idx[s:s + batch_size]
            batch = acts1.repeat(len(ch), 1, 1, 1)
            batch[torch.arange(len(ch)), ch] = 0
            yc = tail(batch)[:, targets].T.float()
            weights[:, ch] = (y - yc) / y
    return weights


# ---------------------------------------------------------------- one entry point


@dataclass
class Explanation:
    """Maps for a batch of (image, target) pairs. ``raw`` (N, H, W) float32 (see module doc),
    ``norm`` (N, H, W) float32 in [0, 1], ``logits`` (N, classes) of the clean images."""

    raw: np.ndarray
    norm: np.ndarray
    logits: np.ndarray


def _cam_map(fn: Callable[..., torch.Tensor], grad: bool, model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
             layers: Sequence[CamLayer]) -> tuple[torch.Tensor, torch.Tensor]:
    """A 'cam' method: one forward (and backward) pass, ``fn(acts, grads)`` per layer, fused."""
    logits, acts, grads = activations_and_grads(model, x, targets, [layer.point for layer in layers], grad=grad)
    return logits, fuse([fn(a, g) for a, g in zip(acts, grads)], (int(x.shape[-2]), int(x.shape[-1])))


def _image_groups(x: torch.Tensor) -> list[list[int]]:
    """Rows of ``x`` (N, ...) grouped by equal content, in order of first appearance (the pairs
    of one image explained for several classes)."""
    groups: dict[tuple[float, ...], list[list[int]]] = {}
    out: list[list[int]] = []
    flat = x.flatten(1)
    probe = flat[:, :: max(1, flat.shape[1] // 64)].tolist()  # a cheap key; equality decides
    for i, key in enumerate(map(tuple, probe)):
        for group in groups.setdefault(key, []):
            if torch.equal(flat[group[0]], flat[i]):
                group.append(i)
                break
        else:
            groups[key].append([i])
            out.append(groups[key][-1])
    return out


def _perturb_map(fn: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                 layers: Sequence[CamLayer], options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A 'perturb' method: channel weights ``fn(model, x1, targets, acts1, point=, **options)``
    per distinct image (its pairs' classes at once) and layer, the weighted activations fused."""
    logits, acts, _ = activations_and_grads(model, x, targets, [layer.point for layer in layers], grad=False)
    groups = _image_groups(x)
    cams = []
    for layer, a in zip(layers, acts):
        w = torch.empty(a.shape[:2], dtype=torch.float32, device=a.device)
        for rows in groups:
            i = rows[0]
            w[rows] = fn(model, x[i:i + 1], targets[rows], a[i:i + 1], point=layer.point, **options).float()
        cams.append(_weighted(w, a.float()))
    return logits, fuse(cams, (int(x.shape[-2]), int(x.shape[-1])))


def _map_once(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: Method, layers: Sequence[CamLayer],
              *, ig_steps: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, raw map (N, H, W)) of one pass of ``method`` on ``x``: its kind's driver around
    its function, given the options it lists."""
    given = {"layers": list(layers), "ig_steps": ig_steps, "batch_size": batch_size}
    options = {k: given[k] for k in method.options if k != "layers" or method.kind == "input"}
    fn = method.resolve()
    if method.kind == "cam":
        return _cam_map(fn, method.grad, model, x, targets, layers)
    if method.kind == "perturb":
        return _perturb_map(fn, model, x, targets, layers, options)
    return fn(model, x, targets, **options)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    *,
    method: str = "gradcam",
    layers: Sequence[CamLayer] | None = None,
    ig_steps: int = 50,
    smooth: int = 0,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 32,
) -> Explanation:
    """The ``method`` map of each (x[i], targets[i]) pair: ``x`` (N, 3, H, W) normalised input,
    ``targets`` N class indices. CAM methods use ``layers`` (default: default_layer(model)).

    ``smooth`` > 0: SmoothGrad (Smilkov et al. 2017): the raw map averaged over ``smooth`` copies
    of each image with Gaussian noise of standard deviation ``noise`` x (its max - min), drawn
    from a generator seeded with ``seed``. ``batch_size`` bounds the extra forward passes of
    Score-CAM, Ablation-CAM and integrated gradients."""
    spec = METHODS[resolve_methods(method)[0]] if method not in METHODS else METHODS[method]
    if smooth < 0:
        raise UsageError(f"--smooth must be 0 (off) or a number of noisy samples, not {smooth}")
    if smooth and not noise > 0:
        raise UsageError(f"--noise must be positive with --smooth, not {noise}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    device = device_of(model)
    x = x.to(device=device, dtype=torch.float32)
    t = torch.as_tensor(list(targets) if not isinstance(targets, torch.Tensor) else targets, dtype=torch.long, device=device).flatten()
    if t.numel() != x.shape[0]:
        raise ValueError(f"{t.numel()} targets for {x.shape[0]} images")
    if spec.uses_layers:
        layers = list(layers) if layers else [default_layer(model)]
    if not smooth:
        logits, raw = _map_once(model, x, t, spec, layers or [], ig_steps=ig_steps, batch_size=batch_size)
    else:
        logits = predict(model, x)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1))[:, None, None, None]
        raw = torch.zeros(x.shape[0], *x.shape[-2:], device=device)
        for _ in range(smooth):
            eps = torch.randn(x.shape, generator=gen).to(device) * (noise * span)
            raw += _map_once(model, x + eps, t, spec, layers or [], ig_steps=ig_steps, batch_size=batch_size)[1]
        raw /= smooth
    return Explanation(raw=raw.float().cpu().numpy(), norm=minmax(raw.float()).cpu().numpy(), logits=logits.float().cpu().numpy())


def peak(m: np.ndarray) -> tuple[int, int]:
    """(y, x) of the maximum of an (H, W) map (first in row-major order on ties)."""
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(y), int(x)


def mass_box(m: np.ndarray, *, mass: float = 0.2) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), end-exclusive: the bounding box of the highest-valued pixels of a
    non-negative (H, W) map that together hold ``mass`` of its total (the whole map when it sums
    to zero)."""
    a = np.clip(np.asarray(m, dtype=np.float64), 0, None)
    total = a.sum()
    if total <= 0:
        return (0, 0, a.shape[0], a.shape[1])
    flat = a.ravel()
    order = np.argsort(-flat, kind="stable")
    k = int(np.searchsorted(np.cumsum(flat[order]), mass * total)) + 1
    ys, xs = np.unravel_index(order[:k], a.shape)
    return (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)


__all__ = [
    "METHODS", "CamLayer", "Explanation", "Method", "default_layer", "explain", "mass_box", "peak",
    "check_spatial", "predict", "register", "resolve_layers", "resolve_methods",
]
