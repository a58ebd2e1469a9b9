"""Pure array work for pictures: normalise, colourise, upscale, tile. No file I/O, no torch.

Every function returns a new array and never modifies its input. Images are uint8 (H, W, 3).
"""
from __future__ import annotations

import difflib
import importlib.util
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from . import _cmaps
from .errors import UsageError

GAP_VALUE = 255  # white gaps between tiles


# The largest picture any command writes: Pillow's default MAX_IMAGE_PIXELS (it warns above it
# and refuses to open twice as much, as a decompression bomb), so every PNG opens in Pillow and in
# common viewers. MAX_SIDE is the side of the largest square within it (9459 px).
MAX_PIXELS = 89_478_485
MAX_SIDE = math.isqrt(MAX_PIXELS)


def check_picture_size(height: int, width: int, *, hint: str = "draw fewer or smaller tiles", at_least: bool = False) -> None:
    """Raise UsageError if a ``height`` x ``width`` picture (``at_least``: a lower bound of its
    size) is over MAX_PIXELS, before drawing it."""
    if height * width > MAX_PIXELS:
        raise UsageError(f"the picture would be {'at least ' if at_least else ''}{width} x {height} px ({height * width / 1e6:.0f} Mpx), more than "
                         f"image viewers open ({MAX_PIXELS / 1e6:.0f} Mpx); {hint}")


def grid_shape(n: int, *, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for ``n`` tiles: 64 -> (8, 8), 10 -> (3, 4)."""
    if n < 1:
        return (0, 0)
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    cols = max(1, min(cols, n))
    return (math.ceil(n / cols), cols)


# ------------------------------------------------------------------ value scalers
#
# Every picture maps values to [0, 1] with one of three scales; the colour path (below) takes it
# from there. Pure functions: float32 out, inputs untouched, a constant or empty slice never NaN.


def _reduce_axes(x: np.ndarray, per: str) -> tuple[int, ...] | None:
    """Axes a scale is computed over: each ``x[i]`` on its own (per='map') or everything ('all')."""
    if per not in ("map", "all"):
        raise ValueError(f"per must be 'map' or 'all', not {per!r}")
    return tuple(range(1, x.ndim)) if per == "map" and x.ndim > 1 else None


def scale_minmax(a: np.ndarray, *, per: str = "map") -> np.ndarray:
    """``a`` (N, ...) -> float32 [0, 1]: min -> 0, max -> 1 (a constant slice -> 0).
    per='map': each ``a[i]`` on its own; per='all': one scale for the whole array."""
    x = np.asarray(a, dtype=np.float32)
    axes = _reduce_axes(x, per)
    if not x.size:
        return x.copy()
    keep = axes is not None
    lo = x.min(axis=axes, keepdims=keep)
    hi = x.max(axis=axes, keepdims=keep)
    span = hi - lo
    ok = span > 0
    out = (x - lo) / np.where(ok, span, 1.0)
    out = np.where(ok, out, 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def scale_symmetric(a: np.ndarray, *, per: str = "map") -> np.ndarray:
    """``a`` (N, ...) -> float32 [0, 1]: 0 -> 0.5, +-max|a| -> 1/0 (a zero slice -> 0.5), so a
    diverging colormap's neutral middle means zero. ``per`` as in scale_minmax."""
    x = np.asarray(a, dtype=np.float32)
    axes = _reduce_axes(x, per)
    m = np.abs(x).max(axis=axes, keepdims=axes is not None) if x.size else np.float32(0)
    m = np.where(m > 0, m, 1.0).astype(np.float32)
    return np.clip(x / (2 * m) + 0.5, 0.0, 1.0)


def scale_fixed(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``a`` (any shape) -> float32 [0, 1] on a given range: ``lo`` -> 0, ``hi`` -> 1, clipped
    outside (``hi`` > ``lo``; see value_range)."""
    x = np.asarray(a, dtype=np.float32)
    return np.clip((x - lo) * np.float32(1.0 / (hi - lo)), 0.0, 1.0).astype(np.float32, copy=False)


def value_range(a: np.ndarray, *, symmetric: bool = False) -> tuple[float, float]:
    """(lo, hi) of ``a`` as Python floats: (min, max), or (-m, m) with m = max|a| when ``symmetric``
    (the range scale_minmax / scale_symmetric use with per='all'). Equal ends for a constant array."""
    x = np.asarray(a)
    lo, hi = float(x.min()), float(x.max())
    if symmetric:
        m = max(abs(lo), abs(hi))
        return (-m, m)
    return (lo, hi)


def normalize(a: np.ndarray, *, per: str = "map", symmetric: bool = False) -> np.ndarray:
    """Scale ``a`` (N, ...) to float32 [0, 1]: scale_symmetric when ``symmetric``, else scale_minmax.

    per='map': each ``a[i]`` on its own; per='all': one scale for the whole array.
    symmetric=False: min -> 0, max -> 1 (a constant slice -> 0, never NaN).
    symmetric=True: zero -> 0.5, +-max|a| -> 1/0 (a zero slice -> 0.5).
    """
    return scale_symmetric(a, per=per) if symmetric else scale_minmax(a, per=per)


# ------------------------------------------------------------------ the colour path
#
# Colormaps are matplotlib's, sampled through colormap_colors only (once per (name, n), cached);
# RGB pictures look values up in the 256-entry LUT (colorize), palette pictures in palette()
# (LEVELS entries of the same sampler plus greys). The commands' default colormaps and the common
# ones are read from matplotlib's own tables shipped in _cmaps (no matplotlib import: ~0.15 s of
# every start); any other name is looked up in matplotlib.colormaps.


def check_cmap(name: str) -> str:
    """Return ``name`` if matplotlib knows the colormap, else raise UsageError with suggestions."""
    if name in _cmaps.LUTS:
        return name
    import matplotlib

    if name in matplotlib.colormaps:
        return name
    names = sorted(matplotlib.colormaps)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    sugg = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise UsageError(f"unknown colormap {name!r}{sugg}; any matplotlib colormap works, e.g. viridis, gray, RdBu_r")


@lru_cache(maxsize=128)
def colormap_colors(name: str, n: int) -> np.ndarray:
    """(n, 3) uint8, read-only: matplotlib colormap ``name`` at ``n`` evenly spaced points of
    [0, 1], rounded. The one place a colormap is sampled."""
    x = np.linspace(0.0, 1.0, n)
    shipped = _cmaps.LUTS.get(name)
    if shipped is not None:
        lut = np.frombuffer(bytes.fromhex(shipped), np.uint8).reshape(-1, 3)
        # matplotlib's Colormap.__call__ on floats: entry int(x * N), x == 1 -> the last one
        xa = x * len(lut)
        xa[xa == len(lut)] = len(lut) - 1
        out = lut[xa.astype(int)]
    else:
        import matplotlib

        check_cmap(name)
        rgba = matplotlib.colormaps[name](x)
        out = np.rint(rgba[:, :3] * 255.0).astype(np.uint8)
    out.setflags(write=False)
    return out


def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of matplotlib colormap ``name`` (read-only)."""
    return colormap_colors(name, 256)


def distinct_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours for categories (matplotlib's tab10, then tab20 for more than 10)."""
    base = _cmaps.CATEGORICAL["tab10" if n <= 10 else "tab20"]
    return [base[i % len(base)] for i in range(n)]


def to_uint8(x01: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> 0..255 uint8 (rounded)."""
    return np.rint(np.clip(np.asarray(x01, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def colorize(x01: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Map [0, 1] values of any shape to RGB uint8 (..., 3) through a 256-entry colormap LUT."""
    return colormap_lut(cmap)[to_uint8(x01)]


# ------------------------------------------------------------------ palette pictures
#
# Colormapped pictures (filters, feature-map grids) are built as palette indices and saved as palette PNGs: one byte per pixel
# encodes ~7x faster than RGB and makes files half the size (a ResNet-50 1x1 layer is a 1-2 Mpx
# matrix of noise-like values). Entries 0..LEVELS-1 are the colormap at LEVELS evenly spaced
# points (odd, so value 0.5 - a zero weight under the symmetric scales - is exactly the middle
# entry, the colormap's neutral colour); the remaining entries are greys for gaps, text, outlines.

LEVELS = 193
GREYS = np.rint(np.linspace(0, 255, 256 - LEVELS)).astype(np.uint8)
MID = (LEVELS - 1) // 2  # index of value 0.5


@lru_cache(maxsize=32)
def palette(cmap: str) -> np.ndarray:
    """(256, 3) uint8, read-only: ``cmap`` at LEVELS evenly spaced points, then 63 greys from
    black to white."""
    out = np.concatenate([colormap_colors(cmap, LEVELS), np.repeat(GREYS[:, None], 3, axis=1)])
    out.setflags(write=False)
    return out


def levels(x01: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> palette indices 0..LEVELS-1 (uint8, rounded; 0.5 -> MID)."""
    return np.rint(np.clip(x01, 0.0, 1.0) * np.float32(LEVELS - 1)).astype(np.uint8)


def grey_index(value: int) -> int:
    return LEVELS + int(np.abs(GREYS.astype(int) - int(value)).argmin())


GREY_INDEX = np.array([grey_index(v) for v in range(256)], dtype=np.uint8)  # grey level -> nearest grey entry


def to_index(rgb: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """Small RGB decorations (legend, label bands, margins: greys plus colormap colours) ->
    (H, W, 1) palette indices; greys by table, other colours by nearest palette colour."""
    r = np.asarray(rgb)
    out = GREY_INDEX[r[..., 0]]
    colour = (r[..., 0] != r[..., 1]) | (r[..., 1] != r[..., 2])
    if colour.any():
        px = r[colour].astype(np.int32)
        uniq, inverse = np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2], return_inverse=True)
        u = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], axis=1)  # few colours: the legend bar
        d = ((u[:, None, :] - pal[None, :LEVELS].astype(np.int32)) ** 2).sum(axis=-1)
        out[colour] = d.argmin(axis=1).astype(np.uint8)[inverse.ravel()]
    return out[..., None]


@dataclass(frozen=True, eq=False)
class Picture:
    """A finished picture and the text that goes into its file: the one picture type every
    command renders and ``io.save_png`` writes.

    ``pixels``: (H, W) uint8 indices into ``palette`` (P, 3) uint8, P <= 256 (a palette PNG: one
    byte per pixel, ~7x faster to encode than RGB), or (H, W, 3) uint8 RGB when ``palette`` is
    None. ``metadata``: PNG text, key -> str (other values are written as JSON).
    ``transparency``: a palette index drawn fully transparent (None: opaque)."""

    pixels: np.ndarray
    palette: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    transparency: int | None = None

    def __post_init__(self) -> None:
        a = self.pixels
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
            raise ValueError("pixels must be a uint8 array")
        if self.palette is None:
            if a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"RGB pixels must be (H, W, 3), got shape {a.shape}")
            if self.transparency is not None:
                raise ValueError("transparency needs a palette")
            return
        pal = np.asarray(self.palette)
        if a.ndim != 2:
            raise ValueError(f"palette pixels must be (H, W) indices, got shape {a.shape}")
        if pal.dtype != np.uint8 or pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256:
            raise ValueError(f"palette must be (P, 3) uint8 with 1 <= P <= 256, got {pal.shape} {pal.dtype}")
        if self.transparency is not None and not 0 <= self.transparency < pal.shape[0]:
            raise ValueError(f"transparency {self.transparency} is not an entry of a {pal.shape[0]}-colour palette")

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB (a new array for palette pictures)."""
        return self.pixels if self.palette is None else self.palette[self.pixels]

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    def pil(self) -> Any:
        """The picture as a PIL image: mode 'P' with its palette (and transparency), or 'RGB'."""
        from PIL import Image

        if self.palette is None:
            return Image.fromarray(self.pixels)
        im = Image.fromarray(self.pixels)
        im.putpalette(self.palette.tobytes())
        if self.transparency is not None:
            im.info["transparency"] = self.transparency
        return im

    def with_metadata(self, metadata: Mapping[str, Any]) -> Picture:
        """A copy whose text is ``metadata`` (the file's context: model, layer...) followed by this
        picture's own entries (which win on a clash). Pixels are shared, not copied."""
        return replace(self, metadata={**metadata, **self.metadata})


class ShowsPicture:
    """Read-only views of a result's ``picture`` (MapGrid, FilterPage): ``image`` (H, W, 3) uint8,
    ``shape``, ``index``/``palette`` (palette pictures, else None), ``rgb`` (else None), ``pil()``."""

    picture: Picture

    @property
    def image(self) -> np.ndarray:
        return self.picture.image

    @property
    def shape(self) -> tuple[int, int]:
        return self.picture.shape

    @property
    def index(self) -> np.ndarray | None:
        return None if self.picture.palette is None else self.picture.pixels

    @property
    def palette(self) -> np.ndarray | None:
        return self.picture.palette

    @property
    def rgb(self) -> np.ndarray | None:
        return self.picture.pixels if self.picture.palette is None else None

    def pil(self) -> Any:
        """The picture as a PIL image: mode 'P' with the palette, or 'RGB' (for notebooks)."""
        return self.picture.pil()


class PixelSpace:
    """Where a picture is drawn: palette indices into ``pal`` (colormapped pictures) or RGB (None).
    Gaps and decorations (text, legends, margins) are made in RGB and converted here, so a
    renderer builds either kind of picture with the same code."""

    def __init__(self, pal: np.ndarray | None) -> None:
        self.palette = pal

    def grey(self, value: int) -> int:
        """The pixel value of grey level ``value``: itself in RGB, the nearest grey entry otherwise."""
        return int(value) if self.palette is None else int(GREY_INDEX[value])

    def from_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB decoration -> this space's (H, W, C) pixels (see to_index)."""
        return rgb if self.palette is None else to_index(rgb, self.palette)

    def picture(self, canvas: np.ndarray, metadata: Mapping[str, Any] | None = None) -> Picture:
        """The finished (H, W, C) canvas as a Picture."""
        if self.palette is None:
            return Picture(canvas, metadata=dict(metadata or {}))
        return Picture(np.ascontiguousarray(canvas[..., 0]), self.palette, dict(metadata or {}))


def upscale(tiles: np.ndarray, factor: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upscale of (N, h, w[, 3]) or (h, w[, 3]) by an integer factor (fy, fx)."""
    fy, fx = (factor, factor) if isinstance(factor, int) else factor
    t = np.asarray(tiles)
    lead = 1 if (t.ndim == 4 or (t.ndim == 3 and t.shape[-1] not in (3, 4))) else 0
    if fy == 1 and fx == 1:
        return t.copy()
    return np.repeat(np.repeat(t, fy, axis=lead), fx, axis=lead + 1)


def tile_factor(h: int, w: int, min_px: int) -> int:
    """Smallest integer factor that makes the smaller side of an (h, w) tile at least ``min_px``."""
    return max(1, math.ceil(min_px / max(1, min(h, w))))


def tile_grid(
    tiles: np.ndarray,
    *,
    cols: int | None = None,
    gap: int = 2,
    scale: int = 1,
    fill: int = GAP_VALUE,
    bands: np.ndarray | None = None,
) -> np.ndarray:
    """Arrange N tiles (N, h, w, C) uint8 (C = 3 for RGB, 1 for palette indices) in a near-square
    grid (or ``cols`` wide), each upscaled ``scale`` times (nearest), separated by ``gap`` px of
    ``fill``; no outer border. ``bands`` (N, b, w*scale, C), e.g. label_bands, go above their tiles.
    Returns (rows*(b+h*s+gap)-gap, cols*(w*s+gap)-gap, C) uint8.

    The tiles are written into the final layout in one broadcast assignment: the upscale happens
    in that write, no per-tile loop and no intermediate upscaled copy."""
    t = np.asarray(tiles)
    if t.ndim == 3:
        t = t[..., None].repeat(3, axis=-1)
    if t.ndim != 4:
        raise ValueError(f"tiles must be (N, h, w, C), got shape {t.shape}")
    n, h, w, c = t.shape
    rows, cols = grid_shape(n, cols=cols)
    th, tw = h * scale, w * scale
    bh = 0
    if bands is not None:
        bands = np.asarray(bands)
        if bands.shape[0] != n or bands.shape[2] != tw or bands.shape[3] != c:
            raise ValueError(f"bands {bands.shape} do not fit {n} tiles of width {tw} with {c} channels")
        bh = bands.shape[1]
    cell_h, cell_w = bh + th + gap, tw + gap
    check_picture_size(rows * cell_h - gap, cols * cell_w - gap)
    canvas = np.full((rows, cell_h, cols, cell_w, c), fill, dtype=np.uint8)
    if n:
        cells = rows * cols

        def layout(a: np.ndarray) -> np.ndarray:  # (n, y, x, c) -> (rows, y, cols, x, c), empty cells = fill
            if cells > n:
                a = np.concatenate([a, np.full((cells - n, *a.shape[1:]), fill, np.uint8)])
            return a.reshape(rows, cols, *a.shape[1:]).transpose(0, 2, 1, 3, 4)

        dst = canvas[:, bh : bh + th, :, :tw]
        dst.shape = (rows, h, scale, cols, w, scale, c)  # a view: raises rather than copy
        dst[...] = layout(t.astype(np.uint8, copy=False))[:, :, None, :, :, None, :]
        if bh:
            canvas[:, :bh, :, :tw] = layout(bands.astype(np.uint8, copy=False))
    grid = canvas.reshape(rows * cell_h, cols * cell_w, c)
    return grid[: grid.shape[0] - gap or None, : grid.shape[1] - gap or None]


_FONTS = threading.local()


def _font(size: int):  # type: ignore[no-untyped-def]
    """DejaVu Sans at ``size`` px, one instance per thread (a FreeType face must not be shared
    between threads that draw at the same time)."""
    cache = getattr(_FONTS, "cache", None)
    if cache is None:
        cache = _FONTS.cache = {}
    if size not in cache:
        from PIL import ImageFont

        try:
            cache[size] = _substituting_font_class()(mpl_data_path("fonts", "ttf", "DejaVuSans.ttf"), size)
        except Exception:  # no matplotlib font: Pillow's built-in bitmap font
            cache[size] = ImageFont.load_default()
    return cache[size]


@lru_cache(maxsize=1)
def _substituting_font_class() -> type:
    """ImageFont.FreeTypeFont whose every text call (measuring and drawing) goes through
    drawable(): a character the font has no glyph for is written as its escaped code point
    instead of the font's empty box (DejaVu Sans has no CJK: '猫.jpg' -> '\\u732b.jpg')."""
    from PIL import ImageFont

    class SubstitutingFont(ImageFont.FreeTypeFont):
        def getbbox(self, text, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().getbbox(drawable(text, self), *args, **kwargs)

        def getlength(self, text, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().getlength(drawable(text, self), *args, **kwargs)

        def getmask(self, text, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().getmask(drawable(text, self), *args, **kwargs)

        def getmask2(self, text, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().getmask2(drawable(text, self), *args, **kwargs)

    return SubstitutingFont


def drawable(text: str, font: object = None) -> str:
    """``text`` as the labels draw it: each character the font (default: the labels' font, DejaVu
    Sans) has no glyph for becomes its escaped code point ('\\u732b'), an honest substitute for
    the box it would draw. The PNG metadata keeps the true text."""
    if text.isascii() or not isinstance(text, str):
        return text
    font = _font(12) if font is None else font
    return "".join(c if c.isspace() or _has_glyph(font, c) else (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
                   for c in text)


def _has_glyph(font: Any, char: str) -> bool:
    """Whether ``font`` draws ``char`` with a glyph of its own rather than its missing-glyph box
    (.notdef, what it draws for U+10FFFF, a code point no font covers). Cached per font and char."""
    from PIL import ImageFont

    known = font.__dict__.setdefault("_cnnviz_glyphs", {})
    if char not in known:
        def mask(c: str) -> tuple[Any, Any, bytes]:  # the base class's own rendering: no substitution
            m, offset = ImageFont.FreeTypeFont.getmask2(font, c, mode="L")
            return m.size, offset, bytes(m)

        if "notdef" not in known:
            known["notdef"] = mask("\U0010ffff")
        known[char] = mask(char) != known["notdef"]
    return bool(known[char])


def mpl_data_path(*parts: str) -> str:
    """A path in matplotlib's data folder (``matplotlib.get_data_path()``, the mpl-data folder beside
    the package's __init__), found without importing matplotlib (~0.15 s of a start-up). Raises
    FileNotFoundError when matplotlib is not installed."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("matplotlib is not installed")
    return os.path.join(os.path.dirname(spec.origin), "mpl-data", *parts)


def text_size(text: str, *, size: int = 12) -> tuple[int, int]:
    """(width, height) in px of ``text`` drawn with draw_text at font ``size``."""
    return _text_size(text, size)


@lru_cache(maxsize=16384)
def _text_size(text: str, size: int) -> tuple[int, int]:
    left, top, right, bottom = _font(size).getbbox(text or " ")
    return (int(right - min(left, 0)), int(bottom - min(top, 0)))


@lru_cache(maxsize=16384)
def _text_mask(text: str, size: int, height: int) -> np.ndarray:
    """Anti-aliased coverage (height, width) uint8 of ``text`` drawn at (1, 0): rendered once per
    (text, size) and reused, since the same channel numbers label every layer of a run."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (text_size(text, size=size)[0] + 2, height), 0)
    ImageDraw.Draw(img).text((1, 0), text, fill=255, font=_font(size))
    mask = np.asarray(img).copy()
    mask.setflags(write=False)
    return mask


def draw_text(
    image: np.ndarray,
    xy: tuple[int, int],
    text: str,
    *,
    size: int = 12,
    color: tuple[int, int, int] = (0, 0, 0),
    background: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with ``text`` drawn at (x, y) (top-left), in DejaVu Sans."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(pil)
    font = _font(size)
    if background is not None:
        w, h = text_size(text, size=size)
        draw.rectangle([xy[0] - 1, xy[1] - 1, xy[0] + w + 1, xy[1] + h + 1], fill=background)
    draw.text(xy, text, fill=color, font=font)
    return np.asarray(pil).copy()


def pad(image: np.ndarray, *, top: int = 0, bottom: int = 0, left: int = 0, right: int = 0, fill: int = GAP_VALUE) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with ``fill`` borders added (room for titles and legends)."""
    return np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), constant_values=fill)


# ------------------------------------------------------- annotation: legends, labels, stacking


def _fit_font_size(texts: list[str], *, width: int, size: int, min_size: int = 6) -> int:
    """Largest font size <= ``size`` (down to ``min_size``) at which every text fits ``width`` px."""
    longest = max(texts, key=len, default="")
    while size > min_size and text_size(longest, size=size)[0] > width:
        size -= 1
    return size


def label_tiles(
    tiles: np.ndarray,
    labels: list[str] | tuple[str, ...],
    *,
    size: int = 11,
    color: tuple[int, int, int] = (0, 0, 0),
    fill: int = GAP_VALUE,
) -> np.ndarray:
    """Tiles (N, h, w, 3) uint8 -> (N, h + band, w, 3) uint8: each tile gets its label in a
    ``fill`` band above it (see label_bands), so the label never hides pixels."""
    t = np.asarray(tiles)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"tiles must be (N, h, w, 3), got shape {t.shape}")
    if len(labels) != t.shape[0]:
        raise ValueError(f"{len(labels)} labels for {t.shape[0]} tiles")
    bands = label_bands(labels, width=t.shape[2], size=size, color=color, fill=fill)
    return np.concatenate([bands, t.astype(np.uint8, copy=False)], axis=1)


def label_bands(
    labels: Sequence[object],
    *,
    width: int,
    size: int = 11,
    color: tuple[int, int, int] = (0, 0, 0),
    fill: int = GAP_VALUE,
    grey_index: bool = False,
) -> np.ndarray:
    """One band per label, (N, band, width, 3) uint8, text at the left on ``fill``; ``band`` = text
    height + 2 px; the font shrinks (down to 6 px) until the longest label fits ``width``.
    ``grey_index``: (N, band, width, 1) palette indices instead (grey text only; see palette).

    Read-only and cached: a run labels every image's grid with the same channel numbers, and each
    distinct text is rasterised once, then blended in with one lookup."""
    return _label_bands(tuple(str(s) for s in labels), width, size, tuple(color), fill, grey_index)


def label_band_height(labels: Sequence[object], *, width: int, size: int = 11) -> int:
    """The height in px of the bands label_bands draws for ``labels`` (0 for none), without drawing them."""
    return _band_geometry(tuple(str(s) for s in labels), width, size)[1]


def _band_geometry(texts: tuple[str, ...], width: int, size: int) -> tuple[int, int]:
    """(font size, band height) of label_bands: the font fitted to ``width``, the tallest text + 2 px."""
    size = _fit_font_size(list(texts), width=width - 1, size=size)
    return size, (max(text_size(s, size=size)[1] for s in set(texts)) + 2 if texts else 0)


@lru_cache(maxsize=16)
def _label_bands(texts: tuple[str, ...], width: int, size: int, color: tuple[int, ...], fill: int, grey_index: bool) -> np.ndarray:
    n = len(texts)
    size, band = _band_geometry(texts, width, size)
    coverage = np.zeros((n, band, width), np.uint8)
    for i, s in enumerate(texts):
        m = _text_mask(s, size, band)[:, :width]
        coverage[i, :, : m.shape[1]] = m
    a = np.arange(256, dtype=np.float32)[:, None] / 255.0
    lut = np.rint(fill + a * (np.asarray(color, np.float32) - fill)).astype(np.uint8)  # coverage -> RGB
    if grey_index:
        if len(set(color)) != 1:
            raise ValueError("grey_index needs a grey text colour")
        lut = GREY_INDEX[lut[:, :1]]
    out = lut[coverage]
    out.setflags(write=False)
    return out


def margin_labels(
    image: np.ndarray,
    *,
    rows: list[tuple[int, str]] | tuple[tuple[int, str], ...] = (),
    cols: list[tuple[int, str]] | tuple[tuple[int, str], ...] = (),
    size: int = 10,
    color: tuple[int, int, int] = (0, 0, 0),
    fill: int = GAP_VALUE,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with a left margin holding row labels (each right-aligned and
    vertically centred on its y) and a top margin holding column labels (centred on each x).
    Positions are in ``image`` pixels; the caller picks which rows/columns get a label."""
    from PIL import Image, ImageDraw

    img = np.asarray(image, dtype=np.uint8)
    font = _font(size)
    left = max((text_size(s, size=size)[0] for _, s in rows), default=-4) + 4
    top = max((text_size(s, size=size)[1] for _, s in cols), default=-3) + 3
    out = pad(img, top=top, left=left, fill=fill)
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    for y, s in rows:
        tw, th = text_size(s, size=size)
        draw.text((left - 3 - tw, top + y - th // 2), s, fill=color, font=font)
    for x, s in cols:
        tw, _th = text_size(s, size=size)
        xx = min(max(0, left + x - tw // 2), out.shape[1] - tw)
        draw.text((xx, 0), s, fill=color, font=font)
    return np.asarray(pil).copy()


def title_strip(title: str, *, width: int, size: int = 12, x: int = 3, top: int = 1, bottom: int = 1) -> np.ndarray:
    """A white strip (H, W, 3) uint8 holding ``title``, one line per '\\n', each at ``x`` px from
    the left, ``top`` px above the first and ``bottom`` below the last; W = ``width``, or wider
    if a line needs it."""
    lines = [s for s in title.split("\n") if s]
    line_h = text_size("Ag", size=size)[1] + 3
    w = max([width, *(text_size(s, size=size)[0] + 2 * x for s in lines)])
    strip = np.full((top + line_h * len(lines) + bottom, w, 3), GAP_VALUE, dtype=np.uint8)
    for i, s in enumerate(lines):
        strip = draw_text(strip, (x, top + i * line_h), s, size=size)
    return strip


def fit_text(text: str, *, width: int, size: int, keep: str = "start") -> str:
    """``text``, shortened with '…' until it renders at most ``width`` px wide at font ``size``,
    keeping at least one character: keep='start' cuts the end ('golden retr…'), keep='end' the
    start ('…photo_0042.jpg', for names that differ at the end)."""
    if keep not in ("start", "end"):
        raise ValueError(f"keep must be 'start' or 'end', not {keep!r}")
    if text_size(text, size=size)[0] <= width:
        return text
    if keep == "end":
        while len(text) > 1 and text_size("\u2026" + text, size=size)[0] > width:
            text = text[1:]
        return "\u2026" + text
    while len(text) > 1 and text_size(text + "\u2026", size=size)[0] > width:
        text = text[:-1]
    return text + "\u2026"


def wrap_text(text: str, *, width: int, size: int, sep: str = " ", cut: bool = False) -> list[str]:
    """``text`` broken at ``sep`` into lines of at most ``width`` px at font ``size``. A piece wider
    than a line stays whole, or with ``cut`` is shortened by fit_text."""
    lines: list[str] = []
    for part in text.split(sep):
        if lines and text_size(lines[-1] + sep + part, size=size)[0] <= width:
            lines[-1] += sep + part
        else:
            lines.append(fit_text(part, width=width, size=size) if cut else part)
    return lines or [""]


def _tick(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}".replace("-", "\u2212")


def legend_strip(
    lo: float,
    hi: float,
    *,
    width: int,
    cmap: str = "gray",
    bar_width: int = 256,
    bar_height: int = 10,
    size: int = 11,
    lo_text: str | None = None,
    hi_text: str | None = None,
    caption: str = "",
    fill: int = GAP_VALUE,
    max_width: int | None = None,
) -> np.ndarray:
    """A value-range legend (H, W, 3) uint8, W = max(``width``, what the text needs) but at most
    ``max_width`` (caption lines are then cut with '…'): a colour bar
    (``cmap``, left = ``lo``, right = ``hi``, thin grey outline) with ticks at both ends and at 0
    when 0 lies strictly inside, then the optional ``caption`` (one line per '\\n').
    ``lo_text``/``hi_text`` replace the end labels (e.g. '−max|w|' for per-filter scales)."""
    from PIL import Image, ImageDraw

    margin = 4
    bar_w = int(max(64, min(bar_width, width - 2 * margin)))
    texts = [lo_text if lo_text is not None else _tick(lo), hi_text if hi_text is not None else _tick(hi)]
    lines = [s for s in caption.split("\n") if s] if caption else []
    if max_width is not None:
        bar_w = max(16, min(bar_w, max_width - 2 * margin))
        lines = [fit_text(s, width=max_width - 2 * margin, size=size) for s in lines]
    line_h = text_size("Ag", size=size)[1] + 3
    need_w = max([bar_w + 2 * margin, *(text_size(s, size=size)[0] + 2 * margin for s in lines)])
    w = max(int(width), need_w) if max_width is None else min(max(int(width), need_w), max_width)
    h = margin + bar_height + 3 + line_h + len(lines) * line_h + margin // 2
    out = np.full((h, w, 3), fill, dtype=np.uint8)
    ramp = colorize(np.linspace(0.0, 1.0, bar_w, dtype=np.float32), cmap)
    y0, x0 = margin, margin
    out[y0 - 1 : y0 + bar_height + 1, x0 - 1 : x0 + bar_w + 1] = 128  # outline: a white mid-colour stays visible
    out[y0 : y0 + bar_height, x0 : x0 + bar_w] = ramp[None]
    ticks = [(0.0, texts[0], "left"), (1.0, texts[1], "right")]
    if lo < 0 < hi and hi > lo:
        ticks.append(((0 - lo) / (hi - lo), "0", "centre"))
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    font = _font(size)
    ty = y0 + bar_height + 2
    placed: list[tuple[int, int]] = []
    for pos, s, align in ticks:
        tw = text_size(s, size=size)[0]
        xc = x0 + round(pos * (bar_w - 1))
        xs = {"left": x0, "right": x0 + bar_w - tw, "centre": xc - tw // 2}[align]
        if any(xs < b + 4 and xs + tw + 4 > a for a, b in placed):
            continue  # would overlap an end label (0 very close to lo or hi)
        placed.append((xs, xs + tw))
        draw.line([(xc, y0 + bar_height), (xc, y0 + bar_height + 1)], fill=(0, 0, 0))
        draw.text((xs, ty), s, fill=(0, 0, 0), font=font)
    for i, s in enumerate(lines):
        draw.text((margin, ty + line_h * (i + 1)), s, fill=(0, 0, 0), font=font)
    return np.asarray(pil).copy()


def vstack(images: list[np.ndarray], *, gap: int = 0, fill: int = GAP_VALUE) -> np.ndarray:
    """Stack (h_i, w_i, C) uint8 images top to bottom, left-aligned, narrower ones padded on the
    right with ``fill``, ``gap`` px of ``fill`` between them."""
    w = max(im.shape[1] for im in images)
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        if i and gap:
            parts.append(np.full((gap, w, *im.shape[2:]), fill, dtype=np.uint8))
        parts.append(pad(im, right=w - im.shape[1], fill=fill) if im.shape[1] < w else np.asarray(im, dtype=np.uint8))
    return np.concatenate(parts, axis=0)
