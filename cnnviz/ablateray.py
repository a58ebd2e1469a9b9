"""`cnnviz ablate --engine ray`: the blocks of a :class:`cnnviz.ablate.Sweep` as Ray tasks.

The driver reads the images and runs them up to the layer once (the intact scores, the labels,
the mean for mean-ablation), as a local run does; it then puts the model and the preprocessed
image batches into the object store. An actor pool (one model copy per actor) runs the images up
to the layer once per actor and then measures whole blocks of ablations, the same code as a local
run; the driver saves each block the moment it comes back (cnnviz.ablatestore.Parts), so an
interrupted Ray run resumes like a local one, locally or on Ray. The image batches travel through
the object store: a set too large for it is a case for ``--shard`` on several machines instead.

``ray.init(address="auto")`` joins a running cluster; without one, a local instance is started
(cnnviz.rayscan.connect, as ``top --engine ray``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .ablate import LayerSplit, Sweep
from .capture import HookPoint
from .errors import CnnvizError
from .rayscan import _ray, connect, reraise

Say = Callable[[str], None]


class _BlockActor:
    """Holds the model and the image batches (labels resolved), cut once at the layer; each
    call measures one block of ablations."""

    def __init__(self, model: Any, point: HookPoint, batches: Any, fill: torch.Tensor | None, threads: int):
        import ray

        torch.set_num_threads(max(1, threads))
        net: nn.Module = model if isinstance(model, nn.Module) else ray.get(model)
        data = batches if isinstance(batches, list) else ray.get(batches)
        self.sweep = Sweep(LayerSplit(net, point), lambda: iter(data), keep_bytes=1 << 62)
        self.sweep.prepare()
        self.sweep.fill = fill

    def block(self, b: int, sets: list[list[int]]) -> tuple[int, dict[str, np.ndarray], bool]:
        return b, self.sweep.block(sets).arrays(), self.sweep.split.traced


def _by_value(ray: Any, model: nn.Module) -> None:
    """A model class from a user's file (``-m net.py:Net``) lives in a module the workers cannot
    import: send its code along with the model."""
    import sys

    for cls in {type(m) for m in model.modules()}:
        mod = sys.modules.get(cls.__module__)
        if mod is not None and mod.__name__.startswith("cnnviz_user_"):
            ray.cloudpickle.register_pickle_by_value(mod)


def ray_blocks(model: nn.Module, point: HookPoint, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
               fill: torch.Tensor | None, work: Sequence[tuple[int, list[list[int]]]], *,
               on_block: Callable[[int, dict[str, np.ndarray]], None], traced: bool, actors: int | None = None,
               say: Say = lambda s: None) -> None:
    """Measure each (block number, ablations) of ``work`` on Ray; ``on_block`` gets each block's
    arrays as it finishes (in any order). ``batches``: (x, labels) with labels resolved (no -1)."""
    if not work:
        return
    ray = _ray()
    connect(ray, lambda s: say(s.replace("top:", "ablate:", 1)))
    from ray.util import ActorPool

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = actors or max(1, min(len(work), cpus // 2 if cpus >= 4 else cpus))
    threads = max(1, cpus // n)
    cpu_batches = [(x.detach().cpu(), y.detach().cpu()) for x, y in batches]
    if next(model.parameters(), torch.empty(0)).device.type != "cpu":
        import copy

        model = copy.deepcopy(model).cpu()  # the actors run on CPUs; the driver's model stays where it is
    _by_value(ray, model)
    model_ref = ray.put(model)
    data_ref = ray.put(cpu_batches)
    remote = ray.remote(num_cpus=threads, max_restarts=0)(_BlockActor)
    pool = ActorPool([remote.remote(model_ref, point, data_ref, None if fill is None else fill.detach().cpu(), threads)
                      for _ in range(n)])
    say(f"ablate: {len(work)} block(s) on {n} Ray actor(s) of {threads} CPU(s) each")
    try:
        for b, arrays, same in pool.map_unordered(lambda a, w: a.block.remote(*w), list(work)):
            if same != traced:
                raise CnnvizError("a Ray actor's network cut at the layer differs from the driver's "
                                  "(traced tail on one side, whole network on the other); run with --engine local")
            on_block(b, arrays)
    except Exception as exc:
        reraise(exc, "the Ray run")


__all__ = ["ray_blocks"]
