"""`cnnviz report`: a static HTML explorer of a model, its layers, channels and images."""
from __future__ import annotations

from typing import Any

import click

from . import cli
from .common import (batch_size_option, cmap_option, device_options, emit, examples_option, image_options, index_option,
                     info, json_option, layer_option, model_options, output_option, quiet_option, stage_option,
                     top_option, with_model_options)


@cli.command()
@image_options
@model_options()
@layer_option(default="all")
@output_option("report", help="Report folder (created if needed). Files cnnviz did not write there are never touched; "
                   "re-running adds only what is missing.")
@stage_option(help="conv: the conv's own output (as 'cnnviz top' indexes it); act: what the network passes on after "
                   "each conv's activation.")
@top_option(default=16, help="Maps per image on a layer page, strongest mean activation first (all of them on demand).")
@cmap_option("viridis", help="Matplotlib colormap of the feature maps.")
@click.option("--maximize", "maximize", is_flag=True,
              help="Also synthesise what channels look for (activation maximization; slow: minutes per layer on a CPU).")
@click.option("--maximize-layer", multiple=True, metavar="SEL",
              help="Layers to maximize (repeatable; selector grammar).  [default: every layer of the report]")
@click.option("--maximize-channels", default="0:8", show_default=True, metavar="SEL",
              help="Channels to maximize in each of those layers.")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Optimisation steps for --maximize.  [default: 256, as cnnviz maximize]")
@click.option("--cam", "cam", is_flag=True,
              help="Also show each image's class activation map (cnnviz cam: Grad-CAM of its top-1 class) on the "
                   "image's page. Needs a trained classifier to mean anything.")
@click.option("--include", multiple=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="A folder of other cnnviz commands' pictures (cam, top, maps, ...; repeatable): copied in and "
                   "shown on the page of the layer or image each one is about.")
@index_option(exists=True,
              help="A 'cnnviz top --index' folder of the same model, weights and --stage: the channel pages of its layers "
                   "show the images of that collection that excite each channel most, and the model page shows "
                   "each of those layers' strongest channels by their best example.")
@examples_option(most=64, help="Dataset examples per channel with --index.")
@with_model_options(required=False,
                    help="Also compare the model with model B (any source --model takes) over the report's image files "
                         "(at least 4), at the report's layers and --stage: a comparison page with the CKA matrix, the "
                         "diagonal profile and the channels that changed most, linked to the channel pages.")
@click.option("--with-report", type=click.Path(exists=True, file_okay=False), default=None, metavar="DIR",
              help="B's own report folder ('cnnviz report -m B ... -o DIR'): the comparison page links its layer and "
                   "channel pages too.")
@batch_size_option(8, help="Images per forward pass.")
@click.option("--prune", is_flag=True,
              help="Delete the pictures of earlier runs into DIR (other settings, layers, images) that this report "
                   "does not show. Only files cnnviz wrote there.")
@click.option("--force", is_flag=True, help="Write into a folder holding an index.html that cnnviz did not write.")
@device_options(note="bf16 applies to the feature maps and --maximize; the --cam Grad-CAMs run in fp32.")
@json_option
@quiet_option
def report(inputs: Any, output: str, as_json: bool, examples: int, with_source: str | None, with_weights: str,
           with_model_args: str | None, **options: Any) -> None:
    """Write a static HTML site to explore a model on your images: open DIR/index.html.

    The model page shows the model at a glance (one row per layer, first to last: its 8 strongest
    channels as thumbnails, best dataset examples with --index, else maps), the images, the layer
    table (sortable, filterable) and the receptive-field profile; each image page its feature-map
    sheet; each layer page its strongest maps per image (all on demand), filters and receptive
    field; each channel page its filter, its map on every image with the input window where it
    peaks, and (with --maximize) the image it responds to most. Every tile links to its channel;
    arrow keys move between layers and channels, and the search box on every page jumps to a
    layer or LAYER:CHANNEL (e.g. layer3.1.conv2:17). Pictures come from the same
    renderers as 'cnnviz maps/filters/rf/maximize'. No network, no CDN: works from file:// and
    from any static host. Prints the path of index.html.

    \b
    Examples:
      cnnviz report --sample -m vgg16 -o report/
      cnnviz report photos/*.jpg -m resnet50 --crop -o resnet-report
      cnnviz report --sample -m vgg16 -l 'block*_conv1' --maximize --maximize-channels 0:16 -o report/
      cnnviz report --sample -m vgg16 --include cam-out/ -o report/     # show other commands' pictures
      cnnviz top photos/ -m vgg16 -l block4_conv1 --index idx && cnnviz report --sample -m vgg16 --index idx
      cnnviz report photos/ -m resnet18 -w tuned.pth --with resnet18 --with-weights base.pth -o tuned-report
      python -m http.server -d report/        # or copy the folder to any static host
    """
    from ..jobs.output import Output
    from ..jobs.report import ReportRequest, run_report
    from ..sources import ModelSpec

    other = None
    if with_source is not None:
        other = ModelSpec(source=with_source, weights=with_weights, seed=options["model"].seed, model_args=with_model_args)
    elif with_weights != "DEFAULT" or with_model_args is not None:
        from ..errors import UsageError

        raise UsageError("--with-weights and --with-model-args describe model B; add --with B")
    run_report(ReportRequest(inputs=inputs, index_k=examples, with_model=other, **options), output=Output(output, on_record=lambda r: emit(r, as_json=as_json)),
               say=info)
