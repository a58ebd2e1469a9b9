"""`cnnviz ablate`: how much the model needs each channel of a layer, measured by removing it on images."""
from __future__ import annotations

import json
from typing import Any

import click

from . import cli
from .layers import _json_format
from .common import (batch_size_option, channels_option, crop_option, device_options, engine_option, index_option, info,
                     json_option, layer_option, model_options, out, output_option, quiet_option, scan_options, shard_option,
                     size_option, stage_option, top_option)


@cli.command()
@click.argument("images", nargs=-1, metavar="[IMAGES]...")
@model_options()
@layer_option(help="The one layer whose channels are removed: a module name (features.12, layer4) or a conv layer "
                   "(index, name, alias; read at --stage). Required.")
@channels_option(help="Channels to remove, one at a time: 0:16, 3,7,9, all.  [default: all]")
@click.option("--group", "groups", multiple=True, metavar="SEL",
              help="Remove these channels together, as one unit (repeatable: --group 0:16 --group 16:32); "
                   "instead of --channels.")
@click.option("--labels-from", "labels_from", default=None, metavar="folders|FILE.csv",
              help="The true classes: 'folders' (each image's folder name, ImageFolder layout, matched to the model's "
                   "class names or indices) or a CSV of path,label rows.  [default: the intact model's own top-1, "
                   "so the numbers measure agreement with the intact model]")
@click.option("--ablation", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
              help="Replace a removed channel by zero, or by its mean over the images (unit by unit).")
@click.option("--per-class", is_flag=True, help="Also list, per unit, the classes its removal hurts most.")
@click.option("--sort", type=click.Choice(["probability", "accuracy", "logit"]), default="probability", show_default=True,
              help="The drop that ranks the units (and orders the 'most important first' curve); probability is "
                   "continuous, accuracy moves in steps of 1/images.")
@top_option(default=30, help="Units in the text table and the bar chart (TSV and JSON list every unit).")
@click.option("--curves/--no-curves", default=True, show_default=True,
              help="Removal curves: units removed cumulatively, most important first, least first, and in 3 random "
                   "orders (seeds 0, 1, 2).")
@stage_option("act", help="For a conv layer: its output (conv) or after its activation (act: what the network passes "
                          "on, as cam). A block name such as features.12 or layer4 is its output either way.")
@size_option(help="Input size: S px (with the centre crop: S x S) or HxW exact (with --no-crop).  "
                  "[default: the weights' crop size, 224]")
@crop_option(True, help="The classifier's Resize + CenterCrop (as top); --no-crop keeps whole images with their "
                        "shorter side at S.")
@batch_size_option(32, help="Images per forward pass up to the layer (the removals stack copies of them).")
@scan_options(workers=0, workers_help="Processes decoding images ahead of the model (0: none).")
@index_option(exists=False, help="A 'cnnviz top' index of the same weights: the results also go into a table beside it "
                                  "(DIR/ablate/, Parquet) that the report and queries read, and the chart shows each "
                                  "channel's best dataset examples from it.")
@shard_option(help="Measure only part I of N of the units (0 <= I < N; blocks of 16 units, round robin), e.g. one per "
                   "machine; the same command without --shard, over the shards' -o folders gathered into one, combines them.")
@engine_option(help="ray: the blocks of units run as tasks on a Ray cluster (ray.init(address='auto') if one runs, else "
                    "local); needs pip install 'cnnviz[ray]'.")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True,
              help="The ranked table on stdout: aligned text (--top rows), TSV or one JSON object (every unit).")
@json_option(help="The run as one JSON object on stdout (as --format json).")
@output_option(help="Folder for the chart, the curves (PNG, CSV) and the run's JSON (created if needed).")
@quiet_option  # the shared -q/--quiet: no bar and no phase lines (warnings still show)
@device_options(note="ablate takes fp32 only: bf16 rounding is larger than many of the drops it measures.")
def ablate(images: tuple[str, ...], model: Any, layers: tuple[str, ...], channels: str | None, groups: tuple[str, ...],
           labels_from: str | None, ablation: str, per_class: bool, sort: str, top: int, curves: bool, stage: str,
           size: str | None, crop: bool, max_pixels: int | None, batch_size: int, workers: int, strict: bool,
           index: str | None, shard: str | None, engine: str, fmt: str, as_json: bool, output: str, quiet: bool, device: str,
           precision: str) -> None:
    """How much the model needs each channel of a layer: remove it (zero, or its mean) and
    measure, on IMAGES, the drop in accuracy, in the mean probability of the true class and in
    its mean logit. Without --labels-from the true class is the intact model's own top-1, so
    the numbers measure agreement with the intact model.

    IMAGES are files, folders (recursive, sorted), globs, or '-' for a list of paths on stdin;
    at least 2. The network runs up to the layer once per batch; each removal runs only the
    rest (checked to reproduce the model's output, else the whole network runs: slower).

    Prints the units ranked by their drop (most needed first) and writes to -o:
    {model}-{layer}-ablate.png (bar chart), -ablate-curves.png and .csv (accuracy as units are
    removed cumulatively: most important first, least first, random) and -ablate.json (all).

    \b
    Examples:
      cnnviz ablate photos/ -m squeezenet1_1 -l features.12 -o abl/
      cnnviz ablate val/ -m squeezenet1_1 -l features.12 --labels-from folders --per-class -o abl/
      cnnviz ablate photos/ -m resnet50 -l layer4 --group 0:256 --group 256:512 --format tsv
      cnnviz ablate photos/ -m vgg16 -l block5_conv3 -c 0:64 --ablation mean --json
      cnnviz ablate photos/ -m squeezenet1_1 -l features.12 --index idx/ -o abl/
      cnnviz ablate val/ -m squeezenet1_1 -l features.12 --shard 0/4 -o abl/     # then 1/4..3/4; then without --shard

    An interrupted run keeps its finished blocks in OUT/ablate-parts/: rerun the same command
    to resume.
    """
    import sys

    from ..jobs.ablate import AblateRequest, run_ablate, table_rows, text_table
    from ..jobs.output import Output

    fmt = _json_format(fmt, as_json=as_json)
    req = AblateRequest(images=images, model=model, layers=layers, stage=stage, channels=channels, groups=groups,
                        labels_from=labels_from, ablation=ablation, per_class=per_class, sort=sort, top=top, curves=curves,
                        size=size, crop=crop, max_pixels=max_pixels, batch_size=batch_size, workers=workers, strict=strict,
                        index=index, shard=shard, engine=engine, device=device, precision=precision, quiet=quiet)
    say = info
    written: list[str] = []
    result = run_ablate(req, output=Output(output, on_record=lambda r: written.append(r["path"])), say=say, stdin=sys.stdin)
    if fmt == "json":
        out(json.dumps(result.as_dict()))
    elif fmt == "tsv":
        for row in table_rows(result):
            out("\t".join(row))
    else:
        out(text_table(result, limit=top))
    if result.shard:
        info(f"ablate: shard {result.shard}: {len(result.units)} unit(s) of {result.layer} on {result.images} image(s) in "
             f"{result.seconds:.1f}s; blocks kept in {result.parts}: gather every shard's -o folder into one and run the "
             f"command without --shard to combine them")
        return
    info(f"ablate: {len(result.units)} unit(s) of {result.layer} on {result.images} image(s) in {result.seconds:.1f}s"
         + ("" if result.traced else " (whole network per removal: slower)") + "; wrote " + ", ".join(written))
