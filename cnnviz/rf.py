"""Receptive-field arithmetic, computed from the model's own torch.fx graph.

Every tensor that still has spatial axes carries, per axis (height, width), three integers:
``lo`` and ``hi``, the first and last input pixel (0-based, pixel centres at integers, padding
counted as pixels outside 0..size-1) that output unit 0 sees, and ``jump``, the input-pixel
distance between neighbouring units. Unit ``i`` then sees ``[lo + i*jump, hi + i*jump]``, so

* receptive field ``rf = hi - lo + 1`` (the theoretical field, dilation included),
* ``center0 = (lo + hi) / 2`` (a half-integer after even kernels/strides, e.g. VGG's 2x2 pools).

The graph (traced by cnnviz.graph, whose op table classifies every node; for a torch.export
program or converted TorchScript archive, its own ATen graph) is run once on a zero
input (on the model's device: a 'meta' model costs nothing) so every node's real output shape is
known, and fields are propagated node by node, one small function per op kind (``_PROPAGATE``):

* Conv2d / max / avg pooling (module or function; padding, dilation, ``padding='same'``):
  ``lo -= pad*jump``, ``hi += ((k-1)*dil - pad)*jump``, ``jump *= stride``;
* adaptive pooling from n to o units: exact when o divides n (a pool with kernel = stride = n/o;
  o = 1, global pooling, sees the union of every input unit's field); other ratios give windows of
  unequal size and spacing, which no (rf, jump, center0) triple describes: refused;
* pointwise work (activations, batch/group/layer norm, dropout, Linear on the channel axis,
  scalar arithmetic, dtype/contiguous, channel reshapes such as ShuffleNet's shuffle, permutes):
  unchanged. Normalisation statistics are ignored, as in every published table;
* merges (residual ``+``, ``*``, ``torch.cat`` on channels): the union of the inputs' windows,
  after checking the branches are aligned (same jump and same center0); otherwise refused;
* a globally pooled 1x1 tensor broadcast back over a map (squeeze-and-excitation gates) makes
  every later unit see the whole input: no local field exists there, refused; with
  ``ignore_gates=True`` the gate counts as a per-channel scale and the conv path's field is given;
* anything else (flatten of the spatial axes, upsampling, attention, unknown functions) ends the
  spatial structure; a conv layer downstream of it has no field.

Nothing is raised while propagating: a node that cannot be analysed carries the reason, and
:func:`receptive_fields` raises :class:`ModelError` with it when a requested layer depends on it.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .detect import is_detector
from .errors import ModelError, RFError, TraceError
from .graph import Kind, op_name, trace
from .layers import ConvLayer, conv_layers, output_shapes
from .util import device_of, eval_mode, first_line, input_channels, layer_names, pair, parse_size

__all__ = ["Field", "Step", "RFError", "catalog", "layer_fields", "receptive_fields", "trace_fields", "fmt_value"]


@dataclass(frozen=True)
class Field:
    """Receptive field of the units of one tensor. Pairs are (height, width) in input pixels.

    ``lo``/``hi``: first/last input pixel seen by unit (0, 0) (may lie outside the image, in the
    padding); ``jump``: pixels between neighbouring units; ``size``: the tensor's (h, w)."""

    lo: tuple[int, int]
    hi: tuple[int, int]
    jump: tuple[int, int]
    size: tuple[int, int]

    @property
    def rf(self) -> tuple[int, int]:
        """Side lengths (h, w) of the receptive field in input pixels."""
        return (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)

    @property
    def center0(self) -> tuple[float, float]:
        """Input coordinate (y, x) of the centre of unit (0, 0)'s field; unit i at center0 + i*jump."""
        return ((self.lo[0] + self.hi[0]) / 2, (self.lo[1] + self.hi[1]) / 2)

    def center(self, unit: tuple[int, int]) -> tuple[float, float]:
        """Input coordinate (y, x) of the centre of unit ``(i, j)``'s field."""
        c = self.center0
        return (c[0] + unit[0] * self.jump[0], c[1] + unit[1] * self.jump[1])

    def box(self, unit: tuple[int, int]) -> tuple[int, int, int, int]:
        """Input pixels (y0, x0, y1, x1), inclusive, seen by unit ``(i, j)``; may exceed the image."""
        i, j = unit
        return (self.lo[0] + i * self.jump[0], self.lo[1] + j * self.jump[1],
                self.hi[0] + i * self.jump[0], self.hi[1] + j * self.jump[1])

    def nearest_unit(self, yx: tuple[float, float]) -> tuple[int, int]:
        """The unit whose field is centred closest to input pixel (y, x), within the map."""
        c = self.center0
        return tuple(  # type: ignore[return-value]
            int(min(max(math.floor((p - c[a]) / self.jump[a] + 0.5), 0), self.size[a] - 1)) for a, p in enumerate(yx)
        )

    def as_dict(self) -> dict[str, Any]:
        """{'receptive_field', 'jump', 'center0'}: a scalar when both axes agree, else [h, w];
        center0 is an int when integral, else a float (e.g. -0.5)."""
        return {"receptive_field": fmt_value(self.rf), "jump": fmt_value(self.jump), "center0": fmt_value(self.center0)}


def fmt_value(pair: Sequence[float]) -> int | float | list[int | float]:
    """(a, b) -> a when equal, else [a, b]; integral floats become ints."""
    vals = [int(v) if float(v).is_integer() else float(v) for v in pair]
    return vals[0] if vals[0] == vals[1] else vals


@dataclass(frozen=True)
class Step:
    """One node of the traced graph with spatial output: ``name`` (module path or node name),
    ``kind`` ('conv', 'pool', 'adaptive_pool', 'merge', 'input'), and its field (None + ``reason``
    when it cannot be analysed)."""

    name: str
    kind: str
    field: Field | None
    reason: str = ""


# ---------------------------------------------------------------- values carried along the graph


@dataclass(frozen=True)
class _Spatial:
    dims: tuple[int, int]  # positions of the (h, w) axes in the tensor
    ndim: int  # the tensor's number of axes
    field: Field
    # True after nearest upsampling: the field contains each unit's window without being each
    # unit's exact window, so a merge with a branch of another centre is their union (FPN's add)
    hull: bool = False


@dataclass(frozen=True)
class _Unknown:
    reason: str


class _Const:
    """Does not depend on the input (parameters, constants, shapes)."""


_CONST = _Const()

def _spatial_args(args: Sequence[Any]) -> list[Any]:
    return [a for a in args if isinstance(a, (_Spatial, _Unknown))]


def _window(src: _Spatial, out_shape: Sequence[int], kernel: Any, stride: Any, padding: Any, dilation: Any) -> _Spatial:
    k, d = pair(kernel), pair(dilation)
    s = pair(kernel if stride is None or stride == () or stride == [] else stride)  # ATen's default stride=[]
    if isinstance(padding, str):
        if padding == "valid":
            p = (0, 0)
        else:  # 'same': PyTorch pads d*(k-1) in total, the smaller half first
            p = tuple(d[a] * (k[a] - 1) // 2 for a in range(2))  # type: ignore[assignment]
    else:
        p = pair(padding)
    f = src.field
    lo = tuple(f.lo[a] - p[a] * f.jump[a] for a in range(2))
    hi = tuple(f.hi[a] + ((k[a] - 1) * d[a] - p[a]) * f.jump[a] for a in range(2))
    jump = tuple(f.jump[a] * s[a] for a in range(2))
    size = tuple(int(out_shape[src.dims[a]]) for a in range(2))
    return _Spatial(src.dims, src.ndim, Field(lo, hi, jump, size), src.hull)  # type: ignore[arg-type]


def _adaptive(src: _Spatial, out_shape: Sequence[int], where: str) -> _Spatial | _Unknown:
    n = src.field.size
    o = tuple(int(out_shape[src.dims[a]]) for a in range(2))
    if any(n[a] % o[a] for a in range(2)):
        return _Unknown(
            f"adaptive pooling at {where} maps {n[0]}x{n[1]} units to {o[0]}x{o[1]}: windows of unequal size and "
            f"spacing have no single receptive field (use an input size that makes {n[0]}x{n[1]} a multiple)"
        )
    k = tuple(n[a] // o[a] for a in range(2))
    return _window(src, out_shape, k, k, 0, 1)


def _merge(vals: Sequence[Any], out_shape: Sequence[int], where: str, *, ignore_gates: bool = False) -> Any:
    """Union of the windows of aligned inputs (residual add, gating mul, concatenation).
    ``ignore_gates``: a globally pooled 1x1 operand broadcast over the map (a squeeze-and-excitation
    gate) is treated as a per-channel scale, not as part of the window."""
    unknown = [v for v in vals if isinstance(v, _Unknown)]
    if unknown:
        return unknown[0]
    sp = [v for v in vals if isinstance(v, _Spatial)]
    if not sp:
        return _CONST
    nd = len(out_shape)
    # Broadcasting right-aligns shapes: re-express each input's spatial axes in the output's positions.
    placed = [(tuple(d + nd - v.ndim for d in v.dims), v.field) for v in sp]
    gates = [p for p in placed if p[1].size == (1, 1) and any(int(out_shape[d]) > 1 for d in p[0])]
    if gates and ignore_gates and len(gates) < len(placed):
        placed = [p for p in placed if p not in gates]
    for dims, f in placed:
        if f.size == (1, 1) and any(int(out_shape[d]) > 1 for d in dims):
            return _Unknown(
                f"at {where} a globally pooled 1x1 tensor is broadcast over the map (a squeeze-and-excitation gate, "
                f"or an image-pooling branch such as ASPP's): "
                f"every later unit sees the whole input, so it has no local receptive field (ignore_gates / "
                f"--ignore-gates gives the conv path's local field)"
            )
    dims, fa = placed[0]
    hull = any(v.hull for v in sp)
    for other_dims, fb in placed[1:]:
        if other_dims != dims or fa.jump != fb.jump or (fa.center0 != fb.center0 and not hull) or fa.size != fb.size:
            return _Unknown(
                f"branches merged at {where} are not aligned (jump {fmt_value(fa.jump)} vs {fmt_value(fb.jump)}, "
                f"center0 {fmt_value(fa.center0)} vs {fmt_value(fb.center0)}): unit i of one branch does not sit "
                f"over unit i of the other"
            )
        fa = Field(
            tuple(min(fa.lo[a], fb.lo[a]) for a in range(2)),  # type: ignore[arg-type]
            tuple(max(fa.hi[a], fb.hi[a]) for a in range(2)),  # type: ignore[arg-type]
            fa.jump, fa.size,
        )
    return _Spatial(dims, nd, fa, hull)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the propagation: one small function per op kind


@dataclass(frozen=True)
class _Op:
    """One call node being propagated: ``where`` is the module path (call_module) or node name;
    ``args``/``kwargs``/``out`` are the concrete values of the zero-input run, ``vargs``/``vkwargs``
    the arguments' values along the graph (_Spatial, _Unknown, _CONST, or lists of them)."""

    node: Any
    where: str
    module: nn.Module | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    vargs: tuple[Any, ...]
    vkwargs: dict[str, Any]
    out: Any

    @property
    def src(self) -> Any:
        return self.vargs[0] if self.vargs else _CONST

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Argument ``i`` of the call, given positionally or as ``name=``."""
        return self.args[i] if len(self.args) > i else self.kwargs.get(name, default)


def _depends_on_input(op: _Op) -> bool:
    vals = list(op.vargs) + list(op.vkwargs.values())
    return bool(_spatial_args(vals)) or any(isinstance(v, (list, tuple)) and _spatial_args(v) for v in vals)


def _conv(a: _Analysis, op: _Op) -> Any:
    m = op.module
    val = a.windowed(op.src, op.out, m.kernel_size, m.stride, m.padding, m.dilation, op.where, "conv")  # type: ignore[union-attr]
    prev = a.convs.get(op.where)
    here = val.field if isinstance(val, _Spatial) else val.reason if isinstance(val, _Unknown) else "no input"
    if prev is None:
        a.convs[op.where] = here
    elif prev != here:  # a shared conv applied at two depths
        a.convs[op.where] = f"{op.where} is applied more than once with different receptive fields"
    return val


# avg_pool2d's 5th argument is ceil_mode, not dilation
_DILATED_POOLS = {F.max_pool2d, torch.max_pool2d, torch.ops.aten.max_pool2d, torch.ops.aten.max_pool2d_with_indices}


def _pool(a: _Analysis, op: _Op) -> Any:
    m = op.module
    if m is not None:
        geometry = (m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1))
    else:
        fn = op.node.target
        dil = op.arg(4, "dilation", 1) if getattr(fn, "overloadpacket", fn) in _DILATED_POOLS else 1
        geometry = (op.arg(1, "kernel_size"), op.arg(2, "stride"), op.arg(3, "padding", 0), dil)
    return a.windowed(op.src, op.out, *geometry, op.where, "pool")


def _adaptive_pool(a: _Analysis, op: _Op) -> Any:
    return a.adaptive_pool(op.src, op.out, op.where)


def _pointwise(a: _Analysis, op: _Op) -> Any:
    src, out = op.src, op.out
    if isinstance(src, _Spatial) and isinstance(out, torch.Tensor):
        size = tuple(int(out.shape[d]) for d in src.dims) if out.dim() > max(src.dims) else None
        if size != src.field.size:
            return _Unknown(f"{op.where} changes the spatial size")
    return src


def _linear(a: _Analysis, op: _Op) -> Any:
    src = op.src
    if isinstance(src, _Spatial) and src.ndim - 1 in src.dims:
        return _Unknown(f"Linear {op.where} mixes a spatial axis")
    return _pointwise(a, op)


def _merge_op(a: _Analysis, op: _Op) -> Any:
    return a.merge(op.vargs, op.out, op.where)


def _cat(a: _Analysis, op: _Op) -> Any:
    items, dim = op.vargs[0], op.arg(1, "dim", 0)
    sp = [v for v in items if isinstance(v, _Spatial)]
    if sp and int(dim) % op.out.dim() in sp[0].dims:
        return _Unknown(f"torch.cat along a spatial axis at node {op.where}")
    return a.merge(items, op.out, op.where)


def _reshape(a: _Analysis, op: _Op) -> Any:
    src, out = op.src, op.out
    if not isinstance(src, _Spatial):
        return src
    nd = src.ndim
    h, w = src.field.size
    trailing = src.dims == (nd - 2, nd - 1)
    if trailing and out.dim() >= 2 and tuple(out.shape[-2:]) == (h, w):
        # only the leading (batch/channel) axes were regrouped: every (h, w) slice stays whole
        return _Spatial((out.dim() - 2, out.dim() - 1), out.dim(), src.field)
    return _Unknown(f"the spatial axes are flattened or reshaped at node {op.where}")


def _permuted(src: Any, perm: Sequence[int]) -> Any:
    if not isinstance(src, _Spatial):
        return src
    nd = len(perm)
    order = [int(p) % nd for p in perm]
    return _Spatial((order.index(src.dims[0]), order.index(src.dims[1])), nd, src.field)


def _permute(a: _Analysis, op: _Op) -> Any:
    if op.module is not None:  # torchvision.ops.misc.Permute
        return _permuted(op.src, list(op.module.dims))
    args = op.args  # torch.permute(x, dims), x.permute(dims) or x.permute(*dims)
    return _permuted(op.src, args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:])


def _transpose(a: _Analysis, op: _Op) -> Any:
    nd = op.out.dim()
    perm = list(range(nd))
    i, j = int(op.arg(1, "dim0")) % nd, int(op.arg(2, "dim1")) % nd
    perm[i], perm[j] = perm[j], perm[i]
    return _permuted(op.src, perm)


def _reduce(a: _Analysis, op: _Op) -> Any:
    src, out = op.src, op.out
    if not isinstance(src, _Spatial):
        return src
    nd = src.ndim
    dim, keep = op.arg(1, "dim"), bool(op.arg(2, "keepdim", False))
    dims = set(range(nd)) if dim is None else {int(d) % nd for d in (dim if isinstance(dim, (tuple, list)) else [dim])}
    hit = dims & set(src.dims)
    if not hit:
        shift = [sum(1 for d in dims if d < s) for s in src.dims] if not keep else [0, 0]
        return _Spatial((src.dims[0] - shift[0], src.dims[1] - shift[1]), out.dim(), src.field)
    if hit == set(src.dims) and keep:
        return a.adaptive_pool(src, out, op.where)
    return _Unknown(f"the spatial axes are reduced at node {op.where}")


def _getitem(a: _Analysis, op: _Op) -> Any:
    src, index, where = op.src, op.args[1], op.where
    if isinstance(src, (list, tuple)):
        return src[index] if isinstance(index, int) else _Unknown(f"cannot analyse slicing at node {where}")
    if not isinstance(src, _Spatial):
        return src
    idx = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis or i is None for i in idx):
        return _Unknown(f"cannot analyse indexing at node {where}")
    new, pos = [], 0
    for d in range(src.ndim):
        i = idx[d] if d < len(idx) else slice(None)
        if d in src.dims:
            if i != slice(None):
                return _Unknown(f"the spatial axes are indexed at node {where}")
            new.append(pos)
        if not isinstance(i, int):
            pos += 1
    return _Spatial((new[0], new[1]), op.out.dim(), src.field)


def _split(a: _Analysis, op: _Op) -> Any:
    src, n = op.src, len(op.out)
    if isinstance(src, _Spatial) and int(op.arg(2, "dim", 0)) % src.ndim in src.dims:
        return [_Unknown(f"a spatial axis is split at node {op.where}")] * n
    return [src] * n


def _const(a: _Analysis, op: _Op) -> Any:
    return _CONST


def _upsample_nearest(a: _Analysis, op: _Op) -> Any:
    """Nearest upsampling by an integer factor s per axis (FPN's top-down path): unit j reads unit
    floor(j / s), so unit j's window is unit floor(j/s)'s, [lo + floor(j/s)*J, hi + floor(j/s)*J]
    with J the input's jump. No single (lo, hi) at jump J/s gives every unit's exact window (units
    j = s*i + r, r > 0, share unit i's window); the field given is the tightest one that contains
    every unit's window: lo - (s-1)*J/s .. hi at jump J/s (exact for r = 0, ``s - 1`` units of J/s
    wider than the true window otherwise). Downstream (FPN's add, its 3x3 output conv, the heads)
    the field stays a bound containing every unit's window, a few jumps wider than the true one
    (tests/test_detect.py measures both). A 1x1 input, other modes and factors: _upsample."""
    src, out = op.src, op.out
    if not isinstance(src, _Spatial) or not isinstance(out, torch.Tensor) or src.field.size == (1, 1):
        return _upsample(op)
    mode = op.module.mode if isinstance(op.module, nn.Upsample) else op.arg(3, "mode", "nearest")
    f = src.field
    o = tuple(int(out.shape[src.dims[a]]) for a in range(2))
    if mode != "nearest" or any(o[a] % f.size[a] or (f.jump[a] * f.size[a]) % o[a] for a in range(2)):
        return _upsample(op)  # other modes, other factors: see _upsample
    s = tuple(o[a] // f.size[a] for a in range(2))
    jump = tuple(f.jump[a] // s[a] for a in range(2))
    lo = tuple(f.lo[a] - (s[a] - 1) * jump[a] for a in range(2))
    return a.record(op.where, "upsample", _Spatial(src.dims, src.ndim, Field(lo, f.hi, jump, o), hull=True))  # type: ignore[arg-type]


# resizing ops (F.interpolate, nn.Upsample, their ATen forms): what segmentation heads end in
_UPSAMPLES = {"interpolate", "upsample", "upsample_bilinear2d", "upsample_nearest2d", "upsample_bicubic2d",
              "upsamplingbilinear2d", "upsamplingnearest2d"}


def _upsample(op: _Op) -> Any:
    """A resize. Of a 1x1 tensor (a global pooling's output, ASPP's image-pooling branch) it is a
    broadcast: every output unit sees what the pooled unit saw, the whole input, and the value is
    kept as a 1x1 field so a merge reports it as such. Of a map: each unit mixes its nearest input
    units, whose windows are not evenly spaced for non-integer scales (33 -> 65 units) and of
    unequal extent for every scale: no (rf, jump, center0) triple describes them, refused."""
    src = op.src
    if not isinstance(src, _Spatial):
        return src
    out = op.out
    if src.field.size == (1, 1):
        return _Spatial(src.dims, src.ndim, src.field)
    size = tuple(int(out.shape[d]) for d in src.dims) if isinstance(out, torch.Tensor) else ("?", "?")
    n = src.field.size
    return _Unknown(f"the resize at {op.where} maps {n[0]}x{n[1]} units to {size[0]}x{size[1]}: each output unit mixes its nearest "
                    "input units, whose windows are unevenly spaced, so no single receptive field describes them")


_PROPAGATE: dict[Kind, Callable[[_Analysis, _Op], Any]] = {
    Kind.CONV: _conv,
    Kind.POOL: _pool,
    Kind.ADAPTIVE_POOL: _adaptive_pool,
    # pointwise work keeps the field; normalisation statistics are ignored, as in published tables
    Kind.ACTIVATION: _pointwise,
    Kind.NORM: _pointwise,
    Kind.DROPOUT: _pointwise,
    Kind.IDENTITY: _pointwise,
    Kind.ELEMENTWISE: _pointwise,
    Kind.ADD: _merge_op,
    Kind.GATE: _merge_op,
    Kind.ARITH: _merge_op,
    Kind.CAT: _cat,
    Kind.RESHAPE: _reshape,
    Kind.PERMUTE: _permute,
    Kind.TRANSPOSE: _transpose,
    Kind.REDUCE: _reduce,
    Kind.GETITEM: _getitem,
    Kind.FIRST: _getitem,
    Kind.SPLIT: _split,
    Kind.LINEAR: _linear,
    Kind.SHAPE: _const,
    Kind.UPSAMPLE: _upsample_nearest,
}


# kinds whose ops may return (main output, extras...): max pooling with indices, ATen's batch norm
_MAIN_FIRST = frozenset({Kind.POOL, Kind.ADAPTIVE_POOL, Kind.NORM, Kind.DROPOUT})


class _Analysis:
    """Runs the traced graph once on a zero input and records a value (field / unknown / const)
    per node, found by the node's kind in _PROPAGATE."""

    def __init__(self, model: nn.Module, size: tuple[int, int], *, ignore_gates: bool = False):
        self.model = model
        self.size = size
        self.ignore_gates = ignore_gates
        try:
            self.traced = trace(model)
        except TraceError as exc:
            raise RFError(f"cannot analyse receptive fields: {exc}") from None
        self.modules = dict(model.named_modules())
        self.steps: list[Step] = []
        self.convs: dict[str, Field | str] = {}
        self.outputs: Any = None
        self._run()

    def _run(self) -> None:
        device = device_of(self.model)
        env: dict[Any, Any] = {}  # node -> concrete output (freed after its last use)
        vals: dict[Any, Any] = {}  # node -> value along the graph
        nodes = self.traced.nodes
        last_use: dict[Any, int] = {}
        for k, node in enumerate(nodes):
            for inp in node.all_input_nodes:
                last_use[inp] = k
        node: Any = None
        seen_input = False
        try:
            with eval_mode(self.model), torch.inference_mode():
                for k, node in enumerate(nodes):
                    args = torch.fx.node.map_arg(node.args, lambda n: env[n])
                    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
                    if node.op == "placeholder" and not seen_input:
                        seen_input = True
                        out = torch.zeros(1, input_channels(self.model), *self.size, device=device)
                        val: Any = _Spatial((2, 3), 4, Field((0, 0), (0, 0), (1, 1), self.size))
                        self.steps.append(Step("input", "input", val.field))
                    elif node.op == "placeholder":  # further forward() arguments: their defaults
                        if not node.args:
                            raise RFError(f"cannot analyse receptive fields: forward() takes a second input {node.name!r}")
                        out, val = node.args[0], _CONST
                    elif node.op == "get_attr":
                        out, val = self._attr(node.target), _CONST
                    elif node.op in ("call_module", "call_function", "call_method"):
                        if node.op == "call_module":
                            out = self.modules[node.target](*args, **kwargs)
                        elif node.op == "call_function":
                            out = node.target(*args, **kwargs)
                        else:
                            out = getattr(args[0], node.target)(*args[1:], **kwargs)
                        vargs = torch.fx.node.map_arg(node.args, lambda n: vals[n])
                        vkwargs = torch.fx.node.map_arg(node.kwargs, lambda n: vals[n])
                        val = self._propagate(node, args, kwargs, vargs, vkwargs, out)
                    else:  # output: what the graph returns (a detector's backbone: its pyramid levels)
                        self.outputs = torch.fx.node.map_arg(node.args[0], lambda n: vals[n])
                        break
                    env[node] = out
                    vals[node] = val
                    for inp in node.all_input_nodes:  # free intermediate outputs (real weights: real memory)
                        if last_use.get(inp) == k:
                            env.pop(inp, None)
        except RFError:
            raise
        except (RuntimeError, AssertionError) as exc:  # AssertionError: an exported program's shape guards
            raise RFError(f"input size {self.size[0]}x{self.size[1]} is not accepted by this model ({first_line(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - any failure of an exotic module: one line, no wrong numbers
            where = getattr(node, "name", "?")
            raise RFError(f"cannot analyse receptive fields: running the traced graph failed at node {where} ({first_line(exc)})") from None

    def _propagate(self, node: Any, args: Any, kwargs: Any, vargs: Any, vkwargs: Any, out: Any) -> Any:
        module = self.modules[node.target] if node.op == "call_module" else None
        where = str(node.target) if module is not None else node.name
        op = _Op(node, where, module, tuple(args), dict(kwargs), tuple(vargs), dict(vkwargs), out)
        kind = self.traced.kinds[node]
        if kind is not Kind.CONV and not _depends_on_input(op):  # a conv records that it got no input
            return _CONST
        step = _PROPAGATE.get(kind)  # type: ignore[arg-type]
        if step is not None and kind in _MAIN_FIRST and isinstance(out, (tuple, list)):
            # (map, indices) of a pool, (map, mean, invstd) of an ATen batch norm: the map is
            # output 0, the rest has no field of its own
            rest = _Unknown(f"cannot analyse the secondary outputs of {where}")
            return [step(self, replace(op, out=out[0])), *[rest] * (len(out) - 1)]
        if step is not None:
            return step(self, op)
        if _UPSAMPLES & {op_name(node).lower(), type(module).__name__.lower()}:
            return _upsample(op)
        if module is not None:
            return _Unknown(f"cannot analyse module {where} ({type(module).__name__})")
        if node.op == "call_method":
            return _Unknown(f"cannot analyse method .{node.target}() at node {where}")
        return _Unknown(f"cannot analyse {op_name(node)} at node {where}")

    def _attr(self, target: str) -> Any:
        obj: Any = self.model
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def record(self, name: str, kind: str, val: Any) -> Any:
        """Add a Step for a node with spatial output (conv, pool, adaptive pool, merge)."""
        if isinstance(val, _Spatial):
            self.steps.append(Step(name, kind, val.field))
        elif isinstance(val, _Unknown):
            self.steps.append(Step(name, kind, None, val.reason))
        return val

    def windowed(self, src: Any, out: Any, k: Any, s: Any, p: Any, d: Any, name: str, kind: str) -> Any:
        """A sliding window (conv or pool) over ``src``; recorded as a Step."""
        if isinstance(src, _Spatial) and isinstance(out, torch.Tensor) and out.dim() >= 3:
            val: Any = _window(src, out.shape, k, s, p, d)
        elif isinstance(src, _Unknown):
            val = src
        elif isinstance(src, _Spatial):
            val = _Unknown(f"{name} applied to a tensor without two spatial axes")
        else:
            return _CONST
        return self.record(name, kind, val)

    def adaptive_pool(self, src: Any, out: Any, name: str) -> Any:
        if isinstance(src, _Spatial):
            return self.record(name, "adaptive_pool", _adaptive(src, out.shape, name))
        return src if isinstance(src, _Unknown) else _CONST

    def merge(self, vargs: Sequence[Any], out: Any, where: str) -> Any:
        """Union of aligned inputs (see _merge); a Step when two fields meet or the merge fails."""
        val = _merge(list(vargs), out.shape if isinstance(out, torch.Tensor) else (), where,
                     ignore_gates=self.ignore_gates)
        if isinstance(val, _Spatial) and sum(isinstance(v, _Spatial) for v in vargs) > 1:
            self.record(where, "merge", val)
        elif isinstance(val, _Unknown) and not any(isinstance(v, _Unknown) for v in vargs):
            self.record(where, "merge", val)
        return val


@dataclass(frozen=True)
class _Fields:
    """What an analysis found (no reference to the model, so the cache keeps no model alive)."""

    steps: tuple[Step, ...]
    convs: dict[str, Field | str]
    outputs: Any = None  # the values the graph returns (a detector backbone's pyramid levels)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[Any, _Fields]]" = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple[Any, ...]:
    """What the analysis depends on besides the input size: module names, types and geometry (a
    model whose layers are swapped after a first analysis is analysed again)."""
    return tuple(
        (n, type(m), getattr(m, "kernel_size", None), getattr(m, "stride", None), getattr(m, "padding", None),
         getattr(m, "dilation", None), getattr(m, "output_size", None))
        for n, m in model.named_modules()
    )


def _analysis(model: nn.Module, size: tuple[int, int], ignore_gates: bool = False) -> _Fields:
    per = _CACHE.setdefault(model, {})
    key = (size, bool(ignore_gates), _signature(model))
    if key not in per:
        if len(per) > 8:
            per.clear()
        a = _Analysis(model, size, ignore_gates=bool(ignore_gates))
        per[key] = _Fields(tuple(a.steps), a.convs, a.outputs)
    return per[key]


def _detector_catalog(model: nn.Module, layers: list[ConvLayer], hw: tuple[int, int], ignore_gates: bool) -> list[ConvLayer]:
    """catalog() of a detector: each row holds the first call (a shared head: the finest pyramid
    level), ``levels`` every call's level, shape and field."""
    calls = detector_fields(model, size=hw, ignore_gates=ignore_gates)
    for layer in layers:
        got = calls.get(layer.name, [])
        if got:
            layer.output_shape = got[0].shape
            if isinstance(got[0].field, Field):
                d = got[0].field.as_dict()
                layer.receptive_field, layer.jump, layer.center0 = d["receptive_field"], d["jump"], d["center0"]
        if len(got) > 1:
            layer.levels = [{"level": c.level, "output_shape": list(c.shape),
                             **({k: v for k, v in c.field.as_dict().items() if k in ("receptive_field", "jump", "center0")}
                                if isinstance(c.field, Field) else {"receptive_field": None, "why": c.field})}
                            for c in got]
    return layers


def layer_fields(
    model: nn.Module, *, size: str | int | Sequence[int] = 224, ignore_gates: bool = False
) -> dict[str, Field | str]:
    """{conv module name: Field, or the reason it has none} for every Conv2d the forward pass calls,
    for an input of ``size`` (224, '224x320' or (H, W)). Raises RFError only if the model cannot be
    traced or run at all. ``ignore_gates``: treat squeeze-and-excitation gates as per-channel scales
    and report the conv path's local field (in theory every unit after a gate sees the whole input).
    A detector (cnnviz.detect.is_detector): see detector_fields; a head shared by pyramid levels
    gives the reason it has no single field."""
    if is_detector(model):
        return {n: detector_summary(c) for n, c in detector_fields(model, size=size, ignore_gates=ignore_gates).items()}
    return dict(_analysis(model, parse_size(size), ignore_gates).convs)


def receptive_fields(
    model: nn.Module,
    *,
    size: str | int | Sequence[int] = 224,
    layers: Sequence[Any] | None = None,
    ignore_gates: bool = False,
) -> dict[str, Field]:
    """{conv name: Field} for ``layers`` (ConvLayers or names; default every conv). Raises RFError
    naming the first layer whose field cannot be computed, with the reason."""
    fields = layer_fields(model, size=size, ignore_gates=ignore_gates)
    names = layer_names(layers) if layers is not None else list(fields)
    out = {}
    for n in names:
        f = fields.get(n, f"{n} does not run in the forward pass")
        if isinstance(f, str):
            raise RFError(f"cannot compute the receptive field of {n}: {f}")
        out[n] = f
    return out


def trace_fields(model: nn.Module, *, size: str | int | Sequence[int] = 224, ignore_gates: bool = False) -> list[Step]:
    """Every node with spatial output in execution order (input, convs, pools, merges, adaptive
    pools), with its field or the reason it has none."""
    return list(_analysis(model, parse_size(size), ignore_gates).steps)


def catalog(model: nn.Module, *, size: str | int | Sequence[int] = 224, ignore_gates: bool = False) -> list[ConvLayer]:
    """The conv layers (cnnviz.layers.conv_layers) with ``output_shape`` and the receptive field
    (``receptive_field``, ``jump``, ``center0``) filled in for an input of ``size`` (see
    cnnviz.util.parse_size). Layers whose field cannot be computed keep None there
    (:func:`layer_fields` says why; ``ignore_gates`` as there)."""
    hw = parse_size(size)
    layers = conv_layers(model)
    if is_detector(model):
        return _detector_catalog(model, layers, hw, ignore_gates)
    for layer, shape in zip(layers, output_shapes(model, layers, size=hw)):
        layer.output_shape = shape
    try:
        fields = layer_fields(model, size=hw, ignore_gates=ignore_gates)
    except RFError:
        fields = {}
    for layer in layers:
        f = fields.get(layer.name)
        if f is not None and not isinstance(f, str):
            d = f.as_dict()
            layer.receptive_field, layer.jump, layer.center0 = d["receptive_field"], d["jump"], d["center0"]
    return layers


# ---------------------------------------------------------------- detectors: backbone, pyramid, shared heads


@dataclass(frozen=True)
class LevelField:
    """One call of a detector's conv: the pyramid ``level`` it ran on (the backbone output's key;
    'roi' for heads on RoIAlign crops; '' for the backbone's own convs), its output ``shape``
    (C, h, w) and its field, or the reason it has none."""

    level: str
    shape: tuple[int, int, int]
    field: Field | str


def detector_fields(model: nn.Module, *, size: str | int | Sequence[int] = 224,
                    ignore_gates: bool = False) -> dict[str, list[LevelField]]:
    """{conv name: one LevelField per call} of a torchvision-style detector (cnnviz.detect) fed an
    input of ``size`` as its convs see it (after the model's resize and padding).

    The backbone (body + FPN) is one traced graph: its fields come from the same propagation as a
    classifier's, FPN's nearest upsampling included (see _upsample). The heads are not traceable
    (they loop over pyramid levels and select boxes by value): the detector runs once on a zero
    input (on 'meta' that costs nothing; it stops where boxes are selected) and each head conv's
    field is its input level's field through the convs before it, per call: a head shared across
    levels has one entry per level. Heads on RoIAlign crops (Mask/Keypoint R-CNN) see a box's
    crop, not the image grid: no field."""
    from .detect import FedTransform, original_transform

    hw = parse_size(size)
    backbone = _analysis(model.backbone, hw, ignore_gates)
    levels = backbone.outputs if isinstance(backbone.outputs, dict) else {"0": backbone.outputs}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    calls: dict[str, list[LevelField]] = {n: [] for n in convs}
    seen: dict[int, tuple[str, Any]] = {}  # id(tensor) -> (level, value along the heads)
    keep: list[Any] = []  # the tensors whose ids are keys above stay alive (ids are never reused)

    def on_backbone(_m: nn.Module, _i: Any, out: Any) -> None:
        items = out.items() if isinstance(out, dict) else [("0", out)]
        for key, t in items:
            seen[id(t)] = (str(key), levels.get(key, _Unknown(f"backbone output {key!r} was not analysed")))
            keep.append(t)

    def on_module(name: str, mod: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, inp: Any, out: Any) -> None:
            x = inp[0] if inp else None
            if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or out.dim() != 4:
                return
            src = seen.get(id(x))
            if isinstance(mod, nn.Conv2d):
                shape = tuple(int(v) for v in out.shape[1:])
                if name.startswith("backbone."):
                    f = backbone.convs.get(name[len("backbone."):], f"{name} does not run in the backbone's traced graph")
                    calls[name].append(LevelField("", shape, f))  # type: ignore[arg-type]
                    return
                if src is None:
                    why = (f"{name} runs on RoIAlign crops of each box ({x.shape[-2]}x{x.shape[-1]}), not on the image grid: "
                           "its field is in box coordinates")
                    calls[name].append(LevelField("roi", shape, why))  # type: ignore[arg-type]
                    return
                level, val = src
                if isinstance(val, _Spatial):
                    val = _window(val, out.shape, mod.kernel_size, mod.stride, mod.padding, mod.dilation)
                calls[name].append(LevelField(level, shape, val.field if isinstance(val, _Spatial) else  # type: ignore[arg-type]
                                              getattr(val, "reason", "no field")))
                seen[id(out)] = (level, val)
                keep.append(out)
            elif src is not None and not list(mod.children()) and tuple(out.shape[-2:]) == tuple(x.shape[-2:]):
                seen[id(out)] = src  # pointwise leaf modules between head convs (norm, activation)
                keep.append(out)
        return hook

    handles = [model.backbone.register_forward_hook(on_backbone)]
    handles += [m.register_forward_hook(on_module(n, m)) for n, m in model.named_modules()
                if n and not n.startswith("backbone.") and not list(m.children())]
    handles += [m.register_forward_hook(on_module(n, m)) for n, m in convs.items() if n.startswith("backbone.")]
    own = model.transform
    if not isinstance(own, FedTransform):
        model.transform = FedTransform(original_transform(model))
    device = device_of(model)
    try:
        with eval_mode(model), torch.inference_mode():
            try:  # on 'meta' box selection (nonzero) fails after every pyramid-level head ran
                model(torch.zeros(1, input_channels(model), *hw, device=device))
            except (RuntimeError, NotImplementedError, ValueError, IndexError):
                pass
            roi = getattr(model, "roi_heads", None)
            for head, pool in (("mask_head", "mask_roi_pool"), ("keypoint_head", "keypoint_roi_pool")):
                h, p = getattr(roi, head, None), getattr(roi, pool, None)
                first = next((m for m in h.modules() if isinstance(m, nn.Conv2d)), None) if h is not None else None
                if first is None or p is None or calls.get(f"roi_heads.{head}.{_name_in(h, first)}"):
                    continue
                s = pair(p.output_size)
                h(torch.zeros(1, first.in_channels, *s, device=device))
    finally:
        model.transform = own
        for handle in handles:
            handle.remove()
    return calls


def _name_in(parent: nn.Module, child: nn.Module) -> str:
    return next(n for n, m in parent.named_modules() if m is child)


def detector_summary(calls: Sequence[LevelField]) -> Field | str:
    """One field for a conv's calls: the field when every call has the same one (a backbone conv,
    a per-level head), else why not (a head shared by several pyramid levels)."""
    if not calls:
        return "does not run in the detector's forward pass"
    fields = [c.field for c in calls]
    if all(f == fields[0] for f in fields):
        return fields[0]
    rfs = ", ".join(f"{c.level}: {fmt_value(c.field.rf)}" if isinstance(c.field, Field) else f"{c.level}: none"
                    for c in calls)
    return f"runs on {len(calls)} pyramid levels with shared weights, one field per level ({rfs}); see --json levels"
