"""`cnnviz rf`: receptive-field boxes on an image, effective receptive fields, the profile plot."""
from __future__ import annotations

import os
import time
from typing import Any

import click

from . import cli
from .common import architecture, check_stream, check_images, emit, image_options, info, json_option, layer_option, load, model_options, output_option

MAX_BOXES = 20


@cli.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@image_options
@model_options()
@layer_option()
@click.option("--at", "at", default=None, metavar="Y,X",
              help="Show the unit centred nearest input pixel Y,X (row, column of the preprocessed image).  "
                   "[default: each layer's centre unit]")
@click.option("-c", "--channel", default=None, metavar="SEL",
              help="Show the unit where this channel's conv output peaks on the image (one box per layer and "
                   "channel; needs weights). With --effective: differentiate this channel only.")
@click.option("--effective", is_flag=True,
              help="Effective receptive field: mean |gradient| of the unit w.r.t. the input as a heatmap, with "
                   "the theoretical box on top. Without IMAGE, averages over random-noise inputs.")
@click.option("--samples", type=click.IntRange(min=1, max=256), default=4, show_default=True, metavar="N",
              help="--effective: inputs to average (the image plus N-1 noisy copies, or N noise images).")
@click.option("--profile", is_flag=True,
              help="Plot receptive field and jump against layer index for --model (no image, no weights).")
@click.option("--compare", default=None, metavar="M1,M2",
              help="Profile plot overlaying several models, e.g. vgg16,resnet50 (implies --profile).")
@click.option("--ignore-gates", is_flag=True,
              help="Treat squeeze-and-excitation gates as per-channel scales: the conv path's local field "
                   "(otherwise layers past a gate, which in theory see the whole image, are refused).")
@output_option()
@json_option
def rf(images: tuple[str, ...], sample: bool, size: str | None, crop: bool, max_pixels: int | None,
       model: Any, layer: tuple[str, ...], at: str | None, channel: str | None,
       effective: bool, samples: int, profile: bool, compare: str | None, ignore_gates: bool, output: str,
       as_json: bool) -> None:
    """Receptive fields: which input pixels a unit of a conv layer sees.

    Draws on the preprocessed image the theoretical receptive-field box of one unit per selected
    layer (default: the last conv of each stage), in distinct colours with a legend; the part of a
    box outside the image (the zero padding the unit sees) is dashed in a grey margin. Without
    --channel and --effective no weights are read. The boxes go to stderr as a table, with --json
    to stdout (layer, unit, box [y0, x0, y1, x1] inclusive, in preprocessed-input pixels).
    Numbers come from the model's torch.fx graph ('cnnviz layers' lists them for every layer).
    Output names: {image}-{model}-rf.png, {image}-{model}-erf.png, {model}-rf-profile.png.

    \b
    Examples:
      cnnviz rf --sample -m vgg16
      cnnviz rf photo.jpg -m vgg16 -l block3_conv1,block4_conv1,block5_conv3 --at 60,150
      cnnviz rf --sample -m vgg16 -l block5_conv3 --channel 0:3 --json
      cnnviz rf --sample -m vgg16 -l block3_conv3,block4_conv3,block5_conv3 --effective
      cnnviz rf --profile -m resnet50 -o docs/
      cnnviz rf --compare vgg16,resnet50 --size 224
    """
    check_stream(output, as_json=as_json)
    from ..errors import UsageError

    t0 = time.perf_counter()
    if compare is not None or profile:
        if images or sample or at or channel or effective:
            raise UsageError("--profile/--compare plot the numbers of whole models: drop IMAGE, --sample, --at, "
                             "--channel and --effective")
        names = _model_list(compare) if compare is not None else [model.source]
        _profile(names, size, output, as_json, ignore_gates)
        info(f"rf: profile of {', '.join(names)} in {time.perf_counter() - t0:.1f}s")
        return
    if at is not None and channel is not None and not effective:
        raise UsageError("--at and --channel both choose the unit; give one (or use both with --effective)")
    run = RFRun.plan(model=model, layer_specs=layer, at=at, channel=channel,
                     effective=effective, samples=samples, output=output, as_json=as_json, ignore_gates=ignore_gates,
                     images=images, sample=sample, size=size, crop=crop)
    run.run(images=images, sample=sample, size=size, crop=crop, max_pixels=max_pixels)
    info(f"rf: {run.written} file(s) for {len(run.layers)} layer(s) of {model.source} in {time.perf_counter() - t0:.1f}s")


def _model_list(spec: str) -> list[str]:
    from ..errors import UsageError

    names = [n.strip() for n in spec.split(",")]
    if not spec.strip() or any(not n for n in names):
        raise UsageError(f"--compare takes model names separated by commas, e.g. vgg16,resnet50; got {spec!r}")
    return list(dict.fromkeys(names))


def _target(output: str, name: str) -> Any:
    from ..io import ensure_dir, stdout_binary

    if output == "-":
        return stdout_binary()
    ensure_dir(output)
    return os.path.join(output, name)


# ---------------------------------------------------------------- --profile / --compare


def _profile(names: list[str], size: str | None, output: str, as_json: bool, ignore_gates: bool) -> None:
    import math

    from ..io import output_name, save_png
    from ..rf import catalog
    from ..rf import RFError
    from ..rfdraw import ProfileSeries, profile_figure
    from .common import parse_image_size
    from .layers import rf_problem

    s = parse_image_size(size, 224)
    hw = s if isinstance(s, tuple) else (s, s)
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
            info(f"note: {name}: no receptive field for {len(missing)} of {len(rows)} conv layers (left out of the "
                 f"plot): {rf_problem(net, hw, missing, ignore_gates=ignore_gates)}")
        series.append(ProfileSeries(name, [r.index for r in rows], [r.name for r in rows], [r.alias for r in rows],
                                    rf_vals, [geo(r.jump) for r in rows]))
        records.append({"model": name, "layers": [
            {"index": r.index, "name": r.name, "alias": r.alias, "receptive_field": r.receptive_field,
             "jump": r.jump, "center0": r.center0} for r in rows]})
    image = profile_figure(series, size=hw)
    fname = output_name(*names, kind="rf-profile")
    meta = {"Software": "cnnviz", "models": names, "size": list(hw), "kind": "receptive field profile",
            "ignore_gates": ignore_gates}
    path = save_png(_target(output, fname), image, metadata=meta)
    emit({"path": path, "kind": "rf-profile", "size": list(hw), "models": records}, as_json=as_json)


# ---------------------------------------------------------------- boxes and effective fields


class RFRun:
    """One `cnnviz rf` image run: everything checked before weights or pixels are read."""

    def __init__(self) -> None:
        self.written = 0
        self.layers: list[Any] = []

    @classmethod
    def plan(cls, *, model: Any, layer_specs: tuple[str, ...], at: str | None,
             channel: str | None, effective: bool, samples: int, output: str, as_json: bool, ignore_gates: bool,
             images: tuple[str, ...], sample: bool, size: str | None, crop: bool) -> "RFRun":
        from ..errors import UsageError
        from ..layers import conv_layers, select_layers
        from ..rf import receptive_fields
        from ..select import select_indices

        self = cls()
        self.model, self.seed = model, model.seed
        self.effective, self.samples, self.output, self.as_json = effective, samples, output, as_json
        self.ignore_gates = ignore_gates
        self.at = _parse_at(at) if at is not None else None
        net = architecture(model).model
        every = conv_layers(net)
        self.layers = select_layers(every, layer_specs, model_name=model.source) if layer_specs else []
        n_inputs = len(images) + int(sample)
        if n_inputs or not effective:
            n_inputs = len(check_images(images, sample=sample, size=size, crop=crop))
        self.noise_only = n_inputs == 0
        # every requested field must exist (at a nominal size: fields depend on it only via adaptive pooling)
        if not self.layers:
            self.layers = _stage_ends(net, every, ignore_gates)
        receptive_fields(net, size=224, layers=self.layers, ignore_gates=ignore_gates)
        self.channels: list[list[int | None]] = []
        for lay in self.layers:
            if channel is None:
                self.channels.append([None])
            else:
                self.channels.append(list(select_indices(channel, lay.out_channels, what="channel",
                                                         hint=f"{lay.name} has {lay.out_channels} channels")))
        n_boxes = sum(len(c) for c in self.channels)
        if n_boxes > MAX_BOXES:
            raise UsageError(f"{n_boxes} boxes (layers x channels) are too many to tell apart; "
                             f"select at most {MAX_BOXES}")
        if output == "-" and max(n_inputs, 1) != 1:
            raise UsageError(f"-o - streams exactly one PNG to stdout, but this run writes {n_inputs}; use -o DIR")
        if output != "-":
            from ..io import ensure_dir

            ensure_dir(output)
        self.needs_weights = channel is not None or effective
        return self

    def run(self, *, images: tuple[str, ...], sample: bool, size: str | None, crop: bool, max_pixels: int | None) -> None:
        from ..layers import conv_layers

        # boxes need the architecture and the input geometry, never the weights themselves
        arch = architecture(self.model)
        self.lm = load(self.model) if self.needs_weights else arch
        by_name = {lay.name: lay for lay in conv_layers(self.lm.model)}
        self.layers = [by_name[lay.name] for lay in self.layers]
        # fields from the architecture alone ('meta': no compute where the source allows), whatever the weights
        self.meta_net = arch.model
        if self.noise_only:
            self._effective_noise(size)
            return
        from .common import read_images

        for im in read_images(images, sample=sample, size=size, crop=crop, max_pixels=max_pixels, lm=self.lm):
            if self.effective:
                self._effective_image(im)
            else:
                self._boxes(im)

    # ------------------------------------------------------------ choosing units

    def _fields(self, hw: tuple[int, int]) -> list[Any]:
        from ..rf import receptive_fields

        f = receptive_fields(self.meta_net, size=hw, layers=self.layers, ignore_gates=self.ignore_gates)
        return [f[lay.name] for lay in self.layers]

    def _unit(self, field: Any, hw: tuple[int, int]) -> tuple[int, int]:
        from ..errors import UsageError

        if self.at is None:
            return (field.size[0] // 2, field.size[1] // 2)
        if not (0 <= self.at[0] < hw[0] and 0 <= self.at[1] < hw[1]):
            raise UsageError(f"--at {self.at[0]},{self.at[1]} is outside the {hw[0]}x{hw[1]} preprocessed image "
                             f"(rows 0..{hw[0] - 1}, columns 0..{hw[1] - 1})")
        return field.nearest_unit(self.at)

    # ------------------------------------------------------------ boxes

    def _boxes(self, im: Any) -> None:
        import numpy as np
        import torch

        from ..io import output_name, save_png
        from ..fields import peak_units
        from ..rfdraw import box_colors, draw_boxes, legend_rows

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
        path = save_png(_target(self.output, output_name(im.label, self.lm.name, kind="rf")), picture, metadata=meta)
        self.written += 1
        for e in entries:
            info("  " + _legend_text(e))
        emit({"path": path, "kind": "rf", "image": im.source, "model": self.lm.name, "weights": self.lm.weights,
              "size": list(hw), "boxes": entries}, as_json=self.as_json)

    # ------------------------------------------------------------ effective fields

    def _effective_image(self, im: Any) -> None:
        import numpy as np
        import torch

        x = torch.from_numpy(np.ascontiguousarray(im.x))[None]
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.samples - 1, *x.shape[1:]), generator=gen) * 0.1
        xs = torch.cat([x, x + noise]) if self.samples > 1 else x
        how = f"the image and {self.samples - 1} noisy copies (sigma 0.1)" if self.samples > 1 else "the image"
        self._effective(xs, im.display, im.source, im.label, how)

    def _effective_noise(self, size: str | None) -> None:
        import torch

        from .common import model_input_size

        s = model_input_size(size, self.lm)
        hw = s if isinstance(s, tuple) else (s, s)
        gen = torch.Generator().manual_seed(self.seed)
        xs = torch.randn((self.samples, self.lm.channels_in, *hw), generator=gen)
        self._effective(xs, None, None, "noise", f"{self.samples} Gaussian-noise input(s)")

    def _effective(self, xs: Any, display: Any, source: str | None, label: str, how: str) -> None:
        import numpy as np

        from ..io import output_name, save_png
        from ..fields import effective_fields, mass_square
        from ..rfdraw import box_colors, effective_panel, margin_for, panel_sheet

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
        path = save_png(_target(self.output, output_name(label, self.lm.name, kind="erf")), picture, metadata=meta)
        self.written += 1
        for e in entries:
            info(f"  {_legend_text(e)}  effective(95%) {e['effective_95']} px")
        emit({"path": path, "kind": "erf", "image": source, "model": self.lm.name, "weights": self.lm.weights,
              "size": list(hw), "samples": int(xs.shape[0]), "fields": entries}, as_json=self.as_json)


def _parse_at(text: str) -> tuple[int, int]:
    from ..errors import UsageError

    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
        raise UsageError(f"--at takes a pixel as Y,X (row, column), e.g. 112,112; got {text!r}")
    return (int(parts[0]), int(parts[1]))


def _stage_ends(net: Any, layers: list[Any], ignore_gates: bool) -> list[Any]:
    """Default layers: per stage (alias prefix such as block3 / conv4, else a run of equal jump)
    the conv with the largest receptive field (the last one on ties), in catalog order."""
    from ..rf import layer_fields

    fields = layer_fields(net, size=224, ignore_gates=ignore_gates)
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
