"""Learned conv filters as pictures: a weight array in, uint8 images out. Pure NumPy: no torch, no I/O.

A weight is a Conv2d's ``weight`` as an array (out, in, kh, kw) of floats (for a grouped conv
``in`` is the channels per group). Four ways to draw it:

* ``rgb``      (3 input channels, the default there): each filter one colour tile, weight channel
               0/1/2 -> R/G/B (torchvision models take RGB input), each channel's value -> intensity;
* ``mean``     (the default for more inputs): each filter averaged over its input channels, one
               colormapped tile per filter;
* ``channels`` rows = filters, columns = input channels, one colormapped tile per (filter, channel);
* ``heatmap``  1x1 kernels (single pixels as tiles) always become the (out, in) weight matrix,
               one pixel per weight (upscaled), rows = filters, columns = input channels.

Values are signed. ``norm="layer"`` (default): one symmetric scale for the whole layer, -m..+m with
m = max|v| over every filter of the layer (not just the selected ones), so zero is the colormap's
neutral middle (mid-grey in rgb) and pictures of the same layer compare. ``"filter"``: each filter
symmetric on its own ±max|v|. ``"minmax"``: the layer's min -> 0, max -> 1 (the tutorials' way).

Large layers never make huge PNGs: a page holds at most ``max_side`` px a side and further
filters go to further pages; ``channels`` mode caps filters/channels (``max_filters`` /
``max_channels``, 32 each by default) and reports it in ``notes``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError
from .render import (
    GAP_VALUE,
    GREYS,
    MAX_SIDE,
    LEVELS,
    MID,
    Picture,
    PixelSpace,
    ShowsPicture,
    check_cmap,
    grey_index,
    label_bands,
    legend_strip,
    levels,
    margin_labels,
    pad,
    palette,
    scale_fixed,
    scale_symmetric,
    tile_factor,
    tile_grid,
    to_uint8,
    upscale,
    value_range as data_range,
    vstack,
)
from .select import index_ranges, select_indices

MODES = ("auto", "rgb", "mean", "channels")
NORMS = ("layer", "filter", "minmax")
DEFAULT_CMAP = "RdBu_r"
DEFAULT_MAX_SIDE = 8192
CHANNELS_CAP = 32  # default --max-filters / --max-inputs in channels mode
HEATMAP_NOTE = "1x1 kernels: the [out, in] weight matrix drawn as a heatmap (rows = filters, columns = input channels)"
_RESERVE = 128  # px kept free of tiles on each side of a page for legend, labels and margins
_HEATMAP_TARGET = 512  # small 1x1 matrices are upscaled until their longer side reaches this
_BORDER = 4  # white margin around the finished picture


@dataclass(frozen=True)
class FilterPlan:
    """What will be drawn for one layer, decided from the weight shape alone (cheap: no pixels)."""

    shape: tuple[int, int, int, int]
    mode: str  # rgb | mean | channels | heatmap
    norm: str
    cmap: str | None  # None in rgb mode
    filters: list[int]  # filter indices drawn, in order
    channels: list[int] | None  # input channels drawn (channels / heatmap modes)
    pages: list[list[int]]  # filter indices per page
    cols: int  # grid columns (tiles per row; channel count in channels mode; matrix width in heatmap)
    scale: int  # nearest-neighbour upscale factor of each kernel pixel / weight
    gap: int
    labels: bool
    legend: bool
    max_side: int
    notes: list[str] = field(default_factory=list)  # human messages (caps, mode changes)
    # A matrix (channels / heatmap modes) wider than a page is drawn in ``bands`` stacked column
    # bands of at most ``band_width`` channels, so each page shows its filters with every channel.
    bands: int = 1
    band_width: int = 0


def weight_stats(weight: np.ndarray) -> dict[str, float]:
    """min, max, mean, std (float64) of the finite entries of ``weight``."""
    w = np.asarray(weight)
    if not np.isfinite(w).all():
        w = w[np.isfinite(w)]
    if not w.size:
        return {"min": float("nan"), "max": float("nan"), "mean": float("nan"), "std": float("nan")}
    x = w.ravel().astype(np.float32, copy=False)
    mean = float(x.mean(dtype=np.float64))
    d = x - np.float32(mean)
    return {"min": float(x.min()), "max": float(x.max()), "mean": mean, "std": math.sqrt(float(np.dot(d, d)) / x.size)}


def _check_weight(weight: np.ndarray) -> np.ndarray:
    w = np.asarray(weight)
    if w.ndim != 4 or min(w.shape) < 1:
        raise UsageError(f"filters need a conv weight of shape (out, in, kh, kw), got shape {tuple(w.shape)}")
    return w


def resolve_mode(shape: Sequence[int], mode: str = "auto", *, groups: int = 1) -> tuple[str, list[str]]:
    """The mode actually drawn for a weight ``shape`` (out, in, kh, kw), and notes on any change.

    1x1 kernels always become 'heatmap'; 'auto' is 'rgb' for 3 input channels (ungrouped), else
    'mean'. Raises UsageError for 'rgb' without 3 input channels or an unknown mode."""
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    _o, i, kh, kw = (int(s) for s in shape)
    if kh == 1 and kw == 1:
        notes = [] if mode == "auto" else [f"1x1 kernels: drawing the weight matrix as a heatmap instead of mode {mode!r}"]
        return "heatmap", notes
    if mode == "auto":
        return ("rgb" if i == 3 and groups == 1 else "mean"), []
    if mode == "rgb" and i != 3:
        raise UsageError(f"--mode rgb needs filters with 3 input channels; these have {i} (use --mode mean or channels)")
    return mode, []


def _as_indices(sel: Sequence[int] | str | Sequence[str] | None, count: int, what: str, hint: str) -> list[int] | None:
    """Selector(s) or ints -> indices; None or an empty list = no selection (everything)."""
    if sel is None or (not isinstance(sel, str) and len(sel) == 0):
        return None
    return select_indices(sel, count, what=what, hint=hint)


def _cap(items: list[int], cap: int | None, what: str, option: str, pick: str, notes: list[str]) -> list[int]:
    if cap and len(items) > cap:
        notes.append(f"showing the first {cap} of {len(items)} {what} (raise {option}, 0 = no cap, or pick with {pick})")
        return items[:cap]
    return items


def plan_filters(
    shape: Sequence[int],
    *,
    mode: str = "auto",
    norm: str = "layer",
    cmap: str = DEFAULT_CMAP,
    groups: int = 1,
    filters: Sequence[int] | str | Sequence[str] | None = None,
    channels: Sequence[int] | str | Sequence[str] | None = None,
    max_filters: int | None = None,
    max_channels: int | None = None,
    tile_px: int = 48,
    gap: int = 2,
    labels: bool = False,
    legend: bool = True,
    max_side: int = DEFAULT_MAX_SIDE,
    hint: str = "",
) -> FilterPlan:
    """Decide mode, selection, caps, grid and pages for a weight of ``shape`` (out, in, kh, kw).

    ``filters`` / ``channels``: index lists or selector strings (see cnnviz.select); channels only
    in channels / heatmap modes. ``max_filters`` / ``max_channels``: None = the mode's default
    (32 each in channels mode, no cap elsewhere), 0 = no cap. ``tile_px``: the longer side of a
    kernel tile is upscaled (nearest) to at least this. Pages never exceed ``max_side`` px a side.
    ``hint`` ends selector error messages. Raises UsageError / SelectionError."""
    if len(shape) != 4 or min(int(s) for s in shape) < 1:
        raise UsageError(f"filters need a conv weight of shape (out, in, kh, kw), got shape {tuple(shape)}")
    o, i, kh, kw = (int(s) for s in shape)
    if norm not in NORMS:
        raise UsageError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if tile_px < 1 or gap < 0 or not 256 <= max_side <= MAX_SIDE:
        raise UsageError(f"tile size must be >= 1 px, gap >= 0 px, max side 256..{MAX_SIDE} px (larger pictures do not "
                         f"open in image viewers)")
    drawn, notes = resolve_mode(shape, mode, groups=groups)
    the_cmap = None if drawn == "rgb" else check_cmap(cmap)
    fsel = _as_indices(filters, o, "filter", hint) or list(range(o))
    csel = _as_indices(channels, i, "channel", hint)
    if csel is not None and drawn in ("rgb", "mean"):
        raise UsageError(f"--inputs applies to --mode channels and 1x1 heatmaps, not to mode {drawn!r}")
    csel = csel or list(range(i))
    default_cap = CHANNELS_CAP if drawn == "channels" else None
    fsel = _cap(fsel, default_cap if max_filters is None else max_filters, "filters", "--max-filters", "--channels", notes)
    if drawn in ("channels", "heatmap"):
        csel = _cap(csel, default_cap if max_channels is None else max_channels, "channels", "--max-inputs", "--inputs", notes)
    room = max_side - _RESERVE
    bands, band_width = 1, len(csel)
    if drawn == "heatmap":
        scale = max(1, min(_HEATMAP_TARGET // max(len(fsel), len(csel)), tile_px))
        bands, band_width, per_page = _bands(len(csel), room // scale, room, scale, room // scale, labels)
        csel = _cut_wide(csel, band_width * bands, max_side, notes)
        cols = min(len(csel), band_width)
    else:
        scale = tile_factor(max(kh, kw), max(kh, kw), tile_px)
        scale = max(1, min(scale, (room - 16 * labels) // max(kh, kw)))  # one tile always fits a page
        band = 16 if labels else 0
        pitch_w, pitch_h = kw * scale + gap, kh * scale + gap + band
        fit_cols = max(1, (room + gap) // pitch_w)
        fit_rows = max(1, (room + gap) // pitch_h)
        if drawn == "channels":
            bands, band_width, per_page = _bands(len(csel), fit_cols, room + gap, pitch_h, fit_rows, labels)
            csel = _cut_wide(csel, band_width * bands, max_side, notes)
            cols = min(len(csel), band_width)
        else:
            n = len(fsel)  # near-square in pixels: 64 square tiles -> 8x8, 1x7 kernels -> fewer columns
            aspect = (kh * scale + gap) / pitch_w  # label bands left out: 64 labelled tiles stay 8x8
            cols = max(1, min(math.ceil(math.sqrt(n * aspect) - 1e-9), fit_cols, n))
            rows_needed = math.ceil(n / cols)
            per_page = cols * min(rows_needed, fit_rows)
            # a paged layer: square-ish pages rather than full-width strips
            if rows_needed > fit_rows:
                cols = min(fit_cols, fit_rows)
                per_page = cols * fit_rows
    pages = [fsel[k : k + per_page] for k in range(0, len(fsel), per_page)]
    if bands > 1:
        notes.append(f"{len(csel)} channels exceed {max_side} px in one row: drawn in {bands} stacked bands of up to "
                     f"{band_width} channels" + (f", {len(pages)} pages of up to {per_page} filters" if len(pages) > 1 else ""))
    elif len(pages) > 1:
        notes.append(f"{len(fsel)} filters do not fit {max_side} px: writing {len(pages)} pages of up to {per_page}")
    return FilterPlan(
        shape=(o, i, kh, kw), mode=drawn, norm=norm, cmap=the_cmap, filters=fsel,
        channels=csel if drawn in ("channels", "heatmap") else None, pages=pages, cols=cols,
        scale=scale, gap=gap, labels=labels, legend=legend, max_side=max_side, notes=notes,
        bands=bands, band_width=band_width,
    )


_BAND_GAP = 6  # px between stacked column bands
_BAND_LABELS = 16  # px of column labels above each band


def _bands(n_cols: int, fit_cols: int, room: int, row_px: int, fit_rows: int, labels: bool) -> tuple[int, int, int]:
    """How a matrix of ``n_cols`` columns fits pages whose free side is ``room`` px, ``fit_cols``
    columns wide and ``fit_rows`` rows (of ``row_px`` px) tall: (bands, band width, rows per page).
    Columns beyond a page's width wrap into stacked bands, each repeating the page's rows. Only
    where not even one row fits in that many bands (a page of a few hundred px) is the matrix one
    band of ``fit_cols`` columns (the caller cuts the rest, with a note)."""
    fit_cols = max(1, fit_cols)
    if n_cols <= fit_cols:
        return 1, n_cols, max(1, fit_rows)
    bands = math.ceil(n_cols / fit_cols)
    rows = (room - bands * (_BAND_GAP + _BAND_LABELS * labels)) // (bands * row_px)
    if rows >= 1:
        return bands, math.ceil(n_cols / bands), rows
    return 1, fit_cols, max(1, fit_rows)


def _cut_wide(csel: list[int], fits: int, max_side: int, notes: list[str]) -> list[int]:
    if len(csel) > fits:
        notes.append(f"showing the first {fits} of {len(csel)} channels: even in stacked bands a wider matrix "
                     f"would exceed {max_side} px (raise --max-side)")
        return csel[:fits]
    return csel


def displayed_values(weight: np.ndarray, mode: str) -> np.ndarray:
    """The layer-wide quantity a mode draws, for every filter, float32: (out, kh, kw) means over the
    input channels in 'mean' mode, the (out, in) matrix (kernel mean) in 'heatmap' mode, the
    weight itself otherwise. Non-finite entries count as 0. Never a view that could alias ``weight``
    for writing: the result is only read."""
    w = np.asarray(weight, dtype=np.float32)
    if not np.isfinite(w).all():
        w = np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "mean":
        return w.mean(axis=1)
    if mode == "heatmap":
        return w[:, :, 0, 0] if w.shape[2:] == (1, 1) else w.mean(axis=(2, 3))
    return w


def value_range(layer_values: np.ndarray, norm: str) -> tuple[float, float]:
    """(lo, hi) mapped to the ends of the colour scale for the whole layer: ±max|v| for 'layer'
    (and, as the largest per-filter scale, for 'filter'), (min, max) for 'minmax'. Never lo == hi."""
    lo, hi = data_range(layer_values, symmetric=norm != "minmax")
    if hi > lo:
        return (lo, hi)
    return (lo - 1.0, hi + 1.0) if norm == "minmax" else (-1.0, 1.0)


def scale_values(values: np.ndarray, *, norm: str, lo: float, hi: float) -> np.ndarray:
    """values (N, ...) -> float32 [0, 1]. 'layer' / 'minmax': lo -> 0, hi -> 1 (lo = -hi for 'layer',
    so 0 -> 0.5); 'filter': each values[n] symmetric on its own ±max|values[n]| (0 -> 0.5)."""
    if norm == "filter":
        return scale_symmetric(values, per="map")
    return scale_fixed(values, lo, hi)


# ------------------------------------------------------------------ tiles


def rgb_tiles(weight: np.ndarray, *, norm: str = "layer", filters: Sequence[int] | None = None) -> np.ndarray:
    """(out, 3, kh, kw) weight -> (N, kh, kw, 3) uint8 colour tiles, channel 0 -> R, 1 -> G, 2 -> B,
    each channel's scaled value -> intensity (zero -> 128 under the symmetric scales)."""
    w = displayed_values(_check_weight(weight), "rgb")
    if w.shape[1] != 3:
        raise UsageError(f"rgb tiles need 3 input channels, got {w.shape[1]}")
    lo, hi = value_range(w, norm)
    return _rgb(w, norm, lo, hi, filters)


def _rgb(w: np.ndarray, norm: str, lo: float, hi: float, filters: Sequence[int] | None) -> np.ndarray:
    sel = w if filters is None else w[list(filters)]
    return to_uint8(scale_values(sel, norm=norm, lo=lo, hi=hi)).transpose(0, 2, 3, 1).copy()


def _indices(values: np.ndarray, norm: str, lo: float, hi: float, filters: Sequence[int] | None,
             channels: Sequence[int] | None = None) -> np.ndarray:
    """Palette indices of the selected filters (rows) and channels (axis 1) of layer-wide ``values``."""
    sel = values if filters is None else values[list(filters)]
    x = scale_values(sel, norm=norm, lo=lo, hi=hi)  # 'filter' scales over all of a filter's channels
    return levels(x if channels is None else x[:, list(channels)])


def _colormapped(weight: np.ndarray, mode: str, norm: str, cmap: str, filters: Sequence[int] | None,
                 channels: Sequence[int] | None = None) -> np.ndarray:
    """The displayed values of ``mode``, scaled over the whole layer (``norm``) and colormapped
    exactly as the PNG is: the shared body of mean_tiles, channel_tiles and heatmap."""
    v = displayed_values(_check_weight(weight), mode)
    return palette(cmap)[_indices(v, norm, *value_range(v, norm), filters, channels)]


def mean_tiles(weight: np.ndarray, *, norm: str = "layer", cmap: str = DEFAULT_CMAP, filters: Sequence[int] | None = None) -> np.ndarray:
    """(out, in, kh, kw) weight -> (N, kh, kw, 3) uint8: each filter's mean over its input channels,
    scaled over the whole layer's means (``norm``) and colormapped (exactly the PNG's colours)."""
    return _colormapped(weight, "mean", norm, cmap, filters)


def channel_tiles(weight: np.ndarray, *, norm: str = "layer", cmap: str = DEFAULT_CMAP,
                  filters: Sequence[int] | None = None, channels: Sequence[int] | None = None) -> np.ndarray:
    """(out, in, kh, kw) weight -> (F, C, kh, kw, 3) uint8, one colormapped tile per (filter,
    channel); 'filter' norm scales each filter over all its input channels (not only those drawn)."""
    return _colormapped(weight, "channels", norm, cmap, filters, channels)


def heatmap(weight: np.ndarray, *, norm: str = "layer", cmap: str = DEFAULT_CMAP,
            filters: Sequence[int] | None = None, channels: Sequence[int] | None = None) -> np.ndarray:
    """(out, in, kh, kw) weight -> (F, C, 3) uint8: the (out, in) matrix of a 1x1 conv (for larger
    kernels, the kernel mean), one pixel per weight, rows = filters, columns = input channels."""
    return _colormapped(weight, "heatmap", norm, cmap, filters, channels)


# ------------------------------------------------------------------ pages


def _gap_fill(cmap: str | None) -> int:
    """White between tiles, unless the colormap's own middle (zero) is near-white: then a mid-grey,
    so near-zero tiles keep visible edges. Always an exact palette grey."""
    if cmap is None:
        return GAP_VALUE
    return GAP_VALUE if int(palette(cmap)[MID].min()) <= 200 else int(GREYS[grey_index(150) - LEVELS])


def _frame(img: np.ndarray, gap: int, fill: int) -> np.ndarray:
    """A frame of the gap colour when it is not white, so edge tiles look like inner ones."""
    return pad(img, top=gap, bottom=gap, left=gap, right=gap, fill=fill) if fill != GAP_VALUE and gap else img


def _tick_step(n: int, pitch: float, min_px: int) -> int:
    """Label every k-th row/column so labels are at least ``min_px`` apart; k in 1, 2, 4, 8, 16..."""
    k = 1
    while k * pitch < min_px and k < n:
        k *= 2
    return k


def _caption(plan: FilterPlan, filters: list[int], page: int, title: str, channels: list[int] | None = None) -> str:
    o, i, kh, kw = plan.shape
    what = {
        "rgb": "RGB tiles: input channels 0/1/2 as R/G/B, weight -> intensity",
        "mean": f"each tile = one filter's mean over its {i} input channels",
        "channels": "rows = filters, columns = input channels",
        "heatmap": "1x1 kernels as a heatmap: rows = filters (out), columns = input channels (in)",
    }[plan.mode]
    scale = {"layer": "one symmetric scale for the layer", "filter": "each filter scaled to its own \u00b1max|w|",
             "minmax": "layer min-max"}[plan.norm]
    span = f"filters {index_ranges(filters)} of {o}"
    if channels is not None and len(channels) < i:
        span += f", channels {index_ranges(channels)} of {i}"
    pages = f", page {page}/{len(plan.pages)}" if len(plan.pages) > 1 else ""
    first = f"{title}  " if title else ""
    return f"{first}{o}x{i}x{kh}x{kw}{pages}\n{what}\n{span}; {scale}"


@dataclass(frozen=True)
class FilterPage(ShowsPicture):
    """One rendered page: ``picture`` (a render.Picture: palette indices for colormapped modes,
    RGB in rgb mode; its metadata is the page's PNG text), the ``filters`` on it, the value range
    ``lo``..``hi`` at the ends of the colour scale (layer / minmax norms; ±largest for filter) and
    ``stats`` (min, max, mean, std of the whole layer's weight). ``image`` is always the
    (H, W, 3) uint8 picture."""

    plan: FilterPlan
    filters: list[int]
    page: int  # 1-based
    lo: float
    hi: float
    stats: dict[str, float]
    picture: Picture

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.picture.metadata


def render_plan(weight: np.ndarray, plan: FilterPlan, *, title: str = "") -> Iterator[FilterPage]:
    """Draw ``plan`` (from plan_filters on ``weight.shape``) page by page. ``weight`` is never modified.

    Each page: the tile grid (or heatmap), optional index labels, and unless ``plan.legend`` is
    False a legend strip with the value range and a caption (``title`` first)."""
    w = _check_weight(weight)
    if tuple(w.shape) != plan.shape:
        raise ValueError(f"plan is for shape {plan.shape}, weight has shape {tuple(w.shape)}")
    values = displayed_values(w, plan.mode)
    lo, hi = value_range(values, plan.norm)
    stats = weight_stats(w)
    rgb_mode = plan.mode == "rgb"
    space = PixelSpace(None if rgb_mode else palette(plan.cmap or DEFAULT_CMAP))
    fill = _gap_fill(plan.cmap)
    blank = space.grey(fill)  # the gap colour in this picture's pixel space
    white = space.grey(GAP_VALUE)
    s, gap = plan.scale, plan.gap

    def matrix_block(fsel: list[int], chans: list[int]) -> np.ndarray:
        """One filters x channels block of a heatmap or channels-mode page, with its label margins."""
        if plan.mode == "heatmap":
            img = upscale(_indices(values, plan.norm, lo, hi, fsel, chans), s)[..., None]
            rows = cols = []
            if plan.labels:
                f_step, c_step = _tick_step(len(fsel), s, 14), _tick_step(len(chans or ()), s, 36)
                rows = [(r * s + s // 2, str(f)) for r, f in enumerate(fsel) if r % f_step == 0]
                cols = [(c * s + s // 2, str(ch)) for c, ch in enumerate(chans or ()) if c % c_step == 0]
        elif plan.mode == "channels":
            idx = _indices(values, plan.norm, lo, hi, fsel, chans)
            nf, nc = idx.shape[:2]
            img = _frame(tile_grid(idx.reshape(nf * nc, *idx.shape[2:], 1), cols=nc, gap=gap, scale=s, fill=blank), gap, blank)
            rows = cols = []
            if plan.labels:
                th, tw = plan.shape[2] * s + gap, plan.shape[3] * s + gap
                off = gap if fill != GAP_VALUE else 0
                c_step = _tick_step(nc, tw, 30)
                rows = [(off + r * th + (th - gap) // 2, str(f)) for r, f in enumerate(fsel)]
                cols = [(off + c * tw + (tw - gap) // 2, str(ch)) for c, ch in enumerate(chans or ()) if c % c_step == 0]
        if rows or cols:  # label margins drawn on a blank RGB canvas, the picture pasted in
            h0, w0 = img.shape[:2]
            framed = margin_labels(np.full((h0, w0, 3), GAP_VALUE, np.uint8), rows=rows, cols=cols)
            out = space.from_rgb(framed).copy()
            out[framed.shape[0] - h0 :, framed.shape[1] - w0 :] = img
            img = out
        return img

    for p, fsel in enumerate(plan.pages, start=1):
        chans = plan.channels
        if plan.mode in ("heatmap", "channels"):
            width = plan.band_width if plan.bands > 1 else len(chans or ())
            blocks = [matrix_block(fsel, list(chans or ())[k : k + width]) for k in range(0, len(chans or ()), width)]
            img = blocks[0] if len(blocks) == 1 else vstack(blocks, gap=_BAND_GAP, fill=white)
        else:
            tiles = _rgb(values, plan.norm, lo, hi, fsel) if rgb_mode else _indices(values, plan.norm, lo, hi, fsel)[..., None]
            if plan.labels:
                tiles = upscale(tiles, s)
                bands = label_bands(fsel, width=tiles.shape[2], grey_index=not rgb_mode)
                tiles = np.concatenate([bands, tiles], axis=1)
                img = tile_grid(tiles, cols=plan.cols, gap=gap, fill=blank)
            else:
                img = tile_grid(tiles, cols=plan.cols, gap=gap, scale=s, fill=blank)
            img = _frame(img, gap, blank)
            n, cols = len(fsel), min(plan.cols, len(fsel))
            if n % cols and blank != white:  # empty cells after the last tile: background, not gap colour
                off = gap if fill != GAP_VALUE else 0
                th, tw = (img.shape[0] - 2 * off + gap) // math.ceil(n / cols), (img.shape[1] - 2 * off + gap) // cols
                img[off + (math.ceil(n / cols) - 1) * th :, off + (n % cols) * tw :] = white
        parts = [img]
        if plan.legend:
            per_filter = plan.norm == "filter"
            strip = legend_strip(
                -1.0 if per_filter else lo, 1.0 if per_filter else hi,
                width=img.shape[1], cmap=plan.cmap or "gray",
                lo_text="\u2212max|w|" if per_filter else None, hi_text="+max|w|" if per_filter else None,
                caption=_caption(plan, fsel, p, title, chans), max_width=max(img.shape[1], plan.max_side - 2 * _BORDER),
            )
            parts.append(space.from_rgb(strip))
        page = pad(vstack(parts, gap=6, fill=white), top=_BORDER, bottom=_BORDER, left=_BORDER, right=_BORDER, fill=white)
        picture = space.picture(page, _metadata(plan, fsel, p, lo, hi, stats, chans))
        yield FilterPage(plan=plan, filters=list(fsel), page=p, lo=lo, hi=hi, stats=stats, picture=picture)


def _metadata(plan: FilterPlan, fsel: list[int], page: int, lo: float, hi: float, st: dict[str, float],
              channels: list[int] | None = None) -> dict[str, str]:
    scale = {"layer": f"symmetric per layer: {lo:.6g}..{hi:.6g} (0 = neutral)",
             "filter": "symmetric per filter: each filter's -max|w|..+max|w| (0 = neutral)",
             "minmax": f"min-max per layer: {lo:.6g} -> 0, {hi:.6g} -> 1"}[plan.norm]
    meta = {
        "mode": plan.mode,
        "norm": plan.norm,
        "scale": scale,
        "cmap": plan.cmap or "rgb",
        "shape": "x".join(str(s) for s in plan.shape),
        "range": f"{st['min']:.6g}..{st['max']:.6g}",
        "filters": index_ranges(fsel),
        "page": f"{page}/{len(plan.pages)}",
    }
    if channels is not None:
        meta["channels"] = index_ranges(channels)
    if plan.mode == "heatmap":
        meta["note"] = HEATMAP_NOTE
    return meta


def render_filters(weight: np.ndarray, *, title: str = "", groups: int = 1, **options: object) -> list[FilterPage]:
    """plan_filters on ``weight.shape`` with ``options``, then every page rendered. See plan_filters."""
    w = _check_weight(weight)
    plan = plan_filters(w.shape, groups=groups, **options)  # type: ignore[arg-type]
    return list(render_plan(w, plan, title=title))
