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


SHEET_MAPS = 8  # maps per layer on an image's sheet (build draws it, the image page links its tiles)


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
    # (layer, channel) -> {'top': [[image id, score, unit y, unit x], ...], 'bottom': [...]} (report.examples)
    examples: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    example_fields: dict[int, list[int] | None] = field(default_factory=dict)  # layer -> lo, hi, jump (y, x each)
    example_images: dict[str, dict[str, Any]] = field(default_factory=dict)  # image id -> {src, name, w, h}
    circuits: Any = None  # report.circuits' wiring of the whole model ({conv index: Wiring}), None if untraceable
    ablation: dict[int, dict[str, Any]] = field(default_factory=dict)  # layer -> channelpage.ablation_entry
    compare_links: dict[tuple[int, int], list[tuple[str, str]]] = field(default_factory=dict)  # (layer, ch) -> [(label, href)]
    index_info: dict[str, Any] | None = None  # the `cnnviz top` index the examples come from
    atlas: dict[int, dict[str, Any]] = field(default_factory=dict)  # layer -> its row on the model page (atlas.py)
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
