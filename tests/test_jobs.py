"""cnnviz.jobs: each command's work as a library call, what the CLI and the benchmark run."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from cnnviz.errors import UsageError
from cnnviz.jobs import ImageInputs, Output
from cnnviz.models import load_model
from cnnviz.sources import ModelSpec

NONE18 = ModelSpec(source="resnet18", weights="none")

from conftest import run_cli  # tests/ is on sys.path under pytest


@pytest.fixture(scope="module")
def resnet18():
    return load_model("resnet18", weights="none")


def _no_loading(monkeypatch, *modules):
    def boom(*a, **k):
        raise AssertionError("a preloaded model must not be loaded again")

    for m in modules:
        monkeypatch.setattr(m, "load", boom)


def _folder(path) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in sorted(os.listdir(path))}


def test_maps_job_writes_what_the_cli_writes(resnet18, tmp_path, monkeypatch):
    import cnnviz.jobs.maps as jm

    r = run_cli("maps", "--sample", "-m", "resnet18", "-w", "none", "-l", "0,layer2.*", "--size", "48", "--sheet",
                "--top", "4", "-o", str(tmp_path / "cli"), "--json")
    assert r.exit_code == 0, r.stderr
    _no_loading(monkeypatch, jm)
    said: list[str] = []
    out = Output(tmp_path / "lib")
    request = jm.MapsRequest(inputs=ImageInputs(sample=True, size="48"), layers=("0", "layer2.*"), model=NONE18,
                             sheet=True, top=4)
    jm.run_maps(request, output=out, model=resnet18, say=said.append)
    assert _folder(tmp_path / "lib") == _folder(tmp_path / "cli")
    cli_records = [json.loads(line) for line in r.stdout.splitlines()]
    lib_records = json.loads(json.dumps(out.records, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    assert [os.path.basename(c["path"]) for c in cli_records] == [os.path.basename(c["path"]) for c in lib_records]
    assert [{**c, "path": None} for c in cli_records] == [{**c, "path": None} for c in lib_records]
    assert out.written == len(out.records) == 7  # 6 grids (conv1 + 5 in layer2) + 1 sheet
    assert len(said) == 1 and said[0].startswith("maps: 7 files for 1 image(s), 6 layer(s) of resnet18")


def test_jobs_print_nothing_unless_asked(resnet18, tmp_path, capfd):
    from cnnviz.jobs.filters import FiltersRequest, run_filters
    from cnnviz.jobs.rf import RFRequest, run_rf

    run_filters(FiltersRequest(layers=("0",), model=NONE18), output=Output(tmp_path), model=resnet18)
    run_rf(RFRequest(inputs=ImageInputs(sample=True, size="48"), layers=("0",), model="resnet18"), output=Output(tmp_path))
    assert capfd.readouterr() == ("", "")
    assert sorted(os.listdir(tmp_path)) == ["grace_hopper-resnet18-rf-l0-s48.png", "resnet18-00-conv1-filters.png"]


def test_stream_output_takes_exactly_one_png_checked_before_any_work(resnet18, tmp_path, monkeypatch):
    import cnnviz.jobs.maps as jm

    _no_loading(monkeypatch, jm)
    buf = io.BytesIO()
    two = jm.MapsRequest(inputs=ImageInputs(sample=True, size="32"), layers=("0", "1"), model="resnet18")
    with pytest.raises(UsageError, match="streams exactly one PNG"):
        jm.run_maps(two, output=Output("-", stream=buf))  # would need weights that are not cached: not reached
    assert buf.getvalue() == b""
    out = Output("-", stream=buf)
    jm.run_maps(jm.MapsRequest(inputs=ImageInputs(sample=True, size="32"), layers=("0",), model="resnet18"),
                output=out, model=resnet18)
    assert [r["path"] for r in out.records] == ["-"]
    im = Image.open(io.BytesIO(buf.getvalue()))
    im.verify()
    assert im.format == "PNG"


def test_inputs_read_stdin_from_the_given_stream(rgb_image):
    from cnnviz.models import LoadedModel

    lm = LoadedModel(model=None, name="x", weights="none")  # type: ignore[arg-type]
    (im,) = ImageInputs(images=("-",), size="15", stdin=io.BytesIO(rgb_image.read_bytes())).read(lm)
    assert (im.source, im.label, im.display.shape, im.x.shape) == ("-", "stdin", (15, 20, 3), (3, 15, 20))
    expected = np.asarray(Image.open(rgb_image).convert("RGB").resize((20, 15), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(im.display, expected)


def test_maximize_and_rf_jobs_use_the_given_model(resnet18, tmp_path, monkeypatch):
    import cnnviz.jobs.maximize as jx
    import cnnviz.jobs.rf as jr

    _no_loading(monkeypatch, jx, jr)
    out = Output(tmp_path)
    jx.run_maximize(jx.MaximizeRequest(layers=("2",), channels=("0:2",), model=NONE18, steps=2, size="32"),
                    output=out, model=resnet18)
    jr.run_rf(jr.RFRequest(inputs=ImageInputs(sample=True, size="48"), layers=("layer1.0.conv2",), channel="3",
                           model="resnet18"), output=out, model=resnet18)
    assert [r["path"] for r in out.records] == [str(tmp_path / "resnet18-02-layer1.0.conv2-maximize-c0-1-steps2-s32.png"),
                                                str(tmp_path / "grace_hopper-resnet18-rf-l2-c3-s48.png")]
    assert out.records[1]["boxes"][0]["channel"] == 3


def test_report_job_writes_what_the_cli_writes(resnet18, tmp_path, monkeypatch, capfd):
    import cnnviz.jobs.report as jp

    r = run_cli("report", "--sample", "-m", "resnet18", "-w", "none", "-l", "0,1", "--size", "48", "--top", "4",
                "-o", str(tmp_path / "cli"), "--json")
    assert r.exit_code == 0, r.stderr
    capfd.readouterr()
    _no_loading(monkeypatch, jp)
    said: list[str] = []
    out = Output(tmp_path / "lib")
    request = jp.ReportRequest(inputs=ImageInputs(sample=True, size="48"), layers=("0", "1"), model=NONE18, top=4)
    res = jp.run_report(request, output=out, model=resnet18, say=said.append)
    assert capfd.readouterr() == ("", "")  # a library call: no progress lines
    files = {str(p.relative_to(tmp_path / "cli")) for p in (tmp_path / "cli").rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(tmp_path / "lib")) for p in (tmp_path / "lib").rglob("*") if p.is_file()}
    assert "index.html" in files and "layer-01.html" in files
    for name in files:
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    cli_record = json.loads(r.stdout)
    assert out.records == [{**cli_record, "path": res.index, "folder": res.output, "seconds": out.records[0]["seconds"]}]
    assert res.layers == 2 and res.images == 1
    assert len(said) == 1 and said[0].startswith("report: 2 layer(s), 128 channels, 1 image(s) of resnet18 (none)")


@pytest.mark.parametrize("request_args, message", [
    ({"layers": ("nope",)}, "unknown layer"),
    ({"steps": 3}, "add --maximize"),
    ({"maximize": True, "maximize_layer": ("1",), "layers": ("0",)}, "not in the report's --layer selection"),
    ({"cmap": "nocmap"}, "colormap"),
])
def test_report_job_refuses_before_loading_or_writing(tmp_path, monkeypatch, request_args, message):
    import cnnviz.jobs.report as jp

    _no_loading(monkeypatch, jp)
    req = jp.ReportRequest(inputs=ImageInputs(sample=True), model=NONE18, **request_args)
    with pytest.raises(UsageError, match=message):
        jp.run_report(req, output=Output(tmp_path / "out"))
    with pytest.raises(UsageError, match="a report is a folder"):
        jp.run_report(jp.ReportRequest(model=NONE18), output=Output("-", stream=io.BytesIO()))
    assert not (tmp_path / "out").exists()
