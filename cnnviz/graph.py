"""The one torch.fx analysis of a model: trace (cached), the error text for untraceable models, and
the op table that classifies every call node.

Both readers of the graph use this module, so they agree on what an operation is:

* ``capture`` walks from a conv through :data:`PASS_KINDS` to the first :attr:`Kind.ACTIVATION`
  to find the ``act`` stage;
* ``rf`` propagates receptive fields with one small function per :class:`Kind`.

An op missing from the table is ``None``: capture stops its walk there and rf reports that it
cannot analyse it, so adding an op here teaches both at once.

A model that already *is* an fx GraphModule (a ``torch.export`` program or a converted TorchScript
archive, see cnnviz.sources) is analysed on its own graph, never re-traced: its calls are ATen
ops (``aten.relu_``, ``aten.max_pool2d_with_indices``, ``aten._native_batch_norm_legit_no_training``),
which the same table maps onto the same kinds as their ``torch.nn.functional`` counterparts.
:func:`as_modules` turns such calls into :class:`OpCall` modules so forward hooks can read them.
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

from .errors import TraceError
from .util import first_line

__all__ = ["Kind", "OpCall", "PASS_KINDS", "TraceError", "Traced", "as_modules", "op_kind", "op_name", "trace"]


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
    GETITEM = "getitem"  # indexing, or picking a secondary output of a multi-output op
    FIRST = "first"  # output 0 of a multi-output ATen op: the normalised map / the pooled map
    SPLIT = "split"  # chunk, split
    LINEAR = "linear"  # nn.Linear (on the last axis)
    SHAPE = "shape"  # .size(), .dim(), x.shape / dtype / device / ndim: no tensor data
    UPSAMPLE = "upsample"  # F.interpolate / nn.Upsample (FPN's top-down path)


#: Kinds that do not change which activation follows a conv: capture's act walk passes them.
PASS_KINDS = frozenset({Kind.NORM, Kind.DROPOUT, Kind.IDENTITY, Kind.ADD, Kind.FIRST})

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
    ((nn.Upsample,), Kind.UPSAMPLE),
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
    Kind.UPSAMPLE: (F.interpolate,),
})


def _aten(*names: str) -> tuple[Any, ...]:
    """ATen op packets by name (``relu_`` -> torch.ops.aten.relu_, every overload); names this
    build of torch lacks are skipped."""
    ops = []
    for name in names:
        try:
            ops.append(getattr(torch.ops.aten, name))
        except (AttributeError, RuntimeError):
            pass
    return tuple(ops)


# The ATen ops of torch.export programs (training IR and, after run_decompositions(), core ATen)
# and of TorchScript archives converted by torch.export, looked up by packet (every overload).
# Convolutions are absent on purpose: cnnviz.sources turns them into nn.Conv2d modules.
_FUNCTIONS.update(_table({
    Kind.POOL: _aten("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"),
    Kind.ADAPTIVE_POOL: _aten("adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d"),
    Kind.ACTIVATION: _aten("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "silu", "silu_", "gelu", "gelu_",
                           "hardswish", "hardswish_", "leaky_relu", "leaky_relu_", "elu", "elu_", "mish", "mish_",
                           "prelu", "_prelu_kernel", "celu", "celu_", "selu", "selu_"),
    Kind.NORM: _aten("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                     "_native_batch_norm_legit_functional", "native_batch_norm", "layer_norm", "native_layer_norm",
                     "group_norm", "native_group_norm", "instance_norm"),
    Kind.DROPOUT: _aten("dropout", "dropout_", "feature_dropout", "feature_dropout_", "native_dropout",
                        "alpha_dropout"),
    Kind.IDENTITY: _aten("clone", "contiguous", "_to_copy", "to", "alias", "detach", "lift_fresh_copy", "type_as"),
    Kind.ELEMENTWISE: _aten("sigmoid", "sigmoid_", "tanh", "tanh_", "hardsigmoid", "hardsigmoid_", "clamp", "clamp_",
                            "clamp_min", "clamp_max", "exp", "abs", "neg", "softplus"),
    Kind.ADD: _aten("add", "add_"),
    Kind.GATE: _aten("mul", "mul_"),
    Kind.ARITH: _aten("sub", "sub_", "rsub", "div", "div_"),
    Kind.CAT: _aten("cat"),
    Kind.RESHAPE: _aten("view", "reshape", "_unsafe_view", "flatten", "unflatten"),
    Kind.PERMUTE: _aten("permute"),
    Kind.TRANSPOSE: _aten("transpose"),
    Kind.REDUCE: _aten("mean", "sum", "amax"),
    Kind.SPLIT: _aten("split", "split_with_sizes", "chunk"),
    Kind.LINEAR: _aten("linear"),
    Kind.SHAPE: _aten("sym_size", "sym_numel", "sym_stride"),
}))
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


def _function_kind(fn: Any) -> Kind | None:
    try:
        kind = _FUNCTIONS.get(fn) or _FUNCTIONS.get(getattr(fn, "overloadpacket", None))
    except TypeError:  # an unhashable callable
        kind = None
    return kind or _FUNCTION_NAMES.get(getattr(fn, "__name__", ""))


def _outputs(fn: Any) -> int:
    """How many values an ATen op returns (1 for anything else)."""
    schema = getattr(fn, "_schema", None)
    return len(schema.returns) if schema is not None else 1


def op_kind(node: torch.fx.Node, modules: dict[str, nn.Module]) -> Kind | None:
    """The :class:`Kind` of a call node (None: not in the table, or not a call)."""
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        if isinstance(mod, OpCall):
            return _function_kind(mod.op)
        for types, kind in _MODULES:
            if isinstance(mod, types):
                return kind
        return _MODULE_NAMES.get(type(mod).__name__)
    if node.op == "call_function":
        fn = node.target
        if fn is getattr:
            attr = node.args[1] if len(node.args) > 1 else None
            return Kind.SHAPE if isinstance(attr, str) and attr in _SHAPE_ATTRS else None
        if fn is operator.getitem and node.args[1:2] == (0,):
            src = node.args[0]
            if isinstance(src, torch.fx.Node) and src.op == "call_function" and _outputs(src.target) > 1:
                return Kind.FIRST
        return _function_kind(fn)
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    return None


def op_name(node: torch.fx.Node) -> str:
    """How messages name a node's operation: the module path of a module call ('layer1.0.relu'),
    the op of an ATen call ('aten.upsample_nearest2d.vec'), a function's name ('interpolate'), or
    '.view()' for a method."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "call_method":
        return f".{node.target}()"
    fn = node.target
    return str(fn) if hasattr(fn, "overloadpacket") else str(getattr(fn, "__name__", fn))


class OpCall(nn.Module):
    """One function of a graph as a module, so that forward hooks see its output:
    ``OpCall(torch.ops.aten.relu_.default)(x)`` is ``aten.relu_(x)``. Its kind is the op's."""

    def __init__(self, op: Any):
        super().__init__()
        self.op = op

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.op(*args, **kwargs)

    def extra_repr(self) -> str:
        return str(self.op)


def _free_name(gm: torch.fx.GraphModule, node: torch.fx.Node, taken: dict[str, Any]) -> str:
    """Where an OpCall for ``node`` goes: the path of the module that made the call in the original
    model (``features.1``, ``layer1.0.relu``: a parameterless module that torch.export inlined), so
    hooks read the same module and call as on the eager model; else a fresh name next to it."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path = str(stack[-1][0]) if stack and stack[-1] and stack[-1][0] else ""
    if path and (not _exists(gm, path) or taken.get(path) is node.target):
        return path
    base = f"{path}.{node.name}" if path else node.name
    name, k = base, 1
    while name in taken or _exists(gm, name):
        name, k = f"{base}_{k}", k + 1
    return name


def _exists(gm: nn.Module, name: str) -> bool:
    try:
        gm.get_submodule(name)
    except AttributeError:
        return False
    return True


def as_modules(gm: torch.fx.GraphModule, *, kinds: Iterable[Kind]) -> list[str]:
    """Rewrite every ``call_function`` node of ``gm`` whose kind is in ``kinds`` into a call of an
    :class:`OpCall` module (same op, same arguments: the graph computes the same values), named
    as :func:`_free_name` says. Returns the new modules' names; recompiles ``gm``."""
    wanted = frozenset(kinds)
    taken: dict[str, Any] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or _function_kind(node.target) not in wanted or _outputs(node.target) != 1:
            continue
        name = _free_name(gm, node, taken)
        if name not in taken:
            if not gm.add_submodule(name, OpCall(node.target)):
                continue
            taken[name] = node.target
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(name, node.args, node.kwargs)
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.recompile()
    return list(taken)


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


def _own_graph(gm: torch.fx.GraphModule) -> torch.fx.Graph:
    """A copy of a GraphModule's graph (the original holds its module, and the cache must not)."""
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return graph


def trace(model: nn.Module, *, leaves: Iterable[str] = ()) -> Traced:
    """The model's torch.fx graph, traced once per model, module structure and ``leaves``.

    ``leaves``: names of modules to keep as one ``call_module`` node each instead of tracing into
    them (a block whose output is read as a whole, e.g. ResNet's 'layer4'), besides torch.fx's
    own leaves (the torch.nn modules other than containers); naming one of those changes nothing.

    A GraphModule (an exported program, a converted TorchScript archive, a graph traced earlier)
    is its own graph: it is read as it is, not traced again, and ``leaves`` change nothing there.

    Raises TraceError (``torch.fx cannot trace the model (<first line of torch's error>)``);
    callers say what needed the trace."""
    key = _structure(model)
    modules = dict(model.named_modules())
    if isinstance(model, torch.fx.GraphModule):
        key += (id(model.graph), len(model.graph.nodes))  # an id: the graph holds the model
    plain = torch.fx.Tracer()
    extra = frozenset(n for n in leaves if n in modules and not plain.is_leaf_module(modules[n], n))
    hit = _TRACES.get(model)
    cache = hit[1] if hit is not None and hit[0] == key else {}
    if extra in cache:
        return cache[extra]
    try:
        graph = _own_graph(model) if isinstance(model, torch.fx.GraphModule) else _Tracer(extra).trace(model)
    except Exception as exc:  # data-dependent control flow, unsupported Python, ...
        raise TraceError(f"torch.fx cannot trace the model ({first_line(exc, 120)})") from None
    traced = Traced.of(graph, modules)
    cache[extra] = traced
    _TRACES[model] = (key, cache)
    return traced
