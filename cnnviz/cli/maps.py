"""`cnnviz maps`: feature maps of images through forward hooks, as grids, overlays and sheets."""
from __future__ import annotations

import time
from typing import Any

import click

from . import cli
from .common import architecture, check_stream, check_images, emit, image_options, info, json_option, layer_option, load, model_options, output_option, read_images


@cli.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@image_options
@model_options()
@layer_option(required=True)
@click.option("--stage", type=click.Choice(["conv", "act"]), default="conv", show_default=True,
              help="conv: the Conv2d's own output (signed); act: what the network passes on after the "
                   "activation that follows (VGG relu(conv); ResNet relu(bn(conv)), block output for conv3).")
@click.option("-c", "--channels", default=None, metavar="SEL",
              help="Channels to show: 0:16, 3,7,9, -1, all.  [default: all]")
@click.option("-k", "--top", type=click.IntRange(min=1), default=None, metavar="K",
              help="Show the K channels with the highest mean activation (among --channels), ranked.")
@click.option("--norm", type=click.Choice(["map", "layer"]), default="map", show_default=True,
              help="map: each map to its own min..max; layer: one shared scale for the whole layer.")
@click.option("--symmetric", is_flag=True, help="Put 0 in the middle of the colormap (use a diverging one, e.g. RdBu_r, for --stage conv).")
@click.option("--cmap", default="viridis", show_default=True, metavar="NAME", help="Any matplotlib colormap.")
@click.option("--tile", type=click.IntRange(min=1, max=2048), default=64, show_default=True, metavar="PX",
              help="Upscale tiles (nearest neighbour) until the shorter side is at least PX.")
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
@click.option("--bare", is_flag=True, help="Grid only: no title, channel numbers or colour legend.")
@click.option("--npy", is_flag=True, help="Also write each captured (C, H, W) float32 tensor as .npy beside its PNG.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass (same-size images only).")
@output_option()
@json_option
def maps(images: tuple[str, ...], sample: bool, size: str | None, crop: bool, max_pixels: int | None,
         model: Any, layer: tuple[str, ...], stage: str, channels: str | None,
         top: int | None, norm: str, symmetric: bool, cmap: str, tile: int, cols: int | None, overlay: bool,
         alpha: float, sheet: bool, sheet_maps: int, sheet_tile: int, bare: bool, npy: bool,
         batch_size: int, output: str, as_json: bool) -> None:
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
    check_stream(output, as_json=as_json)
    from ..render import check_cmap

    t0 = time.perf_counter()
    check_cmap(cmap)
    n_inputs = len(check_images(images, sample=sample, size=size, crop=crop))
    plan = MapsRun.plan(model, layer, stage=stage, channels=channels, sheet=sheet, npy=npy, output=output,
                        n_inputs=n_inputs)  # every usage error before the weights are read
    lm = load(model)
    if "batch" in lm.limits and batch_size > 1:
        batch_size = 1  # the program takes batches of one only: same pictures, one forward per image
    run = MapsRun(lm=lm, layer_indices=plan, stage=stage, channels=channels, top=top, norm=norm,
                  symmetric=symmetric, cmap=cmap, tile=tile, cols=cols, overlay=overlay, alpha=alpha,
                  sheet=sheet, sheet_maps=sheet_maps, sheet_tile=sheet_tile, bare=bare, npy=npy,
                  output=output, as_json=as_json)
    inputs = read_images(images, sample=sample, size=size, crop=crop, max_pixels=max_pixels, lm=lm)
    run.run(inputs, batch_size=batch_size)
    info(f"maps: {run.written} files for {run.n_images} image(s), {len(run.layers)} layer(s) of {lm.name} "
         f"({lm.weights}, stage {stage}) in {time.perf_counter() - t0:.1f}s")


class MapsRun:
    """The work of one `cnnviz maps` call: validate everything up front, then render and write
    each layer of each image as soon as it is captured."""

    @staticmethod
    def plan(model: Any, layer_specs: tuple[str, ...], *, stage: str, channels: str | None, sheet: bool,
             npy: bool, output: str, n_inputs: int) -> list[int]:
        """Check the request on the model's architecture alone (parameters on 'meta', no weights
        read): layers, stage, channels, output. Returns the selected layer indices."""
        from ..capture import hook_points
        from ..errors import UsageError
        from ..io import ensure_dir
        from ..layers import conv_layers, select_layers
        from ..maps import resolve_channels

        net = architecture(model).model
        layers = select_layers(conv_layers(net), layer_specs, model_name=model.source)
        hook_points(net, layers, stage)  # --stage act not available -> usage error now
        for layer in layers:
            resolve_channels(channels, layer.out_channels, layer_name=layer.name)
        if output == "-":
            produced = n_inputs * len(layers) + (n_inputs if sheet else 0)
            if produced != 1 or npy:
                what = "--npy files" if npy else (
                    f"{produced} PNGs ({n_inputs} image(s) x {len(layers)} layer(s)" + (" + sheets)" if sheet else ")"))
                raise UsageError(f"-o - streams exactly one PNG to stdout, but this run writes {what}; use -o DIR")
        else:
            ensure_dir(output)
        return [layer.index for layer in layers]

    def __init__(self, *, lm: Any, layer_indices: list[int], stage: str, channels: str | None,
                 top: int | None, norm: str, symmetric: bool, cmap: str, tile: int, cols: int | None,
                 overlay: bool, alpha: float, sheet: bool, sheet_maps: int, sheet_tile: int, bare: bool,
                 npy: bool, output: str, as_json: bool):
        from ..layers import conv_layers

        self.lm, self.stage, self.channels, self.top = lm, stage, channels, top
        self.norm, self.symmetric, self.cmap, self.tile, self.cols = norm, symmetric, cmap, tile, cols
        self.overlay, self.alpha, self.bare, self.npy, self.as_json = overlay, alpha, bare, npy, as_json
        self.sheet, self.sheet_maps, self.sheet_tile = sheet, sheet_maps, sheet_tile
        every = conv_layers(lm.model)
        self.layers = [every[i] for i in layer_indices]
        self.stream = output == "-"
        self.output = output
        self.written = 0
        self.n_images = 0

    def run(self, inputs: Any, *, batch_size: int) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        from ..maps import iter_batches, stream_maps

        pending: list[Any] = []
        sheets: dict[int, list[tuple[int, Any]]] = {}

        def batches() -> Any:
            import numpy as np

            for batch in iter_batches(inputs, batch_size=batch_size, key=lambda im: im.x.shape):
                pending[:] = batch
                sheets.clear()
                yield np.stack([im.x for im in batch])
                self.n_images += len(batch)
                if self.sheet:
                    for k, im in enumerate(batch):
                        self._write_sheet(im, sorted(sheets.get(k, []), key=lambda r: r[0]))

        def on_layer(_b: int, layer: Any, arr: Any) -> None:
            # The images of a batch are rendered and encoded on all cores (NumPy and zlib release
            # the GIL); paths are reported in input order.
            jobs = [(im, arr[k]) for k, im in enumerate(pending)]
            done = pool.map(lambda job: self._write_layer(*job, layer), jobs) if len(jobs) > 1 else [self._write_layer(*jobs[0], layer)]
            for k, (record, row) in enumerate(done):
                emit(record, as_json=self.as_json)
                self.written += 1
                if row is not None:
                    sheets.setdefault(k, []).append((layer.index, row))

        with ThreadPoolExecutor(max_workers=max(1, min(batch_size, os.cpu_count() or 1))) as pool:
            stream_maps(self.lm.model, self.layers, batches(), stage=self.stage, on_layer=on_layer)

    # ------------------------------------------------------------ one image, one layer

    def _target(self, name: str) -> Any:
        import os

        from ..io import stdout_binary

        return stdout_binary() if self.stream else os.path.join(self.output, name)

    def _write_layer(self, im: Any, m: Any, layer: Any) -> tuple[dict[str, Any], Any]:
        """Render and write one image's grid (and .npy) for ``layer``; returns its stdout record
        and, with --sheet, its sheet row. Runs on worker threads: reports nothing itself."""
        from ..io import output_name, save_npy, save_png
        from ..maps import SheetRow, layer_stats, render_grid, scale_maps

        stats = layer_stats(m)
        alias = f" ({layer.alias})" if layer.alias else ""
        title = None if self.bare else (
            f"{im.label} \u00b7 {self.lm.name} {self.lm.weights} \u00b7 {layer.index} {layer.name}{alias} \u00b7 stage {self.stage}\n"
            f"{stats['shape'][0]} maps {stats['shape'][1]}x{stats['shape'][2]}"
            + (f", top {self.top} by mean activation" if self.top else "")
            + f", mean {stats['mean']:.3g}, max {stats['max']:.3g}, zeros {100 * stats['zero_fraction']:.0f}%"
        )
        grid = render_grid(m, channels=self.channels, top=self.top, norm=self.norm, symmetric=self.symmetric,
                           cmap=self.cmap, tile=self.tile, cols=self.cols,
                           overlay=im.display if self.overlay else None, alpha=self.alpha,
                           labels=not self.bare, title=title, legend=not self.bare, layer_name=layer.name)
        name = output_name(im.label, self.lm.name, layer.index, layer.slug, kind="maps")
        meta = {
            "Software": "cnnviz",
            "image": im.source, "model": self.lm.name, "weights": self.lm.weights, "layer": layer.index,
            "name": layer.name, "alias": layer.alias, "stage": self.stage, "shape": stats["shape"],
            "channels": grid.channels, "norm": self.norm, "cmap": self.cmap,
        }
        if grid.scores is not None:
            meta["ranked_by"] = "mean activation, highest first"
            meta["scores"] = [round(s, 6) for s in grid.scores]
        if grid.value_range is not None:
            meta["value_range"] = list(grid.value_range)
        path = save_png(self._target(name), grid.picture, metadata=meta)
        record: dict[str, Any] = {"path": path}
        if self.npy:
            import os

            record["npy"] = save_npy(os.path.join(self.output, name[: -len(".png")] + ".npy"), m.astype("float32", copy=False))
        record.update({"image": im.source, "layer": layer.index, "name": layer.name, "alias": layer.alias,
                       "stage": self.stage, "shape": stats["shape"], "mean": stats["mean"], "max": stats["max"],
                       "zero_fraction": stats["zero_fraction"]})
        if self.top is not None or self.channels is not None:
            record["channels"] = grid.channels
        if grid.scores is not None:
            record["scores"] = grid.scores
        if not self.sheet:
            return record, None
        if self.top is None and self.channels is None:
            idx = list(range(min(self.sheet_maps, m.shape[0])))
        else:
            idx = grid.channels
        x01, _ = scale_maps(m, idx, norm=self.norm, symmetric=self.symmetric)
        label = f"{layer.index} {layer.alias or layer.name}"
        return record, SheetRow(label=label, maps01=x01, channels=idx, symmetric=self.symmetric)

    def _write_sheet(self, im: Any, indexed_rows: list[tuple[int, Any]]) -> None:
        from ..io import output_name, save_png
        from ..maps import render_sheet

        rows = [row for _, row in indexed_rows]

        what = f"top {self.top} by mean activation" if self.top else ("selected channels" if self.channels else f"first {min(self.sheet_maps, max(len(r.channels) for r in rows))}")
        title = None if self.bare else (
            f"{im.label} \u00b7 {self.lm.name} {self.lm.weights} \u00b7 stage {self.stage} \u00b7 {what} maps per layer, "
            f"{'each map its own scale' if self.norm == 'map' else 'one scale per layer'}")
        image = render_sheet(rows, cmap=self.cmap, tile=self.sheet_tile, overlay=im.display if self.overlay else None,
                             alpha=self.alpha, labels=not self.bare, title=title)
        name = output_name(im.label, self.lm.name, kind="sheet")
        meta = {"Software": "cnnviz", "image": im.source, "model": self.lm.name, "weights": self.lm.weights,
                "stage": self.stage, "layers": [r.label for r in rows], "channels": [r.channels for r in rows]}
        path = save_png(self._target(name), image, metadata=meta)
        emit({"path": path, "kind": "sheet", "image": im.source, "stage": self.stage,
              "layers": [i for i, _ in indexed_rows]}, as_json=self.as_json)
        self.written += 1
