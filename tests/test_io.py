"""Image reading (every mode to correct RGB), preprocessing, atomic writes, output names."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from cnnviz.errors import CnnvizError, ImageError, OutputError
from cnnviz.io import load_image, output_name, preprocess, save_npy, save_png, write_atomic


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_grayscale_and_16bit(tmp_path):
    g = Image.fromarray(np.full((8, 10), 100, np.uint8), "L")
    assert np.asarray(load_image(_save(g, tmp_path / "g.png"))).tolist()[0][0] == [100, 100, 100]
    a16 = np.full((8, 10), 128 * 257, np.uint16)  # 257 = 65535 / 255
    a16[0, 0] = 65535
    p = tmp_path / "g16.png"
    Image.fromarray(a16).save(p)
    rgb = np.asarray(load_image(p))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 10, 3)
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 1].tolist() == [128, 128, 128]


def test_rgba_is_flattened_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 255
    a[:2, :, 3] = 0  # top half fully transparent
    a[2:, :, 3] = 255
    rgb = np.asarray(load_image(_save(Image.fromarray(a, "RGBA"), tmp_path / "a.png")))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[3, 3].tolist() == [255, 0, 0]


def test_palette_gif_first_frame_and_cmyk(tmp_path):
    frames = [Image.new("RGB", (6, 6), c).convert("P") for c in ((0, 0, 255), (255, 0, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(p))[0, 0].tolist() == [0, 0, 255]
    cmyk = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # pure red in CMYK
    rgb = np.asarray(load_image(_save(cmyk, tmp_path / "c.jpg", quality=100)))
    assert rgb[3, 3, 0] > 240 and rgb[3, 3, 1] < 20 and rgb[3, 3, 2] < 20


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)  # landscape, left half white
    a[:, :10] = 255
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=100)
    out = np.asarray(load_image(p))
    assert out.shape == (20, 10, 3)  # displayed portrait
    assert out[2, 5].mean() > 200 and out[17, 5].mean() < 50  # white half is now on top


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not an image"), "not an image Pillow can read"),
    ],
)
def test_bad_files(tmp_path, make, fragment):
    p = tmp_path / "x.jpg"
    make(p)
    with pytest.raises(ImageError, match=fragment):
        load_image(p)


def test_truncated_jpeg(tmp_path, rgb_image):
    data = rgb_image.read_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(p)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(p)  # ~100 kB on disk, 900 M pixels
    assert os.path.getsize(p) < 2_000_000
    with pytest.raises(ImageError, match=r"30000x30000 = 900,000,000 pixels, over the limit.*--max-pixels"):
        load_image(p)
    with pytest.raises(ImageError, match="over the limit of 100"):
        load_image(_save(Image.new("RGB", (20, 20)), tmp_path / "s.png"), max_pixels=100)


def test_bytes_source(rgb_image):
    assert load_image(rgb_image.read_bytes()).size == (40, 30)
    with pytest.raises(ImageError, match="no image data on stdin"):
        load_image(b"")


def test_preprocess_shorter_side_and_crop():
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    x, disp = preprocess(img, size=100)
    assert x.shape == (3, 100, 200) and disp.shape == (100, 200, 3) and x.dtype == np.float32
    assert x[0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    x, _ = preprocess(img, size=100, crop=True)
    assert x.shape == (3, 100, 100)


def test_preprocess_crop_equals_torchvision_classifier_transforms(sample_path):
    import torch
    from torchvision import transforms as T

    img = load_image(sample_path)
    x, _ = preprocess(img, size=224, crop=True)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(img)
    assert torch.allclose(torch.from_numpy(x), ref, atol=0.05)  # PIL vs tensor resize rounding only
    x, _ = preprocess(Image.new("RGB", (200, 400)), size=(64, 48))
    assert x.shape == (3, 64, 48)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_escape_our_error(data):
    try:
        img = load_image(data)
    except CnnvizError:
        return
    assert img.mode == "RGB"


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"]),
    st.integers(1, 40), st.integers(1, 40), st.sampled_from(["PNG", "TIFF", "GIF", "JPEG", "BMP", "WEBP"]),
)
def test_fuzz_valid_images_of_any_mode(mode, w, h, fmt):
    rng = np.random.default_rng(w * 41 + h)
    img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).convert(mode if mode not in ("I", "I;16", "F") else "L")
    if mode in ("I", "I;16", "F"):
        img = img.convert("I").convert(mode) if mode != "I;16" else Image.fromarray((rng.random((h, w)) * 65535).astype(np.uint16))
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format: nothing to read
    out = load_image(buf.getvalue())  # a valid image Pillow wrote must be accepted, whatever its mode
    assert out.mode == "RGB" and out.size == (w, h)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_atomic(target, b"new data")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_save_png_with_metadata_and_npy(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    p = save_png(tmp_path / "a.png", a, metadata={"layer": 3, "name": "x"})
    img = Image.open(p)
    assert np.array_equal(np.asarray(img), a) and img.text["layer"] == "3" and img.text["name"] == "x"
    q = save_npy(tmp_path / "a.npy", a.astype(np.float32))
    assert np.array_equal(np.load(q), a.astype(np.float32))
    buf = io.BytesIO()
    assert save_png(buf, a) == "-" and buf.getvalue().startswith(b"\x89PNG")


def test_output_name_is_stable_and_sortable():
    assert output_name("resnet50", 3, "layer1.0.conv2", kind="filters") == "resnet50-03-layer1.0.conv2-filters.png"
    assert output_name("my photo", "vgg16", 12, "features.28", kind="maps", ext="npy") == "my_photo-vgg16-12-features.28-maps.npy"


@pytest.mark.parametrize("shape, scale", [((1, 1), 1), ((5, 9), 1), ((40, 33), 3), ((700, 900), 7)])
@pytest.mark.parametrize("with_palette", [True, False])
def test_png8_encoder_round_trips_exactly(shape, scale, with_palette, monkeypatch):
    import cnnviz.io as cio
    from cnnviz.render import palette

    monkeypatch.setattr(cio, "_PNG_CHUNK_BYTES", 1 << 16)  # several parallel deflate pieces
    rng = np.random.default_rng(sum(shape))
    a = np.repeat(np.repeat(rng.integers(0, 256, shape).astype(np.uint8), scale, 0), scale, 1)
    pal = palette("viridis").tobytes() if with_palette else None
    data = cio.encode_png8(a, palette=pal, metadata={"layer": 3, "note": "\u2212max|w| \u00b7 x"})
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.mode == ("P" if with_palette else "L")
    assert np.array_equal(np.asarray(img), a)
    assert img.text == {"layer": "3", "note": "\u2212max|w| \u00b7 x"}
    if with_palette:
        assert bytes(img.getpalette()[:768]) == pal


def test_save_png_uses_the_fast_path_for_palette_images(tmp_path):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    im = Image.fromarray(a)
    im.putpalette(bytes(range(256)) * 3)
    p = save_png(tmp_path / "p.png", im, metadata={"k": "v"})
    back = Image.open(p)
    assert back.mode == "P" and np.array_equal(np.asarray(back), a) and back.text["k"] == "v"


@pytest.mark.parametrize("palette_picture", [True, False])
def test_save_png_writes_a_picture_with_its_text_after_the_callers(tmp_path, palette_picture):
    from cnnviz.render import Picture, palette

    rng = np.random.default_rng(0)
    if palette_picture:
        pic = Picture(rng.integers(0, 256, (5, 7)).astype(np.uint8), palette("magma"), {"mode": "mean"}, transparency=3)
    else:
        pic = Picture(rng.integers(0, 256, (5, 7, 3)).astype(np.uint8), metadata={"mode": "rgb"})
    p = save_png(tmp_path / "p.png", pic, metadata={"Software": "cnnviz", "layer": 2})
    Image.open(p).verify()  # chunk CRCs and structure
    back = Image.open(p)
    assert list(back.text.items()) == [("Software", "cnnviz"), ("layer", "2"), ("mode", pic.metadata["mode"])]
    assert np.array_equal(np.asarray(back.convert("RGB")), pic.image)
    if palette_picture:
        assert back.mode == "P" and back.info["transparency"] == 3
        assert np.asarray(back.convert("RGBA"))[..., 3].tolist() == np.where(pic.pixels == 3, 0, 255).tolist()
