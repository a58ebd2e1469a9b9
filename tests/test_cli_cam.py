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
    (("--layer", "avgpool"), "layer avgpool has a 1x1 output (1, 512, 1, 1): a 1x1 map has no spatial information"),
    (("--size", "16"), "layer layer4 has a 1x1 output (1, 512, 1, 1): a 1x1 map has no spatial information"),
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


def test_timm_default_layers_are_stage_outputs(cli, tmp_path):
    """timm's ConvNeXt: the last stage's output (its last block's, after the MLP and the residual
    sum), which equals the layer named by hand; MobileNetV3's conv_head runs after the global
    pooling (1x1): the blocks before it."""
    timm = pytest.importorskip("timm")
    from cnnviz import cam

    net = timm.create_model("convnext_tiny", pretrained=False).eval()
    assert cam.default_layer(net).name == "stages"
    small = timm.create_model("mobilenetv3_small_050", pretrained=False).eval()
    assert cam.default_layer(small).name == "blocks"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    common = [str(tmp_path / "i.png"), "-m", "timm:convnext_atto", "-w", "none", "--size", "64", "--class", "3", "--npy",
              "--json"]
    a = cli("cam", *common, "-o", str(tmp_path / "a"))
    b = cli("cam", *common, "-l", "stages.3", "-o", str(tmp_path / "b"))
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    ra, rb = json.loads(a.stdout), json.loads(b.stdout)
    assert ra["layers"] == ["stages"] and rb["layers"] == ["stages.3"]
    np.testing.assert_allclose(np.load(ra["npy"]), np.load(rb["npy"]), rtol=1e-5, atol=1e-6)


def test_a_sheet_of_many_methods_wraps_into_bands():
    """14 methods of one image: not one 3,500 px row but bands of at most SHEET_MAX_WIDTH px of
    tiles (5, 5 and 4 columns), each with its own column labels; every tile is drawn."""
    from cnnviz.camdraw import SheetCell, comparison_sheet

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    cells = [[SheetCell(image, rng.random((120, 160)).astype(np.float32)) for _ in range(14)]]
    names = [f"method{i}" for i in range(14)]
    sheet = comparison_sheet(cells, row_labels=["img: class 0.5"], col_labels=names, tile=160)
    h, w = sheet.shape[:2]
    assert w <= 1280 + 200 and h >= 3 * 160  # 5 tiles of 213 px (camdraw.SHEET_MAX_WIDTH) + the row labels; three bands
    assert w < 2 * h
    one_band = comparison_sheet([cells[0][:5]], row_labels=["img: class 0.5"], col_labels=names[:5], tile=160)
    assert one_band.shape[1] == w  # the widest band has 5 columns
    np.testing.assert_array_equal(comparison_sheet([cells[0][:4]], row_labels=["x"], col_labels=names[:4], tile=160,
                                                   max_width=10_000).shape[1:],
                                  comparison_sheet([cells[0][:4]], row_labels=["x"], col_labels=names[:4], tile=160).shape[1:])


def test_input_attributions_are_shown_clipped_at_their_99th_percentile_and_alone():
    """Gradient attributions are heavy-tailed speckle: pictures clip them at the 99th percentile of
    their values (1 % of the pixels at full colour, the rest spread over the scale) and a sheet
    shows their colours alone, not blended into the photo; CAMs are shown as they are."""
    from cnnviz.camdraw import SheetCell, comparison_sheet
    from cnnviz.jobs.cam import _shown
    from cnnviz.render import colorize

    rng = np.random.default_rng(0)
    raw = rng.pareto(1.5, (60, 80)).astype(np.float32)
    norm = (raw - raw.min()) / (raw.max() - raw.min())
    shown, top = _shown("saliency", norm)
    assert top == pytest.approx(float(np.percentile(norm, 99)))
    np.testing.assert_allclose(shown, np.clip(norm / top, 0, 1), rtol=1e-6)
    assert 0.009 <= float((shown >= 1).mean()) <= 0.011
    assert _shown("gradcam", norm) == (norm, 1.0)
    photo = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    sheet = comparison_sheet([[SheetCell(photo, shown, gamma=1.0, alone=True)]], row_labels=[""], col_labels=["s"],
                             tile=60)
    tile = colorize(shown, "inferno")
    found = [(y, x) for y in range(sheet.shape[0] - 59) for x in range(sheet.shape[1] - 79)
             if np.array_equal(sheet[y:y + 60, x:x + 80], tile)]
    assert len(found) == 1
