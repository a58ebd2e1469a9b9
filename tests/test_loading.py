"""Fast loading: models built on 'meta' and filled from memory-mapped checkpoints must hold exactly
what torchvision's own loading gives; random init must stay exactly torchvision's seeded init."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from cnnviz import models as cm
from cnnviz.errors import WeightsError


def _seed_cache(name: str, sd: dict[str, torch.Tensor] | None = None) -> str:
    member = tvm.get_model_weights(name).DEFAULT
    if sd is None:
        torch.manual_seed(3)
        kwargs = {"aux_logits": True, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        sd = tvm.get_model(name, weights=None, num_classes=len(member.meta["categories"]), **kwargs).state_dict()
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(member.url))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(sd, path)
    return path


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# googlenet: torchvision drops the aux heads after loading; mnasnet: its loader reads the state
# dict's per-module versions (_metadata); squeezenet: a conv classifier head.
@pytest.mark.parametrize("name", ["googlenet", "mnasnet0_5", "squeezenet1_1", "mobilenet_v3_small"])
def test_pretrained_from_cache_equals_torchvisions_own_loading(name):
    _seed_cache(name)
    ref = tvm.get_model(name, weights=tvm.get_model_weights(name).DEFAULT).eval()
    lm = cm.load_model(name)
    assert not any(t.is_meta for t in [*lm.model.parameters(), *lm.model.buffers()])
    _same(ref, lm.model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(ref(x), lm.model(x))


def test_densenet_old_style_keys_are_renamed_as_torchvision_does():
    # The published DenseNet files use 'norm.1'/'conv.1'; torchvision's loader renames them.
    torch.manual_seed(3)
    own = tvm.densenet121(weights=None).state_dict()
    old = {k.replace("norm1.", "norm.1.").replace("conv1.", "conv.1.") if "denselayer" in k else k: v
           for k, v in own.items() if not ("denselayer" in k and "num_batches_tracked" in k)}
    _seed_cache("densenet121", old)
    lm = cm.load_model("densenet121")
    ref = tvm.densenet121(weights=tvm.DenseNet121_Weights.DEFAULT).eval()
    _same(ref, lm.model)


def test_pretrained_parameters_come_from_the_memory_mapped_file():
    path = _seed_cache("squeezenet1_1")
    lm = cm.load_model("squeezenet1_1")
    w = lm.model.features[0].weight
    # a memory-mapped tensor's storage is backed by the file, not by an allocation of our own
    mapped = torch.load(path, mmap=True, weights_only=True)["features.0.weight"]
    assert torch.equal(w, mapped)
    assert not w.requires_grad


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "regnet_y_400mf"])
def test_random_init_is_exactly_torchvisions_seeded_init(name):
    # --weights none must not change with the fast path: the same numbers as building the model
    # with torchvision under the same seed.
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    torch.manual_seed(7)
    ref = tvm.get_model(name, weights=None, **kwargs).eval()
    lm = cm.load_model(name, weights="none", seed=7)
    _same(ref, lm.model)


def test_checkpoint_path_fills_a_meta_model_and_keeps_float32(tmp_path):
    torch.manual_seed(1)
    ref = tvm.resnet18(weights=None).eval()
    half = {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    p = tmp_path / "half.pth"
    torch.save(half, p)
    lm = cm.load_model("resnet18", weights=str(p))
    assert all(t.dtype == torch.float32 for t in lm.model.parameters())
    assert torch.equal(lm.model.conv1.weight, half["conv1.weight"].float())


def test_mnasnet_checkpoint_path_keeps_module_versions(tmp_path):
    torch.manual_seed(1)
    ref = tvm.mnasnet0_5(weights=None).eval()
    p = tmp_path / "mnas.pth"
    torch.save({"state_dict": ref.state_dict()}, p)
    _same(ref, cm.load_model("mnasnet0_5", weights=str(p)).model)


def test_broken_cached_file_is_one_clear_error():
    path = _seed_cache("squeezenet1_1")
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(WeightsError, match="broken.*delete it and retry"):
        cm.load_model("squeezenet1_1")


def test_conv_counts_table_matches_the_models():
    counts = cm.conv_counts(["resnet18", "squeezenet1_1", "mobilenet_v3_small", "vgg11"])
    for name, n in counts.items():
        assert n == sum(isinstance(m, nn.Conv2d) for m in tvm.get_model(name, weights=None).modules()), name


def test_conv_counts_for_another_torchvision_are_built_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cm, "SHIPPED_VERSION", "0.0.0")  # as if the shipped table were for another version
    first = cm.conv_counts(["resnet18", "alexnet"])
    assert first == {"resnet18": 20, "alexnet": 5}
    assert any(f.startswith("convs-torchvision-") for f in os.listdir(tmp_path / "cnnviz"))

    def no_build(*a, **k):
        raise AssertionError("built a model although the counts are cached")

    monkeypatch.setattr(cm, "build_meta_model", no_build)
    assert cm.conv_counts(["alexnet", "resnet18"]) == {"alexnet": 5, "resnet18": 20}
