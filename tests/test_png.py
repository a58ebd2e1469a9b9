"""The PNG encoder refuses input that would make a broken or lossy file, writes transparency,
and every file it writes passes PIL's verify (chunk CRCs) and decodes to the exact pixels."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnviz.io import encode_png8, save_png
from conftest import assert_png_valid

PAL = bytes(range(12))  # 4 RGB entries


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("palette, pixels, match", [
    (b"", [[0]], "palette must hold 1..256 RGB entries"),
    ([], [[0]], "palette must hold 1..256 RGB entries"),
    (bytes(10), [[0]], "a multiple of 3"),
    (bytes(771), [[0]], "1..256 RGB entries"),
    (PAL, [[0, 4]], "pixel value 4 has no palette entry: the palette has 4"),
    (PAL, [[255]], "pixel value 255 has no palette entry"),
])
def test_bad_palettes_and_indices_are_refused(palette, pixels, match):
    with pytest.raises(ValueError, match=match):
        encode_png8(np.asarray(pixels, np.uint8), palette=palette)


@pytest.mark.parametrize("key", ["", "k" * 80, "two  spaces", " lead", "trail ", "tab\tkey", "nul\0", "ключ", "new\nline"])
def test_invalid_text_keywords_are_refused(key):
    with pytest.raises(ValueError, match="invalid PNG text keyword"):
        encode_png8(np.zeros((2, 2), np.uint8), metadata={key: "v"})
    with pytest.raises(ValueError, match="invalid PNG text keyword"):
        save_png(io.BytesIO(), np.zeros((2, 2, 3), np.uint8), metadata={key: "v"})  # the RGB (Pillow) road too


def test_valid_keywords_and_unicode_values_round_trip():
    meta = {"Software": "cnnviz", "k" * 79: "x", "layer name": "фото 写真", "Ä": "latin-1 key"}
    data = encode_png8(np.zeros((2, 3), np.uint8), metadata=meta)
    assert_png_valid(data)
    assert _decode(data).text == meta


@pytest.mark.parametrize("transparency, match", [
    (4, "transparent index 4 is not in the palette of 4"),
    (-1, "transparent index -1"),
    (bytes(5), "5 alpha values for a palette of 4"),
    (b"", "0 alpha values"),
])
def test_bad_palette_transparency_is_refused(transparency, match):
    with pytest.raises(ValueError, match=match):
        encode_png8(np.zeros((2, 2), np.uint8), palette=PAL, transparency=transparency)


def test_grey_transparency_out_of_range_is_refused():
    with pytest.raises(ValueError, match="grey level 0..255"):
        encode_png8(np.zeros((2, 2), np.uint8), transparency=256)
    with pytest.raises(ValueError, match="grey level"):
        encode_png8(np.zeros((2, 2), np.uint8), transparency=b"\0")


def test_transparency_is_written_and_read_back():
    px = np.array([[0, 1], [2, 3]], np.uint8)
    # palette: one transparent index
    im = _decode(encode_png8(px, palette=PAL, transparency=2))
    assert im.mode == "P" and im.info["transparency"] == 2
    assert np.asarray(im.convert("RGBA"))[..., 3].tolist() == [[255, 255], [0, 255]]
    # palette: per-entry alpha
    im = _decode(encode_png8(px, palette=PAL, transparency=bytes([10, 20, 30])))
    assert np.asarray(im.convert("RGBA"))[..., 3].tolist() == [[10, 20], [30, 255]]
    # greyscale: one grey level
    g = np.array([[0, 7], [7, 255]], np.uint8)
    im = _decode(encode_png8(g, transparency=7))
    assert im.mode == "L" and im.info["transparency"] == 7
    assert np.asarray(im.convert("RGBA"))[..., 3].tolist() == [[255, 0], [0, 255]]


def test_pil_images_keep_their_transparency_through_save_png():
    buf = io.BytesIO()
    p = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
    p.putpalette(list(PAL) + [0] * (768 - len(PAL)))
    p.info["transparency"] = 1
    save_png(buf, p)
    assert _decode(buf.getvalue()).info["transparency"] == 1
    buf = io.BytesIO()
    g = Image.fromarray(np.array([[0, 9]], np.uint8), "L")
    g.info["transparency"] = 9
    save_png(buf, g)
    im = _decode(buf.getvalue())
    assert im.info["transparency"] == 9 and np.asarray(im.convert("RGBA"))[..., 3].tolist() == [[255, 0]]


def test_assert_png_valid_catches_what_decoding_misses():
    """Pillow decodes a PNG whose IDAT CRC is wrong without complaint: verify() is needed."""
    data = bytearray(encode_png8(np.arange(64, dtype=np.uint8).reshape(8, 8)))
    i = data.index(b"IDAT")
    n = int.from_bytes(data[i - 4 : i], "big")
    data[i + 4 + n] ^= 0xFF  # first byte of IDAT's CRC
    assert np.asarray(_decode(bytes(data))).tolist() == np.arange(64).reshape(8, 8).tolist()  # decodes anyway
    with pytest.raises(Exception):
        assert_png_valid(bytes(data))


def test_every_written_png_is_checked_by_the_autouse_fixture(tmp_path):
    import cnnviz.io

    bad = bytearray(encode_png8(np.zeros((2, 2), np.uint8)))
    bad[-5] ^= 1  # IEND's CRC
    with pytest.raises(Exception):
        cnnviz.io.write_atomic(tmp_path / "x.png", bytes(bad))
    assert not (tmp_path / "x.png").exists()
