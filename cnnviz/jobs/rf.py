"""The `rf` job: receptive-field boxes on images, effective receptive fields, the profile plot."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..device import place
from ..errors import CnnvizError, RFError, UsageError
from ..fields import effective_fields, mass_square, peak_units
from ..io import indices_tag, output_name, size_tag
from ..layers import ConvLayer, conv_layers, select_layers
from ..models import LoadedModel
from ..progress import Progress, around_bars
from ..rf import catalog, layer_fields, receptive_fields
from ..rfdraw import (ProfileSeries, box_colors, draw_boxes, effective_panel, legend_rows, margin_for, panel_sheet,
                      profile_figure)
from ..select import select_indices
from ..sources import ModelSpec, architecture, as_spec, load
from .inputs import ImageInputs, InputImage, model_input_size, parse_image_size, size_tags, square
from .layers import rf_problem
from .output import Output, Say, quiet, request_tags

MAX_BOXES = 20


@dataclass(frozen=True, kw_only=True)
class RFRequest:
    """Everything `cnnviz rf` can be asked (defaults = the CLI's). ``layers``: selectors (empty:
    the last conv of each stage); ``at``: the unit nearest input pixel (row, column), or 'Y,X';
    ``channel``: a selector, boxes at each channel's peak unit; ``effective``: mean |gradient| maps
    over ``samples`` inputs (noise when ``inputs`` names no image); ``profile`` / ``compare``
    ('M1,M2'): plot receptive field and jump per layer of whole models instead."""

    inputs: ImageInputs = ImageInputs()
    layers: tuple[str, ...] = ()
    model: ModelSpec | str = "resnet50"
    at: tuple[int, int] | str | None = None
    channel: str | None = None
    effective: bool = False
    samples: int = 4
    profile: bool = False
    compare: str | None = None
    ignore_gates: bool = False
    device: str = "auto"
    precision: str = "fp32"
    quiet: bool = False


def run_rf(req: RFRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet) -> None:
    """Write one boxes (or effective-field) PNG per image, or one profile plot, through
    ``output``. Weights are read (or ``model`` used) only for ``channel`` / ``effective``;
    every usage error comes first. The boxes go to ``say`` as lines of text."""
    t0 = time.perf_counter()
    inputs = req.inputs
    if req.compare is not None or req.profile:
        if inputs.images or inputs.sample or req.at or req.channel or req.effective:
            raise UsageError("--profile/--compare plot the numbers of whole models: drop IMAGE, --sample, --at, "
                             "--channels and --effective")
        place(req.device, req.precision)  # checked, though a profile runs no model
        names = _model_list(req.compare) if req.compare is not None else [as_spec(req.model).source]
        _profile(names, inputs.size, output, req.ignore_gates, say)
        say(f"rf: profile of {', '.join(names)} in {time.perf_counter() - t0:.1f}s")
        return
    if req.at is not None and req.channel is not None and not req.effective:
        raise UsageError("--at and --channels both choose the unit; give one (or use both with --effective)")
    run = _RFRun(req, output, around_bars(say))  # --effective prints each image's fields under its bar
    run.run(model)
    say(f"rf: {run.written} file(s) for {len(run.layers)} layer(s) of {run.spec.source} in {time.perf_counter() - t0:.1f}s")


def _model_list(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",")]
    if not spec.strip() or any(not n for n in names):
        raise UsageError(f"--compare takes model names separated by commas, e.g. vgg16,resnet50; got {spec!r}")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- --profile / --compare


def _profile(names: list[str], size: str | int | None, output: Output, ignore_gates: bool, say: Say) -> None:
    hw = square(parse_image_size(size, 224))
    series, records = [], []
    for i, source in enumerate(names):
        arch = architecture(source)
        net, name = arch.model, arch.name
        names[i] = name
        rows = catalog(net, size=hw, ignore_gates=ignore_gates)

        def geo(v: Any) -> float | None:
            return None if v is None else (math.sqrt(v[0] * v[1]) if isinstance(v, list) else float(v))

        rf_vals = [geo(r.receptive_field) for r in rows]
        if all(v is None for v in rf_vals):
            raise RFError(f"no receptive field for any conv layer of {name}: {rf_problem(net, hw, [rows[0].name], ignore_gates=ignore_gates)}")
        missing = [r.name for r in rows if r.receptive_field is None]
        if missing:
            say(f"note: {name}: no receptive field for {len(missing)} of {len(rows)} conv layers (left out of the "
                f"plot): {rf_problem(net, hw, missing, ignore_gates=ignore_gates)}")
        series.append(ProfileSeries(name, [r.index for r in rows], [r.name for r in rows], [r.alias for r in rows],
                                    rf_vals, [geo(r.jump) for r in rows]))
        records.append({"model": name, "layers": [
            {"index": r.index, "name": r.name, "alias": r.alias, "receptive_field": r.receptive_field,
             "jump": r.jump, "center0": r.center0} for r in rows]})
    image = profile_figure(series, size=hw)
    meta = {"Software": "cnnviz", "models": names, "size": list(hw), "kind": "receptive field profile",
            "ignore_gates": ignore_gates}
    output.prepare(1)
    tags = ["nogates" if ignore_gates else None, *size_tag(None if hw == (224, 224) else size)]  # 224: the default
    path = output.png(output_name(*names, kind="rf-profile", tags=tags), image, metadata=meta)
    output.report({"path": path, "kind": "rf-profile", "size": list(hw), "models": records})


# ---------------------------------------------------------------- boxes and effective fields


class _RFRun:
    """One image run: everything checked (in __init__) before weights or pixels are read."""

    def __init__(self, req: RFRequest, output: Output, say: Say) -> None:
        self.req, self.output, self.say = req, output, say
        self.spec = as_spec(req.model)
        self.written = 0
        self.at = _parse_at(req.at) if isinstance(req.at, str) else req.at
        arch = architecture(self.spec)
        net = arch.model
        nominal = arch.input_hw or (224, 224)  # a program exported for one size takes only that one
        every = conv_layers(net)
        self.layers: list[ConvLayer] = select_layers(every, req.layers, model_name=self.spec.source) if req.layers else []
        n_inputs = req.inputs.given
        if n_inputs or not req.effective:
            n_inputs = len(req.inputs.check())
        self.noise_only = n_inputs == 0
        self.n_inputs = n_inputs
        self.progress = Progress(quiet=True)  # --effective: one step per backward pass (see run)
        # every requested field must exist (at a nominal size: fields depend on it only via adaptive pooling)
        if not self.layers:
            self.layers = _stage_ends(net, every, req.ignore_gates, size=nominal)
        receptive_fields(net, size=nominal, layers=self.layers, ignore_gates=req.ignore_gates)
        self.channels: list[list[int | None]] = []
        for lay in self.layers:
            if req.channel is None:
                self.channels.append([None])
            else:
                self.channels.append(list(select_indices(req.channel, lay.out_channels, what="channel",
                                                         hint=f"{lay.name} has {lay.out_channels} channels")))
        n_boxes = sum(len(c) for c in self.channels)
        if n_boxes > MAX_BOXES:
            raise UsageError(f"{n_boxes} boxes (layers x channels) are too many to tell apart; "
                             f"select at most {MAX_BOXES}")
        self.needs_weights = req.channel is not None or req.effective
        # where the model runs (announced only when it runs: the boxes alone need no weights)
        self.where = place(req.device, req.precision, say=say if self.needs_weights else None)
        output.prepare(max(n_inputs, 1))
        # File-name tags of the non-default options (docs/output-names.md)
        chosen = [lay.index for lay in self.layers]
        self.tags = [indices_tag("l", chosen) if req.layers and chosen != self._default_layers(net, every, nominal) else None,
                     f"at{self.at[0]},{self.at[1]}" if self.at is not None else None,
                     indices_tag("c", self.channels[0]) if req.channel is not None else None,
                     *request_tags(req, [("nogates", "ignore_gates")]),
                     *size_tags(req.inputs.size, arch, crop=req.inputs.crop)]
        self.erf_tags = [*request_tags(req, [("n{}", "samples")]), *([f"seed{self.spec.seed}"] if self.spec.seed else [])]

    def _default_layers(self, net: Any, every: list[ConvLayer], size: tuple[int, int]) -> list[int] | None:
        """The indices of the layers drawn without --layer (None where there are none): --layer
        naming exactly them draws the default picture, under the default name."""
        try:
            return [lay.index for lay in _stage_ends(net, every, self.req.ignore_gates, size=size)]
        except CnnvizError:
            return None

    def run(self, model: LoadedModel | None) -> None:
        req = self.req
        # boxes need the architecture and the input geometry, never the weights themselves
        arch = architecture(self.spec)
        self.lm = (model or load(self.spec, device=self.where.device)) if self.needs_weights else arch
        by_name = {lay.name: lay for lay in conv_layers(self.lm.model)}
        self.layers = [by_name[lay.name] for lay in self.layers]
        # fields from the architecture alone ('meta': no compute where the source allows), whatever the weights
        self.meta_net = arch.model
        if req.effective:  # one backward pass per sample and unit batch: the slow part of rf
            self.progress = Progress(max(self.n_inputs, 1) * req.samples, desc="rf effective", unit="pass",
                                     quiet=req.quiet)
        with self.where.autocast(self.lm.model if self.needs_weights else None), self.progress:
            if self.noise_only:
                self._effective_noise()
                return
            for im in req.inputs.read(self.lm):
                if req.effective:
                    self._effective_image(im)
                else:
                    self._boxes(im)

    # ------------------------------------------------------------ choosing units

    def _fields(self, hw: tuple[int, int]) -> list[Any]:
        f = receptive_fields(self.meta_net, size=hw, layers=self.layers, ignore_gates=self.req.ignore_gates)
        return [f[lay.name] for lay in self.layers]

    def _unit(self, field: Any, hw: tuple[int, int]) -> tuple[int, int]:
        if self.at is None:
            return (field.size[0] // 2, field.size[1] // 2)
        if not (0 <= self.at[0] < hw[0] and 0 <= self.at[1] < hw[1]):
            raise UsageError(f"--at {self.at[0]},{self.at[1]} is outside the {hw[0]}x{hw[1]} preprocessed image "
                             f"(rows 0..{hw[0] - 1}, columns 0..{hw[1] - 1})")
        return field.nearest_unit(self.at)

    # ------------------------------------------------------------ boxes

    def _boxes(self, im: InputImage) -> None:
        hw = im.display.shape[:2]
        fields = self._fields(hw)
        peaks = None
        if self.channels[0] != [None]:
            x = torch.from_numpy(np.ascontiguousarray(im.x))[None]
            peaks = peak_units(self.lm.model, x, self.layers, self.channels)
        entries = []
        for k, (lay, field) in enumerate(zip(self.layers, fields)):
            for m, ch in enumerate(self.channels[k]):
                unit, peak = (peaks[k][m][0], peaks[k][m][1]) if peaks is not None else (self._unit(field, hw), None)
                entries.append(_entry(lay, field, unit, hw, channel=ch, peak=peak))
        colors = box_colors(len(entries))
        canvas, _m = draw_boxes(im.display, [e["box"] for e in entries], colors,
                                centers=[e["center"] for e in entries])
        rows = [_legend_text(e) for e in entries]
        how = "peak unit of each channel" if peaks is not None else (
            f"unit nearest pixel {self.at[0]},{self.at[1]}" if self.at else "centre unit")
        title = f"{im.label} \u00b7 {self.lm.name} {self.lm.weights} \u00b7 theoretical receptive fields, {how}"
        picture = legend_rows(canvas, rows, colors, title=title)
        meta = {"Software": "cnnviz", "image": im.source, "model": self.lm.name, "weights": self.lm.weights,
                "size": list(hw), "boxes": entries}
        path = self.output.png(output_name(im.label, self.lm.name, kind="rf", tags=self.tags), picture, metadata=meta)
        self.written += 1
        for e in entries:
            self.say("  " + _legend_text(e))
        self.output.report({"path": path, "kind": "rf", "image": im.source, "model": self.lm.name,
                            "weights": self.lm.weights, "size": list(hw), "boxes": entries})

    # ------------------------------------------------------------ effective fields

    def _effective_image(self, im: InputImage) -> None:
        samples = self.req.samples
        x = torch.from_numpy(np.ascontiguousarray(im.x))[None]
        gen = torch.Generator().manual_seed(self.spec.seed)
        noise = torch.randn((samples - 1, *x.shape[1:]), generator=gen) * 0.1
        xs = torch.cat([x, x + noise]) if samples > 1 else x
        how = f"the image and {samples - 1} noisy copies (sigma 0.1)" if samples > 1 else "the image"
        self._effective(xs, im.display, im.source, im.label, how)

    def _effective_noise(self) -> None:
        hw = square(model_input_size(self.req.inputs.size, self.lm))
        gen = torch.Generator().manual_seed(self.spec.seed)
        xs = torch.randn((self.req.samples, self.lm.channels_in, *hw), generator=gen)
        self._effective(xs, None, None, "noise", f"{self.req.samples} Gaussian-noise input(s)")

    def _effective(self, xs: Any, display: Any, source: str | None, label: str, how: str) -> None:
        hw = tuple(int(v) for v in xs.shape[-2:])
        fields = self._fields(hw)  # type: ignore[arg-type]
        targets, entries = [], []
        for lay, field, chans in zip(self.layers, fields, self.channels):
            unit = self._unit(field, hw)  # type: ignore[arg-type]
            for ch in chans:
                targets.append((lay.name, unit, ch))
                entries.append(_entry(lay, field, unit, hw, channel=ch))  # type: ignore[arg-type]
        grads = [np.zeros(hw, np.float32) for _ in targets]
        for i in range(xs.shape[0]):  # one input at a time: bounded memory on big nets
            for g, add in zip(grads, effective_fields(self.lm.model, xs[i:i + 1], targets)):
                g += add / xs.shape[0]
            self.progress.update()
        colors = box_colors(len(entries))
        margin = margin_for([e["box"] for e in entries], *hw)
        panels = []
        for e, g, c in zip(entries, grads, colors):
            e["effective_95"] = mass_square(g, tuple(e["center"]))
            e["effective_share"] = round(_mass_in_box(g, e["box"], core=0.5), 4)
            head = f"{_layer_label(e)}  unit {e['unit'][0]},{e['unit'][1]}"
            sub = (f"theoretical {_fmt(e['receptive_field'])} px, 95% of |grad| within {e['effective_95']} px, "
                   f"{100 * e['effective_share']:.0f}% in the central half")
            panels.append(effective_panel(g, display, e["box"], c, head=head, sub=sub, margin=margin))
        title = (f"{label} \u00b7 {self.lm.name} {self.lm.weights} \u00b7 effective receptive field: mean |d unit / d input| "
                 f"over {how}; box = theoretical field")
        picture = panel_sheet(panels, title=title)
        meta = {"Software": "cnnviz", "image": source or "noise", "model": self.lm.name, "weights": self.lm.weights,
                "size": list(hw), "samples": int(xs.shape[0]), "fields": entries}
        path = self.output.png(output_name(label, self.lm.name, kind="erf", tags=[*self.tags, *self.erf_tags]), picture, metadata=meta)
        self.written += 1
        for e in entries:
            self.say(f"  {_legend_text(e)}  effective(95%) {e['effective_95']} px")
        self.output.report({"path": path, "kind": "erf", "image": source, "model": self.lm.name,
                            "weights": self.lm.weights, "size": list(hw), "samples": int(xs.shape[0]), "fields": entries})



def _parse_at(text: str) -> tuple[int, int]:
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
        raise UsageError(f"--at takes a pixel as Y,X (row, column), e.g. 112,112; got {text!r}")
    return (int(parts[0]), int(parts[1]))


def _stage_ends(net: Any, layers: list[Any], ignore_gates: bool, *, size: tuple[int, int] = (224, 224)) -> list[Any]:
    """Default layers: per stage (alias prefix such as block3 / conv4, else a run of equal jump)
    the conv with the largest receptive field (the last one on ties), in catalog order."""
    fields = layer_fields(net, size=size, ignore_gates=ignore_gates)
    best: dict[Any, Any] = {}
    for lay in layers:
        f = fields.get(lay.name)
        if f is None or isinstance(f, str):
            continue
        key = lay.alias.split("_")[0] if lay.alias else f.jump
        if key not in best or f.rf >= fields[best[key].name].rf:
            best[key] = lay
    if not best:
        return layers[-1:]
    return sorted(best.values(), key=lambda lay: lay.index)[-MAX_BOXES:]


def _entry(lay: Any, field: Any, unit: tuple[int, int], hw: tuple[int, int], *, channel: int | None = None,
           peak: float | None = None) -> dict[str, Any]:
    y0, x0, y1, x1 = field.box(unit)
    d = field.as_dict()
    e: dict[str, Any] = {
        "layer": lay.index, "name": lay.name, "alias": lay.alias, "unit": list(unit),
        "box": [y0, x0, y1, x1],
        "box_in_image": [max(y0, 0), max(x0, 0), min(y1, hw[0] - 1), min(x1, hw[1] - 1)],
        "clipped": bool(y0 < 0 or x0 < 0 or y1 > hw[0] - 1 or x1 > hw[1] - 1),
        "center": list(field.center(unit)),
        "receptive_field": d["receptive_field"], "jump": d["jump"], "center0": d["center0"],
        "map_size": list(field.size),
    }
    if channel is not None:
        e["channel"] = channel
    if peak is not None:
        e["peak"] = peak
    return e


def _fmt(v: Any) -> str:
    return "x".join(str(a) for a in v) if isinstance(v, list) else str(v)


def _layer_label(e: dict[str, Any]) -> str:
    name = f"{e['layer']} {e['name']}" + (f" ({e['alias']})" if e["alias"] else "")
    return name + (f" ch {e['channel']}" if "channel" in e else "")


def _legend_text(e: dict[str, Any]) -> str:
    y0, x0, y1, x1 = e["box"]
    return (f"{_layer_label(e)}: unit {e['unit'][0]},{e['unit'][1]} of {e['map_size'][0]}x{e['map_size'][1]}, "
            f"rf {_fmt(e['receptive_field'])} px, jump {_fmt(e['jump'])}, rows {y0}..{y1}, cols {x0}..{x1}"
            + (" (clipped)" if e["clipped"] else ""))


def _mass_in_box(g: Any, box: list[int], *, core: float) -> float:
    """Share of the gradient mass inside the central ``core`` fraction (per side) of the box."""
    y0, x0, y1, x1 = box
    cy, cx, hy, hx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0 + 1) * core / 2, (x1 - x0 + 1) * core / 2
    total = float(g.sum())
    if total <= 0:
        return 0.0
    h, w = g.shape
    a, b = max(int(round(cy - hy + 0.5)), 0), min(int(round(cy + hy - 0.5)), h - 1)
    c, d = max(int(round(cx - hx + 0.5)), 0), min(int(round(cx + hx - 0.5)), w - 1)
    return float(g[a:b + 1, c:d + 1].sum()) / total if a <= b and c <= d else 0.0
