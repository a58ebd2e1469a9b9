"""Runs that differ only in options never overwrite each other's files; a default run keeps
its plain name; re-running a command replaces its own files (README "Output names")."""
from __future__ import annotations

import os
import re

import pytest


def _run(cli, out, argv):
    r = cli(*argv, "-o", str(out))
    assert r.exit_code == 0, (argv, r.stderr)
    names = [os.path.basename(p) for p in r.stdout.split()]
    assert names
    return names


def _check(cli, tmp_path, base, default_names, variants, *, same=()):
    """All runs write into one folder: ``base`` gives ``default_names`` ('{}' matches a number:
    the predicted class); each variant (extra options) gives names shared with no other run, so
    nothing is overwritten, except the variants in ``same``, which draw the default picture and
    must get exactly the default names; re-running the base replaces its own files."""
    out = tmp_path / "out"
    seen = {"": _run(cli, out, base)}
    assert len(seen[""]) == len(default_names)
    for want, got in zip(default_names, seen[""]):
        assert re.fullmatch(re.escape(want).replace(r"\{\}", r"\d+"), got), (want, got)
    for extra in variants:
        names = _run(cli, out, [*base, *extra])
        if tuple(extra) in same:
            assert names == seen[""], extra
            seen[" ".join(extra)] = names
            continue
        for other, prev in seen.items():
            assert not set(names) & set(prev), f"{extra} and {other or 'the default run'} share {set(names) & set(prev)}"
        seen[" ".join(extra)] = names
    total = len({n for v in seen.values() for n in v})
    assert len(os.listdir(out)) == total
    assert _run(cli, out, base) == seen[""] and len(os.listdir(out)) == total
    return seen


def test_maps_option_variants_have_distinct_names(cli, tmp_path, rgb_image):
    base = ["maps", str(rgb_image), "-m", "resnet18", "-w", "none", "-l", "0", "--size", "16"]
    seen = _check(cli, tmp_path, base, ["img-resnet18-00-conv1-maps-s16.png"], [
        ["--stage", "act"], ["--norm", "layer"], ["--channels", "0:4"], ["--channels", "4:8"], ["--top", "3"],
        ["--top", "3", "--channels", "0:8"], ["--overlay"], ["--overlay", "--alpha", "0.3"], ["--symmetric"],
        ["--cmap", "magma"], ["--tile", "8"], ["--cols", "2"], ["--no-captions"], ["--crop"], ["--size", "20"],
        ["--channels", "all"], ["--channels", "0:64"],  # every channel in order: the default picture
    ], same={("--channels", "all"), ("--channels", "0:64")})
    assert seen["--stage act"] == ["img-resnet18-00-conv1-maps-act-s16.png"]
    assert seen["--channels 0:4"] == ["img-resnet18-00-conv1-maps-c0-3-s16.png"]
    assert seen["--top 3"] == ["img-resnet18-00-conv1-maps-top3-s16.png"]


def test_maps_default_run_keeps_todays_name_and_sheets_are_named_by_their_options(cli, tmp_path, rgb_image):
    base = ["maps", str(rgb_image), "-m", "resnet18", "-w", "none", "-l", "0"]
    assert _run(cli, tmp_path, base) == ["img-resnet18-00-conv1-maps.png"]
    # the grid of a --sheet run is the default grid (same picture, same name); the sheets differ
    assert _run(cli, tmp_path, [*base, "--sheet"]) == ["img-resnet18-00-conv1-maps.png", "img-resnet18-sheet.png"]
    assert _run(cli, tmp_path, [*base, "--sheet", "--sheet-maps", "4"])[1] == "img-resnet18-sheet-k4.png"
    assert _run(cli, tmp_path, [*base, "--sheet", "--stage", "act"])[1] == "img-resnet18-sheet-act.png"


def test_filters_option_variants_have_distinct_names(cli, tmp_path):
    base = ["filters", "-m", "resnet18", "-w", "none", "-l", "layer1.0.conv1"]
    seen = _check(cli, tmp_path, base, ["resnet18-01-layer1.0.conv1-filters.png"], [
        ["--mode", "channels"], ["--mode", "channels", "--inputs", "0:4"], ["--mode", "channels", "--max-inputs", "8"],
        ["--norm", "filter"], ["--norm", "minmax"], ["--channels", "0:8"], ["--channels", "8:16"], ["--max-filters", "4"],
        ["--cmap", "PuOr"], ["--tile-numbers"], ["--no-captions"], ["--tile", "24"], ["--gap", "0"],
    ])
    assert seen["--norm filter"] == ["resnet18-01-layer1.0.conv1-filters-norm-filter.png"]
    assert seen["--channels 0:8"] == ["resnet18-01-layer1.0.conv1-filters-f0-7.png"]
    # an explicit option equal to the default draws the same picture: same name
    assert _run(cli, tmp_path / "explicit", [*base, "--mode", "mean", "--norm", "layer"]) == seen[""]


def test_rf_option_variants_have_distinct_names(cli, tmp_path, rgb_image):
    base = ["rf", str(rgb_image), "-m", "vgg16"]
    _check(cli, tmp_path, base, ["img-vgg16-rf.png"], [
        ["-l", "block3_conv1"], ["-l", "block4_conv1"], ["--at", "10,20"], ["--size", "64"], ["--crop"],
        ["-l", "1,3,6,9,12"],  # exactly the default layers (the last conv of each block): the default picture
    ], same={("-l", "1,3,6,9,12")})


@pytest.mark.slow
def test_maximize_option_variants_have_distinct_names(cli, tmp_path):
    base = ["maximize", "-m", "mobilenet_v3_small", "-w", "none", "-l", "0", "-c", "0:2", "--steps", "1", "--size", "8"]
    seen = _check(cli, tmp_path, base, ["mobilenet_v3_small-00-features.0.0-maximize-c0-1-steps1-s8.png"], [
        ["-c", "2:4"], ["--objective", "neuron"], ["--stage", "act"], ["--lr", "0.1"], ["--param", "pixel"],
        ["--no-decorrelate"], ["--no-transforms"], ["--seed", "1"], ["--no-captions"], ["--separate"],
    ])
    assert seen["--separate"] == ["mobilenet_v3_small-00-features.0.0-ch0-maximize-steps1-s8.png",
                                  "mobilenet_v3_small-00-features.0.0-ch1-maximize-steps1-s8.png"]


def test_effective_field_and_profile_variants_have_distinct_names(cli, tmp_path, rgb_image):
    base = ["rf", str(rgb_image), "-m", "resnet18", "-w", "none", "-l", "layer1.0.conv1", "--effective",
            "--samples", "2", "--size", "32"]
    seen = _check(cli, tmp_path, base, ["img-resnet18-erf-l1-s32-n2.png"], [
        ["--samples", "3"], ["--seed", "1"], ["-c", "0:2"], ["--at", "8,8"],
    ])
    assert seen["--seed 1"] == ["img-resnet18-erf-l1-s32-n2-seed1.png"]
    profiles = _check(cli, tmp_path / "profile", ["rf", "--profile", "-m", "vgg16"], ["vgg16-rf-profile.png"], [
        ["--size", "320"], ["--ignore-gates"],
    ])
    assert profiles["--size 320"] == ["vgg16-rf-profile-s320.png"]


@pytest.mark.parametrize("command, default_name", [
    (["maps", "-m", "resnet18", "-l", "0"], "img-resnet18-00-conv1-maps.png"),
    (["cam", "-m", "resnet18"], "img-resnet18-gradcam-{}-cam.png"),
    (["rf", "-m", "resnet18", "-l", "0"], "img-resnet18-rf-l0.png"),
    (["maps", "-m", "inception_v3", "-l", "0"], "img-inception_v3-00-Conv2d_1a_3x3.conv-maps.png"),  # its own size is 299
])
def test_a_size_equal_to_the_models_own_keeps_the_default_name(cli, tmp_path, rgb_image, command, default_name):
    """--size S where S is the model's own input size (the default, known at run time) draws the
    default picture under the default name; another size, HxW and --crop are tagged."""
    own = "299" if "inception_v3" in command else "224"
    base = [command[0], str(rgb_image), *command[1:], "-w", "none"]
    seen = _check(cli, tmp_path, base, [default_name], [
        ["--size", own], ["--size", "64"], ["--size", f"{own}x{own}"], ["--crop"], ["--crop", "--size", "64"],
    ], same={("--size", own)})
    assert seen["--size 64"][0].endswith("-s64.png") and seen[f"--size {own}x{own}"][0].endswith(f"-s{own}x{own}.png")
    assert _run(cli, tmp_path / "crop", [*base, "--crop", "--size", own]) == seen["--crop"]


def test_a_profile_at_the_default_size_keeps_the_default_name(cli, tmp_path):
    profiles = _check(cli, tmp_path, ["rf", "--profile", "-m", "vgg16"], ["vgg16-rf-profile.png"], [
        ["--size", "224"], ["--size", "224x224"], ["--size", "96"]], same={("--size", "224"), ("--size", "224x224")})
    assert profiles["--size 96"] == ["vgg16-rf-profile-s96.png"]


def test_long_selections_become_a_count_and_hash(cli, tmp_path, rgb_image):
    """Two long channel selections with the same count: short, distinct names."""
    base = ["maps", str(rgb_image), "-m", "resnet18", "-w", "none", "-l", "0", "--size", "16"]
    evens = _run(cli, tmp_path, [*base, "--channels", ",".join(str(c) for c in range(0, 64, 2))])
    odds = _run(cli, tmp_path, [*base, "--channels", ",".join(str(c) for c in range(1, 64, 2))])
    assert evens != odds
    for name in evens + odds:
        tag = name.split("-maps-")[1].split("-")[0]
        assert tag.startswith("c32x") and len(tag) == len("c32x") + 8, name


def test_cam_option_variants_have_distinct_names(cli, tmp_path, rgb_image):
    base = ["cam", str(rgb_image), "-m", "resnet18", "-w", "none", "--size", "64"]
    seen = _check(cli, tmp_path, base, ["img-resnet18-gradcam-{}-cam-s64.png"], [
        ["--layer", "layer3"], ["--layer", "layer4"], ["--smooth", "2"], ["--smooth", "2", "--noise", "0.3"],
        ["--cmap", "magma"], ["--alpha", "0.3"], ["--no-captions"], ["--crop"], ["--size", "48"],
        ["--method", "gradcam,hirescam"], ["--method", "gradcam,layercam"], ["--method", "gradcam,hirescam", "--top", "2"],
        ["--method", "saliency"],
    ], same={("--layer", "layer4")})
    assert seen["--layer layer3"][0].endswith("-cam-layer-layer3-s64.png")
    # --layer naming the default layer (above), or a layer an input method does not read: same picture, same name
    assert _run(cli, tmp_path / "saliency", [*base, "--method", "saliency", "--layer", "layer3"]) == seen["--method saliency"]
    assert seen["--method gradcam,hirescam"] == ["img-resnet18-cam-sheet-m-gradcam,hirescam-s64.png"]
    ig = _check(cli, tmp_path / "ig", [*base, "--method", "ig"], ["img-resnet18-integrated-gradients-{}-cam-s64.png"],
                [["--ig-steps", "4"]])
    assert ig["--ig-steps 4"][0].endswith("-cam-ig4-s64.png")
