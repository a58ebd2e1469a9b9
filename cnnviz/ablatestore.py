"""Where `cnnviz ablate` keeps what it measured: the finished blocks of a run (so an interrupted
or sharded run resumes), and the results table beside a `cnnviz top` index (so the report and
later queries read them). numpy and pyarrow only: no torch (the report imports this module).

Results beside an index DIR (``cnnviz ablate ... --index DIR``)::

    DIR/ablate/<layer>--<ablation>.parquet         one row per ablated unit (a channel, or a group)
    DIR/ablate/curves/<layer>--<ablation>.parquet  the removal curves, one row per point
    DIR/ablate/curves/<layer>--<ablation>.png      the curves as drawn by the run
    DIR/ablate/.lock                               held while a run updates a table

``<layer>`` is the ablated layer's name as ``cnnviz ablate`` shows it (``features.12``,
``layer4``, ``features.12.expand3x3:act``), percent-encoded where a file name could not hold it
(``:`` becomes ``%3A``; dots stay). One file per layer and ablation mode keeps an update small
and atomic (written to a temp file, then ``os.replace``); every row also carries its ``layer``,
``ablation``, ``metric`` and ``images`` columns, so all files read as one table::

    duckdb -c "SELECT layer, unit, points FROM 'DIR/ablate/*.parquet' ORDER BY points DESC LIMIT 10"

Each table's Parquet metadata (key ``cnnviz``) holds the run's identity (weights digest, layer,
image set, labels, ablation, preprocessing) and ``index_layers``: the layers of the index whose
channels are this layer's channels (``features.12`` of SqueezeNet is the concatenation of
``features.12.expand1x1`` (channels 0-255) and ``features.12.expand3x3`` (256-511), each
read at the index's stage), so :func:`read_layer_ablation` answers for those names too. A later
run with the same identity adds its units (a unit measured again is replaced); a run with another
identity (other images, labels, weights) replaces the table.

Finished blocks of a run (``-o OUT``)::

    OUT/ablate-parts/<run key>/run.json            what the key stands for (for people)
    OUT/ablate-parts/<run key>/units-00003.npz     the sums of block 3 of the units
    OUT/ablate-parts/<run key>/curves-00000.npz    the sums of block 0 of the curves' points

The run key is a SHA-256 over everything the numbers depend on (model and weights digest,
layer, stage, preprocessing, batch size, device, the images' bytes in order, the labels, the
ablation mode, the units and the block size), so a changed input never reuses a stale block.
Each block file is written atomically after its block finished; the folder is removed when the
run has written its outputs (a ``--shard`` run leaves its blocks for the run that combines them).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from .errors import IndexStoreError

FORMAT = "cnnviz-ablation"
FORMAT_VERSION = 1
TABLE_DIR = "ablate"
PARTS_DIR = "ablate-parts"
_META_KEY = b"cnnviz"


# ---------------------------------------------------------------- the contract the report reads


@dataclass(frozen=True)
class ChannelAblation:
    """One channel's removal: ``points`` the drop in accuracy (or agreement with the intact
    model) in percentage points, positive = the model got worse; ``prob_drop`` the drop in the
    mean probability of the label (points); ``logit_drop`` in the mean logit of the label;
    ``hurts`` the class its removal hurts most and ``hurts_points`` that class's accuracy drop
    (points), both None without ``--per-class``; ``metric`` 'accuracy' or 'agreement';
    ``images`` how many images were scored."""

    channel: int
    points: float
    prob_drop: float
    logit_drop: float
    hurts: str | None
    hurts_points: float | None
    metric: str
    images: int


@dataclass(frozen=True)
class LayerAblation:
    """What is known about removing channels of ``layer`` (as asked): its channels by index,
    ``ablation`` 'zero' or 'mean', and ``curves_png`` the absolute path of the removal curves
    (None when the run made none)."""

    layer: str
    ablation: str
    channels: dict[int, ChannelAblation]
    curves_png: str | None


def read_layer_ablation(*, index_dir: str, layer: str) -> LayerAblation | None:
    """The ablation results stored beside the index ``index_dir`` for ``layer``: a layer name
    as `cnnviz ablate` was given it, or a layer of the index whose channels it covers (the
    index's conv layer names). None when there are none (or the folder is not readable); the
    newest table wins when several runs (zero and mean) match."""
    folder = os.path.join(os.fspath(index_dir), TABLE_DIR)
    found: list[tuple[int, str, dict[str, Any], int, int]] = []
    for path in _tables(folder):
        meta = _read_meta(path)
        if meta is None:
            continue
        if meta.get("layer") == layer:
            found.append((os.stat(path).st_mtime_ns, path, meta, 0, int(meta.get("channels", 0)) or 1 << 30))
        elif layer in (meta.get("index_layers") or {}):
            offset, count = meta["index_layers"][layer]
            found.append((os.stat(path).st_mtime_ns, path, meta, int(offset), int(count)))
    if not found:
        return None
    _, path, meta, offset, count = max(found, key=lambda f: (f[0], f[1]))
    try:
        rows = _pq().read_table(path).to_pylist()
    except Exception:  # noqa: BLE001 - a damaged table reads as "no results", never breaks a report
        return None
    channels: dict[int, ChannelAblation] = {}
    for r in rows:
        chans = r["channels"] or []
        if len(chans) != 1 or not offset <= chans[0] < offset + count:
            continue
        c = int(chans[0]) - offset
        channels[c] = ChannelAblation(channel=c, points=float(r["points"]), prob_drop=float(r["prob_drop"]),
                                      logit_drop=float(r["logit_drop"]), hurts=r["hurts"],
                                      hurts_points=None if r["hurts_points"] is None else float(r["hurts_points"]),
                                      metric=str(r["metric"]), images=int(r["images"]))
    curves = meta.get("curves_png")
    png = os.path.abspath(os.path.join(folder, curves)) if curves and os.path.isfile(os.path.join(folder, curves)) else None
    return LayerAblation(layer=layer, ablation=str(meta.get("ablation")), channels=dict(sorted(channels.items())), curves_png=png)


# ---------------------------------------------------------------- writing the table


def table_stem(layer: str, ablation: str) -> str:
    """File name stem of a layer's table: the name percent-encoded where needed, dots kept."""
    return f"{quote(layer, safe='.-_')}--{ablation}"


def layer_of_stem(stem: str) -> str:
    return unquote(stem.rsplit("--", 1)[0])


def _tables(folder: str) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.endswith(".parquet") and not n.startswith(".")]


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:  # pragma: no cover - a declared dependency
        raise IndexStoreError("the ablation table needs pyarrow: pip install pyarrow") from None
    return pyarrow


def _pq() -> Any:
    return _pa().parquet


def _read_meta(path: str) -> dict[str, Any] | None:
    try:
        meta = _pq().read_schema(path).metadata or {}
        d = json.loads(meta[_META_KEY])
    except Exception:  # noqa: BLE001 - not one of ours, or damaged: skipped
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None


COLUMNS = ("layer", "ablation", "unit", "channels", "points", "prob_drop", "logit_drop", "accuracy", "probability",
           "logit", "hurts", "hurts_class", "hurts_points", "metric", "images")


def _schema(pa: Any) -> Any:
    f64 = pa.float64()
    return pa.schema([("layer", pa.string()), ("ablation", pa.string()), ("unit", pa.string()),
                      ("channels", pa.list_(pa.int32())), ("points", f64), ("prob_drop", f64), ("logit_drop", f64),
                      ("accuracy", f64), ("probability", f64), ("logit", f64), ("hurts", pa.string()),
                      ("hurts_class", pa.int32()), ("hurts_points", f64), ("metric", pa.string()), ("images", pa.int32())])


def _table_bytes(rows: Sequence[Mapping[str, Any]], schema: Any, meta: Mapping[str, Any]) -> bytes:
    pa = _pa()
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buf = io.BytesIO()
    pa.parquet.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_layer_ablation(*, index_dir: str, layer: str, ablation: str, identity: str, about: Mapping[str, Any],
                         rows: Sequence[Mapping[str, Any]], channels: int, index_layers: Mapping[str, tuple[int, int]],
                         curves: Sequence[tuple[str, int, float, float]] | None = None, curve_units: int = 0,
                         curves_png: bytes | None = None) -> str:
    """Add a run's units (``rows``: dicts with the COLUMNS but layer/ablation) to the table of
    ``layer`` and ``ablation`` beside the index ``index_dir``; returns the table's path.
    ``identity``: what the numbers depend on except which units were measured (a table of
    another identity is replaced, one of the same gains the units); ``about``: shown in the
    metadata; ``channels``: the layer's channel count; ``index_layers``: {index layer name:
    (first channel here, channels)}. ``curves`` (order, removed, accuracy, probability) over
    ``curve_units`` units and their picture replace the stored ones unless those cover more."""
    from .io import write_atomic

    folder = os.path.join(os.fspath(index_dir), TABLE_DIR)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise IndexStoreError(f"cannot create {folder!r}: {exc.strerror or exc}") from None
    stem = table_stem(layer, ablation)
    path = os.path.join(folder, stem + ".parquet")
    pa = _pa()
    with _Lock(os.path.join(folder, ".lock")):
        old = _read_meta(path) if os.path.exists(path) else None
        keep: dict[str, dict[str, Any]] = {}
        old_curves = 0
        if old is not None and old.get("identity") == identity:
            keep = {r["unit"]: r for r in pa.parquet.read_table(path).to_pylist()}
            old_curves = int(old.get("curve_units", 0)) if old.get("curves_png") else 0
        for r in rows:
            keep[str(r["unit"])] = {**{k: r.get(k) for k in COLUMNS}, "layer": layer, "ablation": ablation}
        new_curves = curves is not None and curve_units >= old_curves
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "layer": layer, "ablation": ablation,
                "identity": identity, "channels": channels, "index_layers": {k: list(v) for k, v in index_layers.items()},
                "curve_units": curve_units if new_curves else old_curves, **dict(about),
                "curves_png": f"curves/{stem}.png" if (new_curves and curves_png) or (not new_curves and old_curves) else None}
        if new_curves and curves is not None:
            crows = [{"layer": layer, "ablation": ablation, "order": o, "removed": int(k), "accuracy": float(a),
                      "probability": float(p)} for o, k, a, p in curves]
            cschema = pa.schema([("layer", pa.string()), ("ablation", pa.string()), ("order", pa.string()),
                                 ("removed", pa.int32()), ("accuracy", pa.float64()), ("probability", pa.float64())])
            os.makedirs(os.path.join(folder, "curves"), exist_ok=True)
            write_atomic(os.path.join(folder, "curves", stem + ".parquet"), _table_bytes(crows, cschema, meta))
            if curves_png:
                write_atomic(os.path.join(folder, "curves", stem + ".png"), curves_png)
        ordered = sorted(keep.values(), key=lambda r: (-(r["prob_drop"] or 0.0), [int(c) for c in r["channels"]]))
        write_atomic(path, _table_bytes(ordered, _schema(pa), meta))
    return path


class _Lock:
    """An exclusive POSIX record lock on ``path`` for a table's read-modify-write (waits)."""

    def __init__(self, path: str):
        self.path, self.fd = path, -1

    def __enter__(self) -> "_Lock":
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


# ---------------------------------------------------------------- finished blocks of a run


def digest(value: Any) -> str:
    """SHA-256 (hex) of a JSON-able value, keys sorted."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def files_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the bytes of ``paths`` in order (an unreadable file counts as such): the
    identity of an image set wherever its files live (another machine, another folder)."""
    h = hashlib.sha256()
    for p in paths:
        f = hashlib.sha256()
        try:
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    f.update(chunk)
            h.update(f.hexdigest().encode())
        except OSError:
            h.update(b"unreadable")
        h.update(b"\n")
    return h.hexdigest()


class Parts:
    """The finished blocks of one run (key ``key``) under ``folder``/ablate-parts/."""

    def __init__(self, folder: str, key: str, *, about: Mapping[str, Any]):
        self.dir = os.path.join(os.fspath(folder), PARTS_DIR, key[:24])
        self.key, self.about = key, dict(about)

    def open(self) -> "Parts":
        os.makedirs(self.dir, exist_ok=True)
        for n in os.listdir(self.dir):  # temp files of a killed run
            if n.startswith(".cnnviz-"):
                try:
                    os.remove(os.path.join(self.dir, n))
                except OSError:
                    pass
        run = os.path.join(self.dir, "run.json")
        if not os.path.exists(run):
            _write_durable(run, (json.dumps({"key": self.key, **self.about}, indent=1, sort_keys=True) + "\n").encode())
        return self

    def _path(self, kind: str, block: int) -> str:
        return os.path.join(self.dir, f"{kind}-{block:05d}.npz")

    def load(self, kind: str, block: int, *, rows: int) -> dict[str, np.ndarray] | None:
        """The arrays of a finished block of ``rows`` ablations, None when it is not there (or
        does not hold ``rows`` rows)."""
        try:
            with np.load(self._path(kind, block)) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            return None
        if any(len(v) != rows for v in arrays.values()):
            return None
        return arrays

    def save(self, kind: str, block: int, arrays: Mapping[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **dict(arrays))
        _write_durable(self._path(kind, block), buf.getvalue())

    def count(self, kind: str) -> int:
        try:
            return sum(1 for n in os.listdir(self.dir) if n.startswith(kind + "-") and n.endswith(".npz"))
        except OSError:
            return 0

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        parent = os.path.dirname(self.dir)
        try:
            os.rmdir(parent)  # only when no other run's blocks are there
        except OSError:
            pass


def _write_durable(path: str, data: bytes) -> None:
    """Atomic and durable: a temp file in the same folder, flushed to disk, then renamed over
    ``path`` (and the folder synced), so a crash leaves either the old file or the whole new one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".cnnviz-{os.getpid()}-{os.path.basename(path)}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


__all__ = ["ChannelAblation", "LayerAblation", "Parts", "digest", "files_digest", "read_layer_ablation", "table_stem",
           "write_layer_ablation"]
