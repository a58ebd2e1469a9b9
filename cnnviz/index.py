"""The activation index of `cnnviz top --index DIR`: per image and channel of each scanned layer,
the max, the mean and the peak unit, with the provenance that decides those numbers.

Why Parquet (pyarrow) queried with DuckDB: the questions are column scans over many images
("the 25 best images of channel 7 by mean", "where does this image rank") that Parquet answers
by reading one column chunk per file (row-group statistics on (layer, channel) skip the rest),
DuckDB runs them as SQL with window functions over any number of part files in parallel, and
both are well-kept, pip-installable and read by every data tool (pandas, polars, Spark) if a user
wants to go further. SQLite would need a row per image and channel with B-tree overhead and is
single-writer; HDF5/zarr arrays have no query engine; LanceDB adds little for this access
pattern.

Layout of DIR::

    index.json                 provenance (model, weights SHA-256, preprocessing, stage, layers,
                               cnnviz version), written once when the index is created
    parts/part-<id>/acts.parquet    rows (layer, channel, image, max, mean, y, x), sorted by
                                    (layer, channel); row groups of a few channels each
    parts/part-<id>/images.parquet  rows (image, path, bytes, mtime_ns, ok, error)
    parts/.tmp-<id>/           a part being written (ignored; removed by the next writer)
    .lock                      locked (fcntl record lock) by the process scanning into DIR

A part is written into a temporary folder and renamed into place (a rename is atomic), so a
reader sees whole parts only: an interrupted or killed scan loses at most the part in flight
(at most PART_IMAGES images or PART_SECONDS of scanning) and never leaves a half-counted image.
The next scan skips every image of every committed part.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .errors import IndexStoreError, UsageError
from .io import write_atomic
from .scan import Example, LayerStats, image_id

FORMAT = "cnnviz-activation-index"
FORMAT_VERSION = 1
PROVENANCE = "index.json"
CHANNELS_PER_ROW_GROUP = 16
# A part (the unit of resumption) is committed at PART_IMAGES images or PART_SECONDS after the
# last commit, whichever comes first: a kill -9 loses at most that much work.
PART_IMAGES = 512
PART_SECONDS = 60.0
# What must match for two scans to share an index (the rest, e.g. cnnviz version, is informative).
_IDENTITY = ("model", "weights_sha256", "preprocess", "stage", "layers")


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:  # pragma: no cover - a declared dependency
        raise IndexStoreError("the index needs pyarrow: pip install pyarrow") from None
    return pyarrow


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:  # pragma: no cover - a declared dependency
        raise IndexStoreError("index queries need duckdb: pip install duckdb") from None
    return duckdb


def make_provenance(*, model: str, weights: str, weights_sha256: str, preprocess: Mapping[str, Any], stage: str,
                    layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The index.json of a new index. ``layers``: [{index, name, alias, channels}]."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "cnnviz": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model, "weights": weights, "weights_sha256": weights_sha256,
        "preprocess": dict(preprocess), "stage": stage,
        "layers": [{"index": int(d["index"]), "name": str(d["name"]), "alias": d.get("alias"), "channels": int(d["channels"])}
                   for d in layers],
    }


def differences(have: Mapping[str, Any], want: Mapping[str, Any], *, here: str = "in the index",
                 there: str = "now") -> list[str]:
    """What differs between two provenances, one phrase per identity field, naming only the parts
    that really differ ('stage (conv in the index, act now)'). ``here``/``there`` say where each
    value is from."""
    out = []

    def pair(a: Any, b: Any) -> str:
        return f"{_show(a)} {here}, {_show(b)} {there}"

    for key in _IDENTITY:
        a, b = have.get(key), want.get(key)
        if _same(a, b):
            continue
        if key == "weights_sha256":
            wa, wb = have.get("weights"), want.get("weights")
            if wa == wb:
                out.append(f"weights (both {wa}, but other values: sha256 {pair(str(a)[:12], str(b)[:12])})")
            else:
                out.append(f"weights ({wa} sha256 {str(a)[:12]} {here}, {wb} sha256 {str(b)[:12]} {there})")
        elif key == "preprocess" and isinstance(a, Mapping) and isinstance(b, Mapping):
            fields = [f"{f} {pair(a.get(f), b.get(f))}" for f in sorted({*a, *b}) if not _same(a.get(f), b.get(f))]
            out.append(f"preprocessing ({'; '.join(fields)})")
        elif key == "layers":
            out += _layer_differences(list(a or []), list(b or []), pair=pair, here=here, there=there)
        else:
            out.append(f"{key} ({pair(a, b)})")
    return out


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


_LAYER_FIELDS = {"index": "conv index", "name": "name", "alias": "alias", "channels": "channels"}


def _layer_differences(a: list[Mapping[str, Any]], b: list[Mapping[str, Any]], *, pair: Any, here: str,
                       there: str) -> list[str]:
    """Layer by layer, the fields that differ under the name both share ('layer block4_conv1
    (conv index 7 in the index, 8 now)'), when the selections pair up; else the two selections."""
    if len(a) == len(b):
        out = []
        for x, y in zip(a, b):
            fields = [f for f in _LAYER_FIELDS if not _same(x.get(f), y.get(f))]
            common = next((str(x[f]) for f in ("alias", "name", "index") if f not in fields and x.get(f) is not None), None)
            if common is None:  # another layer altogether
                break
            if fields:
                out.append(f"layer {common} ({'; '.join(f'{_LAYER_FIELDS[f]} {pair(x.get(f), y.get(f))}' for f in fields)})")
        else:
            return out
    return [f"layers ({describe_layers(a)} {here}; {describe_layers(b)} {there})"]


def describe_layers(layers: Sequence[Mapping[str, Any]]) -> str:
    """'one layer: 4 (block3_conv1)', '2 layers: 4 (block3_conv1) and 7 (block4_conv1)': each
    conv layer by its index and its alias (else its name)."""
    items = [f"{d.get('index')} ({d.get('alias') or d.get('name')})" for d in layers]
    if not items:
        return "no layer"
    if len(items) == 1:
        return f"one layer: {items[0]}"
    return f"{len(items)} layers: {', '.join(items[:-1])} and {items[-1]}"


@dataclass
class IndexedImage:
    path: str
    bytes: int
    mtime_ns: int
    ok: bool


class ActivationIndex:
    """An index folder: its provenance, committed parts, writers and queries."""

    def __init__(self, root: str | os.PathLike[str], provenance: dict[str, Any]):
        self.root = os.fspath(root)
        self.provenance = provenance
        self._lock_fd: int | None = None
        self._lock_path = ""

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> "ActivationIndex":
        """An existing index. Raises IndexStoreError when ``root`` is not one."""
        root = os.fspath(root)
        path = os.path.join(root, PROVENANCE)
        if not os.path.isdir(root):
            raise IndexStoreError(f"index {root!r} does not exist; build it with 'cnnviz top IMAGES... --index {root}'")
        try:
            with open(path, encoding="utf-8") as f:
                prov = json.load(f)
        except FileNotFoundError:
            raise IndexStoreError(f"{root!r} is not a cnnviz index (no {PROVENANCE})") from None
        except (OSError, ValueError) as exc:
            raise IndexStoreError(f"cannot read {path!r}: {exc}") from None
        if not isinstance(prov, dict) or prov.get("format") != FORMAT:
            raise IndexStoreError(f"{root!r} is not a cnnviz index ({PROVENANCE} has another format)")
        if prov.get("format_version") != FORMAT_VERSION:
            raise IndexStoreError(f"index {root!r} has format version {prov.get('format_version')}; this cnnviz reads {FORMAT_VERSION}")
        return cls(root, prov)

    @classmethod
    def create_or_open(cls, root: str | os.PathLike[str], provenance: dict[str, Any]) -> "ActivationIndex":
        """Open ``root`` if it holds an index with the same identity (model, weights hash,
        preprocessing, stage, layers), create it if it is absent or an empty folder; refuse
        anything else with IndexStoreError (an index is never mixed)."""
        root = os.fspath(root)
        if os.path.exists(os.path.join(root, PROVENANCE)):
            idx = cls.open(root)
            diff = differences(idx.provenance, provenance)
            if diff:
                raise IndexStoreError(f"index {root!r} was built with other settings: {'; '.join(diff)}; "
                                      f"use another --index folder")
            return idx
        if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
            raise IndexStoreError(f"{root!r} exists and is not a cnnviz index; give a new or empty folder to --index")
        try:
            os.makedirs(os.path.join(root, "parts"), exist_ok=True)
        except OSError as exc:
            raise IndexStoreError(f"cannot create index folder {root!r}: {exc.strerror or exc}") from None
        write_atomic(os.path.join(root, PROVENANCE), (json.dumps(provenance, indent=1) + "\n").encode())
        return cls(root, provenance)

    # ------------------------------------------------------------ layers

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.provenance.get("layers", []))

    def layer(self, index: int) -> dict[str, Any]:
        for d in self.layers:
            if d["index"] == index:
                return d
        raise UsageError(f"layer {index} is not in index {self.root!r}; it holds {describe_layers(self.layers)}")

    # ------------------------------------------------------------ lock and parts

    def lock(self) -> None:
        """Take the writer lock (one scan per index at a time). Raises IndexStoreError if busy.

        A POSIX record lock (fcntl F_SETLK) on ``.lock``, not flock: a record lock belongs to
        this process alone. DataLoader workers are forked and inherit the open file; with flock
        they would share the lock and keep it for seconds after a ``kill -9`` of the scan, while
        a record lock is never inherited and the kernel drops it the moment its owner dies. It
        does not exclude a second writer in the same process, hence the process-wide set."""
        import fcntl

        path = os.path.realpath(os.path.join(self.root, ".lock"))
        with _HELD_GUARD:
            if path in _HELD:
                raise IndexStoreError(f"index {self.root!r} is being written by another scan in this process; "
                                      f"wait for it to finish")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _lock_owner(fd)
                os.close(fd)
                raise IndexStoreError(f"index {self.root!r} is being written by another scan"
                                      + (f" (process {owner})" if owner else "") + "; wait for it to finish") from None
            _HELD.add(path)
        self._lock_fd, self._lock_path = fd, path
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message a second writer gets
        except OSError:
            pass
        self.clean()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with _HELD_GUARD:
                os.close(self._lock_fd)  # releases the record lock
                _HELD.discard(self._lock_path)
            self._lock_fd = None

    def __enter__(self) -> "ActivationIndex":
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    def clean(self) -> int:
        """Remove parts left half-written by an interrupted scan; returns how many."""
        parts = os.path.join(self.root, "parts")
        n = 0
        for name in os.listdir(parts) if os.path.isdir(parts) else []:
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(parts, name), ignore_errors=True)
                n += 1
        return n

    def part_dirs(self) -> list[str]:
        parts = os.path.join(self.root, "parts")
        if not os.path.isdir(parts):
            return []
        return [os.path.join(parts, n) for n in sorted(os.listdir(parts)) if n.startswith("part-")]

    def _files(self, kind: str) -> list[str]:
        return [os.path.join(d, f"{kind}.parquet") for d in self.part_dirs()]

    def writer(self, *, part_images: int = PART_IMAGES, part_seconds: float = PART_SECONDS) -> "PartWriter":
        return PartWriter(self.root, layer_ids=[int(d["index"]) for d in self.layers],
                          layer_names=[str(d["name"]) for d in self.layers], part_images=part_images,
                          part_seconds=part_seconds)

    # ------------------------------------------------------------ what is indexed

    def images(self) -> dict[int, IndexedImage]:
        """{image id: IndexedImage} over committed parts; an image indexed ok wins over an
        earlier failed attempt."""
        pa = _pa()
        out: dict[int, IndexedImage] = {}
        for f in self._files("images"):
            t = pa.parquet.read_table(f, columns=["image", "path", "bytes", "mtime_ns", "ok"]).to_pydict()
            for i, p, b, m, ok in zip(t["image"], t["path"], t["bytes"], t["mtime_ns"], t["ok"]):
                if i not in out or ok:
                    out[i] = IndexedImage(p, b, m, ok)
        return out

    def count(self) -> int:
        """Images with activations in the index."""
        files = self._files("images")
        if not files:
            return 0
        return int(_duckdb().connect().execute(
            "SELECT count(DISTINCT image) FROM read_parquet($files) WHERE ok", {"files": files}).fetchone()[0])

    def lookup(self, ids: Iterable[int]) -> dict[int, IndexedImage]:
        """{image id: IndexedImage} for ``ids`` (those indexed), without reading every path."""
        want = sorted({int(i) for i in ids})
        files = self._files("images")
        if not want or not files:
            return {}
        rows = _duckdb().connect().execute(
            """SELECT image, path, bytes, mtime_ns, ok FROM read_parquet($files)
               WHERE image BETWEEN $lo AND $hi AND list_contains($ids, image) ORDER BY ok""",
            {"files": files, "lo": want[0], "hi": want[-1], "ids": want}).fetchall()
        return {int(i): IndexedImage(p, b, m, ok) for i, p, b, m, ok in rows}  # ok rows last: they win

    # ------------------------------------------------------------ queries

    def _acts(self) -> list[str]:
        files = self._files("acts")
        if not files:
            raise IndexStoreError(f"index {self.root!r} holds no scanned images yet")
        return files

    def top(self, *, layer: int, channels: Sequence[int], k: int, score: str = "max",
            bottom: bool = False) -> dict[int, list[Example]]:
        """{channel: the k best Examples (highest ``score`` first, or lowest with ``bottom``;
        ties: lower image id first)} for the index's ``layer`` (conv layer index)."""
        _check_score(score)
        self.layer(layer)
        chans = sorted({int(c) for c in channels})
        if not chans:
            return {}
        con = _duckdb().connect()
        order = f'isnan("{score}"), "{score}" {"ASC" if bottom else "DESC"}, image ASC'
        rows = con.execute(
            f"""SELECT channel, image, "max", "mean", y, x FROM read_parquet($files)
                WHERE layer = $layer AND channel BETWEEN $lo AND $hi AND list_contains($chans, channel)
                QUALIFY row_number() OVER (PARTITION BY channel ORDER BY {order}) <= $k
                ORDER BY channel, {order}""",
            {"files": self._acts(), "layer": layer, "lo": chans[0], "hi": chans[-1], "chans": chans, "k": int(k)},
        ).fetchall()
        out: dict[int, list[Example]] = {int(c): [] for c in channels}
        for c, img, mx, mean, y, x in rows:
            out[int(c)].append(Example(int(img), float(mx if score == "max" else mean), float(mx), float(mean), (int(y), int(x))))
        return out

    def image_channels(self, path: str, *, layer: int, k: int, score: str = "max",
                       channels: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The ``k`` channels of ``layer`` that the indexed image ``path`` excites most (by
        ``score``), each {channel, score, max, mean, unit, rank, of}: ``rank`` 1 = this image is
        the channel's best among the ``of`` images of the index."""
        _check_score(score)
        self.layer(layer)
        img = image_id(path)
        known = self.lookup([img]).get(img)
        if known is None or not known.ok:
            raise IndexStoreError(f"image {path!r} is not in index {self.root!r}"
                                  + (" (it could not be read when scanned)" if known else "; scan it first (add it to the scan's IMAGES)"))
        chans = None if channels is None else sorted({int(c) for c in channels})
        con = _duckdb().connect()
        files, s = self._acts(), f'"{score}"'
        cfilter = "AND list_contains($chans, channel)" if chans is not None else ""
        params: dict[str, Any] = {"files": files, "layer": layer, "img": img, "k": int(k)}
        if chans is not None:
            params["chans"] = chans
        rows = con.execute(
            f"""WITH me AS (
                    SELECT channel, "max", "mean", y, x, {s} AS s FROM read_parquet($files)
                    WHERE layer = $layer AND image = $img {cfilter}
                    ORDER BY isnan(s), s DESC, channel LIMIT $k),
                others AS (
                    SELECT a.channel, a.image, a.{s} AS s FROM read_parquet($files) a
                    WHERE a.layer = $layer AND a.channel IN (SELECT channel FROM me))
                SELECT me.channel, me.s, me."max", me."mean", me.y, me.x,
                       1 + count(*) FILTER (WHERE (NOT isnan(o.s) AND isnan(me.s)) OR o.s > me.s
                                            OR (o.s = me.s AND o.image < $img)),
                       count(*)
                FROM me JOIN others o ON o.channel = me.channel
                GROUP BY me.channel, me.s, me."max", me."mean", me.y, me.x
                ORDER BY isnan(me.s), me.s DESC, me.channel""",
            params,
        ).fetchall()
        return [{"channel": int(c), "score": float(v), "max": float(mx), "mean": float(mean), "unit": [int(y), int(x)],
                 "rank": int(rank), "of": int(n)} for c, v, mx, mean, y, x, rank, n in rows]

    def rank_scores(self, layer: int, scores: Mapping[int, float], *, score: str = "max") -> dict[int, tuple[int, int]]:
        """For an image *not* in the index with ``scores`` {channel: its score} at ``layer``:
        {channel: (rank, of)} as if it were added: ``rank`` 1 + the indexed images that score
        higher (ties go to the indexed images; a NaN score ranks after every number), ``of`` the
        indexed images plus this one."""
        _check_score(score)
        self.layer(layer)
        if not scores:
            return {}
        chans = [int(c) for c in scores]
        vals = [float(scores[c]) for c in scores]
        rows = _duckdb().connect().execute(
            f"""WITH me AS (SELECT unnest($chans) AS channel, unnest($vals) AS s)
                SELECT me.channel,
                       1 + count(o.image) FILTER (WHERE (isnan(me.s) AND NOT isnan(o.s)) OR o.s >= me.s),
                       1 + count(o.image)
                FROM me LEFT JOIN (SELECT channel, image, "{score}" AS s FROM read_parquet($files)
                                   WHERE layer = $layer AND list_contains($chans, channel)) o
                     ON o.channel = me.channel
                GROUP BY me.channel""",
            {"chans": chans, "vals": vals, "files": self._acts(), "layer": layer},
        ).fetchall()
        return {int(c): (int(rank), int(n)) for c, rank, n in rows}

    def paths(self, ids: Iterable[int]) -> dict[int, str]:
        """{image id: path} for ``ids`` (as scanned)."""
        return {i: im.path for i, im in self.lookup(ids).items()}


_HELD: set[str] = set()  # lock files this process holds (record locks do not exclude their own process)
_HELD_GUARD = threading.Lock()


def _lock_owner(fd: int) -> int | None:
    """The pid a writer recorded in the lock file (None if unreadable)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    except (OSError, ValueError):
        return None


def _check_score(score: str) -> None:
    if score not in ("max", "mean"):
        raise UsageError(f"unknown score {score!r}; choose max or mean")


# ---------------------------------------------------------------- writing parts


class PartWriter:
    """Buffers scanned batches and commits them as whole parts into the index folder ``root`` (the
    local scan through ``ActivationIndex.writer``, each Ray actor directly: the one way a part is
    put together): a part when ``part_images`` images are buffered, or when a batch arrives
    ``part_seconds`` or more after the last commit (0: by count only), so a ``kill -9`` loses at
    most about ``part_seconds`` of scanning however slow the images are.

    ``add`` takes a batch (every layer of the index), ``skip`` an unreadable file; ``flush``
    commits what is buffered (call it on Ctrl-C too: only complete batches are ever buffered)."""

    def __init__(self, root: str, *, layer_ids: Sequence[int], layer_names: Sequence[str], part_images: int = PART_IMAGES,
                 part_seconds: float = PART_SECONDS):
        self.root = root
        self.part_images = max(1, int(part_images))
        self.part_seconds = max(0.0, float(part_seconds))
        self._since = time.monotonic()
        self.layer_ids = [int(i) for i in layer_ids]
        self.layer_names = [str(n) for n in layer_names]
        self._ids: list[np.ndarray] = []
        self._stats: list[dict[str, LayerStats]] = []
        self._images: list[tuple[int, str, int, int, bool, str | None]] = []
        self._pending = 0
        self.parts = 0

    def add(self, paths: Sequence[str], stats: Mapping[str, LayerStats]) -> None:
        missing = [n for n in self.layer_names if n not in stats]
        if missing:
            raise ValueError(f"batch lacks layers {missing}")
        ids = np.asarray([image_id(p) for p in paths], np.int64)
        self._ids.append(ids)
        self._stats.append({n: stats[n] for n in self.layer_names})
        self._images += [(int(i), p, *_file_facts(p), True, None) for i, p in zip(ids, paths)]
        self._pending += len(paths)
        if self._pending >= self.part_images or (self.part_seconds and time.monotonic() - self._since >= self.part_seconds):
            self.flush()

    def skip(self, path: str, message: str) -> None:
        self._images.append((image_id(path), path, *_file_facts(path), False, message))

    def flush(self) -> str | None:
        """Commit the buffer as one part (atomic rename). Returns the part folder, or None."""
        if not self._images:
            return None
        ids, stats, images = self._ids, self._stats, self._images
        self._ids, self._stats, self._images, self._pending = [], [], [], 0  # never committed twice
        self._since = time.monotonic()
        path = write_part(self.root, layer_ids=self.layer_ids, layer_names=self.layer_names,
                          ids=ids, stats=stats, images=images)
        self.parts += 1
        return path


def _file_facts(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        return -1, -1


def write_part(root: str, *, layer_ids: Sequence[int], layer_names: Sequence[str], ids: Sequence[np.ndarray],
               stats: Sequence[Mapping[str, LayerStats]], images: Sequence[tuple[int, str, int, int, bool, str | None]]) -> str:
    """Write one part (acts + images) into ``root``/parts atomically; returns its folder."""
    pa = _pa()
    pq = pa.parquet
    parts = os.path.join(root, "parts")
    tmp = os.path.join(parts, f".tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        n = len(all_ids)
        if n:
            cols: dict[str, list[np.ndarray]] = {k: [] for k in ("layer", "channel", "image", "max", "mean", "y", "x")}
            per_group = 0
            for lid, name in zip(layer_ids, layer_names):
                mx = np.concatenate([s[name].max for s in stats])  # (n, C)
                mean = np.concatenate([s[name].mean for s in stats])
                unit = np.concatenate([s[name].unit for s in stats])
                c = mx.shape[1]
                # channel-major: every channel's n rows together, so a query for one channel
                # touches one row group of each part
                cols["layer"].append(np.full(n * c, lid, np.int32))
                cols["channel"].append(np.repeat(np.arange(c, dtype=np.int32), n))
                cols["image"].append(np.tile(all_ids, c))
                cols["max"].append(mx.T.reshape(-1).astype(np.float32))
                cols["mean"].append(mean.T.reshape(-1).astype(np.float32))
                cols["y"].append(unit[..., 0].T.reshape(-1).astype(np.int32))
                cols["x"].append(unit[..., 1].T.reshape(-1).astype(np.int32))
                per_group = n * CHANNELS_PER_ROW_GROUP
            table = pa.table({k: np.concatenate(v) for k, v in cols.items()})
            pq.write_table(table, os.path.join(tmp, "acts.parquet"), row_group_size=max(per_group, 1024),
                           compression="zstd", write_statistics=True)
        else:
            _empty_acts(pa, os.path.join(tmp, "acts.parquet"))
        im = list(zip(*images)) if images else [[], [], [], [], [], []]
        pq.write_table(pa.table({
            "image": pa.array(im[0], pa.int64()), "path": pa.array(im[1], pa.string()),
            "bytes": pa.array(im[2], pa.int64()), "mtime_ns": pa.array(im[3], pa.int64()),
            "ok": pa.array(im[4], pa.bool_()), "error": pa.array(im[5], pa.string()),
        }), os.path.join(tmp, "images.parquet"), compression="zstd")
        final = os.path.join(parts, f"part-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}")
        os.rename(tmp, final)  # the commit: atomic
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _empty_acts(pa: Any, path: str) -> None:
    schema = pa.schema([("layer", pa.int32()), ("channel", pa.int32()), ("image", pa.int64()), ("max", pa.float32()),
                        ("mean", pa.float32()), ("y", pa.int32()), ("x", pa.int32())])
    pa.parquet.write_table(schema.empty_table(), path)


# ---------------------------------------------------------------- merging shards


def merge(out: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]]) -> dict[str, int]:
    """Combine the indexes ``sources`` (e.g. one per shard) into ``out`` (created, or an existing
    index with the same identity). Refuses indexes built with other settings. An image present
    in several sources (overlapping scans) is kept once. Returns {'parts', 'images', 'duplicates'}."""
    if not sources:
        raise UsageError("merge needs at least one index folder to merge")
    out = os.fspath(out)
    opened = [ActivationIndex.open(s) for s in sources]
    for src in opened:
        if os.path.abspath(src.root) == os.path.abspath(out):
            raise UsageError(f"cannot merge index {src.root!r} into itself")
        diff = differences(opened[0].provenance, src.provenance, here=f"in {opened[0].root!r}", there=f"in {src.root!r}")
        if diff:
            raise IndexStoreError(f"indexes {opened[0].root!r} and {src.root!r} were built with different settings: "
                                  f"{'; '.join(diff)}; they cannot be merged")
    prov = dict(opened[0].provenance)
    target = ActivationIndex.create_or_open(out, prov)
    pa = _pa()
    pq = pa.parquet
    counts = {"parts": 0, "images": 0, "duplicates": 0}
    with target:
        have = set(target.images())
        for src in opened:
            for part in src.part_dirs():
                imgs = pq.read_table(os.path.join(part, "images.parquet"))
                ids = imgs.column("image").to_pylist()
                ok = imgs.column("ok").to_pylist()
                dup = {i for i in ids if i in have}
                tmp = os.path.join(target.root, "parts", f".tmp-{uuid.uuid4().hex}")
                os.makedirs(tmp)
                try:
                    if not dup:
                        for f in ("acts.parquet", "images.parquet"):
                            _link_or_copy(os.path.join(part, f), os.path.join(tmp, f))
                    else:
                        import pyarrow.compute as pc

                        keep = pa.array([i not in dup for i in ids])
                        pq.write_table(imgs.filter(keep), os.path.join(tmp, "images.parquet"), compression="zstd")
                        acts = pq.read_table(os.path.join(part, "acts.parquet"))
                        mask = pc.invert(pc.is_in(acts.column("image"), value_set=pa.array(sorted(dup), pa.int64())))
                        pq.write_table(acts.filter(mask), os.path.join(tmp, "acts.parquet"),
                                       row_group_size=max(1024, (len(ids) - len(dup)) * CHANNELS_PER_ROW_GROUP),
                                       compression="zstd")
                    os.rename(tmp, os.path.join(target.root, "parts", f"part-merged-{uuid.uuid4().hex[:16]}"))
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                counts["parts"] += 1
                counts["duplicates"] += sum(1 for i, o in zip(ids, ok) if i in dup and o)
                counts["images"] += sum(1 for i, o in zip(ids, ok) if i not in dup and o)
                have.update(ids)
    return counts


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # parts are never modified after commit: sharing the file is safe
    except OSError:
        shutil.copyfile(src, dst)
