"""`cnnviz layers` and `cnnviz models`: the conv-layer catalog and the model list."""
from __future__ import annotations

import json
from typing import Any

import click

from . import cli
from .common import info, json_option, model_options, out, size_option


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


def _json_format(fmt: str, *, as_json: bool) -> str:
    """--json is --format json; with another --format it is a contradiction."""
    from click.core import ParameterSource

    if not as_json:
        return fmt
    if fmt != "json" and click.get_current_context().get_parameter_source("fmt") == ParameterSource.COMMANDLINE:
        from ..errors import UsageError

        raise UsageError(f"--json and --format {fmt} disagree; give one")
    return "json"


LAYER_HEADERS = {"in_channels": "in", "out_channels": "out", "kernel_size": "kernel", "padding": "pad",
                 "dilation": "dil", "output_shape": "output", "receptive_field": "rf"}


@cli.command()
@model_options()
@size_option(help="Input size for output shapes: 224, or HxW such as 224x320.  [default: the model's input size]")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True)
@json_option(help="The rows as one JSON list (as --format json).")
@click.option("--ignore-gates", is_flag=True,
              help="Receptive fields past squeeze-and-excitation gates (EfficientNet, MobileNetV3, RegNetY): "
                   "treat the gate as a per-channel scale and give the conv path's local field (in theory "
                   "every later unit sees the whole image, so by default these are '-').")
def layers(model: Any, size: str | None, fmt: str, as_json: bool, ignore_gates: bool) -> None:
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
      cnnviz layers --model resnet50 --json | jq '.[10]'
    """
    from ..jobs.layers import LAYER_COLUMNS, LayersRequest, run_layers

    fmt = _json_format(fmt, as_json=as_json)
    table = run_layers(LayersRequest(model=model, size=size, ignore_gates=ignore_gates))
    print_rows(table.rows, fmt, LAYER_COLUMNS, LAYER_HEADERS)
    if fmt == "table":
        info(f"{table.model.name}: {len(table.rows)} conv layers, {table.params:,} conv parameters, "
             f"input {table.size[0]}x{table.size[1]}")
        info(table.preprocessing)
    if table.note:
        info(table.note)


@cli.command()
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True)
@json_option(help="The rows as one JSON list (as --format json).")
@click.option("--names-only", is_flag=True, help="Print just the model names, one per line (fast; with --json one list).")
@click.option("--task", type=click.Choice(["classification", "segmentation", "detection"]), default=None,
              help="Only the models of this task (default: all, classification first).")
def models(fmt: str, as_json: bool, names_only: bool, task: str | None) -> None:
    """List torchvision's image models by task (classification, segmentation, detection) with their
    conv count and default weights.

    \b
    Examples:
      cnnviz models
      cnnviz models --names-only | grep resnet
      cnnviz models --json
      cnnviz models --task detection
    """
    fmt = _json_format(fmt, as_json=as_json)
    if names_only:
        from ..models import list_models

        names = list_models(task=task)
        if fmt == "json":  # the names as one JSON list, as --json promises
            out(json.dumps(names))
            return
        for n in names:
            out(n)
        return
    from ..jobs.layers import MODEL_COLUMNS, run_models

    print_rows(run_models(task=task), fmt, MODEL_COLUMNS, {"default_weights": "default weights", "weights": "all weights"})
