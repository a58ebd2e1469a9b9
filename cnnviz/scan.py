"""Scanning image collections through a model: the image list, shards, the parallel input
pipeline, per-channel statistics of each batch, and streaming top-K.

* :func:`expand_images`: files, folders (recursive, image extensions, sorted), globs and ``-``
  (a newline-separated list of paths on stdin) into one de-duplicated, deterministic list.
* :func:`image_id`: a stable 64-bit id per image (a hash of its absolute path), the key of the
  index, the tie-break of every ranking and the basis of :func:`in_shard`.
* :class:`Preprocess`: the preprocessing (size, crop, mean/std), picklable for worker processes.
* :func:`scan`: decode + preprocess in worker processes (a torch DataLoader), batched forward
  passes with hooks only on the requested layers and stopped after the last of them; each batch's
  per-channel max, mean and peak unit handed to a callback. Memory: one batch, whatever the
  number of images.
* :class:`TopK`: the K highest (or lowest) scoring images per channel, updated batch by batch.

Rankings are total orders: score (descending for top, ascending for bottom), then image id
ascending, so every engine (local, sharded and merged, Ray) returns exactly the same examples.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from .capture import Capture, HookPoint, hook_points
from .detect import model_input
from .errors import CnnvizError, ImageError, UsageError
from .io import DEFAULT_MAX_PIXELS, load_image, preprocess
from .layers import ConvLayer
from .util import device_of

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
SCORES = ("max", "mean")
_GLOB_CHARS = frozenset("*?[")


# ---------------------------------------------------------------- the image list


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str) -> list[str]:
    """Image files under ``folder``, recursively, hidden files and folders skipped, sorted by
    their path relative to ``folder`` (so the order does not depend on the file system)."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, f) for f in files if _is_image_name(f)]
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def expand_images(specs: Sequence[str], *, stdin: TextIO | None = None,
                  on_missing: Callable[[str, str], None] | None = None) -> list[str]:
    """The images named by ``specs``, in order, each once: a file as given (any extension), a
    folder as its image files (recursive, sorted), a glob as its sorted matches (folders among them
    expanded), ``-`` as the paths listed one per line on ``stdin`` (default sys.stdin; blank lines
    ignored; each may again be a file or folder). A path seen twice (same absolute path) is kept
    the first time. A listed path that does not exist goes to ``on_missing(path, message)`` and is
    left out (a long list made earlier may name files deleted since, as a folder may hold
    unreadable ones); without ``on_missing`` it raises ImageError, as a missing path or a glob
    without matches given as an argument always does. Raises UsageError when nothing is left."""
    out: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.append(path)

    def take(spec: str, *, listed: bool) -> None:
        if os.path.isdir(spec):
            found = _walk(spec)
            if not found and not listed:
                raise UsageError(f"folder {spec!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...)")
            for p in found:
                add(p)
        elif os.path.exists(spec):
            add(spec)
        elif not listed and _GLOB_CHARS & set(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise ImageError(f"no file matches {spec!r}")
            for m in matches:
                if os.path.isdir(m):
                    for p in _walk(m):
                        add(p)
                elif _is_image_name(os.path.basename(m)):
                    add(m)
        elif listed and on_missing is not None:
            on_missing(spec, f"image {spec!r} does not exist (listed on stdin)")
        else:
            raise ImageError(f"image {spec!r} does not exist" + (" (listed on stdin)" if listed else ""))

    if list(specs).count("-") > 1:
        raise UsageError("'-' (a list of paths on stdin) can be given only once")
    for spec in specs:
        if spec == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                path = line.rstrip("\r\n")
                if path.strip():
                    take(path, listed=True)
        else:
            take(spec, listed=False)
    if not out:
        raise UsageError("no images to scan: " + (", ".join(repr(s) for s in specs) if specs else "pass files, folders, globs or '-'")
                         + (" named none" if specs else ""))
    return out


def image_id(path: str) -> int:
    """A stable signed 64-bit id of the image at ``path`` (BLAKE2b of its absolute path)."""
    key = os.path.abspath(path).encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) -> (I, N). Raises UsageError."""
    try:
        i_text, n_text = str(text).split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {text!r} is not I/N (e.g. 0/4: the first of four shards)") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text!r}: need 0 <= I < N (shards are numbered 0 to N-1)")
    return i, n


def in_shard(path: str, shard: tuple[int, int]) -> bool:
    """Whether ``path`` belongs to shard (I, N): its image id modulo N is I. Deterministic, and
    stable when files are added (a new file never moves an old one to another shard)."""
    i, n = shard
    return image_id(path) % n == i


# ---------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes the model's input: :func:`cnnviz.io.preprocess` with these
    arguments. ``size``: shorter side (int) or exact (H, W); ``crop``: the classifier's
    Resize + CenterCrop to size x size. Picklable (sent to worker processes)."""

    size: int | tuple[int, int] = 224
    crop: bool = True
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    max_pixels: int = DEFAULT_MAX_PIXELS
    interpolation: str = "bilinear"  # the weights' resize filter (see io.preprocess)
    # a detector's own transform (cnnviz.detect.transform_params): the centre square of the photo
    # (with crop) through it, as the model's forward would feed it; None: io.preprocess
    detector: dict[str, Any] | None = None

    def __call__(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """(normalised (3, H, W) float32, display (H, W, 3) uint8). Raises ImageError."""
        img = load_image(path, max_pixels=self.max_pixels)
        if self.detector is not None:
            if self.crop:
                w, h = img.size
                s = min(w, h)
                img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            fed = model_input(self.detector, np.asarray(img.convert("RGB")))
            return fed.x, fed.display
        return preprocess(img, size=self.size, crop=self.crop, resize_size=self.resize_size, crop_size=self.crop_size,
                          mean=self.mean, std=self.std, interpolation=self.interpolation)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        """The inverse of :meth:`as_dict` (an index's recorded preprocessing)."""
        size = tuple(d["size"]) if isinstance(d["size"], list) else int(d["size"])
        return cls(size=size, crop=bool(d["crop"]), resize_size=int(d["resize_size"]),  # type: ignore[arg-type]
                   crop_size=int(d["crop_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=str(d.get("interpolation", "bilinear")), detector=d.get("detector"))

    def as_dict(self) -> dict[str, Any]:
        """What decides the input tensor (recorded in an index; max_pixels only refuses files)."""
        d = asdict(self)
        d.pop("max_pixels")
        d["size"] = list(self.size) if isinstance(self.size, tuple) else self.size
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if d["detector"] is None:
            d.pop("detector")  # indexes of classifiers keep their recorded form
        return d


# ---------------------------------------------------------------- the input pipeline


class _Images(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item i: (i, normalised array or None, error message or None). Runs in worker processes."""

    def __init__(self, paths: Sequence[str], prep: Preprocess):
        self.paths = list(paths)
        self.prep = prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            x, _ = self.prep(self.paths[i])
            return i, x, None
        except CnnvizError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a decoder bug on one file must not end a scan of thousands
            return i, None, f"image {self.paths[i]!r} could not be read ({type(exc).__name__}: {exc})"


@dataclass
class Batch:
    """Same-size preprocessed images: ``positions`` into the scanned list, ``x`` (B, 3, H, W)."""

    positions: list[int]
    x: torch.Tensor


@dataclass
class Loaded:
    """What one loader step yields: batches (one per distinct input size) and unreadable files
    as (position, message)."""

    batches: list[Batch]
    errors: list[tuple[int, str]]


def _collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> Loaded:
    groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    errors = []
    for i, x, err in items:
        if x is None:
            errors.append((i, err or "unreadable"))
        else:
            groups.setdefault(x.shape, []).append((i, x))
    # torch tensors travel from the workers through shared memory, not pickled bytes
    batches = [Batch([i for i, _ in g], torch.from_numpy(np.stack([x for _, x in g]))) for g in groups.values()]
    return Loaded(batches, errors)


def load_batches(paths: Sequence[str], prep: Preprocess, *, batch_size: int = 32, workers: int = 2) -> Iterator[Loaded]:
    """Decode and preprocess ``paths`` in ``workers`` processes (0: in this process), in order,
    ``batch_size`` files per step; images of different sizes are split into one batch per size."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, not {workers}")
    loader = torch.utils.data.DataLoader(
        _Images(paths, prep), batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
        prefetch_factor=4 if workers else None, persistent_workers=False,
    )
    yield from loader


# ---------------------------------------------------------------- per-channel statistics


@dataclass
class LayerStats:
    """Per image and channel of one layer, for a batch of B images: ``max`` and ``mean`` (B, C)
    float32 over the map's units, ``unit`` (B, C, 2) int32: (y, x) of the first unit (row-major)
    where the map peaks."""

    max: np.ndarray
    mean: np.ndarray
    unit: np.ndarray

    def score(self, name: str) -> np.ndarray:
        if name not in SCORES:
            raise UsageError(f"unknown score {name!r}; choose max or mean")
        return self.max if name == "max" else self.mean


def reduce_maps(t: torch.Tensor) -> LayerStats:
    """(B, C, h, w) maps -> their LayerStats (max, mean, peak unit) per image and channel."""
    b, c, h, w = t.shape
    flat = t.detach().float().reshape(b, c, h * w)
    mx, arg = flat.max(dim=2)  # first occurrence of the maximum, like numpy.argmax
    mean = flat.mean(dim=2)
    arg = arg.to(torch.int32)
    unit = torch.stack([arg // w, arg % w], dim=-1)
    return LayerStats(mx.cpu().numpy(), mean.cpu().numpy(), unit.cpu().numpy())


OnProgress = Callable[[int, int], None]  # (done, total): e.g. cnnviz.progress.Progress.goto


@dataclass
class ScanCounts:
    """What a scan did: images scanned, files skipped as unreadable (path, message)."""

    scanned: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan(
    model: nn.Module,
    layers: Sequence[ConvLayer],
    paths: Sequence[str],
    *,
    prep: Preprocess,
    on_batch: Callable[[list[int], dict[str, LayerStats]], None],
    stage: str = "conv",
    batch_size: int = 32,
    workers: int = 2,
    strict: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
    on_progress: OnProgress | None = None,
) -> ScanCounts:
    """Run every image of ``paths`` through ``model`` and hand each batch's statistics to
    ``on_batch(positions, {layer name: LayerStats})`` (positions index ``paths``). Decoding runs in
    ``workers`` processes ahead of the forward passes; each forward pass has hooks on ``layers``
    only and stops after the last of them, and a layer's maps are reduced inside its hook (never
    more than one layer's output of one batch in memory). Unreadable files are passed to
    ``on_skip(path, message)`` and counted, or with ``strict`` raise ImageError."""
    points = hook_points(model, list(layers), stage)  # type: ignore[arg-type]
    by_point: dict[HookPoint, list[str]] = {}
    for layer, p in zip(layers, points):
        by_point.setdefault(p, []).append(layer.name)
    current: dict[str, LayerStats] = {}

    def handle(point: HookPoint, t: torch.Tensor) -> None:
        stats = reduce_maps(t)
        for name in by_point[point]:
            current[name] = stats

    counts = ScanCounts()
    device = device_of(model)
    total = len(paths)
    with Capture(model, points, on_output=handle, on_cpu=False) as cap:  # reduced on the device
        for step in load_batches(paths, prep, batch_size=batch_size, workers=workers):
            for pos, message in step.errors:
                if strict:
                    raise ImageError(message + " (--strict)")
                counts.skipped.append((paths[pos], message))
                if on_skip is not None:
                    on_skip(paths[pos], message)
            for batch in step.batches:
                current.clear()
                cap.run(batch.x.to(device))
                on_batch(batch.positions, dict(current))
                counts.scanned += len(batch.positions)
            if on_progress is not None:
                on_progress(counts.scanned + len(counts.skipped), total)
    return counts


# ---------------------------------------------------------------- streaming top-K


_NO_IMAGE = np.iinfo(np.int64).max  # an empty slot: sorts after every real image id


@dataclass
class Example:
    """One ranked example of a channel: image id, the ranking score, max and mean, peak unit."""

    image: int
    score: float
    max: float
    mean: float
    unit: tuple[int, int]


class TopK:
    """The ``k`` best images per channel of one layer, by ``score`` ('max' or 'mean'); highest
    first, or lowest first with ``bottom``. Ties: lower image id first. State is (C, k) arrays:
    memory does not grow with the number of images."""

    def __init__(self, channels: Sequence[int], k: int, *, score: str = "max", bottom: bool = False):
        if k < 1:
            raise UsageError(f"-k must be at least 1, not {k}")
        if score not in SCORES:
            raise UsageError(f"unknown score {score!r}; choose max or mean")
        self.channels = np.asarray(list(channels), dtype=np.int64)
        self.k, self.score, self.bottom = int(k), score, bool(bottom)
        c = len(self.channels)
        self._id = np.full((c, self.k), _NO_IMAGE, np.int64)
        self._key = np.full((c, self.k), np.inf, np.float64)  # ranking key, ascending is better
        self._vals = np.zeros((c, self.k, 4), np.float64)  # max, mean, y, x

    def _keys(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        key = s if self.bottom else -s
        return np.where(np.isnan(key), np.inf, key)  # NaN maps rank last

    def update(self, ids: np.ndarray, stats: LayerStats) -> None:
        """Fold in a batch: ``ids`` (B,) image ids, ``stats`` of the whole layer (all channels)."""
        ids = np.asarray(ids, np.int64)
        b = len(ids)
        if b == 0:
            return
        ch = self.channels
        mx, mean = stats.max[:, ch].T, stats.mean[:, ch].T  # (C', B)
        unit = stats.unit[:, ch].transpose(1, 0, 2)  # (C', B, 2)
        key = self._keys(mx if self.score == "max" else mean)
        all_id = np.concatenate([self._id, np.broadcast_to(ids, (len(ch), b))], axis=1)
        all_key = np.concatenate([self._key, key], axis=1)
        new_vals = np.concatenate([mx[..., None], mean[..., None], unit.astype(np.float64)], axis=2)
        all_vals = np.concatenate([self._vals, new_vals], axis=1)
        order = np.lexsort((all_id, all_key), axis=1)[:, : self.k]
        self._id = np.take_along_axis(all_id, order, axis=1)
        self._key = np.take_along_axis(all_key, order, axis=1)
        self._vals = np.take_along_axis(all_vals, order[..., None], axis=1)

    def result(self) -> dict[int, list[Example]]:
        """{channel: up to k Examples, best first}."""
        out: dict[int, list[Example]] = {}
        for r, c in enumerate(self.channels.tolist()):
            row = []
            for j in range(self.k):
                if self._id[r, j] == _NO_IMAGE:
                    break
                mx, mean, y, x = self._vals[r, j]
                row.append(Example(int(self._id[r, j]), float(mx if self.score == "max" else mean), float(mx), float(mean),
                                   (int(y), int(x))))
            out[c] = row
        return out


def rank_order(scores: Iterable[float], ids: Iterable[int], *, bottom: bool = False) -> list[int]:
    """Positions of (score, id) pairs in ranking order (the one order every engine uses)."""
    s = np.asarray(list(scores), np.float64)
    key = s if bottom else -s
    key = np.where(np.isnan(key), np.inf, key)
    return np.lexsort((np.asarray(list(ids), np.int64), key)).tolist()


