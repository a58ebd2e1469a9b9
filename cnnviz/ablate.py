"""Channel ablation: how much a classifier needs each channel of one layer, measured by
removing the channel (zero, or its mean over the images) and scoring the classifier on images.

Fast by construction: the network is cut at the layer's output (the traced tail of
Ablation-CAM, cnnviz.cam._frontier_tail). Each image batch runs through the part before the
layer once (:meth:`LayerSplit.cut`); every ablation then runs only the part after it, several
ablated copies of the batch stacked into one tail batch (:func:`measure`). The tail is trusted
only after it reproduced the full network's output on the first batch, alone and as a stack of
two copies; otherwise (or when the graph cannot be traced) every ablation runs the whole network
with the layer's output replaced by a forward hook: the same numbers, slower.

An ablation is a *set* of channels replaced together: one channel, a group (``--group``), or
the first k channels of an order (the removal curves). Scores per set: accuracy (top-1 equals
the label), mean probability and mean logit of the label, overall and per label class.

Everything here is pure computation on tensors: no files, no printing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .cam import _check_logits, _frontier_tail
from .capture import HookPoint
from .errors import UsageError
from .util import eval_mode

FILLS = ("zero", "mean")
METRICS = ("probability", "accuracy", "logit")
RANDOM_SEEDS = (0, 1, 2)


# ---------------------------------------------------------------- the network cut at a layer


@dataclass
class Cut:
    """One image batch run up to the layer: ``act`` (B, C, h, w) the layer's output, ``frontier``
    earlier values the tail also reads (skip connections), ``logits`` (B, classes) float32 of the
    intact network, ``x`` the input (kept for the full-network fallback)."""

    x: torch.Tensor
    act: torch.Tensor
    frontier: list[Any]
    logits: torch.Tensor
    cache: dict[str, Any] = field(default_factory=dict)  # per-batch values of the fast paths


def _repeat(v: Any, g: int) -> Any:
    # a copy per call: the tail may write into its inputs (ResNet's `out += identity`)
    return v.repeat(g, *([1] * (v.dim() - 1))) if isinstance(v, torch.Tensor) and v.dim() else v


class LayerSplit:
    """The network cut at the output of ``point``: :meth:`cut` runs a batch up to the layer
    once, :meth:`tail` runs the rest for a stack of replacement outputs. ``traced`` says which
    path is used; ``why`` why not the fast one."""

    def __init__(self, model: nn.Module, point: HookPoint):
        self.model, self.point = model, point
        self._head: torch.fx.GraphModule | None = None
        self._tail: torch.fx.GraphModule | None = None
        self._checked = False
        self._linear: _LinearStart | bool | None = None  # None: not built yet; False: not usable
        self.why = ""
        built = _frontier_tail(model, point)
        if built is None:
            self.why = "the network cannot be traced with this layer as one step"
            return
        tail, full, start, frontier = built
        graph = torch.fx.Graph()
        env: dict[Any, Any] = {}
        graph.graph_copy(full.graph, env)
        graph.output((env[start], *[env[f] for f in frontier]))
        self._head = torch.fx.GraphModule(model, graph)
        self._head.graph.eliminate_dead_code()  # the head stops at the layer
        self._head.recompile()
        self._tail = tail

    @property
    def traced(self) -> bool:
        return self._tail is not None

    def cut(self, x: torch.Tensor) -> Cut:
        """Run ``x`` (B, ...) up to the layer; the intact logits come from the tail (the first
        call checks them against the full network and falls back to it on a mismatch)."""
        with eval_mode(self.model), torch.inference_mode():
            if self._tail is not None and self._head is not None:
                act, *front = self._head(x)
                act = act.detach().clone()
                # a copy in: the tail may start with an in-place op (VGG's ReLU(inplace=True) after a conv)
                logits = _check_logits(self._run_tail(act.clone(), front, 1)).float()
                if self._checked:
                    return Cut(x, act, front, logits)
                ref = _check_logits(self.model(x)).float()
                try:
                    two = _check_logits(self._run_tail(torch.cat([act, act]), front, 2)).float()
                    same = torch.allclose(logits, ref, rtol=1e-4, atol=1e-5) and \
                        torch.allclose(two, torch.cat([ref, ref]), rtol=1e-4, atol=1e-5)
                except Exception:  # noqa: BLE001 - a tail that fails on a stack is not usable
                    same = False
                if same:
                    self._checked = True
                    return Cut(x, act, front, logits)
                self._head = self._tail = None
                self.why = "the traced rest of the network does not reproduce the model's output"
            return self._hooked_cut(x)

    def _run_tail(self, acts: torch.Tensor, frontier: list[Any], g: int) -> torch.Tensor:
        assert self._tail is not None
        return self._tail(acts, *[_repeat(v, g) for v in frontier])

    def _module(self) -> nn.Module:
        return dict(self.model.named_modules())[self.point.module]

    def _hooked_cut(self, x: torch.Tensor) -> Cut:
        seen: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            seen.append(out)

        handle = self._module().register_forward_hook(hook)
        try:
            logits = _check_logits(self.model(x)).float()
        finally:
            handle.remove()
        if len(seen) <= self.point.call:
            raise UsageError(f"layer {self.point.module} did not run for this input")
        return Cut(x, seen[self.point.call].detach().clone(), [], logits)

    def tail(self, cut: Cut, acts: torch.Tensor) -> torch.Tensor:
        """Logits (g*B, classes) float32 for ``acts`` (g*B, C, h, w): g replacement outputs of
        the layer for the batch of ``cut``, copy-major (rows j*B .. j*B+B-1 are copy j)."""
        b = cut.act.shape[0]
        g = acts.shape[0] // b
        with eval_mode(self.model), torch.inference_mode():
            if self._tail is not None:
                return _check_logits(self._run_tail(acts, cut.frontier, g)).float()
            calls = {"n": 0}

            def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
                calls["n"] += 1
                return acts if calls["n"] - 1 == self.point.call else None

            handle = self._module().register_forward_hook(hook)
            try:
                return _check_logits(self.model(_repeat(cut.x, g))).float()
            finally:
                handle.remove()

    def ablate(self, cut: Cut, sets: Sequence[Sequence[int]], *, fill: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (len(sets), B, classes) float32 with the channels of each set replaced by zero
        (``fill`` None) or by ``fill``'s ((C, h, w) or (C, 1, 1)) in the batch of ``cut``.
        Where the rest of the network starts with convolutions (SqueezeNet's classifier), their
        outputs are updated by the removed channels' share instead of recomputed (checked against
        the plain tail on the first call)."""
        b = cut.act.shape[0]
        src = None if fill is None else fill.to(cut.act.dtype).expand(cut.act.shape[1:])
        with eval_mode(self.model), torch.inference_mode():
            if self._tail is not None and self._linear is None:
                self._linear = _LinearStart.build(self._tail) or False
            if self._tail is not None and self._linear:
                fast = self._linear.logits(cut, sets, src)
                if self._linear.checked:
                    return fast
                few = list(sets[:2])  # the check: the first two ablations, recomputed the plain way
                plain = self.tail(cut, _replaced(cut.act, few, src)).reshape(len(few), b, -1)
                if torch.allclose(fast[:len(few)], plain, rtol=1e-4, atol=1e-4):
                    self._linear.checked = True
                    return fast
                self._linear = False
            return self.tail(cut, _replaced(cut.act, sets, src)).reshape(len(sets), b, -1)


def _replaced(act: torch.Tensor, sets: Sequence[Sequence[int]], src: torch.Tensor | None) -> torch.Tensor:
    """``act`` (B, C, h, w) repeated once per set, copy j with the channels of ``sets[j]``
    replaced by zero or ``src`` (C, h, w): (len(sets) * B, C, h, w), copy-major."""
    b = act.shape[0]
    acts = act.repeat(len(sets), 1, 1, 1)
    for j, chans in enumerate(sets):
        if not chans:
            continue
        ch = torch.as_tensor(list(chans), dtype=torch.long, device=acts.device)
        rows = acts[j * b:(j + 1) * b]
        if src is None:
            rows[:, ch] = 0
        else:
            rows[:, ch] = src[ch]
    return acts


_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity)


class _LinearStart:
    """A tail whose every use of the layer's output is a convolution (through eval-mode dropout):
    ``conv(act with channels S replaced) = conv(act) - conv_without_bias((act - fill)[S], W[:, S])``,
    so an ablation costs the removed channels' share of those convolutions plus the rest."""

    def __init__(self, convs: list[nn.Conv2d], rest: torch.fx.GraphModule):
        self.convs, self.rest = convs, rest
        self.checked = False

    @classmethod
    def build(cls, tail: torch.fx.GraphModule) -> "_LinearStart | None":
        modules = dict(tail.named_modules())
        nodes = list(tail.graph.nodes)
        act = nodes[0]
        skip: set[Any] = {act}
        convs: list[Any] = []
        for user in list(act.users):
            node = user
            while node.op == "call_module" and isinstance(modules.get(node.target), _PASS_THROUGH) and len(node.users) == 1:
                skip.add(node)
                node = next(iter(node.users))
            m = modules.get(node.target) if node.op == "call_module" else None
            if not (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
                    and len(node.all_input_nodes) == 1 and not node.kwargs):
                return None
            if node not in convs:
                convs.append(node)
        graph = torch.fx.Graph()
        env: dict[Any, Any] = {c: graph.placeholder(f"z_{i}") for i, c in enumerate(convs)}
        for node in nodes:
            if node in skip or node in env:
                continue
            env[node] = graph.node_copy(node, lambda a: env[a])
        return cls([modules[c.target] for c in convs], torch.fx.GraphModule(tail, graph))

    def logits(self, cut: Cut, sets: Sequence[Sequence[int]], src: torch.Tensor | None) -> torch.Tensor:
        b, g = cut.act.shape[0], len(sets)
        if "linear" not in cut.cache:
            cut.cache["linear"] = [conv(cut.act) for conv in self.convs]
        moved = cut.act if src is None else cut.act - src  # what removing a channel takes away
        zs = []
        for conv, z0 in zip(self.convs, cut.cache["linear"]):
            w = conv.weight
            if all(len(s) == 1 for s in sets):  # one channel each: all copies at once
                ch = torch.as_tensor([s[0] for s in sets], dtype=torch.long, device=w.device)
                if w.shape[2:] == (1, 1) and conv.padding == (0, 0):  # 1x1: an outer product
                    part = moved[:, ch, ::conv.stride[0], ::conv.stride[1]].transpose(0, 1)[:, :, None]  # (g, B, 1, h, w)
                    z = torch.addcmul(z0[None], w[:, ch, 0, 0].T[:, None, :, None, None], part, value=-1)
                else:
                    d = torch.stack([torch.nn.functional.conv2d(moved[:, c:c + 1], w[:, c:c + 1], None, conv.stride,
                                                                conv.padding, conv.dilation) for c in ch.tolist()])
                    z = z0[None] - d
            else:
                z = z0[None].repeat(g, *([1] * z0.dim()))
                for j, chans in enumerate(sets):
                    if chans:
                        ch = torch.as_tensor(list(chans), dtype=torch.long, device=w.device)
                        z[j] -= torch.nn.functional.conv2d(moved[:, ch], w[:, ch], None, conv.stride, conv.padding, conv.dilation)
            zs.append(z.reshape(g * b, *z0.shape[1:]))
        return _check_logits(self.rest(*zs, *[_repeat(v, g) for v in cut.frontier])).float().reshape(g, b, -1)


# ---------------------------------------------------------------- scoring ablations


@dataclass
class Effects:
    """Scores of the intact network (row 0) and of each ablation (row 1 + i for ``sets[i]``)
    over ``images`` images. ``accuracy`` (V,) in [0, 1]: top-1 equals the label; ``probability``
    (V,): mean softmax probability of the label; ``logit`` (V,): mean logit of the label.
    ``class_count`` (K,) images per label class; ``class_accuracy``/``class_probability`` (V, K):
    the same per label class (NaN for a class without images)."""

    sets: list[list[int]]
    images: int
    accuracy: np.ndarray
    probability: np.ndarray
    logit: np.ndarray
    class_count: np.ndarray
    class_accuracy: np.ndarray
    class_probability: np.ndarray

    def drop(self, metric: str) -> np.ndarray:
        """(len(sets),) intact minus ablated: accuracy and probability in points (x100), logit as is."""
        v = getattr(self, metric)
        scale = 1.0 if metric == "logit" else 100.0
        return (v[0] - v[1:]) * scale


@dataclass
class _Sums:
    variants: int
    n: int = 0
    correct: np.ndarray = field(init=False)
    prob: np.ndarray = field(init=False)
    logit: np.ndarray = field(init=False)
    count_c: np.ndarray | None = None
    correct_c: np.ndarray | None = None
    prob_c: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.correct = np.zeros(self.variants, np.float64)
        self.prob = np.zeros(self.variants, np.float64)
        self.logit = np.zeros(self.variants, np.float64)

    def add(self, rows: slice, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``logits`` (g, B, K) for variants ``rows``; ``labels`` (B,)."""
        g, b, k = logits.shape
        if self.count_c is None:
            self.count_c = np.zeros(k, np.int64)
            self.correct_c = np.zeros((self.variants, k), np.float64)
            self.prob_c = np.zeros((self.variants, k), np.float64)
        assert self.correct_c is not None and self.prob_c is not None
        lab = labels.to(logits.device).long()
        idx = lab[None, :, None].expand(g, b, 1)
        prob = torch.softmax(logits.double(), dim=2).gather(2, idx)[..., 0]
        logit = logits.double().gather(2, idx)[..., 0]
        correct = (logits.argmax(2) == lab[None]).double()
        self.correct[rows] += correct.sum(1).cpu().numpy()
        self.prob[rows] += prob.sum(1).cpu().numpy()
        self.logit[rows] += logit.sum(1).cpu().numpy()
        lab_np = lab.cpu().numpy()
        if rows.start == 0:  # the intact row comes first for every batch: count the labels once
            np.add.at(self.count_c, lab_np, 1)
        for v, (c_row, p_row) in enumerate(zip(correct.cpu().numpy(), prob.cpu().numpy())):
            np.add.at(self.correct_c[rows.start + v], lab_np, c_row)
            np.add.at(self.prob_c[rows.start + v], lab_np, p_row)

    def result(self, sets: list[list[int]]) -> Effects:
        if self.n == 0 or self.count_c is None:
            raise UsageError("no images were measured")
        assert self.correct_c is not None and self.prob_c is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            ca = np.where(self.count_c > 0, self.correct_c / self.count_c, np.nan)
            cp = np.where(self.count_c > 0, self.prob_c / self.count_c, np.nan)
        return Effects(sets=sets, images=self.n, accuracy=self.correct / self.n, probability=self.prob / self.n,
                       logit=self.logit / self.n, class_count=self.count_c.copy(), class_accuracy=ca, class_probability=cp)


def copies_per_pass(act: torch.Tensor, *, budget: int = 1 << 22) -> int:
    """How many ablated copies of a batch ``act`` (B, C, h, w) to stack into one tail batch:
    about ``budget`` layer-output elements (16 MB of float32) per tail call, at least one: larger
    stacks were slower on CPU (SqueezeNet features.12, batch 32: 2x slower at 24 copies than at 1)."""
    per_copy = max(1, act.numel())
    return max(1, budget // per_copy)


#: Ablations per block: the unit of checkpointing (a finished block is saved), of ``--shard``
#: (shards take whole blocks) and of the Ray tasks. Every run cuts a unit list into the same
#: blocks, and a block's numbers depend on nothing else, so a resumed, sharded or Ray run gives
#: the same bytes as one uninterrupted run.
BLOCK_UNITS = 16
#: Layer outputs (and what the tail reuses per batch) kept in memory for every block up to this
#: many bytes; above it each block runs the network up to the layer again, and blocks grow so
#: that happens at most MAX_HEAD_PASSES times.
KEEP_CUT_BYTES = 1 << 30
MAX_HEAD_PASSES = 8


@dataclass
class BlockSums:
    """Sums over the images for one block of ablations (g of them): images scored correct,
    probability and logit of the label (g,) float64, and per label class (g, K) float64."""

    correct: np.ndarray
    prob: np.ndarray
    logit: np.ndarray
    correct_c: np.ndarray
    prob_c: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"correct": self.correct, "prob": self.prob, "logit": self.logit, "correct_c": self.correct_c,
                "prob_c": self.prob_c}

    @classmethod
    def from_arrays(cls, a: Any) -> "BlockSums":
        return cls(*(np.asarray(a[k], np.float64) for k in ("correct", "prob", "logit", "correct_c", "prob_c")))


def blocks(n: int, *, size: int = BLOCK_UNITS) -> list[range]:
    """Positions 0..n-1 cut into consecutive blocks of ``size`` (the last may be shorter)."""
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


class Sweep:
    """Ablations of one layer over one image set, block by block.

    :meth:`prepare` runs every batch up to the layer once: the intact scores, the labels (-1
    becomes the intact top-1), the layer's mean (for mean-ablation) and, when they fit in
    ``keep_bytes``, the cut batches kept for every block. :meth:`block` then scores a list of
    ablations (each a list of channels replaced together) over all images; :meth:`effects`
    assembles blocks into :class:`Effects`. ``batches`` is called once per pass and yields
    (x (B, ...), labels (B,)) in the same order every time."""

    def __init__(self, split: LayerSplit, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], *,
                 mean: bool = False, copies: int | None = None, keep_bytes: int = KEEP_CUT_BYTES,
                 on_batch: Callable[[int], None] | None = None):
        self.split, self.batches, self.mean, self.copies = split, batches, mean, copies
        self.keep_bytes, self.on_batch = keep_bytes, on_batch
        self.labels: list[torch.Tensor] = []
        self.kept: list[Cut] | None = None
        self.fill: torch.Tensor | None = None
        self.intact = _Sums(1)
        self.act_bytes = 0  # bytes of the layer's output over all images (what keeping costs)

    @property
    def images(self) -> int:
        return self.intact.n

    def prepare(self) -> None:
        kept: list[Cut] | None = []
        total: torch.Tensor | None = None
        for x, labels in self.batches():
            cut = self.split.cut(x)
            labels = labels.clone()
            own = labels < 0
            if bool(own.any()):
                labels[own] = cut.logits.argmax(1).to(labels.device)[own]
            if int(labels.max()) >= cut.logits.shape[1]:
                raise UsageError(f"label index {int(labels.max())} out of range: the model has {cut.logits.shape[1]} classes")
            self.labels.append(labels)
            self.intact.add(slice(0, 1), cut.logits[None], labels)
            self.intact.n += cut.act.shape[0]
            if self.mean:
                act = cut.act.float()
                if total is not None and act.shape[1:] != total.shape:
                    raise UsageError("--ablation mean needs every image at one size (keep --crop, or give --size HxW)")
                total = act.sum(0) if total is None else total + act.sum(0)
            size = cut.act.numel() * cut.act.element_size()
            size += sum(v.numel() * v.element_size() for v in cut.frontier if isinstance(v, torch.Tensor))
            self.act_bytes += size
            if kept is not None and 3 * self.act_bytes <= self.keep_bytes:  # 3x: room for what the tail caches
                kept.append(cut)
            else:
                kept = None
            if self.on_batch is not None:
                self.on_batch(cut.act.shape[0])
        self.kept = kept
        if self.mean and total is not None:
            self.fill = total / self.intact.n

    def block_size(self, units: int) -> int:
        """Ablations per block for ``units`` of them: BLOCK_UNITS when the cut batches are kept,
        else large enough that the network runs up to the layer at most MAX_HEAD_PASSES times."""
        if self.kept is not None:
            return BLOCK_UNITS
        return max(BLOCK_UNITS, -(-units // MAX_HEAD_PASSES))

    def _cuts(self) -> Iterator[tuple[Cut, torch.Tensor]]:
        if self.kept is not None:
            yield from zip(self.kept, self.labels)
            return
        for i, (x, _) in enumerate(self.batches()):
            yield self.split.cut(x), self.labels[i]

    def block(self, sets: Sequence[Sequence[int]]) -> BlockSums:
        """Sums over every image for each ablation of ``sets``."""
        plan = [list(s) for s in sets]
        sums = _Sums(len(plan))
        for cut, labels in self._cuts():
            g_max = self.copies or copies_per_pass(cut.act)
            for s0 in range(0, len(plan), g_max):
                chunk = plan[s0:s0 + g_max]
                sums.add(slice(s0, s0 + len(chunk)), self.split.ablate(cut, chunk, fill=self.fill), labels)
            sums.n += cut.act.shape[0]
        if sums.count_c is None:
            raise UsageError("no images were measured")
        assert sums.correct_c is not None and sums.prob_c is not None
        return BlockSums(sums.correct, sums.prob, sums.logit, sums.correct_c, sums.prob_c)

    def effects(self, sets: Sequence[Sequence[int]], parts: Sequence[BlockSums]) -> Effects:
        """The :class:`Effects` of ``sets`` from their blocks' sums, in order."""
        it = self.intact
        if it.n == 0 or it.count_c is None:
            raise UsageError("no images were measured")
        assert it.correct_c is not None and it.prob_c is not None
        both = _Sums(1 + len(sets))
        both.n, both.count_c = it.n, it.count_c
        both.correct = np.concatenate([it.correct, *[p.correct for p in parts]])
        both.prob = np.concatenate([it.prob, *[p.prob for p in parts]])
        both.logit = np.concatenate([it.logit, *[p.logit for p in parts]])
        both.correct_c = np.concatenate([it.correct_c, *[p.correct_c for p in parts]])
        both.prob_c = np.concatenate([it.prob_c, *[p.prob_c for p in parts]])
        if len(both.correct) != 1 + len(sets):
            raise ValueError(f"{len(both.correct) - 1} ablations in the blocks, {len(sets)} asked")
        return both.result([list(s) for s in sets])


def measure(split: LayerSplit, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], sets: Sequence[Sequence[int]], *,
            fill: torch.Tensor | None = None, copies: int | None = None,
            on_batch: Callable[[int], None] | None = None) -> Effects:
    """Score the intact network and each ablation in ``sets`` (each a list of channels of the
    layer replaced together) over ``batches`` of (x (B, ...), labels (B,) class indices, or -1
    for "the intact network's top-1"). ``fill``: None replaces by zero, else a tensor
    broadcastable to one image's layer output (C, h, w) or (C, 1, 1) whose channels are used.
    ``copies``: ablated copies per tail batch (default: :func:`copies_per_pass`). ``on_batch``
    is called with each batch's image count. The batches are kept in memory (a :class:`Sweep`
    that keeps every cut, block by block as every run)."""
    listed = list(batches)
    sweep = Sweep(split, lambda: iter(listed), copies=copies, keep_bytes=1 << 62, on_batch=on_batch)
    sweep.prepare()
    sweep.fill = fill
    plan = [list(s) for s in sets]
    return sweep.effects(plan, [sweep.block([plan[i] for i in b]) for b in blocks(len(plan))])


def mean_activation(split: LayerSplit, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The layer's output averaged over the images of ``batches`` (C, h, w) float32, unit by unit.
    Images must give outputs of one size (UsageError otherwise)."""
    total: torch.Tensor | None = None
    n = 0
    for x in batches:
        act = split.cut(x).act.float()
        if total is not None and act.shape[1:] != total.shape:
            raise UsageError("--ablation mean needs every image at one size (keep --crop, or give --size HxW)")
        total = act.sum(0) if total is None else total + act.sum(0)
        n += act.shape[0]
    if total is None or n == 0:
        raise UsageError("no images to average")
    return total / n


# ---------------------------------------------------------------- rankings and curves


def ranking(effects: Effects, *, by: str = "probability") -> list[int]:
    """Positions into ``effects.sets``, largest drop in ``by`` first; ties broken by the other
    metrics (probability, accuracy, logit) and then by position, so the order is total."""
    if by not in METRICS:
        raise UsageError(f"unknown metric {by!r}; choose {', '.join(METRICS)}")
    keys = [effects.drop(by)] + [effects.drop(m) for m in METRICS if m != by]
    pos = np.arange(len(effects.sets))
    # np.lexsort sorts by the last key first; negate for descending drops
    return [int(i) for i in np.lexsort([pos] + [-np.round(k, 9) for k in reversed(keys)])]


def hurt_classes(effects: Effects, unit: int, *, k: int = 3) -> list[tuple[int, float, float, int]]:
    """The ``k`` label classes that ablation ``unit`` hurts most: (class, accuracy drop in
    points, probability drop in points, images of the class), biggest accuracy drop first (then
    probability drop, then class index); only classes with images and a positive drop."""
    count = effects.class_count
    have = np.nonzero(count > 0)[0]
    acc = (effects.class_accuracy[0, have] - effects.class_accuracy[1 + unit, have]) * 100
    prob = (effects.class_probability[0, have] - effects.class_probability[1 + unit, have]) * 100
    order = np.lexsort([have, -np.round(prob, 9), -np.round(acc, 9)])
    out = []
    for i in order:
        if acc[i] <= 0 and prob[i] <= 0:
            continue
        out.append((int(have[i]), float(acc[i]), float(prob[i]), int(count[have[i]])))
        if len(out) == k:
            break
    return out


def curve_points(n: int, *, most: int = 33) -> list[int]:
    """How many units to have removed at each point of a curve: 0..n, all when n < ``most``,
    else ``most`` points evenly spaced (always 0 and n)."""
    if n + 1 <= most:
        return list(range(n + 1))
    return sorted({int(round(v)) for v in np.linspace(0, n, most)})


def curve_orders(order: Sequence[int], *, seeds: Sequence[int] = RANDOM_SEEDS) -> dict[str, list[int]]:
    """The removal orders of the curves over positions 0..n-1: 'most' (``order``, most important
    first), 'least' (reversed) and 'random-S' for each seed (numpy's PCG64, so reruns agree)."""
    n = len(order)
    out = {"most": list(order), "least": list(reversed(order))}
    for s in seeds:
        out[f"random-{s}"] = [int(i) for i in np.random.default_rng(s).permutation(n)]
    return out


def curve_sets(units: Sequence[Sequence[int]], orders: dict[str, list[int]], points: Sequence[int]) -> list[tuple[str, int, list[int]]]:
    """(order name, units removed, channels removed) for each point of each order: the union of
    the first k units of the order."""
    out = []
    for name, order in orders.items():
        for k in points:
            chans = sorted({c for u in order[:k] for c in units[u]})
            out.append((name, k, chans))
    return out


__all__ = ["BLOCK_UNITS", "FILLS", "METRICS", "BlockSums", "Cut", "Effects", "LayerSplit", "Sweep", "blocks", "copies_per_pass", "curve_orders", "curve_points", "curve_sets",
           "hurt_classes", "mean_activation", "measure", "ranking"]
