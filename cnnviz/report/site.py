"""What a report shows: the model, its inputs and layers, and every picture and number the build
phases computed (filled in by build.py, read by pages.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RFError
from ..layers import ConvLayer
from ..models import LoadedModel
from ..rf import layer_fields


@dataclass
class ReportImage:
    """One input: ``x`` (3, H, W) float32 normalised for the model, ``display`` (H, W, 3) uint8
    (the same pixels), ``name`` shown on the pages (any text: always escaped)."""

    name: str
    x: np.ndarray
    display: np.ndarray
    id: str = ""
    source: str = ""  # the file it came from, to match other commands' outputs (see build.include)


@dataclass
class Site:
    """Everything the pages show, filled in by the build phases."""

    lm: LoadedModel
    images: list[ReportImage]
    layers: list[ConvLayer]
    every: list[ConvLayer]
    stage: str
    top: int
    cmap: str
    size: tuple[int, ...]
    wfp: str
    preprocessing: str
    include: list[str]  # folders of other cnnviz outputs to show
    net: Any  # the network for geometry (shapes, fields): lm.model or its 'meta' twin
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # image id -> thumb entry
    fields: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)  # (h, w) -> {name: Field}
    rf: dict[int, dict[str, Any]] = field(default_factory=dict)  # layer index -> rf picture entry
    profile: dict[str, Any] | None = None
    filters: dict[int, dict[str, Any]] = field(default_factory=dict)
    maps: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (image id, layer) -> entry
    sheets: dict[str, dict[str, Any]] = field(default_factory=dict)
    maximized: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    included: list[dict[str, Any]] = field(default_factory=list)  # {src, name, layer, image}
    examples: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # (layer, channel) -> top strip
    index_info: dict[str, Any] | None = None  # the `cnnviz top` index the examples come from
    precision: str = "fp32"  # of the feature maps' forward passes ('fp32' or 'bf16', resolved)
    compare_page: str | None = None  # the comparison page with another model (report --with), if any

    def field_of(self, hw: tuple[int, ...], layer: ConvLayer) -> Any:
        if hw not in self.fields:
            try:
                self.fields[hw] = layer_fields(self.net, size=hw)
            except RFError:
                self.fields[hw] = {}
        f = self.fields[hw].get(layer.name)
        return None if f is None or isinstance(f, str) else f
