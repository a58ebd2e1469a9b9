"""`cnnviz maximize`: synthesise the input each channel (or class) responds to most."""
from __future__ import annotations

from typing import Any

import click

from . import cli
from .common import (batch_size_option, captions_option, channels_option, class_option, deprecated_aliases,
                     device_options, info, json_option, layer_option, model_options, output_option, quiet_option, sink,
                     size_option, stage_option)


@cli.command()
@model_options()
@layer_option()
@channels_option(multiple=True, help="Channels of each layer (repeatable; index, slice 0:16, list 3,7, all).  "
                                    "[default: 0:16]")
@class_option(help="Maximise class logits instead of channels (repeatable): 'tennis ball', tennis_ball, 852, "
                   "0:8, '*terrier'. Names come from the weights' category list or --labels FILE.")
@click.option("--objective", type=click.Choice(["channel", "neuron"]), default="channel", show_default=True,
              help="channel: mean activation of the channel; neuron: its centre unit only.")
@stage_option(help="conv: the Conv2d output; act: after its activation (as in 'cnnviz maps').")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Adam steps.  [default: 256]")
@click.option("--lr", type=float, default=None, metavar="LR", help="Adam learning rate.  [default: 0.05]")
@size_option("128", help="Image size in pixels, S or HxW; the model sees it padded and upscaled to >= 224.")
@click.option("--param", "param", type=click.Choice(["fft", "pixel"]), default="fft", show_default=True,
              help="fft: 1/f-scaled Fourier basis with decorrelated colour (Lucid); pixel: raw pixels, the naive baseline.")
@click.option("--decorrelate/--no-decorrelate", default=None,
              help="ImageNet colour decorrelation.  [default: on for fft, off for pixel]")
@click.option("--transforms/--no-transforms", default=True, show_default=True,
              help="Random pad 12, jitter 8, scale 0.9-1.1, rotate +-10 deg, jitter 4 at every step.")
@batch_size_option(16, help="Images optimised together (bounds memory); more targets run in several batches.")
@device_options(precision="auto")
@output_option()
@click.option("--separate", is_flag=True, help="One PNG per channel/class (the raw image) instead of a grid per layer.")
@captions_option(help="Title and channel numbers on grids.")
@click.option("--npy", is_flag=True, help="Also save the image batch as .npy, (N, H, W, 3) float32 in [0, 1].")
@json_option
@quiet_option
@deprecated_aliases("maximize")
def maximize(output: str, as_json: bool, captions: bool, **options: Any) -> None:
    """Synthesise the image each channel responds to most (activation maximization).

    Gradient ascent in input space from a neutral start: the image is parametrised in a
    decorrelated 1/f Fourier basis and randomly padded, jittered, scaled and rotated at every step,
    which gives clean patterns instead of high-frequency noise (Lucid's recipe). All channels of a
    layer are optimised as one batch; the forward pass stops at the layer. With --class, the class
    logits (before softmax) are maximised instead. The same --seed gives the same images.

    One grid PNG per layer, {model}-{index}-{name}-maximize.png ({model}-class-maximize.png for
    classes). Pretrained weights are needed for meaningful pictures.

    \b
    Examples:
      cnnviz maximize --model vgg16 --layer block4_conv1 --channels 0:16
      cnnviz maximize --model vgg16 --layer block5_conv1 --channels 3,17 --separate --steps 512
      cnnviz maximize --model resnet50 --layer layer3.5.conv3 --objective neuron --json
      cnnviz maximize --model vgg16 --class 'tennis ball' --class goldfish -o out
      cnnviz maximize --model vgg16 --layer 0 --param pixel --no-transforms   # naive baseline
    """
    from ..jobs.maximize import MaximizeRequest, run_maximize

    run_maximize(MaximizeRequest(titles=captions, **options), output=sink(output, as_json=as_json),
                 say=info)
