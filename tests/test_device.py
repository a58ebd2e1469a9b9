"""--device and --precision (cnnviz.device, cli.common.device_options) on every command that runs a
model. CPU only: the GPU comparison is scripts/device_check.py."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from cnnviz.device import PRECISIONS, place, resolve_device

TINY = ("-m", "squeezenet1_1", "-w", "none")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture
def photos(tmp_path, sample_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    im = Image.open(sample_path).convert("RGB").resize((96, 120))
    im.save(folder / "a.jpg")
    im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.jpg")
    im.rotate(90, expand=True).save(folder / "c.jpg")
    return folder


def commands(photos) -> dict[str, list[str]]:
    """Each command that runs a model, in a fast form ('-o' is added by the test)."""
    return {
        "maps": ["maps", "--sample", *TINY, "-l", "1", "-s", "64", "--npy"],
        "rf-effective": ["rf", "--sample", *TINY, "-l", "1", "--effective", "--samples", "2", "-s", "64"],
        "rf-channel": ["rf", "--sample", *TINY, "-l", "1", "--channels", "0:2", "-s", "64"],
        "maximize": ["maximize", *TINY, "-l", "1", "--channels", "0:2", "--steps", "2", "--size", "16", "--npy"],
        "cam": ["cam", "--sample", *TINY, "-s", "64"],  # (--npy: its path is in the PNG)
        "top": ["top", str(photos), *TINY, "-l", "1", "-c", "0:2", "-n", "2", "-s", "40", "--workers", "0"],
        "report": ["report", "--sample", *TINY, "-l", "0:2", "-s", "64"],
    }


def files(folder) -> dict[str, bytes]:
    out = {}
    for root, _dirs, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def comparable(name: str, data: bytes) -> bytes:
    """The report's pages and cache state the build's timing; everything else must be identical."""
    if name.endswith((".html", ".json", ".js")):
        return b""
    return data


@pytest.mark.parametrize("name", ["maps", "rf-effective", "rf-channel", "maximize", "cam", "top", "report"])
def test_device_cpu_and_auto_write_what_the_default_writes(cli, tmp_path, photos, name):
    args = commands(photos)[name]
    got = {}
    for tag, extra in [("default", []), ("cpu", ["--device", "cpu"]), ("auto", ["--device", "auto"])]:
        r = cli(*args, *extra, "-o", str(tmp_path / tag))
        assert r.exit_code == 0, r.stderr
        if not torch.cuda.is_available() and not torch.backends.mps.is_available():
            assert "cnnviz: device:" not in r.stderr  # auto on a CPU-only machine: nothing to announce
        got[tag] = files(tmp_path / tag)
    assert got["default"], "the command wrote nothing"
    for tag in ("cpu", "auto"):
        assert sorted(got[tag]) == sorted(got["default"])  # same names: no device tag
        for f, data in got["default"].items():
            assert comparable(f, got[tag][f]) == comparable(f, data), f


@pytest.mark.parametrize("name, module", [("maps", "maps"), ("rf-effective", "rf"), ("rf-channel", "rf"),
                                          ("maximize", "maximize"), ("cam", "cam"), ("top", "top"), ("report", "report")])
def test_each_job_loads_the_model_where_device_says(cli, tmp_path, photos, monkeypatch, name, module):
    """The wiring a GPU run depends on, checked on the CPU: 'cpu:0' stands for the resolved device."""
    import importlib

    import cnnviz.device

    job = importlib.import_module(f"cnnviz.jobs.{module}")
    real, seen = job.load, []

    def spy(spec, *, device="cpu", **kw):
        seen.append(str(device))
        return real(spec, device=device, **kw)

    monkeypatch.setattr(job, "load", spy)
    monkeypatch.setattr(cnnviz.device, "resolve_device", lambda name="auto": torch.device("cpu", 0))
    r = cli(*commands(photos)[name], "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.stderr
    assert seen == ["cpu:0"]


@NO_CUDA
@pytest.mark.parametrize("name", ["maps", "rf-effective", "rf-channel", "maximize", "cam", "top", "report"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_an_absent_gpu_is_one_line_and_writes_nothing(cli, tmp_path, photos, name, device):
    r = cli(*commands(photos)[name], "--device", device, "-o", str(tmp_path / "out"))
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stderr.strip().splitlines() == [
        f"cnnviz: error: --device {device}: no CUDA GPU is available to this PyTorch build; use --device cpu or auto"]
    assert not (tmp_path / "out").exists() or not files(tmp_path / "out")


def test_rf_profile_checks_the_device_too(cli, tmp_path):
    r = cli("rf", "--profile", "-m", "squeezenet1_1", "--device", "tpu", "-o", str(tmp_path))
    assert r.stderr == "cnnviz: error: unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps\n" and r.exit_code == 2
    assert not files(tmp_path)


def test_unknown_devices_are_usage_errors():
    from cnnviz.errors import UsageError

    for bad in ("tpu", "gpu", "cuda:x", "cpu:0:1"):
        with pytest.raises(UsageError, match="use auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)


def test_maps_bf16_is_close_to_fp32_and_saved_as_float32(cli, tmp_path):
    args = ["maps", "--sample", *TINY, "-l", "0", "-l", "3", "-s", "64", "--npy", "--json"]
    maps = {}
    for prec in ("fp32", "bf16"):
        r = cli(*args, "--precision", prec, "-o", str(tmp_path / prec))
        assert r.exit_code == 0, r.stderr
        maps[prec] = {os.path.basename(rec["npy"]): np.load(rec["npy"]) for rec in map(json.loads, r.stdout.splitlines())}
    assert sorted(maps["fp32"]) == sorted(maps["bf16"]) and len(maps["fp32"]) == 2  # no precision tag in names
    for f, a in maps["fp32"].items():
        b = maps["bf16"][f]
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        span = float(a.max() - a.min())
        # bfloat16 keeps 8 bits of mantissa (0.4 % per value); a few layers compound it
        assert np.abs(a - b).max() <= 0.02 * span, (f, np.abs(a - b).max(), span)
        assert not np.array_equal(a, b)  # bf16 did run


def test_cam_refuses_bf16_for_gradient_methods_and_runs_forward_only_ones(cli, tmp_path):
    r = cli("cam", "--sample", *TINY, "-s", "64", "--precision", "bf16", "-o", str(tmp_path / "g"))
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "cnnviz: error: --precision bf16: gradcam is computed from gradients, which bfloat16 rounds to 3 significant "
        "digits (bf16 applies to the forward-only methods: eigencam, scorecam, ablationcam); use --precision fp32"]
    assert not (tmp_path / "g").exists()
    npy = {}
    for prec in ("fp32", "bf16"):
        r = cli("cam", "--sample", *TINY, "-s", "64", "-M", "eigencam", "--npy", "--json", "--precision", prec,
                "-o", str(tmp_path / prec))
        assert r.exit_code == 0, r.stderr
        npy[prec] = np.load(json.loads(r.stdout)["npy"])
    assert npy["bf16"].dtype == np.float32 and npy["bf16"].shape == npy["fp32"].shape


def test_top_refuses_bf16_and_ray_on_a_gpu(cli, tmp_path, photos):
    out = tmp_path / "out"
    r = cli("top", str(photos), *TINY, "-l", "1", "--precision", "bf16", "-o", str(out))
    assert r.exit_code == 2 and r.stderr.startswith("cnnviz: error: --precision bf16: top ranks images")
    r = cli("top", str(photos), *TINY, "-l", "1", "--engine", "ray", "--device", "cuda", "-o", str(out))
    assert r.exit_code == 2
    assert r.stderr.strip() == ("cnnviz: error: --engine ray runs the model on the Ray workers' CPUs; --device cuda "
                                "applies to --engine local")
    assert not out.exists()


# ---------------------------------------------------------------- the auto announcement


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_auto_names_the_accelerator_it_picks_in_one_line(fake_gpu):
    said: list[str] = []
    where = place("auto", "fp32", say=said.append)
    assert where.device == torch.device("cuda", 0) and where.precision == "fp32"
    assert said == ["cnnviz: device: cuda:0 (Fake GPU 0)"]
    said.clear()
    assert place("auto", "auto", say=said.append).precision == "bf16"
    assert said == ["cnnviz: device: cuda:0 (Fake GPU 0), precision bf16"]
    said.clear()
    assert place("cuda:1", "auto", say=said.append).device == torch.device("cuda", 1)
    assert said == []  # an explicit device is what the user asked for: nothing to say
    with pytest.raises(Exception, match=r"--device cuda:2: only 2 CUDA device\(s\) present"):
        place("cuda:2")


def test_auto_picks_mps_after_cuda(monkeypatch):
    import cnnviz.device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cnnviz.device, "_has_mps", lambda: True)
    said: list[str] = []
    assert place("auto", say=said.append).device == torch.device("mps")
    assert said == ["cnnviz: device: mps"]


def test_auto_on_a_cpu_only_machine_says_nothing(monkeypatch):
    import cnnviz.device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cnnviz.device, "_has_mps", lambda: False)
    monkeypatch.setattr(cnnviz.device, "bf16_native", lambda device: False)
    said: list[str] = []
    assert place("auto", "auto", say=said.append) == cnnviz.device.Placement(torch.device("cpu"), "fp32")
    assert said == []


# ---------------------------------------------------------------- the pieces


def test_every_command_that_runs_a_model_has_both_options_with_the_vocabulary_defaults():
    from cnnviz.cli import cli as group
    from cnnviz.cli.common import _PRECISIONS

    assert _PRECISIONS == PRECISIONS
    for name in ("maps", "rf", "maximize", "cam", "top", "report"):
        params = {p.name: p for p in group.commands[name].params}
        assert params["device"].default == "auto", name
        assert params["precision"].default == ("auto" if name == "maximize" else "fp32"), name
        assert tuple(params["precision"].type.choices) == PRECISIONS
    for name in ("layers", "models", "filters"):  # nothing runs a model there
        assert "device" not in {p.name for p in group.commands[name].params}


def test_request_fields_and_tags():
    from cnnviz.jobs.cam import CamRequest
    from cnnviz.jobs.inputs import ImageInputs
    from cnnviz.jobs.maps import MapsRequest, _tags
    from cnnviz.jobs.maximize import MaximizeRequest
    from cnnviz.jobs.output import UNNAMED_FIELDS, request_tags
    from cnnviz.jobs.report import ReportRequest
    from cnnviz.jobs.rf import RFRequest
    from cnnviz.jobs.top import TopRequest

    for req in (MapsRequest(inputs=ImageInputs(), layers=("0",)), RFRequest(), CamRequest(inputs=ImageInputs()),
                TopRequest(), ReportRequest(), MaximizeRequest()):
        assert req.device == "auto"
        assert req.precision == ("auto" if isinstance(req, MaximizeRequest) else "fp32")
    assert UNNAMED_FIELDS == {"device", "precision", "quiet"}
    req = MapsRequest(inputs=ImageInputs(), layers=("0",), device="cuda", precision="bf16")
    assert request_tags(req, [("{}", "device"), ("{}", "precision")]) == []
    from cnnviz.sources import ModelSpec, architecture

    lm = architecture(ModelSpec(source="squeezenet1_1", weights="none"))
    assert _tags(req, lm, sheet=False) == _tags(MapsRequest(inputs=ImageInputs(), layers=("0",)), lm, sheet=False) == []


def test_captures_are_cpu_float32_copies_whatever_the_precision(tiny_vgg):
    from cnnviz.capture import Capture, capture, hook_points

    x = torch.rand(2, 3, 32, 32)
    plain = capture(tiny_vgg, x, ["features.2"])["features.2"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = capture(tiny_vgg, x, ["features.2"])["features.2"]
        with Capture(tiny_vgg, hook_points(tiny_vgg, ["features.2"]), on_cpu=False) as cap:
            raw = next(iter(cap.run(x).values()))
    assert plain.dtype == low.dtype == torch.float32 and low.device.type == "cpu"
    assert raw.dtype == torch.bfloat16  # on_cpu=False: as computed (cnnviz.scan reduces it in place)
    assert torch.allclose(low, plain, rtol=0.05, atol=0.05 * float(plain.abs().max()))
    # a copy, not a view of the layer's output (VGG's in-place ReLU follows features.2)
    assert (plain < 0).any()


def test_autocast_is_off_for_fp32_inside_a_bf16_caller():
    from cnnviz.device import autocast

    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast("fp32", torch.device("cpu")):
            assert not torch.is_autocast_enabled("cpu")
        with autocast("bf16", torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu")


def test_fp32_on_cuda_turns_tf32_off_inside_and_restores_it():
    from cnnviz.device import autocast

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        ctx = autocast("fp32", torch.device("cuda", 0))
        for _ in range(2):  # reusable, as the optimiser's step loop uses it
            with ctx:
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


# ---------------------------------------------------------------- scripts/device_check.py


def _device_check():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "device_check.py")
    spec = importlib.util.spec_from_file_location("device_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_device_check_runs_the_cpu_path_and_says_there_is_no_gpu(capsys):
    mod = _device_check()
    assert mod.main(["-m", "squeezenet1_1", "-s", "64", "--skip", "cam"]) == 0
    out, err = capsys.readouterr()
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("| check")]
    assert {r.split(" | ")[0][2:] for r in rows} == {"maps", "top", "rf", "maximize"}
    assert all(r.endswith("| yes |") for r in rows)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert "no GPU here" in err


def test_device_check_fails_on_a_mismatch(capsys, monkeypatch):
    mod = _device_check()
    assert mod.rel_error([0.0, 2.0], [0.0, 2.0002]) == pytest.approx(1e-4)
    assert mod.rel_error([1.0, 1.0], [1.0, 1.0]) == 0.0 and mod.rel_error([0.0], [1.0]) == float("inf")
    monkeypatch.setitem(mod.TOL, "maps", -1.0)  # nothing can pass: the exit status must say so
    assert mod.main(["-m", "squeezenet1_1", "-s", "64", "--skip", "cam,top,rf,maximize"]) == 1
    assert "| NO |" in capsys.readouterr().out


def test_report_bf16_pictures_do_not_stand_in_for_fp32_ones(cli, tmp_path):
    """The report's cache keys name bf16 (and leave fp32 keys as earlier runs wrote them)."""
    args = ["report", "--sample", *TINY, "-l", "0:2", "-s", "64", "--json", "-o", str(tmp_path)]

    def run(*extra: str) -> dict:
        r = cli(*args, *extra)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    first = run()
    assert run()["reused"] == first["computed"]  # the same fp32 run: all reused
    bf16 = run("--precision", "bf16")
    assert bf16["computed"].get("maps") and bf16["computed"].get("sheet")  # its own maps
    assert bf16["reused"].get("filters") == first["computed"]["filters"]  # no forward pass: shared
    again = run("--precision", "fp32")
    assert not again["computed"].get("maps")  # the fp32 maps are still there
