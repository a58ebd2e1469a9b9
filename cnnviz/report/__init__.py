"""``cnnviz report``: a static HTML explorer of a model, its layers, channels and images.

``build_report(lm, images, output=DIR, ...)`` writes ``DIR/index.html`` (the model page), a page
per layer, a channel page per layer (``channel-07.html#12``), their data files and assets, and
the pictures, all made by the library's renderers. Re-running on the same folder reuses every
picture whose inputs did not change (see cache.py). Works from ``file://`` and any static host.
"""
from __future__ import annotations

from .build import MaximizeRequest, ReportImage, ReportResult, build_report

__all__ = ["MaximizeRequest", "ReportImage", "ReportResult", "build_report"]
