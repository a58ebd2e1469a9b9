"""`cnnviz ablate`: every number checked against an independent computation written here (a
full forward pass per ablation, the channel removed by a forward hook), on the fast traced
tail, its linear shortcut, a skip connection, and the whole-network fallback."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from cnnviz import ablate as ab
from cnnviz.capture import HookPoint

# ---------------------------------------------------------------- models


class Linearish(nn.Module):
    """The layer ('relu1') feeds a conv directly (dropout between, as SqueezeNet's classifier):
    the tail's linear shortcut applies."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu2(self.conv2(self.drop(self.relu1(self.conv1(x)))))
        return self.fc(y.mean((2, 3)))


class OneByOne(nn.Module):
    """SqueezeNet's classifier pattern at toy size: the layer, then dropout, a 1x1 conv, ReLU, pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(8, 5, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class Residual(nn.Module):
    """Layers inside and around a skip connection: the tail of 'body.1' also reads the block's
    input; 'body.3' (BN) feeds the addition; 'stem' feeds both branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.body = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 6, 3, padding=1),
                                  nn.BatchNorm2d(6))
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = torch.relu(self.body(s) + s)
        return self.fc(y.mean((2, 3)))


class Untraceable(nn.Module):
    """Data-dependent control flow after the layer: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.conv1(x))
        if y.sum() > 0:
            y = y * 2
        return self.fc(y.mean((2, 3)))


class InPlace(nn.Module):
    """The layer ('conv1', read at the conv's output) is followed by ReLU(inplace=True), as in VGG."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu1(self.conv1(x)).mean((2, 3)))


def _net(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    net = cls().eval()
    for m in net.modules():  # BN statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    return net


def _images(n: int = 10, size: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g)


# ---------------------------------------------------------------- the independent computation


def naive(model: nn.Module, layer: str, x: torch.Tensor, labels: torch.Tensor, sets, fill: torch.Tensor | None = None):
    """(accuracy, mean probability, mean logit) of the label, intact first then per set: a full
    forward pass per set with a hook replacing the set's channels of ``layer``'s output."""
    module = dict(model.named_modules())[layer]

    def score(out: torch.Tensor) -> tuple[float, float, float]:
        out = out.double()
        prob = torch.softmax(out, 1)[torch.arange(len(labels)), labels]
        return (float((out.argmax(1) == labels).double().mean()), float(prob.mean()),
                float(out[torch.arange(len(labels)), labels].mean()))

    rows = []
    with torch.no_grad():
        rows.append(score(model(x)))
        for chans in sets:
            def hook(_m, _i, out, chans=chans):
                out = out.clone()
                for c in chans:
                    out[:, c] = 0 if fill is None else fill[c]
                return out

            h = module.register_forward_hook(hook)
            try:
                rows.append(score(model(x)))
            finally:
                h.remove()
    return np.asarray(rows)


def _batches(x: torch.Tensor, labels: torch.Tensor, b: int):
    return [(x[i:i + b], labels[i:i + b]) for i in range(0, len(x), b)]


def _check_equal(e: ab.Effects, ref: np.ndarray) -> None:
    np.testing.assert_allclose(e.accuracy, ref[:, 0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(e.probability, ref[:, 1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(e.logit, ref[:, 2], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- per-channel effects = naive


@pytest.mark.parametrize("cls, layer, path", [
    (Linearish, "relu1", "linear"),
    (OneByOne, "features.1", "linear"),
    (Residual, "body.1", "linear"),  # the conv after it reads only it; the skip is a frontier value
    (Residual, "body.3", "tail"),  # BN output into the addition: no shortcut
    (Residual, "stem", "tail"),  # read by the block's conv and by the skip
    (Untraceable, "relu1", "fallback"),
    (InPlace, "conv1", "tail"),  # the tail starts with an in-place ReLU: the kept output must stay intact
])
@pytest.mark.parametrize("fill_kind", ["zero", "mean"])
def test_per_channel_effects_equal_a_naive_full_forward_ablation(cls, layer, path, fill_kind):
    net = _net(cls)
    x = _images()
    with torch.no_grad():
        intact = net(x).argmax(1)
    labels = intact.clone()
    labels[::3] = (labels[::3] + 1) % 4  # some wrong labels: accuracy below 1 before any removal
    channels = dict(net.named_modules())[layer]
    split = ab.LayerSplit(net, HookPoint(layer, 0))
    fill = None
    if fill_kind == "mean":
        fill = ab.mean_activation(split, [x[:4], x[4:]])
        acts = []
        h = channels.register_forward_hook(lambda _m, _i, o: acts.append(o.detach().clone()))
        with torch.no_grad():
            net(x)
        h.remove()
        np.testing.assert_allclose(fill.numpy(), torch.cat(acts).mean(0).numpy(), atol=1e-6)
    c = 8 if cls is not Residual else 6
    sets = [[i] for i in range(c)]
    e = ab.measure(split, _batches(x, labels, 4), sets, fill=fill, copies=3)
    _check_equal(e, naive(net, layer, x, labels, sets, fill))
    assert split.traced == (path != "fallback")
    if path == "linear":
        assert split._linear and split._linear.checked  # the shortcut was used, not just the plain tail
    if path == "tail":
        assert split._linear is False
    # groups and cumulative sets take the same path
    groups = [[0, 1], [2, 3, 4], [], list(range(c))]
    e = ab.measure(split, _batches(x, labels, 5), groups, fill=fill)
    _check_equal(e, naive(net, layer, x, labels, groups, fill))


def test_default_labels_are_the_intact_top1_so_intact_agreement_is_one():
    net = _net(Linearish)
    x = _images()
    split = ab.LayerSplit(net, HookPoint("relu1", 0))
    e = ab.measure(split, _batches(x, torch.full((10,), -1), 4), [[0], [5]])
    with torch.no_grad():
        labels = net(x).argmax(1)
    assert e.accuracy[0] == 1.0
    _check_equal(e, naive(net, "relu1", x, labels, [[0], [5]]))
    assert e.class_count.sum() == 10 and np.array_equal(e.class_count, np.bincount(labels.numpy(), minlength=5))


def test_a_tail_that_does_not_reproduce_the_model_falls_back_to_the_whole_network():
    net = _net(Linearish)
    x = _images()
    labels = torch.full((10,), -1)
    split = ab.LayerSplit(net, HookPoint("relu1", 0))
    assert split.traced
    real = split._tail

    class Wrong(nn.Module):  # a tail that is off by one logit
        def forward(self, *args):
            return real(*args) + 1

    split._tail = Wrong()
    e = ab.measure(split, _batches(x, labels, 4), [[0], [3]])
    assert not split.traced and "does not reproduce" in split.why
    with torch.no_grad():
        ref_labels = net(x).argmax(1)
    _check_equal(e, naive(net, "relu1", x, ref_labels, [[0], [3]]))


def test_a_linear_shortcut_that_disagrees_with_the_plain_tail_is_dropped():
    net = _net(OneByOne)
    x = _images(size=16)
    split = ab.LayerSplit(net, HookPoint("features.1", 0))
    built = ab._LinearStart.build(split._tail)
    real = built.logits
    built.logits = lambda cut, sets, src: real(cut, sets, src) + 0.5  # a wrong shortcut
    split._linear = built
    e = ab.measure(split, _batches(x, torch.full((10,), -1), 4), [[0], [3], [5]])
    assert split._linear is False and split.traced
    with torch.no_grad():
        labels = net(x).argmax(1)
    _check_equal(e, naive(net, "features.1", x, labels, [[0], [3], [5]]))


def test_hooks_are_removed_and_the_training_mode_restored():
    net = _net(Untraceable).train()
    split = ab.LayerSplit(net, HookPoint("relu1", 0))
    ab.measure(split, _batches(_images(), torch.full((10,), -1), 5), [[0]])
    assert net.training
    assert not any(m._forward_hooks for m in net.modules())


# ---------------------------------------------------------------- rankings and curves


def test_ranking_is_total_and_hurt_classes_name_the_biggest_drop():
    e = ab.Effects(sets=[[0], [1], [2]], images=4, accuracy=np.array([1.0, 0.75, 0.75, 1.0]),
                   probability=np.array([0.9, 0.8, 0.7, 0.9]), logit=np.array([3.0, 2.0, 2.5, 3.0]),
                   class_count=np.array([2, 2, 0]),
                   class_accuracy=np.array([[1, 1, np.nan], [0.5, 1, np.nan], [1, 0.5, np.nan], [1, 1, np.nan]]),
                   class_probability=np.array([[.9, .9, np.nan], [.7, .9, np.nan], [.9, .5, np.nan], [.9, .9, np.nan]]))
    assert ab.ranking(e, by="probability") == [1, 0, 2]
    assert ab.ranking(e, by="accuracy") == [1, 0, 2]  # equal accuracy drops: probability decides
    assert ab.ranking(e, by="logit") == [0, 1, 2]
    assert ab.hurt_classes(e, 0) == [(0, 50.0, pytest.approx(20.0), 2)]
    assert ab.hurt_classes(e, 2) == []


def test_curve_points_orders_and_sets():
    assert ab.curve_points(4) == [0, 1, 2, 3, 4]
    pts = ab.curve_points(512)
    assert pts[0] == 0 and pts[-1] == 512 and len(pts) == 33
    orders = ab.curve_orders([2, 0, 1])
    assert orders["most"] == [2, 0, 1] and orders["least"] == [1, 0, 2]
    assert orders == ab.curve_orders([2, 0, 1])  # fixed seeds: reruns agree
    assert sorted(orders["random-0"]) == [0, 1, 2]
    sets = ab.curve_sets([[0, 1], [2], [3]], {"most": [2, 0, 1]}, [0, 1, 2])
    assert sets == [("most", 0, []), ("most", 1, [3]), ("most", 2, [0, 1, 3])]


# ---------------------------------------------------------------- trained SqueezeNet on a real cat photo

REAL = "/work/realcache/hub/checkpoints/squeezenet1_1-b8a52dc0.pth"


def cat_views():
    """scikit-image's two cat photos (chelsea, cat), each whole, mirrored and two crops: (8, 3, 224, 224)."""
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    from cnnviz.io import preprocess

    views = []
    for cat in (skimage.chelsea(), skimage.cat()):
        h, w = cat.shape[:2]
        views += [cat, cat[:, ::-1], cat[: h * 7 // 8, w // 10:], cat[h // 8:, : w * 9 // 10]]
    return torch.from_numpy(np.stack([preprocess(Image.fromarray(np.ascontiguousarray(v)), size=224, crop=True)[0]
                                      for v in views]))


def cat_effect(net, x, *, randoms: int = 20):
    """(cat probability intact, with the 10 channels of features.12 whose removal costs most
    removed, with 10 random channels removed (one per seed)), mean over the images of the
    summed probability of ImageNet's cat classes 281-285; and the Effects of every channel."""
    split = ab.LayerSplit(net, HookPoint("features.12", 0))
    e = ab.measure(split, [(x, torch.full((len(x),), -1))], [[c] for c in range(512)])
    top10 = [e.sets[i][0] for i in ab.ranking(e, by="probability")[:10]]
    rand = [sorted(np.random.default_rng(s).choice(512, 10, replace=False).tolist()) for s in range(randoms)]
    with torch.inference_mode():
        logits = split.ablate(split.cut(x), [[], top10] + rand)
    cat_prob = torch.softmax(logits.double(), 2)[..., list(range(281, 286))].sum(2).mean(1)  # (sets,)
    return float(cat_prob[0]), float(cat_prob[1]), cat_prob[2:].numpy(), e, split


@pytest.mark.skipif(not os.path.exists(REAL), reason="trained SqueezeNet 1.1 weights not cached")
def test_trained_squeezenet_the_top_channels_matter_more_for_the_cat_than_random_ones():
    """The issue's meaning test (numbers in docs/ablate.md): on scikit-image's two cat photos,
    removing the 10 channels of features.12 with the largest effect lowers the cat classes'
    probability more than any of 20 random sets of 10 channels."""
    import torchvision

    net = torchvision.models.squeezenet1_1()
    net.load_state_dict(torch.load(REAL, map_location="cpu", weights_only=True))
    net.eval()
    x = cat_views()
    with torch.no_grad():
        assert set(net(x).argmax(1).tolist()) <= set(range(281, 286))  # every view is a cat to the intact model
    intact, top, randoms, e, split = cat_effect(net, x)
    assert split.traced and split._linear and split._linear.checked
    print(f"cat probability: intact {intact:.4f}, top-10 removed {top:.4f}, 10 random removed: mean "
          f"{randoms.mean():.4f}, lowest {randoms.min():.4f} (of {len(randoms)})")
    assert top < randoms.min() < intact + 0.05, (intact, top, randoms)
    assert intact - top > 3 * (intact - randoms.mean())
    # the removal curve, most important first, lies below the random ones
    orders = ab.curve_orders(ab.ranking(e))
    plan = ab.curve_sets(e.sets, orders, [0, 5, 10, 20, 40])
    curve = ab.measure(split, [(x, torch.full((len(x),), -1))], [s for _, _, s in plan])
    prob = {name: [] for name in orders}
    for j, (name, _k, _s) in enumerate(plan):
        prob[name].append(curve.probability[1 + j])
    for k in range(1, 5):
        assert prob["most"][k] < min(prob[f"random-{s}"][k] for s in ab.RANDOM_SEEDS)


# ---------------------------------------------------------------- the job and the CLI

NET_PY = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))
'''


@pytest.fixture
def setup(tmp_path):
    return make_setup(tmp_path, NET_PY)


def make_setup(tmp_path, net_py: str):
    """A folder with net.py (``net_py``), classes.txt and val/<class>/ of 3 small photos each."""
    from PIL import Image

    (tmp_path / "net.py").write_text(net_py)
    (tmp_path / "classes.txt").write_text("cat\ndog\nsea lion\nwater_ouzel\n")
    rng = np.random.default_rng(0)
    for folder in ("cat", "dog", "sea_lion"):
        (tmp_path / "val" / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / "val" / folder / f"{i}.png")
    return tmp_path


def _args(t, *extra):
    return ["ablate", str(t / "val"), "-m", f"{t / 'net.py'}:Net", "--labels", str(t / "classes.txt"), "-l", "features.3",
            "-s", "32", "-o", str(t / "out"), *extra]


def test_cli_writes_table_chart_curves_and_json_and_reruns_are_identical(cli, setup):
    t = setup
    r = cli(*_args(t, "--per-class", "-k", "3"))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "agreement with the intact model" in lines[0] and "9 image(s)" in lines[0]
    assert len(lines) == 3 + 3  # two comment lines, a header, 3 rows
    names = sorted(os.listdir(t / "out"))
    assert names == ["net-Net-features.3-ablate-curves.csv", "net-Net-features.3-ablate-curves.png", "net-Net-features.3-ablate.json",
                     "net-Net-features.3-ablate.png"]
    first = (t / "out" / "net-Net-features.3-ablate.json").read_bytes()
    csv1 = (t / "out" / "net-Net-features.3-ablate-curves.csv").read_bytes()
    d = json.loads(first)
    assert d["metric"] == "agreement" and d["intact"]["accuracy"] == 100 and len(d["units"]) == 8
    assert set(d["curves"]) == {"most", "least", "random-0", "random-1", "random-2"}
    assert [u["rank"] for u in d["units"]] == list(range(1, 9))
    r = cli(*_args(t, "--per-class", "-k", "3"))
    assert r.exit_code == 0
    assert (t / "out" / "net-Net-features.3-ablate.json").read_bytes() == first
    assert (t / "out" / "net-Net-features.3-ablate-curves.csv").read_bytes() == csv1


def test_cli_labels_from_folders_tsv_and_json(cli, setup):
    t = setup
    r = cli(*_args(t, "--labels-from", "folders", "--format", "tsv", "-c", "0:4", "--no-curves"))
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["rank", "unit", "accuracy_drop"] and len(rows) == 5
    r = cli(*_args(t, "--labels-from", "folders", "--json", "--group", "0:4", "--group", "4:8", "--ablation", "mean"))
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["labels"] == "folders" and d["metric"] == "accuracy" and d["ablation"] == "mean"
    assert sorted(u["unit"] for u in d["units"]) == ["0-3", "4-7"] and d["units"][0]["channels"] in ([0, 1, 2, 3], [4, 5, 6, 7])
    csv_path = t / "labels.csv"
    csv_path.write_text("path,label\n" + "".join(f"val/{f}/{i}.png,{lab}\n" for f, lab in
                                                  (("cat", "cat"), ("dog", "1"), ("sea_lion", "Sea Lion")) for i in range(3)))
    r = cli(*_args(t, "--labels-from", str(csv_path), "--json", "-c", "0:2", "--no-curves"))
    assert r.exit_code == 0, r.stderr
    d2 = json.loads(r.stdout)
    assert d2["intact"] == d["intact"]  # the same labels, from folders or from the CSV


@pytest.mark.parametrize("extra, fragment", [
    (("--labels-from", "folders", "--labels", "OTHER"), "match no class of net-Net: 'cat' (nearest: 'bat')"),
    (("-c", "0:4", "--group", "0:2"), "--channels and --group both"),
    (("-c", "9"), "channel"),
    (("-o", "-"), "give an output folder"),
    (("--labels-from", "nothere.csv"), "no such CSV file"),
    (("--precision", "bf16"), "--precision bf16: ablate measures drops in probability smaller than bfloat16's rounding"),
    (("--device", "tpu"), "unknown device 'tpu'"),
])
def test_cli_bad_input_is_one_line(cli, setup, extra, fragment):
    t = setup
    (t / "OTHER").write_text("bat\ndog\nsea lion\nwater ouzel\n")
    args = _args(t, *extra)
    if "OTHER" in extra:
        args[args.index("OTHER")] = str(t / "OTHER")
        args.remove(str(t / "classes.txt"))
        args.remove("--labels")
    r = cli(*args)
    assert r.exit_code != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnviz: error: ") and fragment in err[0], r.stderr


def test_cli_reads_a_list_of_paths_on_stdin(cli, setup):
    t = setup
    args = _args(t, "-c", "0:2", "--no-curves", "--json", "--device", "cpu")
    args[1] = "-"
    listed = "\n".join(str(t / "val" / f / "0.png") for f in ("cat", "dog", "sea_lion")) + "\n"
    r = cli(*args, input=listed.encode())
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["images"] == 3


def test_cli_needs_a_layer(cli, setup):
    t = setup
    args = _args(t)
    i = args.index("-l")
    del args[i:i + 2]
    r = cli(*args)
    assert r.exit_code == 2 and r.stderr.startswith("cnnviz: error: ablate needs a layer: pass -l/--layer"), r.stderr


def test_cli_needs_two_images(cli, setup):
    t = setup
    args = _args(t)
    args[1] = str(t / "val" / "cat" / "0.png")
    r = cli(*args)
    assert r.exit_code == 2 and r.stderr.strip() == "cnnviz: error: ablate needs at least 2 images, got 1: effects are averages over images"


def test_cli_refuses_a_model_without_classifier_output(cli, setup):
    t = setup
    (t / "dense.py").write_text(NET_PY.replace("return self.fc(self.features(x).mean((2, 3)))", "return self.features(x)"))
    args = _args(t)
    args[args.index("-m") + 1] = f"{t / 'dense.py'}:Net"
    r = cli(*args)
    assert r.exit_code != 0 and "no classifier head" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_says_when_the_whole_network_runs(cli, setup):
    t = setup
    (t / "untr.py").write_text(NET_PY.replace("return self.fc(", "y = self.features(x)\n        if y.sum() > 0:\n"
                                              "            y = y * 2\n        return self.fc(y.mean((2, 3)))\n        return self.fc("))
    args = _args(t, "-c", "0:2", "--no-curves")
    args[args.index("-m") + 1] = f"{t / 'untr.py'}:Net"
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    assert "every ablation runs the whole network (slower)" in r.stderr


def test_text_table_says_what_was_measured():
    from cnnviz.jobs.ablate import AblateResult, Unit, _hurt_text, text_table

    units = [Unit("7", [7], 50.0, 30.0, 2.0, 50.0, 10.0, 1.0, 1, [(3, "tabby", 50.0, 12.345, 2), (4, "dog", 0.0, 1.0, 1)]),
             Unit("2", [2], 100.0, 40.0, 3.0, 0.0, 0.0, 0.0, 2)]
    r = AblateResult(model_name="m", layer="features.12", channels=8, images=4, ablation="zero", labels="model",
                     sort="probability", intact={"accuracy": 100.0, "probability": 40.0, "logit": 3.0}, units=units)
    text = text_table(r, limit=1).splitlines()
    assert "agreement with the intact model" in text[0] and "1 of 2 shown" in text[1] and len(text) == 4
    assert text[2].split()[:3] == ["rank", "unit", "agreement_drop"]
    assert text[3].endswith("tabby (agreement -50.0, probability -12.35 pts; 2 img); dog (probability -1.00 pts; 1 img)")
    assert _hurt_text("x", 0.04, 1.0, 1, metric="accuracy") == "x (probability -1.00 pts; 1 img)"


def test_cli_progress_is_the_shared_bar_and_quiet_keeps_warnings(cli, setup, monkeypatch):
    """ablate reports through cnnviz.progress like every long command: a bar on a terminal, none in
    a pipe; -q mutes the bar and the phase lines, never a warning about a skipped file."""
    import cnnviz.progress as progress_mod

    t = setup
    (t / "val" / "dog" / "broken.png").write_bytes(b"not a png")
    piped = cli(*_args(t, "--no-curves"))
    assert piped.exit_code == 0, piped.stderr
    assert "ablate: removing" in piped.stderr and "skipped" in piped.stderr and "\r" not in piped.stderr
    quiet = cli(*_args(t, "--no-curves", "-q"))
    assert quiet.exit_code == 0, quiet.stderr
    assert "ablate: removing" not in quiet.stderr and "skipped" in quiet.stderr
    monkeypatch.setattr(progress_mod, "MIN_INTERVAL", 0)
    monkeypatch.setattr(progress_mod, "_isatty", lambda stream: True)
    shell = cli(*_args(t, "--no-curves"))
    assert shell.exit_code == 0, shell.stderr
    assert "ablate" in shell.stderr and "10/10" in shell.stderr, shell.stderr
