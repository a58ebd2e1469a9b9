"""cnnviz.faithfulness against independent computations: scipy's Spearman, skimage's SSIM, a
hand-run RISE deletion/insertion loop, the papers' formulas for average drop/increase."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnviz import faithfulness as fa


def _hand_curve(model, x, target, sal, mode, steps):
    """Petsiuk et al.'s loop (RISE's CausalMetric.single_run), one image at a time."""
    h, w = x.shape[-2:]
    per = -(-h * w // steps)
    order = np.argsort(-sal.ravel(), kind="stable")
    if mode == "deletion":
        start, finish = x.clone(), torch.zeros_like(x)
    else:
        start, finish = fa.blur(x[None])[0], x.clone()
    probs = []
    for i in range(steps + 1):
        with torch.no_grad():
            probs.append(float(torch.softmax(model(start[None]), 1)[0, target]))
        if i < steps:
            coords = order[per * i:per * (i + 1)]
            s, f = start.reshape(3, -1), finish.reshape(3, -1)
            s[:, coords] = f[:, coords]
    return np.array(probs)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_causal_curve_equals_the_rise_loop(tiny_vgg, mode):
    x = torch.randn(3, 12, 10, generator=torch.Generator().manual_seed(0))
    sal = np.random.default_rng(1).random((12, 10)).astype(np.float32)
    got = fa.causal_curve(tiny_vgg, x, 2, sal, mode=mode, steps=7, batch_size=3)
    ref = _hand_curve(tiny_vgg, x, 2, sal, mode, 7)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got.shape == (8,)


def test_auc_is_the_normalised_trapezoid():
    assert fa.auc(np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert fa.auc(np.array([0.2, 0.4, 0.6, 0.8])) == pytest.approx(np.trapezoid([0.2, 0.4, 0.6, 0.8], dx=1 / 3))


def test_rise_kernel_is_normalised_and_symmetric():
    k = fa.gaussian_kernel(11, 5)
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])


def test_spearman_and_ssim_equal_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    for shape in [(20, 24), (13, 11), (56, 56)]:
        a = rng.random(shape)
        b = np.clip(a + rng.normal(0, 0.3, shape), 0, 1)
        b[:3, :3] = 0.5  # ties
        assert fa.spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
        ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert fa.ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert fa.ssim(a, a) == pytest.approx(1.0)
    assert np.isnan(fa.spearman(np.ones((4, 4)), a[:4, :4]))


def test_confidence_change_follows_the_paper(tiny_vgg):
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(3))
    maps = np.random.default_rng(2).random((2, 12, 10)).astype(np.float32)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    drop, inc = fa.confidence_change(tiny_vgg, x, [1, 4], maps, mean=mean, std=std)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for i, t in enumerate([1, 4]):
        pixels = x[i] * s + m
        e = (pixels * torch.from_numpy(maps[i]) - m) / s
        with torch.no_grad():
            p = float(torch.softmax(tiny_vgg(x[i:i + 1]), 1)[0, t])
            pe = float(torch.softmax(tiny_vgg(e[None]), 1)[0, t])
        assert drop[i] == pytest.approx(max(0.0, p - pe) / p, rel=1e-5, abs=1e-7)
        assert inc[i] == float(pe > p)


def test_cascading_randomisation_copies_the_model_and_goes_top_down(tiny_vgg):
    before = {k: v.clone() for k, v in tiny_vgg.state_dict().items()}
    steps = fa.randomization_steps(tiny_vgg)
    assert [label for label, _ in steps] == ["fc", "features.5", "features.2", "features.0"]
    x = torch.randn(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    seen = []

    def compute(model):
        seen.append(model)
        with torch.no_grad():
            a = model.features(x)[0, 0].numpy()
        return ((a - a.min()) / (a.max() - a.min() + 1e-12))[None]

    original, out = fa.cascading_randomization(tiny_vgg, compute, seed=1)
    assert [s.label for s in out] == ["fc", "features.5", "features.2", "features.0"]
    # fc does not change the features: identical map; the conv layers do.
    assert out[0].spearman[0] == pytest.approx(1.0) and out[0].ssim[0] == pytest.approx(1.0)
    assert out[1].spearman[0] < 0.99
    assert seen[0] is tiny_vgg and all(m is not tiny_vgg for m in seen[1:])
    for k, v in tiny_vgg.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_randomisation_groups_deep_models_by_block():
    from cnnviz.models import build_meta_model

    steps = fa.randomization_steps(build_meta_model("resnet50"))
    labels = [label for label, _ in steps]
    assert labels[0] == "fc" and labels[1] == "layer4.2" and labels[-1] == "conv1" and len(labels) <= 20
