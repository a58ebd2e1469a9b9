"""`cnnviz layers` and `cnnviz models`: the conv-layer catalog and the model list."""
from __future__ import annotations

import json
from typing import Any

import click

from . import cli
from .common import info, model_options, out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        if not v:
            return "-"
        if not all(isinstance(x, (int, float)) for x in v):  # names (weights): a list, not a shape
            return ", ".join(str(x) for x in v)
        return "x".join(str(x) for x in v) if len(set(v)) > 1 or len(v) > 2 else str(v[0])
    return str(v)


def _table(rows: list[dict[str, Any]], columns: list[str], headers: dict[str, str] | None = None) -> str:
    headers = headers or {}
    cells = [[headers.get(c, c) for c in columns]] + [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    right = {i for i, c in enumerate(columns)
             if any(isinstance(r[c], (int, float)) and not isinstance(r[c], bool) for r in rows[:1] or rows)
             or (rows and all(r[c] is None or isinstance(r[c], (int, float)) for r in rows)
                 and any(r[c] is not None for r in rows))}
    lines = []
    for row in cells:
        lines.append("  ".join(s.rjust(w) if i in right else s.ljust(w) for i, (s, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)


def _tsv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def print_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str], headers: dict[str, str] | None = None) -> None:
    if fmt == "json":
        out(json.dumps(rows, indent=None))
    elif fmt == "tsv":
        out("\t".join(columns))
        for r in rows:
            out("\t".join(_tsv_cell(r[c]) for c in columns))
    else:
        out(_table(rows, columns, headers))


LAYER_COLUMNS = ["index", "name", "alias", "in_channels", "out_channels", "kernel_size", "stride", "padding",
                 "dilation", "groups", "params", "output_shape", "receptive_field", "jump", "center0"]
LAYER_HEADERS = {"in_channels": "in", "out_channels": "out", "kernel_size": "kernel", "padding": "pad",
                 "dilation": "dil", "output_shape": "output", "receptive_field": "rf"}


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_options()
@click.option("-s", "--size", default=None, metavar="S",
              help="Input size for output shapes: 224, or HxW such as 224x320.  [default: the model's input size]")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True)
@click.option("--ignore-gates", is_flag=True,
              help="Receptive fields past squeeze-and-excitation gates (EfficientNet, MobileNetV3, RegNetY): "
                   "treat the gate as a per-channel scale and give the conv path's local field (in theory "
                   "every later unit sees the whole image, so by default these are '-').")
def layers(model: Any, size: str | None, fmt: str, ignore_gates: bool) -> None:
    """List every Conv2d of a model: index, name, alias, shapes, parameters, receptive field.

    Indices are 0-based in named_modules() order and are what --layer takes. Needs no weights
    (never downloads): the output shapes come from a forward pass on the 'meta' device. The
    preprocessing the other commands use for this model (input channels, size, mean, std, and
    where it comes from) is printed to stderr after the table.
    rf is the theoretical receptive field in input pixels, jump the input pixels between
    neighbouring units, center0 the input pixel at the centre of unit 0's field (unit i at
    center0 + i*jump); a pair HxW where the axes differ, '-' where it cannot be computed.

    \b
    Examples:
      cnnviz layers --model resnet50
      cnnviz layers --model vgg16 --size 224x320 --format tsv | cut -f2,12
      cnnviz layers --model resnet50 --format json | jq '.[10]'
    """
    from ..rf import catalog
    from ..util import parse_size
    from .common import architecture, model_input_size

    arch = architecture(model)
    s = model_input_size(size, arch)
    hw = parse_size(s)
    net = arch.model
    rows = [layer.as_dict() for layer in catalog(net, size=hw, ignore_gates=ignore_gates)]
    print_rows(rows, fmt, LAYER_COLUMNS, LAYER_HEADERS)
    if fmt == "table":
        total = sum(r["params"] for r in rows)
        info(f"{arch.name}: {len(rows)} conv layers, {total:,} conv parameters, input {hw[0]}x{hw[1]}")
        info(preprocessing_line(arch, model))
    missing = [r["name"] for r in rows if r["receptive_field"] is None]
    if missing:
        info(f"note: no receptive field for {len(missing)} of {len(rows)} conv layers: {rf_problem(net, hw, missing, ignore_gates=ignore_gates)}")


def preprocessing_line(lm: Any, spec: Any) -> str:
    """What the image commands feed this model, and where each number comes from."""
    origin = {"torchvision": "torchvision weights", "timm": "timm pretrained_cfg"}.get(lm.kind, "")
    fmt = lambda v: ",".join(f"{x:g}" for x in v)  # noqa: E731
    mean_from = "--mean" if spec.mean is not None else (origin or "default")
    std_from = "--std" if spec.std is not None else (origin or "default")
    size = f"{lm.input_hw[0]}x{lm.input_hw[1]} (fixed)" if lm.input_hw else f"{lm.crop_size} (resize {lm.resize_size} for --crop)"
    labels = f"{len(lm.categories)} class names" + (" from --labels" if spec.labels else "") if lm.categories else "no class names"
    line = (f"input: {lm.channels_in} channel{'s' if lm.channels_in != 1 else ''}"
            f"{' (grayscale)' if lm.channels_in == 1 else ' (RGB)'}, size {size}, mean {fmt(lm.mean)} ({mean_from}), "
            f"std {fmt(lm.std)} ({std_from}); {labels}")
    for why in lm.limits.values():
        line += f"\nnote: {why}"
    return line


def rf_problem(net: Any, hw: tuple[int, int], names: list[str], *, ignore_gates: bool = False) -> str:
    """Why the first of ``names`` has no receptive field (one line)."""
    from ..rf import RFError, layer_fields

    try:
        reason = layer_fields(net, size=hw, ignore_gates=ignore_gates).get(names[0], f"{names[0]} does not run in the forward pass")
    except RFError as exc:
        return str(exc)
    return f"{names[0]}: {reason}"


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True)
@click.option("--names-only", is_flag=True, help="Print just the model names, one per line (fast).")
def models(fmt: str, names_only: bool) -> None:
    """List torchvision's classification models with their conv count and default weights.

    \b
    Examples:
      cnnviz models
      cnnviz models --names-only | grep resnet
      cnnviz models --format json
    """
    from ..models import conv_counts, list_models, weight_members, weights_enum

    names = list_models()
    if names_only:
        for n in names:
            out(n)
        return
    rows = []
    counts = conv_counts(names)
    for n in names:
        enum = weights_enum(n)
        default = ""
        if enum is not None and "DEFAULT" in enum.__members__:
            default = enum.DEFAULT.name
        rows.append({
            "name": n,
            "convs": counts[n],
            "default_weights": default,
            "weights": [w for w in weight_members(n) if w != "DEFAULT"],
        })
    print_rows(rows, fmt, ["name", "convs", "default_weights", "weights"],
               {"default_weights": "default weights", "weights": "all weights"})
