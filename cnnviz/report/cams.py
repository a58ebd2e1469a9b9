"""Class activation maps for the model page: each image's CAM pictures (Grad-CAM of its top-1
class by default), written straight into the report folder and filed under their image. Cached
per image: the key holds every weight (the classifier too). The maps come from the `cam` job,
which the caller hands in as a :class:`CamMaker` (cnnviz.jobs.report does): the site never
calls back into the jobs."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..io import save_png
from ..models import weights_digest
from .cache import Cache, digest
from .site import ReportImage, Site

SavePng = Callable[..., str]  # save(name, image, *, metadata=None, palette=None) -> path relative to the report


class CamMaker(Protocol):
    """Runs the cam job on ``images`` (preprocessed at the report's size; their ``id`` names them)
    with ``methods``, writes every picture with ``save(name, image, metadata=..., palette=...)``
    (which returns its path in the report) and returns the job's records (each with ``image``
    = the image id, ``path``, ``method``, ``class``, ``class_name``, ``probability``)."""

    def __call__(self, images: list[ReportImage], *, methods: tuple[str, ...], save: SavePng) -> list[dict[str, Any]]: ...


def image_cams(site: Site, cache: Cache, out: str, *, make: CamMaker, methods: tuple[str, ...] = ("gradcam",)) -> dict[str, int]:
    """Fill ``site.included`` with each image's CAM pictures, made by ``make`` for the images the
    cache lacks. Returns {'computed': images run now, 'reused': from the cache}."""
    wfp = weights_digest(site.lm.model)
    keys = {im.id: digest("cam", wfp, im.id, list(methods)) for im in site.images}
    todo = [im for im in site.images if cache.get(keys[im.id]) is None]
    if todo:
        run_key = digest("cam-run", wfp, [keys[im.id] for im in todo])

        def save(name: str, image: Any, *, metadata: Any = None, palette: Any = None) -> str:
            rel = f"img/cam-{digest(run_key, name)}.png"  # content-derived: the job's own name is not the report's
            save_png(os.path.join(out, rel), image, metadata=metadata, palette=palette)
            return rel

        records = make(todo, methods=methods, save=save)
        for im in todo:
            recs = [r for r in records if r.get("image") == im.id]
            cache.put(keys[im.id], [r["path"] for r in recs],
                      cams=[{"src": r["path"], "caption": f"{r.get('method', '')}: {r.get('class_name', r.get('class'))} "
                                                         f"(p = {float(r.get('probability', 0)):.3f})"} for r in recs])
    for im in site.images:
        for c in cache.get(keys[im.id])["cams"]:
            site.included.append({"src": c["src"], "name": c["caption"], "layer": None, "image": im.id, "kind": "cam"})
    return {"computed": len(todo), "reused": len(site.images) - len(todo)}


__all__ = ["CamMaker", "SavePng", "image_cams"]
