"""The one progress reporter (cnnviz.progress): a bar on stderr only when it is a terminal and
not --quiet; every long command has -q/--quiet and reports through it (cam per image and method)."""
from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cnnviz.progress as progress_mod
from cnnviz.jobs import ImageInputs, Output
from cnnviz.models import LoadedModel
from cnnviz.progress import Progress, shows_bar

from conftest import TinyVGG, run_cli

LONG_COMMANDS = ("maps", "rf", "cam", "top", "report", "maximize", "ablate", "compare")


class Terminal(io.StringIO):
    """stderr as a terminal would be (isatty), its text kept."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def every_step(monkeypatch):
    monkeypatch.setattr(progress_mod, "MIN_INTERVAL", 0)  # draw each step, not at most every 0.1 s


@pytest.fixture
def tty(monkeypatch):
    """``term = tty()`` in a test replaces sys.stderr by a Terminal: what a job run from a shell
    would draw on it. (Called in the test body: pytest sets its own sys.stderr after the fixtures.)"""

    def install() -> Terminal:
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        return term

    return install


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")


def _photos(folder, n):
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"p{i}.png"
        Image.fromarray((rng.random((40, 44, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_a_bar_only_on_a_terminal_and_never_when_quiet():
    term, pipe = Terminal(), io.StringIO()
    with Progress(3, desc="work", unit="img", file=term) as bar:
        assert bar.active
        bar.update(2)
        bar.goto(3)
    assert "work" in term.getvalue() and "3/3" in term.getvalue()
    for file, quiet in ((pipe, False), (Terminal(), True)):
        with Progress(3, desc="work", file=file, quiet=quiet) as bar:
            assert not bar.active
            bar.update(3)
            bar.describe("x")
        assert file.getvalue() == ""
    assert shows_bar(file=Terminal()) and not shows_bar(file=pipe) and not shows_bar(quiet=True, file=Terminal())


def test_a_stderr_without_isatty_or_closed_counts_as_no_terminal():
    class Bare:
        def write(self, s):
            raise AssertionError("nothing may be written")

    closed = io.StringIO()
    closed.close()
    assert not shows_bar(file=Bare()) and not shows_bar(file=closed)


def test_maps_job_draws_a_bar_per_image_on_a_terminal_and_none_with_quiet(lm, tmp_path, tty):
    tty = tty()
    from cnnviz.jobs.maps import MapsRequest, run_maps

    paths = _photos(tmp_path / "in", 3)
    inputs = ImageInputs(images=tuple(paths), size="32")
    run_maps(MapsRequest(inputs=inputs, layers=("1",), batch_size=2), output=Output(tmp_path / "a"), model=lm)
    assert "maps" in tty.getvalue() and "3/3" in tty.getvalue()
    tty.truncate(0)
    tty.seek(0)
    run_maps(MapsRequest(inputs=inputs, layers=("1",), batch_size=2, quiet=True), output=Output(tmp_path / "b"), model=lm)
    assert tty.getvalue() == ""
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.listdir(tmp_path / "b"))  # quiet names no file


def test_cam_reports_each_image_and_method(lm, tmp_path, tty):
    """cam had no progress at all (--method all --top 2 ran silently for 28 minutes)."""
    tty = tty()
    from cnnviz.jobs.cam import CamRequest, run_cam

    paths = _photos(tmp_path / "in", 2)
    req = CamRequest(inputs=ImageInputs(images=tuple(paths), size="32"), model="tinyvgg", methods=("gradcam", "hirescam"),
                     layers=("features.5",), top=2, batch_size=1)
    import cnnviz.jobs.cam as jc

    monkey_arch = lm  # the tiny model is its own architecture
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jc, "architecture", lambda spec: monkey_arch)
        run_cam(req, output=Output(tmp_path / "out"), model=lm)
    text = tty.getvalue()
    # 2 images x 2 classes x 2 methods = 8 maps, advanced after each method of each image
    assert "8/8" in text and "cam gradcam" in text and "cam hirescam" in text
    for done in ("2/8", "4/8", "6/8"):
        assert done in text


def test_top_scan_counts_images_on_a_terminal(lm, tmp_path, tty):
    tty = tty()
    from cnnviz.jobs.top import TopRequest, run_top

    paths = _photos(tmp_path / "in", 5)
    req = TopRequest(images=tuple(paths), layers=("1",), k=2, size=32, batch_size=2, workers=0, pictures=False)
    run_top(req, model=lm, output=Output(tmp_path / "o"))
    assert "top" in tty.getvalue() and "5/5" in tty.getvalue()


def test_maximize_draws_its_steps_unless_quiet(lm, tmp_path, tty):
    tty = tty()
    from cnnviz.optimize import maximize

    maximize(lm.model, targets=[0], layer="features.2", steps=3, size=16, progress=True)
    assert "3/3" in tty.getvalue()
    tty.truncate(0)
    tty.seek(0)
    maximize(lm.model, targets=[0], layer="features.2", steps=3, size=16, progress=False)
    assert tty.getvalue() == ""


def test_every_long_command_has_quiet():
    from cnnviz.cli import cli

    for name in LONG_COMMANDS:
        opts = {o: p.name for p in cli.commands[name].params for o in p.opts}
        assert opts.get("-q") == "quiet" and opts.get("--quiet") == "quiet", name


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_bar_on_a_terminal_none_with_quiet_none_in_a_pipe(tmp_path, monkeypatch, quiet):
    monkeypatch.chdir(tmp_path)
    args = ["maps", "--sample", "-m", "resnet18", "-w", "none", "-l", "0", "-s", "32", "-o", "out"]
    piped = run_cli(*args, *(["-q"] if quiet else []))  # CliRunner's stderr is no terminal
    assert piped.exit_code == 0, piped.stderr
    assert "\r" not in piped.stderr and "it/s" not in piped.stderr and "image/s" not in piped.stderr
    monkeypatch.setattr(progress_mod, "_isatty", lambda stream: True)  # the same stderr, now a "terminal"
    shell = run_cli(*args, "-o", "out2", *(["-q"] if quiet else []))
    assert shell.exit_code == 0, shell.stderr
    drew = "1/1" in shell.stderr and "maps" in shell.stderr
    assert drew is not quiet, shell.stderr
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(tmp_path / "out2"))


def test_messages_during_a_bar_clear_it_and_redraw_it_below(tty):
    from cnnviz.progress import around_bars

    term = tty()
    say = around_bars(lambda m: print(m, file=sys.stderr))
    with Progress(4, desc="scan", unit="img") as bar:
        bar.update(1)
        before = len(term.getvalue())
        say("cnnviz: warning: skipped x.png")
        after = term.getvalue()[before:]
    head, _, tail = after.partition("cnnviz: warning: skipped x.png\n")
    assert head.endswith("\r") and head.strip() == ""  # the bar line blanked first, the message on its own line
    assert "scan:" in tail and "1/4" in tail  # then the bar again, below it
    plain = around_bars(lambda m: print(m, file=sys.stderr))
    plain("no bar")  # no bar on screen: just the message
    assert term.getvalue().endswith("no bar\n")


def test_quiet_names_no_file():
    from cnnviz.jobs.cam import CamRequest
    from cnnviz.jobs.maps import MapsRequest
    from cnnviz.jobs.maximize import MaximizeRequest
    from cnnviz.jobs.output import request_tags
    from cnnviz.jobs.report import ReportRequest
    from cnnviz.jobs.rf import RFRequest
    from cnnviz.jobs.top import TopRequest

    for req in (MapsRequest(inputs=ImageInputs(), layers=("0",), quiet=True), RFRequest(quiet=True),
                CamRequest(inputs=ImageInputs(), quiet=True), TopRequest(quiet=True), ReportRequest(quiet=True),
                MaximizeRequest(quiet=True)):
        assert request_tags(req, [("q", "quiet")]) == [], type(req).__name__
