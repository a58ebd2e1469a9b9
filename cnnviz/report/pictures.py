"""The report's pictures, made by the library's own renderers (nothing is drawn here) plus the
geometry the pages need to point into them.

* per image and layer, one *sprite*: ``maps.render_grid`` of every channel, bare, one pixel per
  map value (the page upscales it with ``image-rendering: pixelated``), so a tile is a known
  rectangle the pages crop for the top-K strip, the channel page and the clickable full grid;
* per layer, the filter pages of ``filters.render_plan`` (legend and labels off, the page draws
  them as text) and, for tile-per-filter modes, each filter's rectangle in them;
* the per-image sheet (``maps.render_sheet``), the receptive-field picture (``rfdraw``), the
  profile plot (``rfdraw.profile_figure``) and the maximize images (``optimize.maximize``).

Pure array work: arrays in, (pixels, palette) out; files are written by the caller.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import filters as _filters
from ..maps import SheetRow, channel_means, render_grid, render_sheet, scale_maps
from ..render import to_uint8
from ..rfdraw import ProfileSeries, box_colors, draw_boxes, legend_rows, profile_figure

SPRITE_GAP = 1  # px between tiles of a sprite: tiles stay apart when the page upscales them
FILTER_BORDER = 4  # filters.render_plan's white margin around a page
FILTER_TILE_PX = 16  # kernels upscaled to >= 16 px in the filter pictures (pages scale them further)


@dataclass(frozen=True)
class Sprite:
    """Where channel ``c``'s tile is in a sprite: column c % cols, row c // cols, each cell
    (tw + gap) x (th + gap) px; the picture is ``width`` x ``height``."""

    cols: int
    rows: int
    tw: int
    th: int
    gap: int
    width: int
    height: int

    def box(self, c: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of tile ``c`` in sprite pixels."""
        return ((c % self.cols) * (self.tw + self.gap), (c // self.cols) * (self.th + self.gap), self.tw, self.th)

    def as_dict(self) -> dict[str, int]:
        return {"cols": self.cols, "rows": self.rows, "tw": self.tw, "th": self.th, "gap": self.gap,
                "width": self.width, "height": self.height}


def sprite_cols(n: int, h: int, w: int) -> int:
    """Columns that make a sprite of ``n`` (h, w) tiles roughly square in pixels."""
    return max(1, min(n, math.ceil(math.sqrt(n * (h + SPRITE_GAP) / (w + SPRITE_GAP)))))


def map_sprite(maps: np.ndarray, *, cmap: str) -> tuple[np.ndarray, bytes, Sprite]:
    """Every channel of one image's layer output ``maps`` (C, h, w) as a bare palette grid (each
    map on its own min..max, like ``cnnviz maps``), one pixel per value. Returns (indices (H, W)
    uint8, palette bytes, geometry)."""
    c, h, w = maps.shape
    cols = sprite_cols(c, h, w)
    grid = render_grid(maps, cmap=cmap, tile=1, cols=cols, gap=SPRITE_GAP, labels=False, legend=False)
    pixels, palette = grid.pixels()
    rows = math.ceil(c / cols)
    geo = Sprite(cols=cols, rows=rows, tw=w, th=h, gap=SPRITE_GAP, width=int(pixels.shape[1]), height=int(pixels.shape[0]))
    if (geo.height, geo.width) != (rows * (h + SPRITE_GAP) - SPRITE_GAP, cols * (w + SPRITE_GAP) - SPRITE_GAP):
        raise RuntimeError(f"unexpected grid geometry {pixels.shape} for {c} maps of {h}x{w} in {cols} columns")
    return pixels, palette or b"", geo


def map_stats(maps: np.ndarray) -> dict[str, Any]:
    """Per channel of ``maps`` (C, h, w): mean and max activation and the unit (y, x) where it peaks."""
    c, h, w = maps.shape
    flat = maps.reshape(c, -1)
    arg = flat.argmax(axis=1)
    return {
        "mean": channel_means(maps).astype(np.float32),
        "max": flat.max(axis=1).astype(np.float32),
        "peak": np.stack([arg // w, arg % w], axis=1).astype(np.int32),
    }


def sheet_row(maps: np.ndarray, means: np.ndarray, *, label: str, k: int) -> SheetRow:
    """The sheet row of one layer: its ``k`` channels with the highest mean activation."""
    order = sorted(range(len(means)), key=lambda i: (-float(means[i]), i))[:k]
    x01, _ = scale_maps(maps, order)
    return SheetRow(label=label, maps01=x01, channels=order)


def sheet(rows: Sequence[SheetRow], *, cmap: str, title: str) -> np.ndarray:
    """``maps.render_sheet``: one row per layer, (H, W, 3) uint8."""
    return render_sheet(rows, cmap=cmap, tile=64, title=title)


@dataclass(frozen=True)
class FilterPicture:
    """One page of a layer's filter picture: (pixels, palette or None) and its size."""

    pixels: np.ndarray
    palette: bytes | None
    width: int
    height: int
    filters: list[int]


def filter_pictures(weight: np.ndarray, *, groups: int) -> tuple[list[FilterPicture], str, list[list[int]] | None]:
    """The filters of one layer exactly as ``cnnviz filters`` draws them (default mode and norm),
    without labels and legend. Returns (pages, mode, rects): ``rects[f]`` = [page, x, y, w, h] of
    filter ``f`` (a tile, or a heatmap row for 1x1 kernels), or None where the layout has no
    per-filter rectangle (every mode cnnviz picks by default has one)."""
    plan = _filters.plan_filters(weight.shape, groups=groups, labels=False, legend=False, tile_px=FILTER_TILE_PX)
    pages: list[FilterPicture] = []
    rects: list[list[int]] | None = [[0, 0, 0, 0, 0] for _ in range(weight.shape[0])]
    _o, _i, kh, kw = weight.shape
    s, gap = plan.scale, plan.gap
    for p, page in enumerate(_filters.render_plan(weight, plan)):
        pix, pal = page.pixels() if hasattr(page, "pixels") else _page_pixels(page)
        h, w = int(pix.shape[0]), int(pix.shape[1])
        pages.append(FilterPicture(pix, pal, w, h, list(page.filters)))
        if rects is None:
            continue
        inner_w = w - 2 * FILTER_BORDER
        if plan.mode == "heatmap":
            for r, f in enumerate(page.filters):
                rects[f] = [p, FILTER_BORDER, FILTER_BORDER + r * s, inner_w, s]
        elif plan.mode in ("rgb", "mean"):
            cols = min(plan.cols, len(page.filters))
            grid_w = cols * (kw * s + gap) - gap
            off = FILTER_BORDER + (inner_w - grid_w) // 2  # a gap-coloured frame when the gaps are not white
            if inner_w - grid_w not in (0, 2 * gap):
                rects = None
                continue
            for k, f in enumerate(page.filters):
                rects[f] = [p, off + (k % cols) * (kw * s + gap), off + (k // cols) * (kh * s + gap), kw * s, kh * s]
        else:
            rects = None
    return pages, plan.mode, rects


def _page_pixels(page: Any) -> tuple[np.ndarray, bytes | None]:
    if getattr(page, "rgb", None) is not None:
        return page.rgb, None
    return page.index, page.palette.tobytes()


def rf_picture(display: np.ndarray, box: tuple[int, int, int, int], center: tuple[float, float], *,
               title: str, legend: str) -> np.ndarray:
    """The receptive field of one unit on the preprocessed image, as ``cnnviz rf`` draws it."""
    colors = box_colors(1)
    canvas, _m = draw_boxes(display, [box], colors, centers=[center])
    return legend_rows(canvas, [legend], colors, title=title)


def profile(model: str, layers: Sequence[Any], size: tuple[int, int]) -> np.ndarray | None:
    """``rfdraw.profile_figure`` for one model's catalog (None when no layer has a field)."""

    def geo(v: Any) -> float | None:
        return None if v is None else (math.sqrt(v[0] * v[1]) if isinstance(v, list) else float(v))

    rf = [geo(r.receptive_field) for r in layers]
    if all(v is None for v in rf):
        return None
    series = ProfileSeries(model, [r.index for r in layers], [r.name for r in layers], [r.alias for r in layers],
                           rf, [geo(r.jump) for r in layers])
    return profile_figure([series], size=size)


def maximize_tiles(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float images in [0, 1] -> uint8, as ``cnnviz maximize --separate`` writes them."""
    return to_uint8(images)

