"""Capture against an independent computation: the model's submodules run by hand."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from cnnviz.capture import Capture, HookPoint, capture, has_hooks, hook_points
from cnnviz.errors import CnnvizError, UsageError
from cnnviz.models import build_model


@pytest.fixture(scope="module")
def vgg16():
    return build_model("vgg16", seed=0).eval()


@pytest.fixture(scope="module")
def resnet50():
    return build_model("resnet50", seed=0).eval()


def _x(n=1, h=64, w=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g)


# ---------------------------------------------------------------- VGG16


@pytest.mark.parametrize("i", [0, 2, 10, 28])
def test_vgg16_both_stages_equal_features_run_by_hand(vgg16, i):
    x = _x()
    with torch.inference_mode():
        conv_ref = vgg16.features[: i + 1](x.clone())
        act_ref = vgg16.features[: i + 2](x.clone())  # the ReLU right after conv i
    assert isinstance(vgg16.features[i + 1], nn.ReLU)
    conv = capture(vgg16, x, [f"features.{i}"], stage="conv")[f"features.{i}"]
    act = capture(vgg16, x, [f"features.{i}"], stage="act")[f"features.{i}"]
    torch.testing.assert_close(conv, conv_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(act, act_ref, rtol=0, atol=1e-5)
    # The in-place ReLU after each conv must not have overwritten the conv output we kept.
    assert conv.min() < 0
    assert act.min() >= 0
    assert not has_hooks(vgg16)


def test_vgg16_many_layers_one_pass_in_catalog_order(vgg16):
    names = ["features.0", "features.5", "features.17"]
    x = _x()
    out = capture(vgg16, x, names, stage="conv")
    assert list(out) == names
    with torch.inference_mode():
        for n in names:
            i = int(n.split(".")[1])
            torch.testing.assert_close(out[n], vgg16.features[: i + 1](x.clone()), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- ResNet-50


def _resnet_by_hand(m, x):
    """Every conv's conv-stage and act-stage output of ResNet-50, computed from its submodules."""
    conv, act = {}, {}
    with torch.inference_mode():
        c = m.conv1(x)
        conv["conv1"], act["conv1"] = c, torch.relu(m.bn1(c))
        h = m.maxpool(act["conv1"])
        for li in range(1, 5):
            for bi, b in enumerate(getattr(m, f"layer{li}")):
                p = f"layer{li}.{bi}"
                c1 = b.conv1(h)
                a1 = torch.relu(b.bn1(c1))
                c2 = b.conv2(a1)
                a2 = torch.relu(b.bn2(c2))
                c3 = b.conv3(a2)
                identity = h if b.downsample is None else b.downsample[1](b.downsample[0](h))
                out = torch.relu(b.bn3(c3) + identity)
                conv[f"{p}.conv1"], act[f"{p}.conv1"] = c1, a1
                conv[f"{p}.conv2"], act[f"{p}.conv2"] = c2, a2
                conv[f"{p}.conv3"], act[f"{p}.conv3"] = c3, out
                if b.downsample is not None:
                    conv[f"{p}.downsample.0"] = b.downsample[0](h)
                    act[f"{p}.downsample.0"] = out
                h = out
    return conv, act


def test_resnet50_every_conv_both_stages_equal_blocks_run_by_hand(resnet50):
    x = _x(h=64, w=64)
    conv_ref, act_ref = _resnet_by_hand(resnet50, x)
    names = [n for n, mod in resnet50.named_modules() if isinstance(mod, nn.Conv2d)]
    assert len(names) == 53 and set(names) == set(conv_ref)
    conv = capture(resnet50, x, names, stage="conv")
    act = capture(resnet50, x, names, stage="act")
    for n in names:
        torch.testing.assert_close(conv[n], conv_ref[n], rtol=0, atol=1e-4, msg=f"conv {n}")
        torch.testing.assert_close(act[n], act_ref[n], rtol=0, atol=1e-4, msg=f"act {n}")
    assert conv["layer3.1.conv2"].min() < 0 and act["layer3.1.conv2"].min() >= 0
    assert not has_hooks(resnet50)


def test_resnet50_act_points_for_conv3_and_downsample_are_the_block_output(resnet50):
    pts = hook_points(resnet50, ["conv1", "layer2.0.conv1", "layer2.0.conv3", "layer2.0.downsample.0"], "act")
    assert pts[0] == HookPoint("relu", 0)
    # torchvision reuses one ReLU module per block: its third call is the block output.
    assert pts[2] == pts[3] == HookPoint("layer2.0.relu", 2)


# ---------------------------------------------------------------- early stop, hooks, modes


def test_forward_pass_stops_after_the_last_requested_layer(vgg16):
    later = {"features.12": 0, "classifier": 0}

    def counter(name):
        def hook(*_):
            later[name] += 1
        return hook

    handles = [vgg16.features[12].register_forward_hook(counter("features.12")),
               vgg16.classifier.register_forward_hook(counter("classifier"))]
    try:
        capture(vgg16, _x(), ["features.0", "features.10"], stage="conv")
        assert later == {"features.12": 0, "classifier": 0}
        capture(vgg16, _x(), ["features.10"], stage="act")  # stops after ReLU features.11
        assert later["features.12"] == 0
        capture(vgg16, _x(), ["features.12"], stage="conv")
        assert later == {"features.12": 1, "classifier": 0}
    finally:
        for h in handles:
            h.remove()


def test_hooks_removed_after_an_exception_inside_the_with(tiny_vgg):
    with pytest.raises(ZeroDivisionError):
        with Capture(tiny_vgg, hook_points(tiny_vgg, ["features.2"])) as cap:
            assert has_hooks(tiny_vgg)
            cap.run(_x(h=8, w=8))
            1 / 0
    assert not has_hooks(tiny_vgg)


def test_hooks_removed_and_mode_restored_when_the_callback_fails(tiny_vgg):
    tiny_vgg.train()

    def boom(point, t):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with Capture(tiny_vgg, hook_points(tiny_vgg, ["features.0"]), on_output=boom) as cap:
            cap.run(_x(h=8, w=8))
    assert not has_hooks(tiny_vgg)
    assert tiny_vgg.training


def test_run_puts_the_model_in_eval_and_restores_training(tiny_vgg):
    tiny_vgg.train()
    seen = []
    tiny_vgg.features[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    with Capture(tiny_vgg, hook_points(tiny_vgg, ["features.0"])) as cap:
        cap.run(_x(h=8, w=8))
    assert seen == [False] and tiny_vgg.training


def test_run_outside_with_is_an_error(tiny_vgg):
    cap = Capture(tiny_vgg, hook_points(tiny_vgg, ["features.0"]))
    with pytest.raises(RuntimeError):
        cap.run(_x(h=8, w=8))


def test_on_output_streams_each_layer_once_and_keeps_nothing(tiny_vgg):
    x = _x(h=16, w=16)
    names = ["features.0", "features.2", "features.5"]
    ref = capture(tiny_vgg, x, names, stage="act")
    pts = hook_points(tiny_vgg, names, "act")
    got, refs = {}, []

    def keep(point, t):
        got[point] = t.clone()
        refs.append(weakref.ref(t))

    with Capture(tiny_vgg, pts, on_output=keep) as cap:
        assert cap.run(x) == {}
    gc.collect()
    assert all(r() is None for r in refs), "captured tensors must be released after the callback"
    assert list(got) == pts
    for n, p in zip(names, pts):
        torch.testing.assert_close(got[p], ref[n], rtol=0, atol=0)


def test_batch_equals_single_images(tiny_vgg):
    x = _x(n=3, h=20, w=24)
    names = ["features.0", "features.5"]
    batch = capture(tiny_vgg, x, names, stage="act")
    for k in range(3):
        one = capture(tiny_vgg, x[k : k + 1], names, stage="act")
        for n in names:
            torch.testing.assert_close(batch[n][k : k + 1], one[n], rtol=0, atol=1e-5)


def test_repeated_runs_reuse_one_set_of_hooks(tiny_vgg):
    pts = hook_points(tiny_vgg, ["features.2"])
    with Capture(tiny_vgg, pts) as cap:
        a = cap.run(_x(h=8, w=8, seed=1))[pts[0]]
        b = cap.run(_x(h=8, w=8, seed=2))[pts[0]]
        assert sum(len(m._forward_hooks) for m in tiny_vgg.modules()) == 1
    assert not torch.equal(a, b)


def test_grad_mode_keeps_the_graph(tiny_vgg):
    x = _x(h=8, w=8).requires_grad_(True)
    pts = hook_points(tiny_vgg, ["features.2"], "act")
    with Capture(tiny_vgg, pts, grad=True) as cap:
        out = cap.run(x)[pts[0]]
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_stage_and_unhookable_layers_are_usage_errors(tiny_vgg):
    with pytest.raises(UsageError, match="unknown stage"):
        hook_points(tiny_vgg, ["features.0"], "relu")
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.MaxPool2d(2)).eval()
    with pytest.raises(UsageError, match="--stage act is not available"):
        hook_points(net, ["0"], "act")


def test_layer_that_never_runs_is_reported(tiny_vgg):
    tiny_vgg.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(CnnvizError, match="did not run"):
        capture(tiny_vgg, _x(h=8, w=8), ["unused"])
    assert not has_hooks(tiny_vgg)


def test_grad_capture_works_inside_inference_mode(tiny_vgg):
    from cnnviz.capture import Capture, hook_points
    from cnnviz.layers import conv_layers

    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    with torch.inference_mode(), Capture(tiny_vgg, hook_points(tiny_vgg, conv_layers(tiny_vgg)[:1]), grad=True) as cap:
        out = next(iter(cap.run(x).values()))
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
