"""torch.export programs and converted TorchScript archives are analysed on their own ATen graph
(cnnviz.graph's one op table), never re-traced: their receptive fields equal the eager model's
(themselves tested against published tables in test_rf.py), and ``--stage act`` reads exactly the
activation the eager model computes after each conv (read here with plain torch hooks on the eager
model's own ReLU modules, not through cnnviz)."""
from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.export import Dim
from torchvision.models.googlenet import BasicConv2d

from cnnviz import sources
from cnnviz.capture import capture, hook_points
from cnnviz.errors import UsageError
from cnnviz.graph import Kind, OpCall, trace
from cnnviz.rf import Field, RFError, layer_fields, receptive_fields

AUTO = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}


def _export(model: nn.Module, x: torch.Tensor, path, *, dynamic: bool = True, decompose: bool = False) -> nn.Module:
    """``model`` exported with torch.export, saved to ``path`` and loaded the way --model loads it."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, (x,), dynamic_shapes=(AUTO,) if dynamic else None)
        if decompose:  # core ATen: convolution, _native_batch_norm_legit_no_training + getitem, max_pool2d_with_indices
            ep = ep.run_decompositions()
        torch.export.save(ep, str(path))
    return sources.load(str(path)).model


def _torchscript(model: nn.Module, path) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), str(path))
    return sources.load(sources.ModelSpec(source=str(path), size=64)).model  # size: the converter's example


def _relu_calls(model: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every output of every ReLU module of the eager model, in call order (plain torch hooks)."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.setdefault(n, []).append(out.clone()))
               for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _resnet_act_truth(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """ResNet-18's activation after each conv: the stem's ReLU; in a BasicBlock, the block's ReLU
    after bn1 (1st call) for conv1, after the residual add (2nd call) for conv2 and downsample.0."""
    relus = _relu_calls(model, x)
    want = {"conv1": relus["relu"][0]}
    for name, m in model.named_modules():
        if isinstance(m, torchvision.models.resnet.BasicBlock):
            want[f"{name}.conv1"] = relus[f"{name}.relu"][0]
            want[f"{name}.conv2"] = relus[f"{name}.relu"][1]
            if m.downsample is not None:
                want[f"{name}.downsample.0"] = relus[f"{name}.relu"][1]
    return want


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """An eager ResNet-18 (random weights, non-trivial batch-norm statistics) and the programs made
    from it: default torch.export, decomposed to core ATen, and a TorchScript archive."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    d = tmp_path_factory.mktemp("resnet18")
    x = torch.randn(2, 3, 64, 64)
    return model, {
        "export": _export(model, x, d / "r18.pt2"),
        "decomposed": _export(model, x, d / "r18-core.pt2", decompose=True),
        "torchscript": _torchscript(model, d / "r18.pt"),
    }


@pytest.mark.parametrize("kind", ["export", "decomposed", "torchscript"])
def test_resnet18_program_has_the_eager_models_receptive_fields(resnet18, kind):
    model, programs = resnet18
    got = layer_fields(programs[kind], size=64)
    want = layer_fields(model, size=64)
    assert len(want) == 20 and got == want
    # the published value for ResNet-18's last conv (test_rf.py checks the whole table on eager models)
    assert receptive_fields(programs[kind], size=64, layers=["layer4.1.conv2"])["layer4.1.conv2"].rf == (435, 435)


@pytest.mark.parametrize("kind", ["export", "decomposed", "torchscript"])
def test_resnet18_program_act_stage_is_the_eager_activation(resnet18, kind):
    model, programs = resnet18
    gm = programs[kind]
    x = torch.randn(2, 3, 48, 40)
    want = _resnet_act_truth(model, x)
    got = capture(gm, x, list(want), stage="act")
    assert set(got) == set(want) and len(want) == 20
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
    # and the conv stage is still the conv's own output
    with torch.no_grad():
        conv = model.layer2[0].conv1(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))
    torch.testing.assert_close(capture(gm, x, ["layer2.0.conv1"])["layer2.0.conv1"], conv, rtol=0, atol=1e-6)


def test_exported_activations_are_hooked_at_their_original_module_paths(resnet18):
    model, programs = resnet18
    for kind in ("export", "decomposed", "torchscript"):  # each call's module path, kept by torch.export / the archive
        gm = programs[kind]
        eager = hook_points(model, ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.downsample.0"], "act")
        assert hook_points(gm, ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.downsample.0"], "act") == eager
        assert isinstance(gm.get_submodule("layer1.0.relu"), OpCall)
    t = trace(programs["decomposed"])
    kinds = {t.kinds[n] for n in t.nodes if n.op == "call_function"}
    assert {Kind.NORM, Kind.FIRST, Kind.POOL, Kind.ADD, Kind.REDUCE} <= kinds


@pytest.mark.slow
def test_vgg16_program_fields_and_act_stage(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    x = torch.randn(1, 3, 32, 32)
    gm = _export(model, x, tmp_path / "vgg16.pt2", dynamic=False)  # static: batch 1, 32x32 only
    fields = layer_fields(gm, size=32)
    assert fields == layer_fields(model, size=32)
    # published: conv5_3 sees 196 px with a jump of 16
    assert (fields["features.28"].rf, fields["features.28"].jump) == ((196, 196), (16, 16))
    convs = [n for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    got = capture(gm, x, [f"features.{i}" for i in convs], stage="act")
    for i in convs:
        with torch.no_grad():
            want = model.features[: int(i) + 2](x)  # the conv and the ReLU after it, run by hand
        torch.testing.assert_close(got[f"features.{i}"], want, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_0"])
def test_more_torchvision_programs_have_the_eager_fields_and_act_stages(tmp_path, name):
    """Squeeze-and-excitation gates and Hardswish (MobileNetV3), chunk / channel shuffle / cat
    (ShuffleNetV2), fire modules' cat and ceil-mode pools (SqueezeNet)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    gm = _export(model, x, tmp_path / f"{name}.pt2")
    want, got = layer_fields(model, size=64), layer_fields(gm, size=64)
    assert list(got) == list(want)
    for conv, f in want.items():  # a field, or a reason on both sides (node names may differ)
        assert got[conv] == f if isinstance(f, Field) else isinstance(got[conv], str), conv
    acts = []
    for conv in want:
        try:
            point = hook_points(model, [conv], "act")[0]
        except UsageError:
            with pytest.raises(UsageError, match="no activation directly follows"):
                hook_points(gm, [conv], "act")
            continue
        assert hook_points(gm, [conv], "act") == [point], conv  # same module path, same call
        acts.append(conv)
    assert acts
    eager, exported = capture(model, x, acts, stage="act"), capture(gm, x, acts, stage="act")
    for conv in acts:
        torch.testing.assert_close(exported[conv], eager[conv], rtol=0, atol=1e-6, msg=conv)


class Functional(nn.Module):
    """torchvision's BasicConv2d (GoogLeNet, Inception): F.relu inside a block that has parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.block = BasicConv2d(3, 4, kernel_size=3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv = nn.Conv2d(4, 2, 3, dilation=2)

    def forward(self, x):
        return torch.relu(self.conv(self.pool(self.block(x))))


def test_a_functional_activation_in_a_block_is_hooked_next_to_it(tmp_path):
    torch.manual_seed(0)
    model = Functional().eval()
    with torch.no_grad():
        model.block.bn.running_mean.uniform_(-1, 1)
    gm = _export(model, torch.randn(2, 3, 20, 20), tmp_path / "f.pt2")
    (point,) = hook_points(gm, ["block.conv"], "act")
    assert point.module.startswith("block.relu") and isinstance(gm.get_submodule(point.module), OpCall)
    x = torch.randn(1, 3, 24, 20)
    got = capture(gm, x, ["block.conv", "conv"], stage="act")
    with torch.no_grad():
        torch.testing.assert_close(got["block.conv"], model.block(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(got["conv"], model(x), rtol=0, atol=1e-6)
    assert layer_fields(gm, size=24) == layer_fields(model, size=24)


class Sixes(nn.Module):
    """ReLU6 (aten.hardtanh_, behind an if in TorchScript) and one ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1)
        self.six, self.relu = nn.ReLU6(inplace=True), nn.ReLU()

    def forward(self, x):
        return self.c(self.relu(self.b(self.relu(self.six(self.a(x))))))


def test_a_torchscript_archive_hooks_activations_at_the_sources_module_paths(tmp_path):
    torch.manual_seed(0)
    model = Sixes().eval()
    gm = _torchscript(model, tmp_path / "sixes.pt")
    assert hook_points(gm, ["a", "b"], "act") == hook_points(model, ["a", "b"], "act")
    assert [(p.module, p.call) for p in hook_points(gm, ["a", "b"], "act")] == [("six", 0), ("relu", 1)]
    x = torch.randn(2, 3, 16, 16)
    got = capture(gm, x, ["a", "b"], stage="act")
    with torch.no_grad():
        a = model.six(model.a(x))
        torch.testing.assert_close(got["a"], a, rtol=0, atol=1e-6)
        torch.testing.assert_close(got["b"], torch.relu(model.b(torch.relu(a))), rtol=0, atol=1e-6)


class Upsampling(nn.Module):
    """conv1 -> nearest upsampling -> ReLU -> conv2: an op neither capture nor rf can look through."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3), nn.ReLU()

    def forward(self, x):
        return self.conv2(self.act(F.interpolate(self.conv1(x), scale_factor=2.0)))


def test_an_unknown_aten_op_is_named_in_one_line(tmp_path, cli):
    gm = _export(Upsampling().eval(), torch.randn(2, 3, 16, 16), tmp_path / "up.pt2")
    with pytest.raises(UsageError, match=r"no activation directly follows conv1 \(the next op, aten\.upsample_nearest2d"):
        hook_points(gm, ["conv1"], "act")
    with pytest.raises(RFError, match=r"cannot compute the receptive field of conv2: cannot analyse aten\.upsample_nearest2d"):
        receptive_fields(gm, size=16)
    r = cli("rf", "--sample", "--model", str(tmp_path / "up.pt2"), "-l", "conv2", "--size", "16", "-o", str(tmp_path / "o"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "cannot analyse aten.upsample_nearest2d" in lines[0], r.stderr


def test_the_trace_cache_keeps_no_program_alive(tmp_path):
    _export(Upsampling().eval(), torch.randn(2, 3, 16, 16), tmp_path / "up.pt2")
    gm, _ = sources._read_exported(str(tmp_path / "up.pt2"))  # not through load(), whose cache keeps it
    for use in (trace, lambda m: hook_points(m, ["conv1"], "conv"), lambda m: layer_fields(m, size=16)):
        use(gm)
    ref = weakref.ref(gm)
    del gm
    gc.collect()
    assert ref() is None
