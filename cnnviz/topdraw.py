"""The pictures of `top`: a layer's dataset examples as rows of receptive-field patches.

An example is a JSON-ready record (``path``, ``image`` id, ``score``, ``max``, ``unit``, ``box``
as :class:`cnnviz.jobs.top.LayerResult` holds them). Each channel becomes a :class:`Row` of
:class:`Patch` es whose pixels are cut only when their page is drawn (from display images
held in an :class:`~cnnviz.imagecache.ImageCache`), optionally with the channel's map
blended over the window; :func:`overlay_maps` computes those maps with one forward pass per
batch of distinct example images (maps.stream_maps, to the layer only). Layout and paging are
cnnviz.patches'.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from .errors import ImageError
from .imagecache import ImageCache
from .layers import ConvLayer
from .maps import stream_maps
from .patches import Patch, Row, crop_window, map_on_input, overlay_patch, window_values

__all__ = ["ImageCache", "display_cache", "example_row", "example_title", "overlay_maps"]

Maps = Mapping[tuple[int, int], np.ndarray]  # {(image id, channel): its map (h, w)}


def display_cache(prep: Any, *, budget: int = 512 << 20) -> ImageCache:
    """The display images (H, W, 3) uint8 of example files as ``prep`` (a scan.Preprocess) makes
    them, each read once while it stays in ``budget`` bytes; None for a file no longer readable."""
    return ImageCache(lambda path: prep(path)[1], budget=budget)


def example_title(*, model_name: str, weights: str, layer: ConvLayer, stage: str, images: int, rf: int, k: int,
                  score: str, bottom: bool, overlay: bool, channel: int | None = None) -> str:
    """The title of a layer's grid (or, with ``channel``, of that channel's strip)."""
    head = (f"{model_name} {weights} \u00b7 layer {layer.index} {layer.name}" + (f" ({layer.alias})" if layer.alias else "")
            + f" \u00b7 stage {stage}" + ("" if channel is None else f" \u00b7 channel {channel}"))
    order = "lowest" if bottom else "highest"
    return (f"{head}\nthe {k} images with the {order} {score} activation, per channel (row), of {images:,}; "
            f"patch = receptive field ({rf} px) of the peak unit, hatched = zero padding"
            + ("; map overlaid" if overlay else ""))


def example_row(c: int, entries: Sequence[Mapping[str, Any]], displays: ImageCache, maps: Maps, *,
                cmap: str = "inferno", alpha: float = 0.6) -> Row:
    """Channel ``c``'s row: its patches, whose pixels are made only when their page is drawn."""
    norm = max([abs(e["max"]) for e in entries] + [1e-12])  # one scale per row: patches compare
    patches = []
    for e in entries:
        name = os.path.basename(e["path"])
        if not os.path.isfile(e["path"]):
            name = "(missing) " + name
        patches.append(Patch(partial(_pixels, e, c, displays, maps, norm, cmap, alpha), f"{e['score']:.3g}", name))
    return Row(f"{c}", patches)


def _pixels(e: Mapping[str, Any], c: int, displays: ImageCache, maps: Maps, norm: float, cmap: str,
            alpha: float) -> np.ndarray:
    """The window of example ``e`` (its map blended over it when ``maps`` has it); padding only
    when the file was deleted or can no longer be read since the scan."""
    disp = displays.get(e["path"])
    if disp is None:
        return crop_window(np.zeros((0, 0, 3), np.uint8), tuple(e["box"]))[0]
    pix, inside = crop_window(disp, tuple(e["box"]))
    m = maps.get((e["image"], c))
    if m is not None:
        v = window_values(map_on_input(m, disp.shape[:2]), tuple(e["box"])) / norm
        pix = overlay_patch(pix, inside, v, cmap=cmap, alpha=alpha)
    return pix


def overlay_maps(model: Any, layer: ConvLayer, examples: Mapping[int, Sequence[Mapping[str, Any]]], *, prep: Any,
                 stage: str, batch_size: int) -> dict[tuple[int, int], np.ndarray]:
    """{(image id, channel): the channel's map (h, w) float32} for the ``examples`` of one layer
    ({channel: [example]}): the distinct example files, ``batch_size`` at a time, preprocessed by
    ``prep`` (unreadable ones left out), each batch split by input shape, run through ``model``
    to ``layer`` only (maps.stream_maps)."""
    want: dict[str, set[int]] = {}
    ident: dict[str, int] = {}
    for c, entries in examples.items():
        for e in entries:
            want.setdefault(e["path"], set()).add(c)
            ident[e["path"]] = e["image"]
    out: dict[tuple[int, int], np.ndarray] = {}
    groups: list[list[str]] = []  # the paths of each batch fed to the network, in order

    def batches() -> Iterator[np.ndarray]:
        paths = list(want)
        for i in range(0, len(paths), batch_size):
            xs: dict[str, np.ndarray] = {}
            for p in paths[i : i + batch_size]:
                try:
                    xs[p] = prep(p)[0]
                except ImageError:
                    continue
            by_shape: dict[tuple[int, ...], list[str]] = {}
            for p, x in xs.items():
                by_shape.setdefault(x.shape, []).append(p)
            for group in by_shape.values():
                groups.append(group)
                yield np.stack([xs[p] for p in group])

    def on_layer(b: int, _layer: ConvLayer, arr: np.ndarray) -> None:
        for row, p in enumerate(groups[b]):
            for c in want[p]:
                out[(ident[p], c)] = arr[row, c].copy()  # now: arr may be the hooked tensor's own memory

    stream_maps(model, [layer], batches(), stage=stage, on_layer=on_layer)
    return out
