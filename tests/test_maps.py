"""`cnnviz maps` and cnnviz.maps: pictures checked on tiny arrays, captures against independent
computations (torchvision transforms + the model's submodules run by hand), CLI contract."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from cnnviz.errors import SelectionError, UsageError
from cnnviz.maps import (
    SheetRow,
    choose_channels,
    iter_batches,
    layer_stats,
    render_grid,
    render_sheet,
    resize_maps,
    scale_maps,
    stream_maps,
)
from cnnviz.models import IMAGENET_MEAN, IMAGENET_STD, build_model

from conftest import run_cli  # noqa: E402  (tests/ is on sys.path under pytest)

GRAY = "gray"


def _maps(c=4, h=3, w=5, seed=0):
    return np.random.default_rng(seed).normal(size=(c, h, w)).astype(np.float32)


# ---------------------------------------------------------------- pictures on tiny arrays


def test_grid_geometry_tiles_and_gaps():
    g = render_grid(_maps(c=5, h=3, w=5), tile=6, gap=2, labels=False, legend=False)
    # 5 tiles -> 2 x 3 grid; factor ceil(6/3) = 2 -> tiles 6 x 10; gaps of 2 between, none outside.
    assert g.image.shape == (2 * 6 + 2, 3 * 10 + 2 * 2, 3)
    assert g.image.dtype == np.uint8
    assert (g.image[6:8] == 255).all() and (g.image[:, 10:12] == 255).all()
    assert (g.image[8:, 2 * 12 :] == 255).all()  # the unused sixth cell is background


def test_per_map_normalisation_min_black_max_white_constant_flat():
    m = np.zeros((3, 2, 2), np.float32)
    m[0] = [[1, 2], [3, 5]]
    m[1] = [[-4, 0], [0, 0]]
    m[2] = 7.0  # constant: a flat tile, not NaN
    g = render_grid(m, cmap=GRAY, tile=1, gap=0, cols=3, labels=False, legend=False)
    t0, t1, t2 = g.image[:, 0:2, 0], g.image[:, 2:4, 0], g.image[:, 4:6, 0]
    assert t0[0, 0] == 0 and t0[1, 1] == 255 and t0[0, 1] == 64  # (2-1)/4 -> 63.75 -> 64
    assert t1[0, 0] == 0 and (t1.ravel()[1:] == 255).all()
    assert (t2 == t2[0, 0]).all()


def test_layer_normalisation_is_one_shared_scale():
    m = np.zeros((2, 1, 2), np.float32)
    m[0] = [[0, 10]]
    m[1] = [[0, 5]]
    per_map = render_grid(m, cmap=GRAY, tile=1, gap=0, cols=2, labels=False, legend=False).image[0, :, 0]
    layer = render_grid(m, cmap=GRAY, norm="layer", tile=1, gap=0, cols=2, labels=False, legend=False)
    assert list(per_map) == [0, 255, 0, 255]
    assert list(layer.image[0, :, 0]) == [0, 255, 0, 128]
    assert layer.value_range == (0.0, 10.0)


def test_symmetric_puts_zero_in_the_middle():
    m = np.array([[[-2.0, 0.0, 1.0]]], np.float32)
    x01, _ = scale_maps(m, [0], symmetric=True)
    np.testing.assert_allclose(x01[0, 0], [0.0, 0.5, 0.75])


def test_top_k_ranks_by_mean_activation_with_ties_by_index():
    m = np.zeros((5, 2, 2), np.float32)
    for c, v in enumerate([1.0, 3.0, 2.0, 3.0, -1.0]):
        m[c] = v
    idx, scores = choose_channels(m, top=3)
    assert idx == [1, 3, 2] and scores == [3.0, 3.0, 2.0]
    idx, _ = choose_channels(m, channels="0,2,4", top=2)
    assert idx == [2, 0]
    assert choose_channels(m, top=99)[0] == [1, 3, 2, 0, 4]
    assert choose_channels(m, channels="-1")[0] == [4]
    g = render_grid(m, top=2, tile=1, labels=False, legend=False)
    assert g.channels == [1, 3] and g.scores == [3.0, 3.0]


def test_channel_selector_errors_name_the_layer():
    with pytest.raises(SelectionError, match="layer features.0 has 4 channels"):
        choose_channels(_maps(), channels="7", layer_name="features.0")
    with pytest.raises(SelectionError):
        choose_channels(_maps(), channels="a:b")
    with pytest.raises(UsageError):
        render_grid(_maps(), norm="global")


def test_render_functions_do_not_modify_their_input():
    m = _maps()
    img = np.random.default_rng(1).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    m0, img0 = m.copy(), img.copy()
    render_grid(m, top=2, norm="layer", overlay=img, title="t")
    render_sheet([SheetRow("a", normalize01(m), [0, 1, 2, 3])], overlay=img, tile=12)
    resize_maps(m, (7, 9))
    assert np.array_equal(m, m0) and np.array_equal(img, img0)


def normalize01(m):
    return scale_maps(m, range(m.shape[0]))[0]


def test_resize_bilinear_and_area_match_torch():
    m = _maps(c=3, h=5, w=7)
    t = torch.from_numpy(m)[None]
    up = F.interpolate(t, size=(13, 17), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize_maps(m, (13, 17), mode="bilinear"), up, atol=1e-5)
    big = _maps(c=2, h=12, w=20)
    down = F.interpolate(torch.from_numpy(big)[None], size=(4, 5), mode="area")[0].numpy()
    np.testing.assert_allclose(resize_maps(big, (4, 5), mode="area"), down, atol=1e-5)


def test_overlay_alpha_zero_is_the_image_and_one_is_the_map():
    m = _maps(c=2, h=2, w=3)
    img = np.random.default_rng(2).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    g0 = render_grid(m, overlay=img, alpha=0.0, tile=1, gap=0, cols=2, labels=False, legend=False)
    assert np.array_equal(g0.image[:, :6], img) and np.array_equal(g0.image[:, 6:], img)
    g1 = render_grid(m, overlay=img, alpha=1.0, cmap=GRAY, tile=1, gap=0, cols=2, labels=False, legend=False)
    big = resize_maps(normalize01(m), (4, 6))
    for k in range(2):
        tile = g1.image[:, 6 * k : 6 * k + 6].astype(np.float64)
        # opacity follows the map: photo where the map is at its minimum, pure colour at its maximum
        expected = (1 - big[k])[..., None] * img + big[k][..., None] * np.rint(big[k] * 255)[..., None]
        np.testing.assert_allclose(tile, expected, atol=1.01)


def test_sheet_rows_of_different_resolution_line_up():
    rows = [SheetRow("big", normalize01(_maps(c=3, h=16, w=16)), [0, 1, 2]),
            SheetRow("small", normalize01(_maps(c=3, h=2, w=2)), [5, 6, 7])]
    out = render_sheet(rows, tile=24, gap=2, labels=False)
    bare = render_sheet(rows[1:], tile=24, gap=2, labels=False)
    assert out.ndim == 3 and out.dtype == np.uint8
    assert out.shape[1] == bare.shape[1] or out.shape[1] > 3 * 24  # same tile widths
    assert out.shape[0] > 2 * 24


def test_layer_stats_zero_fraction():
    m = np.zeros((2, 2, 2), np.float32)
    m[0, 0, 0] = 4.0
    s = layer_stats(m)
    assert s == {"shape": [2, 2, 2], "mean": 0.5, "min": 0.0, "max": 4.0, "zero_fraction": 7 / 8}


def test_iter_batches_groups_consecutive_same_shape():
    items = [(1, 2), (1, 2), (1, 2), (3, 4), (1, 2)]
    got = list(iter_batches(items, batch_size=2, key=lambda t: t))
    assert got == [[(1, 2), (1, 2)], [(1, 2)], [(3, 4)], [(1, 2)]]
    with pytest.raises(UsageError):
        list(iter_batches(items, batch_size=0, key=lambda t: t))


def test_stream_maps_releases_each_layer_and_matches_capture(tiny_vgg):
    from cnnviz.capture import capture
    from cnnviz.layers import conv_layers

    layers = conv_layers(tiny_vgg)
    x = torch.randn(2, 3, 16, 16)
    ref = capture(tiny_vgg, x, layers, stage="act")
    refs, got = [], {}

    def on_layer(b, layer, arr):
        refs.append(weakref.ref(arr))
        got[layer.name] = arr.copy()

    stream_maps(tiny_vgg, layers, [x], stage="act", on_layer=on_layer)
    gc.collect()
    assert all(r() is None for r in refs), "layer outputs must not outlive their callback"
    for n, t in ref.items():
        np.testing.assert_array_equal(got[n], t.numpy())


# ---------------------------------------------------------------- image input


def _read(paths, **kw):
    from cnnviz.jobs.inputs import ImageInputs
    from cnnviz.models import LoadedModel

    lm = LoadedModel(model=None, name="x", weights="none")  # type: ignore[arg-type]
    opts = {"sample": False, "size": None, "crop": False, "max_pixels": None} | kw
    return list(ImageInputs(images=tuple(str(p) for p in paths), **opts).read(lm))


def test_image_modes_become_rgb(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((20, 30), 100, np.uint8), "L").save(gray)
    rgba = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 4), np.uint8), "RGBA").save(rgba)  # fully transparent
    pal = tmp_path / "p.gif"
    Image.fromarray(np.full((20, 30, 3), (200, 10, 10), np.uint8)).convert("P").save(pal)
    cmyk = tmp_path / "c.jpg"
    Image.new("CMYK", (30, 20), (0, 0, 0, 0)).save(cmyk)
    g16 = tmp_path / "d.png"
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(g16)
    rot = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 30 wide x 20 high, displayed 20 x 30
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(rot, exif=exif)
    out = {Path(im.source).name: im for im in _read([gray, rgba, pal, cmyk, g16, rot], size="20")}
    assert (out["g.png"].display == 100).all()
    assert (out["a.png"].display == 255).all()  # transparency flattened on white
    assert abs(int(out["p.gif"].display[..., 0].mean()) - 200) < 8
    assert out["c.jpg"].display.mean() > 250
    assert (out["d.png"].display == 255).all()
    assert out["g.png"].display.shape == (20, 30, 3) and out["r.jpg"].display.shape == (30, 20, 3)


def test_crop_equals_torchvision_classifier_transforms(sample_path):
    (im,) = _read([sample_path], crop=True)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    np.testing.assert_allclose(im.x, ref(Image.open(sample_path).convert("RGB")).numpy(), atol=1e-6)


def test_same_stem_twice_gets_distinct_labels(rgb_image):
    labels = [im.label for im in _read([rgb_image, rgb_image], size="16")]
    assert labels == ["img", "img_2"]


def test_max_pixels_default_in_help_is_the_real_limit():
    from cnnviz.cli.common import _MAX_PIXELS_HELP
    from cnnviz.io import DEFAULT_MAX_PIXELS

    assert _MAX_PIXELS_HELP == DEFAULT_MAX_PIXELS


# ---------------------------------------------------------------- CLI on VGG16 (random weights)


@pytest.fixture(scope="module")
def vgg_all(tmp_path_factory):
    """One run: every VGG16 layer, both stages, sheet, npy, json, classifier-style crop."""
    from cnnviz.io import sample_image_path

    out = tmp_path_factory.mktemp("maps")
    runs = {}
    for stage in ("conv", "act"):
        r = run_cli("maps", sample_image_path(), "-m", "vgg16", "-w", "none", "--layer", "all", "--stage", stage,
                    "--crop", "--sheet", "--npy", "--json", "--tile", "8", "-o", str(out / stage))
        assert r.exit_code == 0, r.stderr
        runs[stage] = (out / stage, [json.loads(line) for line in r.stdout.splitlines()])
    return runs


def test_layer_all_sheet_writes_13_grids_and_a_sheet(vgg_all):
    folder, recs = vgg_all["act"]
    grids = [r for r in recs if r.get("kind") != "sheet"]
    sheets = [r for r in recs if r.get("kind") == "sheet"]
    assert len(grids) == 13 and len(sheets) == 1
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(Path(r["path"]).name for r in recs)
    assert Path(grids[0]["path"]).name == "grace_hopper-vgg16-00-features.0-maps-act-tile8-crop.png"
    assert Path(sheets[0]["path"]).name == "grace_hopper-vgg16-sheet-act-crop.png"
    assert sheets[0]["layers"] == list(range(13))
    r = grids[4]
    assert set(r) >= {"path", "npy", "image", "layer", "name", "stage", "shape", "mean", "max", "zero_fraction"}
    assert (r["layer"], r["name"], r["alias"], r["stage"], r["shape"]) == (4, "features.10", "block3_conv1", "act", [256, 56, 56])
    assert not list(folder.glob(".cnnviz-*"))  # no temp files left behind


def test_npy_equals_an_independent_computation(vgg_all, sample_path):
    net = build_model("vgg16", seed=0).eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = tf(Image.open(sample_path).convert("RGB"))[None]
    convs = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        h = x
        for k, i in enumerate(convs):
            h = net.features[i](net.features[convs[k - 1] + 1 : i](h) if k else h)
            for stage, ref in (("conv", h), ("act", torch.relu(h))):
                rec = vgg_all[stage][1][k]
                got = np.load(rec["npy"])
                assert got.dtype == np.float32 and got.shape == tuple(ref.shape[1:])
                np.testing.assert_allclose(got, ref[0].numpy(), rtol=0, atol=1e-5, err_msg=f"{stage} {k}")
                assert rec["mean"] == pytest.approx(float(got.mean()), rel=1e-5, abs=1e-6)
                assert rec["zero_fraction"] == pytest.approx(float((got == 0).mean()))
            assert vgg_all["conv"][1][k]["zero_fraction"] < 0.01 and np.load(vgg_all["conv"][1][k]["npy"]).min() < 0
            assert np.load(vgg_all["act"][1][k]["npy"]).min() >= 0


def test_top_k_ranks_recorded_in_png_metadata(tmp_path, rgb_image):
    r = run_cli("maps", str(rgb_image), "-m", "vgg16", "-w", "none", "-l", "block2_conv1", "--stage", "act",
                "--top", "5", "--npy", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    means = np.load(rec["npy"]).mean(axis=(1, 2))
    expected = sorted(range(len(means)), key=lambda i: (-means[i], i))[:5]
    meta = Image.open(rec["path"]).text
    assert json.loads(meta["channels"]) == expected == rec["channels"]
    np.testing.assert_allclose(json.loads(meta["scores"]), means[expected], rtol=1e-4)
    assert meta["stage"] == "act" and meta["name"] == "features.5" and meta["weights"] == "none"


def test_batch_equals_single_images(tmp_path, rgb_image):
    other = tmp_path / "other.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(other)
    res = {}
    for bs in ("1", "2"):
        out = tmp_path / f"bs{bs}"
        r = run_cli("maps", str(rgb_image), str(other), "-m", "vgg16", "-w", "none", "-l", "0,4,12", "--npy",
                    "--batch-size", bs, "--size", "32", "--json", "-o", str(out))
        assert r.exit_code == 0, r.stderr
        recs = [json.loads(line) for line in r.stdout.splitlines()]
        res[bs] = {Path(rec["npy"]).name: np.load(rec["npy"]) for rec in recs}
    assert len(res["1"]) == 6 and res["1"].keys() == res["2"].keys()
    for name, a in res["1"].items():
        np.testing.assert_allclose(a, res["2"][name], rtol=0, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------- CLI on ResNet-50 and streams


def test_resnet50_layer_10_default_model(tmp_path, rgb_image):
    r = run_cli("maps", str(rgb_image), "-w", "none", "--layer", "10", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "img-resnet50-10-layer1.2.conv3-maps.png")
    assert Image.open(r.stdout.strip()).mode == "P"  # colour-mapped grids are palette PNGs
    assert "resnet50" in r.stderr


def test_stdin_image_to_stdout_png(rgb_image):
    r = run_cli("maps", "-", "-m", "vgg16", "-w", "none", "-l", "0", "-o", "-", "--overlay", input=rgb_image.read_bytes())
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    from io import BytesIO

    assert Image.open(BytesIO(r.stdout_bytes)).text["image"] == "-"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--sample", "-l", "99"], 2, "layer index 99 out of range"),
        (["--sample", "-l", "0", "--channels", "64"], 2, "layer features.0 has 64 channels"),
        (["--sample", "-l", "0", "--cmap", "viridiss"], 2, "unknown colormap 'viridiss' (did you mean 'viridis'"),
        (["-l", "0"], 2, "no input image"),
        (["nope.jpg", "-l", "0"], 1, "image 'nope.jpg' does not exist"),
        (["--sample", "-l", "0,1", "-o", "-"], 2, "-o - streams exactly one PNG"),
        (["--sample", "-l", "0", "--npy", "-o", "-"], 2, "-o - streams exactly one PNG"),
        (["--sample", "-l", "0", "--size", "0"], 2, "--size 0 out of range"),
        (["--sample", "-l", "0", "--crop", "--size", "20x30"], 2, "--crop takes a single --size"),
        (["-", "-", "-l", "0"], 2, "'-' (stdin) can be given only once"),
    ],
)
def test_bad_requests_one_line_and_exit_code(args, code, message):
    r = run_cli("maps", *args, "-m", "vgg16", "-w", "none")
    assert r.exit_code == code
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cnnviz: error: ")
    assert message in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_corrupt_image_is_a_runtime_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = run_cli("maps", str(bad), "-m", "vgg16", "-w", "none", "-l", "0", "-o", str(tmp_path))
    assert r.exit_code == 1 and "bad.jpg" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.png"))


def test_help_has_examples_and_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from cnnviz.cli import cli; "
            "r = CliRunner().invoke(cli, ['maps', '--help']); print(r.output); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Examples:" in out and "--stage" in out and "--sheet" in out
    assert out.strip().splitlines()[-1] == "False"


def test_symmetric_overlay_shows_negative_responses_and_hides_zero():
    from cnnviz.maps import render_grid

    photo = np.full((4, 4, 3), 100, np.uint8)
    m = np.zeros((1, 4, 4), np.float32)
    m[0, 0, 0], m[0, 3, 3] = -5.0, 5.0
    g = render_grid(m, symmetric=True, overlay=photo, alpha=1.0, tile=4, labels=False, legend=False, cmap="RdBu_r").image
    assert (g[1, 1] == 100).all() and (g[2, 2] == 100).all()  # zero: the photo untouched
    assert not (g[0, 0] == 100).all() and not (g[3, 3] == 100).all()  # -5 and +5 both drawn
