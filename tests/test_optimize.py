"""Activation maximization: parametrisation, transforms, objectives, the loop, class names, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnviz.capture import has_hooks
from cnnviz.errors import SelectionError, UsageError
from cnnviz.layers import conv_layers
from cnnviz.optimize import (
    COLOR_CORRELATION,
    Transforms,
    affine_theta,
    apply_transforms,
    evaluate,
    image_param,
    maximize,
    model_size,
    objective_values,
    resolve_classes,
    resolve_device,
    rfft2d_freqs,
)

FAST = dict(size=24, min_model_size=24, steps=6, lr=0.05)


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


# --- parametrisation ---------------------------------------------------------------------------


def test_fft_param_matches_independent_inverse_fft():
    """The image equals numpy's inverse real FFT of the 1/f-scaled spectrum, colour-mixed, sigmoid."""
    p = image_param(_gens(2), size=(10, 7), kind="fft", sd=0.5)
    img = p().detach().numpy()
    spec = p.param.detach().numpy()
    f = np.sqrt(np.fft.fftfreq(10)[:, None] ** 2 + np.fft.rfftfreq(7)[None, :] ** 2)
    scale = 1.0 / np.maximum(f, 1.0 / 10)
    z = (spec[..., 0] + 1j * spec[..., 1]) * scale
    x = np.fft.irfft2(z, s=(10, 7), norm="ortho") / 4.0
    x = np.einsum("nchw,dc->ndhw", x, COLOR_CORRELATION)
    want = 1 / (1 + np.exp(-x))
    assert img.shape == (2, 3, 10, 7)
    np.testing.assert_allclose(img, want, atol=1e-5)
    assert rfft2d_freqs(10, 7).shape == (10, 4)


def test_params_start_grey_and_pixel_param_is_plain_sigmoid():
    for kind in ("fft", "pixel"):
        img = image_param(_gens(3), size=(16, 16), kind=kind)().detach()
        assert img.shape == (3, 3, 16, 16)
        assert float((img - 0.5).abs().max()) < 0.05  # a neutral start
    p = image_param(_gens(1), size=(5, 5), kind="pixel", decorrelate=False, sd=1.0)
    torch.testing.assert_close(p(), torch.sigmoid(p.param))


def test_param_start_depends_only_on_its_generator():
    a = image_param([torch.Generator().manual_seed(7)], size=(8, 8))
    b = image_param(_gens(3) + [torch.Generator().manual_seed(7)], size=(8, 8))
    torch.testing.assert_close(a.param[0], b.param[3])


# --- transforms --------------------------------------------------------------------------------


def test_identity_transform_reproduces_the_image():
    img = torch.rand(2, 3, 12, 12)
    theta = affine_theta(torch.tensor([[0, 0, 1.0, 0, 0, 0]] * 2, dtype=torch.float64), size=(12, 12), pad=0)
    torch.testing.assert_close(apply_transforms(img, theta, out_size=(12, 12)), img, atol=1e-5, rtol=0)


def test_padding_is_grey_and_image_centred():
    img = torch.zeros(1, 3, 4, 4)
    theta = affine_theta(torch.tensor([[0, 0, 1.0, 0, 0, 0]], dtype=torch.float64), size=(4, 4), pad=2)
    out = apply_transforms(img, theta, out_size=(8, 8))[0, 0]
    assert torch.allclose(out[2:6, 2:6], torch.zeros(4, 4), atol=1e-6)
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:6, 2:6] = False
    assert torch.allclose(out[border], torch.full((int(border.sum()),), 0.5))


def test_jitter_shifts_by_whole_pixels_and_rotation_by_90_degrees():
    img = torch.rand(1, 3, 8, 8)
    shift = affine_theta(torch.tensor([[2.0, -1.0, 1.0, 0, 0, 0]], dtype=torch.float64), size=(8, 8), pad=0)
    out = apply_transforms(img, shift, out_size=(8, 8))
    # content moves right by 2 and up by 1: out[y, x] = img[y + 1, x - 2]
    torch.testing.assert_close(out[..., 0:7, 2:8], img[..., 1:8, 0:6], atol=1e-5, rtol=0)
    rot = affine_theta(torch.tensor([[0, 0, 1.0, math.pi / 2, 0, 0]], dtype=torch.float64), size=(8, 8), pad=0)
    out = apply_transforms(img, rot, out_size=(8, 8))
    turned = torch.rot90(img, k=1, dims=(2, 3))
    flipped = torch.rot90(img, k=-1, dims=(2, 3))
    err = min(float((out - turned).abs().max()), float((out - flipped).abs().max()))
    assert err < 1e-4


def test_scale_zooms_about_the_centre():
    img = torch.rand(1, 3, 8, 8)
    theta = affine_theta(torch.tensor([[0, 0, 2.0, 0, 0, 0]], dtype=torch.float64), size=(8, 8), pad=0)
    out = apply_transforms(img, theta, out_size=(16, 16))
    want = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)[..., 8:24, 8:24]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_model_size_upscales_small_canvases_only():
    assert model_size((128, 128), pad=12) == (224, 224, 224 / 152)
    assert model_size((300, 400), pad=0) == (300, 400, 1.0)
    with pytest.raises(UsageError):
        Transforms(scale=(1.2, 1.1)).check()


# --- objectives --------------------------------------------------------------------------------


def test_objective_values_pick_each_images_target():
    out = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)
    t = torch.tensor([2, 0])
    torch.testing.assert_close(objective_values(out, t, "channel"), torch.stack([out[0, 2].mean(), out[1, 0].mean()]))
    torch.testing.assert_close(objective_values(out, t, "neuron"), torch.stack([out[0, 2, 1, 1], out[1, 0, 1, 1]]))
    logits = torch.randn(2, 5)
    torch.testing.assert_close(objective_values(logits, t, "class"), torch.stack([logits[0, 2], logits[1, 0]]))


# --- the loop ----------------------------------------------------------------------------------


def test_objective_rises_within_a_few_steps(tiny_vgg):
    layer = conv_layers(tiny_vgg)[2]
    res = maximize(tiny_vgg, targets=[0, 3, 5], layer=layer, **FAST)
    assert res.images.shape == (3, 24, 24, 3) and res.images.dtype == np.float32
    assert 0.0 <= res.images.min() and res.images.max() <= 1.0
    assert res.history.shape == (6, 3)
    assert (res.history[-1] > res.history[0]).all()
    # the reported value is the independent, untransformed score of the returned images ...
    start = evaluate(tiny_vgg, np.full((3, 24, 24, 3), 0.5, np.float32), targets=[0, 3, 5], layer=layer, factor=1.0)
    np.testing.assert_allclose(res.values, evaluate(tiny_vgg, res.images, targets=[0, 3, 5], layer=layer, factor=1.0), rtol=1e-5)
    assert (res.values > start).all()  # ... and higher than a grey image's


def test_evaluate_matches_running_the_layers_by_hand(tiny_vgg):
    layer = conv_layers(tiny_vgg)[1]  # features.2, pre-ReLU
    imgs = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2) - mean) / std
    with torch.no_grad():
        f = tiny_vgg.features
        a = f[2](F.relu(f[0](x)))
    got = evaluate(tiny_vgg, imgs, targets=[1, 4], layer=layer, factor=1.0)
    np.testing.assert_allclose(got, [a[0, 1].mean().item(), a[1, 4].mean().item()], rtol=1e-5)
    got = evaluate(tiny_vgg, imgs, targets=[1, 4], layer=layer, stage="act", factor=1.0)
    np.testing.assert_allclose(got, [F.relu(a)[0, 1].mean().item(), F.relu(a)[1, 4].mean().item()], rtol=1e-5)


def test_same_seed_same_images_other_seed_other_images(tiny_vgg):
    layer = conv_layers(tiny_vgg)[2]
    a = maximize(tiny_vgg, targets=[1, 2], layer=layer, seed=3, **FAST)
    b = maximize(tiny_vgg, targets=[1, 2], layer=layer, seed=3, **FAST)
    c = maximize(tiny_vgg, targets=[1, 2], layer=layer, seed=4, **FAST)
    np.testing.assert_array_equal(a.images, b.images)
    assert np.abs(a.images - c.images).max() > 1e-3


def test_global_rng_is_untouched(tiny_vgg):
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    maximize(tiny_vgg, targets=[0], layer="features.0", **FAST)
    torch.testing.assert_close(torch.rand(3), want)


def test_batched_equals_separately_run_channels(tiny_vgg):
    layer = conv_layers(tiny_vgg)[2]
    together = maximize(tiny_vgg, targets=[4, 1, 6], layer=layer, **FAST)
    chunked = maximize(tiny_vgg, targets=[4, 1, 6], layer=layer, batch_size=2, **FAST)
    for i, t in enumerate([4, 1, 6]):
        alone = maximize(tiny_vgg, targets=[t], layer=layer, **FAST)
        np.testing.assert_allclose(together.images[i], alone.images[0], atol=1e-5)
        np.testing.assert_allclose(together.values[i], alone.values[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked.images, together.images, atol=1e-5)


def test_hooks_removed_mode_and_grad_flags_restored(tiny_vgg):
    tiny_vgg.train()
    tiny_vgg.fc.weight.requires_grad_(True)
    flags = [p.requires_grad for p in tiny_vgg.parameters()]
    maximize(tiny_vgg, targets=[0], layer="features.2", **FAST)
    maximize(tiny_vgg, targets=[1], objective="class", **FAST)
    assert not has_hooks(tiny_vgg)
    assert tiny_vgg.training
    assert [p.requires_grad for p in tiny_vgg.parameters()] == flags
    assert all(p.grad is None for p in tiny_vgg.parameters())  # weights got no gradient


def test_hooks_removed_after_an_error_inside_the_loop(tiny_vgg):
    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        maximize(tiny_vgg, targets=[0], layer="features.2", progress=boom, **FAST)
    assert not has_hooks(tiny_vgg)


def test_forward_stops_at_the_target_layer(tiny_vgg):
    calls = []
    tiny_vgg.features[5].register_forward_hook(lambda *a: calls.append(1))
    maximize(tiny_vgg, targets=[0], layer="features.2", **FAST)
    assert calls == []


def test_class_objective_raises_the_logit_and_works_under_inference_mode(tiny_vgg):
    with torch.inference_mode():  # the image parameter must still be trainable
        res = maximize(tiny_vgg, targets=[3, 0], objective="class", **FAST)
    assert (res.history[-1] > res.history[0]).all()
    with torch.no_grad():
        x = torch.full((1, 3, 24, 24), 0.5)
        grey = tiny_vgg((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    assert res.values[0] > grey[0, 3].item()


def test_neuron_objective_and_pixel_param_without_transforms(tiny_vgg):
    res = maximize(tiny_vgg, targets=[2], layer="features.5", objective="neuron", param="pixel",
                   decorrelate=False, transforms=None, **FAST)
    assert res.history[-1, 0] > res.history[0, 0]
    assert res.input_size == (24, 24)


def test_bf16_autocast_still_climbs_and_returns_float32(tiny_vgg):
    res = maximize(tiny_vgg, targets=[0, 3], layer="features.2", precision="bf16", **FAST)
    assert res.images.dtype == np.float32 and res.values.dtype == np.float64
    assert (res.history[-1] > res.history[0]).all()


def test_bad_requests_raise_usage_errors(tiny_vgg):
    layer = conv_layers(tiny_vgg)[0]
    with pytest.raises(SelectionError, match="channel 9 out of range"):
        maximize(tiny_vgg, targets=[9], layer=layer, **FAST)
    with pytest.raises(UsageError, match="class objective takes no layer"):
        maximize(tiny_vgg, targets=[0], layer=layer, objective="class", **FAST)
    with pytest.raises(UsageError, match="steps"):
        maximize(tiny_vgg, targets=[0], layer=layer, **{**FAST, "steps": 0})
    with pytest.raises(UsageError):
        resolve_device("tpu")
    with pytest.raises(UsageError, match="precision"):
        maximize(tiny_vgg, targets=[0], layer=layer, precision="fp8", **FAST)


# --- class names -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def categories() -> list[str]:
    from cnnviz.models import weights_enum

    return list(weights_enum("vgg16").DEFAULT.meta["categories"])  # metadata only, no weights file


@pytest.mark.parametrize("spec", ["tennis ball", "tennis_ball", "Tennis-Ball", "852", "-148", "tennis"])
def test_class_names_match_forgivingly(categories, spec):
    assert categories[852] == "tennis ball"
    assert resolve_classes(spec, categories) == [852]


def test_class_lists_slices_globs_and_errors(categories):
    assert resolve_classes(["goldfish,0:2", "852"], categories) == [1, 0, 852]
    assert all("terrier" in categories[i] for i in resolve_classes("*terrier", categories))
    with pytest.raises(SelectionError, match="ambiguous"):
        resolve_classes("terrier", categories)
    with pytest.raises(SelectionError, match="did you mean 'tennis ball'"):
        resolve_classes("tenis ball", categories)
    with pytest.raises(SelectionError, match=r"out of range: there are 1000 classes \(0\.\.999"):
        resolve_classes("1000", categories)
    with pytest.raises(SelectionError, match="no category names"):
        resolve_classes("goldfish", [], count=10)
    assert resolve_classes("7", [], count=10) == [7]


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_writes_grid_json_and_npy(cli, tmp_path):
    r = cli("maximize", "--model", "mobilenet_v3_small", "--weights", "none", "--layer", "0", "--channels", "0:3",
            "--steps", "2", "--size", "16", "--npy", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.strip())
    assert rec["path"] == str(tmp_path / "mobilenet_v3_small-00-features.0.0-maximize-c0-2-steps2-s16.png")
    assert rec["layer"] == 0 and rec["name"] == "features.0.0" and rec["channels"] == [0, 1, 2]
    assert rec["steps"] == 2 and len(rec["values"]) == 3
    from PIL import Image

    im = Image.open(rec["path"])
    assert im.mode == "RGB" and im.width == 2 * 96 + 2  # 2x2 grid, 16 px images enlarged to 96 px tiles
    arr = np.load(rec["npy"])
    assert arr.shape == (3, 16, 16, 3) and arr.dtype == np.float32
    assert "Traceback" not in r.stderr


def test_cli_separate_and_class(cli, tmp_path):
    r = cli("maximize", "--model", "mobilenet_v3_small", "--weights", "none", "--layer", "features.0.0", "--channels", "2,5",
            "--steps", "1", "--size", "16", "--separate", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "mobilenet_v3_small-00-features.0.0-ch2-maximize-steps1-s16.png"),
                                str(tmp_path / "mobilenet_v3_small-00-features.0.0-ch5-maximize-steps1-s16.png")]
    from PIL import Image

    assert Image.open(r.stdout.split()[0]).size == (16, 16)
    r = cli("maximize", "--model", "mobilenet_v3_small", "--weights", "none", "--class", "tennis_ball", "--steps", "1",
            "--size", "16", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["channels"] == [852] and rec["classes"] == ["tennis ball"] and rec["name"] == "logits"
    assert rec["path"].endswith("mobilenet_v3_small-class-maximize-852-steps1-s16.png")


@pytest.mark.parametrize("args, code, message", [
    (["--layer", "0", "--channels", "64"], 2, "channel index 64 out of range"),
    (["--layer", "99"], 2, "layer index 99 out of range"),
    (["--class", "tenis ball"], 2, "did you mean 'tennis ball'"),
    (["--class", "goldfish", "--layer", "0"], 2, "either --class or --layer"),
    ([], 2, "give --layer"),
    (["--layer", "0", "--size", "3"], 2, "out of range"),
    (["--layer", "0", "--lr", "0"], 2, "--lr must be > 0"),
    (["--layer", "0", "--device", "tpu"], 2, "unknown device"),
    (["--layer", "0", "--separate", "-o", "-"], 2, "exactly one PNG"),
])
def test_cli_bad_input_one_line_and_exit_code(cli, args, code, message):
    r = cli("maximize", "--model", "mobilenet_v3_small", "--weights", "none", "--steps", "1", *args)
    assert r.exit_code == code
    assert message in r.stderr
    assert r.stderr.count("cnnviz: error:") == 1 and "Traceback" not in r.stderr


def test_cli_help_has_examples(cli):
    r = cli("maximize", "--help")
    assert r.exit_code == 0 and "Examples:" in r.stdout and "--class" in r.stdout


def test_out_of_range_targets_are_our_error_for_str_layers_and_classes():
    from cnnviz.errors import SelectionError
    from cnnviz.optimize import _check_targets

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    with pytest.raises(SelectionError, match="channel 7 out of range: 0 has 4 channels"):
        _check_targets(net, "0", "channel", [7])
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
    with pytest.raises(SelectionError, match="class 9 out of range: the model has 5 classes"):
        _check_targets(net, None, "class", [9])


def test_out_of_range_channel_names_the_layer_for_records_and_names(tiny_vgg):
    from cnnviz.errors import SelectionError
    from cnnviz.optimize import _check_targets

    layer = conv_layers(tiny_vgg)[1]
    for given in (layer, layer.name):
        with pytest.raises(SelectionError, match=rf"channel 99 out of range: {layer.name} has {layer.out_channels} channels"):
            _check_targets(tiny_vgg, given, "channel", [99])


def test_maximize_grid_enlarges_labels_and_titles():
    from cnnviz.optimize import grid_title, maximize_grid, recipe_note

    imgs = np.random.default_rng(0).random((3, 32, 40, 3)).astype(np.float32)
    bare = maximize_grid(imgs, targets=[0, 1, 2], labels=False)
    tiles = np.rint(imgs * 255).astype(np.uint8).repeat(3, axis=1).repeat(3, axis=2)  # 32 px -> 96 px, nearest
    assert bare.shape == (2 * 96 + 2, 2 * 120 + 2, 3)
    assert np.array_equal(bare[:96, :120], tiles[0]) and np.array_equal(bare[98:, :120], tiles[2])
    assert (bare[98:, 122:] == 255).all()  # the empty fourth cell
    title = grid_title(model="vgg16", weights="/tmp/ckpt/my.pth", steps=8,
                       recipe=recipe_note(param="pixel", decorrelate=False, transforms=None))
    assert title == "vgg16 class logits · 8 steps · weights my.pth · pixel · no transforms"
    full = maximize_grid(imgs, targets=[0, 1, 2], class_names=["tench", "goldfish", "a very long class name"], title=title)
    assert full.shape[1] == bare.shape[1] and full.shape[0] > bare.shape[0] + 30  # label bands and title lines
    assert np.array_equal(full[-96:, :120], tiles[2])  # the pictures themselves are untouched
