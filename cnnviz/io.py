"""Reading images, writing PNG/NPY atomically, naming outputs. No torch import here.

Images: any Pillow-readable file (or bytes) becomes RGB correctly: EXIF orientation applied,
16-bit and float scaled to 8 bits, transparency flattened on white, palette/CMYK/LA converted,
first frame of animations. A pixel limit is checked from the header, before decoding.
"""
from __future__ import annotations

import contextlib
import hashlib
import io as _io
import os
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import ImageError, OutputError, first_line
from .render import Picture, check_picture_size, mpl_data_path
from .select import index_ranges

DEFAULT_MAX_PIXELS = 64_000_000  # ~ 8000 x 8000; a decompression bomb is far beyond
SAMPLE = "grace_hopper.jpg"


def sample_image_path() -> str:
    """Path of matplotlib's bundled sample photo (Grace Hopper, 512x600 JPEG)."""
    try:
        path = Path(mpl_data_path("sample_data", SAMPLE))
    except FileNotFoundError:
        raise ImageError(f"--sample needs matplotlib (its sample image {SAMPLE}): pip install matplotlib") from None
    if not path.is_file():
        raise ImageError(f"matplotlib's sample image {SAMPLE} is missing from {path.parent}")
    return str(path)


# Characters that cannot or should not be in a file name on common filesystems: path separators,
# what Windows/exFAT refuse, and (by Unicode category, below) control and separator characters.
_REFUSED = set('/\\:*?"<>|')
_UNSAFE_CATEGORIES = {"Cc", "Cs", "Zs", "Zl", "Zp"}  # controls (NUL too), lone surrogates, spaces
_LABEL_BYTES = 120  # an image's part of an output name, so the whole name stays under 255 bytes


def safe_name(text: str) -> str:
    """``text`` usable as part of a file name: any letters in any script are kept (``фото``,
    ``写真``); each run of path separators, characters filesystems refuse, control characters
    and whitespace becomes one ``_``."""
    out: list[str] = []
    for ch in text:
        if ch in _REFUSED or unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            if not out or out[-1] != "_":
                out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def image_label(source: str | os.PathLike[str] | bytes) -> str:
    """A short stem for output names: the file stem made safe (see safe_name) and cut to
    120 UTF-8 bytes; 'stdin' for bytes."""
    if isinstance(source, (bytes, bytearray)):
        return "stdin"
    stem = safe_name(Path(str(source)).stem) or "image"
    return stem.encode("utf-8", "surrogatepass")[:_LABEL_BYTES].decode("utf-8", "ignore") or "image"


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.max() > 255):
            a = a / 65535.0  # 16-bit samples (PNG 16-bit grayscale opens as I;16 or I)
        elif mode == "I":
            a = a / 255.0
        else:  # float images have no fixed range: stretch
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        g = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")


def load_image(source: str | os.PathLike[str] | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file (or its bytes) as an 8-bit RGB PIL image. Raises ImageError."""
    name = "stdin" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        p = Path(name)
        if not p.exists():
            raise ImageError(f"image {name!r} does not exist")
        if p.is_dir():
            raise ImageError(f"image {name!r} is a directory; pass image files")
        if not os.access(p, os.R_OK):
            raise ImageError(f"cannot read image {name!r}: permission denied")
        if p.stat().st_size == 0:
            raise ImageError(f"image {name!r} is an empty file")
    elif not source:
        raise ImageError("no image data on stdin")
    try:
        fp: Any = _io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else name
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before any decoding
        try:
            img = Image.open(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = old
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(
                f"image {name!r} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                f"raise it with --max-pixels if the image is genuine"
            )
        if w < 1 or h < 1:
            raise ImageError(f"image {name!r} has no pixels")
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name!r} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image {name!r} is corrupt or truncated ({first_line(exc)})") from None


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``side`` and the longer one ``int(side * long / short)``:
    torchvision's Resize(int) rule (truncated, not rounded)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(side * long / short)
    return (side, new_long) if width <= height else (new_long, side)


def preprocess(
    img: Image.Image,
    *,
    size: int | tuple[int, int] = 224,
    crop: bool = False,
    resize_size: int = 256,
    crop_size: int = 224,
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
    std: tuple[float, ...] = (0.229, 0.224, 0.225),
    interpolation: str = "bilinear",
    channels: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize (shorter side = ``size``, aspect kept; or exactly (H, W) when a pair) and normalise.
    ``crop``: the classifier's own transforms scaled to ``size``: shorter side to
    size * resize_size / crop_size (e.g. 256/224), then a centred size x size crop. At
    size == crop_size this is, bit for bit, torchvision's ImageClassification (the weights'
    ``transforms()``) on a PIL image: Pillow resize with ``interpolation`` (antialiased), the
    long side truncated, crop offsets ``int(round(diff / 2))``, /255, then (x - mean) / std in
    float32. ``channels`` 1: the image is first converted to grayscale (PIL's ITU-R 601-2 luma, as
    torchvision's Grayscale). Returns (normalised (channels, H, W) float32, display (H, W, 3) uint8
    of the same pixels)."""
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {', '.join(_RESAMPLE)}, got {interpolation!r}")
    if channels == 1:
        img = img.convert("L")
    w, h = img.size
    if crop:
        if isinstance(size, tuple):
            raise ValueError("crop takes a single size (the square's side), not (H, W)")
        side = max(size, round(size * resize_size / crop_size))
    else:
        side = size  # type: ignore[assignment]
    if isinstance(side, tuple):
        th, tw = side
    else:
        tw, th = resized_size(w, h, side)
    if (tw, th) != (w, h):
        img = img.resize((tw, th), _RESAMPLE[interpolation])
    if crop:
        # torchvision's CenterCrop rounds the offset (Python's round: halves to even).
        left, top = int(round((tw - size) / 2.0)), int(round((th - size) / 2.0))  # type: ignore[operator]
        img = img.crop((left, top, left + size, top + size))  # type: ignore[operator]
    disp = np.asarray(img, dtype=np.uint8)
    if disp.ndim == 2:
        disp = np.repeat(disp[:, :, None], 3, axis=2)
    x = disp[:, :, :channels].astype(np.float32) / np.float32(255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)), disp


# ---------------------------------------------------------------- writing


def _png_bytes(
    image: Picture | Image.Image | np.ndarray, metadata: Mapping[str, Any] | None, compress_level: int, palette: Any = None
) -> bytes:
    if isinstance(image, np.ndarray):  # bare arrays take the same road as pictures
        image = Picture(image, _palette_array(palette)) if image.ndim == 2 and palette is not None else image
    if isinstance(image, Picture):
        meta = {**(metadata or {}), **image.metadata}
        if image.palette is not None:
            return encode_png8(image.pixels, palette=image.palette.tobytes(), metadata=meta, level=compress_level,
                               transparency=image.transparency)
        image, metadata = image.pixels, meta
    if isinstance(image, np.ndarray) and image.ndim == 2:
        return encode_png8(image, metadata=metadata, level=compress_level)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode in ("P", "L"):
        pal = image.getpalette() if image.mode == "P" else None
        return encode_png8(np.asarray(image), palette=pal, metadata=metadata, level=compress_level,
                           transparency=image.info.get("transparency"))
    info = PngImagePlugin.PngInfo()
    for k, v in (metadata or {}).items():
        info.add_text(_check_keyword(str(k)), v if isinstance(v, str) else _json(v))
    buf = _io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def _palette_array(palette: Any) -> np.ndarray:
    """A flat RGB palette (bytes or ints) -> (P, 3) uint8."""
    flat = np.frombuffer(bytes(palette), np.uint8) if isinstance(palette, (bytes, bytearray)) else np.asarray(palette, np.uint8)
    flat = flat[: min(768, flat.size - flat.size % 3)]
    return flat.reshape(-1, 3)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _check_keyword(key: str) -> str:
    """A PNG text keyword as the spec allows it (1-79 printable Latin-1 characters, no leading,
    trailing or double spaces), else ValueError: a mangled key would silently lose metadata."""
    ok = 1 <= len(key) <= 79 and all(" " <= c <= "~" or "\xa1" <= c <= "\xff" for c in key)
    if not ok or key != key.strip(" ") or "  " in key:
        raise ValueError(f"invalid PNG text keyword {key!r}: use 1-79 printable Latin-1 characters, "
                         f"without leading, trailing or consecutive spaces")
    return key


def _text_chunk(key: str, value: str) -> bytes:
    k = _check_keyword(key).encode("latin-1")
    try:
        return _chunk(b"tEXt", k + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # iTXt: uncompressed UTF-8, no language tag
        return _chunk(b"iTXt", k + b"\0\0\0\0\0" + value.encode("utf-8"))


_PNG_CHUNK_BYTES = 4 << 20  # deflate pieces compressed in parallel (zlib releases the GIL)


def encode_png8(
    pixels: np.ndarray,
    *,
    palette: Any = None,
    metadata: Mapping[str, Any] | None = None,
    level: int = 1,
    transparency: int | bytes | None = None,
) -> bytes:
    """PNG bytes of an 8-bit single-channel image (H, W) uint8: palette indices with ``palette``
    (flat RGB list/bytes, 1 to 256 entries, every pixel an index into it) or greyscale without.
    ``transparency`` (a tRNS chunk): with a palette, the index drawn fully transparent or
    per-entry alpha bytes (at most one per entry); for greyscale, the grey level 0..255 drawn
    transparent. Invalid input (empty or ragged palette, an index without an entry, a bad text
    keyword, transparency out of range) raises ValueError instead of writing a broken file.

    Built for tile grids: every row uses the Sub filter (a pixel repeated by nearest-neighbour
    upscaling becomes 0) and a row equal to the one above uses Up (all zeros); deflate runs with
    the RLE strategy, in pieces compressed on several threads (zlib releases the GIL).
    Decodes exactly to ``pixels`` with any PNG reader."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"pixels must be a non-empty (H, W) uint8 array, got shape {a.shape}")
    h, w = a.shape
    trns = _transparency_chunk(a, palette, transparency)
    pal = b"" if palette is None else bytes(palette)
    keys = [(_check_keyword(str(k)), v) for k, v in (metadata or {}).items()]
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 1  # Sub
    rows[:, 1] = a[:, 0]
    np.subtract(a[:, 1:], a[:, :-1], out=rows[:, 2:])
    same = np.zeros(h, bool)
    same[1:] = (a[1:] == a[:-1]).all(axis=1)
    rows[same, 0] = 2  # Up: the row repeats the previous one, its bytes are all zero
    rows[same, 1:] = 0
    raw = rows.reshape(-1)  # zlib reads the array's buffer directly: no bytes copy
    pieces = [raw[i : i + _PNG_CHUNK_BYTES] for i in range(0, raw.size, _PNG_CHUNK_BYTES)]

    def deflate(k: int) -> bytes:
        # Z_RLE: after the Sub/Up filters the data is mostly runs; measured faster and smaller
        # than the default strategy on upscaled, smooth and noise-like grids alike.
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
        return c.compress(pieces[k]) + c.flush(zlib.Z_FINISH if k == len(pieces) - 1 else zlib.Z_FULL_FLUSH)

    if len(pieces) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(pieces), os.cpu_count() or 1)) as pool:
            body = list(pool.map(deflate, range(len(pieces))))
    else:
        body = [deflate(0)]
    # One IDAT chunk assembled from its parts (CRC computed incrementally): a single final copy.
    idat = [b"\x78\x01", *body, zlib.adler32(raw).to_bytes(4, "big")]
    crc = zlib.crc32(b"IDAT")
    for part in idat:
        crc = zlib.crc32(part, crc)
    color_type = 3 if palette is not None else 0
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, color_type, 0, 0, 0]))]
    if palette is not None:
        out.append(_chunk(b"PLTE", pal))
    if trns is not None:
        out.append(trns)
    out += [_text_chunk(k, v if isinstance(v, str) else _json(v)) for k, v in keys]
    out += [sum(map(len, idat)).to_bytes(4, "big"), b"IDAT", *idat, crc.to_bytes(4, "big"), _chunk(b"IEND", b"")]
    return b"".join(out)


def _transparency_chunk(a: np.ndarray, palette: Any, transparency: int | bytes | None) -> bytes | None:
    """Check ``palette`` against the pixels ``a`` and build the tRNS chunk (None without transparency)."""
    if palette is None:
        if transparency is None:
            return None
        if isinstance(transparency, (bytes, bytearray)) or not 0 <= int(transparency) <= 255:
            raise ValueError(f"greyscale transparency must be one grey level 0..255, got {transparency!r}")
        return _chunk(b"tRNS", int(transparency).to_bytes(2, "big"))
    pal = bytes(palette)
    if not pal or len(pal) % 3 or len(pal) > 768:
        raise ValueError(f"palette must hold 1..256 RGB entries (3..768 bytes, a multiple of 3), got {len(pal)} bytes")
    n = len(pal) // 3
    top = int(a.max())
    if top >= n:
        raise ValueError(f"pixel value {top} has no palette entry: the palette has {n} (indices 0..{n - 1})")
    if transparency is None:
        return None
    if isinstance(transparency, (bytes, bytearray)):
        if not 1 <= len(transparency) <= n:
            raise ValueError(f"transparency gives {len(transparency)} alpha values for a palette of {n} entries (1..{n} allowed)")
        return _chunk(b"tRNS", bytes(transparency))
    t = int(transparency)
    if not 0 <= t < n:
        raise ValueError(f"transparent index {t} is not in the palette of {n} entries")
    return _chunk(b"tRNS", b"\xff" * t + b"\x00")


def _json(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":"), default=str)


def write_atomic(path: str | os.PathLike[str] | BinaryIO, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``, so a
    reader (or an interrupted run) never sees a partial file. A binary file object (e.g.
    sys.stdout.buffer) is written directly. Returns the path written ('-' for a stream)."""
    if not isinstance(path, (str, os.PathLike)):
        try:
            path.write(data)
            path.flush()
        except BrokenPipeError:
            raise  # the reader went away (`| head`): the CLI exits quietly with 141
        except OSError as exc:
            raise OutputError(f"cannot write to output stream: {exc.strerror or exc}") from None
        return "-"
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"output {path!r} is a directory; give a file name or use -o DIR")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cnnviz-", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_png(
    path: str | os.PathLike[str] | BinaryIO,
    image: Picture | Image.Image | np.ndarray,
    *,
    metadata: Mapping[str, Any] | None = None,
    palette: Any = None,
    compress_level: int = 1,
) -> str:
    """Encode ``image`` as PNG with text ``metadata`` and write it atomically. ``image``: a
    render.Picture (its own metadata follows ``metadata``), (H, W, 3) uint8 RGB, (H, W) uint8
    palette indices (with ``palette``, flat RGB bytes) or greys, or PIL.
    8-bit single-channel pictures go through encode_png8; compress_level 1 (zlib) is several
    times faster than Pillow's default 6 for ~10% more bytes."""
    h, w = (image.height, image.width) if isinstance(image, Image.Image) else np.shape(
        image.pixels if isinstance(image, Picture) else image)[:2]
    check_picture_size(h, w)  # never a PNG that viewers (and Pillow) refuse to open
    return write_atomic(path, _png_bytes(image, metadata, compress_level, palette=palette))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> str:
    """Write ``array`` as .npy atomically."""
    buf = _io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return write_atomic(path, buf.getvalue())


def ensure_dir(path: str | os.PathLike[str]) -> str:
    """Create output folder ``path`` if needed; raise OutputError if impossible or not writable."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"output folder {path!r} is an existing file; give a folder with -o")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path!r}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path!r} is not writable; choose another with -o")
    return path


def output_name(*parts: str | int, kind: str, ext: str = "png", tags: Sequence[str | None] = ()) -> str:
    """'{part}-{part}-...-{kind}[-{tag}...].{ext}'; integers are zero-padded to 2 digits
    (sortable). ``tags`` name the non-default options of the request (see option_tags; None and
    '' are skipped), so runs that draw different pictures never share a file name while a default
    run keeps the plain name (docs/output-names.md)."""
    bits = [f"{p:02d}" if isinstance(p, int) else safe_name(str(p)) for p in parts]
    return "-".join([*bits, kind, *(safe_name(str(t)) for t in tags if t)]) + f".{ext}"


_TAG_CHARS = 24


def indices_tag(prefix: str, idx: Sequence[int]) -> str:
    """A file-name tag for a selection: 'c0-15', 'c1,5,9' (see text_tag for long ones)."""
    return text_tag(prefix, index_ranges(idx), count=len(idx))


def text_tag(prefix: str, text: str, *, count: int) -> str:
    """'{prefix}{text}'; a text longer than 24 characters becomes '{prefix}{count}x' plus 8 hex
    digits of its hash ('c128x3fa2b1c9'): distinct selections, distinct short tags."""
    if len(text) <= _TAG_CHARS:
        return f"{prefix}{text}"
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{prefix}{count}x{digest}"


def size_tag(size: str | int | Sequence[int] | None, crop: bool = False) -> list[str]:
    """Tags for the image options: 's300' or 's224x320' for an explicit --size, 'crop' for --crop."""
    tags = []
    if size is not None:
        text = "x".join(str(int(v)) for v in size) if isinstance(size, (tuple, list)) else str(size).strip().lower()
        tags.append(f"s{text}")
    if crop:
        tags.append("crop")
    return tags


def option_tags(options: Sequence[tuple[str, Any, Any]]) -> list[str]:
    """Tags for the options that differ from their defaults: each (tag, value, default) gives
    ``tag`` when value != default; '{}' in ``tag`` takes the value (('top{}', 8, None) -> 'top8';
    floats as %g, equal pairs as one number)."""
    return [tag.format(_tag_value(value)) for tag, value, default in options if value != default]


def _tag_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return str(v[0]) if len(set(v)) == 1 else "x".join(str(x) for x in v)
    return str(v)


# The real stdout while data_stdout() is active (sys.stdout then points to stderr).
_DATA_STDOUT: TextIO | None = None


@contextlib.contextmanager
def data_stdout() -> Iterator[TextIO]:
    """Keep stdout for data only: inside the block ``sys.stdout`` is ``sys.stderr``, so whatever
    a dependency prints (torch.hub's ``Downloading: "https://..."``, a stray ``print``) lands on
    stderr, while the command's own data goes to the real stdout through stdout_text() and
    stdout_binary(). Yields the real stdout; restores ``sys.stdout`` afterwards."""
    global _DATA_STDOUT
    saved, real = _DATA_STDOUT, sys.stdout
    _DATA_STDOUT, sys.stdout = real, sys.stderr
    try:
        yield real
    finally:
        sys.stdout.flush()
        sys.stdout, _DATA_STDOUT = real, saved


def stdout_text() -> TextIO:
    """Where text data (paths, JSON, tables) goes: the real stdout, also inside data_stdout()."""
    return _DATA_STDOUT if _DATA_STDOUT is not None else sys.stdout


def stdout_binary() -> BinaryIO:
    """Where binary data (a PNG for ``-o -``) goes: the real stdout's bytes, also inside data_stdout()."""
    stream: Any = stdout_text()
    stream.flush()  # text written before stays before the bytes
    return getattr(stream, "buffer", stream)


def stdin_binary() -> BinaryIO:
    """The binary side of sys.stdin (``sys.stdin.buffer``); a stream that is already binary (no
    ``.buffer``, as some test runners install) is returned as is."""
    stream: Any = sys.stdin
    if stream is None:
        raise ImageError("no standard input to read '-' from")
    return getattr(stream, "buffer", stream)
