"""The pictures of `cnnviz compare`: a layer-by-layer similarity matrix as a labelled heat map
(matplotlib's object-oriented Figure on the Agg canvas; no pyplot, no global state), and the
attribution-drift triptych (the image, A's map, B's map) drawn with camdraw's overlay."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass
class DriftPanel:
    """One tile of the drift picture: the side's display pixels (H, W, 3) uint8, its [0, 1] map
    (H, W) over them (None: the photo alone), the overlay opacity exponent (camdraw.overlay) and
    the caption lines under the tile."""

    image: np.ndarray
    map01: np.ndarray | None
    caption: Sequence[str]
    gamma: float = 0.5
    alone: bool = False  # the map's colours without the photo (speckled input attributions)


def drift_picture(panels: Sequence[DriftPanel], *, title: Sequence[str], cmap: str = "inferno", alpha: float = 0.6,
                  tile: int = 256, legend: str = "map value, each map scaled to its own [0, 1]") -> Picture:
    """Panels side by side, each ``tile`` px high (aspect kept), its caption lines below it in
    bands the width of the tile, ``title`` lines above, a colour legend below. Pure: RGB Picture."""
    from .camdraw import overlay
    from .maps import resize_maps
    from .render import colorize, label_bands, legend_strip, title_strip, vstack

    check_cmap(cmap)
    if not panels:
        raise ValueError("a drift picture needs at least one panel")
    columns = []
    for p in panels:
        h, w = p.image.shape[:2]
        size = (tile, max(1, round(tile * w / h)))
        img = p.image if (h, w) == size else np.clip(np.rint(resize_maps(
            p.image.astype(np.float32).transpose(2, 0, 1), size, mode="area")), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        if p.map01 is None:
            body = img
        else:
            m = np.asarray(p.map01, np.float32)
            if m.shape != size:
                m = np.clip(resize_maps(m[None], size, mode="bilinear")[0], 0.0, 1.0)
            body = colorize(m, cmap) if p.alone else overlay(img, m, cmap=cmap, alpha=alpha, gamma=p.gamma)
        bands = label_bands(list(p.caption), width=body.shape[1], size=12) if p.caption else None
        columns.append(vstack([body, *(list(bands) if bands is not None else [])], gap=2))
    height = max(c.shape[0] for c in columns)
    gap = np.full((height, 8, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for c in columns:
        row += [np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0)), constant_values=255), gap]
    body = np.concatenate(row[:-1], axis=1)
    parts = [title_strip("\n".join(title), width=body.shape[1], size=12)] if title else []
    parts += [body, legend_strip(0.0, 1.0, width=body.shape[1], cmap=cmap, caption=legend,
                                 max_width=min(body.shape[1], 520))]
    return Picture(np.ascontiguousarray(vstack(parts, gap=4)))


__all__ = ["DriftPanel", "drift_picture", "heatmap"]
