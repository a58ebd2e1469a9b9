"""The conv-layer catalog's data: every ``nn.Conv2d`` in ``named_modules()`` order as a ConvLayer
record, with aliases, output shapes and the ``--layer`` selectors. The receptive-field columns are
filled by ``cnnviz.rf.catalog`` (rf sits above this module: it reads the records, never the reverse).

Index 0 is the first Conv2d ``named_modules()`` yields. Aliases follow Keras' application names
where they map one to one: VGG ``block3_conv2``, ResNet ``conv4_block2_1_conv`` (``_0_conv`` for a
block's shortcut conv).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import CnnvizError
from .select import select_indices
from .util import device_of, eval_mode, first_line, input_channels, pair


@dataclass
class ConvLayer:
    """One Conv2d of a model. Spatial pairs are (height, width)."""

    index: int
    name: str
    alias: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int
    params: int
    output_shape: tuple[int, int, int] | None = None
    # Receptive field (filled by cnnviz.rf.catalog): an int when both axes agree, else [h, w]; None when it cannot
    # be computed. center0 is a float only when not integral (e.g. 0.5 after a 2x2 pool).
    receptive_field: int | list[int] | None = None
    jump: int | list[int] | None = None
    center0: int | float | list[int | float] | None = None
    # a detector's conv that runs more than once (a head shared by pyramid levels): per call, its
    # level, output_shape and field (cnnviz.rf.detector_fields); the columns above hold the first
    levels: list[dict[str, Any]] | None = None
    module: nn.Conv2d | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: spatial pairs as 2-element lists, no module."""
        d = asdict(self) if self.module is None else asdict(_without_module(self))
        d.pop("module", None)
        if d.get("levels") is None:  # only a detector's convs that run on several pyramid levels have them
            d.pop("levels", None)
        for k in ("kernel_size", "stride", "dilation", "output_shape"):
            if d[k] is not None:
                d[k] = list(d[k])
        if not isinstance(d["padding"], str):
            d["padding"] = list(d["padding"])
        return d

    @property
    def slug(self) -> str:
        """File-name-safe form of the name, e.g. 'layer3.2.conv2'."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)


def _without_module(layer: ConvLayer) -> ConvLayer:
    return ConvLayer(**{k: v for k, v in layer.__dict__.items() if k != "module"})


def _pair(v: Any) -> tuple[int, int] | str:
    return v if isinstance(v, str) else pair(v)  # padding may be 'same' / 'valid'


def _vgg_aliases(model: nn.Module) -> dict[str, str]:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        return {}
    out, block, conv = {}, 1, 0
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            conv += 1
            out[f"features.{i}"] = f"block{block}_conv{conv}"
        elif isinstance(m, nn.MaxPool2d):
            block, conv = block + 1, 0
    return out


def _resnet_aliases(names: Iterable[str]) -> dict[str, str]:
    out = {}
    for n in names:
        if n == "conv1":
            out[n] = "conv1_conv"
            continue
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(?:conv(\d)|downsample\.0)", n)
        if m:
            stage, block, k = int(m.group(1)) + 1, int(m.group(2)) + 1, m.group(3) or "0"
            out[n] = f"conv{stage}_block{block}_{k}_conv"
    return out


def _aliases(model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    from torchvision.models import VGG, ResNet

    if isinstance(model, VGG):
        return _vgg_aliases(model)
    if isinstance(model, ResNet):
        return _resnet_aliases(names)
    return {}


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """Every Conv2d of ``model`` in ``named_modules()`` order (no output shapes)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    aliases = _aliases(model, [n for n, _ in convs])
    return [
        ConvLayer(
            index=i,
            name=n,
            alias=aliases.get(n, ""),
            in_channels=m.in_channels,
            out_channels=m.out_channels,
            kernel_size=_pair(m.kernel_size),  # type: ignore[arg-type]
            stride=_pair(m.stride),  # type: ignore[arg-type]
            padding=_pair(m.padding),
            dilation=_pair(m.dilation),  # type: ignore[arg-type]
            groups=m.groups,
            params=sum(p.numel() for p in m.parameters()),
            module=m,
        )
        for i, (n, m) in enumerate(convs)
    ]


def output_shapes(model: nn.Module, layers: Sequence[ConvLayer], *, size: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Run the model once on a (1, 3, H, W) input and record each conv's output (C, H, W).

    Runs on the model's own device: a model built on 'meta' costs no compute."""
    seen: dict[int, tuple[int, int, int]] = {}
    by_id = {id(layer.module): layer.index for layer in layers}

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        idx = by_id[id(mod)]
        if idx not in seen:
            seen[idx] = tuple(int(s) for s in out.shape[1:])  # type: ignore[assignment]

    handles = [layer.module.register_forward_hook(hook) for layer in layers if layer.module is not None]
    try:
        with eval_mode(model), torch.inference_mode():
            model(torch.zeros(1, input_channels(model), *size, device=device_of(model)))
    except RuntimeError as exc:
        raise CnnvizError(f"input size {size[0]}x{size[1]} is not accepted by this model ({first_line(exc, 200)})") from None
    finally:
        for h in handles:
            h.remove()
    return [seen.get(layer.index) for layer in layers]  # type: ignore[misc]


def select_layers(layers: Sequence[ConvLayer], specs: str | Iterable[str], *, model_name: str = "") -> list[ConvLayer]:
    """Resolve ``--layer`` selectors (index, -1, name, alias, slice, list, glob, 'all') in catalog order."""
    hint = f"see 'cnnviz layers --model {model_name}'" if model_name else ""
    idx = select_indices(
        specs, len(layers), what="layer", names=[(layer.name, layer.alias) for layer in layers], hint=hint
    )
    return [layers[i] for i in sorted(idx)]
