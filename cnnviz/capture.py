"""Forward hooks in a context manager: only the requested layers, early stop, always removed.

Two stages per conv layer:

* ``conv``: exactly the Conv2d's output, cloned in the hook (VGG's ``ReLU(inplace=True)`` would
  otherwise overwrite it before anyone reads it);
* ``act``: what the network passes on after the activation that follows the conv in the forward
  pass, found on the model's torch.fx graph (cnnviz.graph, whose op table says what is an
  activation) by walking from the conv through normalisation, residual adds, dropout and
  identities to the first activation: ``relu(conv)`` in VGG, ``relu(bn(conv))`` for a ResNet
  block's conv1/conv2, the block output (after add and ReLU) for conv3 and downsample.0.

The forward pass is cut short (a private exception) once every requested output has been seen, so
later layers are never computed.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .detect import is_detector
from .errors import CnnvizError, UsageError
from .graph import PASS_KINDS, Kind, TraceError, Traced, op_name, trace
from .layers import ConvLayer
from .util import device_of, eval_mode, layer_names

Stage = Literal["conv", "act"]
STAGES = ("conv", "act")


class _StopForward(Exception):
    """Raised inside a hook once every requested output is stored: ends the forward pass early."""


@dataclass(frozen=True)
class HookPoint:
    """Where a stage of a conv layer is read: the output of ``module`` on its ``call``-th call
    (0-based) during one forward pass."""

    module: str
    call: int = 0


# traced graph -> {name prefix ('' or a detector's 'backbone.'): conv name -> HookPoint or why none}
_ACT_PLANS: "weakref.WeakKeyDictionary[Traced, dict[str, dict[str, HookPoint | str]]]" = weakref.WeakKeyDictionary()


def _module_stack(node: Any) -> list[str]:
    """Paths of the modules a node's call sits in, outermost first (fx and torch.export both keep
    (path, type) pairs in the node's 'nn_module_stack'; export's keys are not paths)."""
    return [str(v[0]) if isinstance(v, tuple) else str(k) for k, v in (node.meta.get("nn_module_stack") or {}).items()]


def _act_plan(model: nn.Module) -> dict[str, HookPoint | str]:
    """conv name -> HookPoint of its activation, or a string saying why there is none."""
    # A detector's forward is not traceable as a whole (data-dependent box selection): its
    # backbone is, and the act stage is read there, under the detector's module names.
    prefix = "backbone." if is_detector(model) else ""
    try:
        traced = trace(model.backbone if prefix else model)
    except TraceError as exc:
        raise CnnvizError(f"--stage act is not available: {exc}; use --stage conv") from None
    if prefix in _ACT_PLANS.get(traced, {}):
        return _ACT_PLANS[traced][prefix]
    plan: dict[str, HookPoint | str] = {}
    if prefix:
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith(prefix):
                plan[name] = (f"the act stage is read on the detector's backbone only ({name} is in its heads, "
                              f"which run on data-dependent boxes and pyramid levels)")
    for n in traced.nodes:
        if traced.kinds[n] is not Kind.CONV or prefix + n.target in plan:
            continue
        cur, found, why = n, None, ""
        for _ in range(16):
            users = list(cur.users)
            if len(users) != 1:
                why = f" (its output feeds {len(users)} ops: {', '.join(op_name(u) for u in users[:3])})" if users else ""
                break
            user = users[0]
            if traced.kinds[user] is Kind.ACTIVATION:
                found = user
                break
            if traced.kinds[user] not in PASS_KINDS:
                why = f" (the next op, {op_name(user)}, is not one)"
                break
            cur = user
        if found is None:
            plan[prefix + n.target] = f"no activation directly follows {prefix + n.target}{why}"
        elif found.op == "call_module":
            plan[prefix + n.target] = HookPoint(prefix + found.target, traced.call_index[found])
        else:
            # A functional activation (F.relu in a block's forward): readable as that block's output
            # when it is the block's last operation.
            stack = _module_stack(found)
            owner = stack[-1] if stack else None
            last = owner is not None and all(owner not in _module_stack(u) for u in found.users)
            if owner and last and traced.calls.get(owner, 0) == 0:
                plan[prefix + n.target] = HookPoint(prefix + owner, 0)
            else:
                plan[prefix + n.target] = f"the activation after {prefix + n.target} is a function call that cannot be hooked"
    _ACT_PLANS.setdefault(traced, {})[prefix] = plan
    return plan


def hook_points(model: nn.Module, layers: Sequence[ConvLayer | str], stage: Stage = "conv") -> list[HookPoint]:
    """The HookPoint to read for each layer at ``stage`` (same order as ``layers``)."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; choose 'conv' or 'act'")
    names = layer_names(layers)
    if stage == "conv":
        return [HookPoint(n, 0) for n in names]
    plan = _act_plan(model)
    points = []
    for n in names:
        p = plan.get(n, f"{n} is not a Conv2d of this model")
        if isinstance(p, str):
            raise UsageError(f"--stage act is not available for layer {n}: {p}; use --stage conv")
        points.append(p)
    return points


class Capture:
    """Forward hooks on the requested points; use as a context manager (hooks removed on exit).

    ``run(x)`` returns {point: tensor} for one forward pass of ``x`` (moved to the model's device),
    stopped after the last point fired. Tensors are copies: detached float32 copies on the CPU
    (computed under inference_mode) whatever the device and precision (bf16 autocast) the model
    ran in, so that what is rendered from them is the same; ``on_cpu=False`` keeps detached clones
    on the model's device in the dtype computed (a caller that reduces them there, cnnviz.scan);
    ``grad=True`` keeps clones attached to the graph, on the device.

    With ``on_output(point, tensor)`` each output is handed over from inside the hook, as soon as it
    is computed, and not stored (``run`` then returns {}): a caller that renders and drops it keeps
    peak memory at one layer's output however many layers are hooked. An exception raised by the
    callback ends the forward pass and propagates out of ``run``.
    """

    def __init__(
        self,
        model: nn.Module,
        points: Sequence[HookPoint],
        *,
        grad: bool = False,
        on_cpu: bool = True,
        stop_early: bool = True,
        on_output: Callable[[HookPoint, torch.Tensor], None] | None = None,
    ):
        self.model = model
        self.points = list(dict.fromkeys(points))
        self.grad = grad
        self.on_cpu = on_cpu and not grad
        self.stop_early = stop_early
        self.on_output = on_output
        self._handles: list[Any] = []
        self._calls: dict[str, int] = {}
        self._out: dict[HookPoint, torch.Tensor] = {}
        self._seen: set[HookPoint] = set()
        modules = dict(model.named_modules())
        missing = [p.module for p in self.points if p.module not in modules]
        if missing:
            raise UsageError(f"model has no module {missing[0]!r}")
        self._modules = {p.module: modules[p.module] for p in self.points}
        self._wanted: dict[str, set[int]] = {}
        for p in self.points:
            self._wanted.setdefault(p.module, set()).add(p.call)

    def __enter__(self) -> "Capture":
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._out = {}  # partial results of an interrupted run

    def _make_hook(self, name: str) -> Any:
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            if call not in self._wanted[name]:
                return
            if isinstance(out, (tuple, list)):
                out = out[0]
            point = HookPoint(name, call)
            # A clone even for the callback: an in-place op after this module would change `out`.
            # (.to(copy=True): one copy, also when `out` is already a CPU float32 tensor)
            if self.grad:
                kept = out.clone()
            elif self.on_cpu:
                kept = out.detach().to("cpu", torch.float32, copy=True)
            else:
                kept = out.detach().clone()
            self._seen.add(point)
            if self.on_output is not None:
                self.on_output(point, kept)
                del kept
            else:
                self._out[point] = kept
            if self.stop_early and len(self._seen) == len(self.points):
                raise _StopForward

        return hook

    def run(self, x: torch.Tensor) -> dict[HookPoint, torch.Tensor]:
        """One forward pass of ``x`` (N, 3, H, W); returns the outputs at every point."""
        if not self._handles:
            raise RuntimeError("Capture.run() called outside its 'with' block")
        x = x.to(device_of(self.model))  # a no-op where it is already
        self._calls.clear()
        self._out = {}
        self._seen = set()
        try:
            with eval_mode(self.model):
                if self.grad:  # also works when the caller sits inside inference_mode / no_grad
                    with torch.inference_mode(False), torch.enable_grad():
                        self.model(x)
                else:
                    with torch.inference_mode():
                        self.model(x)
        except _StopForward:
            pass
        missing = [p for p in self.points if p not in self._seen]
        self._seen = set()
        if missing:
            self._out = {}
            raise CnnvizError(f"layer {missing[0].module} did not run in the forward pass")
        out, self._out = self._out, {}
        return out


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[ConvLayer | str],
    *,
    stage: Stage = "conv",
) -> dict[str, torch.Tensor]:
    """Feature maps of ``layers`` for input batch ``x`` (N, 3, H, W): {layer name: (N, C, h, w)
    float32 on the CPU}, wherever the model runs.

    Hooks only the requested layers and stops the forward pass after the last of them.
    """
    names = layer_names(layers)
    points = hook_points(model, names, stage)
    with Capture(model, points) as cap:
        out = cap.run(x)
    return {n: out[p] for n, p in zip(names, points)}


def has_hooks(model: nn.Module) -> bool:
    """True if any module of ``model`` carries a forward hook (used by tests and sanity checks)."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
