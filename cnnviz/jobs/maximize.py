"""The `maximize` job: synthesise the input each channel (or class logit) responds to most."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..device import place
from ..errors import CnnvizError, UsageError
from ..io import indices_tag, option_tags, output_name
from ..layers import ConvLayer, conv_layers, select_layers
from ..models import LoadedModel
from ..optimize import (DEFAULT_LR, DEFAULT_STEPS, Transforms, grid_title, maximize, maximize_grid, recipe_note,
                        resolve_classes)
from ..render import to_uint8
from ..select import select_indices
from ..sources import ModelSpec, architecture, as_spec, load
from ..util import parse_size
from .output import Output, Record, Say, default, quiet


_DEFAULT_CHANNELS = ("0:16",)


@dataclass(frozen=True, kw_only=True)
class MaximizeRequest:
    """Everything `cnnviz maximize` can be asked (defaults = the CLI's). Either ``layers`` with
    ``channels`` (selectors; default 0:16) or ``classes`` (names, indices, globs); ``steps`` /
    ``lr`` None = the optimiser's defaults; ``decorrelate`` None = on for 'fft'; ``separate``: one
    PNG per target instead of a grid per layer; ``titles``: title and channel numbers on grids;
    ``npy``: also the (N, H, W, 3) float32 batch; class names come from the model (its weights' or
    the ModelSpec's ``labels``)."""

    layers: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    model: ModelSpec | str = "resnet50"
    objective: str = "channel"
    stage: str = "conv"
    steps: int | None = None
    lr: float | None = None
    size: str = "128"
    param: str = "fft"
    decorrelate: bool | None = None
    transforms: bool = True
    batch_size: int = 16
    precision: str = "auto"
    device: str = "auto"
    separate: bool = False
    titles: bool = True
    npy: bool = False
    quiet: bool = False


def run_maximize(req: MaximizeRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Optimise one image per target and write them (a grid per layer, or one PNG each) through
    ``output``. Usage errors come before the weights load; ``model`` is used as given (its
    device wins over ``req.device``). ``progress``: a callback(done_steps, total_steps) instead
    of the progress bar (cnnviz.progress; none with ``req.quiet``)."""
    if req.classes and (req.layers or req.channels):
        raise UsageError("use either --class or --layer/--channels, not both")
    if not req.classes and not req.layers:
        raise UsageError("give --layer SEL (with --channels SEL) or --class NAME; see 'cnnviz maximize --help'")
    if req.classes and req.objective == "neuron":
        raise UsageError("--objective neuron applies to --layer channels, not to --class")
    hw = parse_size(req.size)
    steps = DEFAULT_STEPS if req.steps is None else req.steps
    lr = DEFAULT_LR if req.lr is None else req.lr
    if not lr > 0:
        raise UsageError(f"--lr must be > 0, got {lr}")
    where = place(req.device, req.precision, say=say)
    dev = where.device
    output.prepare(None)
    if output.streaming and req.npy:
        raise UsageError("--npy needs an output folder, not -o -")
    spec = as_spec(req.model)
    arch = architecture(spec)
    if req.classes and arch.task != "classification":  # its logits are per pixel (or per box), not one per class
        raise UsageError(f"--class maximizes a classifier's class logit; {arch.name} is a {arch.task} model with "
                         "per-pixel (or per-box) outputs: maximize its channels with --layer/--channels instead")
    if "size" in arch.limits:  # the optimised image changes size (random padding and scaling)
        raise UsageError(f"maximize cannot run {arch.name}: {arch.limits['size']}")
    batch_size = 1 if "batch" in arch.limits else req.batch_size  # one image per pass: same images, more passes
    channels = req.channels or _DEFAULT_CHANNELS
    if req.layers:  # layers and channels are checked on the architecture before any weights are read
        for lay in select_layers(conv_layers(arch.model), req.layers, model_name=spec.source):
            select_indices(channels, lay.out_channels, what="channel", hint=f"{lay.name} has {lay.out_channels} channels")
    lm = model or load(spec, device=str(dev))
    if req.classes:
        jobs: list[tuple[ConvLayer | None, list[int]]] = [
            (None, resolve_classes(req.classes, lm.categories, count=_num_classes(lm)))]
        if not lm.pretrained:
            say("cnnviz: note: random weights (--weights none): class images show no real classes")
    else:
        jobs = [(lay, select_indices(channels, lay.out_channels, what="channel",
                                     hint=f"{lay.name} has {lay.out_channels} channels"))
                for lay in select_layers(conv_layers(lm.model), req.layers, model_name=spec.source)]
    n_files = sum(len(t) if req.separate else 1 for _, t in jobs)
    output.prepare(n_files, message=f"-o - streams exactly one PNG, but this would write {n_files}; "
                                    f"give an output folder")
    settings = dict(steps=steps, lr=lr, size=hw, param=req.param, seed=spec.seed, batch_size=batch_size,
                    precision=where.precision,
                    decorrelate=(req.param == "fft") if req.decorrelate is None else req.decorrelate,
                    transforms=Transforms() if req.transforms else None)
    for lay, targets in jobs:
        _run_one(req, lm, lay, targets, settings=settings, output=output, say=say, device=dev,
                 progress=progress if progress is not None else not req.quiet)


def _num_classes(lm: LoadedModel) -> int:
    linears = [m for m in lm.model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return int(linears[-1].out_features)
    if lm.categories:
        return len(lm.categories)
    if lm.num_classes:
        return int(lm.num_classes)
    raise CnnvizError(f"cannot tell how many classes {lm.name} outputs (no final Linear layer)")


def _run_one(req: MaximizeRequest, lm: LoadedModel, lay: ConvLayer | None, targets: list[int], *,
             settings: dict[str, Any], output: Output, say: Say, progress: Any, device: Any) -> None:
    """One layer's channels (or the class logits): optimise, then write the grid or the PNGs."""
    objective = "class" if lay is None else req.objective
    if lay is None:
        what = f"{len(targets)} class logit{'s' if len(targets) > 1 else ''} of {lm.name}"
    else:
        name = f"{lay.alias} ({lay.name})" if lay.alias else lay.name
        what = f"{len(targets)} channel{'s' if len(targets) > 1 else ''} of {lm.name} {name}"
    say(f"cnnviz: maximizing {what}: {settings['steps']} steps on {device}")
    where = "logits" if lay is None else (lay.alias or lay.name)
    res = maximize(lm.model, targets=targets, layer=lay, objective=objective, stage=req.stage, mean=lm.mean,
                   std=lm.std, progress=progress, desc=where, **settings)
    names = [_target_name(lm, lay, t) for t in targets]
    base: dict[str, Any] = {
        "model": lm.name, "weights": lm.weights,
        "layer": None if lay is None else lay.index, "name": "logits" if lay is None else lay.name,
        "alias": "" if lay is None else lay.alias, "stage": None if lay is None else req.stage, "objective": objective,
        "steps": res.steps, "lr": settings["lr"], "size": list(settings["size"]), "param": settings["param"],
        "seed": settings["seed"], "precision": res.precision, "input_size": list(res.input_size),
    }
    parts: tuple[Any, ...] = (lm.name, "class") if lay is None else (lm.name, lay.index, lay.name)
    first, *tags = _tags(req, lay, targets, settings)
    npy_path = None
    if req.npy:
        npy_path = output.npy(output_name(*parts, kind="maximize", ext="npy", tags=[first, *tags]),
                              res.images.astype("float32"))
    tiles = to_uint8(res.images)
    meta = {"Software": "cnnviz", **{k: str(v) for k, v in base.items()}}
    if req.separate:
        width = len(str(max(targets)))
        for i, t in enumerate(targets):
            tag = f"{t:0{width}d}" if lay is None else f"ch{t:0{width}d}"
            extra = (names[i],) if lay is None else ()
            path = output.png(output_name(*parts, tag, *extra, kind="maximize", tags=tags), tiles[i],
                              metadata={**meta, "channels": str(t), "values": f"{res.values[i]:.6g}"})
            output.report(_record(base, path, [t], [res.values[i]], names[i:i + 1], lay, npy_path))
        return
    title = grid_title(model=lm.name, weights=lm.weights, steps=res.steps, layer=lay, stage=req.stage,
                       objective=objective, recipe=recipe_note(param=settings["param"], decorrelate=settings["decorrelate"],
                                                               transforms=settings["transforms"]))
    image = maximize_grid(tiles, targets=targets, class_names=names if lay is None else None, title=title,
                          labels=req.titles)
    path = output.png(output_name(*parts, kind="maximize", tags=[first, *tags, *([] if req.titles else ["nolabels"])]),
                      image,
                      metadata={**meta, "channels": ",".join(map(str, targets)),
                                "values": ",".join(f"{v:.6g}" for v in res.values)})
    output.report(_record(base, path, targets, list(res.values), names, lay, npy_path))


def _tags(req: MaximizeRequest, lay: ConvLayer | None, targets: list[int], settings: dict[str, Any]) -> list[str | None]:
    """File-name tags (docs/output-names.md): first the targets when they are not the default
    channels (class indices always: there is no default class; a one-target PNG names its target
    itself and drops this first tag), then every recipe setting that differs from its default."""
    if lay is None:
        first: str | None = indices_tag("", targets)
    else:
        standard = select_indices(_DEFAULT_CHANNELS, lay.out_channels, what="channel")
        first = None if targets == standard else indices_tag("c", targets)
    fft = settings["param"] == default(MaximizeRequest, "param")
    return [first, *option_tags([
        ("neuron", req.objective if lay is not None else "channel", "channel"),
        ("act", req.stage if lay is not None else "conv", "conv"),
        ("steps{}", settings["steps"], DEFAULT_STEPS), ("lr{}", settings["lr"], DEFAULT_LR),
        ("s{}", tuple(settings["size"]), parse_size(default(MaximizeRequest, "size"))),
        ("pixel", settings["param"], "fft"),
        ("decorr" if settings["decorrelate"] else "nodecorr", settings["decorrelate"], fft),
        ("notf", settings["transforms"] is None, False), ("seed{}", settings["seed"], 0),
    ])]


def _target_name(lm: LoadedModel, lay: ConvLayer | None, t: int) -> str:
    if lay is not None:
        return str(t)
    return lm.categories[t] if t < len(lm.categories) else str(t)


def _record(base: dict[str, Any], path: str, targets: list[int], values: list[Any], names: list[str],
            lay: ConvLayer | None, npy_path: str | None) -> Record:
    rec = {"path": path, **base, "channels": targets, "values": [round(float(v), 6) for v in values]}
    if lay is None:
        rec["classes"] = names
    if npy_path:
        rec["npy"] = npy_path
    return rec

