"""The `layers` and `models` jobs: the conv-layer catalog of a model and the model list, as rows.

They write no files: the rows are the data (the CLI prints them as a table, TSV or JSON).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import models as _models
from ..detect import describe, is_detector
from ..errors import RFError
from ..models import LoadedModel, conv_counts, weight_members, weights_enum
from ..rf import catalog, layer_fields
from ..sources import ModelSpec, architecture, as_spec
from ..util import parse_size
from .inputs import model_input_size

LAYER_COLUMNS = ["index", "name", "alias", "in_channels", "out_channels", "kernel_size", "stride", "padding",
                 "dilation", "groups", "params", "output_shape", "receptive_field", "jump", "center0"]
MODEL_COLUMNS = ["name", "task", "convs", "default_weights", "weights"]


@dataclass(frozen=True, kw_only=True)
class LayersRequest:
    """`cnnviz layers`: ``size`` is the input ('224' or 'HxW') the shapes and fields are computed
    for (None: the model's input size)."""

    model: ModelSpec | str = "resnet50"
    size: str | None = None
    ignore_gates: bool = False


@dataclass(frozen=True)
class LayerTable:
    """The catalog of ``model`` (its architecture, with its preprocessing) at input ``size``
    (H, W): one dict per conv (LAYER_COLUMNS), ``note``: why some rows have no receptive field
    (None when all have one) and ``preprocessing``: what the image commands feed this model."""

    model: LoadedModel
    size: tuple[int, int]
    rows: list[dict[str, Any]]
    note: str | None
    preprocessing: str

    @property
    def params(self) -> int:
        return sum(r["params"] for r in self.rows)


def run_layers(req: LayersRequest) -> LayerTable:
    """The conv-layer catalog, from the architecture alone (never reads or downloads weights)."""
    spec = as_spec(req.model)
    arch = architecture(spec)
    hw = parse_size(model_input_size(req.size, arch))
    net = arch.model
    rows = [layer.as_dict() for layer in catalog(net, size=hw, ignore_gates=req.ignore_gates)]
    missing = [r["name"] for r in rows if r["receptive_field"] is None]
    note = None
    if missing:
        note = (f"note: no receptive field for {len(missing)} of {len(rows)} conv layers: "
                f"{rf_problem(net, hw, missing, ignore_gates=req.ignore_gates)}")
    shared = [r["name"] for r in rows if r.get("levels")]
    if shared:  # a detector's heads run once per pyramid level with the same weights
        levels = ", ".join(str(lv["level"]) for lv in rows[[r["name"] for r in rows].index(shared[0])]["levels"])
        line = (f"note: {len(shared)} head conv(s) run on every pyramid level ({levels}) with shared weights: each row "
                f"shows the first level; --json gives each level's output_shape and field under 'levels'")
        note = f"{note}\n{line}" if note else line
    return LayerTable(arch, hw, rows, note, preprocessing_line(arch, spec, table_hw=hw))


def preprocessing_line(lm: LoadedModel, spec: ModelSpec, *, table_hw: tuple[int, int] | None = None) -> str:
    """What the image commands feed this model, and where each number comes from (``table_hw``:
    the size the layer table's shapes are for, when it differs from that)."""
    origin = {"torchvision": "torchvision weights", "timm": "timm pretrained_cfg"}.get(lm.kind, "")
    fmt = lambda v: ",".join(f"{x:g}" for x in v)  # noqa: E731
    mean_from = "--mean" if spec.mean is not None else (origin or "default")
    std_from = "--std" if spec.std is not None else (origin or "default")
    size = f"{lm.input_hw[0]}x{lm.input_hw[1]} (fixed)" if lm.input_hw else f"{lm.crop_size} (resize {lm.resize_size} for --crop)"
    if lm.task == "detection" and is_detector(lm.model):  # the model's own transform, applied by cnnviz
        size = describe(lm.model)
        origin = "the model's transform"
    if lm.task == "segmentation" and not lm.input_hw:
        size = (f"{lm.crop_size} (the shorter side, aspect kept, no crop: the weights' segmentation transform; "
                f"the table's shapes are for a {'x'.join(map(str, table_hw or (lm.crop_size,) * 2))} image)")
    labels = f"{len(lm.categories)} class names" + (" from --labels" if spec.labels else "") if lm.categories else "no class names"
    line = (f"input: {lm.channels_in} channel{'s' if lm.channels_in != 1 else ''}"
            f"{' (grayscale)' if lm.channels_in == 1 else ' (RGB)'}, size {size}, mean {fmt(lm.mean)} ({mean_from}), "
            f"std {fmt(lm.std)} ({std_from}); {labels}")
    for why in lm.limits.values():
        line += f"\nnote: {why}"
    if lm.task == "segmentation":
        aux = any(n == "aux_classifier" for n, _ in lm.model.named_children())
        line += ("\nnote: the forward runs backbone -> classifier -> per-pixel logits 'out', resized (bilinear) to the "
                 "input" + ("; aux_classifier (built with these weights) runs too, eval included, into 'aux', which "
                            "no command explains" if aux else ""))
    return line


def rf_problem(net: Any, hw: tuple[int, int], names: list[str], *, ignore_gates: bool = False) -> str:
    """Why the first of ``names`` has no receptive field (one line)."""
    try:
        reason = layer_fields(net, size=hw, ignore_gates=ignore_gates).get(names[0], f"{names[0]} does not run in the forward pass")
    except RFError as exc:
        return str(exc)
    return f"{names[0]}: {reason}"


def run_models(*, task: str | None = None) -> list[dict[str, Any]]:
    """torchvision's image models (MODEL_COLUMNS) by task, classification first: conv count,
    default and all weights. ``task`` keeps one task's models."""
    rows = []
    names = _models.list_models()  # looked up at call time: tests narrow the list
    counts = conv_counts(names)
    for n in names:
        kind = _models.model_task(n)
        if task is not None and kind != task:
            continue
        enum = weights_enum(n)
        default = ""
        if enum is not None and "DEFAULT" in enum.__members__:
            default = enum.DEFAULT.name
        rows.append({
            "name": n,
            "task": kind,
            "convs": counts[n],
            "default_weights": default,
            "weights": [w for w in weight_members(n) if w != "DEFAULT"],
        })
    return rows
