"""A detection's explanation as a picture: the map over the model's input, the box, its class and score."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .camdraw import DEFAULT_CMAP, _fit, _title, overlay
from .render import check_cmap, draw_text, legend_strip, vstack

BOX_COLOUR = (0, 255, 255)  # cyan: apart from every colour of the default (inferno) map


def draw_box(image: np.ndarray, box: Sequence[float], label: str, *, scale: float = 1.0, width: int = 2) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with ``box`` (x0, y0, x1, y1 in input pixels, times
    ``scale``) outlined and ``label`` written on a dark band at its top-left corner."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(pil)
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    for k in range(width):  # a dark outline under the bright one: visible on light and dark photos
        draw.rectangle([x0 - k - 1, y0 - k - 1, x1 + k + 1, y1 + k + 1], outline=(0, 0, 0))
    for k in range(width):
        draw.rectangle([x0 + k, y0 + k, x1 - k, y1 - k], outline=BOX_COLOUR)
    out = np.asarray(pil).copy()
    ty = int(max(0, y0 - 16 if y0 >= 16 else y0 + width + 1))
    return draw_text(out, (int(max(0, x0)) + 2, ty), label, size=12, color=(255, 255, 255), background=(0, 0, 0))


def box_picture(image: np.ndarray, map01: np.ndarray, box: Sequence[float], label: str, *, title: Sequence[str] = (),
                cmap: str = DEFAULT_CMAP, alpha: float = 0.6, min_height: int = 400, legend: bool = True,
                value_max: float | None = None, gamma: float = 0.5) -> np.ndarray:
    """One detection explained: ``map01`` (H, W) over ``image`` (H, W, 3) uint8 (enlarged to at least
    ``min_height`` px), the box with ``label``, ``title`` lines above and a colour legend below
    (0 .. ``value_max``). (H', W', 3) uint8."""
    check_cmap(cmap)
    h = map01.shape[0]
    img, m = _fit(image, map01, max(h, min_height))
    body = draw_box(overlay(img, m, cmap=cmap, alpha=alpha, gamma=gamma), box, label, scale=img.shape[0] / h)
    parts = [_title(title, body.shape[1])] if title else []
    parts.append(body)
    if legend:
        hi = 1.0 if value_max is None else float(value_max)
        parts.append(legend_strip(0.0, hi, width=body.shape[1], cmap=cmap, caption="map value (opacity follows it)",
                                  max_width=body.shape[1]))
    return vstack(parts, gap=3)
