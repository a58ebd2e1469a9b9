"""The `maps` job: feature-map grids (and sheets, .npy) of images at conv layers."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..capture import hook_points
from ..device import place
from ..layers import ConvLayer, conv_layers, select_layers
from ..maps import (SheetRow, iter_batches, layer_stats, render_grid, render_sheet, resolve_channels, scale_maps,
                    stream_maps)
from ..models import LoadedModel
from ..io import indices_tag, output_name
from ..progress import Progress
from ..errors import UsageError
from ..render import check_cmap, check_picture_size, grid_shape
from ..sources import ModelSpec, architecture, as_spec, load
from .inputs import ImageInputs, InputImage, size_tags
from .output import Output, Record, Say, default, quiet, request_tags


@dataclass(frozen=True, kw_only=True)
class MapsRequest:
    """Everything `cnnviz maps` can be asked (defaults = the CLI's). ``layers``: layer selectors;
    ``stage``: 'conv' or 'act'; ``channels``: a channel selector or None (all); ``top``: the K
    channels with the highest mean; ``norm``: 'map' or 'layer'; ``model``: a ModelSpec or a --model
    string (weights, seed, preprocessing ride in the ModelSpec); the rest shape the pictures."""

    inputs: ImageInputs
    layers: tuple[str, ...]
    model: ModelSpec | str = "resnet50"
    stage: str = "conv"
    channels: str | None = None
    top: int | None = None
    norm: str = "map"
    symmetric: bool = False
    cmap: str = "viridis"
    tile: int = 64
    cols: int | None = None
    overlay: bool = False
    alpha: float = 0.7
    sheet: bool = False
    sheet_maps: int = 8
    sheet_tile: int = 112
    bare: bool = False
    npy: bool = False
    batch_size: int = 8
    device: str = "auto"
    precision: str = "fp32"
    quiet: bool = False


def run_maps(req: MapsRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet) -> None:
    """Write one grid PNG per image and layer (plus .npy with ``npy``, one sheet per image with
    ``sheet``) through ``output``, reporting each file as soon as it is written. Every usage
    error is raised before weights or pixels are read. ``model``: an already loaded model (else
    ``req.model`` is loaded)."""
    t0 = time.perf_counter()
    check_cmap(req.cmap)
    n_inputs = len(req.inputs.check())
    where = place(req.device, req.precision, say=say)
    # every usage error before the weights are read (a given model: checked on it, no rebuild)
    indices = _plan(req, output, n_inputs, net=model.model if model is not None else None)
    lm = model or load(req.model, device=where.device)
    if "batch" in lm.limits and req.batch_size > 1:
        req = replace(req, batch_size=1)  # the program takes batches of one only: same pictures, one forward per image
    every = conv_layers(lm.model)
    run = _MapsRun(req, lm, [every[i] for i in indices], output)
    with where.autocast(lm.model), Progress(n_inputs, desc="maps", unit="image", quiet=req.quiet) as progress:
        run.run(req.inputs.read(lm), progress=progress)
    say(f"maps: {run.written} files for {run.n_images} image(s), {len(run.layers)} layer(s) of {lm.name} "
        f"({lm.weights}, stage {req.stage}) in {time.perf_counter() - t0:.1f}s")


def _plan(req: MapsRequest, output: Output, n_inputs: int, net: Any = None) -> list[int]:
    """Check the request on the model's architecture alone (parameters on 'meta', no weights
    read; ``net``: the model already loaded, which has it): layers, stage, channels, output.
    Returns the selected layer indices."""
    spec = as_spec(req.model)
    net = net if net is not None else architecture(spec).model
    layers = select_layers(conv_layers(net), req.layers, model_name=spec.source)
    hook_points(net, layers, req.stage)  # --stage act not available -> usage error now
    for layer in layers:
        chosen = len(resolve_channels(req.channels, layer.out_channels, layer_name=layer.name))
        _check_grid_size(req, layer, min(chosen, req.top) if req.top else chosen)
    produced = n_inputs * len(layers) + (n_inputs if req.sheet else 0)
    what = "--npy files" if req.npy else (
        f"{produced} PNGs ({n_inputs} image(s) x {len(layers)} layer(s)" + (" + sheets)" if req.sheet else ")"))
    output.prepare(produced, npy=req.npy, message=f"-o - streams exactly one PNG to stdout, but this run writes {what}; use -o DIR")
    return [layer.index for layer in layers]


def _check_grid_size(req: MapsRequest, layer: ConvLayer, n: int) -> None:
    """A grid of ``n`` maps is at least ``tile`` px a cell whatever the image size: refuse now
    (before any work) a grid that could never be opened (render.MAX_PIXELS)."""
    rows, cols = grid_shape(n, cols=req.cols)
    try:
        check_picture_size(rows * (req.tile + 2) - 2, cols * (req.tile + 2) - 2,
                           hint="lower --tile, or draw fewer maps with --channels or --top", at_least=True)
    except UsageError as exc:
        raise UsageError(f"layer {layer.index} {layer.name}, {n} maps of {req.tile} px: {exc}") from None


@dataclass
class _MapsRun:
    """One run: render and write each layer of each image as soon as it is captured."""

    req: MapsRequest
    lm: LoadedModel
    layers: list[ConvLayer]
    output: Output
    n_images: int = 0
    written: int = 0
    _sheets: dict[int, list[tuple[int, SheetRow]]] = field(default_factory=dict)

    def run(self, inputs: Any, *, progress: Progress) -> None:
        req = self.req
        pending: list[InputImage] = []

        def batches() -> Any:
            for batch in iter_batches(inputs, batch_size=req.batch_size, key=lambda im: im.x.shape):
                pending[:] = batch
                self._sheets.clear()
                yield np.stack([im.x for im in batch])
                self.n_images += len(batch)
                if req.sheet:
                    for k, im in enumerate(batch):
                        self._write_sheet(im, sorted(self._sheets.get(k, []), key=lambda r: r[0]))
                progress.update(len(batch))

        def on_layer(_b: int, layer: ConvLayer, arr: np.ndarray) -> None:
            # The images of a batch are rendered and encoded on all cores (NumPy and zlib release
            # the GIL); files are reported in input order.
            jobs = [(im, arr[k]) for k, im in enumerate(pending)]
            done = (pool.map(lambda job: self._write_layer(*job, layer), jobs) if len(jobs) > 1
                    else [self._write_layer(*jobs[0], layer)])
            for k, (record, row) in enumerate(done):
                self._report(record)
                if row is not None:
                    self._sheets.setdefault(k, []).append((layer.index, row))

        with ThreadPoolExecutor(max_workers=max(1, min(req.batch_size, os.cpu_count() or 1))) as pool:
            stream_maps(self.lm.model, self.layers, batches(), stage=req.stage, on_layer=on_layer)

    def _report(self, record: Record) -> None:
        self.output.report(record)
        self.written += 1

    def _write_layer(self, im: InputImage, m: np.ndarray, layer: ConvLayer) -> tuple[Record, SheetRow | None]:
        """Render and write one image's grid (and .npy) for ``layer``; returns its record and,
        with ``sheet``, its sheet row. Runs on worker threads: reports nothing itself."""
        req, lm = self.req, self.lm
        stats = layer_stats(m)
        alias = f" ({layer.alias})" if layer.alias else ""
        title = None if req.bare else (
            f"{im.label} \u00b7 {lm.name} {lm.weights} \u00b7 {layer.index} {layer.name}{alias} \u00b7 stage {req.stage}\n"
            f"{stats['shape'][0]} maps {stats['shape'][1]}x{stats['shape'][2]} of a {im.x.shape[-2]}x{im.x.shape[-1]} input"
            + (f", top {req.top} by mean activation" if req.top else "")
            + f", mean {stats['mean']:.3g}, max {stats['max']:.3g}, zeros {100 * stats['zero_fraction']:.0f}%"
            + (f"\n{im.fed}" if im.fed else "")
        )
        grid = render_grid(m, channels=req.channels, top=req.top, norm=req.norm, symmetric=req.symmetric,
                           cmap=req.cmap, tile=req.tile, cols=req.cols,
                           overlay=im.display if req.overlay else None, alpha=req.alpha,
                           labels=not req.bare, title=title, legend=not req.bare, layer_name=layer.name)
        name = output_name(im.label, lm.name, layer.index, layer.slug, kind="maps",
                           tags=[_channel_tag(req, layer), *_tags(req, lm, sheet=False)])
        meta: dict[str, Any] = {
            "Software": "cnnviz",
            "image": im.source, "model": lm.name, "weights": lm.weights, "layer": layer.index,
            "name": layer.name, "alias": layer.alias, "stage": req.stage, "shape": stats["shape"],
            "input": [int(im.x.shape[-2]), int(im.x.shape[-1])], "channels": grid.channels, "norm": req.norm, "cmap": req.cmap,
        }
        if grid.scores is not None:
            meta["ranked_by"] = "mean activation, highest first"
            meta["scores"] = [round(s, 6) for s in grid.scores]
        if grid.value_range is not None:
            meta["value_range"] = list(grid.value_range)
        record: Record = {"path": self.output.png(name, grid.picture, metadata=meta)}
        if req.npy:
            record["npy"] = self.output.npy(name[: -len(".png")] + ".npy", m.astype("float32", copy=False))
        if im.valid is not None:  # a detector: the tensor its convs read, the image inside the padding
            record.update({"input": [int(v) for v in im.x.shape[-2:]], "valid": list(im.valid)})
        record.update({"image": im.source, "layer": layer.index, "name": layer.name, "alias": layer.alias,
                       "stage": req.stage, "shape": stats["shape"], "input": [int(im.x.shape[-2]), int(im.x.shape[-1])],
                       "mean": stats["mean"], "max": stats["max"],
                       "zero_fraction": stats["zero_fraction"]})
        if req.top is not None or req.channels is not None:
            record["channels"] = grid.channels
        if grid.scores is not None:
            record["scores"] = grid.scores
        if not req.sheet:
            return record, None
        if req.top is None and req.channels is None:
            idx = list(range(min(req.sheet_maps, m.shape[0])))
        else:
            idx = grid.channels
        x01, _ = scale_maps(m, idx, norm=req.norm, symmetric=req.symmetric)
        label = f"{layer.index} {layer.alias or layer.name}"
        return record, SheetRow(label=label, maps01=x01, channels=idx, symmetric=req.symmetric)

    def _write_sheet(self, im: InputImage, indexed_rows: list[tuple[int, SheetRow]]) -> None:
        req, lm = self.req, self.lm
        rows = [row for _, row in indexed_rows]
        what = (f"top {req.top} by mean activation" if req.top else
                ("selected channels" if req.channels else f"first {min(req.sheet_maps, max(len(r.channels) for r in rows))}"))
        title = None if req.bare else (
            f"{im.label} \u00b7 {lm.name} {lm.weights} \u00b7 stage {req.stage} \u00b7 {what} maps per layer, "
            f"{'each map its own scale' if req.norm == 'map' else 'one scale per layer'}")
        image = render_sheet(rows, cmap=req.cmap, tile=req.sheet_tile, overlay=im.display if req.overlay else None,
                             alpha=req.alpha, labels=not req.bare, title=title)
        meta = {"Software": "cnnviz", "image": im.source, "model": lm.name, "weights": lm.weights,
                "stage": req.stage, "layers": [r.label for r in rows], "channels": [r.channels for r in rows]}
        name = output_name(im.label, lm.name, kind="sheet", tags=[_channel_tag(req, self.layers[0]), *_tags(req, lm, sheet=True)])
        path = self.output.png(name, image, metadata=meta)
        self._report({"path": path, "kind": "sheet", "image": im.source, "stage": req.stage,
                      "layers": [i for i, _ in indexed_rows]})


def _tags(req: MapsRequest, lm: LoadedModel, *, sheet: bool) -> list[str]:
    """File-name tags of the request's non-default options (docs/output-names.md): what changes
    the picture, then the grid's (or sheet's) layout, then the input size and crop."""
    alpha = f"{req.alpha:g}" if req.alpha != default(MapsRequest, "alpha") else ""
    layout = [("k{}", "sheet_maps"), ("tile{}", "sheet_tile")] if sheet else [("tile{}", "tile"), ("cols{}", "cols")]
    return [*request_tags(req, [("act", "stage"), ("top{}", "top"), ("norm-{}", "norm"), ("sym", "symmetric"),
                                 ("{}", "cmap")]),
            *(["overlay" + alpha] if req.overlay else []), *request_tags(req, [*layout, ("bare", "bare")]),
            *size_tags(req.inputs.size, lm, crop=req.inputs.crop)]


def _channel_tag(req: MapsRequest, layer: ConvLayer) -> str | None:
    """'c0-15' for ``channels``, resolved on ``layer`` (a sheet: on its first layer); none when
    they are every channel in order (the default picture)."""
    if req.channels is None:
        return None
    chosen = resolve_channels(req.channels, layer.out_channels, layer_name=layer.name)
    return None if chosen == list(range(layer.out_channels)) else indices_tag("c", chosen)  # all, in order: the default
