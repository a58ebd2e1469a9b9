"""docs/cli.md is each command's --help as the code prints it now (scripts/gen_cli_docs.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python scripts/gen_cli_docs.py"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_is_current():
    gen = _gen()
    fresh = gen.render()
    checked_in = gen.TARGET.read_text(encoding="utf-8") if gen.TARGET.exists() else ""
    assert checked_in == fresh, (
        f"docs/cli.md is not what the commands' --help says now (an option or a help text changed): "
        f"run `{REGENERATE}` and commit docs/cli.md")


def test_cli_reference_covers_every_command():
    from cnnviz.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in cli.list_commands(None):
        assert f"## `cnnviz {name}`" in text, f"docs/cli.md lacks `cnnviz {name}`: run `{REGENERATE}`"
    assert "## `cnnviz top merge`" in text


def test_the_check_fails_on_a_stale_file(tmp_path, monkeypatch):
    gen = _gen()
    stale = tmp_path / "cli.md"
    stale.write_text(gen.render().replace("--json", "--jsn", 1), encoding="utf-8")
    monkeypatch.setattr(gen, "TARGET", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    stale.write_text(gen.render(), encoding="utf-8")
    assert gen.main(["--check"]) == 0


def test_every_page_is_in_the_nav():
    """mkdocs only notes a page left out of the nav; here it fails, and so does a nav entry without its page."""
    import re

    nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"


def test_table_code_spans_lose_their_pipe_escape_only_in_tables():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    src = "| `--mode a\\|b` | x \\| y |\n`p\\|q` in prose\n```sh\n| `c\\|d` |\n```\n"
    assert hooks.unescape_table_code(src) == "| `--mode a|b` | x \\| y |\n`p\\|q` in prose\n```sh\n| `c\\|d` |\n```\n"


def test_every_name_on_the_api_page_exists():
    """mkdocstrings skips a listed member that is gone without a word: a renamed or moved function
    would just vanish from docs/api.md. Here it fails instead."""
    import importlib
    import re

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^::: ([\w.]+)\n((?:    .*\n)*)", text, re.M)
    assert len(blocks) >= 15
    for module, options in blocks:
        mod = importlib.import_module(module)
        for name in re.findall(r"^        - (\w+)$", options, re.M):
            assert hasattr(mod, name), f"docs/api.md lists {module}.{name}, which does not exist"
