"""One exception family. The CLI turns every CnnvizError into one line on stderr and its exit code.

Exit codes: 1 = something failed while running (unreadable image, bad checkpoint, weights not
cached, output not writable); 2 = the command line asked for something that does not exist
(unknown model, layer, channel, class, weights name, malformed selector).
"""
from __future__ import annotations

__all__ = ["CnnvizError", "UsageError", "SelectionError", "ModelError", "TraceError", "RFError", "WeightsError",
           "ImageError", "OutputError", "IndexStoreError", "first_line"]


def first_line(exc: object, limit: int = 160, *, empty: str | None = None) -> str:
    """The first line of an exception's message, cut to ``limit`` characters: a dependency's
    multi-line error as one readable clause of ours. ``empty`` is what an empty message gives
    (default: the exception's type name). Lives here, beside the exceptions and free of torch,
    so that io and the CLI can use it too."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__ if empty is None else empty)[:limit]


class CnnvizError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class UsageError(CnnvizError):
    """The request names something that does not exist or is malformed (exit code 2)."""

    exit_code = 2


class SelectionError(UsageError):
    """A layer, channel, filter or class selector is malformed, out of range or empty."""


class ModelError(UsageError):
    """Unknown model name, or a model this command cannot analyse."""


class TraceError(ModelError):
    """torch.fx cannot trace the model (data-dependent control flow, unsupported Python)."""


class RFError(ModelError):
    """The receptive field of a requested layer cannot be computed (exit code 2)."""


class WeightsError(CnnvizError):
    """Weights cannot be loaded: not cached offline, bad checkpoint, key/shape mismatch."""


class ImageError(CnnvizError):
    """An input image is missing, unreadable, corrupt or too large."""


class OutputError(CnnvizError):
    """An output cannot be written."""


class IndexStoreError(CnnvizError):
    """An activation index is missing, damaged, busy, or belongs to another model, weights or
    preprocessing (exit code 1)."""
