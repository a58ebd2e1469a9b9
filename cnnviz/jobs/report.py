"""The `report` job: a static HTML site about a model on images (cnnviz.report builds it).

The job checks the request on the architecture (no weights read), loads the model, preprocesses
the images as every other command does, names them as the user gave them, and hands everything
to :func:`cnnviz.report.build_report`; it reports one record, ``index.html``'s, with the counts.
The other jobs a report shows (`cam` on its images, `top` answering from an index) are run from
here and handed to the site builder (:func:`cam_maker`, :func:`index_query`): dependencies point
one way, jobs -> report, and the site never calls back into the jobs.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..capture import hook_points
from ..device import place
from ..errors import UsageError
from ..io import sample_image_path
from ..layers import ConvLayer, conv_layers, select_layers
from ..models import LoadedModel
from ..optimize import DEFAULT_STEPS
from ..render import check_cmap
from ..report import CamMaker, ExampleQuery, ReportImage, ReportResult, build_report
from ..report.build import DEFAULT_TOP
from ..report.examples import check_index
from ..select import select_indices
from ..sources import ModelSpec, architecture, as_spec, load
from .cam import CamRequest, run_cam
from .inputs import ImageInputs, parse_image_size
from .output import Output, Record, Say, quiet
from .top import TopRequest, run_top


@dataclass(frozen=True, kw_only=True)
class ReportRequest:
    """Everything `cnnviz report` can be asked (defaults = the CLI's). ``inputs``: the images (none
    at all: filters and receptive fields only); ``layers``: layer selectors; ``stage``: 'act' or
    'conv'; ``top``: maps per image on a layer page before 'show all'; ``maximize``: also
    synthesise ``maximize_channels`` of ``maximize_layer`` (default: every report layer) in
    ``steps`` (None: cnnviz maximize's default); ``cam``: each image's Grad-CAM of its top-1 class;
    ``include``: folders of other commands' pictures; ``index``: a `cnnviz top --index` folder,
    ``index_k`` examples per channel; ``prune``: delete unused pictures of earlier runs;
    ``force``: write into a folder holding a foreign index.html; ``with_model``: model B (a
    ModelSpec or source): a comparison page (cnnviz compare of this model against B over the
    report's image files, at the report's layers and stage), ``with_report``: B's own report
    folder, whose layer and channel pages that page links."""

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
    quiet: bool = False
    with_model: ModelSpec | str | None = None
    with_report: str | None = None


def run_report(req: ReportRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet) -> ReportResult:
    """Write the report into the folder of ``output`` and report one record (``path``: its
    index.html, with the counts of :class:`cnnviz.report.ReportResult`). Every usage error is
    raised before weights or pixels are read and before the folder is created. ``model``: an
    already loaded model (else ``req.model`` is loaded). A progress bar on stderr when it is a
    terminal, unless ``req.quiet``."""
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
    creq = _comparison(req, spec, net)
    output.prepare(None)

    lm = model or load(spec, device=where.device)
    images = list(_images(req.inputs, lm))
    comparison = None
    if creq is not None:
        from ..report.comparepage import Comparison
        from .compare import run_compare

        cres = run_compare(creq, output=Output(output.target), model=lm, say=say)
        comparison = Comparison(data=cres.as_dict(), other_report=os.path.abspath(req.with_report) if req.with_report else None)
    res = build_report(lm, images, output=output.target, layers=[conv_layers(lm.model)[lay.index] for lay in chosen],
                       stage=req.stage, top=req.top, cmap=req.cmap, batch_size=req.batch_size,
                       maximize=max_jobs if req.maximize else None, maximize_steps=req.steps or DEFAULT_STEPS,
                       maximize_seed=spec.seed, maximize_precision=where.precision, include=req.include,
                       index=req.index, index_k=req.index_k, examples=index_query(lm) if req.index else None,
                       force=req.force, prune=req.prune, preprocessing=_preprocessing(req.inputs, lm), architecture=net,
                       progress=not req.quiet, cam=cam_maker(spec, lm) if req.cam else None, precision=where.precision,
                       comparison=comparison)
    output.report({"path": res.index, "kind": "report", "folder": res.output, "model": lm.name, "weights": lm.weights,
                   "layers": res.layers, "images": res.images, "channels": res.channels, "pages": res.pages,
                   "compare": os.path.join(res.output, "compare.html") if comparison is not None else None,
                   "computed": res.computed, "reused": res.reused, "bytes": res.bytes, "seconds": round(res.seconds, 3)})
    pruned = res.computed.get("pruned files", 0)
    made = sum(res.computed.values()) - pruned
    reused = sum(res.reused.values())
    say(f"report: {res.layers} layer(s), {res.channels} channels, {res.images} image(s) of {lm.name} ({lm.weights}): "
        f"{made} picture(s) made, {reused} reused" + (f", {pruned} old file(s) pruned" if pruned else "")
        + f", {res.bytes / 1e6:.1f} MB in {res.output} ({time.perf_counter() - t0:.1f}s); open {res.index}")
    return res


def _comparison(req: ReportRequest, spec: ModelSpec, net: Any) -> Any:
    """The `compare` request of --with (None without), checked before any weights are read: the
    report's image files (at least 4), its layers and stage on A, the same layers on B when B has
    the same conv layers (else all of B's), each side's own preprocessing at the report's size."""
    if req.with_model is None:
        if req.with_report:
            raise UsageError("--with-report links B's report from the comparison page; add --with B")
        return None
    from ..compare import MIN_IMAGES
    from .compare import CompareRequest, check_compare

    files = [s for s in (req.inputs.check() if req.inputs.given else []) if s != "-"]
    if len(files) < MIN_IMAGES:
        raise UsageError(f"--with compares the two models over the report's image files; it needs at least {MIN_IMAGES} "
                         f"(stdin and --sample do not count), got {len(files)}")
    if req.with_report and not os.path.isfile(os.path.join(req.with_report, "index.html")):
        raise UsageError(f"--with-report {req.with_report!r} is not a cnnviz report folder (no index.html)")
    other = architecture(as_spec(req.with_model)).model
    same = [(c.name, c.out_channels) for c in conv_layers(net)] == [(c.name, c.out_channels) for c in conv_layers(other)]
    creq = CompareRequest(images=tuple(files), model=spec, with_model=req.with_model, layers=tuple(req.layers),
                          with_layers=tuple(req.layers) if same else (), stage=req.stage, top=req.top,
                          size=req.inputs.size, crop=req.inputs.crop, max_pixels=req.inputs.max_pixels,
                          batch_size=max(req.batch_size, 8), picture=False, device=req.device, quiet=req.quiet)
    check_compare(creq)
    return creq


def _plan(req: ReportRequest, spec: ModelSpec) -> tuple[Any, list[ConvLayer], dict[int, list[int]]]:
    """Check the layers, stage and maximize selections on the architecture alone (parameters on
    'meta', no weights read). Returns that network, the chosen layers and the channels to
    maximize per layer index."""
    arch = architecture(spec)
    if req.cam and arch.task == "detection":  # its cam explains boxes, not a top-1 class
        raise UsageError(f"report --cam shows each image's top-1 class map; {spec.source} is a detection model: explain "
                         f"its boxes with 'cnnviz cam IMAGE -m {spec.source} --box K' instead")
    net = arch.model
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


# ---------------------------------------------------------------- the jobs a report shows


def index_query(lm: LoadedModel) -> ExampleQuery:
    """The report's dataset examples: the `top` job answering one layer of an index alone (no
    forward pass, no pictures: the report crops the example images itself)."""

    def query(*, index: str, layer: int, k: int, bottom: bool = False) -> list[Record]:
        records: list[Record] = []
        req = TopRequest(index=index, layers=(str(layer),), k=k, bottom=bottom, pictures=False, quiet=True)
        run_top(req, output=Output(on_record=records.append), model=lm)
        return records

    return query


def cam_maker(model: ModelSpec | str, lm: LoadedModel) -> CamMaker:
    """The report's class activation maps: the `cam` job on the report's images (already
    preprocessed: at the report's size, so no --size/--crop tags of their own), ``model`` the
    ModelSpec or source it resolves layers on, ``lm`` the loaded network it runs."""

    def make(images: list[ReportImage], *, methods: tuple[str, ...], save: Callable[..., str]) -> list[Record]:
        sink = _Sink(save)
        run_cam(CamRequest(inputs=_Inputs(images), model=model, methods=methods, quiet=True),  # type: ignore[arg-type]
                output=sink, model=lm)  # type: ignore[arg-type]
        return sink.records

    return make


@dataclass
class _CamImage:
    """What the cam job reads of an input (its duck-typed InputImage)."""

    source: str
    label: str
    x: np.ndarray
    display: np.ndarray


class _Inputs:
    """The cam job's ImageInputs over images already preprocessed by the report (no --size/--crop)."""

    size = None
    crop = False

    def __init__(self, images: list[ReportImage]):
        self.images = images

    def check(self, **_: Any) -> list[str]:
        return [im.id for im in self.images]

    def read(self, lm: Any) -> Any:
        return iter([_CamImage(im.id, im.id, im.x, im.display) for im in self.images])


class _Sink:
    """The cam job's Output: each PNG through the report's ``save`` (its content-derived names), the records kept."""

    streaming = False

    def __init__(self, save: Callable[..., str]):
        self.save = save
        self.records: list[Record] = []
        self.written = 0

    def prepare(self, files: int | None, *, npy: bool = False, message: str | None = None) -> None:
        pass

    def png(self, name: str, image: Any, *, metadata: Any = None, palette: Any = None) -> str:
        return self.save(name, image, metadata=metadata, palette=palette)

    def npy(self, name: str, array: np.ndarray) -> str:
        raise UsageError("the report keeps no .npy files")

    def report(self, record: Record) -> None:
        self.written += 1
        self.records.append(record)
