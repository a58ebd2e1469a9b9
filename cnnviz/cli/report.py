"""`cnnviz report`: a static HTML explorer of a model, its layers, channels and images."""
from __future__ import annotations

import os
import time
from typing import Any

import click

from . import cli
from .common import emit, image_options, info, json_option, layer_option, model_options


@cli.command()
@image_options
@model_options()
@layer_option(default="all")
@click.option("-o", "--output", default="report", show_default=True, metavar="DIR",
              help="Report folder (created if needed). Files cnnviz did not write there are never touched; "
                   "re-running adds only what is missing.")
@click.option("--stage", type=click.Choice(["act", "conv"]), default="act", show_default=True,
              help="act: what the network passes on after each conv's activation; conv: the conv's own output.")
@click.option("-k", "--top", type=click.IntRange(min=1), default=16, show_default=True, metavar="K",
              help="Maps per image on a layer page, strongest mean activation first (all of them on demand).")
@click.option("--cmap", default="viridis", show_default=True, metavar="NAME", help="Matplotlib colormap of the feature maps.")
@click.option("--maximize", "do_maximize", is_flag=True,
              help="Also synthesise what channels look for (activation maximization; slow: minutes per layer on a CPU).")
@click.option("--maximize-layer", multiple=True, metavar="SEL",
              help="Layers to maximize (repeatable; selector grammar).  [default: every layer of the report]")
@click.option("--maximize-channels", default="0:8", show_default=True, metavar="SEL",
              help="Channels to maximize in each of those layers.")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Optimisation steps for --maximize.  [default: 256, as cnnviz maximize]")
@click.option("--cam", "cam", is_flag=True,
              help="Also show each image's class activation map (cnnviz cam: Grad-CAM of its top-1 class) on the "
                   "model page. Needs a trained classifier to mean anything.")
@click.option("--include", multiple=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="A folder of other cnnviz commands' pictures (cam, top, maps, ...; repeatable): copied in and "
                   "shown on the page of the layer or image each one is about.")
@click.option("--index", "index", default=None, metavar="DIR", type=click.Path(exists=True, file_okay=False),
              help="A 'cnnviz top --index' folder of the same model and weights: the channel pages of its layers "
                   "show the images of that collection that excite each channel most.")
@click.option("--examples", "index_k", type=click.IntRange(1, 64), default=9, show_default=True, metavar="K",
              help="Dataset examples per channel with --index.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass.")
@click.option("--prune", is_flag=True,
              help="Delete the pictures of earlier runs into DIR (other settings, layers, images) that this report "
                   "does not show. Only files cnnviz wrote there.")
@click.option("--force", is_flag=True, help="Write into a folder holding an index.html that cnnviz did not write.")
@json_option
def report(inputs: Any, model: Any, layers: tuple[str, ...], output: str, stage: str, top: int, cmap: str,
           do_maximize: bool, maximize_layer: tuple[str, ...], maximize_channels: str, steps: int | None,
           cam: bool, include: tuple[str, ...], index: str | None, index_k: int, batch_size: int, prune: bool, force: bool,
           as_json: bool) -> None:
    """Write a static HTML site to explore a model on your images: open DIR/index.html.

    The model page has the layer table (sortable, filterable), the receptive-field profile and
    each image's feature-map sheet; each layer page its strongest maps per image (all on demand),
    filters and receptive field; each channel page its filter, its map on every image with the
    input window where it peaks, and (with --maximize) the image it responds to most. Every tile
    links to its channel; arrow keys move between layers and channels. Pictures come from the same
    renderers as 'cnnviz maps/filters/rf/maximize'. No network, no CDN: works from file:// and
    from any static host. Prints the path of index.html.

    \b
    Examples:
      cnnviz report --sample -m vgg16 -o report/
      cnnviz report photos/*.jpg -m resnet50 --crop -o resnet-report
      cnnviz report --sample -m vgg16 -l 'block*_conv1' --maximize --maximize-channels 0:16 -o report/
      cnnviz report --sample -m vgg16 --include cam-out/ -o report/     # show other commands' pictures
      cnnviz top photos/ -m vgg16 -l block4_conv1 --index idx && cnnviz report --sample -m vgg16 --index idx
      python -m http.server -d report/        # or copy the folder to any static host
    """
    from ..errors import UsageError
    from ..io import ensure_dir, sample_image_path
    from ..layers import conv_layers, select_layers
    from ..render import check_cmap
    from ..select import select_indices
    from ..jobs.inputs import parse_image_size
    from ..sources import architecture

    t0 = time.perf_counter()
    check_cmap(cmap)
    if output == "-":
        raise UsageError("a report is a folder of files; give -o DIR, not -o -")
    if not do_maximize and (maximize_layer or steps is not None):
        raise UsageError("--maximize-layer and --steps apply to --maximize; add --maximize")
    size, crop = inputs.size, inputs.crop
    if inputs.given:
        inputs.check()
    else:
        parse_image_size(size, 224)
    # every selection is checked on the architecture (no weights read) before any work
    from ..capture import hook_points

    net = architecture(model).model
    every = conv_layers(net)
    chosen = select_layers(every, layers, model_name=model.source)
    hook_points(net, chosen, stage)
    max_jobs: dict[int, list[int]] = {}
    if do_maximize:
        targets = select_layers(every, maximize_layer, model_name=model.source) if maximize_layer else chosen
        for lay in targets:
            if lay.index not in {c.index for c in chosen}:
                raise UsageError(f"--maximize-layer {lay.name} is not in the report's --layer selection")
            max_jobs[lay.index] = select_indices(maximize_channels, lay.out_channels, what="channel",
                                                 hint=f"{lay.name} has {lay.out_channels} channels")
    ensure_dir(output)

    from ..optimize import DEFAULT_STEPS
    from ..report import MaximizeRequest, ReportImage, build_report

    lm = load(model)
    images = []
    if inputs.given:
        sample_path = sample_image_path() if inputs.sample else None
        for im in inputs.read(lm):
            name = "stdin" if im.source == "-" else im.source  # as given: the path the user knows
            if im.source == sample_path:
                name = f"{os.path.basename(name)} (sample)"
            images.append(ReportImage(name=name, x=im.x, display=im.display, source=im.source))
    target = parse_image_size(size, lm.crop_size)
    if crop:
        prep = (f"shorter side to {round(target * lm.resize_size / lm.crop_size)} px, centre crop {target}\u00d7{target} "
                f"(the classifier's own transforms)")
    elif isinstance(target, tuple):
        prep = f"resized to exactly {target[0]}\u00d7{target[1]} px"
    else:
        prep = f"shorter side resized to {target} px, aspect kept"
    prep += f"; normalised with mean {tuple(round(v, 4) for v in lm.mean)}, std {tuple(round(v, 4) for v in lm.std)}"
    req = MaximizeRequest(channels=max_jobs, steps=steps or DEFAULT_STEPS, seed=model.seed) if do_maximize else None
    pages = [conv_layers(lm.model)[lay.index] for lay in chosen]
    res = build_report(lm, images, output=output, layers=pages, stage=stage, top=top, cmap=cmap,
                       batch_size=batch_size, maximize=req, include=include, index=index, index_k=index_k,
                       force=force, prune=prune, preprocessing=prep, architecture=net, progress=None,
                       cam=model if cam else None)
    emit({"path": res.index, "kind": "report", "folder": res.output, "model": lm.name, "weights": lm.weights,
          "layers": res.layers, "images": res.images, "channels": res.channels, "pages": res.pages,
          "computed": res.computed, "reused": res.reused, "bytes": res.bytes, "seconds": round(res.seconds, 3)},
         as_json=as_json)
    pruned = res.computed.get("pruned files", 0)
    made = sum(res.computed.values()) - pruned
    reused = sum(res.reused.values())
    info(f"report: {res.layers} layer(s), {res.channels} channels, {res.images} image(s) of {lm.name} ({lm.weights}): "
         f"{made} picture(s) made, {reused} reused" + (f", {pruned} old file(s) pruned" if pruned else "")
         + f", {res.bytes / 1e6:.1f} MB in {res.output} "
         f"({time.perf_counter() - t0:.1f}s); open {res.index}")


def load(model: Any) -> Any:
    """The model with its weights (scripts/bench_report.py substitutes a preloaded one here)."""
    from ..sources import load as load_source

    return load_source(model)
