"""Shared pieces of the click layer: the group with error handling, option decorators, output.

Nothing here imports torch at module level: ``cnnviz --help`` must stay instant.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
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


class CnnvizGroup(click.Group):
    """click.Group that turns library errors into one-line messages with documented exit codes."""

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


def model_options(default_model: str = "resnet50", weights: bool = True) -> Callable[[F], F]:
    """--model, --weights, --seed (and --device) shared by every command that loads a model."""

    def deco(f: F) -> F:
        opts = [
            click.option("-m", "--model", default=default_model, show_default=True, metavar="NAME",
                         help="Any torchvision classification model ('cnnviz models' lists them)."),
        ]
        if weights:
            opts += [
                click.option("-w", "--weights", default="DEFAULT", show_default=True, metavar="W",
                             help="DEFAULT (pretrained, from the torch hub cache, downloaded once), an enum name "
                                  "such as IMAGENET1K_V1, 'none' (random, seeded) or a checkpoint file path. "
                                  "Set CNNVIZ_OFFLINE=1 to never download."),
                click.option("--seed", default=0, show_default=True, type=int,
                             help="Seed for random weights (--weights none) and anything random."),
            ]
        for o in reversed(opts):
            f = o(f)
        return f

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


def emit(record: dict[str, Any], *, as_json: bool) -> None:
    """Report one written file on stdout: its path, or the JSON record."""
    if as_json:
        click.echo(json.dumps(record, default=_jsonable))
    elif record.get("path") not in (None, "-"):
        click.echo(record["path"])


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def info(message: str) -> None:
    """A message for people: stderr, never stdout."""
    click.echo(message, err=True)


def load(model: str, weights: str = "DEFAULT", seed: int = 0, device: str = "cpu") -> Any:
    """Load a model for a command, with a short note on stderr."""
    from ..models import load_model

    lm = load_model(model, weights=weights, seed=seed, device=device)
    return lm
