"""Issue 20 item 2, as a matrix: every command on a segmentation model (lraspp_mobilenet_v3_large)
and a detection model (fasterrcnn_mobilenet_v3_large_fpn), random weights, small sizes. Each run
either succeeds and writes its outputs, or refuses with exactly one stderr line
'cnnviz: error: <reason>', writes no file, and never shows a traceback."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

SEG = "lraspp_mobilenet_v3_large"
DET = "fasterrcnn_mobilenet_v3_large_fpn"
# an early backbone conv of each (cheap: the forward stops there where the graph allows)
LAYER = {SEG: "backbone.4.block.0.0", DET: "backbone.body.4.block.0.0"}
SIZE = {SEG: "96", DET: "128"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four real photos (skimage), small, in one folder."""
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        a = getattr(skimage.data, name)()
        im = Image.fromarray(a).convert("RGB")
        im.thumbnail((160, 160))
        im.save(d / f"{name}.jpg")
    return d


def _args(command: str, model: str, photos) -> list[str]:
    one = str(photos / "astronaut.jpg")
    four = [str(p) for p in sorted(photos.iterdir())]
    m = ["-m", model, "--weights", "none"]
    layer, size = LAYER[model], SIZE[model]
    return {
        "layers": ["layers", *m, "--size", size],
        "rf": ["rf", one, *m, "-l", layer, "-s", size],
        "filters": ["filters", *m, "-l", layer, "--max-filters", "8"],
        "maps-conv": ["maps", one, *m, "-l", layer, "--stage", "conv", "-s", size, "-k", "4"],
        "maps-act": ["maps", one, *m, "-l", layer, "--stage", "act", "-s", size, "-k", "4"],
        "top": ["top", str(photos), *m, "-l", layer, "-c", "0:4", "-n", "2", "-s", size, "--tile", "32"],
        "report": ["report", one, *m, "-l", layer, "-s", size, "-k", "4"],
        "maximize": ["maximize", *m, "-l", layer, "-c", "0", "--steps", "2", "-s", "64"],
        "compare": ["compare", *four, *m, "--with", model, "--with-weights", "none", "-l", layer,
                    "--with-layer", layer, "-s", size],
        "ablate": ["ablate", *four, *m, "-l", layer, "-c", "0:2", "-s", size],
        "cam": ["cam", one, *m, "-s", size],
        # the options that take the dense models off the backbone path
        "maps-head": ["maps", one, *m, "-l", "-1", "-s", size, "-k", "2"],
        "top-overlay": ["top", str(photos), *m, "-l", layer, "-c", "0:2", "-n", "2", "-s", size, "--tile", "32", "--overlay"],
        "report-cam": ["report", one, *m, "-l", layer, "-s", size, "-k", "2", "--cam"],
        "compare-cam": ["compare", *four, *m, "--with", model, "--with-weights", "none", "-l", layer,
                        "--with-layer", layer, "-s", size, "--cam"],
    }[command]


COMMANDS = ["layers", "rf", "filters", "maps-conv", "maps-act", "top", "report", "maximize", "compare", "ablate", "cam",
            "maps-head", "top-overlay", "report-cam", "compare-cam"]
# what each run must do: a refusal's reason (random weights: the detector finds no box), else success
REFUSES = {
    ("ablate", SEG): "ablate measures a classifier's accuracy or top-1 agreement; lraspp_mobilenet_v3_large is a segmentation model",
    ("ablate", DET): "ablate measures a classifier's accuracy or top-1 agreement; fasterrcnn_mobilenet_v3_large_fpn is a detection model",
    ("cam", DET): "no detection scores at least --score-threshold 0.5",
    ("report-cam", DET): "report --cam shows each image's top-1 class map; fasterrcnn_mobilenet_v3_large_fpn is a detection model",
    ("compare-cam", SEG): "--cam compares both sides' maps of one class of a classifier; A (lraspp_mobilenet_v3_large) is a segmentation model",
    ("compare-cam", DET): "--cam compares both sides' maps of one class of a classifier; A (fasterrcnn_mobilenet_v3_large_fpn) is a detection model",
}


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("model", [SEG, DET])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_works_or_refuses_in_one_line(cli, photos, tmp_path, command, model):
    out = tmp_path / "out"
    args = _args(command, model, photos)
    r = cli(*args) if command == "layers" else cli(*args, "-o", str(out))
    assert "Traceback" not in r.stderr + r.stdout
    reason = REFUSES.get((command, model))
    assert (r.exit_code == 0) == (reason is None), (command, model, r.exit_code, r.stderr)
    if r.exit_code == 0:
        written = _files(out) if out.exists() else []
        if command not in ("layers",):  # layers prints its table; everything else writes pictures
            assert written, (command, model, r.stderr)
        else:
            assert LAYER[model] in r.stdout and f"input {SIZE[model]}x{SIZE[model]}" in r.stdout + r.stderr
            if model == SEG:  # the note about the table's size names --size, not the weights' 520
                assert f"the table's shapes are for a {SIZE[model]}x{SIZE[model]} image" in r.stdout + r.stderr
        for f in written:
            assert os.path.getsize(out / f) > 0, f
            assert not f.endswith((".tmp", ".part")), f
    else:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, (command, model, r.stderr)
        assert lines[0].startswith("cnnviz: error: ") and reason in lines[0], lines[0]
        assert not out.exists() or _files(out) == [], (command, model, _files(out))


def test_mean_and_std_reach_a_detectors_own_transform(cli, photos, tmp_path):
    """--mean/--std on a detector normalise inside its transform (they were silently ignored):
    the first conv's maps equal that conv on the image through torchvision's own
    GeneralizedRCNNTransform built with those values."""
    import json

    import torch
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from cnnviz.models import build_model

    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    r = cli("maps", str(photos / "coffee.jpg"), "-m", DET, "--weights", "none", "-l", "0", "--stage", "conv", "-s", "96",
            "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)), "--npy", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    got = np.load(json.loads(r.stdout.splitlines()[0])["npy"])
    net = build_model(DET)  # --weights none: the same seeded random weights
    t = GeneralizedRCNNTransform(min_size=96, max_size=160, image_mean=list(mean), image_std=list(std)).eval()
    img = torch.from_numpy(np.asarray(Image.open(photos / "coffee.jpg").convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        batch, _ = t([img])
        ref = net.backbone.body["0"][0](batch.tensors)[0].numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4
