"""Small helpers shared across the package. A leaf: imports only ``errors``, torch and the stdlib,
so any module may use it without creating an import cycle."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .errors import UsageError, first_line  # first_line lives in errors (torch-free); re-exported here

__all__ = ["device_of", "eval_mode", "first_line", "input_channels", "layer_names", "pair", "parse_size"]


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters ('cpu' for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside the block; the previous train/eval mode restored afterwards, also on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def input_channels(model: nn.Module) -> int:
    """Channels the model's input has: the first Conv2d's in_channels (3 for RGB classifiers)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def parse_size(size: str | int | Sequence[int]) -> tuple[int, int]:
    """'224' -> (224, 224); '224x320' -> (224, 320) as (height, width)."""
    if isinstance(size, int):
        hw = (size, size)
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", size)
        if not m:
            raise UsageError(f"malformed size {size!r}; use e.g. 224 or 224x320 (height x width)")
        hw = (int(m.group(1)), int(m.group(2) or m.group(1)))
    else:
        hw = (int(size[0]), int(size[1]))
    if min(hw) < 1 or max(hw) > 8192:
        raise UsageError(f"size {hw[0]}x{hw[1]} out of range; use 1..8192 pixels per side")
    return hw


def pair(v: Any) -> tuple[int, int]:
    """A PyTorch size argument (int, or a 1- or 2-element sequence) as (height, width) ints;
    an empty sequence is (1, 1)."""
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (1, 1)
    return (int(v), int(v))


def layer_names(layers: Iterable[Any]) -> list[str]:
    """Layer names from ConvLayer records (anything with ``.name``) or names."""
    return [str(getattr(layer, "name", layer)) for layer in layers]


def class_name(names: Sequence[str], index: int) -> str:
    """The name of class ``index``, or 'class N' when the model names no such class."""
    return names[index] if 0 <= index < len(names) else f"class {index}"
