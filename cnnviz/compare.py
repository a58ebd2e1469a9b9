"""Comparing two networks' representations: linear CKA between layers, unit matching between channels.

Pure array work (NumPy, float64): the job (cnnviz/jobs/compare.py) runs the models and feeds the
features here batch by batch; nothing here touches files or models.

Linear CKA (Kornblith et al. 2019) with the unbiased HSIC estimator of Song et al. (2012), as used
by Nguyen, Raghu & Kornblith (2021)::

    HSIC_1(K, L) = [ tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1 ] / (n(n-3))
    CKA(K, L)    = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))

where K~ is the n x n Gram matrix with its diagonal set to zero. For a linear kernel K = X X'
(X: n x C_A features, rows x_i) and L = Y Y' (n x C_B), with a_i = |x_i|^2, b_i = |y_i|^2,
s_X = X'1, s_Y = Y'1 and M = X'Y, every term is a sum over images::

    tr(K~ L~)  = |M|_F^2 - sum_i a_i b_i
    1'K~1      = |s_X|^2 - sum_i a_i              (1'L~1 likewise)
    1'K~L~1    = sum_i (x_i.s_X - a_i)(y_i.s_Y - b_i)
               = s_X' M s_Y - (Y'a).s_Y - (X'b).s_X + sum_i a_i b_i

so :class:`LinearCKA` accumulates M (C_A x C_B per pair of layers), X'X per layer, the vectors
s_X, X'a, Y'a, X'b and the scalars sum a_i, sum a_i^2, sum a_i b_i over batches, and gets the
*exact* full-batch estimate with memory O(C_A x C_B), independent of n. The estimator is
invariant to a translation of the features; features are shifted by their first batch's mean
before accumulating, so the sums do not cancel catastrophically for post-ReLU activations.

Flattened spatial features (C*h*w per image) would make M too large; :class:`MinibatchCKA` is the
minibatch estimator of Nguyen et al. (2021): the mean of HSIC_1 over minibatches in the numerator
and the denominator, with a delta-method standard error from the spread across minibatches. The
same estimator serves RBF CKA (:func:`rbf_from_gram`), whose kernel has no such running sums.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_IMAGES = 4  # HSIC_1 divides by n(n-3) and (n-1)(n-2)


def hsic1_from_gram(K: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Unbiased HSIC of every pair of Gram matrices: K (P, n, n), L (Q, n, n) -> (P, Q) float64.
    n >= 4. The diagonals are ignored (the estimator zeroes them)."""
    K = np.asarray(K, np.float64).copy()
    L = np.asarray(L, np.float64).copy()
    n = K.shape[-1]
    if n < MIN_IMAGES:
        raise ValueError(f"unbiased HSIC needs at least {MIN_IMAGES} samples, got {n}")
    i = np.arange(n)
    K[:, i, i] = 0.0
    L[:, i, i] = 0.0
    trace = np.einsum("pij,qij->pq", K, L)
    k1, l1 = K.sum(axis=2), L.sum(axis=2)  # K~1 (P, n), L~1 (Q, n)
    sk, sl = k1.sum(axis=1), l1.sum(axis=1)
    cross = k1 @ l1.T
    return (trace + np.outer(sk, sl) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def _hsic_from_sums(n: int, m: np.ndarray, sx: np.ndarray, sy: np.ndarray, ya: np.ndarray, xb: np.ndarray,
                    sa: float, sb: float, sab: float) -> float:
    """HSIC_1 of linear kernels from the running sums (see the module docstring)."""
    trace = float(np.sum(m * m)) - sab
    sk = float(sx @ sx) - sa
    sl = float(sy @ sy) - sb
    cross = float(sx @ m @ sy) - float(ya @ sy) - float(xb @ sx) + sab
    return (trace + sk * sl / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


class _Side:
    """One network's per-layer sums: shift c, s_X, X'X, X'a, sum a, sum a^2."""

    def __init__(self, channels: Sequence[int]):
        self.channels = list(channels)
        self.shift: list[np.ndarray | None] = [None] * len(channels)
        self.s = [np.zeros(c) for c in channels]
        self.g = [np.zeros((c, c)) for c in channels]
        self.xa = [np.zeros(c) for c in channels]
        self.sa = np.zeros(len(channels))
        self.saa = np.zeros(len(channels))

    def prepare(self, feats: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Shifted features (n, C) float64 and their squared row norms a (n,), per layer."""
        xs, norms = [], []
        for i, f in enumerate(feats):
            x = np.asarray(f, np.float64)
            if x.ndim != 2 or x.shape[1] != self.channels[i]:
                raise ValueError(f"layer {i}: features of shape {x.shape}, expected (n, {self.channels[i]})")
            if self.shift[i] is None:
                self.shift[i] = x.mean(axis=0)
            x = x - self.shift[i]
            xs.append(x)
            norms.append(np.einsum("ij,ij->i", x, x))
        return xs, norms

    def add(self, xs: Sequence[np.ndarray], norms: Sequence[np.ndarray]) -> None:
        for i, (x, a) in enumerate(zip(xs, norms)):
            self.s[i] += x.sum(axis=0)
            self.g[i] += x.T @ x
            self.xa[i] += x.T @ a
            self.sa[i] += a.sum()
            self.saa[i] += a @ a

    def self_hsic(self, n: int, i: int) -> float:
        return _hsic_from_sums(n, self.g[i], self.s[i], self.s[i], self.xa[i], self.xa[i], self.sa[i], self.sa[i],
                               self.saa[i])

    def moments(self, n: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean (of the shifted features) and variance per channel."""
        mean = self.s[i] / n
        return mean, np.diag(self.g[i]) / n - mean * mean


class LinearCKA:
    """Exact streaming linear CKA between layers of A (channels ``channels_a``) and of B.

    ``pairs``: the (i, j) layer pairs to accumulate (default: all, the full matrix). Feed batches
    with :meth:`update` (the same images, in the same order, on both sides); :meth:`matrix` gives
    the (len(A), len(B)) CKA (NaN for pairs not accumulated or a layer with constant features),
    :meth:`correlation` the channel-by-channel Pearson correlation of a pair over the images."""

    def __init__(self, channels_a: Sequence[int], channels_b: Sequence[int], *,
                 pairs: Sequence[tuple[int, int]] | None = None):
        self.a, self.b = _Side(channels_a), _Side(channels_b)
        self.pairs = list(pairs) if pairs is not None else [(i, j) for i in range(len(channels_a))
                                                           for j in range(len(channels_b))]
        self.m = {p: np.zeros((channels_a[p[0]], channels_b[p[1]])) for p in self.pairs}
        self.ya = {p: np.zeros(channels_b[p[1]]) for p in self.pairs}
        self.xb = {p: np.zeros(channels_a[p[0]]) for p in self.pairs}
        self.sab = {p: 0.0 for p in self.pairs}
        self.n = 0

    def update(self, feats_a: Sequence[np.ndarray], feats_b: Sequence[np.ndarray]) -> None:
        """One batch: per layer of A its features (n, C_A), per layer of B (n, C_B), rows = images."""
        xs, an = self.a.prepare(feats_a)
        ys, bn = self.b.prepare(feats_b)
        rows = {x.shape[0] for x in (*xs, *ys)}
        if len(rows) != 1:
            raise ValueError(f"every layer must have the same images in a batch, got row counts {sorted(rows)}")
        self.a.add(xs, an)
        self.b.add(ys, bn)
        for (i, j) in self.pairs:
            x, y, a, b = xs[i], ys[j], an[i], bn[j]
            self.m[(i, j)] += x.T @ y
            self.ya[(i, j)] += y.T @ a
            self.xb[(i, j)] += x.T @ b
            self.sab[(i, j)] += float(a @ b)
        self.n += rows.pop()

    def hsic(self, i: int, j: int) -> float:
        p = (i, j)
        return _hsic_from_sums(self.n, self.m[p], self.a.s[i], self.b.s[j], self.ya[p], self.xb[p], self.a.sa[i],
                               self.b.sa[j], self.sab[p])

    def matrix(self) -> np.ndarray:
        if self.n < MIN_IMAGES:
            raise ValueError(f"unbiased HSIC needs at least {MIN_IMAGES} images, got {self.n}")
        out = np.full((len(self.a.channels), len(self.b.channels)), np.nan)
        ka = [self.a.self_hsic(self.n, i) for i in range(len(self.a.channels))]
        kb = [self.b.self_hsic(self.n, j) for j in range(len(self.b.channels))]
        for (i, j) in self.pairs:
            den = ka[i] * kb[j]
            out[i, j] = self.hsic(i, j) / np.sqrt(den) if den > 0 else np.nan
        return out

    def correlation(self, i: int, j: int) -> np.ndarray:
        """(C_A, C_B) Pearson correlation over the images between channel c of A's layer i and
        channel d of B's layer j (NaN where a channel is constant)."""
        ma, va = self.a.moments(self.n, i)
        mb, vb = self.b.moments(self.n, j)
        cov = self.m[(i, j)] / self.n - np.outer(ma, mb)
        den = np.sqrt(np.outer(np.clip(va, 0, None), np.clip(vb, 0, None)))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(den > 1e-12 * (1 + np.abs(cov)), cov / den, np.nan)
        return np.clip(corr, -1.0, 1.0)


class MinibatchCKA:
    """The minibatch CKA estimator of Nguyen, Raghu & Kornblith (2021): per minibatch of at least
    4 images, HSIC_1 of every pair of layers and of each layer with itself; the estimate is
    mean(HSIC_ab) / sqrt(mean(HSIC_aa) mean(HSIC_bb)). Its expectation is not the full-batch CKA
    (a ratio of means, and the minibatches are samples): :meth:`stderr` is the delta-method
    standard error of the estimate from the spread of the k minibatch terms (NaN for k < 2)."""

    def __init__(self, layers_a: int, layers_b: int):
        self.la, self.lb = layers_a, layers_b
        z = lambda *s: np.zeros(s)  # noqa: E731
        self.k = 0
        self.n = 0
        self.ab, self.ab2 = z(layers_a, layers_b), z(layers_a, layers_b)
        self.aa, self.aa2 = z(layers_a), z(layers_a)
        self.bb, self.bb2 = z(layers_b), z(layers_b)
        self.ab_aa, self.ab_bb, self.aa_bb = z(layers_a, layers_b), z(layers_a, layers_b), z(layers_a, layers_b)

    def update(self, grams_a: np.ndarray, grams_b: np.ndarray) -> None:
        """One minibatch: Gram matrices (L_A, n, n) and (L_B, n, n) of the same n >= 4 images."""
        h = hsic1_from_gram(grams_a, grams_b)
        ha = np.diagonal(hsic1_from_gram(grams_a, grams_a)).copy()
        hb = np.diagonal(hsic1_from_gram(grams_b, grams_b)).copy()
        self.k += 1
        self.n += grams_a.shape[-1]
        self.ab += h
        self.ab2 += h * h
        self.aa += ha
        self.aa2 += ha * ha
        self.bb += hb
        self.bb2 += hb * hb
        self.ab_aa += h * ha[:, None]
        self.ab_bb += h * hb[None, :]
        self.aa_bb += np.outer(ha, hb)

    def matrix(self) -> np.ndarray:
        if self.k < 1:
            raise ValueError(f"no minibatch of at least {MIN_IMAGES} images")
        den = np.outer(self.aa, self.bb) / self.k**2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (self.ab / self.k) / np.sqrt(np.where(den > 0, den, 1)), np.nan)

    def stderr(self) -> np.ndarray:
        """Delta-method standard error of :meth:`matrix` (NaN with fewer than 2 minibatches)."""
        k = self.k
        if k < 2:
            return np.full((self.la, self.lb), np.nan)
        ma, mb, mab = self.aa / k, self.bb / k, self.ab / k
        cov = lambda sxy, mx, my: (sxy - k * mx * my) / (k - 1)  # noqa: E731
        v_ab = cov(self.ab2, mab, mab)
        v_aa = cov(self.aa2, ma, ma)[:, None]
        v_bb = cov(self.bb2, mb, mb)[None, :]
        c_ab_aa = cov(self.ab_aa, mab, ma[:, None])
        c_ab_bb = cov(self.ab_bb, mab, mb[None, :])
        c_aa_bb = cov(self.aa_bb, ma[:, None], mb[None, :])
        A, B = ma[:, None], mb[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = mab / np.sqrt(A * B)
            g_ab, g_aa, g_bb = 1 / np.sqrt(A * B), -r / (2 * A), -r / (2 * B)
            var = (g_ab**2 * v_ab + g_aa**2 * v_aa + g_bb**2 * v_bb + 2 * g_ab * g_aa * c_ab_aa
                   + 2 * g_ab * g_bb * c_ab_bb + 2 * g_aa * g_bb * c_aa_bb) / k
        return np.sqrt(np.clip(var, 0, None))


def centered_gram(features: np.ndarray) -> np.ndarray:
    """Linear-kernel Gram matrix (n, n) float64 of features (n, D), centred over the n rows first
    (HSIC_1 is translation invariant; centring keeps float32 products small)."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    return x @ x.T


def rbf_from_gram(gram: np.ndarray, *, threshold: float = 1.0) -> np.ndarray:
    """RBF kernel matrices from linear Gram matrices (..., n, n) of the same features:
    K_ij = exp(-|x_i - x_j|^2 / (2 threshold^2 m)), m = the median squared distance of the n x n
    matrix (diagonal included), as in Kornblith et al. (2019)'s code. The bandwidth is each
    matrix's own, so with minibatches it is each minibatch's. All zeros -> all ones."""
    g = np.asarray(gram, np.float64)
    d = np.diagonal(g, axis1=-2, axis2=-1)
    sq = np.clip(d[..., :, None] + d[..., None, :] - 2 * g, 0, None)
    med = np.median(sq.reshape(*sq.shape[:-2], -1), axis=-1)[..., None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(med > 0, np.exp(-sq / (2 * threshold**2 * np.where(med > 0, med, 1))), 1.0)


# ---------------------------------------------------------------- unit matching


@dataclass(frozen=True)
class UnitMatch:
    """Channel c of A matched to channel ``match[c]`` of B with correlation ``corr[c]`` (NaN: a
    constant channel on either side); ``identity[c]``: the correlation of c with B's channel c."""

    match: np.ndarray
    corr: np.ndarray
    identity: np.ndarray

    def changed_most(self, k: int | None = None) -> list[int]:
        """Channels of A by matched correlation, lowest first (NaN last)."""
        order = sorted(range(len(self.corr)), key=lambda c: (np.isnan(self.corr[c]), self.corr[c], c))
        return order if k is None else order[:k]


def match_units(corr: np.ndarray, *, same_units: bool = False) -> UnitMatch:
    """Match A's channels (rows of ``corr``, (C_A, C_B)) to B's: the assignment maximising the total
    correlation (Hungarian, scipy.optimize.linear_sum_assignment; NaN counts as 0), or the identity
    with ``same_units``. C_A > C_B leaves channels unmatched: match -1, corr NaN."""
    corr = np.asarray(corr, np.float64)
    ca, cb = corr.shape
    diag = np.full(ca, np.nan)
    diag[: min(ca, cb)] = np.diagonal(corr)[: min(ca, cb)]
    match = np.full(ca, -1, np.int64)
    if same_units:
        match[: min(ca, cb)] = np.arange(min(ca, cb))
    else:
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError:
            from .errors import UsageError

            raise UsageError("unit matching needs scipy: pip install 'cnnviz[compare]' (or pass --same-units)") from None

        rows, cols = linear_sum_assignment(-np.nan_to_num(corr, nan=0.0))
        match[rows] = cols
    got = np.array([corr[c, match[c]] if match[c] >= 0 else np.nan for c in range(ca)])
    return UnitMatch(match=match, corr=got, identity=diag)


def same_architecture(a: Sequence[tuple[str, int]], b: Sequence[tuple[str, int]]) -> bool:
    """Whether two selections are the same layers: the same (name, channels) in the same order."""
    return list(a) == list(b)


def pairs_of(names_a: Sequence[str], names_b: Sequence[str]) -> list[tuple[int, int]]:
    """(i, j) of the layers with the same name on both sides."""
    where: Mapping[str, int] = {n: j for j, n in enumerate(names_b)}
    return [(i, where[n]) for i, n in enumerate(names_a) if n in where]


__all__ = ["MIN_IMAGES", "LinearCKA", "MinibatchCKA", "UnitMatch", "centered_gram", "hsic1_from_gram", "match_units",
           "pairs_of", "rbf_from_gram", "same_architecture"]
