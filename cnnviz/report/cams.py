"""Class activation maps for the model page: the `cam` job (Grad-CAM of each image's top-1 class
by default) run on the report's images, its pictures written straight into the report folder and
filed under their image. Cached per image: the key holds every weight (the classifier too)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..io import save_png
from ..jobs.cam import CamRequest, run_cam
from ..models import weights_digest
from .cache import Cache, digest
from .site import ReportImage, Site


@dataclass
class _CamImage:
    """What the cam job reads of an input (its duck-typed InputImage)."""

    source: str
    label: str
    x: np.ndarray
    display: np.ndarray


class _Inputs:
    """The cam job's ImageInputs over images already preprocessed by the report (at the report's
    size: no --size/--crop of their own, so no size tags in the job's file names)."""

    size = None
    crop = False

    def __init__(self, images: list[ReportImage]):
        self.images = images

    def check(self, **_: Any) -> list[str]:
        return [im.id for im in self.images]

    def read(self, lm: Any) -> Any:
        return iter([_CamImage(im.id, im.id, im.x, im.display) for im in self.images])


class _Sink:
    """The cam job's Output: PNGs into the report's img/ folder under content-derived names."""

    def __init__(self, out: str, key: str):
        self.out, self.key = out, key
        self.records: list[dict[str, Any]] = []
        self.written = 0

    def prepare(self, files: int | None, *, npy: bool = False, message: str | None = None) -> None:
        pass

    def png(self, name: str, image: Any, *, metadata: Any = None, palette: Any = None) -> str:
        rel = f"img/cam-{digest(self.key, name)}.png"
        save_png(os.path.join(self.out, rel), image, metadata=metadata, palette=palette)
        return rel

    def npy(self, name: str, array: np.ndarray) -> str:
        raise UsageError("the report keeps no .npy files")

    def report(self, record: dict[str, Any]) -> None:
        self.written += 1
        self.records.append(record)


def image_cams(site: Site, cache: Cache, out: str, *, model: Any, methods: tuple[str, ...] = ("gradcam",)) -> dict[str, int]:
    """Fill ``site.included`` with each image's CAM pictures (``model``: the ModelSpec or source the
    cam job resolves layers on). Returns {'computed': images run now, 'reused': from the cache}."""
    wfp = weights_digest(site.lm.model)
    keys = {im.id: digest("cam", wfp, im.id, list(methods)) for im in site.images}
    todo = [im for im in site.images if cache.get(keys[im.id]) is None]
    if todo:
        sink = _Sink(out, digest("cam-run", wfp, [keys[im.id] for im in todo]))
        run_cam(CamRequest(inputs=_Inputs(todo), model=model, methods=methods), output=sink, model=site.lm)
        for im in todo:
            recs = [r for r in sink.records if r.get("image") == im.id]
            cache.put(keys[im.id], [r["path"] for r in recs],
                      cams=[{"src": r["path"], "caption": f"{r.get('method', '')}: {r.get('class_name', r.get('class'))} "
                                                         f"(p = {float(r.get('probability', 0)):.3f})"} for r in recs])
    for im in site.images:
        for c in cache.get(keys[im.id])["cams"]:
            site.included.append({"src": c["src"], "name": c["caption"], "layer": None, "image": im.id, "kind": "cam"})
    return {"computed": len(todo), "reused": len(site.images) - len(todo)}
