"""A detection's explanation as a picture: the map over the model's input, the box, its class and score."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .camdraw import DEFAULT_CMAP, cam_picture
from .render import draw_text

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
                cmap: str = DEFAULT_CMAP, alpha: float = 0.6, legend: bool = True, value_max: float | None = None,
                gamma: float = 0.5) -> np.ndarray:
    """One detection explained: camdraw.cam_picture of ``map01`` (H, W) over ``image`` (H, W, 3)
    uint8 with the box (input pixels) and ``label`` drawn on the overlay. (H', W', 3) uint8."""
    return cam_picture(image, map01, title=title, cmap=cmap, alpha=alpha, legend=legend, value_max=value_max,
                       gamma=gamma, annotate=lambda body, scale: draw_box(body, box, label, scale=scale))
