"""cnnviz compare: CKA and unit matching against independent computations (NumPy, the formulas
of Song et al. 2012 / Nguyen et al. 2021 written out here), and the command's errors."""
from __future__ import annotations

import numpy as np
import pytest

from cnnviz.compare import LinearCKA, MinibatchCKA, centered_gram, match_units


def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, on the n x n Gram matrices directly."""
    n = K.shape[0]
    K, L = K.astype(np.float64).copy(), L.astype(np.float64).copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return float((np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * one @ K @ L @ one) / (n * (n - 3)))


def ref_cka(X: np.ndarray, Y: np.ndarray) -> float:
    K, L = X @ X.T, Y @ Y.T
    return ref_hsic1(K, L) / np.sqrt(ref_hsic1(K, K) * ref_hsic1(L, L))


def _features(seed: int = 0, n: int = 37):
    r = np.random.default_rng(seed)
    base = r.normal(size=(n, 6))
    xa = [np.maximum(base @ r.normal(size=(6, 8)) + 5.0, 0), r.normal(size=(n, 3)) * 100 + 1e3]
    xb = [np.maximum(base @ r.normal(size=(6, 5)) + r.normal(size=(n, 5)), 0), base[:, :4] ** 2]
    return xa, xb


@pytest.mark.parametrize("batch", [1, 4, 7, 37])
def test_streaming_linear_cka_equals_the_direct_n_by_n_estimator(batch):
    xa, xb = _features()
    n = xa[0].shape[0]
    cka = LinearCKA([x.shape[1] for x in xa], [y.shape[1] for y in xb])
    for s in range(0, n, batch):
        cka.update([x[s:s + batch] for x in xa], [y[s:s + batch] for y in xb])
    got = cka.matrix()
    want = np.array([[ref_cka(x, y) for y in xb] for x in xa])
    np.testing.assert_allclose(got, want, atol=1e-9, rtol=0)


def test_cka_of_features_with_themselves_is_one_and_invariant_to_rotation_and_scale():
    xa, _ = _features(1)
    r = np.random.default_rng(5)
    q, _ = np.linalg.qr(r.normal(size=(8, 8)))
    cka = LinearCKA([8, 3], [8, 8])
    cka.update(xa, [xa[0], 3.7 * xa[0] @ q])
    m = cka.matrix()
    assert abs(m[0, 0] - 1) < 1e-9 and abs(m[0, 1] - 1) < 1e-9
    assert abs(m[1, 0] - m[1, 1]) < 1e-9


def test_minibatch_estimator_is_the_mean_of_minibatch_hsic_terms():
    xa, xb = _features(2, n=40)
    mb = MinibatchCKA(2, 2)
    hab, haa, hbb = np.zeros((2, 2)), np.zeros(2), np.zeros(2)
    for s in range(0, 40, 8):
        ka = np.stack([centered_gram(x[s:s + 8]) for x in xa])
        kb = np.stack([centered_gram(y[s:s + 8]) for y in xb])
        mb.update(ka, kb)
        for i, x in enumerate(xa):
            K = x[s:s + 8] @ x[s:s + 8].T
            haa[i] += ref_hsic1(K, K)
            for j, y in enumerate(xb):
                L = y[s:s + 8] @ y[s:s + 8].T
                hab[i, j] += ref_hsic1(K, L)
                if i == 0:
                    hbb[j] += ref_hsic1(L, L)
    np.testing.assert_allclose(mb.matrix(), hab / np.sqrt(np.outer(haa, hbb)), atol=1e-9)
    se = mb.stderr()
    assert np.all(np.isfinite(se)) and np.all(se > 0)


def test_minibatch_estimate_agrees_with_the_full_batch_within_its_sampling_error():
    r = np.random.default_rng(3)
    n, b = 512, 32
    z = r.normal(size=(n, 10))
    X = np.maximum(z @ r.normal(size=(10, 20)), 0)
    Y = np.maximum(z[:, :6] @ r.normal(size=(6, 12)) + 0.5 * r.normal(size=(n, 12)), 0)
    mb = MinibatchCKA(1, 1)
    for s in range(0, n, b):
        mb.update(centered_gram(X[s:s + b])[None], centered_gram(Y[s:s + b])[None])
    full = ref_cka(X, Y)
    est, se = mb.matrix()[0, 0], mb.stderr()[0, 0]
    assert abs(est - full) < 3 * se, (est, full, se)


def test_unit_matching_recovers_a_permutation():
    r = np.random.default_rng(4)
    x = r.normal(size=(50, 12))
    perm = r.permutation(12)
    cka = LinearCKA([12], [12])
    cka.update([x], [x[:, perm] * 2 + 1])  # B's channel j is A's channel perm[j]
    m = match_units(cka.correlation(0, 0))
    np.testing.assert_array_equal(perm[m.match], np.arange(12))
    np.testing.assert_allclose(m.corr, 1, atol=1e-9)
    same = match_units(cka.correlation(0, 0), same_units=True)
    np.testing.assert_array_equal(same.match, np.arange(12))


# ---------------------------------------------------------------- the job, on a tiny network

import json  # noqa: E402
import textwrap  # noqa: E402

import torch  # noqa: E402

from cnnviz.jobs.compare import CompareRequest, run_compare  # noqa: E402
from cnnviz.jobs.output import Output  # noqa: E402
from cnnviz.models import LoadedModel  # noqa: E402

NET = textwrap.dedent('''
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, channels=3):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(inplace=True),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(10, 4)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    class Gray(Net):
        def __init__(self):
            super().__init__(channels=1)
''')


@pytest.fixture
def world(tmp_path):
    """A model file, its checkpoint, and 12 small photos with structure."""
    import importlib.util

    from PIL import Image

    (tmp_path / "net.py").write_text(NET)
    spec = importlib.util.spec_from_file_location("cmp_net", tmp_path / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Net().eval()
    torch.save(net.state_dict(), tmp_path / "a.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    r = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    for i in range(12):
        base = np.sin(xx / (3 + i) + r.uniform(0, 6))[..., None] * r.uniform(0, 1, 3) + np.cos(yy / (2 + i % 5))[..., None]
        a = ((base - base.min()) / np.ptp(base) * 255 + r.normal(0, 20, (40, 48, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(photos / f"p{i:02d}.png")
    return tmp_path, mod, net


def _lm(net, name="net"):
    return LoadedModel(model=net.eval(), name=name, weights="test", crop_size=32, resize_size=36)


def _run(net_a, net_b, photos, **kw):
    req = CompareRequest(images=(str(photos),), picture=False, size=kw.pop("size", "32"), workers=0, **kw)
    return run_compare(req, output=Output(str(photos.parent / "out")), model=_lm(net_a), with_model=_lm(net_b))


def _by_hand(net, photos, *, stage_after: int) -> np.ndarray:
    """features[:stage_after] run by hand on the job's own preprocessing, spatially averaged (n, C)."""
    from cnnviz.jobs.top import batch_preprocess
    from cnnviz.scan import expand_images

    prep = batch_preprocess(_lm(net), size="32", crop=True, max_pixels=None)
    x = torch.from_numpy(np.stack([prep(p)[0] for p in expand_images([str(photos)])]))
    with torch.no_grad():
        for m in list(net.features)[:stage_after]:
            x = m(x.clone())
    return x.double().mean(dim=(2, 3)).numpy()


def _rotated(net, *, scale=1.0, perm=None, seed=1):
    """A copy of ``net`` whose last conv's output channels are mixed by an orthogonal matrix (or permuted) and scaled."""
    import copy

    other = copy.deepcopy(net)
    conv = other.features[5]
    c = conv.out_channels
    if perm is None:
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(c, c)))
        q = torch.from_numpy(q).float()
    else:
        q = torch.eye(c)[perm]
    with torch.no_grad():
        conv.weight.copy_(scale * torch.einsum("ok,kihw->oihw", q, conv.weight))
        conv.bias.copy_(scale * q @ conv.bias)
    return other


@pytest.mark.parametrize("spatial", ["mean", "flatten"])
def test_a_model_against_itself_is_one_on_the_diagonal(world, spatial):
    d, _, net = world
    res = _run(net, net, d / "photos", spatial=spatial, batch_size=4)
    np.testing.assert_allclose(np.diagonal(res.cka), 1.0, atol=1e-6)
    assert res.same_architecture and res.images == 12
    if spatial == "flatten":
        assert res.stderr is not None and np.all(np.diagonal(res.stderr) < 1e-6)


def test_streamed_cka_equals_the_full_batch_reference_on_the_activations(world):
    d, _, net = world
    other = _rotated(net, scale=1.0, seed=3)
    torch.manual_seed(7)
    with torch.no_grad():
        other.features[2].weight.add_(0.3 * torch.randn_like(other.features[2].weight))
    res = _run(net, other, d / "photos", batch_size=5, stage="act")  # 3 batches: 5, 5, 2
    feats_a = [_by_hand(net, d / "photos", stage_after=k) for k in (2, 4, 7)]
    feats_b = [_by_hand(other, d / "photos", stage_after=k) for k in (2, 4, 7)]
    want = np.array([[ref_cka(x, y) for y in feats_b] for x in feats_a])
    np.testing.assert_allclose(res.cka, want, atol=1e-6)


@pytest.mark.parametrize("spatial", ["mean", "flatten"])
@pytest.mark.parametrize("scale", [1.0, 3.5])
def test_cka_is_invariant_to_rotating_and_scaling_one_sides_channels(world, spatial, scale):
    d, _, net = world
    res = _run(net, _rotated(net, scale=scale), d / "photos", stage="conv", spatial=spatial, batch_size=6)
    assert abs(res.cka[2, 2] - 1) < 1e-6
    same = _run(net, net, d / "photos", stage="conv", spatial=spatial, batch_size=6)
    np.testing.assert_allclose(res.cka, same.cka, atol=1e-6)


def test_unit_matching_recovers_a_permutation_of_the_last_conv(world):
    d, _, net = world
    perm = np.random.default_rng(2).permutation(10)
    res = _run(net, _rotated(net, perm=perm), d / "photos", stage="conv")
    last = res.units[2]
    assert last.layer.name == "features.5"
    np.testing.assert_array_equal(perm[last.units.match], np.arange(10))  # B's channel match[c] is A's c
    np.testing.assert_allclose(last.units.corr, 1, atol=1e-6)
    assert last.as_dict()["moved"] == int(np.sum(perm != np.arange(10)))
    ident = _run(net, _rotated(net, perm=perm), d / "photos", stage="conv", same_units=True).units[2]
    np.testing.assert_array_equal(ident.units.match, np.arange(10))


# ---------------------------------------------------------------- the command


def _cmd(d, *extra):
    return ["compare", str(d / "photos"), "-m", f"{d}/net.py:Net", "-w", str(d / "a.pth"), "--with",
            f"{d}/net.py:Net", "--with-weights", str(d / "a.pth"), "-s", "32", "--workers", "0", *extra]


def test_cli_writes_the_heat_map_and_prints_profile_and_json(cli, world):
    from PIL import Image

    d, _, _ = world
    r = cli(*_cmd(d, "-o", str(d / "out"), "--npy"))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    png, npy = lines[0], lines[1]
    assert png.endswith("-cka.png") and npy.endswith("-cka.npy")
    assert Image.open(png).size[0] > 300
    assert np.allclose(np.diagonal(np.load(npy)), 1, atol=1e-6)
    assert sum(ln.startswith("layer ") and "CKA 1.0000" in ln for ln in lines) == 3
    r = cli(*_cmd(d, "-o", str(d / "out2"), "--json", "--no-pictures"))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[-1])
    assert rec["estimator"] == "exact" and rec["images"] == 12 and len(rec["profile"]) == 3
    assert [u["channels"] for u in rec["units"]] == [6, 8, 10]


@pytest.mark.parametrize("extra, fragment", [
    (["--with", "{d}/net.py:Gray", "--with-weights", "none"], "different inputs"),
    (["--with-layer", "nonexistent"], "nonexistent"),
    (["-l", "features.9"], "features.9"),
    (["-l", "7:"], "7:"),
    (["--spatial", "flatten", "-b", "2"], "at least 4"),
    (["--npy", "-o", "-"], "-o DIR"),
])
def test_cli_errors_are_one_line_and_write_nothing(cli, world, extra, fragment):
    d, _, _ = world
    out = [] if "-o" in extra else ["-o", str(d / "nothing")]
    r = cli(*_cmd(d, *[e.format(d=d) for e in extra], *out))
    assert r.exit_code != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnviz: error:") and fragment in err[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (d / "nothing").exists()


def test_cli_too_few_images_is_one_line_and_writes_nothing(cli, world):
    d, _, _ = world
    few = d / "few"
    few.mkdir()
    for p in sorted((d / "photos").iterdir())[:3]:
        (few / p.name).write_bytes(p.read_bytes())
    args = _cmd(d, "-o", str(d / "none"))
    args[1] = str(few)
    r = cli(*args)
    assert r.exit_code == 2 and r.stderr.strip().count("\n") == 0 and "at least 4" in r.stderr, r.stderr
    assert not (d / "none").exists()


def test_cli_no_images_is_one_line_and_writes_nothing(cli, world):
    d, _, _ = world
    args = _cmd(d, "-o", str(d / "nothing"))
    del args[1]
    r = cli(*args)
    assert r.exit_code == 2 and r.stderr.strip().count("\n") == 0 and "no images" in r.stderr, r.stderr
    empty = d / "empty"
    empty.mkdir()
    args[1:1] = [str(empty)]
    r = cli(*args)
    assert r.exit_code != 0 and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (d / "nothing").exists()


def test_the_docs_examples_run(world, tmp_path):
    """Every line of the ```sh blocks of docs/compare.md, run in a folder holding photos/."""
    import os
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "compare.md").read_text()
    lines = [ln for block in re.findall(r"```sh\n(.*?)```", page, re.S) for ln in block.splitlines() if ln.strip()]
    assert len(lines) >= 3
    d, _, _ = world
    env = {**os.environ, "PYTHONPATH": str(root), "CNNVIZ_OFFLINE": "1"}
    outputs = []
    import glob

    for line in lines:
        argv = [hit for a in shlex.split(line)
                for hit in (sorted(glob.glob(str(d / a))) if any(c in a for c in "*?") and glob.glob(str(d / a)) else [a])]
        argv = [sys.executable, "-m", "cnnviz", *argv[1:]] if argv[0] == "cnnviz" else [sys.executable, *argv[1:]]
        r = subprocess.run(argv, cwd=d, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (line, r.stderr)
        assert "Traceback" not in r.stderr
        outputs.append(r.stdout)
    assert sum("CKA 1.0000" in ln for ln in outputs[1].splitlines()) == 26  # a model with itself
    rec = json.loads(outputs[3].splitlines()[-1])
    assert rec["estimator"] == "minibatch" and all(v is not None for row in rec["stderr"] for v in row)
    drift = [ln for ln in outputs[5].splitlines() if ln.startswith("rho ")]  # a model with itself
    assert len(drift) == 12 and all(ln.split()[1] in ("1.000", "n/a") for ln in drift), drift
    assert (d / "report-a" / "compare.html").is_file() and "report-b/channel-" in (d / "report-a" / "compare.html").read_text()


def test_flatten_leaves_out_a_last_minibatch_too_small_for_the_estimator(world):
    d, _, net = world
    res = _run(net, net, d / "photos", spatial="flatten", batch_size=5)  # minibatches of 5, 5 and 2
    assert (res.images, res.dropped) == (10, 2)
    np.testing.assert_allclose(np.diagonal(res.cka), 1.0, atol=1e-6)


def ref_rbf(X: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Kornblith et al. (2019)'s gram_rbf, written out."""
    sq = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * threshold**2 * np.median(sq)))


def test_rbf_kernel_from_the_gram_equals_the_direct_one():
    from cnnviz.compare import rbf_from_gram

    X = np.random.default_rng(6).normal(size=(9, 5)) + 4
    np.testing.assert_allclose(rbf_from_gram((X @ X.T)[None])[0], ref_rbf(X), atol=1e-10)
    np.testing.assert_allclose(rbf_from_gram(centered_gram(X)[None])[0], ref_rbf(X), atol=1e-10)


@pytest.mark.parametrize("spatial", ["mean", "flatten"])
def test_rbf_cka_is_one_against_itself_and_invariant_to_rotation_and_scale(world, spatial):
    d, _, net = world
    res = _run(net, _rotated(net, scale=2.5), d / "photos", stage="conv", kernel="rbf", spatial=spatial, batch_size=6)
    same = _run(net, net, d / "photos", stage="conv", kernel="rbf", spatial=spatial, batch_size=6)
    np.testing.assert_allclose(np.diagonal(same.cka), 1.0, atol=1e-6)
    np.testing.assert_allclose(res.cka, same.cka, atol=1e-6)
    assert res.stderr is not None and res.as_dict()["kernel"] == "rbf"
    # one minibatch of the mean features against the direct formulas
    one = _run(net, net, d / "photos", stage="act", kernel="rbf", spatial="mean", batch_size=12)
    fa = [_by_hand(net, d / "photos", stage_after=k) for k in (2, 4, 7)]
    ks = [ref_rbf(f) for f in fa]
    want = np.array([[ref_hsic1(k, m) / np.sqrt(ref_hsic1(k, k) * ref_hsic1(m, m)) for m in ks] for k in ks])
    np.testing.assert_allclose(one.cka, want, atol=1e-6)


def test_index_draws_the_changed_channels_examples_before_and_after(cli, world):
    from PIL import Image

    d, mod, net = world
    other = _rotated(net, perm=np.random.default_rng(2).permutation(10))
    torch.manual_seed(3)
    with torch.no_grad():
        other.features[5].weight.add_(0.5 * torch.randn_like(other.features[5].weight))
    torch.save(other.state_dict(), d / "b.pth")
    for w, idx in (("a.pth", "idx-a"), ("b.pth", "idx-b")):
        r = cli("top", str(d / "photos"), "-m", f"{d}/net.py:Net", "-w", str(d / w), "-l", "all", "--stage", "act",
                "-s", "32", "--workers", "0", "--index", str(d / idx), "--no-pictures", "--json")
        assert r.exit_code == 0, r.stderr
    base = _cmd(d, "-o", str(d / "out"), "--json", "-k", "4", "-n", "3", "--index", str(d / "idx-a"))
    base[base.index("--with-weights") + 1] = str(d / "b.pth")
    r = cli(*base, "--with-index", str(d / "idx-b"))
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    pic = next(rec for rec in recs if rec.get("kind") == "examples")
    assert Image.open(pic["path"]).size[0] > 400 and len(pic["channels"]) == 4
    result = recs[-1]
    worst = sorted((row["corr"], u["layer"], row["channel"]) for u in result["units"] for row in u["changed_most"]
                   if row["corr"] is not None)[:4]
    assert [(c["layer"], c["channel"]) for c in pic["channels"]] == [(lay, ch) for _, lay, ch in worst]
    # swapped indexes: other weights than the side's model, one line
    r = cli(*base[:base.index("--index")], "--index", str(d / "idx-b"), "--with-index", str(d / "idx-a"))
    assert r.exit_code != 0 and r.stderr.count("\n") == 1 and "other weights" in r.stderr, r.stderr
    r = cli(*base)  # --index alone
    assert r.exit_code != 0 and "--with-index" in r.stderr and r.stderr.count("\n") == 1


def test_cli_refuses_bf16_in_one_line(cli, world):
    d, _, _ = world
    r = cli(*_cmd(d, "--precision", "bf16", "--device", "cpu"))
    assert r.exit_code != 0 and r.stderr.count("\n") == 1, r.stderr
    assert "bfloat16" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------- attribution drift (--cam)


def test_the_maps_rank_correlation_equals_scipys_spearmanr_with_ties():
    from scipy.stats import spearmanr

    from cnnviz.faithfulness import spearman

    r = np.random.default_rng(8)
    a = np.maximum(r.normal(size=(17, 23)), 0)  # a CAM after its ReLU: many tied zeros
    b = np.maximum(a + 0.7 * r.normal(size=a.shape), 0)
    b[:4] = 0.5  # more ties, across rows
    assert abs(spearman(a, b) - spearmanr(a.ravel(), b.ravel()).statistic) < 1e-12
    assert abs(spearman(a, a) - 1) < 1e-12


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_drift_rho_is_scipys_spearman_of_the_two_maps_and_one_against_itself(world, method):
    from scipy.stats import spearmanr

    from cnnviz.cam import default_layer, explain
    from cnnviz.jobs.top import batch_preprocess
    from cnnviz.scan import expand_images

    d, _, net = world
    other = _rotated(net, scale=1.0, seed=5)
    torch.manual_seed(11)
    with torch.no_grad():
        other.features[2].weight.add_(0.4 * torch.randn_like(other.features[2].weight))
        other.fc.weight.add_(0.5 * torch.randn_like(other.fc.weight))
    req = dict(picture=True, cam=method, batch_size=5)
    out = d / f"drift-{method}"
    res = run_compare(CompareRequest(images=(str(d / "photos"),), size="32", workers=0, **req), output=Output(str(out)),
                      model=_lm(net), with_model=_lm(other))
    rows = res.drift["images"]
    assert len(rows) == 12 and len(list(out.glob("*-drift.png"))) == 12
    paths = expand_images([str(d / "photos")])
    prep = batch_preprocess(_lm(net), size="32", crop=True, max_pixels=None)
    x = torch.from_numpy(np.stack([prep(p)[0] for p in paths]))
    top1 = net(x).argmax(1).tolist()
    assert [r["class"] for r in rows] == top1 and {r["class_from"] for r in rows} == {"A's top-1"}
    layers = [default_layer(net)] if method == "gradcam" else None
    ma = explain(net, x, top1, method=method, layers=layers).raw
    mb = explain(other, x, top1, method=method, layers=[default_layer(other)] if layers else None).raw
    checked = 0
    for r, a, b in zip(rows, ma, mb):
        if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant map (a dead CAM) has no ranks: null, as scipy's NaN
            assert r["rho"] is None
            continue
        assert abs(r["rho"] - spearmanr(a.ravel(), b.ravel()).statistic) < 1e-5, r
        checked += 1
    assert checked >= 6 and any(r["rho"] is not None and r["rho"] < 0.99 for r in rows)
    same = run_compare(CompareRequest(images=(str(d / "photos"),), size="32", workers=0, **req),
                       output=Output(str(d / f"same-{method}")), model=_lm(net), with_model=_lm(net))
    assert all(abs(r["rho"] - 1) < 1e-9 for r in same.drift["images"] if r["rho"] is not None)
    assert sum(r["rho"] is not None for r in same.drift["images"]) >= 6


def test_cli_cam_with_a_class_prints_one_line_per_image_and_json(cli, world):
    from PIL import Image

    d, _, _ = world
    r = cli(*_cmd(d, "-o", str(d / "out"), "--cam", "--class", "2"))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    pngs = [ln for ln in lines if "-drift" in ln and ln.endswith(".png")]
    assert len(pngs) == 12 and all("-gradcam-02-drift-cls" in p for p in pngs)
    w, h = Image.open(pngs[0]).size
    assert w > 600 and h > 250
    drift = [ln for ln in lines if ln.startswith("rho ")]
    assert len(drift) == 12 and all(("1.000" in ln or "n/a" in ln) and "class 2" in ln for ln in drift), drift
    assert sum("1.000" in ln for ln in drift) >= 6
    r = cli(*_cmd(d, "-o", str(d / "out2"), "--cam", "--json"))
    rec = json.loads(r.stdout.splitlines()[-1])
    assert rec["drift"]["method"] == "gradcam" and rec["drift"]["layer_a"] == "features"
    assert len(rec["drift"]["images"]) == 12 and rec["drift"]["median_rho"] == 1.0


@pytest.mark.parametrize("extra, fragment", [
    (["--class", "2"], "add --cam"),
    (["-M", "saliency"], "add --cam"),
    (["--cam", "-M", "gradcamm"], "unknown method"),
    (["--cam", "-M", "gradcam,saliency"], "one method"),
    (["--cam", "--no-pictures"], "--no-pictures"),
    (["--cam", "-o", "-"], "-o DIR"),
    (["--cam", "--class", "9"], "out of range"),
])
def test_cli_cam_errors_are_one_line_and_write_nothing(cli, world, extra, fragment):
    d, _, _ = world
    r = cli(*_cmd(d, *extra, *([] if "-o" in extra else ["-o", str(d / "nothing")])))
    assert r.exit_code != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnviz: error:") and fragment in err[0], r.stderr
    assert not (d / "nothing").exists()
