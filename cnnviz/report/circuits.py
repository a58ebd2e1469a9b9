"""Which conv channels a conv channel is built from, and which it feeds: the "circuit" view of
OpenAI Microscope and the Distill Circuits thread, for any model torch.fx can trace.

Wiring (the graph part): a conv's input is followed back through the model's torch.fx graph
(cnnviz.graph: one op table for every reader) to the convs that produce it. Operations that keep
channel ``i`` at index ``i`` are crossed: batch norm, activations, pooling, dropout, identity,
pointwise maths. A residual ``add`` (and a gating ``mul``) is crossed on every branch, so input
channel ``i`` comes from channel ``i`` of each branch's producer (for a ResNet block: the
previous block's last conv, the convs of the residual stream before it, the shortcut conv). A
``cat`` along the channel axis (SqueezeNet's fire modules, Inception, DenseNet) offsets the
index: input channel ``i`` of the part that starts at ``offset`` is its producer's ``i - offset``.
Anything else (a reshape, a linear layer, an op the table does not know) ends the walk, and the
page says so instead of guessing.

Weights (the numbers): the L2 norm of the kernel ``W[o, j]`` (over its kh x kw taps) is how
strongly output channel ``o`` reads input channel ``g * I/g + j`` of its group ``g``; the sign of
the kernel's mean says whether it mostly adds (+) or subtracts (-) that channel. A depthwise
conv reads exactly one input channel per output channel.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Source", "Wiring", "consumers_of", "incoming", "strongest", "wiring"]

# kinds whose output channel i is their (first tensor) input's channel i
_KEEP = ("NORM", "ACTIVATION", "DROPOUT", "IDENTITY", "POOL", "ADAPTIVE_POOL", "ELEMENTWISE", "FIRST")
_MERGE = ("ADD", "GATE", "ARITH")  # every tensor operand has the same channels (broadcast scales too)


@dataclass(frozen=True)
class Source:
    """A producer of a conv's input: channels ``offset .. offset + channels - 1`` of the input are
    channels ``0 .. channels - 1`` of conv ``layer`` (None: the model's input image), reached
    through ``via`` (the merging ops crossed, nearest first: 'add', 'cat', 'mul', ...)."""

    layer: int | None
    offset: int
    channels: int
    via: tuple[str, ...] = ()


@dataclass(frozen=True)
class Wiring:
    """Where conv ``layer``'s input comes from: its ``sources`` (nearest first, in the graph's
    order), or ``unknown``: why the walk stopped (the sources it did find are kept)."""

    layer: int
    sources: tuple[Source, ...]
    unknown: str = ""

    @property
    def merged(self) -> tuple[str, ...]:
        """The merging ops between this conv and its producers ('add', 'cat', ...), each once."""
        return tuple(dict.fromkeys(v for s in self.sources for v in s.via))

    def producers(self, channel: int) -> list[tuple[int | None, int]]:
        """(producer layer, its channel) of input channel ``channel``, nearest producer first."""
        return [(s.layer, channel - s.offset) for s in self.sources if s.offset <= channel < s.offset + s.channels]


def wiring(model: Any, layers: Sequence[Any]) -> dict[int, Wiring]:
    """{conv index: its Wiring} for the conv catalog ``layers`` (cnnviz.layers.ConvLayer records
    of ``model``: index, name, out_channels). Raises cnnviz.errors.TraceError when torch.fx
    cannot trace the model."""
    from ..graph import Kind, trace

    traced = trace(model)
    by_name = {lay.name: lay for lay in layers}
    kinds = traced.kinds
    order = {n: k for k, n in enumerate(traced.nodes)}
    in_channels = next((int(lay.in_channels) for lay in layers), 3)

    def conv_of(node: Any) -> Any:
        if node.op == "call_module" and kinds.get(node) is Kind.CONV:
            return by_name.get(str(node.target))
        return None

    def tensor_args(node: Any) -> list[Any]:
        out = []
        for a in (*node.args, *node.kwargs.values()):
            if isinstance(a, (list, tuple)):
                out += [b for b in a if hasattr(b, "op")]
            elif hasattr(a, "op"):
                out.append(a)
        return out

    memo: dict[Any, int | None] = {}

    def channels(node: Any) -> int | None:
        """Channels of a node's output, from its producers (None: unknown)."""
        if node in memo:
            return memo[node]
        memo[node] = None  # cycles cannot happen in an fx graph; this guards bad recursion only
        lay = conv_of(node)
        kind = kinds.get(node)
        if node.op == "placeholder":
            n: int | None = in_channels
        elif lay is not None:
            n = int(lay.out_channels)
        elif kind is not None and kind.name in _KEEP + _MERGE:
            args = tensor_args(node)
            got = [channels(a) for a in args[: 1 if kind.name in _KEEP else None]]
            got = [g for g in got if g is not None]
            n = max(got) if got else None
        elif kind is Kind.CAT and _cat_dim(node) == 1:
            parts = [channels(a) for a in _cat_inputs(node)]
            n = None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]
        else:
            n = None
        memo[node] = n
        return n

    def back(node: Any, offset: int, via: tuple[str, ...], found: list[Source], why: list[str]) -> None:
        lay = conv_of(node)
        kind = kinds.get(node)
        if node.op == "placeholder":
            found.append(Source(None, offset, in_channels, via))
        elif lay is not None:
            found.append(Source(lay.index, offset, int(lay.out_channels), via))
        elif kind is not None and kind.name in _KEEP:
            args = tensor_args(node)
            if args:
                back(args[0], offset, via, found, why)
        elif kind is not None and kind.name in _MERGE:
            tag = {"ADD": "add", "GATE": "mul", "ARITH": "sub/div"}[kind.name]
            for a in tensor_args(node):
                if a.op == "get_attr":
                    continue  # a constant operand (a learned scale): no producer
                # a squeeze-and-excitation scale (sigmoid of a conv) gates the features: 'gate'
                gate = kind is Kind.GATE and kinds.get(a) is Kind.ELEMENTWISE
                back(a, offset, via + ("gate" if gate else tag,), found, why)
        elif kind is Kind.CAT and _cat_dim(node) == 1:
            at = offset
            for a in _cat_inputs(node):
                back(a, at, via + ("cat",), found, why)
                n = channels(a)
                if n is None:
                    why.append(f"a cat whose input {a.name} has a channel count the graph does not tell")
                    return
                at += n
        else:
            from ..graph import op_name

            why.append(f"the input passes through {op_name(node)}" if node.op.startswith("call") else
                       f"the input comes from {node.name}")

    pos = {lay.index: order[n] for n in traced.nodes if (lay := conv_of(n)) is not None}
    out: dict[int, Wiring] = {}
    for node in traced.nodes:
        lay = conv_of(node)
        if lay is None or lay.index in out or not node.args:
            continue
        found: list[Source] = []
        why: list[str] = []
        back(node.args[0], 0, (), found, why)
        # by offset, features before gates, then the fewest merges crossed, then nearest: the producer that ran last
        found.sort(key=lambda s: (s.offset, "gate" in s.via, len(s.via), -pos.get(s.layer, -1) if s.layer is not None else 1))
        uniq = list(dict.fromkeys(found))
        out[lay.index] = Wiring(lay.index, tuple(uniq), "; ".join(dict.fromkeys(why)))
    return out


def _cat_inputs(node: Any) -> list[Any]:
    first = node.args[0] if node.args else node.kwargs.get("tensors", [])
    return [a for a in first if hasattr(a, "op")] if isinstance(first, (list, tuple)) else []


def _cat_dim(node: Any) -> int | None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(dim, int):
        return None
    return dim if dim >= 0 else dim + 4  # NCHW


def incoming(weight: np.ndarray, *, groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(norm, mean), each (O, I) float32 for a conv weight (O, I/groups, kh, kw): ``norm[o, i]``
    the L2 norm of the kernel with which output channel ``o`` reads input channel ``i``, ``mean``
    its mean; both 0 where ``o`` does not read ``i`` (another group). Pure."""
    w = np.asarray(weight, dtype=np.float32)
    o, ig = w.shape[:2]
    flat = w.reshape(o, ig, -1)
    n = np.sqrt((flat.astype(np.float64) ** 2).sum(axis=2)).astype(np.float32)
    m = flat.mean(axis=2, dtype=np.float64).astype(np.float32)
    norm = np.zeros((o, ig * groups), np.float32)
    mean = np.zeros((o, ig * groups), np.float32)
    og = o // groups
    for g in range(groups):
        rows = slice(g * og, (g + 1) * og)
        cols = slice(g * ig, (g + 1) * ig)
        norm[rows, cols] = n[rows]
        mean[rows, cols] = m[rows]
    return norm, mean


def strongest(norm: np.ndarray, *, k: int) -> list[list[int]]:
    """Per row of ``norm`` (R, C): the column indices of its ``k`` largest entries, largest first
    (ties: lower index first), zeros never (another group's channels). Pure."""
    order = np.argsort(-norm, axis=1, kind="stable")[:, :k]
    return [[int(j) for j in row if norm[r, j] > 0] for r, row in enumerate(order)]


def consumers_of(wires: dict[int, Wiring], layer: int) -> list[tuple[int, int]]:
    """(consumer conv, offset) of every conv whose input holds ``layer``'s output, nearest first
    (conv index order is named_modules order; the wiring's producers keep graph order)."""
    out = []
    for m in sorted(wires):
        for s in wires[m].sources:
            if s.layer == layer:
                out.append((m, s.offset))
    return out

