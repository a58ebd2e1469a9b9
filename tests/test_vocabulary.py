"""One option vocabulary (docs/options.md): every command's click options, hidden ones included,
checked against cnnviz.cli.common.CONCEPTS and DEPRECATED; and the deprecated spellings, run."""
from __future__ import annotations

import importlib.util
import json
import os
from collections import defaultdict
from pathlib import Path

import click
import pytest

from cnnviz.cli.common import (BREAKING, CONCEPTS, DEPRECATED, PER_COMMAND, DeprecatedOption, VocabOption,
                               resolve_deprecated)

ROOT = Path(__file__).resolve().parent.parent
# Concepts whose decorators other parts of the CLI declare (device/precision): they are
# checked for one meaning, one short flag and their defaults, not for coming from this module.
ELSEWHERE = {"--device", "--precision"}


def _table_script():
    spec = importlib.util.spec_from_file_location("options_table", ROOT / "scripts" / "options_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def commands() -> dict[str, click.Command]:
    return _table_script().commands()


def options(*, deprecated: bool = False):
    """(command, option) for every click option of every command (the hidden ones too)."""
    for name, cmd in commands().items():
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(p, DeprecatedOption) == deprecated:
                yield name, p


def _exempt(name: str, spelling: str) -> bool:
    return spelling in DEPRECATED.get(name, {})


def _signature(p: click.Option) -> tuple:
    choices = frozenset(p.type.choices) if isinstance(p.type, click.Choice) else None
    return (p.name, p.type.name, choices, p.is_flag, p.multiple)


def _unset(v):
    return None if _table_script()._unset(v) else v


# ---------------------------------------------------------------- the walk


def test_the_walk_sees_every_command_and_hidden_option():
    names = set(commands())
    assert {"layers", "models", "filters", "maps", "rf", "maximize", "cam", "top", "report", "top merge"} <= names
    hidden = {(n, o) for n, p in options(deprecated=True) for o in p.opts}
    assert ("filters", "--tile-size") in hidden and ("top", "-k") in hidden and ("cam", "-c") in hidden


def test_a_long_name_has_one_meaning():
    """The same long name (or --no- form) means the same thing in every command: same destination,
    type, choices, flag-ness, repeatability, unless every use comes from the one shared decorator."""
    uses = defaultdict(list)
    for name, p in options():
        for spelling in (*p.opts, *p.secondary_opts):
            if spelling.startswith("--"):
                uses[spelling].append((name, p))
    problems = []
    for spelling, found in uses.items():
        concepts = {getattr(p, "concept", None) for _, p in found}
        if concepts != {None} and len(concepts) == 1:
            if len({p.name for _, p in found}) > 1:  # even a shared decorator keeps one destination
                problems.append(f"{spelling}: destinations {sorted({p.name for _, p in found})}")
            continue
        if len({_signature(p) for _, p in found}) > 1:
            problems.append(f"{spelling}: " + "; ".join(f"{n} {_signature(p)}" for n, p in found))
    for name, p in options(deprecated=True):  # a hidden old spelling may differ only where the registry says so
        for spelling in p.opts:
            if spelling in uses and not _exempt(name, spelling):
                problems.append(f"{name} {spelling}: a hidden option outside the DEPRECATED registry")
    assert not problems, "\n".join(problems)


def test_a_short_flag_stands_for_one_long_name():
    longs = defaultdict(set)
    for deprecated in (False, True):
        for name, p in options(deprecated=deprecated):
            long = next((o for o in p.opts if o.startswith("--")), None)
            for short in (o for o in p.opts if not o.startswith("--")):
                if deprecated and _exempt(name, short):
                    continue
                longs[short].add(long)
    two = {s: sorted(map(str, ls)) for s, ls in longs.items() if len(ls) > 1}
    assert not two, f"one short flag, several long names: {two}"
    for long, c in CONCEPTS.items():
        if c.short:
            assert longs.get(c.short, {long}) == {long}, (c.short, longs.get(c.short))


def test_concepts_come_from_the_shared_decorators_with_their_short_flag():
    seen = set()
    for name, p in options():
        for long in (o for o in p.opts if o in CONCEPTS):
            seen.add(long)
            c = CONCEPTS[long]
            shorts = [o for o in p.opts if not o.startswith("--")]
            assert shorts == ([c.short] if c.short else []), (name, long, shorts)
            if long not in ELSEWHERE:
                assert isinstance(p, VocabOption) and p.concept == long, f"{name} declares {long} itself"
            if c.pair:
                assert p.secondary_opts == [f"--no-{long[2:]}"], (name, long)
    assert set(CONCEPTS) - ELSEWHERE <= seen


def test_defaults_follow_the_table_or_state_a_reason():
    for name, p in options():
        for long in (o for o in p.opts if o in CONCEPTS):
            c = CONCEPTS[long]
            if c.default == PER_COMMAND:
                assert c.differs.get("*"), f"{long}: a per-command default needs its reason"
                continue
            default = False if p.is_flag and not p.secondary_opts and _unset(p.default) else p.default
            if _unset(default) != _unset(c.default):
                assert name in c.differs, f"{name} {long} defaults to {default!r}, the table says {c.default!r}"
                assert f"{name} {_table_script()._fmt(default)}" in c.shown, (name, long, c.shown)


def test_the_registry_is_what_the_commands_accept():
    found = defaultdict(dict)
    for name, p in options(deprecated=True):
        assert p.hidden and len(p.opts) == 1
        found[name][p.old] = p.new
        assert p.opts == [p.old]
        new = [q for q in commands()[name].params if isinstance(q, click.Option) and not isinstance(q, DeprecatedOption)
               and p.new in (*q.opts, *q.secondary_opts)]
        assert len(new) == 1, (name, p.old, p.new)
        assert p.is_flag == new[0].is_flag, (name, p.old)
    assert dict(found) == DEPRECATED
    for name, renames in BREAKING.items():  # a breaking rename's old spelling is the new meaning, not an alias
        for old in renames:
            assert old not in DEPRECATED.get(name, {})


def test_options_page_is_current():
    mod = _table_script()
    page = mod.PAGE.read_text()
    assert mod.render(page) == page, "docs/options.md is stale: run python scripts/options_table.py"
    for name, table in DEPRECATED.items():
        for old, new in table.items():
            assert f"| {name} | `{old}` | `{new}` |" in page


# ---------------------------------------------------------------- the old spellings, run


@pytest.fixture
def photos(tmp_path):
    from PIL import Image
    import numpy as np

    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(d / f"p{i}.png")
    return d


def base(command: str, photos: Path) -> list[str]:
    img = str(photos / "p0.png")
    return {
        "maps": ["maps", img, "-m", "squeezenet1_1", "-w", "none", "-l", "0", "-c", "0:4", "-s", "32"],
        "cam": ["cam", img, "-m", "squeezenet1_1", "-w", "none", "-s", "32"],
        "filters": ["filters", "-m", "squeezenet1_1", "-w", "none", "-l", "0"],
        "maximize": ["maximize", "-m", "squeezenet1_1", "-w", "none", "-l", "0", "--steps", "1", "--size", "8"],
        "rf": ["rf", img, "-m", "squeezenet1_1", "-w", "none", "-l", "0", "-s", "32"],
        "top": ["top", str(photos), "-m", "squeezenet1_1", "-w", "none", "-l", "0", "-c", "0:2", "-s", "32",
                "--workers", "0"],
    }[command]


VALUES = {"--filters": "0:4", "--tile-size": "24", "--channel": "0:2", "-k": "2", "-c": "3", "--max-channels": "2"}
EXTRA = {"--max-channels": ["--mode", "channels"]}  # where the option changes the picture
CASES = [(name, old, new) for name, table in DEPRECATED.items() for old, new in table.items()]


def _written(result) -> list[tuple[str, bytes]]:
    assert result.exit_code == 0, result.output
    paths = []
    for line in result.stdout.splitlines():
        rec = json.loads(line)
        paths += [p for p in rec.get("pictures", [rec.get("path")]) if p not in paths]  # top: a record per channel
    return [(os.path.basename(p), Path(p).read_bytes()) for p in paths]


@pytest.mark.parametrize("name,old,new", CASES, ids=[f"{n} {o}" for n, o, _ in CASES])
def test_an_old_spelling_warns_once_and_acts_as_the_new(cli, photos, tmp_path, name, old, new):
    value = [VALUES[old]] if old in VALUES else []
    cmd = [*base(name, photos), *EXTRA.get(old, []), "--json"]
    r_old = cli(*cmd, old, *value, "-o", str(tmp_path / "old"))
    r_new = cli(*cmd, new, *value, "-o", str(tmp_path / "new"))
    warning = f"cnnviz: warning: {old} is deprecated; use {new}"
    assert r_old.stderr.splitlines().count(warning) == 1 and r_old.stderr.count("deprecated") == 1, r_old.stderr
    assert "deprecated" not in r_new.stderr
    old_files, new_files = _written(r_old), _written(r_new)
    assert old_files == new_files  # the same names, the same bytes
    if new != "--captions":  # a picture unlike the one without the option: the option took effect
        plain = _written(cli(*cmd, "-o", str(tmp_path / "plain")))
        assert plain != new_files


def test_old_and_new_spelling_that_disagree_are_a_usage_error(cli, photos, tmp_path):
    out = tmp_path / "out"
    r = cli(*base("maps", photos), "--bare", "--captions", "-o", str(out))
    assert r.exit_code == 2 and "--bare (deprecated for --no-captions) and --captions disagree" in r.stderr
    assert "cnnviz: warning" not in r.stderr and not out.exists()
    r = cli(*base("filters", photos), "--legend", "--no-legend", "-o", str(out))
    assert r.exit_code == 2 and "disagree" in r.stderr
    r = cli(*base("rf", photos), "--channel", "1", "--channels", "2", "-o", str(out))
    assert r.exit_code == 2 and "--channel (deprecated for --channels) and --channels disagree" in r.stderr
    r = cli(*base("filters", photos), "--tile-size", "3", "-o", str(out))  # the new option's own checks
    assert r.exit_code == 2 and "'--tile': 3 is not in the range 4<=x<=512" in r.stderr


def test_old_and_new_spelling_that_agree_warn_once(cli, photos, tmp_path):
    r = cli(*base("maps", photos), "--bare", "--no-captions", "-o", str(tmp_path))
    assert r.exit_code == 0 and r.stderr.count("cnnviz: warning: --bare is deprecated; use --no-captions") == 1


def test_filters_channels_now_selects_filters_and_inputs_the_input_channels(cli, tmp_path):
    common = ["filters", "-m", "squeezenet1_1", "-w", "none", "-o", str(tmp_path)]
    r = cli(*common, "-l", "0", "-c", "0:4")
    assert r.exit_code == 0 and r.stdout.strip().endswith("-filters-f0-3.png"), r.output
    r = cli(*common, "-l", "1", "--mode", "channels", "--channels", "0:2", "--inputs", "0:3")
    assert r.exit_code == 0, r.output
    r = cli(*common, "-l", "0", "--inputs", "0:2")  # rgb mode: input channels are the colours
    assert r.exit_code == 2 and "--inputs applies to --mode channels and 1x1 heatmaps" in r.stderr


def test_layers_and_models_json_is_format_json(cli):
    a = cli("layers", "-m", "squeezenet1_1", "--json")
    b = cli("layers", "-m", "squeezenet1_1", "--format", "json")
    assert a.exit_code == 0 and a.stdout == b.stdout and json.loads(a.stdout)[0]["index"] == 0
    assert cli("layers", "-m", "squeezenet1_1", "--json", "-f", "json").stdout == a.stdout
    r = cli("layers", "-m", "squeezenet1_1", "--json", "--format", "tsv")
    assert r.exit_code == 2 and "--json and --format tsv disagree" in r.stderr
    names = cli("models", "--names-only").stdout.split()
    assert "resnet18" in names and json.loads(cli("models", "--names-only", "--json").stdout) == names
    r = cli("models", "--json", "--format", "table")
    assert r.exit_code == 2 and "--json and --format table disagree" in r.stderr


def test_report_stage_defaults_to_conv_as_top_indexes(cli):
    from cnnviz.jobs.report import ReportRequest
    from cnnviz.jobs.top import TopRequest

    stage = {p.name: p.default for p in commands()["report"].params}["stage"]
    assert stage == "conv" == ReportRequest().stage == TopRequest().stage


def test_resolving_leaves_no_hidden_parameter_for_the_command(photos):
    """The callback gets only new names: each alias is removed from ctx.params."""
    cmd = commands()["filters"]
    ctx = cmd.make_context("filters", ["--filters", "0:2", "--no-legend", "--labels"])
    assert not any(k.startswith("deprecated_") for k in ctx.params)
    assert ctx.params["channels"] == ("0:2",) and ctx.params["captions"] is False and ctx.params["tile_numbers"] is True
    resolve_deprecated(ctx)  # idempotent: nothing left to move
    assert ctx.params["channels"] == ("0:2",)
