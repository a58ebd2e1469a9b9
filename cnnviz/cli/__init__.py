"""The cnnviz command line: a thin click layer over the library (no torch import at start-up)."""
from __future__ import annotations

import click

from .. import __version__
from .common import CONTEXT_SETTINGS, CnnvizGroup


@click.group(cls=CnnvizGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="cnnviz")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Look inside convolutional neural networks: layers, filters, feature maps.

    \b
    Examples:
      cnnviz layers --model resnet50
      cnnviz filters --model vgg16 --layer 0
      cnnviz maps --sample --layer 10

    Written paths (or JSON with --json) go to stdout, messages to stderr.
    Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# Each module registers its commands on `cli` when imported (none of them imports torch at import).
from . import ablate, cam, compare, filters, layers, maps, maximize, report, rf, top  # noqa: E402,F401

__all__ = ["cli", "main"]


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM takes the same path as Ctrl-C: `finally` blocks remove temp files, exit code 130.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="cnnviz")
