"""The picture of `cnnviz compare`: a layer-by-layer similarity matrix as a labelled heat map
(matplotlib's object-oriented Figure on the Agg canvas; no pyplot, no global state)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .render import Picture, check_cmap


def heatmap(matrix: np.ndarray, *, rows: Sequence[str], cols: Sequence[str], row_title: str, col_title: str,
            title: str, legend: str = "linear CKA", cmap: str = "viridis", vmin: float = 0.0,
            vmax: float = 1.0) -> Picture:
    """``matrix`` (R, C) as a heat map: row labels ``rows`` (top to bottom, depth order), column
    labels ``cols`` (left to right), a colour bar from ``vmin`` to ``vmax`` named ``legend``
    (values outside are drawn at its ends; NaN in grey). Returns an RGB Picture."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, np.float64)
    if m.shape != (len(rows), len(cols)):
        raise ValueError(f"matrix {m.shape} does not match {len(rows)} row and {len(cols)} column labels")
    label_chars = max([len(s) for s in (*rows, *cols)] + [4])
    cell = 0.22 if max(m.shape) > 30 else 0.3  # inches per cell
    side = 0.075 * label_chars + 0.9  # room for the tick labels (inches)
    width = max(4.5, m.shape[1] * cell + side + 1.6)
    height = max(3.5, m.shape[0] * cell + side + 1.0)
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((side / width, side / height, 1 - (side + 1.4) / width, 1 - (side + 0.8) / height))
    colours = colormaps[check_cmap(cmap)].with_extremes(bad="#bbbbbb")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=colours, vmin=vmin, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    font = 7 if max(m.shape) > 30 else 8
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=90, fontsize=font)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=font)
    ax.set_xlabel(col_title, fontsize=9)
    ax.set_ylabel(row_title, fontsize=9)
    ax.set_title(title, fontsize=9)
    bar_ax = fig.add_axes((1 - 1.15 / width, side / height, 0.18 / width, 1 - (side + 0.8) / height))
    bar = fig.colorbar(im, cax=bar_ax)
    bar.set_label(legend, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return Picture(np.ascontiguousarray(rgba[..., :3]))


__all__ = ["heatmap"]
