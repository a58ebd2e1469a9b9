"""Where a job's files go: :class:`Output`, the one sink every job writes through.

``Output("out")`` writes each file atomically into the folder ``out`` (created on
:meth:`Output.prepare`); ``Output("-")`` streams exactly one PNG to stdout. Either way the job
reports each written file as one record (a JSON-ready dict with at least ``"path"``), delivered
at once to ``on_record`` (the CLI prints it) or kept in :attr:`Output.records`.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np

from ..errors import UsageError
from ..io import ensure_dir, option_tags, save_npy, save_png, stdout_binary

Record = dict[str, Any]
Say = Callable[[str], None]


def default(request_type: type, name: str) -> Any:
    """The default of field ``name`` of a request dataclass (file-name tags compare against it)."""
    return next(f.default for f in dataclasses.fields(request_type) if f.name == name)


# Request fields that never reach a file name: where and in what precision the model ran does not
# change what the picture shows (scripts/device_check.py compares the numbers), and a rerun on
# another device must find, and replace, the same files; nor does a progress bar (quiet).
UNNAMED_FIELDS = frozenset({"device", "precision", "quiet"})


def request_tags(req: Any, options: Sequence[tuple[str, str]]) -> list[str]:
    """File-name tags of the fields of request dataclass ``req`` that differ from their defaults:
    each (tag, field name) as in io.option_tags (('top{}', 'top') -> 'top8' when top=8). Fields
    in UNNAMED_FIELDS (device, precision, quiet) give no tag."""
    return option_tags([(tag, getattr(req, name), default(type(req), name)) for tag, name in options
                        if name not in UNNAMED_FIELDS])


def quiet(message: str) -> None:
    """The default ``say`` of every job: library calls print nothing."""


class Output:
    """A folder (atomic writes) or stdout ('-': exactly one PNG), plus the records of what was written.

    Jobs call :meth:`prepare` before any weights or pixels are read, :meth:`png` / :meth:`npy` to
    write (safe from worker threads) and :meth:`report` once per written file, in the order the
    user should see them (the main thread)."""

    def __init__(self, target: str | os.PathLike[str] = ".", *, on_record: Callable[[Record], None] | None = None,
                 stream: BinaryIO | None = None):
        self.target = os.fspath(target)
        self.streaming = self.target == "-"
        self._stream = stream
        self._on_record = on_record
        self.records: list[Record] = []
        self.written = 0
        self._lock = threading.Lock()

    def prepare(self, files: int | None, *, npy: bool = False, message: str | None = None) -> None:
        """Check the run before any work: a stream takes exactly one PNG of ``files`` and no .npy
        (else UsageError with ``message``, or a generic one); a folder is created (OutputError if
        impossible). ``files=None``: the count is not known yet, only the folder is checked."""
        if self.streaming:
            if files is not None and (files != 1 or npy):
                raise UsageError(message or f"-o - streams exactly one PNG to stdout, but this run writes {files}; "
                                            f"use -o DIR")
        else:
            ensure_dir(self.target)

    def path(self, name: str) -> str:
        """Where file ``name`` goes in the folder (not meaningful when streaming)."""
        return os.path.join(self.target, name)

    def png(self, name: str, image: Any, *, metadata: Mapping[str, Any] | None = None, palette: Any = None) -> str:
        """Encode and write one PNG (atomically into the folder, or to stdout). Returns its path, '-' for stdout."""
        if self.streaming:
            return save_png(self._stream or stdout_binary(), image, metadata=metadata, palette=palette)
        return save_png(self.path(name), image, metadata=metadata, palette=palette)

    def npy(self, name: str, array: np.ndarray) -> str:
        """Write one .npy atomically into the folder. Returns its path."""
        if self.streaming:
            raise UsageError("an .npy file needs an output folder, not -o -")
        return save_npy(self.path(name), array)

    def report(self, record: Record) -> None:
        """One written file's record: counted, then passed to ``on_record`` (or kept in ``records``)."""
        with self._lock:
            self.written += 1
            if self._on_record is None:
                self.records.append(record)
            else:
                self._on_record(record)
