"""Model and weights loading: seeded init, checkpoints in every accepted layout, the hub cache path."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from cnnviz.errors import ModelError, WeightsError
from cnnviz.models import build_model, checkpoint_path, load_model, resolve_weights

SMALL = "squeezenet1_1"  # 1.2 M parameters: a real torchvision model that builds in milliseconds


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_init_is_seeded():
    assert _same(build_model(SMALL, seed=0), build_model(SMALL, seed=0))
    assert not _same(build_model(SMALL, seed=0), build_model(SMALL, seed=1))


def test_random_init_does_not_disturb_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(SMALL, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_weights_none_keeps_preprocessing_metadata():
    lm = load_model(SMALL, weights="none")
    assert not lm.model.training
    assert lm.weights == "none" and not lm.pretrained
    assert len(lm.categories) == 1000 and lm.categories[0] == "tench"
    assert lm.mean == pytest.approx((0.485, 0.456, 0.406)) and lm.crop_size == 224
    assert not any(p.requires_grad for p in lm.model.parameters())


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "module_prefix", "wrapped_module_prefix"])
def test_checkpoint_layouts(tmp_path, layout):
    src = build_model(SMALL, seed=7)
    sd = src.state_dict()
    if "module_prefix" in layout:
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"plain": sd, "module_prefix": sd, "state_dict": {"state_dict": sd, "epoch": 3},
           "model": {"model": sd}, "wrapped_module_prefix": {"state_dict": sd}}[layout]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    lm = load_model(SMALL, weights=str(path))
    assert _same(lm.model, src)
    assert lm.weights == str(path)


def test_checkpoint_with_wrong_keys_lists_them(tmp_path):
    sd = build_model(SMALL).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["features.0.weight"]
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as exc:
        load_model(SMALL, weights=str(path))
    msg = str(exc.value)
    assert "missing keys: features.0.weight" in msg and "unexpected keys: extra.weight" in msg


def test_checkpoint_with_wrong_shapes_lists_them(tmp_path):
    sd = build_model(SMALL).state_dict()
    sd["features.0.weight"] = torch.zeros(64, 1, 3, 3)  # e.g. a grayscale variant
    path = tmp_path / "shape.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"shape mismatch.*features.0.weight \(64, 1, 3, 3\) vs \(64, 3, 3, 3\)"):
        load_model(SMALL, weights=str(path))


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil(str(marker))}, f)
    torch.save({"weights": torch.zeros(1), "payload": _Evil(str(marker))}, tmp_path / "evil2.pth")
    assert not marker.exists()
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(WeightsError) as exc:
            load_model(SMALL, weights=str(p))
        assert "could run code" in str(exc.value) and "weights_only=True" in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize("content, fragment", [(b"hello, not a checkpoint\n", "not a PyTorch checkpoint"), (b"", "not a PyTorch checkpoint")])
def test_garbage_checkpoint(tmp_path, content, fragment):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=fragment):
        load_model(SMALL, weights=str(path))


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(SMALL, weights=str(tmp_path / "nope.pth"))


def test_checkpoint_holding_no_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_model(SMALL, weights=str(path))


def test_pretrained_path_loads_from_seeded_hub_cache():
    member = resolve_weights(SMALL, "DEFAULT")
    path = checkpoint_path(member)
    assert path.startswith(os.environ["TORCH_HOME"])  # the test's private cache, never the user's
    assert os.path.basename(path) == "squeezenet1_1-b8a52dc0.pth"
    src = build_model(SMALL, seed=11)
    os.makedirs(os.path.dirname(path))
    torch.save(src.state_dict(), path)
    lm = load_model(SMALL)  # DEFAULT: through torchvision's weights API, offline from the cache
    assert _same(lm.model, src)
    assert lm.weights == "IMAGENET1K_V1" and lm.pretrained


@pytest.mark.slow
def test_resnet50_pretrained_from_cache_file_name_torchvision_expects():
    member = resolve_weights("resnet50", "DEFAULT")
    path = checkpoint_path(member)
    assert os.path.basename(path) == "resnet50-11ad3fa6.pth"
    src = build_model("resnet50", seed=3)
    os.makedirs(os.path.dirname(path))
    torch.save(src.state_dict(), path)
    assert _same(load_model("resnet50").model, src)


def test_offline_without_cache_names_file_folder_and_alternatives():
    with pytest.raises(WeightsError) as exc:
        load_model("resnet50", weights="DEFAULT")
    msg = str(exc.value)
    assert "resnet50-11ad3fa6.pth" in msg
    assert os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints") in msg
    assert "--weights PATH" in msg and "--weights none" in msg
    assert "\n" not in msg


def test_download_failure_is_one_clear_error(monkeypatch):
    import urllib.error

    monkeypatch.delenv("CNNVIZ_OFFLINE")

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError, match=r"download failed: \[Errno -3\].*--weights none"):
        load_model(SMALL, weights="IMAGENET1K_V1")


def test_enum_member_names_and_errors():
    assert resolve_weights("resnet50", "IMAGENET1K_V1").name == "IMAGENET1K_V1"
    assert resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2").name == "IMAGENET1K_V2"
    assert resolve_weights("resnet50", "imagenet1k_v1").name == "IMAGENET1K_V1"
    with pytest.raises(ModelError, match="choose one of DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        resolve_weights("resnet50", "IMAGENET1K_V9")


def test_unknown_model_suggests():
    with pytest.raises(ModelError, match=r"did you mean 'resnet50'"):
        load_model("resnet5O", weights="none")


def test_finetuned_checkpoint_with_its_own_class_count(tmp_path):
    src = build_model("resnet18", seed=2, num_classes=10)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": src.state_dict()}, path)
    lm = load_model("resnet18", weights=str(path))
    assert _same(lm.model, src)
    assert lm.model.fc.out_features == 10 and lm.categories[:2] == ["class 0", "class 1"]


def test_googlenet_checkpoint_with_aux_heads_loads(tmp_path):
    from torchvision.models import googlenet

    torch.manual_seed(0)
    src = googlenet(weights=None, aux_logits=True, init_weights=True)
    path = tmp_path / "g.pth"
    torch.save(src.state_dict(), path)
    lm = load_model("googlenet", weights=str(path))
    own = lm.model.state_dict()
    assert all(torch.equal(own[k], src.state_dict()[k]) for k in own)


# ---------------------------------------------------------------- weights_digest: pinned values
# Top indexes and report caches on disk record these digests, so they must never change. The
# values were computed with the two functions this one replaced (scan.weights_digest and
# report.cache.weights_digest) before they were merged.


class _Pinned(torch.nn.Module):
    """Every case the two scopes treat differently: a root-level parameter, a BatchNorm (int64
    buffer), a float64 conv, a non-persistent buffer, a module registered twice, a missing bias,
    a fully connected head. Values are set explicitly (no random init)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.scale = nn.Parameter(torch.ones(3))
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1, bias=False))
        self.features[3].double()
        self.again = self.features[3]
        self.register_buffer("table", torch.zeros(6), persistent=False)
        self.fc = nn.Linear(4, 2)
        _fill([*self.parameters(), *self.buffers()])


def _fill(tensors):
    with torch.no_grad():
        for i, t in enumerate(tensors):
            if t.is_floating_point():
                t.copy_(torch.linspace(-1.0, 1.0, t.numel(), dtype=t.dtype).reshape(t.shape) * (i + 1))
            else:
                t.fill_(i + 7)


def test_weights_digest_values_are_pinned():
    from cnnviz.models import weights_digest

    m = _Pinned()
    assert weights_digest(m) == "40f85f61621c2b1977da302ee2f1a1ff3b07874a1ee395d0fe146f74c2da1097"
    assert weights_digest(m, scope="all") == weights_digest(m)
    assert weights_digest(m, scope="features") == "af3855413738883cf61a"
    with torch.no_grad():
        m.fc.weight += 1  # the head: only the full digest sees it
    assert weights_digest(m) == "deb44976875e03b8d73c37a37d7af93ee1544285f5de9f4cd4df25446d238b5e"
    assert weights_digest(m, scope="features") == "af3855413738883cf61a"
    with torch.no_grad():
        m.features[0].weight[0, 0, 0, 0] += 1e-3  # a conv: both see it
    assert weights_digest(m) != "deb44976875e03b8d73c37a37d7af93ee1544285f5de9f4cd4df25446d238b5e"
    assert weights_digest(m, scope="features") != "af3855413738883cf61a"
    with pytest.raises(ValueError, match="scope"):
        weights_digest(m, scope="conv")  # type: ignore[arg-type]


@pytest.mark.parametrize("name, full, features", [
    ("resnet18", "a941fc6ced41881b5349a5e2fb531d3c5a1389433189f3b1b4915479cc068d85", "14c05eed0239896de409"),
    ("mobilenet_v3_small", "fa03e4d9fbb414cbb09174f6082ce47e1497c9104853cc868de17ab0142d8990", "1494fdc18854b6dba4f9"),
])
def test_weights_digest_of_torchvision_architectures_is_pinned(name, full, features):
    import torchvision

    from cnnviz.models import weights_digest

    m = torchvision.models.get_model(name, weights=None)
    _fill(m.state_dict().values())
    assert (weights_digest(m), weights_digest(m, scope="features")) == (full, features)


def test_dense_models_are_known_by_task_and_build_without_any_download(monkeypatch, tmp_path):
    """Segmentation and detection models are torchvision models too; random weights mean a random
    backbone as well (torchvision's default would download ImageNet backbone weights)."""
    import torchvision

    from cnnviz.models import list_models, model_task

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: any download attempt would show
    assert set(list_models(task="segmentation")) == set(torchvision.models.list_models(module=torchvision.models.segmentation))
    assert model_task("deeplabv3_mobilenet_v3_large") == "segmentation"
    assert model_task("fasterrcnn_mobilenet_v3_large_fpn") == "detection"
    assert model_task("resnet18") == "classification"
    lm = load_model("lraspp_mobilenet_v3_large", weights="none")
    assert lm.task == "segmentation" and lm.categories[:2] == ["__background__", "aeroplane"]
    assert (lm.resize_size, lm.crop_size) == (520, 520)  # segmentation weights resize and never crop
    assert not os.listdir(tmp_path)
