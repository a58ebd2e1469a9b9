"""CLI conventions every command shares: help with examples, no torch at start-up, exit codes, output."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnviz.cli import cli as group

COMMANDS = sorted(group.commands)
FOUNDATION_KEYS = ["index", "name", "alias", "in_channels", "out_channels", "kernel_size", "stride", "padding",
                   "dilation", "groups", "params", "output_shape"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(cli, name):
    for flag in ("-h", "--help"):
        r = cli(name, flag)
        assert r.exit_code == 0, r.stderr
        assert "Examples:" in r.stdout and f"cnnviz {name}" in r.stdout


def test_group_help_and_version(cli):
    r = cli("--help")
    assert r.exit_code == 0 and "Commands:" in r.stdout
    for name in COMMANDS:
        assert name in r.stdout
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("cnnviz, version ")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *[[name, "--help"] for name in COMMANDS]])
def test_help_does_not_import_torch(argv):
    code = (
        "import sys\n"
        "from cnnviz.cli import cli\n"
        f"try:\n    cli.main({argv!r}, prog_name='cnnviz')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in r.stderr, r.stderr


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "cnnviz", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "cnnviz" in r.stdout


@pytest.mark.parametrize("model, count", [("resnet50", 53), ("vgg16", 13)])
def test_layers_json(cli, model, count):
    r = cli("layers", "--model", model, "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == count
    for row in rows:
        assert list(row)[: len(FOUNDATION_KEYS)] == FOUNDATION_KEYS
        assert all(isinstance(row[k], list) and len(row[k]) == 2 for k in ("kernel_size", "stride", "dilation"))
        assert len(row["output_shape"]) == 3
    assert rows[0]["name"] == ("conv1" if model == "resnet50" else "features.0")
    if model == "resnet50":
        assert rows[-1]["output_shape"] == [2048, 7, 7] and rows[0]["output_shape"] == [64, 112, 112]
    else:
        assert rows[7]["alias"] == "block4_conv1"


def test_layers_tsv_and_table(cli):
    r = cli("layers", "--model", "vgg16", "--format", "tsv", "--size", "224x320")
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[: len(FOUNDATION_KEYS)] == FOUNDATION_KEYS
    assert len(lines) == 14
    first = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
    assert first["output_shape"] == "64,224,320" and first["kernel_size"] == "3,3"
    r = cli("layers", "--model", "vgg16")
    assert "block5_conv3" in r.stdout and "13 conv layers" in r.stderr and "13 conv layers" not in r.stdout


def test_layers_never_downloads(cli, monkeypatch):
    import torch.hub

    def boom(*a, **k):
        raise AssertionError("layers must not download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    assert cli("layers", "--model", "resnet50", "--format", "tsv").exit_code == 0


def test_models_lists_torchvision_classifiers(cli):
    r = cli("models", "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["resnet50"]["convs"] == 53 and rows["resnet50"]["default_weights"] == "IMAGENET1K_V2"
    assert rows["vgg16"]["convs"] == 13 and "IMAGENET1K_FEATURES" in rows["vgg16"]["weights"]
    assert "regnet_y_400mf" in rows and rows["regnet_y_400mf"]["task"] == "classification"
    assert rows["deeplabv3_resnet50"]["task"] == "segmentation" and rows["fasterrcnn_resnet50_fpn"]["task"] == "detection"


@pytest.mark.parametrize(
    "argv, code, fragment",
    [
        (["layers", "--model", "resnet5"], 2, "unknown model 'resnet5' (did you mean 'resnet50'"),
        (["layers", "--size", "abc"], 2, "malformed size 'abc'"),
        (["layers", "--format", "xml"], 2, "Invalid value for '-f' / '--format'"),
        (["layers", "--size", "4", "--model", "vgg16"], 1, "input size 4x4 is not accepted by this model"),
        (["nosuchcommand"], 2, "No such command"),
    ],
)
def test_errors_are_one_line_with_exit_code(cli, argv, code, fragment):
    r = cli(*argv)
    assert r.exit_code == code
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    if code == 1 or "unknown model" in fragment:
        assert len(r.stderr.strip().splitlines()) == 1


def test_real_process_exit_codes_and_streams():
    r = subprocess.run([sys.executable, "-m", "cnnviz", "layers", "--model", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("cnnviz: error: unknown model 'nope'") and "Traceback" not in r.stderr
