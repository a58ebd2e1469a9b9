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
    assert rows["resnet50"].split(None, 4)[4] == "IMAGENET1K_V1, IMAGENET1K_V2"
    assert rows["resnet50"].split()[1] == "classification"
    assert rows["vgg16"].endswith("IMAGENET1K_V1, IMAGENET1K_FEATURES")
    assert rows["alexnet"].endswith("IMAGENET1K_V1")
    assert "xIMAGENET" not in r.stdout
    tsv = {ln.split("\t")[0]: ln.split("\t") for ln in cli("models", "--format", "tsv").stdout.splitlines()}
    assert tsv["resnet50"][4] == "IMAGENET1K_V1,IMAGENET1K_V2"


def test_layers_table_still_joins_shapes_with_x(cli):
    r = cli("layers", "--model", "vgg16")
    first = r.stdout.splitlines()[1].split()
    assert first[:3] == ["0", "features.0", "block1_conv1"] and "64x224x224" in first


@pytest.mark.parametrize("native, used", [(True, "bf16"), (False, "fp32")])
def test_maximize_json_reports_the_precision_actually_used(cli, tmp_path, monkeypatch, native, used):
    import cnnviz.device

    monkeypatch.setattr(cnnviz.device, "bf16_native", lambda device: native)
    r = cli("maximize", "--model", "mobilenet_v3_small", "--weights", "none", "--layer", "0", "--channels", "0",
            "--steps", "1", "--size", "8", "--precision", "auto", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["precision"] == used
    from PIL import Image

    assert Image.open(rec["path"]).text["precision"] == used


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


# ---------------------------------------------------------------- output names


@pytest.mark.parametrize("stem, expected", [
    ("фото", "фото"), ("写真", "写真"), ("café-Ωmega", "café-Ωmega"), ("emoji🙂", "emoji🙂"),
    ("a/b", "a_b"), ("a\\b", "a_b"), ("bell\x07x", "bell_x"), ("nul\x00x", "nul_x"), ("tab\tx", "tab_x"),
    ("line\nbreak", "line_break"), ("my photo", "my_photo"), ('q"<>|?*:', "q_"), ("del\x7f", "del_"),
])
def test_output_names_keep_non_ascii_and_make_only_unsafe_characters_safe(stem, expected):
    from cnnviz.io import image_label, output_name

    assert output_name(stem, "vgg16", 0, "features.0", kind="maps") == f"{expected}-vgg16-00-features.0-maps.png"
    if "/" not in stem and "\\" not in stem and "\x00" not in stem:
        assert image_label(f"/some/dir/{stem}.jpg") == expected


def test_a_very_long_image_name_still_gives_a_valid_file_name():
    from cnnviz.io import image_label, output_name

    label = image_label("/x/" + "фото" * 100 + ".jpg")
    name = output_name(label, "efficientnet_b0", 52, "features.8.0", "norm-layer", "c100-200", kind="maps")
    assert len(name.encode()) <= 255 and label.startswith("фото") and name.endswith("-maps.png")


def test_maps_writes_non_ascii_image_names(cli, tmp_path):
    from cnnviz.io import sample_image_path

    src = tmp_path / "in"
    src.mkdir()
    names = ["фото.jpg", "写真 1.jpg", "ctl\x01.jpg"]
    for n in names:
        (src / n).write_bytes(open(sample_image_path(), "rb").read())
    out = tmp_path / "out"
    r = cli("maps", *[str(src / n) for n in names], "-m", "vgg16", "-w", "none", "-l", "0", "--size", "16",
            "--json", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    paths = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "фото-vgg16-00-features.0-maps-s16.png", "写真_1-vgg16-00-features.0-maps-s16.png",
        "ctl_-vgg16-00-features.0-maps-s16.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in paths)
