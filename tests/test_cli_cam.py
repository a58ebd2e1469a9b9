"""`cnnviz cam` end to end through click: files, JSON records, .npy, sheets, metrics, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

ARGS = ("-m", "resnet18", "--weights", "none", "--size", "64")


def _records(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_method_list_names_every_method(cli):
    from cnnviz.cam import METHODS

    r = cli("cam", "--method", "list")
    assert r.exit_code == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == list(METHODS)


def test_default_run_explains_the_top_class(cli, rgb_image, tmp_path):
    out = tmp_path / "out"
    (rec,) = _records(cli("cam", str(rgb_image), *ARGS, "-o", str(out), "--json"))
    assert rec["method"] == "gradcam" and rec["layers"] == ["layer4"]
    import torch

    from cnnviz.io import load_image, preprocess
    from cnnviz.models import load_model

    lm = load_model("resnet18", weights="none")
    x, _ = preprocess(load_image(str(rgb_image)), size=64, mean=lm.mean, std=lm.std)
    with torch.no_grad():
        p = torch.softmax(lm.model(torch.from_numpy(x)[None]), 1)[0]
    assert rec["class"] == int(p.argmax()) and rec["class_name"] == lm.categories[rec["class"]]
    assert rec["probability"] == pytest.approx(float(p.max()), abs=1e-5)
    h, w = rec["size"]
    assert (h, w) == (64, 85)
    y0, x0, y1, x1 = rec["box20"]
    assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w and y0 <= rec["peak"][0] < y1
    with Image.open(rec["path"]) as im:
        im.verify()
    assert rec["path"].endswith(f"-resnet18-gradcam-{rec['class']}-cam-s64.png")  # --size 64: README "Output names"


def test_top_k_classes_npy_and_names(cli, rgb_image, tmp_path):
    recs = _records(cli("cam", str(rgb_image), *ARGS, "--top", "2", "--npy", "-o", str(tmp_path), "--json"))
    assert len(recs) == 2 and recs[0]["class"] != recs[1]["class"]
    assert recs[0]["probability"] >= recs[1]["probability"]
    a = np.load(recs[0]["npy"])
    assert a.shape == (2, 64, 85) and a.dtype == np.float32
    assert a[1].min() == 0 and a[1].max() == pytest.approx(1)
    np.testing.assert_allclose(a[1], (a[0] - a[0].min()) / (a[0].max() - a[0].min()), atol=1e-6)


def test_class_by_forgiving_name(cli, rgb_image, tmp_path):
    recs = _records(cli("cam", str(rgb_image), *ARGS, "--class", "Tennis_Ball", "--class", "7", "-o", str(tmp_path), "--json"))
    assert [r["class"] for r in recs] == [852, 7]
    assert recs[0]["class_name"] == "tennis ball"


def test_several_methods_make_one_sheet(cli, rgb_image, sample_path, tmp_path):
    (rec,) = _records(cli("cam", str(rgb_image), sample_path, *ARGS, "--method", "gradcam,saliency", "-M", "eigencam",
                          "-o", str(tmp_path), "--json"))
    assert rec["kind"] == "sheet" and rec["methods"] == ["gradcam", "saliency", "eigencam"]
    assert len(rec["cells"]) == 6 and {c["method"] for c in rec["cells"]} == {"gradcam", "saliency", "eigencam"}
    with Image.open(rec["path"]) as im:
        assert im.size[0] > 3 * 160 and im.size[1] > 2 * 160


def test_stream_one_png_to_stdout(cli, rgb_image):
    r = cli("cam", str(rgb_image), *ARGS, "-o", "-")
    assert r.exit_code == 0
    assert r.stdout_bytes.startswith(b"\x89PNG")


def test_metrics_and_sanity(cli, rgb_image, tmp_path):
    recs = _records(cli("cam", str(rgb_image), *ARGS, "--metrics", "--metric-steps", "8", "--sanity", "-o", str(tmp_path),
                        "--json"))
    cam_rec, sanity = recs
    for k in ("deletion_auc", "insertion_auc", "drop", "increase"):
        assert 0 <= cam_rec[k] <= 1
    assert sanity["kind"] == "sanity" and sanity["steps"][0]["randomized"] == "fc"
    assert all(-1 <= s["spearman"] <= 1 for s in sanity["steps"] if s["spearman"] is not None)
    assert "deletion AUC" in cli("cam", str(rgb_image), *ARGS, "--metrics", "--metric-steps", "4",
                                 "-o", str(tmp_path)).stderr


@pytest.mark.parametrize("args, message", [
    (("--method", "gradcm"), "unknown method 'gradcm' (did you mean 'gradcam'"),
    (("--class", "5000"), "class index 5000 out of range"),
    (("--class", "tenis bal"), "unknown class 'tenis bal' (did you mean 'tennis ball'"),
    (("--layer", "fc"), "layer fc has no spatial output"),
    (("--layer", "layr4"), "unknown layer 'layr4'"),
    (("--top", "2", "--class", "3"), "either --class or --top"),
    (("--top", "2", "-o", "-"), "-o - streams exactly one PNG"),
    (("--npy", "-o", "-"), "-o - streams exactly one PNG"),
])
def test_usage_errors_are_one_line_exit_2_nothing_written(cli, rgb_image, tmp_path, args, message):
    out = tmp_path / "o"
    r = cli("cam", str(rgb_image), *ARGS, *args, *(() if "-o" in args else ("-o", str(out))))
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("cnnviz: error: ") and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_sanity_strip_labels_never_show_minus_zero():
    """The strip labels a correlation that rounds to zero '0.00' (a '-0.00' reads as a sign that is not there)."""
    from cnnviz.jobs.cam import _fmt

    assert [_fmt(v) for v in (-0.001, 0.004, -0.5, 1.0, float("nan"))] == ["0.00", "0.00", "-0.50", "1.00", "n/a"]
