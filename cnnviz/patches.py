"""Pictures of dataset examples: receptive-field windows cut from preprocessed images, laid out
as a grid with a row per channel and a column per example.

Pure array work (no torch, no files): uint8 (H, W, 3) images and inclusive input-pixel boxes
(y0, x0, y1, x1) in, new uint8 arrays out; inputs are never modified. The part of a window that
lies outside the image (the network's zero padding) is drawn as a grey hatch, so a patch shows
exactly what its unit sees and where that stops being photo.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .maps import blend, resize_maps
from .render import GAP_VALUE, colorize, draw_text, fit_text, label_bands, margin_labels, pad, text_size, tile_grid, wrap_text

Box = tuple[int, int, int, int]
PAD_COLORS = ((208, 208, 208), (176, 176, 176))  # the hatch of the zero-padding area
HATCH = 4  # px per hatch stripe, in input pixels


def crop_window(image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The window ``box`` (inclusive (y0, x0, y1, x1), may extend past the image) of ``image``
    (H, W, 3) uint8 -> (patch (h, w, 3) uint8, inside (h, w) bool). Pixels outside the image are
    a diagonal hatch in PAD_COLORS, anchored to input coordinates (stripes line up across
    patches of neighbouring units)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
    y0, x0, y1, x1 = (int(v) for v in box)
    if y1 < y0 or x1 < x0:
        raise ValueError(f"empty box {box}")
    H, W = img.shape[:2]
    ys, xs = np.arange(y0, y1 + 1), np.arange(x0, x1 + 1)
    stripe = ((ys[:, None] + xs[None, :]) // HATCH) % 2
    out = np.asarray(PAD_COLORS, np.uint8)[stripe]
    inside = ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :]
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, H - 1), max(x0, 0), min(x1, W - 1)
    if iy0 <= iy1 and ix0 <= ix1:
        out[iy0 - y0 : iy1 - y0 + 1, ix0 - x0 : ix1 - x0 + 1] = img[iy0 : iy1 + 1, ix0 : ix1 + 1]
    return out, inside


def window_values(values: np.ndarray, box: Box) -> np.ndarray:
    """The window ``box`` of a (H, W) float map, zeros outside it (same geometry as crop_window)."""
    v = np.asarray(values, np.float32)
    y0, x0, y1, x1 = (int(b) for b in box)
    H, W = v.shape
    out = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.float32)
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, H - 1), max(x0, 0), min(x1, W - 1)
    if iy0 <= iy1 and ix0 <= ix1:
        out[iy0 - y0 : iy1 - y0 + 1, ix0 - x0 : ix1 - x0 + 1] = v[iy0 : iy1 + 1, ix0 : ix1 + 1]
    return out


def map_on_input(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One channel's map (h, w) resized (bilinear, align_corners=False) to the input's (H, W)."""
    return resize_maps(np.asarray(m, np.float32)[None], size, mode="bilinear")[0]


def overlay_patch(patch: np.ndarray, inside: np.ndarray, values01: np.ndarray, *, cmap: str = "inferno",
                  alpha: float = 0.6) -> np.ndarray:
    """``patch`` (h, w, 3) with ``values01`` (h, w) in [0, 1] blended over it in ``cmap``; the
    opacity grows with the value (silent regions show the photo); the padding stays hatched."""
    v = np.clip(np.asarray(values01, np.float32), 0.0, 1.0)
    colors = colorize(v, cmap)
    out = blend(colors[None], patch, alpha=alpha, strength=v[None])[0]
    return np.where(inside[..., None], out, patch)


def fit_tile(patch: np.ndarray, tile: int) -> np.ndarray:
    """``patch`` (h, w, 3) scaled (bilinear) so its longer side is ``tile`` px, centred on a
    tile x tile canvas of the gap colour."""
    h, w = patch.shape[:2]
    s = tile / max(h, w)
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    img = Image.fromarray(np.ascontiguousarray(patch, np.uint8))
    if (th, tw) != (h, w):
        img = img.resize((tw, th), Image.Resampling.BILINEAR if s > 1 else Image.Resampling.LANCZOS)
    out = np.full((tile, tile, 3), GAP_VALUE, np.uint8)
    oy, ox = (tile - th) // 2, (tile - tw) // 2
    out[oy : oy + th, ox : ox + tw] = np.asarray(img)
    return out


@dataclass
class Patch:
    """One cell of the grid: the window's pixels (any size; scaled to the tile) and two label lines."""

    pixels: np.ndarray
    value: str
    name: str


@dataclass
class Row:
    """One channel: its label (left margin) and up to K patches, best first."""

    label: str
    patches: list[Patch]


def render_examples(rows: Sequence[Row], *, k: int, tile: int = 112, title: str | None = None,
                    font: int = 10) -> np.ndarray:
    """The grid (H, W, 3) uint8: a row per channel, ``k`` columns of patches scaled to ``tile``
    px, each with its value and file name above it; row labels on the left; ``title`` on top.
    Rows with fewer than ``k`` examples leave their last cells empty."""
    if not rows:
        raise ValueError("no rows to draw")
    n = len(rows) * k
    tiles = np.full((n, tile, tile, 3), GAP_VALUE, np.uint8)
    values, names = [""] * n, [""] * n
    for r, row in enumerate(rows):
        for j, p in enumerate(row.patches[:k]):
            tiles[r * k + j] = fit_tile(p.pixels, tile)
            values[r * k + j] = p.value
            names[r * k + j] = fit_text(p.name, width=tile - 2, size=font, keep="end")
    bands = np.concatenate([label_bands(values, width=tile, size=font + 1),
                            label_bands(names, width=tile, size=font, color=(80, 80, 80))], axis=1)
    gap = 6
    grid = tile_grid(tiles, cols=k, gap=gap, bands=bands)
    cell_h = bands.shape[1] + tile + gap
    labelled = margin_labels(grid, rows=[(r * cell_h + bands.shape[1] + tile // 2, row.label) for r, row in enumerate(rows)],
                             size=font + 2)
    labelled = pad(labelled, top=4, left=4, right=6, bottom=6)
    if not title:
        return labelled
    lines = [w for i, part in enumerate(title.split("\n"))
             for w in wrap_text(part, width=labelled.shape[1] - 12, size=font + 3 if i == 0 else font + 1)]
    first = len(wrap_text(title.split("\n")[0], width=labelled.shape[1] - 12, size=font + 3))
    line_h = text_size("Ag", size=font + 3)[1] + 4
    out = pad(labelled, top=len(lines) * line_h + 6)
    for i, s in enumerate(lines):
        out = draw_text(out, (6, 4 + i * line_h), s, size=font + 3 if i < first else font + 1)
    return out
