"""`cnnviz filters`: learned conv weights as PNG grids (thin layer over cnnviz.filters)."""
from __future__ import annotations

import os
import time
from typing import Any

import click

from . import cli
from .common import architecture, check_stream, emit, info, json_option, layer_option, load, model_options, output_option


@cli.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@model_options(labels=False)
@layer_option(default="0")
@click.option("--mode", type=click.Choice(["auto", "rgb", "mean", "channels"]), default="auto", show_default=True,
              help="auto: rgb for 3 input channels, else mean. rgb: one colour tile per filter. mean: each "
                   "filter averaged over its input channels. channels: rows = filters, columns = input "
                   "channels. 1x1 kernels always become an [out, in] heatmap.")
@click.option("--norm", type=click.Choice(["layer", "filter", "minmax"]), default="layer", show_default=True,
              help="layer: one symmetric scale per layer, 0 = neutral colour. filter: each filter "
                   "symmetric on its own. minmax: layer min -> 0, max -> 1.")
@click.option("--filters", "filter_sel", multiple=True, metavar="SEL",
              help="Filters to draw (repeatable): 0:16, 1,5,9, -1, ::4, all.  [default: all]")
@click.option("--channels", "channel_sel", multiple=True, metavar="SEL",
              help="Input channels to draw in channels mode and 1x1 heatmaps (same grammar).")
@click.option("--max-filters", type=click.IntRange(min=0), default=None, metavar="N",
              help="Draw at most N filters (0 = no cap).  [default: 32 in channels mode, else no cap; "
                   "large layers are paged]")
@click.option("--max-channels", type=click.IntRange(min=0), default=None, metavar="N",
              help="Draw at most N input channels in channels mode / heatmaps (0 = no cap).  [default: 32 in channels mode]")
@click.option("--cmap", default="RdBu_r", show_default=True, metavar="NAME",
              help="Matplotlib colormap for single-channel tiles and heatmaps (a diverging one suits signed weights).")
@click.option("--legend/--no-legend", default=True, show_default=True,
              help="Add a strip with the value range and a caption under the grid.")
@click.option("--labels", is_flag=True, help="Write each filter's index above its tile (row/column indices in channels mode and heatmaps).")
@click.option("--tile-size", type=click.IntRange(4, 512), default=48, show_default=True, metavar="PX",
              help="Upscale kernels (nearest) until a tile's longer side is at least PX.")
@click.option("--gap", type=click.IntRange(0, 32), default=2, show_default=True, metavar="PX", help="Space between tiles.")
@click.option("--max-side", type=click.IntRange(256, 32768), default=8192, show_default=True, metavar="PX",
              help="Largest PNG side; filters beyond it go to further pages (-p01, -p02, ...).")
@output_option()
@json_option
def filters(
    model: Any, layer: tuple[str, ...], mode: str, norm: str, filter_sel: tuple[str, ...],
    channel_sel: tuple[str, ...], max_filters: int | None, max_channels: int | None, cmap: str, legend: bool,
    labels: bool, tile_size: int, gap: int, max_side: int, output: str, as_json: bool,
) -> None:
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
      cnnviz filters --model resnet50 --weights none -l conv1 --labels
      cnnviz filters --model vgg16 -l block5_conv1 --mode channels --filters 0:8 --channels 0:16
      cnnviz filters --model resnet50 -l layer1.0.conv1 --norm filter      # 1x1: heatmap
      cnnviz filters --model resnet50 -l all -o out --json | jq -r .path
      cnnviz filters --model vgg16 -o - > conv1_1.png
    """
    from ..errors import UsageError
    from ..filters import plan_filters, render_plan
    from ..io import ensure_dir, output_name, save_png, stdout_binary
    from ..layers import conv_layers, select_layers
    from ..render import check_cmap

    check_stream(output, as_json=as_json)
    check_cmap(cmap)  # a typo fails before the model loads
    # Every selection is checked on the architecture (no weights read) before loading anything.
    chosen = select_layers(conv_layers(architecture(model).model), layer, model_name=model.source)
    hint = f"see 'cnnviz layers --model {model.source}'"
    jobs = []
    for cl in chosen:
        try:
            plan = plan_filters(
                tuple(cl.module.weight.shape), mode=mode, norm=norm, cmap=cmap, groups=cl.groups,
                filters=list(filter_sel) or None, channels=list(channel_sel) or None,
                max_filters=max_filters, max_channels=max_channels, tile_px=tile_size, gap=gap,
                labels=labels, legend=legend, max_side=max_side, hint=hint,
            )
        except UsageError as exc:
            if len(chosen) == 1:
                raise
            raise type(exc)(f"layer {cl.index} ({cl.name}): {exc}") from None
        jobs.append((cl, plan))
    total = sum(len(p.pages) for _, p in jobs)
    to_stdout = output == "-"
    if to_stdout and total != 1:
        raise UsageError(f"-o - streams exactly one PNG, but this writes {total}; select one layer (and "
                         f"--filters that fit one page) or give an output folder")
    if not to_stdout:
        ensure_dir(output)
    for cl, plan in jobs:
        for note in plan.notes:
            info(f"layer {cl.index} {cl.name}: {note}")
    written = 0
    lm = load(model)
    t0 = time.perf_counter()
    loaded = conv_layers(lm.model)
    for cl, plan in jobs:
        w = loaded[cl.index].module.weight.detach().cpu().float().numpy()
        title = f"{lm.name} {cl.index} {cl.name}" + (f" ({cl.alias})" if cl.alias else "") + f" [{lm.weights}]"
        for page in render_plan(w, plan, title=title):
            parts: list[str | int] = [lm.name, cl.index, cl.slug]
            kind = "filters" if len(plan.pages) == 1 else f"filters-p{page.page:02d}"
            meta = {"Software": "cnnviz", "model": lm.name, "weights": lm.weights, "layer": str(cl.index),
                    "name": cl.name, **({"alias": cl.alias} if cl.alias else {})}
            target = stdout_binary() if to_stdout else os.path.join(output, output_name(*parts, kind=kind))
            path = save_png(target, page.picture, metadata=meta)  # the page's own text follows meta
            written += 1
            emit({
                "path": path, "layer": cl.index, "name": cl.name, "alias": cl.alias, "mode": plan.mode,
                "norm": plan.norm, "shape": list(plan.shape), **page.stats,
                "filters": page.metadata["filters"], "channels": page.metadata.get("channels"),
                "page": page.page, "pages": len(plan.pages), "height": page.shape[0], "width": page.shape[1],
                "model": lm.name, "weights": lm.weights,
            }, as_json=as_json)
    info(f"{lm.name} [{lm.weights}]: {written} PNG{'s' if written != 1 else ''} for {len(jobs)} layer"
         f"{'s' if len(jobs) != 1 else ''} in {time.perf_counter() - t0:.2f} s (after model load)")
