"""The cam method registry (one object per method, the CLI derived from it) and Score-CAM's
shared, channels-last masked passes."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz import cam, cammethods
from cnnviz.cammethods import Method, register, unregister

ARGS = ("-m", "resnet18", "--weights", "none", "--size", "64")


@pytest.fixture
def registered():
    """Register methods for one test; they are removed afterwards."""
    names: list[str] = []

    def add(method: Method) -> Method:
        register(method)
        names.append(method.name)
        return method

    yield add
    for n in names:
        unregister(n)


def _channel_max(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    """A made-up CAM: each position's largest channel."""
    assert grads is None  # grad=False: no backward pass
    return acts.amax(1)


# ---------------------------------------------------------------- the registry


def test_one_registered_object_is_a_method_of_the_cli(cli, registered, rgb_image, tmp_path):
    registered(Method("maxcam", "cam", _channel_max, "made-up: the largest channel at each position", grad=False))
    listed = cli("cam", "--method", "list")
    assert listed.exit_code == 0
    assert [ln.split()[0] for ln in listed.stdout.splitlines()][-1] == "maxcam"
    assert "made-up: the largest channel" in listed.stdout
    assert "maxcam" in " ".join(cli("cam", "--help").stdout.split())

    r = cli("cam", str(rgb_image), *ARGS, "--method", "maxcam", "--npy", "-o", str(tmp_path), "--json")
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["method"] == "maxcam" and rec["layers"] == ["layer4"]
    assert rec["path"].endswith(f"-resnet18-maxcam-{rec['class']}-cam-s64.png")

    # the map is the function's, computed independently: layer4's output, max over channels, resized
    from cnnviz.io import load_image, preprocess
    from cnnviz.models import load_model

    lm = load_model("resnet18", weights="none")
    x, _ = preprocess(load_image(str(rgb_image)), size=64, mean=lm.mean, std=lm.std)
    seen = []
    h = lm.model.layer4.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        lm.model(torch.from_numpy(x)[None])
    h.remove()
    want = F.interpolate(seen[0].amax(1, keepdim=True).clamp(min=0), size=(64, 85), mode="bilinear", align_corners=False)[0, 0]
    raw = np.load(rec["npy"])[0]
    np.testing.assert_allclose(raw, want.numpy(), rtol=1e-5, atol=1e-5)


def test_all_includes_a_registered_method(registered):
    registered(Method("maxcam", "cam", _channel_max, "made-up", grad=False))
    assert cammethods.resolve_methods("all")[-1] == "maxcam"
    assert cammethods.resolve_methods("MaxCam") == ["maxcam"]


def test_a_method_named_by_path_resolves_lazily_and_gets_only_its_options(registered):
    registered(Method("plain-saliency", "input", "cnnviz.cam:saliency", "saliency again", aliases=("plainsal",)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 9, 9)
    # saliency() takes no ig_steps/batch_size/layers: passing them would raise a TypeError
    got = cam.explain(model, x, [0, 2], method="plainsal", ig_steps=3, batch_size=1)
    ref = cam.explain(model, x, [0, 2], method="saliency")
    np.testing.assert_array_equal(got.raw, ref.raw)


def test_a_perturbation_method_gets_one_call_per_image_with_all_its_classes(registered):
    calls = []

    def uniform(model, x1, targets, acts1, *, point, batch_size):
        calls.append((tuple(x1.shape), targets.tolist(), point.module, batch_size))
        return torch.ones(len(targets), acts1.shape[1])

    registered(Method("uniform", "perturb", uniform, "every channel weighs 1", grad=False, options=("batch_size",)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    a, b = torch.randn(1, 3, 9, 9), torch.randn(1, 3, 9, 9)
    e = cam.explain(model, torch.cat([a, a, b, a]), [0, 1, 2, 2], method="uniform", batch_size=5)
    assert calls == [((1, 3, 9, 9), [0, 1, 2], "1", 5), ((1, 3, 9, 9), [2], "1", 5)]
    acts = model[1](model[0](a))[0].sum(0).clamp(min=0)
    want = F.interpolate(acts[None, None], size=(9, 9), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(e.raw[0], want.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_register_refuses_taken_names_and_bad_descriptors(registered):
    with pytest.raises(ValueError, match="already taken by 'gradcam'"):
        register(Method("GradCAM", "cam", _channel_max, "x"))
    with pytest.raises(ValueError, match="already taken by 'integrated-gradients'"):
        register(Method("newig", "input", _channel_max, "x", aliases=("ig",)))
    with pytest.raises(ValueError, match="kind must be one of cam, perturb, input"):
        Method("x", "gradient", _channel_max, "x")
    with pytest.raises(ValueError, match="unknown option 'steps'"):
        Method("x", "input", _channel_max, "x", options=("steps",))
    with pytest.raises(ValueError, match="not 'module:attribute'"):
        Method("x", "input", "cnnviz.cam.saliency", "x")
    before = dict(cammethods.METHODS)
    registered(Method("gradcam-copy", "cam", "cnnviz.cam:gradcam", "x"))
    register(Method("gradcam-copy", "cam", "cnnviz.cam:hirescam", "y"), replace=True)
    assert cammethods.METHODS["gradcam-copy"].summary == "y"
    assert list(cammethods.METHODS)[:-1] == list(before)


def test_options_and_layers_are_derived_from_the_descriptors():
    assert cammethods.users("ig_steps") == ["integrated-gradients"]
    assert set(cammethods.users("batch_size")) == {"scorecam", "ablationcam", "integrated-gradients"}
    with_layers = cammethods.users("layers")
    assert "guided-gradcam" in with_layers and "saliency" not in with_layers and "scorecam" in with_layers


@pytest.mark.parametrize("code", [
    "from cnnviz import cammethods; cammethods.resolve_methods('all'); cammethods.users('ig_steps')",
    "from cnnviz.cli import cli\ntry:\n    cli.main(['cam', '--method', 'list'], prog_name='cnnviz')\nexcept SystemExit:\n    pass",
])
def test_the_method_list_needs_no_torch(code):
    probe = code + "\nimport sys; print('HEAVY', [m for m in ('torch', 'torchvision') if m in sys.modules], file=sys.stderr)"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in r.stderr, r.stderr


# ---------------------------------------------------------------- Score-CAM: shared and channels-last passes


class Fireish(nn.Module):
    """conv -> ceil-mode max pool -> a Fire module (squeeze, two expands, cat), as SqueezeNet."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, ceil_mode=True))
        self.squeeze = nn.Conv2d(8, 4, 1)
        self.e1 = nn.Conv2d(4, 6, 1)
        self.e3 = nn.Conv2d(4, 6, 3, padding=1)
        self.fire = nn.ReLU()
        self.head = nn.Conv2d(12, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(self.features(x)))
        x = self.fire(torch.cat([self.e1(x), self.e3(x)], 1))
        return torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.head(x)), 1), 1)


class NeedsContiguous(Fireish):
    """Flattens with .view, which a channels-last tensor cannot do: the masked passes must fall back."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12 * 7 * 9, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(self.features(x)))
        x = self.fire(torch.cat([self.e1(x), self.e3(x)], 1))
        return self.fc(x.view(x.shape[0], -1))


def _net(cls: type[nn.Module] = Fireish) -> nn.Module:
    torch.manual_seed(3)
    return cls().eval()


def _images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 40, generator=torch.Generator().manual_seed(5))


def _counting(model: nn.Module) -> list[tuple[int, bool]]:
    """(batch size, channels-last?) of every input the model's first conv sees."""
    seen: list[tuple[int, bool]] = []
    model.features[0].register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].shape[0], args[0].is_contiguous(memory_format=torch.channels_last)
                                      and not args[0].is_contiguous())))
    return seen


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_the_classes_of_one_image_share_one_set_of_masked_passes(method):
    layer = cam.CamLayer("fire", cam.HookPoint("fire", 0))
    x = _images(1)
    one = _net()
    seen_one = _counting(one)
    single = [cam.explain(one, x, [t], method=method, layers=[layer], batch_size=5).norm[0] for t in (4, 1, 2)]
    per_class = len(seen_one) // 3
    many = _net()
    seen = _counting(many)
    shared = cam.explain(many, x.repeat(3, 1, 1, 1), [4, 1, 2], method=method, layers=[layer], batch_size=5).norm
    assert len(seen) == per_class  # one set of passes for three classes, not three
    assert sum(b for b, _ in seen) == sum(b for b, _ in seen_one[:per_class]) + 2  # only the first pass holds the 3 pairs
    for k in range(3):
        assert np.abs(shared[k] - single[k]).max() <= 1e-5


def test_scorecam_through_the_cli_makes_one_call_for_top_k(cli, rgb_image, tmp_path, monkeypatch):
    calls = []
    real = cam.scorecam_weights

    def spy(model, x1, targets, acts1, **kw):
        calls.append((x1.shape[0], targets.tolist()))
        return real(model, x1, targets, acts1, **kw)

    monkeypatch.setattr(cam, "scorecam_weights", spy)
    r = cli("cam", str(rgb_image), *ARGS, "--size", "32", "-l", "layer4.1.conv1", "--method", "scorecam", "--top", "3",
            "-o", str(tmp_path), "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 3 and calls == [(1, [rec["class"] for rec in recs])]  # one image, its three classes


def test_scorecam_masked_passes_run_channels_last_on_the_cpu():
    model = _net()
    seen = _counting(model)
    cam.explain(model, _images(1), [2], method="scorecam", layers=[cam.CamLayer("fire", cam.HookPoint("fire", 0))],
                batch_size=4)
    assert seen[0] == (1, False)  # the clean pass: as given
    assert len(seen) > 2 and all(cl for _, cl in seen[1:])


@pytest.mark.parametrize("cls", [Fireish, NeedsContiguous])
def test_scorecam_equals_pytorch_grad_cam_in_either_memory_format(cls):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _net(cls)
    x, targets = _images(2), [1, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pgc.ScoreCAM(model=model, target_layers=[model.fire]) as c:
            c.batch_size = 5
            ref = c(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    got = cam.explain(model, x, targets, method="scorecam", layers=[cam.CamLayer("fire", cam.HookPoint("fire", 0))],
                      batch_size=5).norm
    assert np.abs(got - ref).max() <= 1e-4


def test_the_allocator_setting_leaves_a_users_own_alone(monkeypatch):
    with cam._reused_memory() as active:
        pass
    if sys.platform.startswith("linux") and active is False:
        pytest.skip("not glibc")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    with cam._reused_memory() as active:
        assert active is False
