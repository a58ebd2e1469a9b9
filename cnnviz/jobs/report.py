"""The `report` job: a static HTML site about a model on images (cnnviz.report builds it).

The job checks the request on the architecture (no weights read), loads the model, preprocesses
the images as every other command does, names them as the user gave them, and hands everything
to :func:`cnnviz.report.build_report`; it reports one record, ``index.html``'s, with the counts.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..capture import hook_points
from ..device import place
from ..errors import UsageError
from ..io import sample_image_path
from ..layers import ConvLayer, conv_layers, select_layers
from ..models import LoadedModel
from ..optimize import DEFAULT_STEPS
from ..render import check_cmap
from ..report import MaximizeRequest, ReportImage, ReportResult, build_report
from ..report.build import DEFAULT_TOP
from ..report.examples import check_index
from ..select import select_indices
from ..sources import ModelSpec, architecture, as_spec, load
from .inputs import ImageInputs, parse_image_size
from .output import Output, Say, quiet


@dataclass(frozen=True, kw_only=True)
class ReportRequest:
    """Everything `cnnviz report` can be asked (defaults = the CLI's). ``inputs``: the images (none
    at all: filters and receptive fields only); ``layers``: layer selectors; ``stage``: 'act' or
    'conv'; ``top``: maps per image on a layer page before 'show all'; ``maximize``: also
    synthesise ``maximize_channels`` of ``maximize_layer`` (default: every report layer) in
    ``steps`` (None: cnnviz maximize's default); ``cam``: each image's Grad-CAM of its top-1 class;
    ``include``: folders of other commands' pictures; ``index``: a `cnnviz top --index` folder,
    ``index_k`` examples per channel; ``prune``: delete unused pictures of earlier runs;
    ``force``: write into a folder holding a foreign index.html."""

    inputs: ImageInputs = field(default_factory=ImageInputs)
    model: ModelSpec | str = "resnet50"
    layers: tuple[str, ...] = ("all",)
    stage: str = "conv"
    top: int = DEFAULT_TOP
    cmap: str = "viridis"
    maximize: bool = False
    maximize_layer: tuple[str, ...] = ()
    maximize_channels: str = "0:8"
    steps: int | None = None
    cam: bool = False
    include: tuple[str, ...] = ()
    index: str | None = None
    index_k: int = 9
    batch_size: int = 8
    prune: bool = False
    force: bool = False
    device: str = "auto"
    precision: str = "fp32"


def run_report(req: ReportRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet,
               progress: bool | None = False) -> ReportResult:
    """Write the report into the folder of ``output`` and report one record (``path``: its
    index.html, with the counts of :class:`cnnviz.report.ReportResult`). Every usage error is
    raised before weights or pixels are read and before the folder is created. ``model``: an
    already loaded model (else ``req.model`` is loaded); ``progress``: False nothing, True a bar
    on stderr, None a bar on a terminal and else one line per phase (what the CLI uses)."""
    t0 = time.perf_counter()
    check_cmap(req.cmap)
    if output.streaming:
        raise UsageError("a report is a folder of files; give -o DIR, not -o -")
    if not req.maximize and (req.maximize_layer or req.steps is not None):
        raise UsageError("--maximize-layer and --steps apply to --maximize; add --maximize")
    spec = as_spec(req.model)
    if req.inputs.given:
        req.inputs.check()
    else:
        parse_image_size(req.inputs.size, 224)
    net, chosen, max_jobs = _plan(req, spec)
    where = place(req.device, req.precision, say=say)
    if req.index:
        check_index(req.index, stage=req.stage)  # the stage now; model and weights once loaded
    output.prepare(None)

    lm = model or load(spec, device=where.device)
    images = list(_images(req.inputs, lm))
    maximize = MaximizeRequest(channels=max_jobs, steps=req.steps or DEFAULT_STEPS, seed=spec.seed,
                               precision=where.precision) if req.maximize else None
    res = build_report(lm, images, output=output.target, layers=[conv_layers(lm.model)[lay.index] for lay in chosen],
                       stage=req.stage, top=req.top, cmap=req.cmap, batch_size=req.batch_size, maximize=maximize,
                       include=req.include, index=req.index, index_k=req.index_k, force=req.force, prune=req.prune,
                       preprocessing=_preprocessing(req.inputs, lm), architecture=net, progress=progress,
                       cam=spec if req.cam else None, precision=where.precision)
    output.report({"path": res.index, "kind": "report", "folder": res.output, "model": lm.name, "weights": lm.weights,
                   "layers": res.layers, "images": res.images, "channels": res.channels, "pages": res.pages,
                   "computed": res.computed, "reused": res.reused, "bytes": res.bytes, "seconds": round(res.seconds, 3)})
    pruned = res.computed.get("pruned files", 0)
    made = sum(res.computed.values()) - pruned
    reused = sum(res.reused.values())
    say(f"report: {res.layers} layer(s), {res.channels} channels, {res.images} image(s) of {lm.name} ({lm.weights}): "
        f"{made} picture(s) made, {reused} reused" + (f", {pruned} old file(s) pruned" if pruned else "")
        + f", {res.bytes / 1e6:.1f} MB in {res.output} ({time.perf_counter() - t0:.1f}s); open {res.index}")
    return res


def _plan(req: ReportRequest, spec: ModelSpec) -> tuple[Any, list[ConvLayer], dict[int, list[int]]]:
    """Check the layers, stage and maximize selections on the architecture alone (parameters on
    'meta', no weights read). Returns that network, the chosen layers and the channels to
    maximize per layer index."""
    net = architecture(spec).model
    every = conv_layers(net)
    chosen = select_layers(every, req.layers, model_name=spec.source)
    hook_points(net, chosen, req.stage)  # --stage act not available -> usage error now
    max_jobs: dict[int, list[int]] = {}
    if req.maximize:
        targets = select_layers(every, req.maximize_layer, model_name=spec.source) if req.maximize_layer else chosen
        in_report = {c.index for c in chosen}
        for lay in targets:
            if lay.index not in in_report:
                raise UsageError(f"--maximize-layer {lay.name} is not in the report's --layer selection")
            max_jobs[lay.index] = select_indices(req.maximize_channels, lay.out_channels, what="channel",
                                                 hint=f"{lay.name} has {lay.out_channels} channels")
    return net, chosen, max_jobs


def _images(inputs: ImageInputs, lm: LoadedModel) -> Any:
    """The inputs preprocessed for ``lm``, named as the user gave them ('stdin' for '-', the
    sample photo marked as such)."""
    if not inputs.given:
        return
    sample_path = sample_image_path() if inputs.sample else None
    for im in inputs.read(lm):
        name = "stdin" if im.source == "-" else im.source  # as given: the path the user knows
        if im.source == sample_path:
            name = f"{os.path.basename(name)} (sample)"
        yield ReportImage(name=name, x=im.x, display=im.display, source=im.source)


def _preprocessing(inputs: ImageInputs, lm: LoadedModel) -> str:
    """The model page's sentence on how the images were prepared."""
    target = parse_image_size(inputs.size, lm.crop_size)
    if inputs.crop:
        prep = (f"shorter side to {round(target * lm.resize_size / lm.crop_size)} px, centre crop {target}\u00d7{target} "  # type: ignore[operator]
                f"(the classifier's own transforms)")
    elif isinstance(target, tuple):
        prep = f"resized to exactly {target[0]}\u00d7{target[1]} px"
    else:
        prep = f"shorter side resized to {target} px, aspect kept"
    return prep + f"; normalised with mean {tuple(round(v, 4) for v in lm.mean)}, std {tuple(round(v, 4) for v in lm.std)}"
