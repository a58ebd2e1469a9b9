"""cnnviz.cam against independent implementations: pytorch-grad-cam 1.5 for the CAM family, Captum for
the input attributions (max abs difference <= 1e-4 after both are scaled to [0, 1])."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnviz import cam
from cnnviz.capture import HookPoint, has_hooks
from cnnviz.errors import ModelError, SelectionError, UsageError


@pytest.fixture
def pgc():
    """pytorch-grad-cam, for the tests that compare with it: only they skip without it (the
    helpers below that call a reference skip their test the same way)."""
    return pytest.importorskip("pytorch_grad_cam")


def _targets(ts) -> list:
    """pytorch-grad-cam's targets for class indices ``ts``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(int(t)) for t in ts]

TOL = 1e-4

REFS = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}


class TinyRes(nn.Module):
    """stem -> residual block (add, functional-free ReLU module) -> block -> pool -> fc; the
    blocks sit in a Sequential like ResNet's stages."""

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.conv2(y) + x)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.stage = nn.Sequential(self.Block(6), self.Block(6))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage(self.relu(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def tiny_res() -> nn.Module:
    torch.manual_seed(1)
    m = TinyRes().eval()
    with torch.no_grad():  # non-trivial BN statistics
        m.stage[0].bn1.running_mean.uniform_(-0.2, 0.2)
        m.stage[0].bn1.running_var.uniform_(0.5, 1.5)
    return m


def _x(n: int = 3, h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _minmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    lo, hi = a.min(1, keepdims=True), a.max(1, keepdims=True)
    return ((a - lo) / np.where(hi > lo, hi - lo, 1)).reshape(-1)


def _reference(name: str, model: nn.Module, modules: list[nn.Module], x: torch.Tensor, targets) -> np.ndarray:
    cls = getattr(pytest.importorskip("pytorch_grad_cam"), REFS[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=model, target_layers=modules) as c:
            if name in ("scorecam", "ablationcam"):
                c.batch_size = 7  # several batches, one partial
            return c(input_tensor=x, targets=_targets(targets))


def _module(model: nn.Module, layer: cam.CamLayer) -> nn.Module:
    return dict(model.named_modules())[layer.point.module]


# ---------------------------------------------------------------- the CAM family vs pytorch-grad-cam


@pytest.mark.parametrize("name", [n for n in REFS if n != "eigengradcam"])  # eigen: see the sign tests
@pytest.mark.parametrize("net", ["tiny_vgg", "tiny_res"])
def test_cam_equals_pytorch_grad_cam(name, net, request):
    model = request.getfixturevalue(net)
    x, targets = _x(), [1, 3, 0]
    layer = cam.default_layer(model)
    ref = _reference(name, model, [_module(model, layer)], x, targets)
    got = cam.explain(model, x, targets, method=name, layers=[layer], batch_size=5)
    assert got.norm.shape == ref.shape == (3, 20, 24)
    assert np.abs(got.norm - ref).max() <= TOL
    assert not has_hooks(model)


def _signed_reference_projection(monkeypatch):
    """pytorch-grad-cam's EigenCAM with its own sign correction (get_2d_projection_with_sign_correction)."""
    from pytorch_grad_cam import eigen_cam, eigen_grad_cam
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_with_sign_correction

    monkeypatch.setattr(eigen_cam, "get_2d_projection", get_2d_projection_with_sign_correction)
    monkeypatch.setattr(eigen_grad_cam, "get_2d_projection", get_2d_projection_with_sign_correction)
    return get_2d_projection


@pytest.mark.parametrize("name", ["eigencam", "eigengradcam"])
def test_eigen_methods_equal_reference_up_to_its_arbitrary_sign(name, tiny_res, monkeypatch, pgc):
    x, targets = _x(4), [0, 1, 2, 3]
    layer = cam.default_layer(tiny_res)
    got = cam.explain(tiny_res, x, targets, method=name, layers=[layer]).norm
    # pytorch-grad-cam 1.5 keeps LAPACK's sign; cnnviz makes the larger lobe positive, which is
    # what the reference's own sign-corrected projection does: equal to that, pair by pair.
    _signed_reference_projection(monkeypatch)
    cls = pgc.EigenCAM if name == "eigencam" else pgc.EigenGradCAM
    with cls(model=tiny_res, target_layers=[_module(tiny_res, layer)]) as c:
        ref = c(input_tensor=x, targets=_targets(targets))
    assert np.abs(got - ref).max() <= TOL


def test_eigencam_unsigned_reference_matches_one_of_the_two_signs(tiny_res, pgc):
    x, targets = _x(4), [0, 1, 2, 3]
    layer = cam.default_layer(tiny_res)
    with pgc.EigenCAM(model=tiny_res, target_layers=[_module(tiny_res, layer)]) as c:
        ref = c(input_tensor=x, targets=_targets(targets))
    _, acts, _ = cam.activations_and_grads(tiny_res, x, torch.tensor(targets), [layer.point], grad=False)
    proj = cam.first_component(acts[0])
    for sign in (1, -1):
        mine = cam.minmax(cam.fuse([sign * proj], (20, 24))).numpy()
        close = np.abs(mine - ref).reshape(4, -1).max(1) <= TOL
        assert close.any() or sign == -1
    both = [np.abs(cam.minmax(cam.fuse([s * proj], (20, 24))).numpy() - ref).reshape(4, -1).max(1) for s in (1, -1)]
    assert (np.minimum(*both) <= TOL).all()


def test_layercam_fuses_several_layers_like_the_reference(tiny_res):
    x, targets = _x(2), [4, 6]
    layers = cam.resolve_layers(tiny_res, ["stage.0", "stage"])
    assert [layer.point.module for layer in layers] == ["stage.0", "stage"]
    ref = _reference("layercam", tiny_res, [_module(tiny_res, layer) for layer in layers], x, targets)
    got = cam.explain(tiny_res, x, targets, method="layercam", layers=layers)
    assert np.abs(got.norm - ref).max() <= TOL


# ---------------------------------------------------------------- input attributions vs Captum


def _captum(name: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, steps: int = 16) -> np.ndarray:
    captum_attr = pytest.importorskip("captum.attr")  # only the tests comparing with Captum skip without it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "saliency":
            return captum_attr.Saliency(model).attribute(x, target=t, abs=True).amax(1).detach().numpy()
        if name == "inputxgrad":
            return captum_attr.InputXGradient(model).attribute(x, target=t).sum(1).abs().detach().numpy()
        if name == "integrated-gradients":
            return captum_attr.IntegratedGradients(model).attribute(x, target=t, n_steps=steps).sum(1).abs().detach().numpy()
        return captum_attr.GuidedBackprop(model).attribute(x, target=t).sum(1).abs().detach().numpy()


@pytest.mark.parametrize("name", ["saliency", "inputxgrad", "integrated-gradients", "guided-backprop"])
@pytest.mark.parametrize("net", ["tiny_vgg", "tiny_res"])
def test_input_attributions_equal_captum(name, net, request):
    model = request.getfixturevalue(net)
    x, t = _x(), torch.tensor([1, 3, 0])
    ref = _captum(name, model, x.clone(), t)
    got = cam.explain(model, x, t, method=name, ig_steps=16, batch_size=10)
    assert np.abs(got.norm.reshape(-1) - _minmax(ref)).max() <= TOL
    assert not has_hooks(model)


def test_guided_backprop_equals_pytorch_grad_cam_and_guided_gradcam_is_its_product(tiny_vgg, pgc):
    from pytorch_grad_cam import GuidedBackpropReLUModel

    x = _x(1)
    gb = GuidedBackpropReLUModel(model=tiny_vgg, device="cpu")(x.clone(), target_category=2)  # (H, W, 3)
    got = cam.explain(tiny_vgg, x, [2], method="guided-backprop")
    assert np.abs(got.norm.reshape(-1) - _minmax(np.abs(gb.sum(-1))[None])).max() <= TOL
    layer = cam.default_layer(tiny_vgg)
    grad_cam = _reference("gradcam", tiny_vgg, [_module(tiny_vgg, layer)], x, [2])[0]
    ggc = np.abs((gb * grad_cam[..., None]).sum(-1))
    got = cam.explain(tiny_vgg, x, [2], method="guided-gradcam")
    assert np.abs(got.norm.reshape(-1) - _minmax(ggc[None])).max() <= TOL
    assert isinstance(tiny_vgg.features[1], nn.ReLU)  # the model is left as it was


# ---------------------------------------------------------------- layers, targets, batching


def test_default_layer_is_the_last_conv_activation_lifted_to_the_block():
    from cnnviz.models import build_meta_model

    assert cam.default_layer(build_meta_model("resnet50")).name == "layer4"
    assert cam.default_layer(build_meta_model("vgg16")).point == HookPoint("features.29", 0)


@pytest.mark.parametrize("name, layer", [
    ("convnext_tiny", "features"),  # not the depthwise conv inside the last block: the block's output
    ("densenet121", "features"),  # the dense block's concatenation (after norm5), not the last layer's 32 channels
    ("inception_v3", "Mixed_7c"),  # the concatenation of the branches, not one branch
    ("googlenet", "inception5b"),
    ("alexnet", "features.11"),  # 'features' ends with a pooling: the ReLU after the last conv
])
def test_default_layer_is_the_block_that_holds_the_last_conv(name, layer):
    from cnnviz.models import build_meta_model

    got = cam.default_layer(build_meta_model(name))
    assert got.name == layer and got.point == HookPoint(layer, 0)


def test_conv_layer_gradients_are_taken_before_an_inplace_relu(tiny_vgg):
    """A conv followed by ReLU(inplace=True): activations and gradients of the conv's own output."""
    x, t = _x(1), torch.tensor([3])
    (layer,) = cam.resolve_layers(tiny_vgg, "features.2", stage="conv")
    _, acts, grads = cam.activations_and_grads(tiny_vgg, x, t, [layer.point])
    f = tiny_vgg.features
    with torch.enable_grad():
        conv = f[2](torch.relu(f[0](x)))
        conv.retain_grad()
        out = tiny_vgg.fc(tiny_vgg.pool(torch.relu(f[5](f[4](conv.relu())))).flatten(1))
        out[0, 3].backward()
    assert acts[0].min() < 0  # not overwritten by the in-place ReLU
    torch.testing.assert_close(acts[0], conv.detach())
    torch.testing.assert_close(grads[0], conv.grad)


def test_batch_of_pairs_equals_one_pair_at_a_time(tiny_res):
    x = _x(2)
    xs = torch.cat([x, x])
    targets = [0, 1, 5, 6]  # two targets per image
    for method in ("gradcam", "scorecam", "integrated-gradients"):
        whole = cam.explain(tiny_res, xs, targets, method=method, ig_steps=8)
        for i in range(4):
            one = cam.explain(tiny_res, xs[i:i + 1], [targets[i]], method=method, ig_steps=8)
            assert np.abs(whole.norm[i] - one.norm[0]).max() <= 1e-5


def test_scorecam_and_ablationcam_skip_dead_channels_exactly(tiny_vgg):
    with torch.no_grad():  # channel 2 of the last conv never fires
        tiny_vgg.features[5].weight[2] = 0
        tiny_vgg.features[5].bias[2] = -1
    x, targets = _x(2), [1, 4]
    layer = cam.default_layer(tiny_vgg)
    for name in ("scorecam", "ablationcam"):
        ref = _reference(name, tiny_vgg, [_module(tiny_vgg, layer)], x, targets)
        assert np.abs(cam.explain(tiny_vgg, x, targets, method=name).norm - ref).max() <= TOL


def test_ablation_tail_runs_only_the_layers_after_the_target(tiny_res):
    calls = []
    handle = tiny_res.stem.register_forward_hook(lambda *a: calls.append(1))
    try:
        x = _x(1)
        layer = cam.resolve_layers(tiny_res, "stage.0")[0]
        tail = cam._Tail(tiny_res, x, layer.point)
        assert tail.gm is not None  # the skip connection of stage.1 reads the target: traced tail
        _, acts, _ = cam.activations_and_grads(tiny_res, x, torch.tensor([0]), [layer.point], grad=False)
        expected = cam.predict(tiny_res, x).repeat(3, 1)
        n = len(calls)
        torch.testing.assert_close(tail(acts[0].repeat(3, 1, 1, 1)), expected)
        assert len(calls) == n  # the layers before the target are not run again
    finally:
        handle.remove()


def test_ablation_tail_comes_from_the_shared_cached_trace(monkeypatch):
    """The tail is cut from graph.trace (traced once per model and leaf, not once per image), the
    cached graph is left without modules, and the model is not kept alive by any cache."""
    import gc
    import weakref

    from cnnviz import graph

    torch.manual_seed(1)
    tiny_res = TinyRes().eval()
    traced = []
    real = graph._Tracer.trace
    monkeypatch.setattr(graph._Tracer, "trace", lambda self, *a, **k: traced.append(self.leaves) or real(self, *a, **k))
    layer = cam.resolve_layers(tiny_res, "stage")[0]  # a Sequential: torch.fx would trace into it
    x, targets = _x(3), torch.tensor([0, 3, 6])
    ref = _reference("ablationcam", tiny_res, [_module(tiny_res, layer)], x, targets)
    got = cam.explain(tiny_res, x, targets, method="ablationcam", layers=[layer]).norm
    assert np.abs(got - ref).max() <= TOL
    assert traced.count(frozenset({"stage"})) == 1  # three images, one trace
    shared = graph.trace(tiny_res, leaves=["stage"])
    assert [n.target for n in shared.nodes if n.op == "call_module"] == ["stem", "relu", "stage", "pool", "fc"]
    assert shared.graph.owning_module is None
    ref_model = weakref.ref(tiny_res)
    del tiny_res, shared
    gc.collect()
    assert ref_model() is None


def test_ablation_on_an_untraceable_model_falls_back_to_the_whole_network():
    class Dynamic(TinyRes):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stage(self.relu(self.stem(x)))
            if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 1.0
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(1)
    net = Dynamic().eval()
    layer = cam.resolve_layers(net, "stage")[0]
    x, targets = _x(2), torch.tensor([1, 2])
    assert cam._Tail(net, x[:1], layer.point).gm is None
    ref = _reference("ablationcam", net, [_module(net, layer)], x, targets)
    assert np.abs(cam.explain(net, x, targets, method="ablationcam", layers=[layer]).norm - ref).max() <= TOL


def test_smoothgrad_is_the_mean_over_the_seeded_noisy_copies(tiny_vgg):
    x, t = _x(2), [0, 1]
    got = cam.explain(tiny_vgg, x, t, method="saliency", smooth=3, noise=0.2, seed=5)
    gen = torch.Generator().manual_seed(5)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1))[:, None, None, None]
    raws = [cam.explain(tiny_vgg, x + torch.randn(x.shape, generator=gen) * 0.2 * span, t, method="saliency").raw for _ in range(3)]
    np.testing.assert_allclose(got.raw, np.mean(raws, axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.logits, cam.predict(tiny_vgg, x).numpy(), rtol=1e-5)


def test_raw_map_is_the_unscaled_cam_at_input_resolution(tiny_vgg):
    x, t = _x(1), [2]
    layer = cam.default_layer(tiny_vgg)
    e = cam.explain(tiny_vgg, x, t, method="gradcam")
    _, acts, grads = cam.activations_and_grads(tiny_vgg, x, torch.tensor(t), [layer.point])
    low = cam.gradcam(acts[0], grads[0]).clamp(min=0)
    assert e.raw.shape == (1, 20, 24) and e.raw.dtype == np.float32
    assert e.raw.max() == pytest.approx(float(low.max()), rel=0.2)
    np.testing.assert_allclose(e.norm, cam.minmax(torch.from_numpy(e.raw)).numpy(), atol=1e-6)


# ---------------------------------------------------------------- errors and cleanup


def test_unknown_method_suggests():
    with pytest.raises(UsageError, match=r"unknown method 'gradcm' \(did you mean 'gradcam'"):
        cam.resolve_methods("gradcm")
    assert cam.resolve_methods("all") == list(cam.METHODS)
    assert cam.resolve_methods(["GradCAM_pp", "ig"]) == ["gradcam++", "integrated-gradients"]


def test_class_out_of_range_and_layer_without_spatial_output(tiny_vgg):
    with pytest.raises(SelectionError, match="class index 9 out of range: the model has 5 classes"):
        cam.explain(tiny_vgg, _x(1), [9], method="gradcam")
    with pytest.raises(UsageError, match="layer fc has no spatial output"):
        cam.explain(tiny_vgg, _x(1), [0], method="gradcam", layers=cam.resolve_layers(tiny_vgg, "fc"))
    assert not has_hooks(tiny_vgg) and not tiny_vgg.training


def test_model_without_classifier_head():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ModelError, match="no classifier head"):
        cam.explain(net, _x(1), [0], method="gradcam")
    assert not has_hooks(net)


def test_peak_and_mass_box():
    m = np.zeros((10, 12), np.float32)
    m[2, 3], m[4, 7], m[9, 0] = 10, 5, 1
    assert cam.peak(m) == (2, 3)
    assert cam.mass_box(m, mass=0.5) == (2, 3, 3, 4)
    assert cam.mass_box(m, mass=0.9) == (2, 3, 5, 8)
    assert cam.mass_box(np.zeros((3, 4))) == (0, 0, 3, 4)


# ---------------------------------------------------------------- full-size models (random weights)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "vgg16"])
def test_full_size_models_equal_the_references(arch):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x, targets = _x(2, 64, 80), [1, 300]
    layer = cam.default_layer(model)
    # Score-CAM and Ablation-CAM (one full reference forward per channel: minutes here) are
    # compared on the tiny nets only; scripts/bench_cam.py compares them on ResNet-50 at 224.
    for name in ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"):
        ref = _reference(name, model, [_module(model, layer)], x, targets)
        got = cam.explain(model, x, targets, method=name, layers=[layer], batch_size=64)
        assert np.abs(got.norm - ref).max() <= TOL, name
    t = torch.tensor(targets)
    for name in ("saliency", "guided-backprop"):
        got = cam.explain(model, x, t, method=name)
        assert np.abs(got.norm.reshape(-1) - _minmax(_captum(name, model, x.clone(), t))).max() <= TOL, name
