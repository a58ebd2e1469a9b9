"""Shared pieces of the click layer: the group with error handling, option decorators, output.

Nothing here imports torch at module level: ``cnnviz --help`` must stay instant.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from ..errors import CnnvizError, first_line

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CommandError(click.ClickException):
    """A CnnvizError on its way out: one line on stderr, the error's exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"cnnviz: error: {self.format_message()}", err=True)


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool((root and root.obj and root.obj.get("debug")) or os.environ.get("CNNVIZ_DEBUG"))


class CnnvizCommand(click.Command):
    """A command whose callback runs with stdout reserved for its data (io.data_stdout): anything
    else printed meanwhile, by cnnviz or a dependency, goes to stderr. Help and usage errors are
    printed before, during parsing, and go where click sends them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        resolve_deprecated(ctx)
        return rest

    def invoke(self, ctx: click.Context) -> Any:
        from ..io import data_stdout

        with data_stdout():
            return super().invoke(ctx)


class CnnvizGroup(click.Group):
    """click.Group that turns library errors into one-line messages with documented exit codes;
    its commands share CONTEXT_SETTINGS (-h, 100 columns)."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        return super().command(*args, **kwargs)

    command_class = CnnvizCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CnnvizError as exc:
            if _debug():
                traceback.print_exc()
            raise CommandError(str(exc), exc.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("cnnviz: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): not an error of ours.
            try:
                sys.stdout = open(os.devnull, "w")
            finally:
                ctx.exit(141)
        except MemoryError:
            raise CommandError("out of memory; try a smaller --size, fewer layers or a smaller --batch-size", 1) from None
        except Exception as exc:  # a bug: still one line, the traceback only on request
            if _debug():
                raise
            raise CommandError(
                f"internal error {type(exc).__name__}: {first_line(exc, 200, empty='')} (rerun with --debug for the traceback and report it)", 1
            ) from None


def model_options(default_model: str = "resnet50", weights: bool = True, labels: bool = True) -> Callable[[F], F]:
    """--model and the options that go with it (--weights, --seed, --model-args, --mean, --std,
    --channels-in, --labels). The command receives them as one ``model`` argument, a
    :class:`cnnviz.sources.ModelSpec`."""

    def deco(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kw: Any) -> Any:
            from ..sources import ModelSpec, parse_floats

            kw["model"] = ModelSpec(
                source=kw.pop("model"), weights=kw.pop("weights", "DEFAULT"), seed=kw.pop("seed", 0),
                model_args=kw.pop("model_args"), mean=parse_floats(kw.pop("mean"), what="mean"),
                std=parse_floats(kw.pop("std"), what="std"), channels_in=kw.pop("channels_in"),
                labels=kw.pop("labels_file", None),
            )
            return f(*args, **kw)

        opts = [
            click.option("-m", "--model", default=default_model, show_default=True, metavar="SOURCE",
                         help="A torchvision model name ('cnnviz models'), timm:NAME, FILE.py:Factory or "
                              "package.module:Class (your own code, run as Python), a TorchScript .pt or a "
                              "torch.export .pt2 file."),
        ]
        if weights:
            opts += [
                click.option("-w", "--weights", default="DEFAULT", show_default=True, metavar="W",
                             help="DEFAULT (torchvision/timm: pretrained, from the hub cache, downloaded once; "
                                  "your code: what it builds), an enum name such as IMAGENET1K_V1, 'none' "
                                  "(random, seeded) or a checkpoint file path. CNNVIZ_OFFLINE=1: never download."),
                click.option("--seed", default=0, show_default=True, type=int,
                             help="Seed for random weights (--weights none) and anything random."),
            ]
        opts += [
            click.option("--model-args", default=None, metavar="JSON",
                         help="Arguments for a FILE.py:Factory model: a JSON object (keywords) or list.", ),
            click.option("--mean", default=None, metavar="M",
                         help="Input normalisation mean, 1 or one per channel (0.5 or 0.485,0.456,0.406).  "
                              "[default: the model's own, else ImageNet's for RGB, 0.5 for grayscale]"),
            click.option("--std", default=None, metavar="S", help="Input normalisation std (as --mean)."),
            click.option("--channels-in", type=click.Choice(["1", "3"]), default=None,
                         callback=lambda c, p, v: None if v is None else int(v),
                         help="Input channels: 1 feeds grayscale images.  [default: the first conv's]"),
        ]
        if labels:
            opts.append(labels_option)
        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper  # type: ignore[return-value]

    return deco


def layer_option(default: str | None = None, required: bool = False, help: str | None = None) -> Callable[[F], F]:
    """-l/--layer SEL (repeatable): the layers, in the selector grammar (cnnviz/select.py)."""
    return _vocab(
        "--layer", "layers", multiple=True, default=(default,) if default else (), required=required,
        metavar="SEL",
        help=help or ("Conv layers (repeatable): index 10, -1, name layer3.2.conv2, alias block3_conv2, "
                      "slice 0:5 or ::4, list 1,5,9, glob 'layer3.*', or all."
                      + (f"  [default: {default}]" if default else "")),
    )


def output_option(default: str = ".", help: str | None = None) -> Callable[[F], F]:
    """-o/--output DIR ('-': the one PNG to stdout)."""
    return _vocab(
        "--output", default=default, show_default=True, metavar="DIR",
        help=help or "Output folder (created if needed); '-' streams the PNG to stdout when exactly one is produced.",
    )


def json_option(f: F | None = None, *, help: str = "Print one JSON object per written file instead of its path.") -> Any:
    """--json: JSON records on stdout (``@json_option``, or ``@json_option(help=...)``)."""
    deco = _vocab("--json", "as_json", is_flag=True, default=False, help=help)
    return deco if f is None else deco(f)


def check_stream(output: str, *, as_json: bool) -> None:
    """``-o -`` puts PNG bytes on stdout, so --json may not."""
    if output == "-" and as_json:
        from ..errors import UsageError

        raise UsageError("--json and -o - both write to stdout; give an output folder with --json")


def sink(output: str, *, as_json: bool) -> Any:
    """The job's :class:`cnnviz.jobs.output.Output` for ``-o`` (after :func:`check_stream`): it
    prints each written file's record on stdout (see :func:`emit`)."""
    from ..jobs.output import Output

    check_stream(output, as_json=as_json)
    return Output(output, on_record=lambda record: emit(record, as_json=as_json))


def emit(record: dict[str, Any], *, as_json: bool) -> None:
    """Report one written file on stdout: its path, or the JSON record."""
    if as_json:
        out(json.dumps(record, default=_jsonable))
    elif record.get("path") not in (None, "-"):
        out(record["path"])


def out(text: str) -> None:
    """One line of the command's data on the real stdout (see io.data_stdout); a progress bar on
    the same terminal is cleared first and redrawn below it (cnnviz.progress.around_bars)."""
    from ..io import stdout_text
    from ..progress import around_bars

    around_bars(lambda line: click.echo(line, file=stdout_text()))(text)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def info(message: str) -> None:
    """A message for people: stderr, never stdout."""
    click.echo(message, err=True)


# ---------------------------------------------------------------- image input (maps, rf, ...)

# Literal so that `--help` needs no numpy/PIL import; tests check it equals io.DEFAULT_MAX_PIXELS.
_MAX_PIXELS_HELP = 64_000_000


def image_options(f: F) -> F:
    """IMAGE... arguments ('-' = stdin), --sample, --size, --crop, --max-pixels, handed to the
    command as one ``inputs`` argument: a :class:`cnnviz.jobs.inputs.ImageInputs` for its request."""

    @functools.wraps(f)
    def command(*args: Any, images: tuple[str, ...], sample: bool, size: str | None, crop: bool,
                max_pixels: int | None, **kwargs: Any) -> Any:
        from ..jobs.inputs import ImageInputs

        inputs = ImageInputs(images=images, sample=sample, size=size, crop=crop, max_pixels=max_pixels)
        return f(*args, inputs=inputs, **kwargs)

    opts = [
        click.argument("images", nargs=-1, metavar="[IMAGE]..."),
        click.option("--sample", is_flag=True,
                     help="Use the bundled sample photo (matplotlib's grace_hopper.jpg) as an input image."),
        size_option(help="Resize so the shorter side is S px, keeping the aspect ratio (or exactly HxW, e.g. "
                         "224x320).  [default: the weights' crop size, 224]"),
        crop_option(help="Centre-crop a square S x S with the classifier's own preprocessing: at the default S "
                         "exactly the weights' transforms() (e.g. ResNet-50 V2: shorter side 232, crop 224); "
                         "otherwise shorter side to S*resize/crop, then crop S."),
        max_pixels_option(help="Refuse larger images (checked before decoding)."),
    ]
    for o in reversed(opts):
        command = o(command)
    return command  # type: ignore[return-value]


# ---------------------------------------------------------------- the option vocabulary
#
# One concept = one long name, one short flag (or none), one default unless a reason is stated.
# CONCEPTS is the table docs/options.md shows (scripts/options_table.py writes it; a test checks it
# is current); the decorators below are the only place the cli modules get these options from, and
# tests/test_vocabulary.py fails when a command declares a concept its own way.

PER_COMMAND = "per command"


@dataclass(frozen=True)
class Concept:
    """One entry of the vocabulary. ``default`` is the click default every command uses (``None``
    and ``()`` both mean "not given"), or PER_COMMAND; ``differs`` names each command whose default
    (or what "not given" means there) differs, with the reason the docs state."""

    what: str
    long: str
    short: str | None
    default: Any
    shown: str
    differs: dict[str, str] = field(default_factory=dict)
    flag: bool = False
    pair: bool = False  # a --NAME/--no-NAME switch


CONCEPTS: dict[str, Concept] = {c.long: c for c in [
    Concept("layer selection", "--layer", "-l", PER_COMMAND,
            "per command: filters 0, report all, maps and ablate required, rf each stage's last conv, cam the last activation",
            {"*": "what is worth looking at differs: a first layer's filters, every layer of a report, the layer "
                  "a CAM is defined on"}),
    Concept("channel selection (the layer's output channels)", "--channels", "-c", None,
            "all; maximize 0:16; rf none (each layer's centre unit)",
            {"maximize": "each channel is an optimisation of its own",
             "rf": "a box is drawn for a unit: the centre one, or with --channels where each channel peaks"}),
    Concept("filters: input-channel selection", "--inputs", None, None,
            "all, capped by --max-inputs (channels mode and 1x1 heatmaps only)"),
    Concept("the class to explain or synthesise", "--class", None, None,
            "cam: the top-1 prediction; maximize: none (channels instead)"),
    Concept("a region of the image to explain (a mask image: non-zero pixels are in it)", "--region", None, None,
            "none (cam on a segmentation model: the pixels predicted as the class)"),
    Concept("K best-ranked (channels in maps and report, classes in cam)", "--top", "-k", PER_COMMAND,
            "per command: maps and cam off, report 16, compare 10 (channels that changed most)",
            {"*": "a report page needs a bounded number of maps; maps and cam show what you select"}),
    Concept("dataset examples per channel", "--examples", "-n", 9, "9"),
    Concept("a 'cnnviz top' index folder", "--index", None, None, "none"),
    Concept("value normalisation (which values share one colour scale)", "--norm", None, PER_COMMAND,
            "maps map, filters layer",
            {"*": "what is compared differs: a map's own pattern (maps), weights of one layer on one signed scale "
                  "(filters)"}),
    Concept("tile size in pixels", "--tile", None, PER_COMMAND, "maps 64, filters 48, top 112",
            {"*": "the data differ in size: a feature map, a 3x3 kernel, an image patch"}),
    Concept("captions and legends (all text drawn on a picture)", "--captions", None, True, "on", flag=True, pair=True),
    Concept("filters: index numbers over tiles", "--tile-numbers", None, False, "off", flag=True),
    Concept("class-names file", "--labels", None, None, "the weights' own"),
    Concept("centre crop", "--crop", None, False, "off; top on, ablate on, compare on",
            {"top": "a dataset scan batches images of mixed sizes, and patches must be comparable",
             "ablate": "images are batched, as in top, and mean-ablation averages images of one size",
             "compare": "the images stream through both models in batches; flattened features need one size"},
            flag=True, pair=True),
    Concept("stage: conv output or after its activation", "--stage", None, "conv", "conv; cam act, ablate act, compare act",
            {"cam": "CAM methods are defined on what the network passes on, as in pytorch-grad-cam",
             "ablate": "removing a channel means removing what the network passes on (as cam)",
             "compare": "a representation is what a layer passes on (Kornblith et al. 2019 compare post-activation "
                        "features)"}),
    Concept("colormap", "--cmap", None, PER_COMMAND,
            "by data: viridis (maps, report, compare), RdBu_r (filters), inferno (cam, top)",
            {"*": "by data: unsigned maps (viridis), signed weights (RdBu_r), heat over a photo (inferno)"}),
    Concept("batch size", "--batch-size", "-b", PER_COMMAND, "per command",
            {"*": "memory per item differs: an image forward pass, a maximised image, masked copies"}),
    Concept("output folder", "--output", "-o", ".", ".; report report", {"report": "a site is a folder of its own"}),
    Concept("JSON records on stdout", "--json", None, False, "off", flag=True),
    Concept("input size (S or HxW)", "--size", "-s", None, "the source's (the weights' crop size, 224); maximize 128",
            {"maximize": "an optimised image has no source; the model sees it upscaled to >= 224"}),
    Concept("device", "--device", None, "auto",
            "auto: CUDA, then MPS, then the CPU (one stderr line, `cnnviz: device: cuda:0 (NAME)`, when it picks an "
            "accelerator)"),
    Concept("precision", "--precision", None, "fp32", "fp32; maximize auto",
            {"maximize": "an optimised picture needs no exact numbers; bf16 is about 2x faster where native"}),
    Concept("quiet (no progress)", "--quiet", "-q", False, "off", flag=True),
    Concept("largest image accepted, in pixels (checked before decoding)", "--max-pixels", None, None,
            "64,000,000 (maps, rf, cam, report refuse a larger image; top, compare, ablate skip it with a warning)"),
    Concept("processes decoding images ahead of the model", "--workers", None, None,
            "min(4, CPUs); compare half of that per model; ablate 0",
            {"compare": "two models each read the images: the decoders are split between them",
             "ablate": "the images are decoded once and kept in memory for every removal"}),
    Concept("stop at the first unreadable or missing file", "--strict", None, False,
            "off (the file is skipped with a one-line warning, exit 0)", flag=True),
    Concept("model B, compared with model A (--model)", "--with", None, None,
            "none (compare requires it; report adds a comparison page)"),
    Concept("model B's weights", "--with-weights", None, "DEFAULT", "DEFAULT (the source's own)"),
    Concept("model B's --model-args", "--with-model-args", None, None, "none"),
    Concept("do only part I of N of the work (one machine of N), combined afterwards", "--shard", None, None,
            "none (all of it); top: images by path, combined by 'top merge'; ablate: blocks of channels, combined by "
            "the run without --shard"),
    Concept("where the work runs: this process, or a Ray cluster", "--engine", None, "local", "local"),
    Concept("detectors: explain every detection scoring at least this", "--score-threshold", None, 0.5, "0.5"),
    Concept("detectors: explain the K-th detection only (0 = the best)", "--box", None, None,
            "none (every detection above --score-threshold)"),
]}

# Old spellings, per command: hidden options that print one deprecation line and act as the new
# spelling (a flag alias as that flag, e.g. --bare as --no-captions). docs/options.md lists them.
DEPRECATED: dict[str, dict[str, str]] = {
    "maps": {"--bare": "--no-captions"},
    "cam": {"-c": "--class", "--bare": "--no-captions"},
    "filters": {"--filters": "--channels", "--labels": "--tile-numbers", "--legend": "--captions",
                "--no-legend": "--no-captions", "--tile-size": "--tile", "--max-channels": "--max-inputs"},
    "maximize": {"--channel": "--channels", "--titles": "--captions", "--no-titles": "--no-captions",
                 "--no-labels": "--no-captions"},
    "rf": {"--channel": "--channels"},
    "top": {"-k": "--examples"},
}

# Renames that could not keep the old meaning: the old spelling now means something else.
BREAKING: dict[str, dict[str, str]] = {
    "filters": {"--channels": "--inputs (input channels); --channels now selects the filters (output channels), "
                              "as everywhere else"},
}


class VocabOption(click.Option):
    """An option declared by one of the shared decorators: ``concept`` is its CONCEPTS key."""

    def __init__(self, *args: Any, concept: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.concept = concept


class DeprecatedOption(click.Option):
    """A hidden old spelling (``old``) standing for ``new``; see resolve_deprecated."""

    def __init__(self, *args: Any, old: str, new: str, **kwargs: Any):
        super().__init__(*args, hidden=True, **kwargs)
        self.old, self.new = old, new


def _vocab(long: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    c = CONCEPTS[long]
    names = [n for n in (c.short, f"{long}/--no-{long[2:]}" if c.pair else long) if n]
    return click.option(*names, *decls, cls=VocabOption, concept=long, **kwargs)


def deprecated_aliases(command: str) -> Callable[[F], F]:
    """The hidden old spellings of ``command`` (DEPRECATED[command]). A flag's old spelling is a
    flag; any other takes the values of the new option (repeatable; the last one counts where the
    new option takes one)."""

    def deco(f: F) -> F:
        for old, new in reversed(DEPRECATED[command].items()):  # warnings come in the table's order
            flag = _is_flag_spelling(new)
            dest = "deprecated_" + old.lstrip("-").replace("-", "_")
            f = click.option(old, dest, cls=DeprecatedOption, old=old, new=new, is_flag=flag,
                             multiple=not flag, default=False if flag else ())(f)
        return f

    return deco


def _is_flag_spelling(spelling: str) -> bool:
    c = CONCEPTS.get(spelling) or CONCEPTS.get("--" + spelling[5:] if spelling.startswith("--no-") else "")
    return bool(c and c.flag)


def resolve_deprecated(ctx: click.Context) -> None:
    """Move the values of old spellings given on the command line to their new options, with one
    warning line each; an old and a new spelling (or two old ones) that disagree are a usage error."""
    from click.core import ParameterSource

    given: dict[str, tuple[str, Any]] = {}  # new param name -> (spelling, value) from the command line
    for p in ctx.command.params:
        if isinstance(p, click.Option) and not isinstance(p, DeprecatedOption) and p.name in ctx.params \
                and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE:
            value = ctx.params[p.name]
            given[p.name] = (p.secondary_opts[-1] if p.secondary_opts and value is False else p.opts[-1], value)
    warnings = []
    for p in ctx.command.params:
        if not isinstance(p, DeprecatedOption) or p.name not in ctx.params:
            continue
        raw = ctx.params.pop(p.name)
        if ctx.get_parameter_source(p.name) != ParameterSource.COMMANDLINE or raw in (False, ()):
            continue
        target = next(q for q in ctx.command.params if isinstance(q, click.Option) and not isinstance(q, DeprecatedOption)
                      and p.new in (*q.opts, *q.secondary_opts))
        if p.is_flag:  # the new spelling is a boolean flag: --NAME means True, --no-NAME False
            value = p.new in target.opts
        else:
            value = target.process_value(ctx, raw if target.multiple else raw[-1])
        if target.name in given and given[target.name][1] != value:
            raise click.UsageError(f"{p.old} (deprecated for {p.new}) and {given[target.name][0]} disagree; give only "
                                   f"{p.new}", ctx)
        warnings.append(f"cnnviz: warning: {p.old} is deprecated; use {p.new}")
        given[target.name] = (p.old, value)
        ctx.params[target.name] = value
    for line in warnings:  # only once every spelling agrees
        click.echo(line, err=True)


# ---------------------------------------------------------------- the shared option decorators

def channels_option(*, multiple: bool = False, help: str | None = None) -> Callable[[F], F]:
    """-c/--channels SEL: the layer's output channels (a single selector, or repeatable)."""
    return _vocab("--channels", "channels", multiple=multiple, metavar="SEL",
                  help=help or "Channels of the layer's output: 0:16, 3,7,9, -1, ::4, all.  [default: all]")


def inputs_option(*, help: str) -> Callable[[F], F]:
    """--inputs SEL (filters): the input channels of the kernels."""
    return _vocab("--inputs", "inputs", multiple=True, metavar="SEL", help=help)


def class_option(*, help: str) -> Callable[[F], F]:
    """--class NAME|INDEX (repeatable): classes by name (weights' categories or --labels) or index."""
    return _vocab("--class", "classes", multiple=True, metavar="NAME|INDEX", help=help)


def region_option(*, help: str) -> Callable[[F], F]:
    """--region MASK.png: the pixels a dense target sums over (non-zero pixels of the mask)."""
    return _vocab("--region", "region", type=click.Path(dir_okay=False), default=None, metavar="MASK", help=help)


def top_option(*, default: int | None = None, help: str) -> Callable[[F], F]:
    """-k/--top K: the K best-ranked channels (maps, report) or classes (cam)."""
    return _vocab("--top", "top", type=click.IntRange(min=1), default=default, show_default=default is not None,
                  metavar="K", help=help)


def score_threshold_option(*, help: str) -> Callable[[F], F]:
    """--score-threshold P: a detector's detections scoring at least P (cam)."""
    return _vocab("--score-threshold", "score_threshold", type=click.FloatRange(0.0, 1.0),
                  default=CONCEPTS["--score-threshold"].default, show_default=True, metavar="P", help=help)


def box_option(*, help: str) -> Callable[[F], F]:
    """--box K: a detector's K-th detection (0-based, best first) alone (cam)."""
    return _vocab("--box", "box", type=click.IntRange(min=0), default=None, metavar="K", help=help)


def examples_option(*, most: int, help: str = "Dataset examples per channel.") -> Callable[[F], F]:
    """-n/--examples K: dataset examples per channel (top, report)."""
    return _vocab("--examples", "examples", type=click.IntRange(1, most), default=CONCEPTS["--examples"].default,
                  show_default=True, metavar="K", help=help)


def index_option(*, exists: bool, help: str) -> Callable[[F], F]:
    """--index DIR: a 'cnnviz top' index (written by top; read by report, which needs it to exist)."""
    kind = click.Path(exists=True, file_okay=False) if exists else None  # top checks (and creates) it itself
    return _vocab("--index", "index", default=None, metavar="DIR", type=kind, help=help)


def shard_option(*, help: str) -> Callable[[F], F]:
    """--shard I/N: this run does part I of N (0 <= I < N); how parts are combined is per command."""
    return _vocab("--shard", "shard", default=None, metavar="I/N", help=help)


def engine_option(*, help: str) -> Callable[[F], F]:
    """--engine local|ray: where the work runs (ray: joins a running cluster, else starts a local one)."""
    return _vocab("--engine", "engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help=help)


def norm_option(default: str, *, choices: list[str], help: str) -> Callable[[F], F]:
    """--norm: which values share one colour scale (the choices follow the data)."""
    return _vocab("--norm", "norm", type=click.Choice(choices), default=default, show_default=True, help=help)


def tile_option(default: int, *, least: int, most: int, help: str) -> Callable[[F], F]:
    """--tile PX: the size of one tile in a picture (a map, a kernel, a patch)."""
    return _vocab("--tile", "tile", type=click.IntRange(least, most), default=default, show_default=True,
                  metavar="PX", help=help)


def captions_option(*, help: str) -> Callable[[F], F]:
    """--captions/--no-captions: every text drawn on the picture (titles, numbers, legends)."""
    return _vocab("--captions", "captions", default=True, show_default=True, help=help)


def tile_numbers_option(*, help: str) -> Callable[[F], F]:
    """--tile-numbers: index numbers over the tiles (filters)."""
    return _vocab("--tile-numbers", "tile_numbers", is_flag=True, default=False, help=help)


def labels_option(f: F) -> F:
    """--labels FILE: class names, one per line."""
    return _vocab("--labels", "labels_file", default=None, metavar="FILE",
                  help="Class names, one per line (for --class).  [default: the weights' own]")(f)


def crop_option(default: bool = False, *, help: str) -> Callable[[F], F]:
    """--crop/--no-crop: the classifier's own resize and centre crop."""
    return _vocab("--crop", "crop", default=default, show_default=True, help=help)


def stage_option(default: str = "conv", *, help: str) -> Callable[[F], F]:
    """--stage conv|act: the conv's own output or what the network passes on after its activation."""
    return _vocab("--stage", "stage", type=click.Choice(["conv", "act"]), default=default, show_default=True, help=help)


def cmap_option(default: str, *, help: str = "Any matplotlib colormap.") -> Callable[[F], F]:
    """--cmap NAME: a matplotlib colormap (the default follows the data: see CONCEPTS)."""
    return _vocab("--cmap", "cmap", default=default, show_default=True, metavar="NAME", help=help)


def batch_size_option(default: int, *, help: str) -> Callable[[F], F]:
    """-b/--batch-size N: items per forward pass (the default follows the memory one item takes)."""
    return _vocab("--batch-size", "batch_size", type=click.IntRange(min=1), default=default, show_default=True,
                  metavar="N", help=help)


def size_option(default: str | None = None, *, help: str) -> Callable[[F], F]:
    """-s/--size S|HxW: the input size."""
    return _vocab("--size", "size", default=default, show_default=default is not None, metavar="S", help=help)


def max_pixels_option(*, help: str) -> Callable[[F], F]:
    """--max-pixels N: the largest image accepted (an image commands refuses, a dataset scan skips)."""
    return _vocab("--max-pixels", "max_pixels", default=None, type=click.IntRange(min=1), metavar="N",
                  help=f"{help}  [default: {_MAX_PIXELS_HELP}]")


def scan_options(*, workers: int | None = None, workers_help: str, strict_help: str | None = None) -> Callable[[F], F]:
    """The options of the commands that stream a dataset (top, compare, ablate): --max-pixels (a
    larger image is skipped), --workers (decoding processes; ``workers`` is the command's default,
    None: chosen at run time as ``workers_help`` says) and --strict."""

    def deco(f: F) -> F:
        f = _vocab("--strict", "strict", is_flag=True, default=False,
                   help=strict_help or "Stop at the first unreadable file instead of skipping it with a warning.")(f)
        f = _vocab("--workers", "workers", type=click.IntRange(min=0), default=workers, show_default=workers is not None,
                   metavar="N", help=workers_help)(f)
        return max_pixels_option(help="Skip larger images with a warning (checked before decoding).")(f)

    return deco


def with_model_options(*, required: bool, help: str) -> Callable[[F], F]:
    """--with SOURCE, --with-weights W, --with-model-args JSON: model B of a comparison (compare,
    report's comparison page), any source --model takes. The command gets ``with_source``,
    ``with_weights`` and ``with_model_args``."""

    def deco(f: F) -> F:
        f = _vocab("--with-model-args", "with_model_args", default=None, metavar="JSON", help="B's --model-args.")(f)
        f = _vocab("--with-weights", "with_weights", default="DEFAULT", show_default=True, metavar="W",
                   help="B's weights, as --weights (e.g. a second checkpoint of the same architecture).")(f)
        return _vocab("--with", "with_source", required=required, default=None, metavar="SOURCE", help=help)(f)

    return deco


# ---------------------------------------------------------------- --device, --precision (commands that run a model)

# Literals so that --help needs no torch import; tests check them against cnnviz.device.
_PRECISIONS = ("auto", "fp32", "bf16")


def device_options(precision: str = "fp32", note: str = "") -> Callable[[F], F]:
    """--device and --precision (cnnviz.device resolves them), passed to the command as the
    ``device`` and ``precision`` arguments of its request. ``precision``: the command's default
    (CONCEPTS: fp32; maximize auto); ``note``: a sentence on what the command does with bf16."""

    def deco(f: F) -> F:
        f = _vocab("--precision", "precision", type=click.Choice(_PRECISIONS), default=precision, show_default=True,
                   help="fp32; bf16: the network's forward pass (and the backward pass of gradient methods) "
                        "autocast to bfloat16, about 2x faster where the hardware computes it natively (recent "
                        "GPUs, CPUs with AVX512-BF16/AMX); auto: bf16 where native, else fp32. Captured maps "
                        "and reported values stay float32." + (f" {note}" if note else ""))(f)
        return _vocab("--device", "device", default="auto", show_default=True, metavar="DEV",
                      help="Where the model runs: auto (CUDA, then MPS, then the CPU; an accelerator it picks "
                           "is named on stderr), cpu, cuda, cuda:N or mps.")(f)

    return deco


# ---------------------------------------------------------------- progress (every long command)


def quiet_option(f: F) -> F:
    """-q/--quiet: no progress bar. The command receives ``quiet`` and puts it in its request (the
    job's cnnviz.progress.Progress is silent then, as it is whenever stderr is not a terminal)."""
    return _vocab("--quiet", "quiet", is_flag=True, default=False,
                  help="No progress on stderr (a progress bar is drawn only when stderr is a terminal).")(f)
