"""The conv-layer catalog against torchvision itself, and the selectors on real models."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from cnnviz.errors import SelectionError, UsageError
from cnnviz.layers import conv_layers, select_layers
from cnnviz.models import build_meta_model, build_model
from cnnviz.rf import catalog
from cnnviz.util import parse_size


@pytest.fixture(scope="module")
def resnet50_layers():
    return catalog(build_meta_model("resnet50"), size=224)


@pytest.fixture(scope="module")
def vgg16_layers():
    return catalog(build_meta_model("vgg16"), size=224)


def test_resnet50_catalog_matches_torchvision_order(resnet50_layers):
    expected = [n for n, m in tvm.resnet50().named_modules() if isinstance(m, nn.Conv2d)]
    assert [layer.name for layer in resnet50_layers] == expected
    assert len(resnet50_layers) == 53
    assert [layer.index for layer in resnet50_layers] == list(range(53))
    assert sum(".downsample.0" in layer.name for layer in resnet50_layers) == 4


def test_resnet50_shapes_and_aliases(resnet50_layers):
    by_name = {layer.name: layer for layer in resnet50_layers}
    assert by_name["conv1"].output_shape == (64, 112, 112)
    assert by_name["layer4.2.conv3"].output_shape == (2048, 7, 7)
    assert by_name["layer2.0.conv2"].stride == (2, 2)  # torchvision's v1.5: stride on the 3x3
    assert by_name["conv1"].alias == "conv1_conv"
    assert by_name["layer1.0.downsample.0"].alias == "conv2_block1_0_conv"
    assert by_name["layer3.5.conv3"].alias == "conv4_block6_3_conv"
    assert by_name["conv1"].params == 64 * 3 * 7 * 7


def test_vgg16_catalog_with_keras_aliases(vgg16_layers):
    assert len(vgg16_layers) == 13
    assert [layer.alias for layer in vgg16_layers][:3] == ["block1_conv1", "block1_conv2", "block2_conv1"]
    assert vgg16_layers[-1].alias == "block5_conv3"
    assert vgg16_layers[-1].output_shape == (512, 14, 14)
    assert vgg16_layers[0].params == 64 * 3 * 9 + 64


def test_meta_shapes_equal_a_real_forward_pass():
    real = build_model("resnet18")
    meta = catalog(build_meta_model("resnet18"), size=(96, 128))
    seen = {}

    def record(name):
        def hook(mod, inp, out):
            seen[name] = tuple(out.shape[1:])
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in real.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        real(torch.zeros(1, 3, 96, 128))
    for h in hooks:
        h.remove()
    assert {layer.name: layer.output_shape for layer in meta} == seen


def test_non_square_size(vgg16_layers):
    layers = catalog(build_meta_model("vgg16"), size="224x320")
    assert layers[0].output_shape == (64, 224, 320)
    assert layers[-1].output_shape == (512, 14, 20)


@pytest.mark.parametrize("text, hw", [("224", (224, 224)), ("224x320", (224, 320)), (" 64X32 ", (64, 32)), (100, (100, 100))])
def test_parse_size(text, hw):
    assert parse_size(text) == hw


@pytest.mark.parametrize("text", ["", "abc", "0", "224x", "9000"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_too_small_input_is_one_clear_error():
    from cnnviz.errors import CnnvizError

    with pytest.raises(CnnvizError, match="input size 8x8 is not accepted by this model"):
        catalog(build_meta_model("vgg16"), size=8)


@pytest.mark.parametrize(
    "specs, names",
    [
        (["10"], ["layer1.2.conv3"]),
        (["-1"], ["layer4.2.conv3"]),
        (["layer3.2.conv2"], ["layer3.2.conv2"]),
        (["conv2_block1_0_conv"], ["layer1.0.downsample.0"]),
        (["0:3"], ["conv1", "layer1.0.conv1", "layer1.0.conv2"]),
        (["1,5", "0"], ["conv1", "layer1.0.conv1", "layer1.1.conv1"]),
        (["layer4.*.conv3"], ["layer4.0.conv3", "layer4.1.conv3", "layer4.2.conv3"]),
    ],
)
def test_selectors_on_resnet50(resnet50_layers, specs, names):
    assert [layer.name for layer in select_layers(resnet50_layers, specs)] == names


def test_selector_all_and_stride(resnet50_layers):
    assert len(select_layers(resnet50_layers, ["all"])) == 53
    assert [layer.index for layer in select_layers(resnet50_layers, ["::10"])] == [0, 10, 20, 30, 40, 50]


def test_selector_errors_on_resnet50(resnet50_layers):
    with pytest.raises(SelectionError, match=r"layer index 53 out of range: there are 53 layers \(0..52, or -53..-1\)"):
        select_layers(resnet50_layers, ["53"], model_name="resnet50")
    with pytest.raises(SelectionError, match=r"did you mean 'layer3.2.conv2'.*cnnviz layers --model resnet50"):
        select_layers(resnet50_layers, ["layr3.2.conv2"], model_name="resnet50")


def test_vgg_alias_selector(vgg16_layers):
    assert [layer.index for layer in select_layers(vgg16_layers, ["block3_conv2", "block5_*"])] == [5, 10, 11, 12]


def test_conv_layers_of_a_custom_model(tiny_vgg):
    layers = conv_layers(tiny_vgg)
    assert [layer.name for layer in layers] == ["features.0", "features.2", "features.5"]
    assert all(layer.alias == "" for layer in layers)


def test_single_channel_model_catalog_and_fields():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    layers = catalog(net, size=32)
    assert [layer.output_shape for layer in layers] == [(4, 30, 30), (4, 14, 14)]
    assert layers[1].receptive_field == 5
