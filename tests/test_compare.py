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
