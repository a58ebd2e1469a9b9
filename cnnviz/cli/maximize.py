"""`cnnviz maximize`: synthesise the input each channel (or class) responds to most."""
from __future__ import annotations

import sys
from typing import Any

import click

from . import cli
from .common import check_stream, emit, info, json_option, layer_option, model_options, output_option



@cli.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@model_options()
@layer_option()
@click.option("-c", "--channel", "channels", multiple=True, metavar="SEL",
              help="Channels of each layer (repeatable; index, slice 0:16, list 3,7, all).  [default: 0:16]")
@click.option("--class", "classes", multiple=True, metavar="NAME|INDEX",
              help="Maximise class logits instead of channels (repeatable): 'tennis ball', tennis_ball, 852, "
                   "0:8, '*terrier'. Names come from the weights' category list or --labels FILE.")
@click.option("--objective", type=click.Choice(["channel", "neuron"]), default="channel", show_default=True,
              help="channel: mean activation of the channel; neuron: its centre unit only.")
@click.option("--stage", type=click.Choice(["conv", "act"]), default="conv", show_default=True,
              help="conv: the Conv2d output; act: after its activation (as in 'cnnviz maps').")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Adam steps.  [default: 256]")
@click.option("--lr", type=float, default=None, metavar="LR", help="Adam learning rate.  [default: 0.05]")
@click.option("-s", "--size", default="128", show_default=True, metavar="S",
              help="Image size in pixels, S or HxW; the model sees it padded and upscaled to >= 224.")
@click.option("--param", "param", type=click.Choice(["fft", "pixel"]), default="fft", show_default=True,
              help="fft: 1/f-scaled Fourier basis with decorrelated colour (Lucid); pixel: raw pixels, the naive baseline.")
@click.option("--decorrelate/--no-decorrelate", default=None,
              help="ImageNet colour decorrelation.  [default: on for fft, off for pixel]")
@click.option("--transforms/--no-transforms", default=True, show_default=True,
              help="Random pad 12, jitter 8, scale 0.9-1.1, rotate +-10 deg, jitter 4 at every step.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=16, show_default=True, metavar="N",
              help="Images optimised together (bounds memory); more targets run in several batches.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="bf16 autocasts the network's forward/backward (about 2x faster on CPUs with AVX512-BF16/AMX); "
                   "auto uses it where the hardware computes bf16 natively. Images and reported values stay float32.")
@click.option("--device", default="auto", show_default=True, metavar="DEV", help="auto, cpu, cuda, cuda:N or mps.")
@output_option()
@click.option("--separate", is_flag=True, help="One PNG per channel/class (the raw image) instead of a grid per layer.")
@click.option("--titles/--no-titles", default=True, show_default=True, help="Title and channel numbers on grids.")
@click.option("--no-labels", "no_labels", is_flag=True, hidden=True)  # the earlier name of --no-titles
@click.option("--npy", is_flag=True, help="Also save the image batch as .npy, (N, H, W, 3) float32 in [0, 1].")
@json_option
def maximize(model: Any, layer: tuple[str, ...], channels: tuple[str, ...],
             classes: tuple[str, ...], objective: str, stage: str, steps: int | None, lr: float | None, size: str,
             param: str, decorrelate: bool | None, transforms: bool, batch_size: int, precision: str, device: str, output: str,
             separate: bool, titles: bool, no_labels: bool, npy: bool, as_json: bool) -> None:
    """Synthesise the image each channel responds to most (activation maximization).

    Gradient ascent in input space from a neutral start: the image is parametrised in a
    decorrelated 1/f Fourier basis and randomly padded, jittered, scaled and rotated at every step,
    which gives clean patterns instead of high-frequency noise (Lucid's recipe). All channels of a
    layer are optimised as one batch; the forward pass stops at the layer. With --class, the class
    logits (before softmax) are maximised instead. The same --seed gives the same images.

    One grid PNG per layer, {model}-{index}-{name}-maximize.png ({model}-class-maximize.png for
    classes). Pretrained weights are needed for meaningful pictures.

    \b
    Examples:
      cnnviz maximize --model vgg16 --layer block4_conv1 --channel 0:16
      cnnviz maximize --model vgg16 --layer block5_conv1 --channel 3,17 --separate --steps 512
      cnnviz maximize --model resnet50 --layer layer3.5.conv3 --objective neuron --json
      cnnviz maximize --model vgg16 --class 'tennis ball' --class goldfish -o out
      cnnviz maximize --model vgg16 --layer 0 --param pixel --no-transforms   # naive baseline
    """
    check_stream(output, as_json=as_json)
    from ..errors import UsageError
    from ..io import ensure_dir
    from ..layers import conv_layers, select_layers
    from ..optimize import DEFAULT_LR, DEFAULT_STEPS, Transforms, resolve_classes, resolve_device
    from ..select import select_indices
    from ..util import parse_size
    from .common import architecture, load

    if classes and (layer or channels):
        raise UsageError("use either --class or --layer/--channel, not both")
    if not classes and not layer:
        raise UsageError("give --layer SEL (with --channel SEL) or --class NAME; see 'cnnviz maximize --help'")
    if classes and objective == "neuron":
        raise UsageError("--objective neuron applies to --layer channels, not to --class")
    hw = parse_size(size)
    steps = DEFAULT_STEPS if steps is None else steps
    lr = DEFAULT_LR if lr is None else lr
    if not lr > 0:
        raise UsageError(f"--lr must be > 0, got {lr}")
    dev = resolve_device(device)
    to_stdout = output == "-"
    if not to_stdout:
        ensure_dir(output)
    if to_stdout and npy:
        raise UsageError("--npy needs an output folder, not -o -")

    arch = architecture(model)
    if "size" in arch.limits:  # the optimised image changes size (random padding and scaling)
        raise UsageError(f"maximize cannot run {arch.name}: {arch.limits['size']}")
    if "batch" in arch.limits:
        batch_size = 1  # one image per forward pass: the same images, more passes
    if layer:  # layers and channels are checked on the architecture before any weights are read
        for lay in select_layers(conv_layers(arch.model), layer, model_name=model.source):
            select_indices(channels or ("0:16",), lay.out_channels, what="channel",
                           hint=f"{lay.name} has {lay.out_channels} channels")
    lm = load(model, str(dev))
    if classes:
        count = _num_classes(lm)
        jobs: list[tuple[Any, list[int]]] = [(None, resolve_classes(classes, lm.categories, count=count))]
        if not lm.pretrained:
            info("cnnviz: note: random weights (--weights none): class images show no real classes")
    else:
        layers = select_layers(conv_layers(lm.model), layer, model_name=model.source)
        jobs = []
        for lay in layers:
            sel = select_indices(channels or ("0:16",), lay.out_channels, what="channel",
                                 hint=f"{lay.name} has {lay.out_channels} channels")
            jobs.append((lay, sel))
    n_files = sum(len(t) if separate else 1 for _, t in jobs)
    if to_stdout and n_files != 1:
        raise UsageError(f"-o - streams exactly one PNG, but this would write {n_files}; give an output folder")

    settings = dict(steps=steps, lr=lr, size=hw, param=param, seed=model.seed, batch_size=batch_size, precision=precision,
                    decorrelate=(param == "fft") if decorrelate is None else decorrelate,
                    transforms=Transforms() if transforms else None)
    tty = sys.stderr.isatty()
    for lay, targets in jobs:
        _run_job(lm, lay, targets, objective="class" if lay is None else objective, stage=stage, settings=settings,
                 output=output, separate=separate, labels=titles and not no_labels, npy=npy, as_json=as_json, progress=tty,
                 device=dev)


def _num_classes(lm: Any) -> int:
    from torch import nn

    linears = [m for m in lm.model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return int(linears[-1].out_features)
    if lm.categories:
        return len(lm.categories)
    if lm.num_classes:
        return int(lm.num_classes)
    from ..errors import CnnvizError

    raise CnnvizError(f"cannot tell how many classes {lm.name} outputs (no final Linear layer)")


def _run_job(lm: Any, lay: Any, targets: list[int], *, objective: str, stage: str, settings: dict[str, Any],
             output: str, separate: bool, labels: bool, npy: bool, as_json: bool, progress: bool, device: Any) -> None:
    import os

    from ..io import output_name, save_npy, save_png, stdout_binary
    from ..optimize import grid_title, maximize_grid, recipe_note
    from ..optimize import maximize as run
    from ..render import to_uint8

    if lay is None:
        what = f"{len(targets)} class logit{'s' if len(targets) > 1 else ''} of {lm.name}"
    else:
        name = f"{lay.alias} ({lay.name})" if lay.alias else lay.name
        what = f"{len(targets)} channel{'s' if len(targets) > 1 else ''} of {lm.name} {name}"
    info(f"cnnviz: maximizing {what}: {settings['steps']} steps on {device}")
    where = "logits" if lay is None else (lay.alias or lay.name)
    res = run(lm.model, targets=targets, layer=lay, objective=objective, stage=stage, mean=lm.mean, std=lm.std,
              progress=progress, desc=where, **settings)
    names = [_target_name(lm, lay, t) for t in targets]
    base: dict[str, Any] = {
        "model": lm.name, "weights": lm.weights,
        "layer": None if lay is None else lay.index, "name": "logits" if lay is None else lay.name,
        "alias": "" if lay is None else lay.alias, "stage": None if lay is None else stage, "objective": objective,
        "steps": res.steps, "lr": settings["lr"], "size": list(settings["size"]), "param": settings["param"],
        "seed": settings["seed"], "precision": res.precision, "input_size": list(res.input_size),
    }
    if lay is None:
        parts: tuple[Any, ...] = (lm.name, "class")
    else:
        parts = (lm.name, lay.index, lay.name)
    npy_path = None
    if npy:
        npy_path = save_npy(os.path.join(output, output_name(*parts, kind="maximize", ext="npy")),
                            res.images.astype("float32"))
    tiles = to_uint8(res.images)
    meta = {"Software": "cnnviz", **{k: str(v) for k, v in base.items()}}
    if separate:
        width = len(str(max(targets)))
        for i, t in enumerate(targets):
            tag = f"{t:0{width}d}" if lay is None else f"ch{t:0{width}d}"
            extra = (names[i],) if lay is None else ()
            path = "-" if output == "-" else os.path.join(output, output_name(*parts, tag, *extra, kind="maximize"))
            path = save_png(stdout_binary() if path == "-" else path, tiles[i],
                            metadata={**meta, "channels": str(t), "values": f"{res.values[i]:.6g}"})
            emit(_record(base, path, [t], [res.values[i]], names[i:i + 1], lay, npy_path), as_json=as_json)
        return
    title = grid_title(model=lm.name, weights=lm.weights, steps=res.steps, layer=lay, stage=stage, objective=objective,
                       recipe=recipe_note(param=settings["param"], decorrelate=settings["decorrelate"],
                                          transforms=settings["transforms"]))
    image = maximize_grid(tiles, targets=targets, class_names=names if lay is None else None, title=title, labels=labels)
    path = "-" if output == "-" else os.path.join(output, output_name(*parts, kind="maximize"))
    path = save_png(stdout_binary() if path == "-" else path, image,
                    metadata={**meta, "channels": ",".join(map(str, targets)),
                              "values": ",".join(f"{v:.6g}" for v in res.values)})
    emit(_record(base, path, targets, list(res.values), names, lay, npy_path), as_json=as_json)


def _target_name(lm: Any, lay: Any, t: int) -> str:
    if lay is not None:
        return str(t)
    return lm.categories[t] if t < len(lm.categories) else str(t)


def _record(base: dict[str, Any], path: str, targets: list[int], values: list[Any], names: list[str], lay: Any,
            npy_path: str | None) -> dict[str, Any]:
    rec = {"path": path, **base, "channels": targets, "values": [round(float(v), 6) for v in values]}
    if lay is None:
        rec["classes"] = names
    if npy_path:
        rec["npy"] = npy_path
    return rec
