"""Pictures of receptive fields: boxes on an image, effective-field heatmaps, the profile plot.

Pure functions: arrays (or Field numbers) in, a new uint8 (H, W, 3) image out; no file I/O, no
torch, no pyplot (the profile is drawn on a matplotlib ``Figure`` and rasterised with Agg).
Boxes are inclusive input-pixel rectangles (y0, x0, y1, x1) that may extend past the image
(padding): the part outside is drawn dashed and faded in a grey margin around the image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .render import colorize, distinct_colors, draw_text, normalize, pad, text_size, tile_grid, upscale

MARGIN_FILL = (226, 226, 226)
Box = tuple[int, int, int, int]


box_colors = distinct_colors  # one colour per box: the categorical colours of the colour path


def margin_for(boxes: Sequence[Box], height: int, width: int, *, cap: float = 0.5) -> int:
    """Margin (px) around an (height, width) image that shows how far ``boxes`` reach past it,
    at most ``cap`` times the longer side (a box reaching further is cut at the canvas edge)."""
    over = 0
    for y0, x0, y1, x1 in boxes:
        over = max(over, -y0, -x0, y1 - (height - 1), x1 - (width - 1))
    return int(min(max(over, 0) + (4 if over > 0 else 0), cap * max(height, width)))


def _outline_mask(shape: tuple[int, int], rect: tuple[int, int, int, int], width: int) -> np.ndarray:
    """(H, W) bool: the ``width``-px outline just inside the inclusive rectangle (top, left, bottom, right)."""
    h, w = shape
    t, l, b, r = rect
    m = np.zeros(shape, bool)
    t0, l0, b0, r0 = max(t, 0), max(l, 0), min(b, h - 1), min(r, w - 1)
    if t0 > b0 or l0 > r0:
        return m
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    inside = (ys >= t) & (ys <= b) & (xs >= l) & (xs <= r)
    core = (ys >= t + width) & (ys <= b - width) & (xs >= l + width) & (xs <= r - width)
    return inside & ~core


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Box],
    colors: Sequence[tuple[int, int, int]],
    *,
    centers: Sequence[tuple[float, float]] | None = None,
    scale: int = 2,
    margin: int | None = None,
    line: int = 2,
) -> tuple[np.ndarray, int]:
    """``image`` (H, W, 3) uint8 upscaled ``scale`` times on a grey margin, with each box outlined
    in its colour: solid inside the image, dashed and faded outside it (the padding the unit sees).
    ``centers`` (y, x) get a small cross. Returns (canvas, margin in image pixels)."""
    img = np.asarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    m = margin_for(boxes, h, w) if margin is None else int(margin)
    s = int(scale)
    H, W = (h + 2 * m) * s, (w + 2 * m) * s
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = MARGIN_FILL
    canvas[m * s:(m + h) * s, m * s:(m + w) * s] = upscale(img, s)
    ys, xs = np.arange(H)[:, None], np.arange(W)[None, :]
    in_image = (ys >= m * s) & (ys < (m + h) * s) & (xs >= m * s) & (xs < (m + w) * s)
    dashes = ((ys + xs) // (4 * s)) % 2 == 0
    lw = max(1, line * s - 1)
    for k, ((y0, x0, y1, x1), color) in enumerate(zip(boxes, colors)):
        # pixel (y, x) spans canvas rows (m + y) * s .. (m + y + 1) * s - 1; boxes drawn on pixel edges
        rect = ((m + y0) * s - k % 2, (m + x0) * s - k % 2, (m + y1 + 1) * s - 1 + k % 2, (m + x1 + 1) * s - 1 + k % 2)
        mask = _outline_mask((H, W), rect, lw)
        solid = mask & in_image
        faded = mask & ~in_image & dashes
        c = np.asarray(color, np.float32)
        canvas[solid] = c.astype(np.uint8)
        canvas[faded] = np.rint(0.55 * c + 0.45 * np.asarray(MARGIN_FILL, np.float32)).astype(np.uint8)
    if centers is not None:
        for (cy, cx), color in zip(centers, colors):
            py, px = int(round((m + cy + 0.5) * s)), int(round((m + cx + 0.5) * s))
            r = 3 * s
            for dy in range(-r, r + 1):
                for yy, xx in ((py + dy, px), (py, px + dy)):
                    if 0 <= yy < H and 0 <= xx < W:
                        canvas[yy, xx] = color
    return canvas, m


def legend_rows(canvas: np.ndarray, rows: Sequence[str], colors: Sequence[tuple[int, int, int]], *,
                title: str | None = None, size: int = 13) -> np.ndarray:
    """A copy of ``canvas`` with ``title`` above and one legend row per box below (colour swatch,
    text), widened if the text needs it."""
    pad_x = 8
    line_h = text_size("Ag", size=size)[1] + 6
    widest = max([text_size(r, size=size)[0] + 3 * line_h for r in rows] + [text_size(title or "", size=size)[0] + 2 * pad_x])
    out = np.asarray(canvas, np.uint8)
    extra = max(0, widest + 2 * pad_x - out.shape[1])
    top = line_h + 8 if title else 0
    out = pad(out, top=top, bottom=len(rows) * line_h + 10, right=extra)
    if title:
        out = draw_text(out, (pad_x, 4), title, size=size)
    y = out.shape[0] - len(rows) * line_h - 5
    for text, color in zip(rows, colors):
        sw = line_h - 6
        out[y + 2:y + 2 + sw, pad_x:pad_x + 2 * sw] = color
        out = draw_text(out, (pad_x + 2 * sw + 8, y), text, size=size)
        y += line_h
    return out


def heat_panel(grad: np.ndarray, image: np.ndarray | None, box: Box, color: tuple[int, int, int], *,
               cmap: str = "magma", alpha: float = 0.75, scale: int = 2, margin: int | None = None,
               gamma: float = 0.5) -> tuple[np.ndarray, int]:
    """The effective receptive field: ``grad`` (H, W) >= 0 as a heatmap (``gamma`` < 1 lifts the
    faint tails), blended over ``image`` (H, W, 3) uint8 if given, with the theoretical ``box``
    drawn on top. Returns (canvas, margin) like draw_boxes."""
    g = normalize(np.asarray(grad, np.float32)[None], per="map")[0] ** gamma
    heat = colorize(g, cmap)
    if image is not None:
        gray = np.asarray(image, np.float32).mean(-1, keepdims=True)
        heat = np.rint(alpha * heat + (1 - alpha) * gray).astype(np.uint8)
    return draw_boxes(heat, [box], [color], scale=scale, margin=margin)


def effective_panel(grad: np.ndarray, image: np.ndarray | None, box: Box, color: tuple[int, int, int], *,
                    head: str, sub: str = "", margin: int | None = None) -> np.ndarray:
    """One effective-field panel: heat_panel (default look) under a 40 px header holding ``head``
    (13 px) and ``sub`` (11 px). Returns (H, W, 3) uint8."""
    panel, _ = heat_panel(grad, image, box, color, margin=margin)
    panel = draw_text(pad(panel, top=40), (6, 3), head, size=13)
    return draw_text(panel, (6, 21), sub, size=11) if sub else panel


def panel_sheet(panels: Sequence[np.ndarray], *, title: str, cols: int = 3) -> np.ndarray:
    """Panels (h, w_i, 3) uint8 of one height in a grid of up to ``cols`` columns (8 px gaps, the
    narrower ones padded white on the right), ``title`` above, 6 px white border. (H, W, 3) uint8."""
    width = max(p.shape[1] for p in panels)
    grid = tile_grid(np.stack([pad(p, right=width - p.shape[1]) for p in panels]), cols=min(len(panels), cols), gap=8)
    return draw_text(pad(grid, top=26, left=6, right=6, bottom=6), (6, 5), title, size=13)


# ---------------------------------------------------------------- the profile plot


@dataclass
class ProfileSeries:
    """One model's curve: per conv layer (catalog order) its index, name, alias, receptive field
    and jump (geometric mean of the two axes if they differ), None where unknown."""

    model: str
    indices: list[int]
    names: list[str]
    aliases: list[str]
    rf: list[float | None]
    jump: list[float | None]


def _stage_label(name: str, alias: str) -> str:
    if alias:
        return alias.split("_")[0]
    parts = name.split(".")
    return parts[0] if len(parts) < 3 else ".".join(parts[:2])


def _runs(values: Sequence[Any]) -> list[tuple[int, int]]:
    """[start, end) index runs of equal consecutive values."""
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i))
            start = i
    return runs


def profile_figure(series: Sequence[ProfileSeries], *, size: tuple[int, int], dpi: int = 110) -> np.ndarray:
    """Receptive field and jump against conv-layer index, log scale, for one or more models.

    One model: its stages (runs of equal jump) shaded and labelled, residual/inception blocks
    marked by dotted lines. Several: one colour per model. The input size is a reference line.
    Returns the rendered figure as (H, W, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(10, 6.4), dpi=dpi, layout="constrained", facecolor="white")
    agg = FigureCanvasAgg(fig)
    ax_rf, ax_j = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    single = len(series) == 1
    for k, s in enumerate(series):
        c = colors[k % len(colors)]
        x = np.asarray(s.indices, float)
        rf = np.asarray([np.nan if v is None else v for v in s.rf], float)
        jp = np.asarray([np.nan if v is None else v for v in s.jump], float)
        final = next((v for v in reversed(s.rf) if v is not None), None)
        label = s.model + (f" (last conv: {final:g} px)" if final is not None else "")
        # markers: every conv (a shortcut conv sees less than the main path); line: the largest
        # field reached so far, the network's envelope
        env = np.fmax.accumulate(np.where(np.isnan(rf), -np.inf, rf))
        env = np.where(np.isinf(env), np.nan, env)
        ax_rf.plot(x, env, "-", color=c, lw=1.5, label=label)
        ax_rf.plot(x, rf, "o", color=c, ms=3.4, mfc="white" if not single else c, mew=1)
        ax_j.step(x, jp, where="mid", color=c, lw=1.6)
        ax_j.plot(x, jp, "o", color=c, ms=2.5)
        if final is not None:
            last = int(np.nanargmax(np.where(np.isnan(rf), -np.inf, x)))
            ax_rf.annotate(f"{rf[last]:g}", (x[last], rf[last]), xytext=(4, 4), textcoords="offset points",
                           color=c, fontsize=9)
    if single:
        s = series[0]
        jumps = [None if v is None else round(v, 6) for v in s.jump]
        shade = False
        for a, b in _runs(jumps):
            if jumps[a] is None:
                continue
            lo, hi = s.indices[a] - 0.5, s.indices[b - 1] + 0.5
            if shade:
                for ax in (ax_rf, ax_j):
                    ax.axvspan(lo, hi, color="0.93", zorder=0)
            shade = not shade
            label = _stage_label(s.names[a], s.aliases[a])
            ax_rf.text((lo + hi) / 2, 1.01, f"{label}\n/{jumps[a]:g}", transform=ax_rf.get_xaxis_transform(),
                       ha="center", va="bottom", fontsize=8, color="0.3")
        blocks = [".".join(n.split(".")[:2]) if n.count(".") >= 2 else None for n in s.names]
        for a, _b in _runs(blocks)[1:]:
            if blocks[a] is not None:
                ax_rf.axvline(s.indices[a] - 0.5, color="0.75", lw=0.6, ls=":", zorder=0)
    for ax, ref in ((ax_rf, max(size)), (ax_j, None)):
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", axis="y", color="0.85", lw=0.6)
        if ref is not None:
            ax.axhline(ref, color="0.35", ls="--", lw=1)
            ax.text(0.005, ref, f" input {size[0]}x{size[1]}", transform=ax.get_yaxis_transform(), va="bottom",
                    fontsize=8, color="0.35")
    top = max([max((v for v in s.rf if v is not None), default=1) for s in series] + [max(size)])
    ax_rf.set_ylim(top=top * 2.2)
    ax_rf.set_ylabel("receptive field (input px)")
    ax_j.set_ylabel("jump (input px)")
    ax_j.set_xlabel("conv layer index ('cnnviz layers')")
    ax_rf.legend(loc="lower right", fontsize=9, frameon=True)
    names = ", ".join(s.model for s in series)
    fig.suptitle(f"Receptive field profile: {names} (theoretical, input {size[0]}x{size[1]})", fontsize=11)
    agg.draw()
    return np.asarray(agg.buffer_rgba())[..., :3].copy()
