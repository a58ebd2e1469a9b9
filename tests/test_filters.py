"""`cnnviz filters` and cnnviz.filters: grid geometry, value mapping, 1x1 heatmaps, paging, CLI.

Expected pixels are computed here from the weights with plain NumPy/matplotlib formulas, not by
calling the rendering code under test.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from PIL import Image

from cnnviz import filters as F
from cnnviz.errors import SelectionError, UsageError
from cnnviz.render import label_tiles, legend_strip

B = 4  # white border around every page


def cmap_rgb(name: str, x: float) -> np.ndarray:
    """Independent expectation: matplotlib's colour at x in [0, 1], as 0..255 ints (palette has
    193 levels, so x is first snapped to the nearest of them)."""
    x = round(x * 192) / 192
    return np.rint(np.asarray(matplotlib.colormaps[name](x)[:3]) * 255).astype(int)


def rnd(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ geometry and values


def test_rgb_grid_geometry_gap_and_pixel_values():
    w = rnd((5, 3, 3, 3))
    (page,) = F.render_filters(w, legend=False, tile_px=6, gap=2)
    img = page.image
    # 5 tiles -> 2 rows x 3 cols; 3x3 kernels upscaled x2 -> 6 px tiles; 2 px gaps; 4 px border
    assert page.plan.mode == "rgb" and page.plan.scale == 2
    assert img.shape == (2 * 6 + 2 + 2 * B, 3 * 6 + 2 * 2 + 2 * B, 3)
    m = np.abs(w).max()
    for k in range(5):
        r, c = divmod(k, 3)
        y0, x0 = B + r * 8, B + c * 8
        for i in range(3):
            for j in range(3):
                expect = np.rint((w[k, :, i, j] / (2 * m) + 0.5) * 255)
                block = img[y0 + 2 * i : y0 + 2 * i + 2, x0 + 2 * j : x0 + 2 * j + 2].reshape(-1, 3)
                assert (block == expect).all(), (k, i, j)
    assert (img[B + 6 : B + 8, B : B + 6] == 255).all()  # gap between rows: white
    assert (img[B : B + 6, B + 6 : B + 8] == 255).all()  # gap between columns
    assert (img[B + 8 : B + 14, B + 16 :] == 255).all()  # 6th cell of the 2x3 grid is empty


def test_first_layer_64_filters_is_8x8_with_readable_tiles():
    w = rnd((64, 3, 7, 7))
    (page,) = F.render_filters(w, legend=False)
    assert page.plan.cols == 8 and page.plan.scale == 7  # 7 px kernel -> 49 px >= 48 px
    assert page.image.shape[:2] == (8 * 49 + 7 * 2 + 2 * B,) * 2
    assert F.plan_filters(w.shape, labels=True).cols == 8  # label bands do not change the layout
    assert F.plan_filters((128, 128, 1, 7)).cols < 12  # 1x7 kernels: near-square in pixels, not tiles


def test_rgb_channel_order_and_zero_is_mid_grey():
    w = np.zeros((2, 3, 3, 3), np.float32)
    w[0, 0] = 1.0  # filter 0: only input channel 0 (red) positive
    w[1, 2] = -1.0  # filter 1: only channel 2 (blue) negative
    t = F.rgb_tiles(w)
    assert t.shape == (2, 3, 3, 3)
    assert (t[0] == [255, 128, 128]).all()
    assert (t[1] == [128, 128, 0]).all()


def test_symmetric_layer_scale_maps_zero_to_neutral_colour():
    w = rnd((4, 8, 3, 3))
    w[2] = 0.0  # a dead filter
    t = F.mean_tiles(w, cmap="RdBu_r")
    assert (t[2] == cmap_rgb("RdBu_r", 0.5)).all()
    means = w.mean(axis=1)
    m = np.abs(means).max()
    k, i, j = np.unravel_index(np.abs(means).argmax(), means.shape)
    end = 1.0 if means[k, i, j] > 0 else 0.0
    assert (t[k, i, j] == cmap_rgb("RdBu_r", end)).all()
    # layer scale: every tile on the same scale -> compare an arbitrary pixel
    assert (t[1, 0, 0] == cmap_rgb("RdBu_r", means[1, 0, 0] / (2 * m) + 0.5)).all()


def test_minmax_maps_layer_min_and_max_to_ends():
    w = rnd((6, 3, 3, 3), seed=3)
    t = F.rgb_tiles(w, norm="minmax")
    lo_at = np.unravel_index(w.argmin(), w.shape)
    hi_at = np.unravel_index(w.argmax(), w.shape)
    assert t[lo_at[0], lo_at[2], lo_at[3], lo_at[1]] == 0
    assert t[hi_at[0], hi_at[2], hi_at[3], hi_at[1]] == 255
    tm = F.mean_tiles(w, norm="minmax", cmap="viridis")
    means = w.mean(axis=1)
    k = np.unravel_index(means.argmin(), means.shape)
    assert (tm[k] == cmap_rgb("viridis", 0.0)).all()


def test_filter_norm_scales_each_filter_to_its_own_extreme():
    w = rnd((3, 3, 3, 3))
    w[1] *= 1000  # one huge filter must not wash out the others
    t = F.rgb_tiles(w, norm="filter")
    for k in range(3):
        f = np.abs(w[k])
        _c, i, j = np.unravel_index(f.argmax(), f.shape)
        assert t[k, i, j, _c] in (0, 255)
    assert t[0].std() > 20  # not flat grey


def test_render_is_pure():
    w = rnd((8, 4, 3, 3))
    keep = w.copy()
    for mode in ("mean", "channels"):
        F.render_filters(w, mode=mode, labels=True)
    F.render_filters(rnd((8, 4, 1, 1)))
    assert np.array_equal(w, keep)


def test_channels_mode_grid_is_filters_by_channels():
    w = rnd((5, 4, 3, 3))
    (page,) = F.render_filters(w, mode="channels", legend=False, tile_px=3, gap=1, cmap="viridis")
    img = page.image
    assert page.plan.cols == 4 and page.plan.scale == 1
    assert img.shape[:2] == (5 * 3 + 4 + 2 * B, 4 * 3 + 3 + 2 * B)
    m = np.abs(w).max()
    for f in range(5):
        for c in range(4):
            y, x = B + f * 4 + 1, B + c * 4 + 2  # centre row/right column of tile (f, c)
            assert (img[y, x] == cmap_rgb("viridis", w[f, c, 1, 2] / (2 * m) + 0.5)).all()


def test_channels_mode_caps_with_a_message():
    plan = F.plan_filters((64, 128, 3, 3), mode="channels")
    assert len(plan.filters) == 32 and len(plan.channels) == 32
    assert any("first 32 of 64 filters" in n for n in plan.notes)
    assert any("first 32 of 128 channels" in n for n in plan.notes)
    plan = F.plan_filters((64, 128, 3, 3), mode="channels", max_filters=0, max_channels=5, filters="10:20")
    assert plan.filters == list(range(10, 20)) and plan.channels == list(range(5))


def test_1x1_kernels_render_as_heatmap_with_note():
    w = rnd((6, 4, 1, 1))
    (page,) = F.render_filters(w, mode="mean", legend=False, cmap="RdBu_r")
    assert page.plan.mode == "heatmap"
    assert "heatmap" in page.metadata["note"] and page.metadata["mode"] == "heatmap"
    assert any("heatmap instead" in n for n in page.plan.notes)
    s = page.plan.scale
    assert page.image.shape[:2] == (6 * s + 2 * B, 4 * s + 2 * B)
    m = np.abs(w).max()
    for f in range(6):
        for c in range(4):
            px = page.image[B + f * s + s // 2, B + c * s + s // 2]
            assert (px == cmap_rgb("RdBu_r", w[f, c, 0, 0] / (2 * m) + 0.5)).all()


def test_large_layers_page_within_max_side():
    plan = F.plan_filters((2048, 8, 3, 3), max_side=1024)
    assert len(plan.pages) > 1
    assert sorted(i for p in plan.pages for i in p) == list(range(2048))
    assert any("pages" in n for n in plan.notes)
    pages = list(F.render_plan(rnd((2048, 8, 3, 3)), plan))
    assert all(max(p.shape) <= 1024 for p in pages)
    assert [p.page for p in pages] == list(range(1, len(plan.pages) + 1))
    # the default limit: a 2048x2048 layer in channels mode without caps stays <= 8192 px
    big = F.plan_filters((2048, 2048, 3, 3), mode="channels", max_filters=0, max_channels=0)
    pitch = 3 * big.scale + big.gap
    assert big.cols * pitch <= 8192 and len(big.pages[0]) * pitch <= 8192
    assert any("channels" in n and "exceed" in n for n in big.notes)


@pytest.mark.parametrize("shape, mode", [((300, 3, 11, 11), "auto"), ((40, 300, 3, 3), "channels"), ((700, 600, 1, 1), "auto")])
def test_every_page_with_legend_and_labels_stays_within_max_side(shape, mode):
    w = rnd(shape)
    pages = F.render_filters(w, mode=mode, labels=True, tile_px=200, max_side=256, max_filters=0, max_channels=0,
                             title="a long title that would make the caption wider than the page allows")
    assert pages and all(max(p.shape) <= 256 for p in pages)
    assert sorted(i for p in pages for i in p.filters) == list(range(shape[0]))


def test_resnet50_largest_1x1_fits_one_page():
    (page,) = F.render_filters(rnd((2048, 1024, 1, 1)), legend=True)
    assert page.plan.scale == 1 and max(page.shape) <= 8192
    assert page.pil().mode == "P"


def test_bad_requests_raise_usage_errors():
    with pytest.raises(UsageError, match="3 input channels"):
        F.plan_filters((8, 16, 3, 3), mode="rgb")
    with pytest.raises(SelectionError, match="out of range"):
        F.plan_filters((8, 3, 3, 3), filters="8")
    with pytest.raises(SelectionError):
        F.plan_filters((8, 3, 3, 3), filters="0:x")
    with pytest.raises(UsageError, match="--inputs"):
        F.plan_filters((8, 16, 3, 3), mode="mean", channels="0:4")
    with pytest.raises(UsageError, match="colormap"):
        F.plan_filters((8, 16, 3, 3), cmap="virdis")
    with pytest.raises(UsageError, match="shape"):
        F.render_filters(np.zeros((3, 3, 3), np.float32))


def test_nonfinite_weights_do_not_poison_the_scale():
    w = rnd((4, 3, 3, 3))
    w[0, 0, 0, 0] = np.nan
    t = F.rgb_tiles(w)
    assert t[1].std() > 5
    assert np.isfinite(list(F.weight_stats(w).values())).all()


def test_label_tiles_and_legend_strip():
    tiles = np.zeros((3, 10, 30, 3), np.uint8)
    out = label_tiles(tiles, ["0", "1", "2047"])
    assert out.shape[0] == 3 and out.shape[2:] == (30, 3) and out.shape[1] > 10
    assert (out[:, -10:] == 0).all()  # pixels of the tile untouched, label band above
    assert (out[:, : out.shape[1] - 10] < 255).any()  # some text drawn
    strip = legend_strip(-2.0, 2.0, width=300, cmap="viridis", caption="x")
    lut = np.rint(np.asarray(matplotlib.colormaps["viridis"]([0.0, 1.0]))[:, :3] * 255)
    assert strip.shape[1] == 300
    row = strip[8]  # inside the colour bar (4 px margin, 10 px high)
    assert (row[4] == lut[0]).all() and (row[4 + 255] == lut[1]).all()


# ------------------------------------------------------------------ CLI


def png(path_or_bytes):
    im = Image.open(path_or_bytes if not isinstance(path_or_bytes, bytes) else io.BytesIO(path_or_bytes))
    return im, np.asarray(im.convert("RGB"))


def test_cli_writes_named_png_with_metadata_and_json(cli, tmp_path):
    r = cli("filters", "-m", "resnet18", "-w", "none", "-l", "0,layer2.0.downsample.0", "-o", str(tmp_path), "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["path"] for rec in recs] == [
        str(tmp_path / "resnet18-00-conv1-filters.png"),
        str(tmp_path / "resnet18-07-layer2.0.downsample.0-filters.png"),
    ]
    for key in ("path", "layer", "name", "mode", "shape", "min", "max", "mean", "std"):
        assert key in recs[0]
    assert recs[0]["mode"] == "rgb" and recs[0]["shape"] == [64, 3, 7, 7] and recs[0]["layer"] == 0
    assert recs[1]["mode"] == "heatmap" and recs[1]["shape"] == [128, 64, 1, 1]
    import torch

    from cnnviz.models import build_model

    w = build_model("resnet18").conv1.weight.detach().numpy()
    assert recs[0]["min"] == pytest.approx(float(w.min())) and recs[0]["std"] == pytest.approx(float(w.std()), rel=1e-4)
    im, _ = png(recs[1]["path"])
    assert im.text["mode"] == "heatmap" and "heatmap" in im.text["note"] and im.text["shape"] == "128x64x1x1"
    assert im.text["norm"] == "layer" and im.text["filters"] == "0-127" and im.text["weights"] == "none"
    assert "torch" in sys.modules and torch  # (weights came from torch)


def test_cli_paths_on_stdout_messages_on_stderr(cli, tmp_path):
    r = cli("filters", "-m", "resnet18", "-w", "none", "-l", "layer1.0.conv1", "--mode", "channels",
            "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "resnet18-01-layer1.0.conv1-filters-channels-f0-31-c0-31.png")
    assert "first 32 of 64 filters" in r.stderr and "first 32 of 64 channels" in r.stderr


def test_cli_stdout_png_and_its_limits(cli, tmp_path):
    r = cli("filters", "-m", "resnet18", "-w", "none", "--channels", "0:16", "-o", "-")
    assert r.exit_code == 0, r.stderr
    im, a = png(r.stdout_bytes)
    assert im.format == "PNG" and im.text["filters"] == "0-15"
    r = cli("filters", "-m", "resnet18", "-w", "none", "-l", "0:2", "-o", "-")
    assert r.exit_code == 2 and "exactly one PNG" in r.stderr and r.stdout == ""


def test_cli_paging_file_names(cli, tmp_path):
    r = cli("filters", "-m", "resnet18", "-w", "none", "-l", "layer4.1.conv2", "--max-side", "512", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) > 1 and paths[0].endswith("resnet18-19-layer4.1.conv2-filters-p01.png")
    for p in paths:
        assert max(Image.open(p).size) <= 512
    assert sorted(paths) == paths


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--channels", "64"], 2, "filter index 64 out of range"),
        (["--channels", "1:x"], 2, "malformed"),
        (["-l", "layer1.0.conv2", "--mode", "rgb"], 2, "3 input channels"),
        (["--cmap", "virdis"], 2, "unknown colormap"),
        (["-l", "nope"], 2, "unknown layer"),
        (["-l", "layer1.0.conv2", "--inputs", "0:3"], 2, "--inputs"),
        (["--json", "-o", "-"], 2, "stdout"),
    ],
)
def test_cli_bad_requests_one_line_exit_2(cli, tmp_path, args, code, message):
    r = cli("filters", "-m", "resnet18", "-w", "none", "-o", str(tmp_path), *args)
    assert r.exit_code == code
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_default_weights_offline_is_exit_1(cli, tmp_path):
    r = cli("filters", "-m", "resnet18", "-o", str(tmp_path))
    assert r.exit_code == 1 and "cnnviz: error:" in r.stderr and "Traceback" not in r.stderr


def test_cli_help_has_examples_and_does_not_import_torch():
    code = "import sys; from cnnviz.cli import cli; cli(['filters', '--help'])"
    out = subprocess.run([sys.executable, "-c", code + ""], capture_output=True, text=True)
    assert out.returncode == 0 and "Examples:" in out.stdout and "--norm" in out.stdout
    probe = "import sys; import cnnviz.cli.filters; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.slow
def test_vgg16_and_resnet50_first_layers_are_8x8_grids(cli, tmp_path):
    from cnnviz.models import build_model

    for model, k, scale in (("vgg16", 3, 16), ("resnet50", 7, 7)):
        r = cli("filters", "-m", model, "-w", "none", "-o", str(tmp_path), "--no-captions")
        assert r.exit_code == 0, r.stderr
        _im, a = png(r.stdout.strip())
        t = k * scale
        assert a.shape[:2] == (8 * t + 7 * 2 + 2 * B,) * 2
        w = build_model(model).get_submodule("features.0" if model == "vgg16" else "conv1").weight.detach().numpy()
        m = np.abs(w).max()
        for f in (0, 9, 63):  # tile f at row f // 8, column f % 8; its kernel pixel (1, 2)
            y = B + (f // 8) * (t + 2) + scale * 1 + scale // 2
            x = B + (f % 8) * (t + 2) + scale * 2 + scale // 2
            assert (a[y, x] == np.rint((w[f, :, 1, 2] / (2 * m) + 0.5) * 255)).all()
