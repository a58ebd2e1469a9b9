"""The one selector grammar used by every ``--layer``, ``--channels``, ``--inputs`` option.

A selector is a comma-separated list of terms; each term is one of

* ``all``                      every item
* ``10`` / ``-1``              an index, negative counts from the end
* ``0:5`` / ``::4`` / ``-3:``  a Python slice
* ``layer3.*``                 a glob over names (and aliases), when names are given
* ``layer3.2.conv2``           an exact name or alias, when names are given

The result keeps first-seen order and drops repeats. Pure Python: no torch import.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence

from .errors import SelectionError

_INT = re.compile(r"^[+-]?\d+$")
_SLICE = re.compile(r"^([+-]?\d*):([+-]?\d*)(?::([+-]?\d*))?$")
_GLOB_CHARS = set("*?[")


def _np_integer_types() -> tuple[type, ...]:
    """NumPy's integer types when NumPy is already imported (this module never imports it)."""
    import sys

    np = sys.modules.get("numpy")
    return (np.integer,) if np is not None else ()


def _split_terms(spec: str) -> list[str]:
    terms = [t.strip() for t in spec.split(",")]
    if not spec.strip() or any(t == "" for t in terms):
        raise SelectionError(f"empty term in selector {spec!r}; use e.g. '0', '0:8', '1,5,9' or 'all'")
    return terms


def select_indices(
    specs: str | int | Iterable[str | int],
    count: int,
    *,
    what: str = "item",
    names: Sequence[Sequence[str]] | None = None,
    hint: str = "",
) -> list[int]:
    """Resolve selector strings to 0-based indices into a list of ``count`` items.

    ``names[i]`` holds the names item ``i`` answers to (e.g. dotted name and alias); without
    names only indices, slices and ``all`` are accepted. ``hint`` is appended to error messages
    (e.g. "see 'cnnviz layers --model resnet50'"). Raises SelectionError.
    """
    if isinstance(specs, (str, int)):
        specs = [specs]  # type: ignore[list-item]
    # Plain ints (from the Python API) are index terms of the same grammar.
    specs = [str(int(s)) if isinstance(s, (int, _np_integer_types())) and not isinstance(s, bool) else s for s in specs]
    tail = f"; {hint}" if hint else ""
    whats = what + ("es" if what.endswith(("s", "sh", "ch", "x")) else "s")  # 'classes', not 'classs'
    valid = f"{count} {whats} (0..{count - 1}, or -{count}..-1)" if count else f"no {whats}"
    out: list[int] = []
    seen: set[int] = set()

    def add(i: int) -> None:
        if i not in seen:
            seen.add(i)
            out.append(i)

    for spec in specs:
        spec = str(spec)
        for term in _split_terms(spec):
            if term.lower() == "all":
                for i in range(count):
                    add(i)
                continue
            if _INT.match(term):
                i = int(term)
                if not -count <= i < count:
                    raise SelectionError(f"{what} index {i} out of range: there are {valid}{tail}")
                add(i % count)
                continue
            m = _SLICE.match(term)
            if m:
                if any(g in ("+", "-") for g in m.groups()) or m.group(3) == "0":
                    raise SelectionError(f"malformed slice {term!r} in {what} selector; use start:stop[:step], e.g. 0:8 or ::4{tail}")
                sl = slice(*[int(g) if g else None for g in m.groups()])
                picked = list(range(count))[sl]
                if not picked:
                    raise SelectionError(f"slice {term!r} selects no {whats}: there are {valid}{tail}")
                for i in picked:
                    add(i)
                continue
            if names is None:
                raise SelectionError(
                    f"malformed {what} selector {term!r}; use an index (3, -1), a slice (0:8, ::4), a list (1,5,9) or 'all'{tail}"
                )
            if _GLOB_CHARS & set(term):
                hits = [i for i, ns in enumerate(names) if any(n and fnmatch.fnmatchcase(n, term) for n in ns)]
                if not hits:
                    raise SelectionError(f"pattern {term!r} matches no {what}{tail}")
                for i in hits:
                    add(i)
                continue
            hits = [i for i, ns in enumerate(names) if term in ns]
            if not hits:
                flat = [n for ns in names for n in ns if n]
                close = difflib.get_close_matches(term, flat, n=3, cutoff=0.6)
                sugg = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                raise SelectionError(f"unknown {what} {term!r}{sugg}; there are {valid}{tail}")
            for i in hits:
                add(i)
    if not out:
        raise SelectionError(f"selector selects no {whats}{tail}")
    return out


def index_ranges(idx: Sequence[int]) -> str:
    """[0,1,2,3,7,9,10] -> '0-3,7,9-10' (inclusive runs, in the given order)."""
    out: list[str] = []
    idx = list(idx)
    k = 0
    while k < len(idx):
        j = k
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[k]) if j == k else f"{idx[k]}-{idx[j]}")
        k = j + 1
    return ",".join(out)
