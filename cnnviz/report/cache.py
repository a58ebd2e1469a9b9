"""The report folder's own bookkeeping: which files cnnviz wrote there and from what inputs.

``DIR/.cnnviz-report.json`` maps a *key* (a hash of everything a picture depends on: model
weights, preprocessed image, layer, stage, colormap, format version) to the files made from it and
the numbers the pages need (channel statistics, picture geometry). A re-run reuses every entry
whose key and files are still there and computes only what is missing; files cnnviz did not write
are never touched, and a folder holding a foreign ``index.html`` is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import OutputError
from ..io import ensure_dir, write_atomic

MANIFEST = ".cnnviz-report.json"
FORMAT = 1  # bump when pictures or the numbers stored for them change meaning


def digest(*parts: Any) -> str:
    """A short stable hash of strings, numbers, lists and arrays."""
    h = hashlib.sha1(str(FORMAT).encode())
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).data)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


class Cache:
    """The manifest of one report folder (loaded at start, saved atomically as work completes)."""

    def __init__(self, folder: str, *, force: bool = False):
        self.folder = ensure_dir(folder)
        self.path = os.path.join(self.folder, MANIFEST)
        self.entries: dict[str, dict[str, Any]] = {}
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
                if data.get("format") == FORMAT and isinstance(data.get("entries"), dict):
                    self.entries = data["entries"]
            except (OSError, ValueError):
                self.entries = {}  # unreadable bookkeeping: rebuild everything, still ours to overwrite
        elif not force and os.path.exists(os.path.join(self.folder, "index.html")):
            raise OutputError(f"{folder!r} already has an index.html that cnnviz did not write; choose an empty or "
                              f"new folder with -o (or add --force to write the report into it anyway)")
        self.used: set[str] = set()

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry for ``key`` if all its files still exist, else None."""
        e = self.entries.get(key)
        if e is None or not all(os.path.isfile(os.path.join(self.folder, p)) for p in e.get("files", [])):
            return None
        self.used.add(key)
        return e

    def put(self, key: str, files: Iterable[str], **data: Any) -> dict[str, Any]:
        e = {"files": list(files), **data}
        self.entries[key] = e
        self.used.add(key)
        return e

    def prune(self) -> int:
        """Delete the files of entries this run did not use (earlier runs' other settings, layers or
        images) and forget them; returns how many files went. Only files cnnviz listed are touched."""
        gone = 0
        for key in [k for k in self.entries if k not in self.used]:
            for rel in self.entries.pop(key).get("files", []):
                path = os.path.join(self.folder, rel)
                if os.path.commonpath([os.path.abspath(path), os.path.abspath(self.folder)]) != os.path.abspath(self.folder):
                    continue  # never outside the folder, whatever the manifest says
                try:
                    os.unlink(path)
                    gone += 1
                except FileNotFoundError:
                    pass
        return gone

    def save(self) -> None:
        body = json.dumps({"format": FORMAT, "entries": self.entries}, separators=(",", ":"), default=_plain)
        write_atomic(self.path, body.encode())


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
