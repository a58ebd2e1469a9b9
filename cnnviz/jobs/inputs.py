"""Image inputs of a job: which images (files, '-' for stdin, the sample photo), at what size.

:class:`ImageInputs` is what a user asked for; :meth:`ImageInputs.check` validates it without
reading pixels (call it before loading weights) and :meth:`ImageInputs.read` preprocesses the
images lazily, one by one, with a model's mean/std and crop/resize sizes, as :class:`InputImage`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..detect import describe, is_detector, model_input
from ..errors import ImageError, UsageError
from ..io import DEFAULT_MAX_PIXELS, image_label, load_image, preprocess, sample_image_path, size_tag, stdin_binary
from ..util import parse_size


@dataclass(frozen=True)
class InputImage:
    """One preprocessed input: ``x`` (3, H, W) float32 normalised with the weights' mean/std,
    ``display`` (H, W, 3) uint8 (the same pixels before normalisation), ``source`` (path, '-' or the
    sample path) and ``label`` (the stem used in output names, unique within one run)."""

    source: str
    label: str
    x: np.ndarray
    display: np.ndarray
    valid: tuple[int, int] | None = None  # a detector's input: the image inside the zero padding (h, w)

    @property
    def fed(self) -> str:
        """What a detector's convs saw, in words ('' for other models): e.g. 'input 800x1216 =
        the model's resize to 800x1200 + zero padding'."""
        if self.valid is None:
            return ""
        h, w = int(self.x.shape[-2]), int(self.x.shape[-1])
        pad = f" + zero padding to {h}x{w}" if (h, w) != tuple(self.valid) else ""
        return f"input {h}x{w} = the model's resize to {self.valid[0]}x{self.valid[1]}{pad}"


def parse_image_size(size: str | int | None, default: int) -> int | tuple[int, int]:
    """--size: None -> ``default``; '300' -> 300 (shorter side); '224x320' -> (224, 320) exact (H, W)."""
    if size is None:
        return int(default)
    text = str(size).strip()
    if text.isdigit():
        s = int(text)
        if not 1 <= s <= 8192:
            raise UsageError(f"--size {s} out of range; use 1..8192 pixels")
        return s
    return parse_size(text)


def model_input_size(size: str | int | None, lm: Any, *, crop: bool = False) -> int | tuple[int, int]:
    """--size for ``lm`` (a LoadedModel): the weights' crop size by default; exactly the size a model
    accepts when it accepts only one (an exported program with static shapes). Raises UsageError."""
    if lm.input_hw is None:
        return parse_image_size(size, lm.crop_size)
    h, w = lm.input_hw
    wanted = parse_image_size(size, h) if size is not None else None
    if wanted is not None and wanted not in ((h, w), h if h == w else None):
        raise UsageError(f"--size {size}: {lm.limits.get('size', 'the model takes one input size only')}")
    if crop:
        if h != w:
            raise UsageError(f"--crop makes square inputs, but {lm.limits.get('size', 'the model takes one size only')}")
        return h
    return (h, w)


def size_tags(size: str | int | None, lm: Any, *, crop: bool = False) -> list[str]:
    """File-name tags of --size and --crop (io.size_tag) for ``lm`` (a LoadedModel): a --size that
    resolves to the model's own input size (its default, known only at run time: '224' for a
    224-px classifier) draws the default picture, so it keeps the default name."""
    if size is not None and model_input_size(size, lm, crop=crop) == model_input_size(None, lm, crop=crop):
        size = None
    return size_tag(size, crop)


def square(size: int | tuple[int, int]) -> tuple[int, int]:
    """A parsed size as (H, W): a single side S is S x S."""
    return size if isinstance(size, tuple) else (size, size)


@dataclass(frozen=True, kw_only=True)
class ImageInputs:
    """The images of one run. ``images``: paths, '-' (stdin, at most once); ``sample`` adds the
    bundled photo; ``size``: None (the weights' crop size), 'S' (shorter side) or 'HxW' (exact);
    ``crop``: the classifier's Resize + CenterCrop to S x S; ``max_pixels``: refuse larger images
    before decoding (None: DEFAULT_MAX_PIXELS); ``stdin``: where '-' reads (default: sys.stdin's bytes)."""

    images: tuple[str, ...] = ()
    sample: bool = False
    size: str | int | None = None
    crop: bool = False
    max_pixels: int | None = None
    stdin: BinaryIO | None = None

    @property
    def given(self) -> int:
        """How many inputs were named (before any check)."""
        return len(self.images) + int(self.sample)

    def check(self, *, default_size: int = 224) -> list[str]:
        """Validate without reading any pixels: at least one input, '-' at most once, a valid
        size, every file present. Returns the sources. Raises UsageError / ImageError."""
        sources = list(self.images) + ([sample_image_path()] if self.sample else [])
        if not sources:
            raise UsageError("no input image: pass IMAGE files, '-' to read one from stdin, or --sample")
        if sources.count("-") > 1:
            raise UsageError("'-' (stdin) can be given only once")
        target = parse_image_size(self.size, default_size)
        if self.crop and isinstance(target, tuple):
            raise UsageError("--crop takes a single --size (the square's side), not HxW")
        for s in sources:  # fail before any work if a later file is missing
            if s != "-":
                _check_exists(s)
        return sources

    def read(self, lm: Any) -> Iterator[InputImage]:
        """Check every input up front (see :meth:`check`), then load and preprocess them lazily
        with ``lm``'s (a LoadedModel's) mean/std and sizes. Raises UsageError / ImageError."""
        sources = self.check(default_size=lm.crop_size)
        target = model_input_size(self.size, lm, crop=self.crop)
        limit = DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels
        return self._iter(sources, target, limit, lm)

    def _iter(self, sources: list[str], target: Any, limit: int, lm: Any) -> Iterator[InputImage]:
        seen: dict[str, int] = {}
        for s in sources:
            src: Any = (self.stdin or stdin_binary()).read() if s == "-" else s
            img = load_image(src, max_pixels=limit)
            valid = None
            if lm.task == "detection" and is_detector(lm.model):
                x, disp, valid = _detector_input(img, lm, size=self.size, crop=self.crop)
            else:
                x, disp = preprocess(img, size=target, crop=self.crop, resize_size=lm.resize_size,
                                     crop_size=lm.crop_size, mean=lm.mean, std=lm.std,
                                     interpolation=lm.interpolation, channels=lm.channels_in)
            label = image_label(src)
            n = seen.get(label, 0) + 1
            seen[label] = n
            yield InputImage(s, label if n == 1 else f"{label}_{n}", x, disp, valid)


def _detector_input(img: Any, lm: Any, *, size: str | int | None, crop: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A detector's input (cnnviz.detect.model_input): the photo (centre-cropped to a square with
    ``crop``) through the model's own transform; ``size``: its shorter side instead of min_size."""
    side = parse_image_size(size, lm.crop_size) if size is not None else None
    if isinstance(side, tuple):
        raise UsageError(f"--size {size}: a detector resizes images itself ({describe(lm.model)}); "
                         "--size S sets the shorter side S instead, HxW is not possible")
    if crop:
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    fed = model_input(lm.model, np.asarray(img.convert("RGB")), size=side)
    return fed.x, fed.display, fed.valid


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise ImageError(f"image {path!r} does not exist")
    if os.path.isdir(path):
        raise ImageError(f"image {path!r} is a directory; pass image files")
