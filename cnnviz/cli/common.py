"""Shared pieces of the click layer: the group with error handling, option decorators, output.

Nothing here imports torch at module level: ``cnnviz --help`` must stay instant.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from ..errors import CnnvizError

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
    """click.Group that turns library errors into one-line messages with documented exit codes."""

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
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise CommandError(
                f"internal error {type(exc).__name__}: {first} (rerun with --debug for the traceback and report it)", 1
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
        "-l", "--layer", "layer", multiple=True, default=(default,) if default else (), required=required,
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
    """``-o -`` puts PNG bytes on stdout, so nothing else may go there."""
    if output == "-" and as_json:
        from ..errors import UsageError

        raise UsageError("--json and -o - both write to stdout; give an output folder with --json")


def emit(record: dict[str, Any], *, as_json: bool) -> None:
    """Report one written file on stdout: its path, or the JSON record."""
    if as_json:
        out(json.dumps(record, default=_jsonable))
    elif record.get("path") not in (None, "-"):
        out(record["path"])


def out(text: str) -> None:
    """One line of the command's data on the real stdout (see io.data_stdout)."""
    from ..io import stdout_text

    click.echo(text, file=stdout_text())


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def info(message: str) -> None:
    """A message for people: stderr, never stdout."""
    click.echo(message, err=True)


def load(model: Any, device: str = "cpu") -> Any:
    """Load a model (a ModelSpec or source string) for a command (one place, so benchmarks can
    substitute a preloaded one)."""
    from ..sources import load as load_source

    return load_source(model, device=device)


def architecture(model: Any) -> Any:
    """The model's structure and preprocessing (a LoadedModel, on 'meta' where possible): for
    checking a request before any weights are read."""
    from ..sources import architecture as arch

    return arch(model)


# ---------------------------------------------------------------- image input (maps, rf, ...)

# Literal so that `--help` needs no numpy/PIL import; tests check it equals io.DEFAULT_MAX_PIXELS.
_MAX_PIXELS_HELP = 64_000_000


def image_options(f: F) -> F:
    """IMAGE... arguments ('-' = stdin), --sample, --size, --crop, --max-pixels.

    The command receives ``images``, ``sample``, ``size``, ``crop``, ``max_pixels``; pass them on
    to :func:`read_images` together with the LoadedModel.
    """
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
        f = o(f)
    return f


class InputImage:
    """One preprocessed input: ``x`` (3, H, W) float32 normalised with the weights' mean/std,
    ``display`` (H, W, 3) uint8 (the same pixels before normalisation), ``source`` (path, '-' or the
    sample path) and ``label`` (the stem used in output names, unique within one run)."""

    __slots__ = ("source", "label", "x", "display")

    def __init__(self, source: str, label: str, x: Any, display: Any):
        self.source, self.label, self.x, self.display = source, label, x, display


def parse_image_size(size: str | int | None, default: int) -> int | tuple[int, int]:
    """--size: None -> ``default``; '300' -> 300 (shorter side); '224x320' -> (224, 320) exact (H, W)."""
    from ..errors import UsageError
    from ..util import parse_size

    if size is None:
        return int(default)
    text = str(size).strip()
    if text.isdigit():
        s = int(text)
        if not 1 <= s <= 8192:
            raise UsageError(f"--size {s} out of range; use 1..8192 pixels")
        return s
    return parse_size(text)


def model_input_size(size: str | int | None, lm: Any, *, crop: bool = False) -> int | tuple[int, int]:
    """--size for ``lm``: the weights' crop size by default; exactly the size a model accepts when it
    accepts only one (an exported program with static shapes). Raises UsageError."""
    from ..errors import UsageError

    if lm.input_hw is None:
        return parse_image_size(size, lm.crop_size)
    h, w = lm.input_hw
    wanted = parse_image_size(size, h) if size is not None else None
    if wanted is not None and wanted not in ((h, w), h if h == w else None):
        raise UsageError(f"--size {size}: {lm.limits.get('size', 'the model takes one input size only')}")
    if crop:
        if h != w:
            raise UsageError(f"--crop makes square inputs, but {lm.limits.get('size', 'the model takes one size only')}")
        return h
    return (h, w)


def check_images(
    images: tuple[str, ...] | list[str],
    *,
    sample: bool,
    size: str | int | None,
    crop: bool,
    default_size: int = 224,
) -> list[str]:
    """Validate the image arguments without reading any pixels (call it before loading weights):
    at least one input, '-' at most once, a valid --size, every file present. Returns the sources."""
    from ..errors import UsageError
    from ..io import sample_image_path

    sources = list(images) + ([sample_image_path()] if sample else [])
    if not sources:
        raise UsageError("no input image: pass IMAGE files, '-' to read one from stdin, or --sample")
    if sources.count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    target = parse_image_size(size, default_size)
    if crop and isinstance(target, tuple):
        raise UsageError("--crop takes a single --size (the square's side), not HxW")
    for s in sources:  # fail before any work if a later file is missing
        if s != "-":
            _check_exists(s)
    return sources


def read_images(
    images: tuple[str, ...] | list[str],
    *,
    sample: bool,
    size: str | int | None,
    crop: bool,
    max_pixels: int | None,
    lm: Any,
) -> Iterator[InputImage]:
    """Check every input up front (see check_images), then load and preprocess them lazily, one
    by one, with ``lm``'s mean/std and crop/resize sizes. Raises UsageError / ImageError."""
    from ..io import DEFAULT_MAX_PIXELS

    sources = check_images(images, sample=sample, size=size, crop=crop, default_size=lm.crop_size)
    target = model_input_size(size, lm, crop=crop)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    return _iter_images(sources, target, crop, limit, lm)


def _check_exists(path: str) -> None:
    from ..errors import ImageError

    if not os.path.exists(path):
        raise ImageError(f"image {path!r} does not exist")
    if os.path.isdir(path):
        raise ImageError(f"image {path!r} is a directory; pass image files")


def _iter_images(sources: list[str], target: Any, crop: bool, limit: int, lm: Any) -> Iterator[InputImage]:
    from ..io import image_label, load_image, preprocess, stdin_binary

    seen: dict[str, int] = {}
    for s in sources:
        src: Any = stdin_binary().read() if s == "-" else s
        img = load_image(src, max_pixels=limit)
        x, disp = preprocess(img, size=target, crop=crop, resize_size=lm.resize_size, crop_size=lm.crop_size,
                             mean=lm.mean, std=lm.std, interpolation=lm.interpolation, channels=lm.channels_in)
        label = image_label(src)
        n = seen.get(label, 0) + 1
        seen[label] = n
        yield InputImage(s, label if n == 1 else f"{label}_{n}", x, disp)
