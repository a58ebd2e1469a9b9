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
