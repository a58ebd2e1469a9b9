"""The one fx analysis: capture's act stage and rf's field propagation read ops from one table,
so they agree on what passes through (dropout, norms, identities) and what ends the walk."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

from cnnviz.capture import capture, hook_points
from cnnviz.errors import CnnvizError, UsageError
from cnnviz.graph import Kind, trace
from cnnviz.rf import RFError, layer_fields, receptive_fields

# ops that leave values unchanged in eval mode: the act stage looks through them, fields pass them
VALUE_PRESERVING = {
    "F.dropout2d": lambda net, x: F.dropout2d(x, 0.5, net.training),
    "F.dropout": lambda net, x: F.dropout(x, 0.3, net.training),
    "nn.Dropout2d": lambda net, x: net.drop(x),
    "stochastic_depth": lambda net, x: stochastic_depth(x, 0.2, "row", net.training),
    "nn.BatchNorm2d": lambda net, x: net.bn(x),
    "F.batch_norm": lambda net, x: F.batch_norm(x, net.bn.running_mean, net.bn.running_var, net.bn.weight, net.bn.bias),
    "nn.Identity": lambda net, x: net.ident(x),
    ".contiguous()": lambda net, x: x.contiguous(),
    ".float()": lambda net, x: x.float(),
    "+ (residual add)": lambda net, x: net.bn(x) + net.bias,
}


class Between(nn.Module):
    """conv1 -> <op> -> ReLU -> conv2: conv2's field is 3 + 2 = 5 px if the op is pointwise."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)
        self.bn, self.drop, self.ident = nn.BatchNorm2d(4), nn.Dropout2d(0.5), nn.Identity()
        self.bias = nn.Parameter(torch.randn(1, 4, 1, 1))
        self.act = nn.ReLU()
        with torch.no_grad():  # non-trivial statistics, so a skipped norm would show
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.conv2(self.act(self.op(self, self.conv1(x))))


@pytest.mark.parametrize("name", list(VALUE_PRESERVING))
def test_capture_and_rf_agree_on_value_preserving_ops(name):
    torch.manual_seed(0)
    net = Between(VALUE_PRESERVING[name]).eval()
    x = torch.randn(2, 3, 12, 12)
    # capture: the act stage of conv1 is the ReLU after the op, exactly as computed by hand
    (point,) = hook_points(net, ["conv1"], "act")
    assert (point.module, point.call) == ("act", 0)
    with torch.no_grad():
        expected = net.act(net.op(net, net.conv1(x)))
    torch.testing.assert_close(capture(net, x, ["conv1"], stage="act")["conv1"], expected, rtol=0, atol=0)
    # rf: the op keeps the field, so conv2 sees 3 + 2 pixels
    assert receptive_fields(net, size=12)["conv2"].as_dict() == {"receptive_field": 5, "jump": 1, "center0": 2}


def test_capture_and_rf_agree_on_ops_that_end_the_walk():
    torch.manual_seed(0)
    net = Between(lambda net, x: F.interpolate(x, scale_factor=2)).eval()
    with pytest.raises(UsageError, match="no activation directly follows conv1"):
        hook_points(net, ["conv1"], "act")
    assert "the resize at interpolate maps" in layer_fields(net, size=12)["conv2"]


def test_one_op_table_classifies_functions_methods_and_modules():
    net = Between(VALUE_PRESERVING["F.dropout2d"]).eval()
    t = trace(net)
    kinds = {n.name: t.kinds[n] for n in t.nodes}
    assert kinds["conv1"] is Kind.CONV and kinds["dropout2d"] is Kind.DROPOUT and kinds["act"] is Kind.ACTIVATION
    t2 = trace(Between(VALUE_PRESERVING[".contiguous()"]))
    assert [t2.kinds[n] for n in t2.nodes if n.op == "call_method"] == [Kind.IDENTITY]


def test_trace_is_cached_per_model_and_redone_when_modules_change():
    net = Between(VALUE_PRESERVING["nn.Identity"]).eval()
    first = trace(net)
    assert trace(net) is first
    assert hook_points(net, ["conv1"], "act")[0].module == "act"
    net.act = nn.Sigmoid()  # same name, another type: a gate, not the layer's activation
    again = trace(net)
    assert again is not first and [again.kinds[n] for n in again.nodes if n.target == "act"] == [Kind.ELEMENTWISE]
    with pytest.raises(UsageError, match="no activation directly follows conv1"):
        hook_points(net, ["conv1"], "act")


def test_untraceable_models_get_one_error_text_from_both():
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return torch.relu(self.a(x)) if x.sum() > 0 else x

    with pytest.raises(CnnvizError, match=r"--stage act is not available: torch\.fx cannot trace the model \(") as a:
        hook_points(Dynamic(), ["a"], "act")
    with pytest.raises(RFError, match=r"receptive fields: torch\.fx cannot trace the model \(") as b:
        layer_fields(Dynamic(), size=8)
    cause = "torch.fx cannot trace the model ("
    assert str(a.value).split(cause)[1].split(")")[0] == str(b.value).split(cause)[1].split(")")[0]
    # exit codes as before: the act stage fails at run time (1), rf cannot analyse the model (2)
    assert (a.value.exit_code, b.value.exit_code) == (1, 2)


def test_caches_keep_no_model_alive():
    for use in (trace, lambda m: hook_points(m, ["conv1"], "act"), lambda m: layer_fields(m, size=12)):
        net = Between(VALUE_PRESERVING["nn.Identity"]).eval()
        use(net)
        ref = weakref.ref(net)
        del net
        gc.collect()
        assert ref() is None


def test_trace_keeps_named_blocks_as_leaves_and_caches_each_choice():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)) + x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.body = nn.Sequential(Block(), Block())

        def forward(self, x):
            return self.body(self.stem(x))

    net = Net().eval()
    plain = trace(net)
    assert [n.target for n in plain.nodes if n.op == "call_module"] == ["stem", "body.0.conv", "body.1.conv"]
    block = trace(net, leaves=["body.1"])
    assert [n.target for n in block.nodes if n.op == "call_module"] == ["stem", "body.0.conv", "body.1"]
    assert [n.target for n in trace(net, leaves=["body"]).nodes if n.op == "call_module"] == ["stem", "body"]
    # each choice traced once; naming a module torch.fx keeps whole anyway (or none) is the plain trace
    assert trace(net, leaves=("body.1",)) is block and trace(net) is plain
    assert trace(net, leaves=["stem"]) is plain and trace(net, leaves=["no.such"]) is plain
    net.body[1] = nn.Identity()  # another structure: traced again ('body.1' is now a torch.fx leaf itself)
    again = trace(net, leaves=["body.1"])
    assert again is not block and again is not plain and again is trace(net)
    assert [n.target for n in again.nodes if n.op == "call_module"] == ["stem", "body.0.conv", "body.1"]
