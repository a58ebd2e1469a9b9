"""MkDocs hooks (mkdocs.yml `hooks:`): the pages are written for both GitHub and the built site.

GitHub's tables need a pipe inside a code span escaped (`auto\\|rgb`), while Python-Markdown's
tables already leave pipes in code spans alone and would show the backslash. So on table rows the
backslash is dropped inside code spans at build time; the source stays right for GitHub.
"""
from __future__ import annotations

import re
from typing import Any

_CODE = re.compile(r"`[^`\n]*`")


def unescape_table_code(markdown: str) -> str:
    """`a\\|b` -> `a|b` inside code spans on table rows (lines starting with '|'), outside fences."""
    out, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.lstrip().startswith("|"):
            line = _CODE.sub(lambda m: m.group(0).replace("\\|", "|"), line)
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return unescape_table_code(markdown)
