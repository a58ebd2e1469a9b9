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
