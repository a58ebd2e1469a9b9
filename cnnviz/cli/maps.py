"""`cnnviz maps`: feature maps of images through forward hooks, as grids, overlays and sheets."""
from __future__ import annotations

from typing import Any

import click

from . import cli
from .common import (batch_size_option, captions_option, channels_option, cmap_option, deprecated_aliases,
                     device_options, image_options, info, json_option, layer_option, model_options, norm_option,
                     output_option, quiet_option, sink, stage_option, tile_option, top_option)


@cli.command()
@image_options
@model_options()
@layer_option(required=True)
@stage_option(help="conv: the Conv2d's own output (signed); act: what the network passes on after the "
                   "activation that follows (VGG relu(conv); ResNet relu(bn(conv)), block output for conv3).")
@channels_option(help="Channels to show: 0:16, 3,7,9, -1, all.  [default: all]")
@top_option(help="Show the K channels with the highest mean activation (among --channels), ranked.")
@norm_option("map", choices=["map", "layer"],
             help="map: each map to its own min..max; layer: one shared scale for the whole layer.")
@click.option("--symmetric", is_flag=True, help="Put 0 in the middle of the colormap (use a diverging one, e.g. RdBu_r, for --stage conv).")
@cmap_option("viridis")
@tile_option(64, least=1, most=2048, help="Upscale tiles (nearest neighbour) until the shorter side is at least PX.")
@click.option("--cols", type=click.IntRange(min=1), default=None, metavar="N", help="Grid columns.  [default: near-square]")
@click.option("--overlay", is_flag=True, help="Blend each map (resized, bilinear) over the preprocessed input image.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="--overlay opacity where a map peaks (it fades with the map value: silent regions show the photo).")
@click.option("--sheet", is_flag=True,
              help="Also write one PNG per image with a row per layer showing its first (or --top) K maps.")
@click.option("--sheet-maps", type=click.IntRange(min=1), default=8, show_default=True, metavar="K",
              help="Maps per sheet row without --top/--channels.")
@click.option("--sheet-tile", type=click.IntRange(min=8, max=1024), default=112, show_default=True, metavar="PX",
              help="Height of each map on the sheet.")
@captions_option(help="Title, channel numbers and colour legend (--no-captions: the grid only).")
@click.option("--npy", is_flag=True, help="Also write each captured (C, H, W) float32 tensor as .npy beside its PNG.")
@batch_size_option(8, help="Images per forward pass (same-size images only).")
@device_options()
@output_option()
@json_option
@quiet_option
@deprecated_aliases("maps")
def maps(inputs: Any, output: str, as_json: bool, captions: bool, **options: Any) -> None:
    """Feature maps of images at conv layers: one grid PNG per image and layer.

    Hooks only the selected layers and stops the forward pass after the last one. Output names:
    {image}-{model}-{index}-{name}-maps.png (and .npy with --npy, {image}-{model}-sheet.png with
    --sheet). PNG metadata records the model, weights, layer, stage, channels and their ranks.

    \b
    Examples:
      cnnviz maps photo.jpg --layer 10
      cnnviz maps --sample -m vgg16 --layer all --stage act --sheet -o out/
      cnnviz maps *.jpg -m vgg16 -l block3_conv1 --top 16 --overlay --json
      cnnviz maps --sample -l 0 --channels 0:8 --stage conv --symmetric --cmap RdBu_r
      cat photo.jpg | cnnviz maps - -l layer4.2.conv3 --top 9 -o - > grid.png
    """
    from ..jobs.maps import MapsRequest, run_maps

    run_maps(MapsRequest(inputs=inputs, bare=not captions, **options), output=sink(output, as_json=as_json), say=info)
