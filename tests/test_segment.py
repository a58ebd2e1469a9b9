"""Segmentation models through cam: the dense targets equal pytorch-grad-cam's
SemanticSegmentationTarget on the same model, layer and input (max abs diff <= 1e-4 after both are
scaled to [0, 1]); the preprocessing equals the weights' own transforms; the CLI's choices of class,
region and layer. Random-weight models at small sizes (fast)."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnviz import cam
from cnnviz.io import load_image, preprocess
from cnnviz.models import checkpoint_path, load_model, resolve_weights
from cnnviz.segment import SegmentationScores, backbone_layer, outline, ranked_classes
from cnnviz.jobs.camseg import scorer_layers

TOL = 1e-4
pgc = pytest.importorskip("pytorch_grad_cam")


class _Out(nn.Module):
    """torchvision's segmentation model with its 'out' tensor as the output, as pytorch-grad-cam's
    segmentation tutorial wraps it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _reference(method: str, model: nn.Module, module: nn.Module, x: torch.Tensor, cls: int, mask: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    ref = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
           "layercam": "LayerCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with getattr(pgc, ref)(model=_Out(model), target_layers=[module]) as c:
            c.batch_size = 16
            # frozen parameters (cnnviz loads so): the input carries the graph
            return c(input_tensor=x.clone().requires_grad_(True),
                     targets=[SemanticSegmentationTarget(cls, mask.astype(np.float32))])


def _photo(tmp_path, name="astronaut"):
    import skimage.data

    path = tmp_path / f"{name}.png"
    Image.fromarray(getattr(skimage.data, name)()).save(path)
    return path


@pytest.fixture(scope="module")
def fcn():
    """fcn_resnet50 with random weights (seed 1) predicts many classes on a photo: a real argmax mask."""
    return load_model("fcn_resnet50", weights="none", seed=1)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_preprocessing_equals_the_weights_transforms(name, tmp_path):
    from torchvision.models.segmentation import DeepLabV3_MobileNet_V3_Large_Weights as W

    lm = load_model("lraspp_mobilenet_v3_large", weights="none")
    img = load_image(_photo(tmp_path, name))
    ref = W.DEFAULT.transforms()(img).numpy()
    x, _ = preprocess(img, size=lm.crop_size, resize_size=lm.resize_size, crop_size=lm.crop_size, mean=lm.mean, std=lm.std,
                      interpolation=lm.interpolation)
    assert min(x.shape[1:]) == 520 and x.shape == ref.shape
    assert np.array_equal(x, ref)  # bit for bit: shorter side 520, no crop


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"])
def test_gradient_cams_on_the_predicted_mask_equal_pytorch_grad_cam(method, fcn, tmp_path):
    x = torch.from_numpy(preprocess(load_image(_photo(tmp_path)), size=96)[0])[None]
    with torch.no_grad():
        pred = fcn.model(x)["out"].argmax(1)[0].numpy()
    cls = ranked_classes(pred, 21)[0]
    mask = pred == cls
    assert 0.05 < mask.mean() < 0.95  # a real region, not the whole image
    layer = backbone_layer(fcn.model)
    assert layer.name == "backbone.layer4"
    ref = _reference(method, fcn.model, fcn.model.backbone.layer4, x, cls, mask)
    scorer = SegmentationScores(fcn.model, torch.from_numpy(mask)[None], [cls])
    got = cam.explain(scorer, x, [0], method=method, layers=scorer_layers([layer]))
    assert np.abs(got.norm - ref).max() <= TOL
    assert not fcn.model.training and not scorer.training  # the wrapper keeps the model in eval mode


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batched_perturbation_cams_on_a_region_equal_pytorch_grad_cam(method, tmp_path):
    lm = load_model("lraspp_mobilenet_v3_large", weights="none")
    x = torch.from_numpy(preprocess(load_image(_photo(tmp_path)), size=64)[0])[None]
    mask = np.zeros((64, 64), bool)
    mask[10:40, 20:50] = True
    # few channels, few masked passes; Ablation-CAM on a ReLU output (on signed layers pytorch-grad-cam
    # ablates to min - 1e7, cnnviz to zero, as the paper: docs/cam.md)
    name = "backbone.4" if method == "scorecam" else "backbone.2.block.0"
    layer = cam.CamLayer(name, cam.HookPoint(name, 0))
    ref = _reference(method, lm.model, dict(lm.model.named_modules())[name], x, 7, mask)
    scorer = SegmentationScores(lm.model, torch.from_numpy(mask)[None], [7])
    got = cam.explain(scorer, x, [0], method=method, layers=scorer_layers([layer]), batch_size=16)
    assert np.abs(got.norm - ref).max() <= TOL


def test_scores_are_sums_of_class_logits_over_masks_and_mean_probabilities():
    lm = load_model("lraspp_mobilenet_v3_large", weights="none")
    x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, 48, 64)
    masks[0, :10] = 1
    masks[1, :, 5:9] = 1
    masks[2] = 1
    with torch.no_grad():
        out = lm.model(x)["out"]
        got = SegmentationScores(lm.model, masks, [3, 0, 20])(x)
        prob = SegmentationScores(lm.model, masks, [3, 0, 20], score="prob")(x)
    want = torch.stack([out[:, 3, :10].sum((1, 2)), out[:, 0, :, 5:9].sum((1, 2)), out[:, 20].sum((1, 2))], 1)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-3)
    p = torch.softmax(out, 1)
    assert torch.allclose(prob[:, 1], p[:, 0, :, 5:9].mean((1, 2)), atol=1e-6)


def test_outline_is_the_inner_border():
    m = np.zeros((6, 7), bool)
    m[1:5, 2:6] = True
    o = outline(m)
    inner = np.zeros_like(m)
    inner[2:4, 3:5] = True
    assert np.array_equal(o, m & ~inner)
    assert not outline(np.zeros((3, 3), bool)).any()
    assert not outline(np.ones((3, 3), bool)).any()  # the image border is no edge


def _npy(path: str) -> np.ndarray:
    return np.load(path[:-len(".png")] + ".npy")[1]


def test_cli_class_defaults_to_the_largest_predicted_class_and_equals_the_reference(cli, tmp_path, fcn):
    img = _photo(tmp_path)
    r = cli("cam", str(img), "-m", "fcn_resnet50", "--weights", "none", "--seed", "1", "-s", "96", "--npy", "--json",
            "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    x = torch.from_numpy(preprocess(load_image(img), size=96)[0])[None]
    with torch.no_grad():
        pred = fcn.model(x)["out"].argmax(1)[0].numpy()
    cls = ranked_classes(pred, 21)[0]  # background last
    assert rec["class"] == cls and rec["class_name"] == fcn.categories[cls] and rec["layers"] == ["backbone.layer4"]
    assert rec["region"] == "predicted" and rec["region_pixels"] == int((pred == cls).sum())
    ref = _reference("gradcam", fcn.model, fcn.model.backbone.layer4, x, cls, pred == cls)
    assert np.abs(_npy(rec["path"]) - ref[0]).max() <= TOL
    assert rec["size"] == list(x.shape[-2:])


def test_cli_region_mask_file_and_outline_drawn(cli, tmp_path):
    img = _photo(tmp_path)
    lm = load_model("lraspp_mobilenet_v3_large", weights="none")
    x = torch.from_numpy(preprocess(load_image(img), size=64)[0])[None]
    region = np.zeros((512, 512), np.uint8)  # the original image's size; the model sees 64x64
    region[100:300, 200:400] = 255
    Image.fromarray(region).save(tmp_path / "mask.png")
    r = cli("cam", str(img), "-m", "lraspp_mobilenet_v3_large", "--weights", "none", "-s", "64", "--class", "person",
            "--region", str(tmp_path / "mask.png"), "--npy", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["class"] == 15 and rec["region"].endswith("mask.png")
    from cnnviz.segment import resize_mask

    mask = resize_mask(region > 0, (64, 64))
    assert rec["region_pixels"] == int(mask.sum())
    ref = _reference("gradcam", lm.model, lm.model.backbone["16"], x, 15, mask)
    assert np.abs(_npy(rec["path"]) - ref[0]).max() <= TOL
    # the random model predicts one class everywhere: no border, so the outline is not drawn; a
    # predicted class elsewhere is tested through draw_outline
    from cnnviz.camdraw import OUTLINE_COLOR, draw_outline

    pic = np.zeros((40, 50, 3), np.uint8)
    m = np.zeros((20, 25), bool)
    m[5:15, 5:20] = True
    drawn = draw_outline(pic, m)
    assert (drawn == OUTLINE_COLOR).all(-1).sum() > 0 and not pic.any()


@pytest.mark.parametrize("args, message", [
    (("--class", "person"), "person (15) is predicted at no pixel"),
    (("--region", "missing.png"), "does not exist"),
    (("--class", "99"), "out of range"),
])
def test_cli_refusals_are_one_line(cli, tmp_path, args, message):
    img = _photo(tmp_path)
    r = cli("cam", str(img), "-m", "lraspp_mobilenet_v3_large", "--weights", "none", "-s", "64", *args, "-o", str(tmp_path))
    assert r.exit_code != 0
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_region_on_a_classifier_is_refused(cli, tmp_path):
    img = _photo(tmp_path)
    Image.fromarray(np.full((512, 512), 255, np.uint8)).save(tmp_path / "m.png")
    r = cli("cam", str(img), "-m", "resnet18", "--weights", "none", "-s", "64", "--region", str(tmp_path / "m.png"),
            "-o", str(tmp_path))
    assert r.exit_code != 0 and "--region explains a segmentation model" in r.stderr


def test_done_when_cached_trained_weights_class_person(cli, tmp_path, monkeypatch):
    """The pretrained path: a state dict under the weights' own file name in $TORCH_HOME's hub cache
    (made here: random weights, the person logit shifted so about half the pixels are person)."""
    from torchvision.models import get_model

    name = "deeplabv3_mobilenet_v3_large"
    member = resolve_weights(name, "DEFAULT")
    torch.manual_seed(0)
    net = get_model(name, weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
    img = _photo(tmp_path)
    x = torch.from_numpy(preprocess(load_image(img), size=96)[0])[None]
    # random MobileNetV3 features are spatially constant until BatchNorm has statistics: take the photo's
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        net.train()(x.repeat(2, 1, 1, 1))
    net.eval()
    with torch.no_grad():
        out = net(x)["out"][0]
        others = torch.cat([out[:15], out[16:]]).amax(0)
        net.classifier[4].bias[15] += float((others - out[15]).median())
        pred = net(x)["out"].argmax(1)[0].numpy()
    mask = pred == 15
    assert 0.2 < mask.mean() < 0.8
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("CNNVIZ_OFFLINE", "1")
    path = checkpoint_path(member)
    os.makedirs(os.path.dirname(path))
    torch.save(net.state_dict(), path)
    r = cli("cam", str(img), "-m", name, "--class", "person", "-s", "96", "--npy", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["class_name"] == "person" and rec["region_pixels"] == int(mask.sum())
    ref = _reference("gradcam", net, net.backbone["16"], x, 15, mask)
    assert np.abs(_npy(rec["path"]) - ref[0]).max() <= TOL
    pic = np.asarray(Image.open(rec["path"]).convert("RGB"))
    from cnnviz.camdraw import OUTLINE_COLOR

    assert (pic == OUTLINE_COLOR).all(-1).sum() > 100  # the predicted person's outline is drawn


# ---------------------------------------------------------------- receptive fields of segmentation heads


def _positive(model: nn.Module) -> nn.Module:
    """Strictly positive conv weights, zero biases: a unit's input gradient is non-zero exactly on
    the pixels its field covers (no cancellation; ReLU and BatchNorm at init pass everything)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.rand_like(m.weight) + 0.1)
                if m.bias is not None:
                    m.bias.zero_()
    return model.eval()


class _TinyDeepLab(nn.Module):
    """Two stride-2 convs, then torchvision's own DeepLabV3 head (ASPP: 1x1, three dilated 3x3
    branches, the image-pooling branch, concatenation, projection)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = DeepLabHead(4, 3, atrous_rates=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def _support(net: nn.Module, name: str, x: torch.Tensor, unit: tuple[int, int]) -> np.ndarray:
    """Pixels of ``x`` whose gradient reaches unit ``unit`` of module ``name``'s output."""
    got = {}
    h = dict(net.named_modules())[name].register_forward_hook(lambda _m, _i, o: got.setdefault("y", o))
    try:
        x = x.clone().requires_grad_(True)
        net(x)
        got["y"][0, :, unit[0], unit[1]].sum().backward()
    finally:
        h.remove()
    return (x.grad[0].abs().sum(0) > 0).numpy()


def _check_support(support: np.ndarray, f, unit, size: int, what: str) -> None:
    """The field's box (clipped to the image) is the bounding box of the gradient support, and
    holds all of it. Inside it a dilated or strided conv may skip pixels (dilation 2 at jump 4 over
    a 7-px field leaves gaps: the gridding of dilated convolutions); the theoretical field is the box."""
    want = _box_mask(f, unit, size)
    assert not (support & ~want).any(), what
    ys, xs = np.nonzero(support)
    wy, wx = np.nonzero(want)
    assert (ys.min(), xs.min(), ys.max(), xs.max()) == (wy.min(), wx.min(), wy.max(), wx.max()), what


def _box_mask(f, unit, size) -> np.ndarray:
    y0, x0, y1, x1 = f.box(unit)
    want = np.zeros((size, size), bool)
    want[max(y0, 0): y1 + 1, max(x0, 0): x1 + 1] = True
    return want


def test_aspp_branches_fields_equal_gradient_support_and_the_pooling_branch_sees_everything():
    from cnnviz.errors import RFError
    from cnnviz.rf import layer_fields

    net, size = _positive(_TinyDeepLab()), 64
    fields = layer_fields(net, size=size)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    rfs = []
    for k in range(4):  # 1x1 and the dilated 3x3 branches: each its own window, centred alike
        name = f"classifier.0.convs.{k}.0"
        f = fields[name]
        rfs.append(f.rf[0])
        for unit in [(0, 0), (7, 9), (15, 15)]:
            _check_support(_support(net, name, x, unit), f, unit, size, f"{name} {unit}")
    assert rfs == [7, 7 + 2 * 2 * 4, 7 + 2 * 3 * 4, 7 + 2 * 4 * 4]  # dilation d adds 2*d*jump (jump 4)
    pooled = fields["classifier.0.convs.4.1"]  # after the global pooling: one unit, the whole input
    assert pooled.size == (1, 1) and pooled.rf[0] >= size
    assert _support(net, "classifier.0.convs.4.1", x, (0, 0)).all()
    # after the concatenation with the pooling branch every unit sees the whole input: no local field
    why = fields["classifier.0.project.0"]
    assert isinstance(why, str) and "image-pooling branch such as ASPP's" in why
    assert _support(net, "classifier.0.project.0", x, (0, 0)).all()
    with pytest.raises(RFError, match="whole input"):
        from cnnviz.rf import receptive_fields

        receptive_fields(net, size=size, layers=["classifier.0.project.0"])
    # --ignore-gates: the local branches' union, the widest dilated branch
    local = layer_fields(net, size=size, ignore_gates=True)["classifier.0.project.0"]
    assert local.rf[0] == rfs[-1]


def test_lraspp_head_upsampled_branch_is_refused_with_the_reason_and_the_low_branch_is_exact():
    from torchvision.models.segmentation.lraspp import LRASPPHead

    from cnnviz.rf import layer_fields

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.low = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
            self.high = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
            self.classifier = LRASPPHead(4, 6, 3, 8)

        def forward(self, x):
            low = self.low(x)
            return self.classifier({"low": low, "high": self.high(low)})

    net, size = _positive(Tiny()), 40
    fields = layer_fields(net, size=size, ignore_gates=True)
    f = fields["classifier.low_classifier"]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    for unit in [(0, 0), (10, 4), (19, 19)]:
        _check_support(_support(net, "classifier.low_classifier", x, unit), f, unit, size, str(unit))
    assert "resize" in fields["classifier.high_classifier"] and "unevenly spaced" in fields["classifier.high_classifier"]


def test_dilated_resnet_backbone_fields_equal_gradient_support():
    """FCN/DeepLabV3's ResNet replaces layer3/4's strides by dilation (output stride 8)."""
    from cnnviz.models import build_model
    from cnnviz.rf import layer_fields

    net, size = _positive(build_model("fcn_resnet50")), 96
    fields = layer_fields(net, size=size)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    for name in ["backbone.layer2.0.conv2", "backbone.layer3.0.conv2"]:
        f = fields[name]
        assert f.jump == (8, 8)
        for unit in [(0, 0), (11, 11)]:
            _check_support(_support(net, name, x, unit), f, unit, size, f"{name} {unit}")


# ---------------------------------------------------------------- maps on segmentation models


@pytest.mark.parametrize("name, stage, layers", [
    # torchvision's extractor keeps its own blocks (Conv2dNormActivation) whole: compare the act stage there
    ("lraspp_mobilenet_v3_large", "act", {"backbone.2.block.1.0": "backbone.2.block.1", "backbone.16.0": "backbone.16",
                                          "classifier.cbr.0": "classifier.cbr.2"}),
    ("lraspp_mobilenet_v3_large", "conv", {"classifier.low_classifier": "classifier.low_classifier"}),
    ("deeplabv3_resnet50", "conv", {n: n for n in ["backbone.layer1.0.conv1", "backbone.layer3.2.conv2",
                                                   "classifier.0.convs.2.0", "classifier.0.project.0"]}),
])
def test_maps_equal_create_feature_extractor_and_stop_early(name, stage, layers, tmp_path):
    from torchvision.models.feature_extraction import create_feature_extractor

    from cnnviz.capture import capture

    lm = load_model(name, weights="none")
    x = torch.from_numpy(preprocess(load_image(_photo(tmp_path)), size=72)[0])[None]
    x = torch.cat([x, x.flip(-1)])
    got = capture(lm.model, x, list(layers), stage=stage)
    ref = create_feature_extractor(lm.model, return_nodes=list(layers.values()))
    with torch.no_grad():
        want = ref(x)
    for ours, theirs in layers.items():
        assert got[ours].shape == want[theirs].shape
        torch.testing.assert_close(got[ours], want[theirs], rtol=1e-5, atol=1e-5)
    # a backbone map never runs the head
    ran = []
    h = lm.model.classifier.register_forward_pre_hook(lambda *_: ran.append(1))
    try:
        capture(lm.model, x, [next(iter(layers))], stage=stage)
    finally:
        h.remove()
    assert not ran or next(iter(layers)).startswith("classifier")


def test_maps_cli_states_the_input_the_convs_saw(cli, tmp_path):
    img = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8)).save(img)
    r = cli("maps", str(img), "-m", "lraspp_mobilenet_v3_large", "--weights", "none", "-l", "backbone.16.0", "-s", "64",
            "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    # shorter side 64, aspect kept (no crop): 64x128 in, stride 16 -> 4x8 maps
    assert rec["input"] == [64, 128] and rec["shape"] == [960, 4, 8]


def test_your_own_dense_model_from_a_file(cli, tmp_path):
    """A user's model returning (N, classes, H, W) (no task known before it runs): cam finds its
    output dense and explains the class covering most pixels, equal to pytorch-grad-cam."""
    (tmp_path / "segnet.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())\n"
        "        self.head = nn.Conv2d(8, 3, 1)\n\n"
        "    def forward(self, x):\n"
        "        y = self.head(self.body(x))\n"
        "        return nn.functional.interpolate(y, size=x.shape[-2:], mode='bilinear', align_corners=False)\n")
    img = _photo(tmp_path, "coffee")
    r = cli("cam", str(img), "-m", f"{tmp_path / 'segnet.py'}:Net", "--weights", "none", "-s", "40", "-l", "body",
            "--npy", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["target"] == "segmentation" and rec["size"][0] == 40
    from cnnviz.sources import as_spec, load

    model = load(as_spec(f"{tmp_path / 'segnet.py'}:Net", weights="none")).model  # the job's model (seeded)
    x = torch.from_numpy(preprocess(load_image(img), size=40)[0])[None]
    with torch.no_grad():
        pred = model(x).argmax(1)[0].numpy()
    mask = pred == rec["class"]
    assert rec["region_pixels"] == int(mask.sum())

    class Plain(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return {"out": self.m(x)}

    ref = _reference("gradcam", Plain(model), model.body, x, rec["class"], mask)
    assert np.abs(_npy(rec["path"]) - ref[0]).max() <= TOL


@pytest.mark.parametrize("args, message", [
    (("maximize", "-m", "lraspp_mobilenet_v3_large", "--weights", "none", "--class", "person"),
     "--class maximizes a classifier's class logit; lraspp_mobilenet_v3_large is a segmentation model"),
    (("ablate", "IMG", "-m", "lraspp_mobilenet_v3_large", "--weights", "none", "-l", "backbone.16.0", "--stage", "conv"),
     "ablate measures a classifier's accuracy or top-1 agreement; lraspp_mobilenet_v3_large is a segmentation model"),
])
def test_commands_without_a_dense_meaning_refuse_in_one_line(cli, tmp_path, args, message):
    img = _photo(tmp_path)
    r = cli(*[str(img) if a == "IMG" else a for a in args], "-o", str(tmp_path / "out"))
    assert r.exit_code != 0 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_layers_states_the_shorter_side_rule_and_the_aux_head(cli):
    r = cli("layers", "-m", "fcn_resnet50")  # pretrained weights' architecture: no weights are read
    assert r.exit_code == 0, r.stderr
    assert "aux_classifier.4" in r.stdout and "runs too, eval included" in r.stdout + r.stderr
    assert "the shorter side, aspect kept, no crop" in r.stdout + r.stderr
    r = cli("layers", "-m", "fcn_resnet50", "--weights", "none")
    assert "aux_classifier" not in r.stdout
