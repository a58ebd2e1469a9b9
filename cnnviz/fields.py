"""Empirical receptive fields, measured by running the model (cnnviz.rf has the static arithmetic):
where a channel peaks for an image, the effective receptive field (|d unit / d input| by
backprop through the captured layer) and the size of the square holding most of its mass.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .capture import Capture, capture, hook_points
from .util import device_of, layer_names

__all__ = ["peak_units", "effective_fields", "mass_square"]


def peak_units(model: nn.Module, x: torch.Tensor, layers: Sequence[Any], channels: Sequence[Sequence[int]]) -> list[list[tuple[tuple[int, int], float]]]:
    """For each layer (ConvLayer or name) and each of its ``channels``: the unit (i, j) where that
    channel's conv output peaks for the single image ``x`` (1, 3, H, W), with the peak value.
    One forward pass, hooks only on ``layers``, stopped after the last of them."""
    names = layer_names(layers)
    maps = capture(model, x, names)
    out = []
    for n, chans in zip(names, channels):
        m = maps[n][0]
        row = []
        for c in chans:
            flat = int(torch.argmax(m[c]))
            w = m.shape[-1]
            row.append(((flat // w, flat % w), float(m[c].flatten()[flat])))
        out.append(row)
    return out


def effective_fields(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[tuple[Any, tuple[int, int], int | None]],
) -> list[np.ndarray]:
    """Empirical (effective) receptive fields: for each (layer, unit (i, j), channel or None) the
    mean over the batch ``x`` (N, 3, H, W) of |d output / d input|, summed over RGB, as (H, W)
    float32 >= 0. The output is the conv output at ``unit``: one channel, or the sum over all
    channels when None. One forward pass with grad for every target layer (stopped after the last),
    one backward per target; the model's parameters are left untouched."""
    names = layer_names(t[0] for t in targets)
    points = hook_points(model, list(dict.fromkeys(names)), "conv")
    by_name = dict(zip(dict.fromkeys(names), points))
    xg = x.detach().to(device_of(model), torch.float32, copy=True).requires_grad_(True)
    with Capture(model, points, grad=True) as cap:
        outs = cap.run(xg)
    result = []
    for k, (name, (i, j), channel) in enumerate(zip(names, [t[1] for t in targets], [t[2] for t in targets])):
        o = outs[by_name[name]]
        sel = o[:, :, i, j] if channel is None else o[:, channel, i, j]
        (g,) = torch.autograd.grad(sel.sum(), xg, retain_graph=k < len(targets) - 1)
        result.append(g.abs().sum(1).mean(0).detach().cpu().numpy().astype(np.float32))
    return result


def mass_square(grad: np.ndarray, center: tuple[float, float], *, mass: float = 0.95) -> int:
    """Side (px) of the smallest square centred at ``center`` (y, x) that holds ``mass`` of the
    non-negative (H, W) map ``grad`` (the effective receptive field's size); 0 for an all-zero map."""
    g = np.asarray(grad, dtype=np.float64)
    total = g.sum()
    if total <= 0:
        return 0
    h, w = g.shape
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    # Chebyshev distance of each pixel centre to the centre: a square of side s holds distance <= (s-1)/2
    d = np.maximum(np.abs(ys - center[0]), np.abs(xs - center[1]))
    order = np.argsort(d, axis=None, kind="stable")
    cum = np.cumsum(g.ravel()[order])
    k = int(np.searchsorted(cum, mass * total))
    r = d.ravel()[order][min(k, cum.size - 1)]
    return int(round(2 * r + 1))
