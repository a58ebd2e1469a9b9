"""The one progress reporter of every long loop: a tqdm bar on stderr.

Silent when stderr is not a terminal (logs, pipes, CI, tests: no carriage-return noise) and when
asked to be (``quiet``: the CLI's ``-q/--quiet``, a request's ``quiet`` field). Jobs make one per
long phase and hand ``update`` (or the object) to the domain loops; stdout, the data channel, is
never touched. tqdm is imported only when a bar is actually shown.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Progress", "around_bars", "shows_bar"]

MIN_INTERVAL = 0.1  # s between redraws (tqdm's default): a fast loop costs nothing; tests set 0 to see every step


def shows_bar(*, quiet: bool = False, file: TextIO | None = None) -> bool:
    """Whether a :class:`Progress` made now would draw: not ``quiet`` and ``file`` (default: the
    current ``sys.stderr``) is a terminal."""
    if quiet:
        return False
    return _isatty(sys.stderr if file is None else file)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed, or replaced by an object without isatty
        return False


class Progress:
    """A bar of ``total`` steps (None: unknown, a counter) named ``desc``, counting ``unit``.

    ``update(n)`` advances it, ``describe(text)`` renames the current phase, ``close()`` (or
    leaving the ``with`` block) removes it. When silent, every method does nothing; ``active``
    tells which. Safe to call from the thread that owns the loop only (like tqdm)."""

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it", quiet: bool = False,
                 file: TextIO | None = None):
        self.bar: Any = None
        stream = sys.stderr if file is None else file
        if shows_bar(quiet=quiet, file=stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc or None, unit=unit, file=stream, leave=False, dynamic_ncols=True,
                            mininterval=MIN_INTERVAL, miniters=1)

    @property
    def active(self) -> bool:
        return self.bar is not None

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n``; ``postfix`` (e.g. ``objective='1.2'``) is shown after the counts."""
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def goto(self, done: int, total: int | None = None) -> None:
        """Move to ``done`` steps of ``total`` (a loop that reports its position, e.g. scan's
        ``on_progress(done, total)``)."""
        if self.bar is not None:
            if total is not None and total != self.bar.total:
                self.bar.total = total
            self.bar.update(done - self.bar.n)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def add_total(self, n: int) -> None:
        """Grow the total by ``n`` (work found on the way, e.g. the next image's methods)."""
        if self.bar is not None:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def around_bars(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` for messages printed while a bar may be on stderr (a skipped file during a scan):
    each message clears the bars first and redraws them below it, instead of landing mid-bar."""

    def wrapped(message: str) -> None:
        tqdm = sys.modules.get("tqdm")  # no bar was ever drawn without it
        if tqdm is None:
            say(message)
            return
        with tqdm.tqdm.external_write_mode(file=sys.stderr):
            say(message)

    return wrapped
