"""Detectors: the input their convs see, hooked maps against the model's own transform + backbone,
box explanations against pytorch-grad-cam's FasterRCNNBoxScoreTarget, the commands end to end."""
from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz import cam, detect
from cnnviz.capture import Capture, HookPoint, capture, has_hooks
from cnnviz.models import build_model

NAME = "fasterrcnn_mobilenet_v3_large_fpn"
TOL = 1e-4


def _small(model: torch.nn.Module, side: int = 160, most: int = 256) -> torch.nn.Module:
    t = detect.original_transform(model)
    t.min_size, t.max_size = (side,), most
    return model


@pytest.fixture(scope="module")
def person_net() -> torch.nn.Module:
    """Random Faster R-CNN (mobilenet) at 160 px whose box classifier favours 'person' (bias +4):
    random weights detect nothing otherwise; its weights x30 so the scores depend on the features
    (else the gradients are ~1e-12 and float32 rounding differs between any two implementations).
    Parameters require grad (pytorch-grad-cam needs it)."""
    m = _small(build_model(NAME))
    with torch.no_grad():
        m.roi_heads.box_predictor.cls_score.bias[1] += 4.0
        m.roi_heads.box_predictor.cls_score.weight.mul_(30.0)
    m.roi_heads.detections_per_img = 8
    return m


def _photo(h: int, w: int) -> np.ndarray:
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((w, h), Image.BILINEAR)
    return np.asarray(img)


def _fed(model: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(model)
    detect.prepare(m)
    return m


# ---------------------------------------------------------------- what the convs see


@pytest.mark.parametrize("hw", [(160, 224), (203, 301)])  # exact multiples of 32, and a size the model pads
def test_model_input_is_the_models_own_transform(person_net, hw):
    rgb = _photo(*hw)
    fed = detect.model_input(person_net, rgb)
    img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        ref, _ = person_net.transform([img])
    assert fed.x.shape == tuple(ref.tensors.shape[1:])
    assert fed.x.shape[-2] % 32 == 0 and fed.x.shape[-1] % 32 == 0
    assert fed.valid == tuple(ref.image_sizes[0])
    assert np.array_equal(fed.x, ref.tensors[0].numpy())
    assert fed.display.shape[:2] == fed.x.shape[-2:]
    h, w = fed.valid
    assert (fed.display[h:] == 0).all() and (fed.display[:, w:] == 0).all()


def test_hooked_backbone_maps_equal_the_model_computed_independently(person_net):
    """Maps hooked on the fed model = torchvision's create_feature_extractor on the unmodified
    model's backbone body, and the FPN's top-down path written out by hand, both fed by the
    model's own transform."""
    import torch.nn.functional as F
    from torchvision.models.feature_extraction import create_feature_extractor

    rgb = _photo(203, 301)
    net = _fed(person_net)
    fed = detect.model_input(net, rgb)
    points = [HookPoint("backbone.body.3.block.0"), HookPoint("backbone.fpn.inner_blocks.1.0"),
              HookPoint("backbone.fpn.layer_blocks.0.0")]
    with Capture(net, points) as cap:
        got = cap.run(torch.from_numpy(fed.x)[None])
    img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    bb = person_net.backbone
    with torch.no_grad():
        x = person_net.transform([img])[0].tensors
        body = create_feature_extractor(bb.body, ["3.block.0"])(x)["3.block.0"]
        feats = list(bb.body(x).values())
        last = bb.fpn.inner_blocks[1](feats[1])
        lateral = bb.fpn.inner_blocks[0](feats[0])
        p0 = bb.fpn.layer_blocks[0](lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest"))
    assert torch.equal(got[points[0]], body)
    assert torch.equal(got[points[1]], last)
    assert torch.allclose(got[points[2]], p0, atol=1e-6, rtol=0)
    assert not has_hooks(net)


def test_backbone_capture_stops_before_the_heads(person_net):
    net = _fed(person_net)
    ran = []
    h = net.rpn.register_forward_pre_hook(lambda *a: ran.append("rpn"))
    try:
        with Capture(net, [HookPoint("backbone.body.3.block.0.0")]) as cap:
            cap.run(torch.zeros(1, 3, 160, 224))
    finally:
        h.remove()
    assert ran == []


def test_fed_model_detects_as_the_model_does(person_net):
    rgb = _photo(203, 301)  # padded: boxes are clipped to the valid image, as the model does
    net = _fed(person_net)
    fed = detect.model_input(net, rgb)
    got = detect.detect(net, torch.from_numpy(fed.x)[None], valid=fed.valid)
    img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        images, _ = person_net.transform([img])
        feats = person_net.backbone(images.tensors)
        props, _ = person_net.rpn(images, feats)
        ref, _ = person_net.roi_heads(feats, props, images.image_sizes)
    assert len(got) == len(ref[0]["boxes"]) > 0
    assert np.allclose([d.box for d in got], ref[0]["boxes"].numpy(), atol=1e-4)
    assert [d.label for d in got] == ref[0]["labels"].tolist()


# ---------------------------------------------------------------- explanations vs pytorch-grad-cam


def _reference(model, layer_module, x01, box, label, method="GradCAM"):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with getattr(pgc, method)(model=model, target_layers=[layer_module]) as c:
            return c(input_tensor=x01, targets=[FasterRCNNBoxScoreTarget(labels=[label], bounding_boxes=[np.asarray(box)])])


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_box_cam_equals_pytorch_grad_cam(person_net, method):
    rgb = _photo(160, 224)  # the model's resize is the identity at this size, no padding
    net = _fed(person_net)
    fed = detect.model_input(net, rgb)
    x = torch.from_numpy(fed.x)[None]
    dets = detect.detect(net, x, valid=fed.valid)
    assert len(dets) >= 2
    layer = cam.CamLayer("backbone.fpn.layer_blocks.0", HookPoint("backbone.fpn.layer_blocks.0"))
    chosen = dets[:2]
    scorer = detect.DetectionScores(net, [d.box for d in chosen], [d.label for d in chosen], valid=fed.valid)
    got = cam.explain(scorer, x.expand(2, -1, -1, -1), [0, 1], method=method, layers=[layer])
    x01 = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] / 255
    for j, d in enumerate(chosen):
        ref = _reference(person_net, person_net.backbone.fpn.layer_blocks[0], x01, d.box, d.label,
                         {"gradcam": "GradCAM", "hirescam": "HiResCAM"}[method])[0]
        assert ref.shape == got.norm[j].shape == (160, 224)
        assert np.abs(got.norm[j] - ref).max() <= TOL
        # the target at the clean input: the detection's own score + IoU 1 with itself
        assert got.logits[j, j] == pytest.approx(d.score + 1.0, abs=1e-4)
    assert not has_hooks(net)


def test_box_scores_match_grad_cams_target(person_net):
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    out = {"boxes": torch.tensor([[0., 0, 10, 10], [5, 5, 20, 20]]), "labels": torch.tensor([1, 2]),
           "scores": torch.tensor([0.9, 0.6])}
    boxes = torch.tensor([[0., 0, 10, 11], [5, 5, 20, 20], [5, 5, 20, 20], [50, 50, 60, 60]])
    labels = [1, 2, 3, 1]
    got = detect.box_scores([out], boxes, labels)[0]
    for k in range(4):
        ref = FasterRCNNBoxScoreTarget(labels=[labels[k]], bounding_boxes=[boxes[k].numpy()])(out)
        assert float(got[k]) == pytest.approx(float(ref), abs=1e-6)


def test_pick_refuses_in_one_line():
    d = [detect.Detection((0, 0, 1, 1), 1, 0.3)]
    with pytest.raises(Exception, match="no detection scores at least --score-threshold 0.5; the best scores 0.3"):
        detect.pick(d, box=None, score_threshold=0.5)
    with pytest.raises(Exception, match=r"--box 3: the model found 1 box\(es\)"):
        detect.pick(d, box=3, score_threshold=0.5)
    assert detect.pick(d, box=0, score_threshold=0.9) == [(0, d[0])]


# ---------------------------------------------------------------- receptive fields: backbone, FPN, shared heads


def _reaches(model, point, unit, hw, rows, cols):
    """For each row in ``rows`` (then each column in ``cols``) made bright: does unit (y, x) of
    channel 0 at ``point`` change? One batched forward, stopped at ``point``."""
    base = torch.zeros(1, 3, *hw)
    xs = [base]
    for r in rows:
        x = base.clone()
        x[..., r, :] = 1.0
        xs.append(x)
    for c in cols:
        x = base.clone()
        x[..., :, c] = 1.0
        xs.append(x)
    with Capture(model, [point]) as cap:
        out = cap.run(torch.cat(xs))[point][:, 0, unit[0], unit[1]]
    assert float(out[0]) == 0.0
    return [bool(v > 0) for v in out[1:]]


@pytest.mark.slow
def test_rf_of_fpn_and_shared_heads_matches_what_reaches_each_unit():
    """Positive weights of gain ~1 per layer, zero biases, a black image (no cancellation, no
    overflow; max pooling passes a bright pixel): a bright row or column reaches a unit exactly when it lies in the unit's static window, the
    window's edges included, before FPN's nearest upsampling; after it the window contains every
    row that reaches the unit and is at most a few jumps wider (see rf._upsample). A head shared
    by pyramid levels has one field per level, each checked on its own call."""
    from cnnviz.rf import catalog, detector_fields

    model = build_model("retinanet_resnet50_fpn")
    detect.prepare(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_((torch.rand_like(m.weight) + 0.1) / (0.6 * fan_in))
                if m.bias is not None:
                    m.bias.zero_()
    hw = (384, 384)
    calls = detector_fields(model, size=hw)
    rows = {r.name: r for r in catalog(model, size=hw)}
    assert [lv["level"] for lv in rows["head.classification_head.conv.0.0"].levels] == ["0", "1", "2", "p6", "p7"]
    assert rows["head.classification_head.conv.0.0"].levels[1]["receptive_field"] > rows["head.classification_head.conv.0.0"].receptive_field
    # (conv, call, d): d = 2 ** (nearest 2x upsamplings on the unit's top-down path: level '0'
    # has two above it, level '1' one); the bound may be d jumps wider than the true window
    checks = [("backbone.fpn.inner_blocks.0.0", 0, 1), ("backbone.fpn.layer_blocks.0.0", 0, 4),
              ("head.classification_head.conv.0.0", 1, 2), ("head.regression_head.conv.1.0", 0, 4)]
    tested = 0
    for name, call, d in checks:
        lf = calls[name][call]
        f = lf.field
        assert not isinstance(f, str), (name, f)
        h = lf.shape[1]
        slack = 0 if d == 1 else d * f.jump[0]  # how much wider than the truth the bound may be
        for i in (4, h - 4):  # units near both borders
            lo, hi = f.lo[0] + i * f.jump[0], f.hi[0] + i * f.jump[0]
            want = {lo - 1: False, lo + slack: True, hi - slack: True, hi + 1: False}
            rows = [r for r in want if 0 <= r < hw[0]]  # the window's edges inside the image
            got = dict(zip(rows, _reaches(model, HookPoint(name, call), (i, h // 2), hw, rows, [])))
            for r in rows:
                assert got[r] is want[r], (name, call, i, r, lo, hi, got)
                tested += 1
    assert tested >= 10


# ---------------------------------------------------------------- the commands


def _save(tmp_path, h=160, w=224):
    path = tmp_path / "street.png"
    Image.fromarray(_photo(h, w)).save(path)
    return str(path)


def test_cam_box_from_the_hub_cache_equals_pytorch_grad_cam(person_net, tmp_path, cli):
    """The pretrained path: the default weights' file, here random weights saved under its name in
    the (test's own, offline) torch hub cache, are what `cnnviz cam --box 0` explains; its --npy
    map equals pytorch-grad-cam's on the same weights, layer and input."""
    from cnnviz.models import checkpoint_path, resolve_weights

    member = resolve_weights(NAME, "DEFAULT")
    os.makedirs(os.path.dirname(checkpoint_path(member)), exist_ok=True)
    torch.save(person_net.state_dict(), checkpoint_path(member))
    img = _save(tmp_path)
    out = tmp_path / "out"
    r = cli("cam", img, "-m", NAME, "--box", "0", "--size", "160", "--npy", "--json", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert rec["box_index"] == 0 and rec["class_name"] == "person" and rec["layers"] == ["backbone.fpn.layer_blocks.0"]
    assert rec["input"] == rec["valid"] == [160, 224]
    assert rec["target"] == pytest.approx(rec["score"] + 1, abs=1e-4)
    got = np.load(rec["npy"])[1]
    ref_model = copy.deepcopy(person_net)
    t = ref_model.transform
    t.min_size, t.max_size = (160,), round(160 * 1333 / 800)  # what --size 160 means (detect.resized_transform)
    x01 = torch.from_numpy(np.asarray(Image.open(img).convert("RGB")).copy()).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        best = ref_model(x01)[0]
    assert np.allclose(rec["box"], best["boxes"][0].numpy(), atol=0.01)
    ref = _reference(ref_model, ref_model.backbone.fpn.layer_blocks[0], x01, best["boxes"][0].numpy(), int(best["labels"][0]))[0]
    assert np.abs(got - ref).max() <= TOL
    with Image.open(rec["path"]) as im:
        assert im.size[0] >= 224


def test_cam_detector_refusals_are_one_line(tmp_path, cli):
    img = _save(tmp_path)
    for args, msg in [(["--weights", "none"], "no detection scores at least --score-threshold 0.5"),
                      (["--weights", "none", "--class", "person"], "use --box K or --score-threshold P"),
                      (["--weights", "none", "--size", "100x120"], "--size S sets the shorter side")]:
        size = [] if "--size" in args else ["--size", "160"]
        r = cli("cam", img, "-m", NAME, *size, *args, "-o", str(tmp_path / "o"))
        assert r.exit_code == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("ablate", img, img, "-m", NAME, "--weights", "none", "-l", "3", "-o", str(tmp_path / "a"))
    assert r.exit_code == 2 and "is a detection model" in r.stderr and r.stderr.count("\n") == 1


def test_layers_and_maps_commands_on_a_detector(tmp_path, cli):
    r = cli("layers", "-m", NAME, "--size", "320", "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["backbone.body.0.0"]["output_shape"] == [16, 160, 160]
    assert rows["rpn.head.conv.0.0"]["levels"] is not None and len(rows["rpn.head.conv.0.0"]["levels"]) == 3
    img = _save(tmp_path, 203, 301)
    r = cli("maps", img, "-m", NAME, "--weights", "none", "-l", "backbone.body.3.block.1.0", "--size", "160", "--json",
            "-o", str(tmp_path / "m"))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["input"] == [160, 256] and rec["valid"] == [160, 237]
