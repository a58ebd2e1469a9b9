"""cnnviz.topdraw and cnnviz.imagecache: the pieces of `top`'s pictures that left the job. The
overlay maps (now maps.stream_maps) equal the layer run by hand on each image alone; the display
cache keeps its byte budget and reads each file once."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.errors import ImageError
from cnnviz.imagecache import ImageCache
from cnnviz.layers import conv_layers
from cnnviz.scan import Preprocess, image_id
from cnnviz.topdraw import example_row, example_title, overlay_maps

from conftest import TinyVGG


def _photos(folder, sizes):
    rng = np.random.default_rng(3)
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate(sizes):
        p = folder / f"p{i}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("stage", ["conv", "act"])
def test_overlay_maps_equal_the_layer_run_by_hand_on_each_image(tmp_path, stage):
    torch.manual_seed(0)
    net = TinyVGG().eval()
    layer = conv_layers(net)[1]  # features.2, then an in-place ReLU
    paths = _photos(tmp_path / "in", [(40, 52), (52, 40), (40, 52), (44, 44)])  # no crop: mixed shapes
    (tmp_path / "in" / "bad.png").write_bytes(b"not a picture")
    paths.append(str(tmp_path / "in" / "bad.png"))
    prep = Preprocess(size=32, crop=False)
    examples = {0: [{"path": p, "image": image_id(p)} for p in paths[:3]],
                3: [{"path": p, "image": image_id(p)} for p in paths[1:]]}
    got = overlay_maps(net, layer, examples, prep=prep, stage=stage, batch_size=3)
    upto = 3 if stage == "conv" else 4  # features[:3] ends at the conv, [:4] after its ReLU
    for c, entries in examples.items():
        for e in entries:
            if e["path"].endswith("bad.png"):
                assert (e["image"], c) not in got  # unreadable: left out, the patch is drawn without a map
                continue
            with torch.no_grad():
                want = net.features[:upto](torch.from_numpy(prep(e["path"])[0])[None])[0, c].numpy()
            np.testing.assert_allclose(got[(e["image"], c)], want, rtol=1e-5, atol=1e-6)


def test_image_cache_reads_once_and_keeps_its_budget():
    reads = []

    def read(path):
        reads.append(path)
        if path == "gone":
            raise ImageError("gone")
        return np.zeros((10, 10, 3), np.uint8)  # 300 bytes

    cache = ImageCache(read, budget=700)
    assert cache.get("a") is not None and cache.get("a") is not None and reads == ["a"]
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # 900 bytes > 700: the least recent (b) goes
    assert list(cache.cache) == ["a", "c"] and cache.held == 600
    assert cache.get("gone") is None and cache.get("gone") is None and reads.count("gone") == 1
    big = ImageCache(lambda p: np.zeros((100, 100, 3), np.uint8), budget=10)
    assert big.get("x") is not None and list(big.cache) == ["x"]  # the newest is always kept


def test_rows_cut_patches_lazily_and_name_missing_files(tmp_path):
    paths = _photos(tmp_path / "in", [(32, 32)])
    entries = [{"path": paths[0], "image": 1, "score": 2.5, "max": 3.0, "box": [0, 0, 7, 7]},
               {"path": str(tmp_path / "deleted.png"), "image": 2, "score": 1.0, "max": 1.0, "box": [-2, -2, 5, 5]}]
    calls = []

    class Displays:
        def get(self, path):
            calls.append(path)
            return None if "deleted" in path else np.full((32, 32, 3), 9, np.uint8)

    row = example_row(4, entries, Displays(), {})
    assert row.label == "4" and calls == []  # nothing read until a page draws the patch
    names = [p.name for p in row.patches]
    assert names == ["p0.png", "(missing) deleted.png"]
    assert row.patches[0].image().shape == (8, 8, 3) and calls == [paths[0]]
    title = example_title(model_name="m", weights="w", layer=conv_layers(TinyVGG())[2], stage="conv", images=1234,
                          rf=10, k=5, score="mean", bottom=True, overlay=True, channel=7)
    assert "channel 7" in title and "the 5 images with the lowest mean activation" in title and "of 1,234" in title
    assert title.endswith("; map overlaid")
