"""Feature-map pictures: channel choice (selector or top-K by mean), normalisation, grids, overlays,
per-layer sheets; and the streaming run that captures layers batch by batch.

The picture functions are pure array work (no torch, no files): they take maps (C, h, w) float
and return (H, W, 3) uint8 images; they never modify their input. ``stream_maps`` is the only
torch code: it hands each layer's (N, C, h, w) output to a callback the moment it is computed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import UsageError
from .render import (
    GAP_VALUE,
    Picture,
    PixelSpace,
    ShowsPicture,
    colorize,
    check_cmap,
    label_bands,
    label_tiles,
    legend_strip,
    levels,
    margin_labels,
    normalize,
    palette,
    tile_factor,
    tile_grid,
    title_strip,
    to_index,
    value_range,
    vstack,
)
from .select import select_indices

if TYPE_CHECKING:  # torch only for type hints: the picture code runs without it
    import torch
    from torch import nn

    from .layers import ConvLayer

NORMS = ("map", "layer")
LABEL_MIN_TILE = 20  # px: narrower tiles get no channel numbers (they would not be legible)
T = TypeVar("T")


# ---------------------------------------------------------------- channels and statistics


def channel_means(maps: np.ndarray) -> np.ndarray:
    """Mean activation of each channel of ``maps`` (C, h, w) -> (C,) float64."""
    m = _check_maps(maps)
    return m.reshape(m.shape[0], -1).mean(axis=1, dtype=np.float64)


def layer_stats(maps: np.ndarray) -> dict[str, Any]:
    """Summary of one image's layer output (C, h, w): shape, mean, min, max, zero_fraction
    (fraction of values exactly 0: the sparsity after a ReLU)."""
    m = _check_maps(maps)
    return {
        "shape": [int(s) for s in m.shape],
        "mean": float(m.mean(dtype=np.float64)),
        "min": float(m.min()),
        "max": float(m.max()),
        "zero_fraction": float(np.count_nonzero(m == 0) / m.size),
    }


def choose_channels(
    maps: np.ndarray,
    *,
    channels: str | Sequence[str] | Sequence[int] | None = None,
    top: int | None = None,
    layer_name: str = "",
) -> tuple[list[int], list[float] | None]:
    """Which channels of ``maps`` (C, h, w) to show, in display order.

    ``channels``: selector(s) in the project grammar ('0:16', '3,7', 'all', '-1') or ints;
    default all. ``top``: keep the K with the highest mean activation among those, ranked
    (ties by channel index); K above the count keeps them all. Returns (indices, mean activation
    of each shown channel when ranked, else None). Raises SelectionError."""
    c = _check_maps(maps).shape[0]
    idx = resolve_channels(channels, c, layer_name=layer_name)
    if top is None:
        return idx, None
    if top < 1:
        raise UsageError(f"--top must be at least 1, not {top}")
    means = channel_means(maps)
    order = sorted(idx, key=lambda i: (-means[i], i))[:top]
    return order, [float(means[i]) for i in order]


def resolve_channels(channels: str | Sequence[str] | Sequence[int] | None, count: int, *, layer_name: str = "") -> list[int]:
    """Channel selector(s) or ints -> indices into ``count`` channels (first-seen order); None = all."""
    where = f"layer {layer_name} has {count} channels" if layer_name else f"there are {count} channels"
    if channels is None:
        return list(range(count))
    return select_indices(channels, count, what="channel", hint=where)


# ---------------------------------------------------------------- resampling


def _interp_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) float32 weights: 'bilinear' (align_corners=False, like F.interpolate) or
    'area' (each output pixel averages the input it covers; nearest for integer upscales)."""
    r = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    if mode == "bilinear":
        src = np.clip((rows + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = src - i0
        np.add.at(r, (rows, i0), 1 - w1)
        np.add.at(r, (rows, i1), w1)
    elif mode == "area":
        s = n_in / n_out
        lo, hi = rows * s, (rows + 1) * s
        j = np.arange(n_in)
        overlap = np.clip(np.minimum(hi[:, None], j[None] + 1) - np.maximum(lo[:, None], j[None]), 0, None)
        r = overlap / s
    else:
        raise ValueError(f"mode must be 'bilinear' or 'area', not {mode!r}")
    return r.astype(np.float32)


def resize_maps(maps: np.ndarray, size: tuple[int, int], *, mode: str = "bilinear") -> np.ndarray:
    """Resize (K, h, w) (or (h, w, 3) images via their channels: pass (3, h, w)) to (K, H, W)
    float32 with separable interpolation matrices: one matmul per axis, no per-map loop."""
    m = np.asarray(maps, dtype=np.float32)
    if m.ndim != 3:
        raise ValueError(f"maps must be (K, h, w), got shape {m.shape}")
    _, h, w = m.shape
    hh, ww = int(size[0]), int(size[1])
    if (hh, ww) == (h, w):
        return m.copy()
    ry = _interp_matrix(h, hh, mode)
    rx = _interp_matrix(w, ww, mode)
    return np.matmul(np.matmul(ry, m), rx.T)


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, 3) uint8 by area averaging (no aliasing when shrinking)."""
    chw = resize_maps(np.asarray(image, dtype=np.float32).transpose(2, 0, 1), size, mode="area")
    return np.clip(np.rint(chw), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _strength(x01: np.ndarray, symmetric: bool) -> np.ndarray:
    """Overlay opacity per pixel: the scaled value, or with a symmetric scale (0 -> 0.5) the
    distance from zero, so strong negative responses show as much as strong positive ones."""
    return np.abs(2.0 * x01 - 1.0) if symmetric else x01


def blend(colors: np.ndarray, image: np.ndarray, *, alpha: float = 0.7, strength: np.ndarray | None = None) -> np.ndarray:
    """(K, H, W, 3) uint8 colour maps over one (H, W, 3) uint8 image. The opacity is ``alpha``,
    times ``strength`` (K, H, W) in [0, 1] when given (the scaled map itself): where a map is
    silent the photo shows through untouched, where it peaks the colour covers it by ``alpha``."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, not {alpha}")
    a = np.float32(alpha) if strength is None else alpha * np.asarray(strength, dtype=np.float32)[..., None]
    out = (1.0 - a) * np.asarray(image, dtype=np.float32)[None] + a * np.asarray(colors, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- grids


@dataclass(kw_only=True)
class MapGrid(ShowsPicture):
    """A rendered grid: ``picture`` (a render.Picture: palette indices for colour-mapped grids,
    RGB for overlays), the ``channels`` shown, in order; ``scores`` their mean activations when
    ranked by --top (else None); ``value_range`` (lo, hi) of the shared scale with norm='layer'
    (else None). ``image`` is always the (H, W, 3) uint8 picture; ``pil()`` a PIL image."""

    channels: list[int]
    picture: Picture
    scores: list[float] | None = None
    value_range: tuple[float, float] | None = None

    def pixels(self) -> tuple[np.ndarray, bytes | None]:
        """What to encode: ((H, W) indices, flat RGB palette bytes), or ((H, W, 3) RGB, None)."""
        pal = self.picture.palette
        return self.picture.pixels, None if pal is None else pal.tobytes()


def scale_maps(maps: np.ndarray, channels: Sequence[int], *, norm: str = "map", symmetric: bool = False) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The chosen channels of ``maps`` (C, h, w) scaled to [0, 1] float32 (K, h, w).

    norm='map': each map to its own min..max (constant map -> 0: a flat tile, never NaN);
    norm='layer': one scale, the min..max over every channel of the layer (returned as value_range).
    symmetric: 0 maps to 0.5 and +-max|x| to 1/0 (for diverging colormaps on conv-stage maps)."""
    if norm not in NORMS:
        raise UsageError(f"unknown --norm {norm!r}; choose 'map' or 'layer'")
    m = _check_maps(maps)
    idx = list(channels)
    if norm == "map":
        return normalize(m[idx], per="map", symmetric=symmetric), None
    return normalize(m, per="all", symmetric=symmetric)[idx], value_range(m, symmetric=symmetric)


def render_grid(
    maps: np.ndarray,
    *,
    channels: str | Sequence[str] | Sequence[int] | None = None,
    top: int | None = None,
    norm: str = "map",
    symmetric: bool = False,
    cmap: str = "viridis",
    tile: int = 64,
    cols: int | None = None,
    gap: int = 2,
    overlay: np.ndarray | None = None,
    alpha: float = 0.7,
    labels: bool = True,
    title: str | None = None,
    legend: bool = True,
    layer_name: str = "",
) -> MapGrid:
    """A near-square grid of the feature maps of one image's layer.

    ``maps`` (C, h, w) float; ``channels``/``top`` pick and order them (see choose_channels);
    ``norm``/``symmetric`` scale them (see scale_maps); ``cmap`` any matplotlib colormap. Each
    tile is upscaled (nearest neighbour, integer factor) until its shorter side is at least
    ``tile`` px. ``overlay`` (H, W, 3) uint8, the preprocessed input: each map is resized
    (bilinear) to it and blended over it, opacity ``alpha`` x the scaled map value. ``labels`` writes each channel number
    above its tile; ``title`` lines go on top; ``legend`` adds the colour scale below."""
    check_cmap(cmap)
    if tile < 1 or gap < 0:
        raise UsageError("--tile must be >= 1 and the gap >= 0")
    idx, scores = choose_channels(maps, channels=channels, top=top, layer_name=layer_name)
    x01, shared = scale_maps(maps, idx, norm=norm, symmetric=symmetric)
    space = PixelSpace(None if overlay is not None else palette(cmap))
    fill = space.grey(GAP_VALUE)
    tiles, factor = _tiles(x01, cmap=cmap, tile=tile, overlay=overlay, alpha=alpha, symmetric=symmetric)
    width = tiles.shape[2] * factor
    bands = None
    if labels and width >= LABEL_MIN_TILE:
        bands = label_bands(idx, width=width, size=max(8, min(11, width // 5)), grey_index=space.palette is not None)
    grid = tile_grid(tiles, cols=cols, gap=gap, fill=fill, scale=factor, bands=bands)
    parts = []
    if title:
        parts.append(space.from_rgb(title_strip(title, width=grid.shape[1])))
    parts.append(grid)
    if legend:
        parts.append(_legend(shared, symmetric=symmetric, cmap=cmap, width=grid.shape[1],
                             overlay=overlay is not None, index=space.palette is not None))
    image = vstack(parts, gap=4, fill=fill) if len(parts) > 1 else grid
    return MapGrid(channels=idx, scores=scores, value_range=shared, picture=space.picture(image))


def _tiles(x01: np.ndarray, *, cmap: str, tile: int, overlay: np.ndarray | None, alpha: float,
           symmetric: bool = False) -> tuple[np.ndarray, int]:
    """[0, 1] maps (K, h, w) -> (tiles, factor): palette indices (K, h, w, 1), or with ``overlay``
    RGB (K, H, W, 3) blended over the image; ``factor`` is the nearest-neighbour upscale that
    brings the shorter side to at least ``tile`` px (applied by tile_grid)."""
    if overlay is None:  # palette indices; see render.palette
        k, h, w = x01.shape
        return levels(x01)[..., None], tile_factor(h, w, tile)
    img = np.asarray(overlay)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"overlay must be an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    big = np.clip(resize_maps(x01, img.shape[:2], mode="bilinear"), 0.0, 1.0)
    tiles = blend(colorize(big, cmap), img, alpha=alpha, strength=_strength(big, symmetric))
    return tiles, tile_factor(img.shape[0], img.shape[1], tile)


@lru_cache(maxsize=64)
def _legend(value_range: tuple[float, float] | None, *, symmetric: bool, cmap: str, width: int, overlay: bool,
            index: bool) -> np.ndarray:
    """The colour-scale strip under a grid (RGB, or palette indices with ``index``); cached and
    read-only: with per-map scaling every grid of a width shares it."""
    blended = "; blended over the input" if overlay else ""
    if value_range is not None:
        lo, hi = value_range
        strip = legend_strip(lo, hi, width=width, cmap=cmap, caption=f"one scale for the whole layer{blended}")
    elif symmetric:
        strip = legend_strip(-1, 1, width=width, cmap=cmap, lo_text="\u2212max|map|", hi_text="+max|map|",
                             caption=f"each map scaled by its own max |value|, 0 in the middle{blended}")
    else:
        strip = legend_strip(0, 1, width=width, cmap=cmap, lo_text="map min", hi_text="map max",
                             caption=f"each map scaled to its own min..max{blended}")
    if index:
        strip = to_index(strip, palette(cmap))
    strip.setflags(write=False)
    return strip


# ---------------------------------------------------------------- sheets


@dataclass
class SheetRow:
    """One row of a sheet: ``label`` (layer name), ``maps01`` (K, h, w) already scaled to [0, 1]
    (see scale_maps), the ``channels`` they are, and whether the scale was ``symmetric``."""

    label: str
    maps01: np.ndarray
    channels: list[int] = field(default_factory=list)
    symmetric: bool = False


def render_sheet(
    rows: Sequence[SheetRow],
    *,
    cmap: str = "viridis",
    tile: int = 112,
    gap: int = 2,
    overlay: np.ndarray | None = None,
    alpha: float = 0.7,
    labels: bool = True,
    title: str | None = None,
) -> np.ndarray:
    """One picture, one row per layer, each labelled on the left: "K feature maps of each layer".

    Every map is resampled (area: averaged when shrinking, blocky when enlarging) to a common
    height of ``tile`` px (width by the map's aspect), so layers of different resolution line up.
    ``overlay`` blends each map over the input resized to the same tile. Returns (H, W, 3) uint8."""
    check_cmap(cmap)
    if not rows:
        raise UsageError("a sheet needs at least one layer")
    strips, centres, y = [], [], 0
    for row in rows:
        m = np.asarray(row.maps01, dtype=np.float32)
        _, h, w = m.shape
        size = (tile, max(1, round(tile * w / h)))
        x = np.clip(resize_maps(m, size, mode="area"), 0.0, 1.0)
        t = colorize(x, cmap)
        if overlay is not None:
            t = blend(t, _resize_image(overlay, size), alpha=alpha, strength=_strength(x, row.symmetric))
        if labels and row.channels and size[1] >= LABEL_MIN_TILE:
            t = label_tiles(t, [str(c) for c in row.channels], size=10)
        strip = tile_grid(t, cols=len(t), gap=gap)
        strips.append(strip)
        centres.append(y + strip.shape[0] // 2)
        y += strip.shape[0] + 2 * gap
    body = vstack(strips, gap=2 * gap)
    out = margin_labels(body, rows=list(zip(centres, [r.label for r in rows])), size=12)
    if title:
        out = vstack([title_strip(title, width=out.shape[1]), out], gap=4)
    return out


# ---------------------------------------------------------------- the streaming run


def iter_batches(items: Iterable[T], *, batch_size: int, key: Callable[[T], Any]) -> Iterator[list[T]]:
    """Group consecutive ``items`` into lists of at most ``batch_size`` sharing ``key`` (e.g. the
    input shape: images of different sizes cannot share a batch). Lazy: one batch in memory."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    batch: list[T] = []
    for item in items:
        if batch and key(item) != key(batch[0]):
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == batch_size:  # full: yield now, before reading the next input (stdin may block)
            yield batch
            batch = []
    if batch:
        yield batch


def stream_maps(
    model: "nn.Module",
    layers: Sequence["ConvLayer"],
    batches: Iterable[Any],
    *,
    stage: str = "conv",
    on_layer: Callable[[int, "ConvLayer", np.ndarray], None],
) -> None:
    """Run each batch (N, 3, H, W) (tensor or array) through ``model`` with hooks on ``layers``
    only, calling ``on_layer(batch_number, layer, maps)`` with ``maps`` (N, C, h, w) float32 as
    soon as that layer has been computed; the forward pass stops after the last layer. Nothing
    is kept between calls, so peak memory is one layer's output, whatever the number of layers."""
    import torch

    from .capture import Capture, hook_points
    from .util import device_of

    points = hook_points(model, layers, stage)  # type: ignore[arg-type]
    by_point: dict[Any, list[ConvLayer]] = {}
    for layer, p in zip(layers, points):
        by_point.setdefault(p, []).append(layer)
    state = {"batch": 0}

    def handle(point: Any, t: "torch.Tensor") -> None:
        arr = t.float().cpu().numpy()
        for layer in by_point[point]:
            on_layer(state["batch"], layer, arr)

    device = device_of(model)
    with Capture(model, points, on_output=handle) as cap:
        for b, batch in enumerate(batches):
            state["batch"] = b
            x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
            cap.run(x.to(device=device, dtype=torch.float32))


def _check_maps(maps: np.ndarray) -> np.ndarray:
    m = np.asarray(maps)
    if m.ndim != 3 or 0 in m.shape:
        raise ValueError(f"maps must be a non-empty (C, h, w) array, got shape {m.shape}")
    return m
