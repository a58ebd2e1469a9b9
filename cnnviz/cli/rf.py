"""`cnnviz rf`: receptive-field boxes on an image, effective receptive fields, the profile plot."""
from __future__ import annotations

from typing import Any

import click

from . import cli
from .common import (channels_option, deprecated_aliases, device_options, image_options, info, json_option,
                     layer_option, model_options, output_option, quiet_option, sink)


@cli.command()
@image_options
@model_options()
@layer_option()
@click.option("--at", "at", default=None, metavar="Y,X",
              help="Show the unit centred nearest input pixel Y,X (row, column of the preprocessed image).  "
                   "[default: each layer's centre unit]")
@channels_option(help="Show the unit where each of these channels' conv output peaks on the image (one box per layer "
                     "and channel; needs weights). With --effective: differentiate these channels only.  "
                     "[default: none, each layer's centre unit]")
@click.option("--effective", is_flag=True,
              help="Effective receptive field: mean |gradient| of the unit w.r.t. the input as a heatmap, with "
                   "the theoretical box on top. Without IMAGE, averages over random-noise inputs.")
@click.option("--samples", type=click.IntRange(min=1, max=256), default=4, show_default=True, metavar="N",
              help="--effective: inputs to average (the image plus N-1 noisy copies, or N noise images).")
@click.option("--profile", is_flag=True,
              help="Plot receptive field and jump against layer index for --model (no image, no weights).")
@click.option("--compare", default=None, metavar="M1,M2",
              help="Profile plot overlaying several models, e.g. vgg16,resnet50 (implies --profile).")
@click.option("--ignore-gates", is_flag=True,
              help="Treat squeeze-and-excitation gates as per-channel scales: the conv path's local field "
                   "(otherwise layers past a gate, which in theory see the whole image, are refused).")
@device_options()
@output_option()
@json_option
@quiet_option
@deprecated_aliases("rf")
def rf(inputs: Any, output: str, as_json: bool, channels: str | None, **options: Any) -> None:
    """Receptive fields: which input pixels a unit of a conv layer sees.

    Draws on the preprocessed image the theoretical receptive-field box of one unit per selected
    layer (default: the last conv of each stage), in distinct colours with a legend; the part of a
    box outside the image (the zero padding the unit sees) is dashed in a grey margin. Without
    --channels and --effective no weights are read. The boxes go to stderr as a table, with --json
    to stdout (layer, unit, box [y0, x0, y1, x1] inclusive, in preprocessed-input pixels).
    Numbers come from the model's torch.fx graph ('cnnviz layers' lists them for every layer).
    Output names: {image}-{model}-rf.png, {image}-{model}-erf.png, {model}-rf-profile.png.

    \b
    Examples:
      cnnviz rf --sample -m vgg16
      cnnviz rf photo.jpg -m vgg16 -l block3_conv1,block4_conv1,block5_conv3 --at 60,150
      cnnviz rf --sample -m vgg16 -l block5_conv3 --channels 0:3 --json
      cnnviz rf --sample -m vgg16 -l block3_conv3,block4_conv3,block5_conv3 --effective
      cnnviz rf --profile -m resnet50 -o docs/
      cnnviz rf --compare vgg16,resnet50 --size 224
    """
    from ..jobs.rf import RFRequest, run_rf

    run_rf(RFRequest(inputs=inputs, channel=channels, **options), output=sink(output, as_json=as_json), say=info)
