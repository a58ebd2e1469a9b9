"""Issue 8: every bad input gets one clear line and a documented exit code, odd-but-valid input
just works, nothing half-written is left behind, and runs are deterministic.

All cases drive the real click CLI. A small real torchvision model with random weights keeps it fast.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.models import build_model

NET = ["-m", "squeezenet1_1", "--weights", "none"]


# ---------------------------------------------------------------- helpers


def files(folder) -> set[str]:
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def assert_clean_failure(r, code: int, fragment: str, out_dir=None, before: set[str] | None = None) -> None:
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("cnnviz: error:") or ln.startswith("Error:")]
    assert len(err) == 1, r.stderr
    assert fragment.lower() in err[0].lower(), r.stderr
    if out_dir is not None:
        assert files(out_dir) == (before or set()), "a failed run left files behind"


def decodes(path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


# ---------------------------------------------------------------- images


def _img(path, mode="RGB", size=(64, 48), **save):
    rng = np.random.default_rng(1)
    a = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    img = Image.fromarray(a)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save)
    return str(path)


def _truncated(path, fmt):
    src = _img(path.with_suffix(".full." + fmt.lower()), size=(200, 150))
    data = open(src, "rb").read()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD_IMAGES = {
    "missing": (lambda d: str(d / "nope.jpg"), 1, "does not exist"),
    "directory": (lambda d: str(d), 1, "is a directory"),
    "empty": (lambda d: _write(d / "e.jpg", b""), 1, "empty file"),
    "text": (lambda d: _write(d / "t.jpg", b"hello, I am text"), 1, "not an image"),
    "truncated_jpeg": (lambda d: _truncated(d / "tr.jpg", "JPEG"), 1, "corrupt or truncated"),
    "truncated_png": (lambda d: _truncated(d / "tr.png", "PNG"), 1, "corrupt or truncated"),
    "bomb": (lambda d: Image.new("1", (40000, 40000)).save(d / "bomb.png") or str(d / "bomb.png"), 1, "over the limit"),
}


@pytest.mark.parametrize("command", ["maps", "rf"])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images(cli, tmp_path, out, command, case):
    make, code, fragment = BAD_IMAGES[case]
    src = tmp_path / "src"
    src.mkdir()
    path = make(src)
    extra = ["--layer", "0"] if command == "maps" else ["--layer", "-1"]
    r = cli(command, path, *NET, *extra, "-o", str(out))
    assert_clean_failure(r, code, fragment, out)


def test_unreadable_image(cli, tmp_path, out, monkeypatch):
    path = _img(tmp_path / "locked.jpg")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if str(p) == path else real(p, m, *a, **k))
    r = cli("maps", path, *NET, "--layer", "0", "-o", str(out))
    assert_clean_failure(r, 1, "permission denied", out)


def test_max_pixels_option(cli, tmp_path, out):
    path = _img(tmp_path / "a.png", size=(100, 100))
    r = cli("maps", path, *NET, "--layer", "0", "--max-pixels", "5000", "-o", str(out))
    assert_clean_failure(r, 1, "over the limit of 5,000", out)


def _exif_rotated(path):
    img = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, exif=exif)
    return str(path)


def _gif(path):
    frames = [Image.new("RGB", (50, 40), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return str(path)


def _gray16(path):
    Image.fromarray((np.arange(60 * 50).reshape(50, 60) * 20).astype(np.uint16)).save(path)
    return str(path)


ODD_IMAGES = {
    "grayscale": lambda d: _img(d / "g.jpg", "L"),
    "gray16": lambda d: _gray16(d / "g16.png"),
    "rgba": lambda d: _img(d / "a.png", "RGBA"),
    "palette_gif": lambda d: _gif(d / "p.gif"),
    "cmyk": lambda d: _img(d / "c.jpg", "CMYK"),
    "exif_rotated": lambda d: _exif_rotated(d / "r.jpg"),
    "panorama": lambda d: _img(d / "pano.jpg", size=(3000, 120)),
    "one_pixel": lambda d: _img(d / "one.png", size=(1, 1)),
}


@pytest.mark.parametrize("case", sorted(ODD_IMAGES))
def test_odd_but_valid_images_succeed(cli, tmp_path, out, case):
    path = ODD_IMAGES[case](tmp_path)
    r = cli("maps", path, *NET, "--layer", "0", "--size", "32", "-o", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    written = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(written) == 1
    pngs = [f for f in files(out) if f.endswith(".png")]
    assert len(pngs) == 1 and decodes(out / pngs[0])


def test_exif_rotation_reaches_the_model(cli, tmp_path, out):
    """A portrait EXIF photo of a landscape sensor image gives portrait-shaped maps."""
    import json

    r = cli("maps", _exif_rotated(tmp_path / "r.jpg"), *NET, "--layer", "0", "--size", "40", "-o", str(out), "--json")
    shape = json.loads(r.stdout)["shape"]
    assert shape[1] > shape[2]  # taller than wide after rotation


# ---------------------------------------------------------------- models and weights


def _ckpt(tmp_path, kind):
    p = tmp_path / f"{kind}.pth"
    if kind == "garbage":
        p.write_bytes(b"\x00\x01not a checkpoint")
    elif kind == "wrong_keys":
        torch.save({"foo.weight": torch.zeros(3)}, p)
    elif kind == "wrong_shapes":
        sd = build_model("squeezenet1_1").state_dict()
        sd["features.0.weight"] = torch.zeros(64, 1, 3, 3)
        torch.save(sd, p)
    elif kind == "missing":
        return str(tmp_path / "absent.pth")
    return str(p)


WEIGHT_CASES = {
    "garbage": (1, "not a PyTorch checkpoint"),
    "wrong_keys": (1, "does not fit this model: missing keys"),
    "wrong_shapes": (1, "shape mismatch"),
    "missing": (1, "does not exist"),
}


@pytest.mark.parametrize("command", ["maps", "filters", "maximize", "rf"])
@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_bad_weights(cli, tmp_path, out, command, case):
    code, fragment = WEIGHT_CASES[case]
    ck = _ckpt(tmp_path, case)
    args = {"maps": ["maps", "--sample", "--layer", "0"], "filters": ["filters"],
            "maximize": ["maximize", "--layer", "0", "--channels", "0", "--steps", "1"],
            "rf": ["rf", "--sample", "--layer", "0", "--channels", "0"]}[command]
    r = cli(*args, "-m", "squeezenet1_1", "--weights", ck, "-o", str(out))
    assert_clean_failure(r, code, fragment, out)


@pytest.mark.parametrize("command", ["maps", "filters", "maximize"])
def test_unknown_model_and_weights_name(cli, out, command):
    args = {"maps": ["maps", "--sample", "--layer", "0"], "filters": ["filters"],
            "maximize": ["maximize", "--layer", "0", "--steps", "1"]}[command]
    r = cli(*args, "-m", "resnet05", "-o", str(out))
    assert_clean_failure(r, 2, "did you mean 'resnet50'", out)
    r = cli(*args, "-m", "resnet50", "--weights", "IMAGENET9K", "-o", str(out))
    assert_clean_failure(r, 2, "unknown weights 'IMAGENET9K'", out)


def test_offline_without_cache(cli, out):
    r = cli("filters", "-m", "squeezenet1_1", "-o", str(out))
    assert_clean_failure(r, 1, "squeezenet1_1-b8a52dc0.pth", out)
    assert "--weights none" in r.stderr


def test_malicious_checkpoint_never_runs(cli, tmp_path, out):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    r = cli("filters", "-m", "squeezenet1_1", "--weights", str(p), "-o", str(out))
    assert_clean_failure(r, 1, "could run code", out)
    assert not marker.exists()


# ---------------------------------------------------------------- selections


SELECTION_CASES = [
    (["maps", "--sample", "--layer", "99"], "out of range"),
    (["maps", "--sample", "--layer", "feature.0"], "unknown layer 'feature.0'"),
    (["maps", "--sample", "--layer", "5:2"], "selects no layers"),
    (["maps", "--sample", "--layer", "1::0"], "malformed slice"),
    (["maps", "--sample", "--layer", "0", "--channels", "500"], "out of range"),
    (["maps", "--sample", "--layer", "0", "--channels", "x"], "malformed channel selector"),
    (["filters", "--layer", "nope*"], "matches no layer"),
    (["filters", "--layer", "0", "--channels", "64"], "out of range"),
    (["maximize", "--layer", "0", "--channels", "64", "--steps", "1"], "out of range"),
    (["maximize", "--class", "no such class xyz", "--steps", "1"], "class"),
    (["maximize", "--class", "5000", "--steps", "1"], "out of range"),
    (["rf", "--sample", "--layer", "-99"], "out of range"),
]


@pytest.mark.parametrize("argv, fragment", SELECTION_CASES, ids=[" ".join(a) for a, _ in SELECTION_CASES])
def test_bad_selections(cli, out, argv, fragment):
    r = cli(*argv, *NET, "-o", str(out))
    assert_clean_failure(r, 2, fragment, out)


# ---------------------------------------------------------------- outputs


def test_output_folder_is_a_file(cli, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("mine")
    for argv in (["maps", "--sample", "--layer", "0"], ["filters"]):
        r = cli(*argv, *NET, "-o", str(f))
        assert_clean_failure(r, 1, "is an existing file")
        assert f.read_text() == "mine"


def test_output_folder_under_a_file(cli, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("mine")
    r = cli("filters", *NET, "-o", str(f / "sub"))
    assert_clean_failure(r, 1, "cannot create output folder")


def test_unwritable_output_folder(cli, tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if str(p) == str(d) else real(p, m, *a, **k))
    r = cli("filters", *NET, "-o", str(d))
    assert_clean_failure(r, 1, "not writable", d)


@pytest.mark.parametrize("argv", [["maps", "--sample", "--layer", "0:3"], ["filters", "--layer", "0:3"]])
def test_disk_full_leaves_no_partial_file(cli, out, monkeypatch, argv):
    import cnnviz.io as cio

    calls = {"n": 0}
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    def fdopen(fd, *a, **k):
        calls["n"] += 1
        f = real(fd, *a, **k)
        return Full(f) if calls["n"] >= 2 else f  # the first file fits, the second does not

    monkeypatch.setattr(cio.os, "fdopen", fdopen)
    r = cli(*argv, *NET, "-o", str(out))
    assert_clean_failure(r, 1, "No space left on device")
    left = files(out)
    assert len(left) == 1 and all(decodes(out / f) for f in left)  # the complete first file, nothing partial


def test_existing_output_replaced_only_when_complete(cli, out):
    r = cli("filters", *NET, "-o", str(out))
    (path,) = r.stdout.split()
    before = open(path, "rb").read()
    r = cli("filters", *NET, "-o", str(out))
    assert open(path, "rb").read() == before and files(out) == {os.path.basename(path)}


# ---------------------------------------------------------------- interruption


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_only_complete_files(tmp_path, sig):
    """Deterministic: the first image's 5 grids are written and reported, then the run blocks
    reading the second image from stdin (a pipe the test keeps open); the signal arrives there.
    Exactly those 5 files remain, complete, each reported on stdout; nothing of image 2, no temp file."""
    from conftest import assert_png_valid

    out = tmp_path / "out"
    first = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(first)
    cmd = [sys.executable, "-m", "cnnviz", "maps", str(first), "-", "-m", "resnet50", "--weights", "none",
           "--layer", "0:5", "--size", "64", "--batch-size", "1", "-o", str(out)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = [p.stdout.readline().strip() for _ in range(5)]  # click.echo flushes each path
        assert all(printed), printed
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)  # also closes stdin: the signal came first
    finally:
        p.kill()
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert stdout == ""
    left = sorted(files(out))
    assert left == sorted(os.path.basename(x) for x in printed)
    assert left == [f"first-resnet50-{i:02d}-{name}-maps-s64.png" for i, name in
                    enumerate(["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0"])]
    for f in left:
        assert_png_valid(out / f)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "argv",
    [
        ["maps", "--sample", "--layer", "0,5", "--size", "64"],
        ["filters", "--layer", "0,3"],
        ["maximize", "--layer", "2", "--channels", "0:2", "--steps", "3", "--size", "32"],
        ["rf", "--sample", "--layer", "0,-1", "--size", "64"],
    ],
)
def test_same_command_gives_byte_identical_pngs(cli, tmp_path, argv):
    outs = []
    for k in range(2):
        d = tmp_path / f"run{k}"
        r = cli(*argv, *NET, "-o", str(d))
        assert r.exit_code == 0, r.stderr
        outs.append({f: (d / f).read_bytes() for f in sorted(files(d))})
    assert outs[0] and outs[0] == outs[1]


# ---------------------------------------------------------------- resources


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_repeated_captures_do_not_grow_memory(tiny_vgg):
    from cnnviz.capture import capture, has_hooks
    from cnnviz.layers import conv_layers

    layers = conv_layers(tiny_vgg)
    x = torch.randn(4, 3, 64, 64)
    for _ in range(20):
        capture(tiny_vgg, x, layers, stage="act")
    start = _rss_mb()
    for _ in range(300):
        capture(tiny_vgg, x, layers, stage="act")
    assert _rss_mb() - start < 20
    assert not has_hooks(tiny_vgg)


def test_hooks_removed_after_errors_in_every_path(tiny_vgg):
    from cnnviz.capture import Capture, capture, has_hooks, hook_points
    from cnnviz.layers import conv_layers

    layers = conv_layers(tiny_vgg)
    with pytest.raises(RuntimeError):
        capture(tiny_vgg, torch.randn(1, 5, 16, 16), layers)  # wrong channel count inside forward
    assert not has_hooks(tiny_vgg)
    with pytest.raises(ZeroDivisionError):
        with Capture(tiny_vgg, hook_points(tiny_vgg, layers, "act")) as cap:
            cap.run(torch.randn(1, 3, 16, 16))
            1 / 0
    assert not has_hooks(tiny_vgg)


@pytest.mark.parametrize("argv", [["maps", "--sample", "--layer", "0"], ["filters"], ["rf", "--sample", "--layer", "0"],
                                  ["maximize", "--layer", "0", "--channels", "0", "--steps", "1"]])
def test_json_and_stdout_png_are_refused_together(cli, argv):
    r = cli(*argv, *NET, "-o", "-", "--json")
    assert_clean_failure(r, 2, "--json and -o - both write to stdout")
    assert r.stdout == ""


@pytest.mark.parametrize("argv", [["filters", "--layer", "nope"], ["maximize", "--layer", "nope"],
                                  ["maximize", "--layer", "0", "--channels", "999"], ["maps", "--sample", "--layer", "nope"]])
def test_selection_errors_come_before_weights(cli, out, argv):
    """Offline with nothing cached, a wrong layer is still reported as the wrong layer (exit 2)."""
    r = cli(*argv, "-m", "squeezenet1_1", "-o", str(out))
    assert_clean_failure(r, 2, "out of range" if "999" in argv else "unknown layer 'nope'", out)


def test_closed_stdout_pipe_exits_quietly():
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    p = subprocess.run([sys.executable, "-m", "cnnviz", "filters", *NET, "-o", "-"], stdout=w_fd,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(w_fd)
    assert p.returncode == 141 and "Traceback" not in p.stderr and "error" not in p.stderr
