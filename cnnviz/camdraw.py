"""Pictures of explanation maps: a heat map over its image, a comparison sheet (images x methods),
a deletion/insertion plot-free summary and the sanity-check strip. Pure arrays, no file I/O.

The colour path is render's (colorize through a matplotlib colormap LUT, label bands, margins,
legend) and the overlay is maps.blend: the opacity follows the map, so where it is silent the
photo shows through untouched and where it peaks the colour covers it by ``alpha``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .maps import blend, resize_maps
from .render import check_cmap, colorize, label_bands, legend_strip, margin_labels, tile_grid, title_strip, vstack

DEFAULT_CMAP = "inferno"  # perceptually uniform, dark-to-bright: the hot spots read as bright


def overlay(image: np.ndarray, map01: np.ndarray, *, cmap: str = DEFAULT_CMAP, alpha: float = 0.6, gamma: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``map01`` (H, W) in [0, 1] colour-mapped over ``image`` (H, W, 3) uint8,
    opacity ``alpha`` x map value ** ``gamma``: zero shows the photo untouched; 0.5 (square root)
    keeps the middle of a smooth CAM visible (a linear fade leaves only the peak readable), 1.0
    suits speckled input-gradient maps (a root would veil the whole photo in their noise)."""
    m = np.clip(np.asarray(map01, dtype=np.float32), 0.0, 1.0)
    if m.shape != image.shape[:2]:
        raise ValueError(f"map {m.shape} and image {image.shape[:2]} differ in size")
    return blend(colorize(m, cmap)[None], image, alpha=alpha, strength=(m ** np.float32(gamma))[None])[0]


def display_top(map01: np.ndarray, *, percentile: float = 99.0) -> float:
    """The value a picture of a gradient attribution is clipped at: the ``percentile`` of its
    values. Input gradients are heavy-tailed speckle: scaled by their maximum (or even by the value
    holding 98 % of their mass) they show as a few dots; clipped at the 99th percentile, the edges
    and parts the class depends on show. 1.0 for a map that is all zero."""
    top = float(np.percentile(np.asarray(map01, dtype=np.float64), percentile))
    return top if top > 0 else 1.0


def _fit(image: np.ndarray, map01: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and map resampled to ``height`` px (aspect kept): area for the photo, bilinear for the map."""
    h, w = map01.shape
    size = (height, max(1, round(height * w / h)))
    if size == (h, w):
        return image, map01
    img = np.clip(np.rint(resize_maps(image.astype(np.float32).transpose(2, 0, 1), size, mode="area")), 0, 255)
    m = np.clip(resize_maps(map01[None], size, mode="bilinear")[0], 0.0, 1.0)
    return img.astype(np.uint8).transpose(1, 2, 0), m


def _title(lines: Sequence[str], width: int) -> np.ndarray:
    return title_strip("\n".join(s for s in lines if s), width=width, size=12)


def cam_picture(image: np.ndarray, map01: np.ndarray, *, title: Sequence[str] = (), cmap: str = DEFAULT_CMAP,
                alpha: float = 0.6, min_height: int = 400, legend: bool = True, value_max: float | None = None,
                gamma: float = 0.5, outline: np.ndarray | None = None,
                annotate: Callable[[np.ndarray, float], np.ndarray] | None = None) -> np.ndarray:
    """One explanation: the overlay (enlarged to at least ``min_height`` px), the ``title`` lines
    above it and a colour legend (0 .. ``value_max`` of the raw map, or 0 .. 1) below. ``outline``:
    (H, W) bool at the map's size (a predicted segmentation mask), its border drawn over the
    overlay in OUTLINE_COLOR. ``annotate(overlay, scale)``: draws on the enlarged overlay (scale: its
    pixels per map pixel; a detection's box). (H, W, 3) uint8."""
    check_cmap(cmap)
    h = map01.shape[0]
    img, m = _fit(image, map01, max(h, min_height))
    body = overlay(img, m, cmap=cmap, alpha=alpha, gamma=gamma)
    if outline is not None:
        body = draw_outline(body, outline)
    if annotate is not None:
        body = annotate(body, img.shape[0] / h)
    parts = [_title(title, body.shape[1])] if title else []
    parts.append(body)
    if legend:
        hi = 1.0 if value_max is None else float(value_max)
        parts.append(legend_strip(0.0, hi, width=body.shape[1], cmap=cmap, caption="map value (opacity follows it)",
                                  max_width=body.shape[1]))
    return vstack(parts, gap=3)


OUTLINE_COLOR = (0, 255, 255)  # cyan: apart from every colour of the default heat colormaps


def draw_outline(picture: np.ndarray, mask: np.ndarray, *, width: int = 2, color: Sequence[int] = OUTLINE_COLOR) -> np.ndarray:
    """A copy of ``picture`` (H, W, 3) uint8 with the border of ``mask`` (h, w) bool (resampled to
    H x W, nearest) drawn ``width`` px wide, inside the mask. Pure."""
    from .segment import outline, resize_mask

    m = resize_mask(np.asarray(mask, dtype=bool), picture.shape[:2])
    out = picture.copy()
    out[outline(m, width=width)] = np.asarray(color, dtype=np.uint8)
    return out


@dataclass
class SheetCell:
    """One tile of a comparison sheet: the image's display pixels and the [0, 1] map over them
    (``alone``: the map's colours only, at full opacity: fine speckle disappears in a blend)."""

    image: np.ndarray
    map01: np.ndarray
    gamma: float = 0.5
    alone: bool = False  # the map's colours alone, without the photo (speckled input attributions)


SHEET_MAX_WIDTH = 1280  # px of tiles in one band of a sheet: more methods wrap into further bands


def comparison_sheet(cells: Sequence[Sequence[SheetCell]], *, row_labels: Sequence[str], col_labels: Sequence[str],
                     title: Sequence[str] = (), cmap: str = DEFAULT_CMAP, alpha: float = 0.6, tile: int = 160,
                     max_width: int = SHEET_MAX_WIDTH, caption: str = "map, each scaled to its own max") -> np.ndarray:
    """Rows x columns of overlays (rows: images/targets, columns: methods), each ``tile`` px high,
    labelled in the margins, with ``title`` lines above and a colour legend (``caption``) below.
    Columns that would make the tiles wider than ``max_width`` px wrap: the methods are split into
    bands of (nearly) equal column counts stacked top to bottom, each band with every row and its
    own column labels (14 methods of one image: 3 bands of 5, 5 and 4). (H, W, 3) uint8."""
    check_cmap(cmap)
    if not cells or not cells[0]:
        raise ValueError("a sheet needs at least one cell")
    ncol = len(cells[0])
    tiles = []
    for row in cells:
        if len(row) != ncol:
            raise ValueError("every sheet row needs the same number of cells")
        for c in row:
            img, m = _fit(c.image, c.map01, tile)
            tiles.append(colorize(m, cmap) if c.alone else overlay(img, m, cmap=cmap, alpha=alpha, gamma=c.gamma))
    tw = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, tw - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    gap = 4
    fits = max(1, (max_width + gap) // (tw + gap))
    n_bands = -(-ncol // fits)
    per = -(-ncol // n_bands)  # balanced: 14 columns at 6 a band -> 5, 5, 4
    bands = []
    for start in range(0, ncol, per):
        cols = range(start, min(start + per, ncol))
        grid = tile_grid(np.stack([tiles[r * ncol + c] for r in range(len(cells)) for c in cols]), cols=len(cols), gap=gap)
        rows_at = [(r * (tile + gap) + tile // 2, s) for r, s in enumerate(row_labels)]
        cols_at = [(i * (tw + gap) + tw // 2, col_labels[c]) for i, c in enumerate(cols)]
        bands.append(margin_labels(grid, rows=rows_at, cols=cols_at, size=12))
    body = vstack(bands, gap=12)
    parts = [_title(title, body.shape[1])] if title else []
    parts += [body, legend_strip(0.0, 1.0, width=body.shape[1], cmap=cmap, caption=caption,
                                 max_width=min(body.shape[1], 480))]
    return vstack(parts, gap=4)


def sanity_strip(image: np.ndarray, maps01: Sequence[np.ndarray], labels: Sequence[str], scores: Sequence[str], *,
                 title: Sequence[str] = (), cmap: str = DEFAULT_CMAP, alpha: float = 0.6, tile: int = 128,
                 gamma: float = 0.5) -> np.ndarray:
    """The original map then the map after each cascading-randomisation depth, left to right, each
    labelled with what was randomised (``labels``) and its similarity to the original (``scores``)."""
    if not (len(maps01) == len(labels) == len(scores)):
        raise ValueError("one label and one score line per map")
    tiles = []
    for m01 in maps01:
        img, m = _fit(image, m01, tile)
        tiles.append(overlay(img, m, cmap=cmap, alpha=alpha, gamma=gamma))
    tw = tiles[0].shape[1]
    bands = np.concatenate([label_bands(labels, width=tw, size=10), label_bands(scores, width=tw, size=10)], axis=1)
    grid = tile_grid(np.stack(tiles), cols=len(tiles), gap=3, bands=bands)
    parts = [_title(title, grid.shape[1])] if title else []
    return vstack([*parts, grid], gap=3)
