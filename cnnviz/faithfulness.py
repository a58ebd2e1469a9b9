"""Is a heat map faithful to the model? Perturbation metrics and the randomisation sanity check.

* Deletion / insertion (Petsiuk et al. 2018, RISE): pixels are removed from the image (replaced
  by zero in the normalised input: the dataset's mean colour) or inserted into a blurred copy, in
  the order of the map, most salient first; the class probability is tracked and its curve's
  area (trapezoid, x in [0, 1]) reported. Faithful maps: low deletion AUC, high insertion AUC.
* Average drop / increase in confidence (Chattopadhay et al. 2018): the class probability of the
  image multiplied by the [0, 1] map (in pixel space: a black image where the map is zero)
  against the image's own; drop = max(0, p - p_masked) / p, increase = p_masked > p.
* Cascading randomisation (Adebayo et al. 2018): the layers holding parameters are re-initialised
  from the top (logits) down, cumulatively, and each time the map is recomputed and compared to
  the original by Spearman rank correlation and SSIM. A map that stays similar while the
  model is destroyed does not explain the model.

Pure NumPy for the comparisons (spearman, ssim); the model runs in batches under inference mode.
"""
from __future__ import annotations

import copy
from math import erf, sqrt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError
from .util import eval_mode

# ---------------------------------------------------------------- deletion / insertion


def gaussian_kernel(klen: int = 11, nsig: float = 5.0) -> np.ndarray:
    """RISE's blur kernel (klen, klen) float32: the normal CDF's differences over [-nsig, nsig]."""
    edges = np.linspace(-nsig, nsig, klen + 1)
    cdf = np.array([0.5 * (1 + erf(e / sqrt(2))) for e in edges])
    k1 = np.diff(cdf)
    k = np.outer(k1, k1)
    return (k / k.sum()).astype(np.float32)


def blur(x: torch.Tensor, *, klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """(N, C, H, W) blurred channel by channel with RISE's kernel (zero padding, as RISE)."""
    k = torch.from_numpy(gaussian_kernel(klen, nsig)).to(x)
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, klen, klen), padding=klen // 2, groups=c)


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced x in [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    if c.size < 2:
        raise ValueError("a curve needs at least two points")
    return float((c.sum() - c[0] / 2 - c[-1] / 2) / (c.size - 1))


def _probs(model: nn.Module, x: torch.Tensor, target: int, batch_size: int, probabilities: bool = False) -> np.ndarray:
    out = []
    with eval_mode(model), torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            y = model(x[s:s + batch_size]).float()
            out.append((y if probabilities else torch.softmax(y, dim=1))[:, target])
    return torch.cat(out).cpu().numpy().astype(np.float64)


def causal_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    saliency: np.ndarray,
    *,
    mode: str = "deletion",
    steps: int = 100,
    batch_size: int = 32,
    probabilities: bool = False,
) -> np.ndarray:
    """``probabilities``: ``model`` outputs probabilities itself (a segmentation scorer's mean
    class probability over a region), else logits, softmaxed.
    Class probability (steps + 1,) as pixels of ``x`` (3, H, W) are deleted (set to zero) or
    inserted (into ``blur(x)``) in decreasing order of ``saliency`` (H, W), ceil(H*W / steps) per
    step; point 0 is the untouched start, the last the fully deleted/inserted image."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', not {mode!r}")
    if steps < 1:
        raise UsageError(f"metric steps must be at least 1, not {steps}")
    h, w = x.shape[-2:]
    s = np.asarray(saliency, dtype=np.float32)
    if s.shape != (h, w):
        raise ValueError(f"saliency {s.shape} does not match the input {(h, w)}")
    per = -(-h * w // steps)
    order = torch.from_numpy(np.argsort(-s.ravel(), kind="stable").copy()).to(x.device)
    rank = torch.empty(h * w, dtype=torch.long, device=x.device)
    rank[order] = torch.arange(h * w, device=x.device)
    rank = rank.view(1, 1, h, w)
    if mode == "deletion":
        start, finish = x[None], torch.zeros_like(x)[None]
    else:
        start, finish = blur(x[None]), x[None]
    counts = torch.arange(steps + 1, device=x.device).clamp(max=-(-h * w // per)) * per
    changed = rank < counts.view(-1, 1, 1, 1)  # (steps + 1, 1, H, W)
    batch = torch.where(changed, finish, start)
    return _probs(model, batch, int(target), batch_size, probabilities)


# ---------------------------------------------------------------- average drop / increase


def explanation_input(x: torch.Tensor, maps01: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The image times the map, in pixel space, renormalised: (N, 3, H, W) from ``x`` (N, 3, H, W)
    normalised with ``mean``/``std`` and ``maps01`` (N, H, W) in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return ((x * sd + m) * maps01[:, None].to(x) - m) / sd


def confidence_change(model: nn.Module, x: torch.Tensor, targets: Sequence[int], maps01: np.ndarray, *,
                      mean: Sequence[float], std: Sequence[float], batch_size: int = 32,
                      probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: (drop, increase): drop = max(0, p - p_e) / p (a fraction; the paper's "average
    drop %" is 100 x its mean) and increase = 1.0 if p_e > p else 0.0, with p the target class
    probability of x and p_e that of explanation_input."""
    t = torch.as_tensor(list(targets), dtype=torch.long, device=x.device)
    e = explanation_input(x, torch.from_numpy(np.asarray(maps01, dtype=np.float32)).to(x.device), mean=mean, std=std)
    with eval_mode(model), torch.inference_mode():
        p, pe = [], []
        for s in range(0, x.shape[0], batch_size):
            sl = slice(s, s + batch_size)
            y, ye = model(x[sl]).float(), model(e[sl]).float()
            if not probabilities:  # logits
                y, ye = torch.softmax(y, 1), torch.softmax(ye, 1)
            p.append(y.gather(1, t[sl, None])[:, 0])
            pe.append(ye.gather(1, t[sl, None])[:, 0])
    pv, pev = torch.cat(p).cpu().numpy().astype(np.float64), torch.cat(pe).cpu().numpy().astype(np.float64)
    drop = np.maximum(0.0, pv - pev) / np.where(pv > 0, pv, 1.0)
    return drop, (pev > pv).astype(np.float64)


# ---------------------------------------------------------------- comparing two maps


def rankdata(a: np.ndarray) -> np.ndarray:
    """1-based ranks of the flattened ``a``, ties get their average rank (scipy's 'average')."""
    _, inv, counts = np.unique(np.asarray(a, dtype=np.float64).ravel(), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inv.ravel()]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape; NaN when either is constant."""
    ra, rb = rankdata(a), rankdata(b)
    if ra.size != rb.size:
        raise ValueError("maps differ in size")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _gauss_filter(a: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, radius, mode="symmetric")  # scipy.ndimage's 'reflect'
    rows = sum(k[i] * p[i:i + a.shape[0], :] for i in range(k.size))
    return sum(k[i] * rows[:, i:i + a.shape[1]] for i in range(k.size))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W) maps: Gaussian window (sigma 1.5,
    radius 3.5 sigma), K1 0.01, K2 0.03, population covariances, the mean over the interior (the
    border half-window excluded): skimage's structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two (H, W) maps of one shape, got {x.shape} and {y.shape}")
    radius = int(3.5 * sigma + 0.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _gauss_filter(x, sigma, radius), _gauss_filter(y, sigma, radius)
    vx = _gauss_filter(x * x, sigma, radius) - mx * mx
    vy = _gauss_filter(y * y, sigma, radius) - my * my
    cxy = _gauss_filter(x * y, sigma, radius) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = radius
    inner = s[pad:s.shape[0] - pad, pad:s.shape[1] - pad]
    return float((inner if inner.size else s).mean())


# ---------------------------------------------------------------- cascading randomisation


def randomization_steps(model: nn.Module, *, max_steps: int = 20) -> list[tuple[str, list[str]]]:
    """The modules re-initialised at each depth of the cascade, top (output side) first:
    [(label, module names)]. Units are the leaf modules with parameters and a reset_parameters()
    (conv, linear, norm layers), in reverse definition order; when there are more than
    ``max_steps`` they are grouped by their name's prefix at the deepest level giving at most
    ``max_steps`` groups (ResNet-50: fc, layer4.2, layer4.1, ...)."""
    leaves = [n for n, m in model.named_modules()
              if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")]
    if not leaves:
        raise UsageError("the model has no layers with parameters to randomise")
    leaves = leaves[::-1]
    best: list[tuple[str, list[str]]] = [(n, [n]) for n in leaves]
    if len(best) > max_steps:
        depth = max(n.count(".") for n in leaves) + 1
        for d in range(depth, 0, -1):
            groups: dict[str, list[str]] = {}
            for n in leaves:
                groups.setdefault(".".join(n.split(".")[:d]), []).append(n)
            if len(groups) <= max_steps:
                best = list(groups.items())
                break
    return best


@dataclass
class SanityStep:
    """One depth of the cascade: ``label`` (the last group randomised), the maps (N, H, W) in
    [0, 1] and their Spearman/SSIM to the original maps (one value per pair)."""

    label: str
    maps: np.ndarray
    spearman: list[float]
    ssim: list[float]


def cascading_randomization(
    model: nn.Module,
    compute: Callable[[nn.Module], np.ndarray],
    *,
    seed: int = 0,
    max_steps: int = 20,
) -> tuple[np.ndarray, list[SanityStep]]:
    """(original maps, steps): ``compute(model)`` -> (N, H, W) maps in [0, 1], evaluated on the
    intact model and after each cumulative re-initialisation (randomization_steps) of a copy of
    ``model`` (the caller's model is never changed). Parameters are re-drawn with each module's
    own reset_parameters() under ``seed``."""
    original = np.asarray(compute(model), dtype=np.float32)
    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    out: list[SanityStep] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for label, names in randomization_steps(work, max_steps=max_steps):
            for n in names:
                modules[n].reset_parameters()  # type: ignore[operator]
            maps = np.asarray(compute(work), dtype=np.float32)
            out.append(SanityStep(
                label=label,
                maps=maps,
                spearman=[spearman(a, b) for a, b in zip(original, maps)],
                ssim=[ssim(a, b) for a, b in zip(original, maps)],
            ))
    return original, out
