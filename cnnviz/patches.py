"""Pictures of dataset examples: receptive-field windows cut from preprocessed images, laid out
as a grid with a row per channel and a column per example, paged (paginate_examples) so that no
picture exceeds a maximum side however many channels and examples are asked for.

Pure array work (no torch, no files): uint8 (H, W, 3) images and inclusive input-pixel boxes
(y0, x0, y1, x1) in, new uint8 arrays out; inputs are never modified. The part of a window that
lies outside the image (the network's zero padding) is drawn as a grey hatch, so a patch shows
exactly what its unit sees and where that stops being photo.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import UsageError
from .maps import blend, resize_maps
from .render import (GAP_VALUE, MAX_SIDE, colorize, draw_text, fit_text, label_band_height, label_bands, margin_labels, pad, text_size,
                     tile_grid, wrap_text)

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
    """One cell of the grid: the window's pixels (any size; scaled to the tile), or a function
    making them (called only when the cell is drawn, so a paged grid holds one page's pixels at a
    time), and two label lines."""

    pixels: np.ndarray | Callable[[], np.ndarray]
    value: str
    name: str

    def image(self) -> np.ndarray:
        return self.pixels() if callable(self.pixels) else self.pixels


@dataclass
class Row:
    """One channel: its label (left margin) and up to K patches, best first."""

    label: str
    patches: list[Patch]


@dataclass(frozen=True)
class Line:
    """One line of a page: the patches ``start:stop`` (ranks, 0-based) of row ``row``, labelled ``label``."""

    row: int
    start: int
    stop: int
    label: str


GAP = 6  # px between cells
CONT = "{} (cont.)"  # the label of a row continued from the previous page


@dataclass(frozen=True)
class _Geometry:
    """What render_examples draws for some rows, measured without drawing: the labels above the
    patches and the size of the labelled grid (before the title)."""

    values: list[str]
    names: list[str]
    height: int
    width: int


def _geometry(rows: Sequence[Row], k: int, tile: int, font: int) -> _Geometry:
    n = len(rows) * k
    values, names = [""] * n, [""] * n
    for r, row in enumerate(rows):
        for j, p in enumerate(row.patches[:k]):
            values[r * k + j] = p.value
            names[r * k + j] = fit_text(p.name, width=tile - 2, size=font, keep="end")
    bands = label_band_height(values, width=tile, size=font + 1) + label_band_height(names, width=tile, size=font)
    left = max(text_size(row.label, size=font + 2)[0] for row in rows) + 4  # margin_labels' margin
    return _Geometry(values, names, height=len(rows) * (bands + tile + GAP) - GAP + 4 + 6,
                     width=k * (tile + GAP) - GAP + left + 4 + 6)


def _title_lines(title: str | None, *, width: int, font: int, room: int | None) -> list[tuple[str, int]]:
    """``title`` wrapped to ``width`` px: (text, font size) per line, the first paragraph larger;
    with ``room`` (px), only the lines that fit in it, the last one cut with '…'."""
    if not title:
        return []
    lines = [(w, font + 3 if i == 0 else font + 1) for i, part in enumerate(title.split("\n"))
             for w in wrap_text(part, width=width, size=font + 3 if i == 0 else font + 1)]
    line_h = _line_height(font)
    if room is not None and len(lines) * line_h + 6 > room:
        lines = lines[: max(0, (room - 6) // line_h)]
        if lines:
            text, size = lines[-1]
            lines[-1] = (fit_text(text + " \u2026", width=width, size=size), size)
    return lines


def _line_height(font: int) -> int:
    return text_size("Ag", size=font + 3)[1] + 4


def _title_height(lines: Sequence[tuple[str, int]], font: int) -> int:
    return len(lines) * _line_height(font) + 6 if lines else 0


def examples_size(rows: Sequence[Row], *, k: int, tile: int = 112, title: str | None = None, font: int = 10,
                  max_height: int | None = None) -> tuple[int, int]:
    """(height, width) of ``render_examples(rows, ...)`` with the same arguments, without drawing it."""
    g = _geometry(rows, k, tile, font)
    room = None if max_height is None else max_height - g.height
    return g.height + _title_height(_title_lines(title, width=g.width - 12, font=font, room=room), font), g.width


def render_examples(rows: Sequence[Row], *, k: int, tile: int = 112, title: str | None = None,
                    font: int = 10, max_height: int | None = None) -> np.ndarray:
    """The grid (H, W, 3) uint8: a row per channel, ``k`` columns of patches scaled to ``tile``
    px, each with its value and file name above it; row labels on the left; ``title`` on top
    (with ``max_height``: only the title lines that keep the picture within it).
    Rows with fewer than ``k`` examples leave their last cells empty."""
    if not rows:
        raise ValueError("no rows to draw")
    g = _geometry(rows, k, tile, font)
    tiles = np.full((len(rows) * k, tile, tile, 3), GAP_VALUE, np.uint8)
    for r, row in enumerate(rows):
        for j, p in enumerate(row.patches[:k]):
            tiles[r * k + j] = fit_tile(p.image(), tile)
    bands = np.concatenate([label_bands(g.values, width=tile, size=font + 1),
                            label_bands(g.names, width=tile, size=font, color=(80, 80, 80))], axis=1)
    grid = tile_grid(tiles, cols=k, gap=GAP, bands=bands)
    cell_h = bands.shape[1] + tile + GAP
    labelled = margin_labels(grid, rows=[(r * cell_h + bands.shape[1] + tile // 2, row.label) for r, row in enumerate(rows)],
                             size=font + 2)
    labelled = pad(labelled, top=4, left=4, right=6, bottom=6)
    room = None if max_height is None else max_height - labelled.shape[0]
    lines = _title_lines(title, width=labelled.shape[1] - 12, font=font, room=room)
    if not lines:
        return labelled
    line_h = _line_height(font)
    out = pad(labelled, top=_title_height(lines, font))
    for i, (s, size) in enumerate(lines):
        out = draw_text(out, (6, 4 + i * line_h), s, size=size)
    return out


def page_rows(rows: Sequence[Row], lines: Sequence[Line]) -> list[Row]:
    """The rows render_examples draws for one page of paginate_examples: one per line."""
    return [Row(line.label, rows[line.row].patches[line.start : line.stop]) for line in lines]


def paginate_examples(rows: Sequence[Row], *, k: int, max_side: int, tile: int = 112, title: str | None = None,
                      font: int = 10) -> tuple[int, list[list[Line]]]:
    """Lay the grid of ``rows`` out on pages no side of which exceeds ``max_side`` px: returns
    (columns, pages), each page a list of Lines to draw with
    ``render_examples(page_rows(rows, page), k=columns, ..., max_height=max_side)``.

    A row of more than ``columns`` patches (``k`` x ``tile`` wider than ``max_side``) wraps onto
    further lines; pages break between rows, inside a row only when it is taller than a page
    (its first line on the next page is labelled '12 (cont.)'); the title is repeated on every
    page (cut to what fits only when a single line leaves no room for it). Raises UsageError if
    not even one patch fits, or ``max_side`` is over MAX_SIDE."""
    if not rows:
        raise ValueError("no rows to draw")
    if not 1 <= max_side <= MAX_SIDE:
        raise UsageError(f"--max-side {max_side} out of range; pages of at most {MAX_SIDE} px a side open in any viewer "
                         f"(and in Pillow without a decompression-bomb error)")
    labels = [text for row in rows for text in (row.label, CONT.format(row.label))]
    left = max(text_size(s, size=font + 2)[0] for s in labels) + 4
    cols = min(k, (max_side - left - 10 + GAP) // (tile + GAP))
    too_big = UsageError(f"--tile {tile} px patches do not fit in --max-side {max_side} px pictures; "
                         f"lower --tile or raise --max-side")
    if cols < 1:
        raise too_big
    spans = [(r, start) for r, row in enumerate(rows) for start in range(0, max(1, min(len(row.patches), k)), cols)]
    row_lines = [0] * len(rows)
    for r, _ in spans:
        row_lines[r] += 1

    def lines(i: int, n: int) -> list[Line]:
        out = []
        for j in range(i, i + n):
            r, start = spans[j]
            first = j == i or spans[j - 1][0] != r
            label = "" if not first else (rows[r].label if start == 0 else CONT.format(rows[r].label))
            out.append(Line(r, start, min(start + cols, len(rows[r].patches), k), label))
        return out

    def height(i: int, n: int, with_title: bool = True) -> int:
        return examples_size(page_rows(rows, lines(i, n)), k=cols, tile=tile, title=title if with_title else None,
                             font=font)[0]

    pages: list[list[Line]] = []
    cap = max(1, (max_side - 10 + GAP) // (tile + GAP))  # a line is at least tile + GAP px tall
    i = 0
    while i < len(spans):
        if height(i, 1, with_title=False) > max_side:
            raise too_big
        hi = min(cap, len(spans) - i)
        if height(i, hi) <= max_side:
            n = hi
        else:  # lo fits (a single line: its title is cut to fit), hi does not
            lo = 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if height(i, mid) <= max_side else (lo, mid)
            n = lo
        end = i + n
        if end < len(spans) and spans[end][0] == spans[end - 1][0]:  # a row would be split: move it to the next page
            r = spans[end][0]
            first = next(j for j in range(i, end) if spans[j][0] == r)
            if first > i and row_lines[r] <= n and height(i, first - i) <= max_side:
                n = first - i
        pages.append(lines(i, n))
        i += n
    return cols, pages
