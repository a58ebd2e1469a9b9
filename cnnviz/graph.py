"""The one torch.fx analysis of a model: trace (cached), the error text for untraceable models, and
the op table that classifies every call node.

Both readers of the graph use this module, so they agree on what an operation is:

* ``capture`` walks from a conv through :data:`PASS_KINDS` to the first :attr:`Kind.ACTIVATION`
  to find the ``act`` stage;
* ``rf`` propagates receptive fields with one small function per :class:`Kind`.

An op missing from the table is ``None``: capture stops its walk there and rf reports that it
cannot analyse it, so adding an op here teaches both at once.
"""
from __future__ import annotations

import enum
import operator
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .errors import ModelError
from .util import first_line

__all__ = ["Kind", "PASS_KINDS", "TraceError", "Traced", "op_kind", "trace"]


class Kind(enum.Enum):
    """What a call node does, as far as spatial structure and activations are concerned."""

    CONV = "conv"  # nn.Conv2d
    POOL = "pool"  # max / average pooling (module or function)
    ADAPTIVE_POOL = "adaptive_pool"  # adaptive average / max pooling
    ACTIVATION = "activation"  # the ReLU family, SiLU, GELU, ...: what capture's act stage reads
    NORM = "norm"  # batch / group / instance / layer / local-response normalisation
    DROPOUT = "dropout"  # every dropout flavour and stochastic depth: the identity in eval mode
    IDENTITY = "identity"  # nn.Identity and value-preserving methods (contiguous, clone, to, ...)
    ELEMENTWISE = "elementwise"  # other pointwise maths: sigmoid, tanh, clamp, exp, abs, neg
    ADD = "add"  # a sum of tensors: the residual merge
    GATE = "gate"  # a product: gating, squeeze-and-excitation scales
    ARITH = "arith"  # subtraction, division
    CAT = "cat"  # torch.cat
    RESHAPE = "reshape"  # flatten, view, reshape, unflatten, nn.Flatten
    PERMUTE = "permute"
    TRANSPOSE = "transpose"
    REDUCE = "reduce"  # mean, sum, amax over some axes
    GETITEM = "getitem"  # indexing, or picking one output of a multi-output op
    SPLIT = "split"  # chunk, split
    LINEAR = "linear"  # nn.Linear (on the last axis)
    SHAPE = "shape"  # .size(), .dim(), x.shape / dtype / device / ndim: no tensor data


#: Kinds that do not change which activation follows a conv: capture's act walk passes them.
PASS_KINDS = frozenset({Kind.NORM, Kind.DROPOUT, Kind.IDENTITY, Kind.ADD})

# isinstance order matters only in that no listed class derives from another listed class
_MODULES: tuple[tuple[tuple[type, ...], Kind], ...] = (
    ((nn.Conv2d,), Kind.CONV),
    ((nn.MaxPool2d, nn.AvgPool2d), Kind.POOL),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), Kind.ADAPTIVE_POOL),
    ((nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU, nn.CELU, nn.SELU),
     Kind.ACTIVATION),
    ((nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.LocalResponseNorm), Kind.NORM),
    ((nn.Dropout, nn.Dropout2d, nn.AlphaDropout), Kind.DROPOUT),
    ((nn.Identity,), Kind.IDENTITY),
    ((nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus), Kind.ELEMENTWISE),
    ((nn.Linear,), Kind.LINEAR),
    ((nn.Flatten,), Kind.RESHAPE),
)
_MODULE_NAMES = {"Permute": Kind.PERMUTE}  # torchvision.ops.misc.Permute (ConvNeXt) and look-alikes


def _table(groups: dict[Kind, tuple[Any, ...]]) -> dict[Any, Kind]:
    return {op: kind for kind, ops in groups.items() for op in ops}


_FUNCTIONS = _table({
    Kind.POOL: (F.max_pool2d, F.avg_pool2d, torch.max_pool2d, torch._C._nn.avg_pool2d),
    Kind.ADAPTIVE_POOL: (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch._C._nn.adaptive_avg_pool2d),
    Kind.ACTIVATION: (F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.gelu, F.hardswish, F.leaky_relu,
                      F.elu, F.mish),
    Kind.NORM: (F.batch_norm, F.layer_norm, F.group_norm, F.local_response_norm),
    Kind.DROPOUT: (F.dropout, F.dropout2d),
    Kind.ELEMENTWISE: (F.hardsigmoid, F.sigmoid, torch.sigmoid, torch.tanh, torch.clamp, torch.exp, torch.abs,
                       torch.neg, operator.neg),
    Kind.ADD: (operator.add, operator.iadd, torch.add),
    Kind.GATE: (operator.mul, operator.imul, torch.mul),
    Kind.ARITH: (operator.sub, operator.truediv, torch.sub, torch.div),
    Kind.CAT: (torch.cat,),
    Kind.RESHAPE: (torch.flatten, torch.reshape),
    Kind.PERMUTE: (torch.permute,),
    Kind.TRANSPOSE: (torch.transpose,),
    Kind.REDUCE: (torch.mean, torch.sum),
    Kind.GETITEM: (operator.getitem,),
    Kind.SPLIT: (torch.chunk, torch.split),
})
# functions wrapped as graph leaves, known by name (torchvision.ops.stochastic_depth)
_FUNCTION_NAMES = {"stochastic_depth": Kind.DROPOUT}
_METHODS = _table({
    Kind.ACTIVATION: ("relu", "relu_"),
    Kind.ELEMENTWISE: ("sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "neg", "abs", "exp"),
    Kind.IDENTITY: ("contiguous", "clone", "float", "half", "to", "type_as", "detach"),
    Kind.ADD: ("add", "add_"),
    Kind.GATE: ("mul", "mul_"),
    Kind.ARITH: ("sub", "sub_", "div", "div_"),
    Kind.RESHAPE: ("view", "reshape", "flatten", "unflatten"),
    Kind.PERMUTE: ("permute",),
    Kind.TRANSPOSE: ("transpose",),
    Kind.REDUCE: ("mean", "sum", "amax"),
    Kind.SPLIT: ("chunk", "split"),
    Kind.SHAPE: ("size", "dim"),
})
_SHAPE_ATTRS = ("shape", "dtype", "device", "ndim")


def op_kind(node: torch.fx.Node, modules: dict[str, nn.Module]) -> Kind | None:
    """The :class:`Kind` of a call node (None: not in the table, or not a call)."""
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        for types, kind in _MODULES:
            if isinstance(mod, types):
                return kind
        return _MODULE_NAMES.get(type(mod).__name__)
    if node.op == "call_function":
        fn = node.target
        if fn is getattr:
            attr = node.args[1] if len(node.args) > 1 else None
            return Kind.SHAPE if isinstance(attr, str) and attr in _SHAPE_ATTRS else None
        try:
            kind = _FUNCTIONS.get(fn)
        except TypeError:  # an unhashable callable
            kind = None
        return kind or _FUNCTION_NAMES.get(getattr(fn, "__name__", ""))
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    return None


class TraceError(ModelError):
    """torch.fx cannot trace the model (data-dependent control flow, unsupported Python)."""


@dataclass(eq=False)
class Traced:
    """A model's torch.fx graph with what every reader needs: its nodes in execution order, each
    node's :class:`Kind`, and for each ``call_module`` node which call of its module it is (0-based;
    a module used twice in ``forward`` is called twice). Holds no reference to the model's modules,
    so caching it keeps no model alive."""

    graph: torch.fx.Graph
    nodes: list[torch.fx.Node]
    kinds: dict[torch.fx.Node, Kind | None]
    call_index: dict[torch.fx.Node, int]
    calls: dict[str, int]  # module name -> how often one forward pass calls it

    @classmethod
    def of(cls, graph: torch.fx.Graph, modules: dict[str, nn.Module]) -> "Traced":
        nodes = list(graph.nodes)
        call_index: dict[torch.fx.Node, int] = {}
        calls: dict[str, int] = {}
        for n in nodes:
            if n.op == "call_module":
                call_index[n] = calls.get(str(n.target), 0)
                calls[str(n.target)] = call_index[n] + 1
        return cls(graph, nodes, {n: op_kind(n, modules) for n in nodes}, call_index, calls)


_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], dict[frozenset[str], Traced]]]" = (
    weakref.WeakKeyDictionary())


def _structure(model: nn.Module) -> tuple[Any, ...]:
    # What the trace depends on besides forward()'s code: which modules exist, and their types
    # (a model whose submodules are swapped after a first trace is traced again).
    return tuple((name, type(m)) for name, m in model.named_modules())


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer that also keeps the modules named ``leaves`` as single call nodes."""

    def __init__(self, leaves: frozenset[str]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.leaves or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, *, leaves: Iterable[str] = ()) -> Traced:
    """The model's torch.fx graph, traced once per model, module structure and ``leaves``.

    ``leaves``: names of modules to keep as one ``call_module`` node each instead of tracing into
    them (a block whose output is read as a whole, e.g. ResNet's 'layer4'), besides torch.fx's
    own leaves (the torch.nn modules other than containers); naming one of those changes nothing.

    Raises TraceError (``torch.fx cannot trace the model (<first line of torch's error>)``);
    callers say what needed the trace."""
    key = _structure(model)
    modules = dict(model.named_modules())
    plain = torch.fx.Tracer()
    extra = frozenset(n for n in leaves if n in modules and not plain.is_leaf_module(modules[n], n))
    hit = _TRACES.get(model)
    cache = hit[1] if hit is not None and hit[0] == key else {}
    if extra in cache:
        return cache[extra]
    try:
        graph = _Tracer(extra).trace(model)
    except Exception as exc:  # data-dependent control flow, unsupported Python, ...
        raise TraceError(f"torch.fx cannot trace the model ({first_line(exc, 120)})") from None
    traced = Traced.of(graph, modules)
    cache[extra] = traced
    _TRACES[model] = (key, cache)
    return traced
