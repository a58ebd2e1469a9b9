"""Model sources: your own code, timm, TorchScript and torch.export programs, each checked against
an independent computation (the original module run by hand, torchvision's transforms)."""
from __future__ import annotations

import json
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnviz import sources
from cnnviz.errors import CnnvizError
from cnnviz.sources import ModelSpec, Source, parse_source

NET_PY = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        """A grayscale 3-class net, as a medical-imaging user would write it."""

        def __init__(self, num_classes=3, width=4):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            )
            self.head = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))


    def build(width=4):
        return Net(width=width)


    def broken():
        raise ValueError("width must be even")


    def not_a_model():
        return 42
''')


def _import_net(folder) -> object:
    """The test's model.py imported as a module (TorchScript needs the class's source file)."""
    import importlib.util

    (folder / "model.py").write_text(NET_PY)
    spec = importlib.util.spec_from_file_location(f"user_net_{abs(hash(str(folder)))}", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _net(folder, width: int = 4) -> nn.Module:
    torch.manual_seed(5)
    net = _import_net(folder).Net(width=width).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.features[4].running_mean.uniform_(-0.5, 0.5)
        net.features[4].running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture
def user_model(tmp_path):
    """model.py, best.pth (weights of _net()), labels.txt and a grayscale scan.png."""
    from PIL import Image

    net = _net(tmp_path)
    torch.save(net.state_dict(), tmp_path / "best.pth")
    (tmp_path / "labels.txt").write_text("healthy\nbenign\nmalignant\n")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((37, 45)) * 255).astype(np.uint8), "L").save(tmp_path / "scan.png")
    return tmp_path, net


def _one_line_error(r, *fragments):
    assert r.exit_code != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnnviz: error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("text, expected", [
    ("resnet50", Source("torchvision", "resnet50")),
    ("torchvision:resnet50", Source("torchvision", "resnet50")),
    ("timm:convnext_tiny", Source("timm", "convnext_tiny")),
    ("path/to/model.py:build", Source("python", "path/to/model.py", "build")),
    ("model.py:Net", Source("python", "model.py", "Net")),
    ("package.module:Net", Source("python", "package.module", "Net")),
    ("net.pt", Source("torchscript", "net.pt")),
    ("out/net.pt2", Source("export", "out/net.pt2")),
])
def test_source_grammar(text, expected):
    assert parse_source(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("model.py", "say which factory"), ("model.py:1x", "not a Python name"), ("timm:", "names no model"),
])
def test_source_grammar_errors(text, fragment):
    with pytest.raises(CnnvizError, match=fragment):
        parse_source(text)


def _grayscale_input(path, size, mean, std):
    """torchvision's own pipeline for a grayscale model: the independent reference."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Grayscale(1), T.Resize(size), T.ToTensor(), T.Normalize([mean], [std])])
    return tf(Image.open(path).convert("RGB"))[None]


def test_own_grayscale_model_maps_equal_the_module_run_by_hand(cli, user_model):
    d, net = user_model
    r = cli("maps", str(d / "scan.png"), "--model", f"{d}/model.py:Net", "--weights", str(d / "best.pth"),
            "--channels-in", "1", "--mean", "0.5", "--std", "0.25", "-l", "all", "--npy", "-o", str(d / "out"),
            "--json", "--size", "32x40")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [rec["layer"] for rec in recs] == [0, 1]
    x = _grayscale_input(d / "scan.png", (32, 40), 0.5, 0.25)
    with torch.no_grad():
        want = [net.features[0](x)[0], net.features[3](net.features[2](net.features[1](net.features[0](x))))[0]]
    for rec, w in zip(recs, want):
        got = np.load(rec["path"][:-len(".png")] + ".npy")
        np.testing.assert_allclose(got, w.numpy(), rtol=1e-5, atol=1e-5)


def test_labels_file_names_classes_for_maximize(cli, user_model):
    d, _ = user_model
    r = cli("maximize", "--model", f"{d}/model.py:Net", "--weights", str(d / "best.pth"), "--labels", str(d / "labels.txt"),
            "--class", "malignant", "--steps", "2", "--size", "16", "-o", str(d / "mx"), "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["channels"] == [2] and rec["classes"] == ["malignant"]
    r = cli("maximize", "--model", f"{d}/model.py:Net", "--labels", str(d / "labels.txt"), "--class", "malignnt",
            "--steps", "2", "-o", str(d / "mx"))
    _one_line_error(r, "malignant")


def test_labels_file_names_classes_for_cam(cli, user_model):
    """cam reads --labels as maximize does: names, near matches and the range of the model's own
    3 classes (a checkpoint's class count was once unknown before loading: 'indices 0..999999')."""
    d, _ = user_model
    common = [str(d / "scan.png"), "--model", f"{d}/model.py:Net", "--weights", str(d / "best.pth"), "--size", "32",
              "-o", str(d / "cam")]
    r = cli("cam", *common, "--labels", str(d / "labels.txt"), "--class", "malignant", "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["class"] == 2 and rec["class_name"] == "malignant" and rec["path"].endswith("-02-cam-s32.png")
    r = cli("cam", *common, "--labels", str(d / "labels.txt"), "--top", "3", "--json")
    assert sorted(json.loads(ln)["class_name"] for ln in r.stdout.splitlines()) == ["benign", "healthy", "malignant"]
    _one_line_error(cli("cam", *common, "--labels", str(d / "labels.txt"), "--class", "malignnt"),
                    "did you mean 'malignant'", "0..2")
    line = _one_line_error(cli("cam", *common, "--class", "malignant"), "no category names", "0..2", "--labels")
    assert "999" not in line
    _one_line_error(cli("cam", *common, "--class", "7"), "7 out of range", "0..2")


def test_labels_name_a_fine_tuned_torchvision_checkpoint(cli, user_model):
    """A 5-class SqueezeNet checkpoint (its head is a conv, not a Linear): --labels with 5 names
    fits it in cam and maximize, and cam's class names come from the file."""
    from torchvision.models import squeezenet1_1

    d, _ = user_model
    torch.save(squeezenet1_1(num_classes=5).state_dict(), d / "five.pth")
    (d / "five.txt").write_text("cat\ndog\nbird\nfish\nfrog\n")
    common = ["--model", "squeezenet1_1", "--weights", str(d / "five.pth"), "--labels", str(d / "five.txt")]
    r = cli("cam", str(d / "scan.png"), *common, "--size", "64", "--class", "frog", "--class", "cat", "-o", str(d / "c"),
            "--json")
    assert r.exit_code == 0, r.stderr
    assert [(rec["class"], rec["class_name"]) for rec in map(json.loads, r.stdout.splitlines())] == [(4, "frog"), (0, "cat")]
    r = cli("maximize", *common, "--class", "frog", "--steps", "1", "--size", "32", "-o", str(d / "m"))
    assert r.exit_code == 0, r.stderr
    _one_line_error(cli("cam", str(d / "scan.png"), *common, "--class", "frg", "-o", str(d / "c")), "did you mean 'frog'", "0..4")


@pytest.mark.parametrize("model", ["{d}/model.py:Net", "squeezenet1_1", "timm:resnet10t"])
def test_layers_reads_the_checkpoint_it_is_given(cli, user_model, model):
    """layers --weights FILE refuses what maps refuses (a pickled model, a file that does not fit),
    reading the checkpoint's names and shapes only; a fitting checkpoint lists the layers."""
    if model.startswith("timm:"):
        pytest.importorskip("timm")
    d, _ = user_model
    torch.save(nn.Sequential(nn.Conv2d(1, 4, 3)), d / "pickled.pth")  # a whole pickled module, not a state dict
    torch.save({"conv.weight": torch.zeros(1)}, d / "wrong.pth")
    model = model.replace("{d}", str(d))
    for bad, fragment in (("pickled.pth", "refused checkpoint"), ("wrong.pth", "does not fit this model")):
        want = _one_line_error(cli("maps", str(d / "scan.png"), "-m", model, "--weights", str(d / bad), "-l", "0", "-o", str(d / "o")),
                               fragment)
        assert _one_line_error(cli("layers", "-m", model, "--weights", str(d / bad)), fragment) == want
    if model.endswith(":Net"):
        r = cli("layers", "-m", model, "--weights", str(d / "best.pth"), "--format", "json")
        assert r.exit_code == 0 and [row["name"] for row in json.loads(r.stdout)] == ["features.0", "features.3"]


def test_layers_prints_the_preprocessing_and_model_args_reach_the_factory(cli, user_model):
    d, _ = user_model
    r = cli("layers", "--model", f"{d}/model.py:build", "--model-args", '{"width": 6}', "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["out_channels"] for row in rows] == [6, 12]
    r = cli("layers", "--model", f"{d}/model.py:build")
    assert "input: 1 channel (grayscale)" in r.stderr and "mean 0.5" in r.stderr
    r = cli("layers", "--model", f"{d}/model.py:Net", "--mean", "0.2", "--std", "0.3", "--labels", str(d / "labels.txt"))
    assert "mean 0.2 (--mean)" in r.stderr and "std 0.3 (--std)" in r.stderr and "3 class names from --labels" in r.stderr


def test_random_weights_of_own_model_are_seeded(user_model):
    d, _ = user_model
    a = sources.load(ModelSpec(f"{d}/model.py:Net", weights="none", seed=3)).model
    b = sources.load(ModelSpec(f"{d}/model.py:Net", weights="none", seed=3, mean=(0.1,))).model
    torch.manual_seed(3)
    ref = _import_net(d).Net()
    for k, v in ref.state_dict().items():
        assert torch.equal(a.state_dict()[k], v) and torch.equal(b.state_dict()[k], v)


@pytest.mark.parametrize("args, fragments", [
    (["--model", "{d}/model.py:broken"], ["broken() raised ValueError: width must be even", "model.py line"]),
    (["--model", "{d}/model.py:not_a_model"], ["returned int, not a torch.nn.Module"]),
    (["--model", "{d}/model.py:Nett"], ["has no 'Nett'", "did you mean 'Net'"]),
    (["--model", "{d}/missing.py:Net"], ["does not exist"]),
    (["--model", "{d}/model.py:build", "--model-args", "{width: 2}"], ["--model-args is not valid JSON"]),
    (["--model", "{d}/model.py:Net", "--model-args", '{"depth": 2}'], ["Net(depth=2) raised TypeError"]),
    (["--model", "{d}/model.py:Net", "--weights", "{d}/wrong.pth"], ["does not fit this model", "missing keys", "unexpected keys"]),
    (["--model", "{d}/model.py:Net", "--channels-in", "3"], ["first conv", "takes 1 channels"]),
    (["--model", "{d}/model.py:Net", "--mean", "0.1,0.2"], ["--mean takes 1 or 1 values"]),
    (["--model", "{d}/best.pth"], ["is a checkpoint (a state dict), not a TorchScript archive", "--weights"]),
    (["--model", "{d}/labels.txt.pt"], ["not a TorchScript archive"]),
    (["--model", "timm:resnet_18"], ["unknown timm model 'resnet_18'", "did you mean 'resnet18'"]),
    (["--model", "resnet50", "--model-args", "{}"], ["--model-args is for Python model sources"]),
    (["--model", "{d}/model.py:Net", "--labels", "{d}/two.txt"], ["has 2 names", "outputs 3 classes"]),
])
def test_each_bad_source_is_one_clear_line(cli, user_model, args, fragments):
    if any(a.startswith("timm:") for a in args):
        pytest.importorskip("timm")  # the suggestion comes from timm's own model list
    d, _ = user_model
    torch.save({"conv.weight": torch.zeros(1)}, d / "wrong.pth")
    (d / "labels.txt.pt").write_bytes(b"not a zip archive at all")
    (d / "two.txt").write_text("a\nb\n")
    r = cli("maps", str(d / "scan.png"), "-l", "0", *[a.replace("{d}", str(d)) for a in args], "-o", str(d / "o"))
    _one_line_error(r, *fragments)


def test_syntax_error_in_the_users_file_names_the_line(cli, tmp_path):
    (tmp_path / "bad.py").write_text("import torch\n\ndef build(:\n    pass\n")
    _one_line_error(cli("layers", "--model", f"{tmp_path}/bad.py:build"), "importing", "SyntaxError", "bad.py line 3")


def test_missing_timm_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    _one_line_error(cli("layers", "--model", "timm:resnet18"), "pip install 'cnnviz[timm]'")


# ---------------------------------------------------------------- TorchScript and torch.export


@pytest.fixture
def archives(user_model):
    d, net = user_model
    with torch.no_grad():
        torch.jit.save(torch.jit.script(net), d / "net.pt")
        with warnings.catch_warnings():  # torch.jit.trace is deprecated in favour of torch.export
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(net, torch.randn(2, 1, 32, 32)), d / "traced.pt")  # keeps no Conv2d attributes
        corrupt = (d / "net.pt").read_bytes()
        (d / "corrupt.pt").write_bytes(corrupt[: len(corrupt) // 2])
        dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("h", min=8, max=1024), 3: torch.export.Dim("w", min=8, max=1024)}
        torch.export.save(torch.export.export(net, (torch.randn(2, 1, 32, 32),), dynamic_shapes=(dims,)), d / "net.pt2")
        torch.export.save(torch.export.export(net, (torch.randn(1, 1, 32, 32),)), d / "static.pt2")
    return d, net


@pytest.mark.parametrize("archive", ["net.pt", "traced.pt", "net.pt2", "static.pt2"])
def test_archives_maps_equal_the_original_module(cli, archives, archive):
    d, net = archives
    r = cli("maps", str(d / "scan.png"), str(d / "scan.png"), "--model", str(d / archive), "--size", "32x32",
            "--mean", "0.5", "--std", "0.25", "-l", "all", "--npy", "-o", str(d / archive.replace(".", "_")), "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(recs) == 4  # two images (static.pt2: one forward each), two layers
    from PIL import Image
    from torchvision import transforms as T

    x = T.Compose([T.Grayscale(1), T.Resize((32, 32)), T.ToTensor(), T.Normalize([0.5], [0.25])])(
        Image.open(d / "scan.png").convert("RGB"))[None]
    with torch.no_grad():
        want = [net.features[0](x)[0], net.features[3](net.features[2](net.features[1](net.features[0](x))))[0]]
    for rec in recs[:2]:
        got = np.load(rec["path"][:-len(".png")] + ".npy")
        np.testing.assert_allclose(got, want[rec["layer"]].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("archive", ["net.pt", "traced.pt", "net.pt2", "static.pt2"])
def test_archives_act_stage_and_receptive_fields_equal_the_original_module(cli, archives, archive):
    d, net = archives
    r = cli("maps", str(d / "scan.png"), "--model", str(d / archive), "--size", "32x32", "--mean", "0.5", "--std", "0.25",
            "-l", "all", "--stage", "act", "--npy", "-o", str(d / ("act-" + archive.replace(".", "_"))), "--json")
    assert r.exit_code == 0, r.stderr
    from PIL import Image
    from torchvision import transforms as T

    x = T.Compose([T.Grayscale(1), T.Resize((32, 32)), T.ToTensor(), T.Normalize([0.5], [0.25])])(
        Image.open(d / "scan.png").convert("RGB"))[None]
    f = net.features
    with torch.no_grad():  # the ReLU after each conv, the batch norm between them included
        want = [f[1](f[0](x))[0], f[5](f[4](f[3](f[2](f[1](f[0](x))))))[0]]
    recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [rec["layer"] for rec in recs] == [0, 1]
    for rec in recs:
        got = np.load(rec["path"][:-len(".png")] + ".npy")
        np.testing.assert_allclose(got, want[rec["layer"]].numpy(), rtol=1e-5, atol=1e-6)
    # receptive fields from the archive's own graph, as for the source: 3 px, then 3 + 1 + 2*2 = 8 px
    r = cli("layers", "--model", str(d / archive), "--format", "json", "--size", "32")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["receptive_field"], row["jump"], row["center0"]) for row in rows] == [(3, 1, 0), (8, 2, 0.5)]
    r = cli("rf", str(d / "scan.png"), "--model", str(d / archive), "--size", "32x32", "-l", "1", "--at", "10,10",
            "--json", "-o", str(d / ("rf-" + archive.replace(".", "_"))))
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("archive", ["net.pt2", "net.pt"])
def test_archives_cam_equals_the_source_models(cli, archives, archive):
    """cam reads the archive's last activation (an ATen relu turned into a module), as on the source."""
    d, _ = archives
    common = [str(d / "scan.png"), "--size", "32x32", "--mean", "0.5", "--std", "0.25", "--class", "2",
              "--method", "gradcam,ablationcam", "--npy", "--json"]
    a = cli("cam", *common, "--model", str(d / archive), "-o", str(d / ("cam-" + archive.replace(".", "_"))))
    b = cli("cam", *common, "--model", f"{d / 'model.py'}:Net", "--weights", str(d / "best.pth"), "-o", str(d / "cam-src"))
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    got, want = json.loads(a.stdout)["cells"], json.loads(b.stdout)["cells"]
    # the source names the Sequential that returns that ReLU's output; the archive has no such call
    assert [c["layers"] for c in want] == [["features"]] * 2 and [c["layers"] for c in got] == [["features.5"]] * 2
    for method in ("gradcam", "ablationcam"):
        x, y = (np.load(next((d / sub).glob(f"*-{method}-*.npy"))) for sub in ("cam-" + archive.replace(".", "_"), "cam-src"))
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_archives_filters_catalog_and_class_maximize(cli, archives):
    d, net = archives
    r = cli("layers", "--model", str(d / "net.pt"), "--format", "json", "--size", "32")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["name"], row["out_channels"], row["groups"]) for row in rows] == [("features.0", 4, 1), ("features.3", 8, 1)]
    lm = sources.load(str(d / "net.pt2"))
    assert torch.equal(dict(lm.model.named_modules())["features.3"].weight, net.features[3].weight)
    r = cli("maximize", "--model", str(d / "net.pt2"), "--class", "1", "--steps", "2", "--size", "16", "-o", str(d / "mx"))
    assert r.exit_code == 0, r.stderr


def test_static_program_refuses_what_it_cannot_do_in_one_line(cli, archives):
    d, _ = archives
    _one_line_error(cli("maps", str(d / "scan.png"), "--model", str(d / "static.pt2"), "--size", "48", "-l", "0",
                        "-o", str(d / "o")), "exported for 32x32 inputs only")
    _one_line_error(cli("maximize", "--model", str(d / "static.pt2"), "--class", "0", "-o", str(d / "o")),
                    "maximize cannot run", "32x32")
    r = cli("layers", "--model", str(d / "static.pt2"))
    assert r.exit_code == 0 and "size 32x32 (fixed)" in r.stderr


def test_corrupt_torchscript_is_one_line(cli, archives):
    d, _ = archives
    _one_line_error(cli("filters", "--model", str(d / "corrupt.pt"), "-o", str(d / "o")), "corrupt.pt")


# ---------------------------------------------------------------- timm (random weights)


@pytest.fixture
def timm():
    """The timm package, for the tests that need it: only they skip without it."""
    return pytest.importorskip("timm")


@pytest.mark.parametrize("name, layer", [("resnet10t", "0"), ("convnext_atto", "1"), ("efficientnet_b0", "2")])
def test_timm_maps_equal_the_timm_module_run_by_hand(cli, tmp_path, rgb_image, name, layer, timm):
    r = cli("maps", str(rgb_image), "--model", f"timm:{name}", "--weights", "none", "--seed", "4", "-l", layer,
            "--size", "64", "--npy", "-o", str(tmp_path), "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    torch.manual_seed(4)
    model = timm.create_model(name, pretrained=False).eval()
    conv = dict(model.named_modules())[rec["name"]]
    assert isinstance(conv, nn.Conv2d)
    cfg = timm.data.resolve_data_config(model=model)
    from PIL import Image
    from torchvision import transforms as T

    interp = T.InterpolationMode(cfg["interpolation"])  # timm's own resize filter (bicubic for these)
    x = T.Compose([T.Resize(64, interpolation=interp), T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])(
        Image.open(rgb_image).convert("RGB"))[None]
    seen = []
    h = conv.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    np.testing.assert_allclose(np.load(rec["path"][:-len(".png")] + ".npy"), seen[0][0].numpy(), rtol=1e-4, atol=1e-4)


def test_timm_checkpoint_and_pretrained_cfg(cli, tmp_path, timm):
    torch.manual_seed(1)
    ref = timm.create_model("convnext_atto", pretrained=False, num_classes=7).eval()
    torch.save(ref.state_dict(), tmp_path / "convnext.pth")
    lm = sources.load(ModelSpec("timm:convnext_atto", weights=str(tmp_path / "convnext.pth")))
    for k, v in ref.state_dict().items():
        assert torch.equal(lm.model.state_dict()[k], v), k
    cfg = timm.data.resolve_data_config(model=ref)
    assert lm.mean == pytest.approx(cfg["mean"]) and lm.std == pytest.approx(cfg["std"])
    assert lm.crop_size == cfg["input_size"][1] and lm.interpolation == cfg["interpolation"]
    assert lm.resize_size == int(cfg["input_size"][1] / cfg["crop_pct"])  # timm's transforms_factory: floor
    r = cli("filters", "--model", "timm:convnext_atto", "--weights", str(tmp_path / "convnext.pth"), "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    # ImageNet class names for timm's ImageNet heads, short as torchvision's
    from torchvision.models import ResNet50_Weights

    cats = sources.architecture("timm:resnet10t").categories
    assert cats[:3] == ["tench", "goldfish", "great white shark"] and cats[281] == ResNet50_Weights.DEFAULT.meta["categories"][281]


@pytest.mark.usefixtures("timm")
def test_timm_pretrained_without_a_cached_file_is_one_line_and_never_downloads(cli, tmp_path, monkeypatch):
    import socket

    tried = []

    def no_network(*a, **k):
        tried.append(a)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _one_line_error(cli("filters", "--model", "timm:resnet10t", "-o", str(tmp_path)), "resnet10t", "--weights")
    assert tried == []
