"""Write the option-vocabulary table of docs/options.md from the code (cnnviz.cli.common.CONCEPTS,
DEPRECATED, BREAKING and every command's click options), so the page cannot drift from the CLI.

    python scripts/options_table.py           # rewrite the table between the markers in docs/options.md
    python scripts/options_table.py --check   # exit 1 if the page is not current (tests/test_vocabulary.py)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "options.md"
START, END = "<!-- options-table:start (scripts/options_table.py) -->", "<!-- options-table:end -->"


def commands() -> dict[str, click.Command]:
    """Every command by the name a user types ('top merge' included)."""
    from cnnviz.cli import cli
    from cnnviz.cli.top import merge

    return {**cli.commands, "top merge": merge}


def _unset(v: Any) -> bool:
    """None, () and click's own "no default" marker (a multiple option without one)."""
    return v is None or v == () or repr(v) == "Sentinel.UNSET"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    """The markdown tables: one row per concept, then one per old spelling."""
    from cnnviz.cli.common import BREAKING, CONCEPTS, DEPRECATED, PER_COMMAND, DeprecatedOption

    cmds = commands()
    rows = ["| concept | long | short | default | commands | why a default differs | old spellings (hidden, deprecated) |",
            "|---|---|---|---|---|---|---|"]
    for long, c in CONCEPTS.items():
        users = {name: p for name, cmd in cmds.items() for p in cmd.params
                 if isinstance(p, click.Option) and not isinstance(p, DeprecatedOption) and long in p.opts}
        defaults = {name: p.default for name, p in users.items()}
        if c.default == PER_COMMAND and defaults and not any(_unset(v) for v in defaults.values()):
            default = ", ".join(f"{name} {_fmt(v)}" for name, v in defaults.items())
        else:
            default = c.shown
        why = "; ".join(f"{cmd}: {reason}" if cmd != "*" else reason for cmd, reason in c.differs.items())
        old = [f"{name} `{o}`" for name, table_ in DEPRECATED.items() for o, new in table_.items()
               if new in (long, f"--no-{long[2:]}")]
        old += [f"{name} `{o}` meant {what.split(' ')[0]} before (**breaking**)" for name, table_ in BREAKING.items()
                for o, what in table_.items() if what.split(" ")[0] == long]
        spelled = f"`{long}/--no-{long[2:]}`" if c.pair else f"`{long}`"
        rows.append("| " + " | ".join(_cell(x) for x in [
            c.what, spelled, f"`{c.short}`" if c.short else "", default, ", ".join(users) or "(none yet)", why,
            ", ".join(old)]) + " |")
    rows += ["", "Every old spelling (hidden from `--help`; each prints one deprecation line and acts as the new one):", "",
             "| command | old spelling | use |", "|---|---|---|"]
    rows += [f"| {name} | `{old}` | `{new}` |" for name, table_ in DEPRECATED.items() for old, new in table_.items()]
    return "\n".join(rows)


def render(page: str) -> str:
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/options.md is not current")
    args = ap.parse_args()
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is not current: run python scripts/options_table.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    print(PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
