"""``cnnviz report``: a static HTML explorer of a model, its layers, channels and images.

``build_report(lm, images, output=DIR, ...)`` writes ``DIR/index.html`` (the model page), a page
per layer, a channel page per layer (``channel-07.html#12``), their data files and assets, and
the pictures, all made by the library's renderers. Re-running on the same folder reuses every
picture whose inputs did not change (see cache.py). Works from ``file://`` and any static host.

The site assembles what the jobs produce and never imports cnnviz.jobs: the `cam` and `top`
jobs it shows are handed in (``cam=``, ``examples=``) by cnnviz.jobs.report, which runs them.
"""
from __future__ import annotations

from .build import ReportImage, ReportResult, build_report
from .cams import CamMaker
from .examples import ExampleQuery

__all__ = ["CamMaker", "ExampleQuery", "ReportImage", "ReportResult", "build_report"]
