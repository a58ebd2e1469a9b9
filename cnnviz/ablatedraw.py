"""Pictures of an ablation run: the bar chart of the channels' effects and the removal curves.
Drawn on matplotlib ``Figure`` objects (no pyplot state) and returned as (H, W, 3) uint8."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bar:
    """One ablated unit in the chart: its ``label`` ('ch 12', 'ch 0:16'), drops in points of
    accuracy and probability, an optional note (the class it hurts most) and optional pictures
    of the channel ((h, w, 3) uint8 each: its dataset examples, or its filter)."""

    label: str
    accuracy: float
    probability: float
    note: str = ""
    thumbs: tuple[np.ndarray, ...] = ()


def _render(fig: object) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    agg = FigureCanvasAgg(fig)  # type: ignore[arg-type]
    agg.draw()
    return np.asarray(agg.buffer_rgba())[..., :3].copy()


def _fit(img: np.ndarray, px: int) -> np.ndarray:
    """``img`` (h, w, 3) uint8 scaled to fit a px x px square (nearest below 4x its size: a 3x3
    filter stays crisp), centred on white."""
    from PIL import Image

    h, w = img.shape[:2]
    s = px / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    res = Image.NEAREST if s >= 4 else Image.LANCZOS
    small = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(size, res))
    out = np.full((px, px, 3), 255, np.uint8)
    y, x = (px - size[1]) // 2, (px - size[0]) // 2
    out[y:y + size[1], x:x + size[0]] = small
    return out


def effects_chart(bars: Sequence[Bar], *, title: str, metric_label: str = "agreement", dpi: int = 100,
                  thumbs_caption: str | None = None) -> np.ndarray:
    """Horizontal bars, most important unit on top: drop in mean probability of the label (left)
    and in ``metric_label`` (accuracy or agreement, right), both in percentage points. Bars with
    pictures get them in a column left of the labels (``thumbs_caption`` names what they are)."""
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    n = max(1, len(bars))
    most = max((len(b.thumbs) for b in bars), default=0)
    row_in = 0.8 if most else 0.26
    width = 11 + (0.8 * most + 0.4 if most else 0)
    fig = Figure(figsize=(width, 1.6 + row_in * n), dpi=dpi, layout="constrained", facecolor="white")
    if most:
        ax_t, ax_p, ax_a = fig.subplots(1, 3, sharey=True, width_ratios=[0.8 * most + 0.4, 5, 5])
    else:
        ax_t = None
        ax_p, ax_a = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(bars))
    labels = [b.label for b in bars]
    prob = np.asarray([b.probability for b in bars], float)
    acc = np.asarray([b.accuracy for b in bars], float)
    ax_p.barh(y, prob, color=np.where(prob >= 0, "#c44e52", "#4c72b0"), height=0.75)
    ax_a.barh(y, acc, color=np.where(acc >= 0, "#c44e52", "#4c72b0"), height=0.75)
    first = ax_t if ax_t is not None else ax_p
    first.set_yticks(y, labels, fontsize=9 if most else 8)
    first.invert_yaxis()
    first.set_ylim(len(bars) - 0.5, -0.5)
    ax_p.set_xlabel("drop in mean probability of the label (points)")
    ax_a.set_xlabel(f"drop in {metric_label} (points)")
    for ax in (ax_p, ax_a):
        ax.axvline(0, color="0.3", lw=0.8)
        ax.grid(True, axis="x", color="0.88", lw=0.6)
        ax.set_axisbelow(True)
    if ax_t is not None:
        px = int(row_in * dpi * 0.9)
        ax_t.set_xlim(-0.5, most - 0.5)
        ax_t.set_xticks([])
        for side in ("top", "right", "bottom", "left"):
            ax_t.spines[side].set_visible(False)
        ax_t.tick_params(axis="y", length=0)
        if thumbs_caption:
            import textwrap

            ax_t.set_title(textwrap.fill(thumbs_caption, 14 * most), fontsize=8, color="0.25")
        for yi, b in zip(y, bars):
            for j, img in enumerate(b.thumbs):
                box = OffsetImage(_fit(img, px), zoom=72 / dpi)  # one image pixel per output pixel
                ax_t.add_artist(AnnotationBbox(box, (j, yi), frameon=True, pad=0.0, bboxprops={"edgecolor": "0.7", "lw": 0.5}))
    if any(b.note for b in bars):  # room for the class names right of the longest bar
        lo, hi = ax_a.get_xlim()
        ax_a.set_xlim(lo, hi + 0.3 * (hi - lo))
    for yi, b in zip(y, bars):
        if b.note:
            ax_a.annotate(b.note, (max(b.accuracy, 0), yi), xytext=(3, 0), textcoords="offset points", va="center",
                          fontsize=7, color="0.25")
    fig.suptitle(title, fontsize=10)
    return _render(fig)


def curves_chart(points: Mapping[str, Sequence[tuple[int, float]]], *, title: str, total: int, unit: str = "channels",
                 metric_label: str = "agreement", dpi: int = 100) -> np.ndarray:
    """Accuracy (%) against the number of ``unit`` removed, one line per order: 'most' (most
    important first), 'least', and each 'random-S' (thin) with their mean (dashed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=dpi, layout="constrained", facecolor="white")
    ax = fig.subplots()
    randoms = [name for name in points if name.startswith("random")]
    for name in randoms:
        k, v = zip(*points[name])
        ax.plot(k, v, color="0.65", lw=0.9)
    if randoms:
        k = [p[0] for p in points[randoms[0]]]
        mean = np.mean([[p[1] for p in points[name]] for name in randoms], axis=0)
        ax.plot(k, mean, color="0.2", lw=1.5, ls="--", label=f"random order (mean of {len(randoms)} seeds; thin: each)")
    if "most" in points:
        k, v = zip(*points["most"])
        ax.plot(k, v, color="#c44e52", lw=2, label="most important first")
    if "least" in points:
        k, v = zip(*points["least"])
        ax.plot(k, v, color="#4c72b0", lw=2, label="least important first")
    ax.set_xlim(0, total)
    ax.set_ylim(-2, 102)
    ax.set_xlabel(f"{unit} removed")
    ax.set_ylabel(f"{metric_label} (%)")
    ax.grid(True, color="0.88", lw=0.6)
    ax.legend(loc="best", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _render(fig)


__all__ = ["Bar", "curves_chart", "effects_chart"]
