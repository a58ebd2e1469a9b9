"""`cnnviz top --engine ray`: the scan of :mod:`cnnviz.scan` on a Ray cluster, writing the same
:mod:`cnnviz.index` parts.

Ray Data reads the file list; decoding + preprocessing run as Ray tasks spread over the cluster;
an actor pool holds the model (one copy per actor, sent once through the object store), runs the
forward passes (hooks on the requested layers only, stopped after the last) and writes each
batch of results as one index part, straight into the index folder (which must be on a file
system every node sees, e.g. NFS or a cluster scratch). The driver only holds the lock, the file
list and the summaries.

``ray.init(address="auto")`` joins a running cluster (``ray start --head`` / a KubeRay or SLURM
launched one); without one, a local Ray instance is started on this machine.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from .capture import Capture, HookPoint, hook_points
from .errors import CnnvizError, ImageError
from .index import ActivationIndex, PartWriter
from .layers import ConvLayer
from .models import LoadedModel
from .scan import LayerStats, Preprocess, ScanCounts, reduce_maps

Say = Callable[[str], None]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CnnvizError("--engine ray needs Ray: pip install 'cnnviz[ray]' (or 'ray[data]')") from None
    return ray


def connect(ray: Any, say: Say) -> None:
    """Join the running cluster, or start a local instance when there is none."""
    if ray.is_initialized():
        return
    try:
        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
        say(f"top: joined the Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    except ConnectionError:
        ray.init(logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        say(f"top: no Ray cluster found; started a local Ray instance ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")


class _Decode:
    """Ray Data batch function: paths -> normalised arrays (or the error message)."""

    def __init__(self, prep: Preprocess):
        self.prep = prep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        xs, errors = [], []
        for p in batch["path"]:
            try:
                xs.append(self.prep(str(p))[0])
                errors.append("")
            except CnnvizError as exc:
                xs.append(np.zeros((3, 1, 1), np.float32))
                errors.append(str(exc))
            except Exception as exc:  # one bad file never ends the scan
                xs.append(np.zeros((3, 1, 1), np.float32))
                errors.append(f"image {str(p)!r} could not be read ({type(exc).__name__}: {exc})")
        return {"path": batch["path"], "x": xs, "error": np.asarray(errors, dtype=object)}


class _ScanActor:
    """Holds the model; each call runs one block of images (in forward batches of ``batch_size``)
    and commits it as one index part."""

    def __init__(self, model_ref: Any, root: str, layer_ids: list[int], layer_names: list[str], points: list[HookPoint],
                 by_point: dict[HookPoint, list[str]], batch_size: int, strict: bool):
        import ray

        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.model: nn.Module = model_ref if isinstance(model_ref, nn.Module) else ray.get(model_ref)
        self.model.eval()
        self.root, self.layer_ids, self.layer_names = root, layer_ids, layer_names
        self.points, self.by_point = points, by_point
        self.batch_size, self.strict = batch_size, strict

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        paths = [str(p) for p in batch["path"]]
        errors = [str(e) for e in batch["error"]]
        if self.strict:
            bad = [e for e in errors if e]
            if bad:
                raise ImageError(bad[0] + " (--strict)")
        good = [i for i, e in enumerate(errors) if not e]
        current: dict[str, LayerStats] = {}

        def handle(point: HookPoint, t: torch.Tensor) -> None:
            stats = reduce_maps(t)
            for name in self.by_point[point]:
                current[name] = stats

        # one part per block: every readable image, then every unreadable one
        writer = PartWriter(self.root, layer_ids=self.layer_ids, layer_names=self.layer_names, part_images=len(paths))
        with Capture(self.model, self.points, on_output=handle, on_cpu=False) as cap:
            for start in range(0, len(good), self.batch_size):
                chunk = good[start : start + self.batch_size]
                groups: dict[tuple[int, ...], list[int]] = {}
                for i in chunk:
                    groups.setdefault(tuple(np.asarray(batch["x"][i]).shape), []).append(i)
                for group in groups.values():
                    x = torch.from_numpy(np.stack([np.asarray(batch["x"][i], np.float32) for i in group]))
                    current.clear()
                    cap.run(x)
                    writer.add([paths[i] for i in group], dict(current))
        for p, e in zip(paths, errors):
            if e:
                writer.skip(p, e)
        writer.flush()
        return {"path": np.asarray(paths, dtype=object), "error": np.asarray(errors, dtype=object)}


def _map_no_restarts(ds: Any, fn: type, **kw: Any) -> Any:
    """``ds.map_batches(fn, **kw)`` on an actor pool that is not restarted. Ray Data hands its
    actors their constructor arguments through the object store, where a restart cannot be
    guaranteed (ray-project/ray#53727), and Ray prints an error line on every successful run
    that asks for one (Ray Data asks by default). The index is the fault tolerance here: a lost
    actor ends the scan, and rerunning the command resumes from the parts committed.
    ``max_restarts`` is passed the only way Ray Data takes it, as a plain remote argument (which
    Ray now calls deprecated); a Ray that no longer takes it gets the call without."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            return ds.map_batches(fn, max_restarts=0, **kw)
    except TypeError:  # pragma: no cover - a future Ray without **ray_remote_args
        return ds.map_batches(fn, **kw)


def ray_scan(idx: ActivationIndex, lm: LoadedModel, layers: Sequence[ConvLayer], paths: Sequence[str], *,
             prep: Preprocess, stage: str, batch_size: int, part_images: int, strict: bool, actors: int | None = None,
             say: Say = lambda s: None) -> ScanCounts:
    """Scan ``paths`` (absolute) into ``idx`` on Ray. The caller holds the index lock."""
    counts = ScanCounts()
    if not paths:
        return counts
    ray = _ray()
    connect(ray, say)
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan/progress chatter; our own line says enough

    points = hook_points(lm.model, list(layers), stage)  # type: ignore[arg-type]
    by_point: dict[HookPoint, list[str]] = {}
    for layer, p in zip(layers, points):
        by_point.setdefault(p, []).append(layer.name)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = actors or max(1, cpus // 4)
    block = max(1, min(part_images, 4 * batch_size))
    model_ref = ray.put(lm.model)
    names = [d["name"] for d in idx.layers]
    ids = [int(d["index"]) for d in idx.layers]
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths) // block + 1, 1000)))
    ds = _map_no_restarts(ds, _Decode, fn_constructor_args=(prep,), batch_size=block, concurrency=max(1, cpus - n_actors))
    ds = _map_no_restarts(ds, _ScanActor,
                          fn_constructor_args=(model_ref, idx.root, ids, names, points, by_point, batch_size, strict),
                          batch_size=block, concurrency=n_actors,
                          num_cpus=max(1, cpus // n_actors - 1) if cpus > n_actors else 1)
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for p, e in zip(out["path"], out["error"]):
                if e:
                    counts.skipped.append((str(p), str(e)))
                    say(f"cnnviz: warning: skipped {e}")
                else:
                    counts.scanned += 1
    except Exception as exc:
        reraise(exc, "the Ray scan")
    return counts


def reraise(exc: Exception, what: str) -> NoReturn:
    """A failure inside Ray as one line: a CnnvizError raised in a task as itself, anything
    else as '``what`` failed: <its last line>'."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, CnnvizError):
        raise type(cause)(str(cause)) from None
    text = str(cause).strip().splitlines()
    raise CnnvizError(f"{what} failed: {text[-1] if text else type(cause).__name__}") from None
