"""No command writes a picture that Pillow (and image viewers) refuse to open: grids that could
never fit are refused before any work, and every PNG write checks its size (render.MAX_PIXELS)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnviz.errors import UsageError
from cnnviz.render import MAX_PIXELS, MAX_SIDE


def test_the_limit_is_pillows():
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    assert MAX_SIDE * MAX_SIDE <= MAX_PIXELS < (MAX_SIDE + 1) ** 2


def test_maps_refuses_a_grid_viewers_cannot_open_before_any_work(cli, tmp_path, monkeypatch):
    """resnet18 layer4 has 512 channels: at --tile 512 the grid is at least 11,790 px a side (139 Mpx)."""
    import cnnviz.jobs.maps as jm

    def no_load(*a, **k):
        raise AssertionError("weights loaded before the usage error")

    monkeypatch.setattr(jm, "load", no_load)
    out = tmp_path / "out"
    r = cli("maps", "--sample", "-m", "resnet18", "-w", "none", "-l", "layer4.1.conv2", "--tile", "512", "-o", str(out))
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "layer4.1.conv2" in r.stderr and "Mpx" in r.stderr and "--top" in r.stderr
    assert not out.exists() or not any(out.iterdir())
    # the same maps with fewer of them drawn fit
    monkeypatch.undo()
    r = cli("maps", "--sample", "-m", "resnet18", "-w", "none", "-l", "layer4.1.conv2", "--tile", "512", "--top", "4",
            "--size", "64", "-o", str(out))
    assert r.exit_code == 0, r.stderr


def test_filters_max_side_stops_at_what_viewers_open(cli, tmp_path):
    from cnnviz.filters import plan_filters

    r = cli("filters", "-m", "resnet18", "-w", "none", "--max-side", str(MAX_SIDE + 1), "-o", str(tmp_path))
    assert r.exit_code == 2 and f"256<=x<={MAX_SIDE}" in r.stderr
    with pytest.raises(UsageError, match="max side"):
        plan_filters((64, 3, 7, 7), max_side=MAX_SIDE + 1)
    assert plan_filters((64, 3, 7, 7), max_side=MAX_SIDE).max_side == MAX_SIDE


def test_tile_grid_refuses_before_allocating():
    from cnnviz.render import tile_grid

    tiles = np.zeros((4, 10, 10, 1), np.uint8)
    with pytest.raises(UsageError, match="Mpx"):
        tile_grid(tiles, scale=100_000)  # 2 x 2 tiles of 1,000,000 px: would need terabytes
    assert tile_grid(tiles, scale=2).shape == (42, 42, 1)


def test_save_png_never_writes_an_unopenable_picture(tmp_path):
    from cnnviz.io import save_png

    with pytest.raises(UsageError, match="more than image viewers open"):
        save_png(tmp_path / "big.png", np.zeros((MAX_SIDE + 1, MAX_SIDE + 1), np.uint8))
    assert list(tmp_path.iterdir()) == []
    save_png(tmp_path / "ok.png", np.zeros((MAX_SIDE, 8), np.uint8))
    with Image.open(tmp_path / "ok.png") as im:
        im.verify()
