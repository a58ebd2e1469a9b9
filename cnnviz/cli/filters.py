"""`cnnviz filters`: learned conv weights as PNG grids (thin layer over cnnviz.filters)."""
from __future__ import annotations

from typing import Any

import click

from . import cli
from .common import (captions_option, channels_option, cmap_option, deprecated_aliases, info, inputs_option,
                     json_option, layer_option, model_options, norm_option, output_option, sink, tile_numbers_option,
                     tile_option)


@cli.command()
@model_options(labels=False)
@layer_option(default="0")
@click.option("--mode", type=click.Choice(["auto", "rgb", "mean", "channels"]), default="auto", show_default=True,
              help="auto: rgb for 3 input channels, else mean. rgb: one colour tile per filter. mean: each "
                   "filter averaged over its input channels. channels: rows = filters, columns = input "
                   "channels. 1x1 kernels always become an [out, in] heatmap.")
@norm_option("layer", choices=["layer", "filter", "minmax"],
             help="layer: one symmetric scale per layer, 0 = neutral colour. filter: each filter "
                   "symmetric on its own. minmax: layer min -> 0, max -> 1.")
@channels_option(multiple=True, help="Filters (the layer's output channels) to draw (repeatable): 0:16, 1,5,9, -1, ::4, "
                                    "all.  [default: all]")
@inputs_option(help="Input channels to draw in channels mode and 1x1 heatmaps (repeatable; same grammar).  "
                    "[default: all, up to --max-inputs]")
@click.option("--max-filters", type=click.IntRange(min=0), default=None, metavar="N",
              help="Draw at most N filters (0 = no cap).  [default: 32 in channels mode, else no cap; "
                   "large layers are paged]")
@click.option("--max-inputs", type=click.IntRange(min=0), default=None, metavar="N",
              help="Draw at most N input channels (--inputs) in channels mode / heatmaps (0 = no cap).  "
                   "[default: 32 in channels mode]")
@cmap_option("RdBu_r", help="Matplotlib colormap for single-channel tiles and heatmaps (a diverging one suits signed "
                             "weights).")
@captions_option(help="A strip with the value range and a caption under the grid.")
@tile_numbers_option(help="Write each filter's index above its tile (row/column indices in channels mode and heatmaps).")
@tile_option(48, least=4, most=512, help="Upscale kernels (nearest) until a tile's longer side is at least PX.")
@click.option("--gap", type=click.IntRange(0, 32), default=2, show_default=True, metavar="PX", help="Space between tiles.")
@click.option("--max-side", type=click.IntRange(256, 9459), default=8192, show_default=True, metavar="PX",
              help="Largest PNG side (at most 9459: larger pictures do not open in image viewers); filters beyond it "
                   "go to further pages (-p01, -p02, ...).")
@output_option()
@json_option
@deprecated_aliases("filters")
def filters(output: str, as_json: bool, channels: tuple[str, ...], inputs: tuple[str, ...], captions: bool,
            tile_numbers: bool, tile: int, max_inputs: int | None, **options: Any) -> None:
    """Draw the learned filters of conv layers as PNG grids, one PNG per layer (default: layer 0).

    First layers (3 input channels) show every filter as a small RGB image; deeper 3x3/7x7 layers
    show each filter's mean over its input channels (--mode mean) or filters x channels
    (--mode channels); 1x1 layers show the [out, in] weight matrix as a heatmap. Files are named
    {model}-{index}-{name}-filters.png (-p01, -p02 ... when a layer needs several pages); written
    paths go to stdout (JSON with --json), notes to stderr. Each PNG's text metadata records mode,
    norm, scale, shape, value range and the filters drawn.

    \b
    Examples:
      cnnviz filters --model vgg16                       # 8x8 grid of the 64 RGB 3x3 filters
      cnnviz filters --model resnet50 --weights none -l conv1 --tile-numbers
      cnnviz filters --model vgg16 -l block5_conv1 --mode channels --channels 0:8 --inputs 0:16
      cnnviz filters --model resnet50 -l layer1.0.conv1 --norm filter      # 1x1: heatmap
      cnnviz filters --model resnet50 -l all -o out --json | jq -r .path
      cnnviz filters --model vgg16 -o - > conv1_1.png
    """
    from ..jobs.filters import FiltersRequest, run_filters

    # The request keeps its field names (filters = output channels, channels = input channels).
    req = FiltersRequest(filters=channels, channels=inputs, max_channels=max_inputs, legend=captions, labels=tile_numbers,
                         tile_size=tile, **options)
    run_filters(req, output=sink(output, as_json=as_json), say=info)
