"""What the commands print: tables, JSON fields and output file names a user relies on."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def few_models(monkeypatch):
    """`cnnviz models` over three models only (the full list builds 80 architectures)."""
    import cnnviz.models

    monkeypatch.setattr(cnnviz.models, "list_models", lambda: ["alexnet", "resnet50", "vgg16"])


def test_models_table_lists_weights_names_not_joined_like_a_shape(cli, few_models):
    r = cli("models")
    assert r.exit_code == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert rows["resnet50"].split(None, 3)[3] == "IMAGENET1K_V1, IMAGENET1K_V2"
    assert rows["vgg16"].endswith("IMAGENET1K_V1, IMAGENET1K_FEATURES")
    assert rows["alexnet"].endswith("IMAGENET1K_V1")
    assert "xIMAGENET" not in r.stdout
    tsv = {ln.split("\t")[0]: ln.split("\t") for ln in cli("models", "--format", "tsv").stdout.splitlines()}
    assert tsv["resnet50"][3] == "IMAGENET1K_V1,IMAGENET1K_V2"


def test_layers_table_still_joins_shapes_with_x(cli):
    r = cli("layers", "--model", "vgg16")
    first = r.stdout.splitlines()[1].split()
    assert first[:3] == ["0", "features.0", "block1_conv1"] and "64x224x224" in first


@pytest.mark.parametrize("native, used", [(True, "bf16"), (False, "fp32")])
def test_maximize_json_reports_the_precision_actually_used(cli, tmp_path, monkeypatch, native, used):
    import cnnviz.optimize

    monkeypatch.setattr(cnnviz.optimize, "bf16_native", lambda device: native)
    r = cli("maximize", "--model", "mobilenet_v3_small", "--weights", "none", "--layer", "0", "--channel", "0",
            "--steps", "1", "--size", "8", "--precision", "auto", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["precision"] == used
    from PIL import Image

    assert Image.open(tmp_path / "mobilenet_v3_small-00-features.0.0-maximize.png").text["precision"] == used


def test_maximize_result_names_its_precision(tiny_vgg):
    from cnnviz.optimize import maximize

    res = maximize(tiny_vgg, targets=[0], layer="features.0", steps=1, size=8, min_model_size=8, precision="bf16")
    assert res.precision == "bf16"
    assert maximize(tiny_vgg, targets=[0], layer="features.0", steps=1, size=8, min_model_size=8).precision == "fp32"


def test_stdin_image_reads_without_click_get_binary_stream(cli, rgb_image, monkeypatch):
    """click.get_binary_stream is deprecated and removed in Click 9: '-' must not depend on it."""
    import click

    def removed(*args, **kwargs):
        raise AttributeError("click.get_binary_stream is removed in Click 9")

    monkeypatch.setattr(click, "get_binary_stream", removed, raising=False)
    r = cli("maps", "-", "-m", "vgg16", "-w", "none", "-l", "0", "--size", "16", "--json", "-o", str(rgb_image.parent),
            input=rgb_image.read_bytes())
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["image"] == "-" and rec["shape"] == [64, 16, 21]
