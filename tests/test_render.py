"""Pure array functions: geometry and value mapping on tiny arrays, and that inputs are never modified."""
from __future__ import annotations

import numpy as np
import pytest

from cnnviz.errors import UsageError
from cnnviz.render import check_cmap, colorize, grid_shape, normalize, tile_factor, tile_grid, upscale


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (64, (8, 8)), (10, (3, 4)), (2048, (45, 46)), (3, (2, 2))])
def test_grid_shape_near_square(n, shape):
    assert grid_shape(n) == shape
    rows, cols = grid_shape(n)
    assert rows * cols >= n > (rows - 1) * cols


def test_tile_grid_geometry_and_placement():
    tiles = np.zeros((5, 2, 3, 3), np.uint8)
    for i in range(5):
        tiles[i] = i * 10 + 1
    g = tile_grid(tiles, gap=1, scale=2)
    rows, cols = grid_shape(5)  # (2, 3)
    assert g.shape == (rows * 4 + (rows - 1), cols * 6 + (cols - 1), 3)
    for i in range(5):
        r, c = divmod(i, cols)
        block = g[r * 5 : r * 5 + 4, c * 7 : c * 7 + 6]
        assert (block == i * 10 + 1).all()
    assert (g[4, :] == 255).all()  # the gap row
    assert (g[5:, 14:] == 255).all()  # the empty 6th cell


def test_tile_grid_no_gap_and_explicit_cols():
    g = tile_grid(np.ones((4, 3, 3, 3), np.uint8), cols=4, gap=0)
    assert g.shape == (3, 12, 3)


def test_normalize_per_map_and_all():
    a = np.stack([np.array([[0.0, 2.0]]), np.array([[-1.0, 1.0]]), np.full((1, 2), 5.0)])
    out = normalize(a, per="map")
    assert out[0].tolist() == [[0.0, 1.0]] and out[1].tolist() == [[0.0, 1.0]]
    assert out[2].tolist() == [[0.0, 0.0]] and not np.isnan(out).any()  # constant map: flat, not NaN
    out = normalize(a, per="all")
    assert out.min() == 0.0 and out.max() == 1.0 and out[1, 0, 0] == 0.0


def test_normalize_symmetric_puts_zero_in_the_middle():
    a = np.array([[[-2.0, 0.0, 1.0]]])
    out = normalize(a, per="all", symmetric=True)
    assert out.tolist() == [[[0.0, 0.5, 0.75]]]
    assert normalize(np.zeros((1, 2, 2)), symmetric=True).tolist() == np.full((1, 2, 2), 0.5).tolist()


def test_colorize_uses_the_colormap_ends():
    out = colorize(np.array([[0.0, 1.0]]), "gray")
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 0, 0], [255, 255, 255]]]
    mid = colorize(np.array([0.5]), "RdBu_r")[0]
    assert abs(int(mid[0]) - int(mid[2])) < 40 and mid.min() > 200  # diverging map: near-white middle


def test_array_functions_do_not_modify_inputs():
    a = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    keep = a.copy()
    normalize(a)
    normalize(a, per="all", symmetric=True)
    colorize(a, "viridis")
    t = (a * 255).astype(np.uint8)
    tk = t.copy()
    tile_grid(t, scale=3)
    upscale(t, 2)
    assert np.array_equal(a, keep) and np.array_equal(t, tk)


def test_upscale_nearest_and_tile_factor():
    t = np.array([[[1, 2], [3, 4]]], np.uint8)
    assert upscale(t, 2)[0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert tile_factor(7, 7, 48) == 7 and tile_factor(56, 56, 48) == 1 and tile_factor(3, 3, 48) == 16


def test_unknown_colormap_suggests():
    with pytest.raises(UsageError, match="did you mean 'viridis'"):
        check_cmap("viridi")


def test_tile_grid_with_bands_and_scale_matches_the_naive_layout():
    rng = np.random.default_rng(3)
    tiles = rng.integers(0, 200, (7, 3, 2, 1)).astype(np.uint8)
    bands = rng.integers(200, 256, (7, 4, 6, 1)).astype(np.uint8)
    g = tile_grid(tiles, cols=3, gap=2, scale=3, fill=9, bands=bands)
    cell_h, cell_w = 4 + 9 + 2, 6 + 2
    assert g.shape == (3 * cell_h - 2, 3 * cell_w - 2, 1)
    for i in range(7):
        r, c = divmod(i, 3)
        y, x = r * cell_h, c * cell_w
        assert np.array_equal(g[y : y + 4, x : x + 6], bands[i])
        assert np.array_equal(g[y + 4 : y + 13, x : x + 6], np.repeat(np.repeat(tiles[i], 3, 0), 3, 1))
    assert (g[2 * cell_h :, cell_w : cell_w + 6] == 9).all()  # empty cells are fill
    assert (g[13:15, :] == 9).all()  # gap rows


# ---------------------------------------------------------------- the scales, the colour path, Picture


def test_value_scalers_against_hand_computation():
    from cnnviz.render import scale_fixed, scale_minmax, scale_symmetric, value_range

    a = np.array([[[-2.0, 0.0], [1.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]]], np.float32)
    before = a.copy()
    mm = scale_minmax(a, per="map")
    assert np.allclose(mm[0], [[0.0, 0.5], [0.75, 1.0]]) and (mm[1] == 0).all()  # constant map -> 0
    assert np.allclose(scale_minmax(a, per="all")[0, 0], [0.0, 0.4])  # (x + 2) / 5
    sym = scale_symmetric(a, per="map")
    assert np.allclose(sym[0], [[0.0, 0.5], [0.75, 1.0]]) and np.allclose(sym[1], 1.0)  # x / (2 max|x|) + 0.5
    assert np.allclose(scale_fixed(a[0], -1.0, 1.0), [[0.0, 0.5], [1.0, 1.0]])  # clipped outside the range
    assert value_range(a) == (-2.0, 3.0) and value_range(a, symmetric=True) == (-3.0, 3.0)
    assert all(x.dtype == np.float32 for x in (mm, sym))
    assert np.array_equal(a, before)


@pytest.mark.parametrize("name", ["viridis", "RdBu_r", "gray"])
def test_palette_and_lut_sample_matplotlib(name):
    import matplotlib

    from cnnviz.render import LEVELS, colormap_lut, palette

    cmap = matplotlib.colormaps[name]
    for table, n in ((colormap_lut(name), 256), (palette(name)[:LEVELS], LEVELS)):
        want = np.rint(cmap(np.linspace(0, 1, n))[:, :3] * 255)
        assert np.array_equal(table, want)
    assert (palette(name)[LEVELS:, 0] == palette(name)[LEVELS:, 2]).all()  # the rest are greys
    with pytest.raises(ValueError):
        colormap_lut(name)[0, 0] = 1  # shared cache: read-only


def test_picture_validates_and_converts():
    from cnnviz.render import Picture

    pal = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    pic = Picture(np.array([[0, 1]], np.uint8), pal, {"k": "v"}, transparency=0)
    assert pic.shape == (1, 2) and pic.image.tolist() == [[[0, 0, 0], [255, 0, 0]]]
    im = pic.pil()
    assert im.mode == "P" and im.info["transparency"] == 0
    assert dict(pic.with_metadata({"a": "1", "k": "x"}).metadata) == {"a": "1", "k": "v"}
    for bad in (dict(pixels=np.zeros((2, 2), np.uint8)),  # indices without a palette
                dict(pixels=np.zeros((2, 2), np.uint8), palette=np.zeros((0, 3), np.uint8)),
                dict(pixels=np.zeros((2, 2), np.uint8), palette=pal, transparency=2),
                dict(pixels=np.zeros((2, 2, 3), np.float32))):
        with pytest.raises(ValueError):
            Picture(**bad)


# ---------------------------------------------------------------- shipped colormap tables
# The commands' default colormaps and the common ones are read from cnnviz/_cmaps.py (no
# matplotlib import on the hot path); matplotlib stays the reference they must equal.

from cnnviz import _cmaps  # noqa: E402


@pytest.mark.parametrize("name", sorted(_cmaps.LUTS))
def test_shipped_colormap_tables_equal_matplotlib(name):
    import matplotlib

    from cnnviz.render import LEVELS, colormap_colors

    cmap = matplotlib.colormaps[name]
    for n in (1, 2, 7, 100, LEVELS, 256, 257, 1000):
        want = np.rint(cmap(np.linspace(0.0, 1.0, n))[:, :3] * 255.0).astype(np.uint8)
        got = colormap_colors.__wrapped__(name, n)  # uncached: this very sampling
        assert got.dtype == np.uint8 and np.array_equal(got, want), (name, n)


def test_shipped_categorical_colours_equal_matplotlib():
    import matplotlib

    from cnnviz.render import distinct_colors

    for n in (1, 3, 10, 11, 20, 25):
        base = matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors
        want = [tuple(int(round(255 * c)) for c in base[i % len(base)][:3]) for i in range(n)]
        assert distinct_colors(n) == want


def _default_cmap_pngs() -> list[bytes]:
    import io

    from cnnviz.io import save_png
    from cnnviz.maps import render_grid

    rng = np.random.default_rng(3)
    maps = rng.normal(size=(6, 9, 7)).astype(np.float32)
    out = []
    for cmap, symmetric in (("viridis", False), ("RdBu_r", True), ("inferno", False), ("magma", False), ("gray", False)):
        for overlay in (None, (rng.random((36, 28, 3)) * 255).astype(np.uint8)):
            f = io.BytesIO()
            save_png(f, render_grid(maps, cmap=cmap, symmetric=symmetric, tile=16, overlay=overlay).picture)
            out.append(f.getvalue())
    return out


def test_default_colormap_pngs_are_byte_identical_to_matplotlibs(monkeypatch):
    """PNGs coloured from the shipped tables equal, byte for byte, those coloured by matplotlib
    (the tables switched off): palette grids, RGB overlays and the legend's colour bar."""
    from cnnviz import render

    def clear():
        render.colormap_colors.cache_clear()
        render.palette.cache_clear()

    clear()
    shipped = _default_cmap_pngs()
    monkeypatch.setattr(_cmaps, "LUTS", {})
    clear()
    try:
        assert _default_cmap_pngs() == shipped
    finally:
        monkeypatch.undo()
        clear()


def test_maps_with_a_default_colormap_does_not_import_matplotlib(tmp_path):
    """The colour path, the labels' font and the PNG writer of a maps grid: no matplotlib import."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from cnnviz.maps import render_grid\n"
        "from cnnviz.io import save_png\n"
        "from cnnviz.jobs import maps\n"
        "g = render_grid(np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32), title='t')\n"
        f"save_png({str(tmp_path / 'g.png')!r}, g.picture)\n"
        "print(sorted(m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert (tmp_path / "g.png").stat().st_size > 0


def test_labels_use_matplotlibs_dejavu_font():
    import os

    import matplotlib

    from cnnviz.render import _font

    font = _font(13)
    assert os.path.samefile(font.path, os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"))


def _ink(image: np.ndarray) -> np.ndarray:
    """The drawn pixels of black text on white, cropped to their bounding box."""
    dark = image.min(-1) < 128
    ys, xs = np.nonzero(dark)
    return dark[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def test_characters_the_font_lacks_draw_as_escaped_code_points_not_boxes():
    """DejaVu Sans has no CJK: '猫.jpg' is drawn as '\\u732b.jpg' (an honest substitute), never as
    the font's missing-glyph box, which Pillow draws for U+10FFFF (a code point no font covers)."""
    from PIL import Image, ImageDraw, ImageFont

    from cnnviz.render import draw_text, label_bands, mpl_data_path, text_size

    blank = np.full((30, 200, 3), 255, np.uint8)
    font = ImageFont.truetype(mpl_data_path("fonts", "ttf", "DejaVuSans.ttf"), 12)
    box = Image.new("RGB", (40, 30), "white")
    ImageDraw.Draw(box).text((2, 2), "\U0010ffff", fill="black", font=font)  # the box, drawn by Pillow alone
    cat = _ink(draw_text(blank, (2, 2), "\u732b", size=12))
    assert cat.shape != _ink(np.asarray(box)).shape or not np.array_equal(cat, _ink(np.asarray(box)))
    np.testing.assert_array_equal(draw_text(blank, (2, 2), "\u732b.jpg", size=12),
                                  draw_text(blank, (2, 2), "\\u732b.jpg", size=12))
    assert text_size("\u732b.jpg") == text_size("\\u732b.jpg")
    band = label_bands(["\u732b.jpg"], width=120)  # the labels of grids and sheets measure and draw the same text
    np.testing.assert_array_equal(band, label_bands(["\\u732b.jpg"], width=120))
    from cnnviz.render import drawable

    assert drawable("\u732b.jpg") == "\\u732b.jpg" and drawable("caf\u00e9 \u0416") == "caf\u00e9 \u0416"  # drawn as is


def test_a_non_latin_file_name_keeps_its_true_name_in_the_metadata(cli, tmp_path, rgb_image):
    import json
    import shutil

    from PIL import Image

    path = tmp_path / "\u732b.jpg"
    shutil.copy(rgb_image, path)
    r = cli("cam", str(path), "-m", "resnet18", "--weights", "none", "--size", "64", "-o", str(tmp_path / "o"), "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert "\u732b" in rec["path"]
    with Image.open(rec["path"]) as im:
        assert im.text["image"] == str(path)
