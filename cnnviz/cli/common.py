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
            opts.append(click.option("--labels", "labels_file", default=None, metavar="FILE",
                                     help="Class names, one per line (for --class).  [default: the weights' own]"))
        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper  # type: ignore[return-value]

    return deco


def layer_option(default: str | None = None, required: bool = False) -> Callable[[F], F]:
    return click.option(
        "-l", "--layer", "layers", multiple=True, default=(default,) if default else (), required=required,
        metavar="SEL",
        help="Conv layers (repeatable): index 10, -1, name layer3.2.conv2, alias block3_conv2, "
             "slice 0:5 or ::4, list 1,5,9, glob 'layer3.*', or all."
             + (f"  [default: {default}]" if default else ""),
    )


def output_option(default: str = ".") -> Callable[[F], F]:
    return click.option(
        "-o", "--output", default=default, show_default=True, metavar="DIR",
        help="Output folder (created if needed); '-' streams the PNG to stdout when exactly one is produced.",
    )


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object per written file instead of its path.")(f)


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
        click.option("-s", "--size", default=None, metavar="S",
                     help="Resize so the shorter side is S px, keeping the aspect ratio (or exactly HxW, e.g. "
                          "224x320).  [default: the weights' crop size, 224]"),
        click.option("--crop", is_flag=True,
                     help="Centre-crop a square S x S with the classifier's own preprocessing: at the default S "
                          "exactly the weights' transforms() (e.g. ResNet-50 V2: shorter side 232, crop 224); "
                          "otherwise shorter side to S*resize/crop, then crop S."),
        click.option("--max-pixels", default=None, type=click.IntRange(min=1), metavar="N",
                     help=f"Refuse larger images (checked before decoding).  [default: {_MAX_PIXELS_HELP}]"),
    ]
    for o in reversed(opts):
        command = o(command)
    return command  # type: ignore[return-value]


# ---------------------------------------------------------------- progress (every long command)


def quiet_option(f: F) -> F:
    """-q/--quiet: no progress bar. The command receives ``quiet`` and puts it in its request (the
    job's cnnviz.progress.Progress is silent then, as it is whenever stderr is not a terminal)."""
    return click.option("-q", "--quiet", is_flag=True,
                        help="No progress bar on stderr (there is none when stderr is not a terminal).")(f)
