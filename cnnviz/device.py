"""Where a model runs and in what precision: ``--device`` and ``--precision``, resolved in one place.

Every command that runs a model (maps, rf, maximize, cam, top, report) takes the same two options
(cli.common.device_options) and resolves them here with :func:`place`:

* ``--device auto`` picks CUDA, then Apple's MPS, then the CPU. When it picks an accelerator it says
  so in one line on stderr, ``cnnviz: device: cuda:0 (NVIDIA A100-SXM4-80GB)``; on a machine with
  none it says nothing (the CPU is what a CPU-only user expects, and their stderr stays as before).
  An explicit device is used as given, silently; one that is not there is a one-line error.
* ``--precision fp32`` (the default, except for maximize) computes in float32; ``bf16`` autocasts the
  network's forward pass (and the backward pass of gradient methods) to bfloat16; ``auto`` uses bf16
  where the hardware computes it natively (a CUDA GPU with bf16, a CPU with AVX512-BF16/AMX), else
  fp32. Captured maps and reported values are float32 whatever the precision (capture.Capture).

A leaf beside util: imports only torch and errors.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import torch

from .errors import CnnvizError, UsageError

__all__ = ["DEVICES", "PRECISIONS", "Placement", "autocast", "bf16_native", "describe_device", "place",
           "resolve_device", "resolve_precision"]

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


def _has_mps() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; 'cpu' | 'cuda' | 'cuda:1' | 'mps' checked:
    UsageError for a name that is no device, CnnvizError for one this machine does not have."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _has_mps() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CnnvizError(f"--device {name}: no CUDA GPU is available to this PyTorch build; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CnnvizError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not _has_mps():
        raise CnnvizError(f"--device {name}: Apple's MPS backend is not available here; use --device cpu or auto")
    return dev


def describe_device(device: torch.device) -> str:
    """'cuda:0 (NVIDIA A100-SXM4-80GB)', 'mps' or 'cpu': the device as the stderr line names it."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def bf16_native(device: torch.device) -> bool:
    """True when bfloat16 autocast is fast here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device, *, bf16_refused: str | None = None) -> str:
    """'fp32' or 'bf16': what ``precision`` ('auto', 'fp32', 'bf16') means on ``device``.
    ``bf16_refused``: why this computation cannot run in bf16 (then 'bf16' is a UsageError saying
    so and 'auto' is fp32)."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_refused is None and bf16_native(device) else "fp32"
    if precision == "bf16":
        if bf16_refused is not None:
            raise UsageError(f"--precision bf16: {bf16_refused}; use --precision fp32")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CnnvizError(f"--precision bf16: {describe_device(device)} does not compute bfloat16; use --precision fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The context a forward (and backward) pass runs in: bfloat16 autocast for 'bf16' (a resolved
    precision), and explicitly none for 'fp32', so that an fp32 step inside a bf16 caller (the
    report's Grad-CAMs inside its bf16 maps) computes in float32. On a CUDA device, 'fp32' also
    turns TF32 off inside (PyTorch lets cuDNN convolutions use TF32, 10-bit mantissas, by default):
    fp32 maps then equal the CPU's within float32 rounding (scripts/device_check.py)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return _FP32(device)


class _FP32:
    """float32 inside: autocast off where a caller turned it on, TF32 off on CUDA. Reusable (the
    optimiser enters it at every step)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._stacks: list[contextlib.ExitStack] = []

    def __enter__(self) -> None:
        stack = contextlib.ExitStack()
        if torch.is_autocast_enabled(self.device.type):
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
        if self.device.type == "cuda":
            stack.enter_context(_no_tf32())
        self._stacks.append(stack)

    def __exit__(self, *exc: object) -> None:
        self._stacks.pop().close()


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside; the flags restored after."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@dataclass(frozen=True)
class Placement:
    """A resolved --device and --precision ('fp32' or 'bf16')."""

    device: torch.device
    precision: str

    def autocast(self, model: torch.nn.Module | None = None) -> contextlib.AbstractContextManager[object]:
        """The autocast context of :attr:`precision` (see :func:`autocast`) on the device of
        ``model``'s parameters (a model the caller passed in runs where it is), else :attr:`device`."""
        device = self.device
        if model is not None:
            device = next((p.device for p in model.parameters()), device)
        return autocast(self.precision, device)


def place(device: str = "auto", precision: str = "fp32", *, say: Callable[[str], None] | None = None,
          bf16_refused: str | None = None) -> Placement:
    """Resolve ``device`` and ``precision`` (see the module docstring); with ``say``, 'auto'
    choosing an accelerator is announced as one line, ``cnnviz: device: cuda:0 (NAME)`` (plus
    ', precision bf16' when 'auto' precision chose bf16). Raises before any weights are read."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, bf16_refused=bf16_refused)
    if say is not None and (device or "auto").strip().lower() == "auto" and dev.type != "cpu":
        say(f"cnnviz: device: {describe_device(dev)}" + (", precision bf16" if precision == "auto" and prec == "bf16" else ""))
    return Placement(dev, prec)
