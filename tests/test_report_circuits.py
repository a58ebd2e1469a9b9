"""The channel pages' circuit view: which conv channels a channel is built from and feeds into.

The wiring is checked against architectures whose wiring is known by construction (a chain, a
ResNet's residual stream and shortcut, SqueezeNet's fire concatenation, a grouped conv, a
squeeze-and-excitation gate), and the numbers against weight norms computed here directly from
``conv.weight``."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnviz.layers import conv_layers
from cnnviz.report.circuits import consumers_of, incoming, strongest, wiring


def _names(model, w):
    lays = conv_layers(model)
    return {lays[i].name: [(None if s.layer is None else lays[s.layer].name, s.offset, s.channels, s.via)
                           for s in x.sources] for i, x in w.items()}


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.b = nn.Conv2d(5, 7, 3, padding=1)
        self.c = nn.Conv2d(7, 8, 1, groups=1)
        self.d = nn.Conv2d(8, 4, 3, groups=2, padding=1)  # 4 in / 2 out per group

    def forward(self, x):
        x = torch.relu(self.bn(self.a(x)))
        x = nn.functional.max_pool2d(self.b(x), 2)
        return self.d(torch.sigmoid(self.c(x)))


def test_a_chain_is_wired_conv_to_conv_through_norm_activation_and_pooling():
    m = Chain().eval()
    got = _names(m, wiring(m, conv_layers(m)))
    assert got == {"a": [(None, 0, 3, ())], "b": [("a", 0, 5, ())], "c": [("b", 0, 7, ())], "d": [("c", 0, 8, ())]}


def test_incoming_norms_are_the_kernels_l2_norms_and_groups_read_only_their_channels():
    torch.manual_seed(0)
    m = Chain().eval()
    for conv in (m.b, m.d):
        w = conv.weight.detach().numpy()
        norm, mean = incoming(w, groups=conv.groups)
        o, i = conv.out_channels, conv.in_channels
        assert norm.shape == mean.shape == (o, i)
        per = i // conv.groups
        for oc in range(o):
            g = oc // (o // conv.groups)
            for ic in range(i):
                if ic // per == g:
                    k = conv.weight[oc, ic - g * per].detach()
                    assert norm[oc, ic] == pytest.approx(float(torch.linalg.norm(k)), rel=1e-5)
                    assert mean[oc, ic] == pytest.approx(float(k.mean()), rel=1e-4, abs=1e-7)
                else:
                    assert norm[oc, ic] == 0 and mean[oc, ic] == 0
    # d: output channel 0 and 1 read inputs 0..3 only, 2 and 3 read 4..7 only
    norm, _ = incoming(m.d.weight.detach().numpy(), groups=2)
    assert all(set(r) <= {0, 1, 2, 3} for r in strongest(norm[:2], k=9))
    assert all(set(r) <= {4, 5, 6, 7} for r in strongest(norm[2:], k=9))


def test_strongest_orders_by_norm_then_channel_and_skips_zeros():
    a = np.array([[0.5, 2.0, 0.0, 2.0, 1.0], [0, 0, 0, 0, 0.0]], np.float32)
    assert strongest(a, k=3) == [[1, 3, 4], []]
    assert strongest(a, k=9) == [[1, 3, 4, 0], []]


def test_resnet_residual_input_comes_from_both_branches_and_the_stream():
    m = torchvision.models.resnet18(weights=None).eval()
    lays = conv_layers(m)
    w = wiring(m, lays)
    got = _names(m, w)
    # inside a block: the previous conv (through bn and relu)
    assert got["layer1.0.conv2"] == [("layer1.0.conv1", 0, 64, ())]
    # after an add: the block's last conv (one add away), then the stream behind the identity
    assert got["layer1.1.conv1"][0] == ("layer1.0.conv2", 0, 64, ("add",))
    assert {g[0] for g in got["layer1.1.conv1"]} == {"layer1.0.conv2", "conv1"}
    assert got["layer2.0.conv1"][0] == ("layer1.1.conv2", 0, 64, ("add",))
    assert {g[0] for g in got["layer2.0.conv1"]} == {"layer1.1.conv2", "layer1.0.conv2", "conv1"}
    # the shortcut conv reads the same stream; the next stage's blocks read it and the shortcut
    assert got["layer2.0.downsample.0"] == got["layer2.0.conv1"]
    assert {g[0] for g in got["layer2.1.conv1"]} == {"layer2.0.conv2", "layer2.0.downsample.0"}
    idx = {lay.name: lay.index for lay in lays}
    assert w[idx["layer2.0.conv1"]].producers(17) == [(idx["layer1.1.conv2"], 17), (idx["layer1.0.conv2"], 17),
                                                      (idx["conv1"], 17)]
    # feeds into: layer1.0.conv2 is read by every later conv of the stream, nearest first
    cons = [lays[c].name for c, _ in consumers_of(w, idx["layer1.0.conv2"])]
    assert cons[0] == "layer1.1.conv1" and {"layer2.0.conv1", "layer2.0.downsample.0"} <= set(cons)


def test_squeezenet_fire_concatenation_offsets_the_channels():
    m = torchvision.models.squeezenet1_1(weights=None).eval()
    lays = conv_layers(m)
    w = wiring(m, lays)
    got = _names(m, w)
    assert got["features.4.squeeze"] == [("features.3.expand1x1", 0, 64, ("cat",)),
                                         ("features.3.expand3x3", 64, 64, ("cat",))]
    idx = {lay.name: lay.index for lay in lays}
    wire = w[idx["features.4.squeeze"]]
    assert wire.producers(5) == [(idx["features.3.expand1x1"], 5)]
    assert wire.producers(64 + 9) == [(idx["features.3.expand3x3"], 9)]
    assert consumers_of(w, idx["features.3.expand3x3"]) == [(idx["features.4.squeeze"], 64)]


def test_a_squeeze_excitation_gate_comes_after_the_features_it_scales():
    m = torchvision.models.mobilenet_v3_small(weights=None).eval()
    lays = conv_layers(m)
    w = wiring(m, lays)
    gated = [x for x in w.values() if "gate" in x.merged]
    assert gated
    for x in gated:
        assert "gate" not in x.sources[0].via and "gate" in x.sources[-1].via
        assert lays[x.sources[-1].layer].name.endswith("fc2")


def test_an_op_the_wiring_does_not_follow_is_said():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.b = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y.flip(1))  # reverses the channels: not a channel-keeping op

    m = Odd().eval()
    w = wiring(m, conv_layers(m))
    assert w[1].sources == () and "flip" in w[1].unknown


# ---------------------------------------------------------------- in the report's data


def _layer_data(out, i):
    text = (out / f"data/layer-{i:02d}.js").read_text()
    return json.loads(re.fullmatch(r"window\.CNNVIZ_LAYER = (.*);\n", text, re.S).group(1))


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    from test_report import images, tiny_model, top_index

    from cnnviz.jobs.report import index_query
    from cnnviz.report import build_report

    root = tmp_path_factory.mktemp("circ")
    lm = tiny_model()
    idx = top_index(root, lm, photos=5, layers=("1",))
    out = root / "site"
    build_report(lm, images(2), output=str(out), progress=False, index=idx, index_k=3, examples=index_query(lm),
                 compare_links={(2, 3): [("before / after", "compare/index.html#c3")]})
    return lm, out


def test_built_from_and_feeds_into_match_norms_computed_from_the_weights(tiny_report):
    lm, out = tiny_report
    feats = lm.model.features
    convs = {1: feats[2], 2: feats[5]}  # TinyVGG: conv0 -> relu -> conv1 -> relu -> pool -> conv2
    for layer, prev in ((1, 0), (2, 1)):
        d = _layer_data(out, layer)
        wt = convs[layer].weight.detach()
        for c in range(wt.shape[0]):
            norms = torch.linalg.vector_norm(wt[c], dim=(1, 2))  # independent: one norm per input channel
            want = sorted(range(len(norms)), key=lambda i: (-float(norms[i]), i))[:9]
            rows = d["circuit"]["built"][c]
            assert [r[0] for r in rows] == want
            for i, signed in rows:  # the norm, signed as the kernel's mean
                assert abs(signed) == pytest.approx(float(norms[i]), rel=5e-3)  # 3 significant digits
                assert (signed > 0) == (float(wt[c, i].mean()) > 0)
            assert d["circuit"]["producers"] == [[prev, 0, wt.shape[1], []]]  # the previous conv, channel for channel
    # feeds into: the next conv's output channels that read channel c hardest
    d = _layer_data(out, 1)
    nxt = convs[2].weight.detach()
    for c in range(6):
        norms = torch.linalg.vector_norm(nxt[:, c], dim=(1, 2))
        want = sorted(range(len(norms)), key=lambda o: (-float(norms[o]), o))[:6]
        assert d["circuit"]["consumers"] == [[2, 0]]
        assert [o for o, _n in d["circuit"]["feeds"][c][0]] == want
    # the first layer reads the image: the page keeps its RGB filter instead
    d0 = _layer_data(out, 0)
    assert d0["circuit"]["image"] is True and d0["filters"]["mode"] == "rgb"
    # thumbnails: layer 1's channels have dataset examples (the index holds layer 1), layer 0's a map
    d2 = _layer_data(out, 2)
    t = d2["thumbs"]["1:0"]
    assert isinstance(t[0], int) and d2["exImages"][t[0]]["src"].startswith("img/ex-")
    assert _layer_data(out, 1)["thumbs"]["0:0"][0] == "m"
    assert d2["compare"] == {"3": [["before / after", "compare/index.html#c3"]]}
    assert d2["ablation"] is None  # no ablate results beside the index


def test_the_ablation_slot_shows_what_the_reader_returns(tmp_path, monkeypatch):
    """The reader is stood in for (the store's own records, made up values): the layer's results
    go into its data (per channel: points, class hurt most) and its curves PNG into the report."""
    from test_report import images, tiny_model, top_index

    from cnnviz.ablatestore import ChannelAblation, LayerAblation
    from cnnviz.jobs.report import index_query
    from cnnviz.report import build_report, channelpage

    from PIL import Image

    curves = tmp_path / "curves.png"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(curves)
    lm = tiny_model()
    idx = top_index(tmp_path, lm, photos=4, layers=("2",))
    asked = []

    def read(site, lay):
        asked.append((site.index_info["folder"], lay.name))
        if lay.index != 2:
            return None
        chans = {c: ChannelAblation(c, 2.5 * c, 0.01 * c, 0.1, "tabby cat" if c == 3 else None,
                                    4.0 if c == 3 else None, "agreement", 4) for c in range(8)}
        return LayerAblation("features.5", "zero", chans, str(curves))

    monkeypatch.setattr(channelpage, "read_ablation", read)
    out = tmp_path / "site"
    build_report(lm, images(1), output=str(out), progress=False, index=idx, index_k=3, examples=index_query(lm))
    assert {a[1] for a in asked} == {"features.0", "features.2", "features.5"}
    d = _layer_data(out, 2)
    assert d["ablation"]["channels"]["3"] == [7.5, "tabby cat", 4.0, 0.03]
    assert d["ablation"]["metric"] == "agreement" and d["ablation"]["images"] == 4
    rel = d["ablation"]["curves"]
    assert (out / rel).read_bytes() == curves.read_bytes()
    page = (out / "layer-02.html").read_text()
    assert "id=ablation" in page and rel in page and "channel-02.html#7" in page
    assert _layer_data(out, 1)["ablation"] is None


def test_without_ablatestore_the_reader_says_no_results(tmp_path, monkeypatch):
    import builtins

    from cnnviz.report.channelpage import read_ablation

    real = builtins.__import__

    def no_store(name, *a, **kw):
        if name.endswith("ablatestore") or (a and a[2] and "ablatestore" in (a[2] or ())):
            raise ImportError(name)
        return real(name, *a, **kw)

    class S:
        index_info = {"folder": str(tmp_path)}

    class L:
        name = "features.0"

    monkeypatch.setattr(builtins, "__import__", no_store)
    assert read_ablation(S(), L()) is None
    S.index_info = None
    assert read_ablation(S(), L()) is None


def test_a_prior_maximize_output_is_the_feature_visualization_of_its_channels(tmp_path):
    """`cnnviz maximize --separate` pictures copied in with --include show on their channel's page
    (one each); a grid shows on every channel it covers; other channels get the command."""
    from test_report import images

    from cnnviz.jobs.maximize import MaximizeRequest, run_maximize
    from cnnviz.jobs.output import Output
    from cnnviz.layers import conv_layers
    from cnnviz.report import build_report
    from cnnviz.sources import ModelSpec, load

    spec = ModelSpec("vgg11", weights="none")
    lm = load(spec)
    mx = tmp_path / "mx"
    run_maximize(MaximizeRequest(layers=("1",), channels=("0,2",), steps=2, size="32", separate=True, model=spec),
                 output=Output(str(mx)), model=lm)
    run_maximize(MaximizeRequest(layers=("2",), channels=("1:4",), steps=2, size="32", model=spec),
                 output=Output(str(mx)), model=lm)
    out = tmp_path / "site"
    build_report(lm, images(1, size=32), output=str(out), progress=False, include=[str(mx)],
                 layers=conv_layers(lm.model)[:3])
    d1 = _layer_data(out, 1)
    assert sorted(d1["maxIncluded"]) == ["0", "2"]
    assert all(e[0]["single"] and e[0]["weights"] is None and (out / e[0]["src"]).is_file()
               for e in d1["maxIncluded"].values())
    assert d1["maxIncluded"]["0"][0]["src"] != d1["maxIncluded"]["2"][0]["src"]
    d2 = _layer_data(out, 2)
    assert sorted(d2["maxIncluded"]) == ["1", "2", "3"] and not d2["maxIncluded"]["1"][0]["single"]
    assert d2["maximizeHint"] == ("cnnviz maximize -m vgg11 --weights none -l 2 -c {c} --separate -o maximize "
                                  "&& cnnviz report ... --include maximize")


def test_the_first_layers_filter_on_its_own_scale():
    from cnnviz.report.channelpage import own_scale_rgb

    w = np.zeros((2, 3, 1, 2), np.float32)
    w[0, 1, 0, 0] = 0.01  # a weak filter: green +, nothing else
    w[0, 0, 0, 1] = -0.005
    w[1, 2, 0, 1] = 4.0
    px = own_scale_rgb(w)
    # filter 0: pixel (0,0) = (128, 255, 128), pixel (0,1) = (r -0.5 of max -> 64, 128, 128)
    assert px[0] == [128, 255, 128, 64, 128, 128]
    assert px[1] == [128, 128, 128, 128, 128, 255]


def test_ablate_results_beside_the_index_reach_the_channel_pages(cli, tmp_path, monkeypatch):
    """End to end, once cnnviz.ablatestore exists: `cnnviz ablate --index` results show on the
    channel pages (the numbers the store reads back) and the layer page shows the curves."""
    store = pytest.importorskip("cnnviz.ablatestore")
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray((rng.random((70, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
    model = ["-m", "squeezenet1_1", "--weights", "none", "-s", "64"]
    layer = "features.12.expand1x1"
    r = cli("top", "photos", *model, "-l", layer, "--index", "idx", "--no-pictures", "-q")
    assert r.exit_code == 0, r.stderr
    # ablate's default stage is act (stored as 'features.12.expand1x1:act'): the report reads that too
    r = cli("ablate", "photos", *model, "-l", layer, "-c", "0:6", "--index", "idx", "--curves", "-o", "abl", "-q")
    assert r.exit_code == 0, r.stderr
    want = store.read_layer_ablation(index_dir=str(tmp_path / "idx"), layer=f"{layer}:act")
    assert want is not None and want.channels
    r = cli("report", "photos/p0.png", *model, "-l", layer, "--index", "idx", "-o", "site", "-q")
    assert r.exit_code == 0, r.stderr
    from cnnviz.layers import conv_layers
    from cnnviz.sources import architecture

    index = next(x.index for x in conv_layers(architecture("squeezenet1_1").model) if x.name == layer)
    d = _layer_data(tmp_path / "site", index)
    got = d["ablation"]
    assert got["stage"] == "act"
    assert got["images"] == next(iter(want.channels.values())).images
    for c, a in want.channels.items():
        assert got["channels"][str(c)][0] == pytest.approx(a.points, rel=5e-3, abs=1e-9)
    if want.curves_png:
        assert (tmp_path / "site" / got["curves"]).read_bytes() == open(want.curves_png, "rb").read()
        assert got["curves"] in (tmp_path / "site" / f"layer-{index:02d}.html").read_text()
