"""`cnnviz ablate` at scale: an interrupted run resumes (SIGINT and kill -9, in a subprocess)
with the same bytes as an uninterrupted one; --shard I/N parts combine into the unsharded
result; --engine ray equals the local run; --index writes the table the report reads
(cnnviz.ablatestore) and draws dataset examples on the chart."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cnnviz import ablatestore as store

from test_ablate import NET_PY as _BASE_NET, make_setup  # tests/ is on sys.path (pytest's rootdir-less test modules)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the net of test_ablate with 64 channels at features.3: 4 blocks of 16 units, so a run can be
# stopped between blocks
NET_PY = (_BASE_NET.replace("nn.Conv2d(8, 8, 3, stride=2)", "nn.Conv2d(8, 64, 3, stride=2)")
          .replace("nn.Linear(8, 4)", "nn.Linear(64, 4)"))
assert "Conv2d(8, 64" in NET_PY and "Linear(64, 4)" in NET_PY

OUTPUTS = ["net-Net-features.3-ablate-curves.csv", "net-Net-features.3-ablate-curves.png", "net-Net-features.3-ablate.json",
           "net-Net-features.3-ablate.png"]


@pytest.fixture
def setup(tmp_path):
    return make_setup(tmp_path, NET_PY)


def _args(t, *extra, out="out"):
    return ["ablate", str(t / "val"), "-m", f"{t / 'net.py'}:Net", "--labels", str(t / "classes.txt"), "-l", "features.3",
            "-s", "32", "-o", str(t / out), "--per-class", *extra]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    env.update(extra)
    return env


def _run(t, *extra, out="out", **env):
    return subprocess.run([sys.executable, "-m", "cnnviz", *_args(t, *extra, out=out)], capture_output=True, text=True,
                          timeout=300, env=_env(**env))


def _outputs(folder) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in OUTPUTS}


def _blocks(folder, kind="units") -> list[str]:
    return glob.glob(str(folder / "ablate-parts" / "*" / f"{kind}-*.npz"))


def _reference(cli, t) -> dict[str, bytes]:
    """An uninterrupted run's files (written to 'out', then moved away so 'out' is free)."""
    r = cli(*_args(t))
    assert r.exit_code == 0, r.stderr
    ref = _outputs(t / "out")
    assert not (t / "out" / "ablate-parts").exists()  # a finished run leaves no blocks behind
    shutil.rmtree(t / "out")
    return ref


def test_an_interrupted_run_resumes_and_gives_the_same_bytes(cli, setup):
    """SIGINT, then kill -9, each while the third block of units waits: the rerun measures only
    the missing blocks and writes the bytes of an uninterrupted run."""
    t = setup
    ref = _reference(cli, t)
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-m", "cnnviz", *_args(t)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env(CNNVIZ_ABLATE_BLOCK_DELAY="1.5"))
        deadline = time.time() + 240
        while len(_blocks(t / "out")) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(_blocks(t / "out")) >= 2, proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        kept = len(_blocks(t / "out"))
        assert 2 <= kept < 4  # stopped between blocks: the 4th unit block never started
        if sig == signal.SIGINT:
            assert proc.returncode == 130
            assert f"{kept} finished block(s) kept in" in err and "rerun the same command to resume" in err, err
            assert "Traceback" not in err
        else:
            assert proc.returncode == -signal.SIGKILL
        assert not (t / "out" / OUTPUTS[2]).exists()  # no output before the run is complete
        r = _run(t) if sig == signal.SIGKILL else cli(*_args(t))  # resumed in a new process, and in this one
        err = r.stderr
        assert getattr(r, "returncode", getattr(r, "exit_code", None)) == 0, err
        assert f"removing 64 unit(s) of features.3 on 9 image(s); {16 * kept} already measured" in err
        assert _outputs(t / "out") == ref
        shutil.rmtree(t / "out")


def test_a_changed_input_never_reuses_finished_blocks(cli, setup):
    t = setup
    r = cli(*_args(t, "--shard", "0/2"))  # leaves its blocks (a shard's result) in out/ablate-parts
    assert r.exit_code == 0, r.stderr
    assert len(_blocks(t / "out")) == 2
    r = cli(*_args(t, "--ablation", "mean", "--no-curves"))
    assert r.exit_code == 0 and "already measured" not in r.stderr, r.stderr
    from PIL import Image

    Image.new("RGB", (40, 48), (200, 10, 10)).save(t / "val" / "dog" / "1.png")  # one image changed
    r = cli(*_args(t, "--no-curves"))
    assert r.exit_code == 0 and "already measured" not in r.stderr, r.stderr
    r = cli(*_args(t, "--labels-from", "folders", "--no-curves"))
    assert r.exit_code == 0 and "already measured" not in r.stderr, r.stderr


def test_shards_combine_into_the_unsharded_result(cli, setup):
    t = setup
    ref = _reference(cli, t)
    seen = []
    for i in range(3):  # 4 blocks over 3 shards: 2, 1, 1
        r = cli(*_args(t, "--shard", f"{i}/3", "--format", "tsv", out=f"out{i}"))
        assert r.exit_code == 0, r.stderr
        assert f"shard {i}/3" in r.stderr and "without --shard to combine them" in r.stderr
        rows = [line.split("\t") for line in r.stdout.splitlines()[1:]]
        seen += [int(row[1]) for row in rows]
        assert not (t / f"out{i}" / OUTPUTS[2]).exists()
    assert sorted(seen) == list(range(64))  # the shards' units: every channel once
    (t / "out").mkdir()
    for i in range(3):  # gather the shards' folders (what copying them from several machines does)
        shutil.copytree(t / f"out{i}", t / "out", dirs_exist_ok=True)
    r = cli(*_args(t))
    assert r.exit_code == 0, r.stderr
    assert "64 already measured" in r.stderr
    assert _outputs(t / "out") == ref


def test_shard_bad_input_is_one_line(cli, setup):
    r = cli(*_args(setup, "--shard", "2/2"))
    assert r.exit_code == 2 and r.stderr.strip() == "cnnviz: error: --shard '2/2': need 0 <= I < N (shards are numbered 0 to N-1)"


def test_ray_engine_equals_local(setup, capfd):
    ray = pytest.importorskip("ray")
    from cnnviz.jobs.ablate import AblateRequest, run_ablate
    from cnnviz.jobs.output import Output

    t = setup
    req = dict(images=(str(t / "val"),), model=f"{t / 'net.py'}:Net", layers=("features.3",), size="32", per_class=True,
               ablation="mean", quiet=True)
    local = run_ablate(AblateRequest(**req), output=Output(str(t / "a")))
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    # one CPU: one actor (one worker process to start); the model class comes from a user's file
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    try:
        remote = run_ablate(AblateRequest(**req, engine="ray"), output=Output(str(t / "a")))
    finally:
        ray.shutdown()
    capfd.readouterr()
    a, b = local.as_dict(), remote.as_dict()
    assert [u["unit"] for u in a["units"]] == [u["unit"] for u in b["units"]]
    for ua, ub in zip(a["units"], b["units"]):
        for k in ("accuracy_drop", "probability_drop", "logit_drop"):
            assert ua[k] == pytest.approx(ub[k], abs=1e-9)
    assert a["curves"].keys() == b["curves"].keys()
    for k in a["curves"]:
        assert [p["removed"] for p in a["curves"][k]] == [p["removed"] for p in b["curves"][k]]
        assert [p["probability"] for p in a["curves"][k]] == pytest.approx([p["probability"] for p in b["curves"][k]], abs=1e-9)


# ---------------------------------------------------------------- the table beside an index


def _index(cli, t):
    r = cli("top", str(t / "val"), "-m", f"{t / 'net.py'}:Net", "--labels", str(t / "classes.txt"), "-l", "1", "--stage",
            "act", "-s", "32", "--index", str(t / "idx"), "-o", str(t / "topout"), "--no-pictures", "-q")
    assert r.exit_code == 0, r.stderr
    return t / "idx"


def test_index_table_is_what_the_json_says_and_the_report_reads_it(cli, setup):
    t = setup
    idx = _index(cli, t)
    r = cli(*_args(t, "--index", str(idx), "-k", "4"))
    assert r.exit_code == 0, r.stderr
    d = json.loads((t / "out" / OUTPUTS[2]).read_bytes())
    table = idx / "ablate" / "features.3--zero.parquet"
    assert table.is_file() and str(table) in r.stderr
    # read by the ablated layer's name and by the index's conv layer whose output it is (features.2 at act)
    for name in ("features.3", "features.2"):
        got = store.read_layer_ablation(index_dir=str(idx), layer=name)
        assert got is not None and got.layer == name and got.ablation == "zero" and len(got.channels) == 64
        for u in d["units"]:
            c = got.channels[u["channels"][0]]
            assert c.channel == u["channels"][0] and c.points == u["accuracy_drop"] and c.prob_drop == u["probability_drop"]
            assert c.logit_drop == u["logit_drop"] and c.metric == "agreement" and c.images == 9
            assert c.hurts == (u["hurts"][0]["name"] if u["hurts"] else None)
        assert got.curves_png and os.path.isfile(got.curves_png) and got.curves_png.startswith(str(idx))
    assert store.read_layer_ablation(index_dir=str(idx), layer="features.0") is None
    assert store.read_layer_ablation(index_dir=str(t / "nothing"), layer="features.3") is None
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT layer, unit, points FROM '{idx}/ablate/*.parquet' ORDER BY prob_drop DESC LIMIT 2").fetchall()
    assert [row[1] for row in rows] == [u["unit"] for u in d["units"][:2]]
    # the chart shows each top channel's dataset examples from the index: a picture column left of the bars
    from PIL import Image

    with_ex = np.asarray(Image.open(t / "out" / OUTPUTS[3]).convert("RGB"))
    r = cli(*_args(t, "-k", "4", out="plain"))
    plain = np.asarray(Image.open(t / "plain" / OUTPUTS[3]).convert("RGB"))
    assert with_ex.shape[1] > plain.shape[1] + 100 and with_ex.shape[0] > plain.shape[0]


def test_index_table_adds_units_of_the_same_run_and_replaces_another(cli, setup):
    t = setup
    idx = _index(cli, t)
    assert cli(*_args(t, "--index", str(idx), "-c", "0:8", "--no-curves")).exit_code == 0
    assert cli(*_args(t, "--index", str(idx), "-c", "8:12", "--no-curves")).exit_code == 0
    got = store.read_layer_ablation(index_dir=str(idx), layer="features.3")
    assert sorted(got.channels) == list(range(12)) and got.curves_png is None
    r = cli(*_args(t, "--index", str(idx), "-c", "20:22", "--labels-from", "folders", "--no-curves"))
    assert r.exit_code == 0, r.stderr
    got = store.read_layer_ablation(index_dir=str(idx), layer="features.3")
    assert sorted(got.channels) == [20, 21] and got.channels[20].metric == "accuracy"
    assert cli(*_args(t, "--index", str(idx), "-c", "0:2", "--ablation", "mean", "--no-curves")).exit_code == 0
    assert store.read_layer_ablation(index_dir=str(idx), layer="features.3").ablation == "mean"  # the newest wins


def test_index_bad_input_is_one_line(cli, setup):
    t = setup
    r = cli(*_args(t, "--index", str(t / "nothere")))
    assert r.exit_code != 0 and r.stderr.strip().splitlines() == [
        f"cnnviz: error: index {str(t / 'nothere')!r} does not exist; build it with 'cnnviz top IMAGES... --index {t / 'nothere'}'"]
    idx = _index(cli, t)
    (t / "other.py").write_text(NET_PY.replace("torch.manual_seed(0)", "torch.manual_seed(1)"))
    args = _args(t, "--index", str(idx))
    args[args.index("-m") + 1] = f"{t / 'other.py'}:Net"
    r = cli(*args)
    err = r.stderr.strip().splitlines()
    assert r.exit_code != 0 and len(err) == 1 and "was built with other weights" in err[0], r.stderr


def test_index_layers_map_squeezenets_fire_output_to_its_two_expand_convs():
    import torchvision

    from cnnviz.cam import CamLayer
    from cnnviz.capture import HookPoint
    from cnnviz.jobs.ablate import index_layers
    from cnnviz.layers import conv_layers
    from cnnviz.models import LoadedModel

    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1().eval()
    lm = LoadedModel(net, name="squeezenet1_1", weights="none")

    class Idx:  # what index_layers reads of an ActivationIndex
        provenance = {"stage": "act"}
        layers = [{"index": c.index, "name": c.name} for c in conv_layers(net)]

    got = index_layers(lm, CamLayer("features.12", HookPoint("features.12", 0)), Idx())
    e1 = next(c.index for c in conv_layers(net) if c.name == "features.12.expand1x1")
    assert got == {"features.12.expand1x1": (e1, 0, 256), "features.12.expand3x3": (e1 + 1, 256, 256)}


def test_store_writes_atomically_and_keeps_layer_names_with_dots_and_colons(tmp_path):
    rows = [{"unit": "3", "channels": [3], "points": 10.0, "prob_drop": 2.5, "logit_drop": 0.1, "accuracy": 90.0,
             "probability": 30.0, "logit": 1.0, "hurts": "tabby", "hurts_class": 281, "hurts_points": 50.0,
             "metric": "accuracy", "images": 4}]
    path = store.write_layer_ablation(index_dir=str(tmp_path), layer="features.12.expand3x3:act", ablation="zero",
                                      identity="x", about={}, rows=rows, channels=8, index_layers={"features.12.expand3x3": (0, 8)})
    assert os.path.basename(path) == "features.12.expand3x3%3Aact--zero.parquet"
    assert os.listdir(tmp_path / "ablate") == ["features.12.expand3x3%3Aact--zero.parquet", ".lock"] or \
        sorted(os.listdir(tmp_path / "ablate")) == [".lock", "features.12.expand3x3%3Aact--zero.parquet"]
    for name in ("features.12.expand3x3:act", "features.12.expand3x3"):
        got = store.read_layer_ablation(index_dir=str(tmp_path), layer=name)
        assert got.channels == {3: store.ChannelAblation(3, 10.0, 2.5, 0.1, "tabby", 50.0, "accuracy", 4)}


def test_a_first_conv_layer_gets_its_filters_as_thumbnails_without_an_index():
    from cnnviz.cam import CamLayer
    from cnnviz.capture import HookPoint
    from cnnviz.jobs.ablate import Unit, _filter_thumbnails
    from cnnviz.models import LoadedModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    lm = LoadedModel(net, name="n", weights="none")
    units = [Unit(str(c), [c], 0, 0, 0, 0, 0, 0) for c in (2, 0)]
    got = _filter_thumbnails(lm, CamLayer("0:act", HookPoint("1", 0)), units)
    assert list(got) == ["2", "0"]
    w = net[0].weight.detach().numpy()[2].transpose(1, 2, 0)
    want = np.clip((w / np.abs(w).max() + 1) * 127.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got["2"][0], want)
    assert got["2"][0].shape == (3, 3, 3) and got["2"][0].dtype == np.uint8
    assert _filter_thumbnails(lm, CamLayer("2", HookPoint("2", 0)), units) == {}  # 4 input channels: not a picture


def test_a_report_built_with_an_index_that_has_ablate_results_shows_them(cli, setup):
    """End to end: `top --index`, `ablate --index`, `report --index`: the layer page lists the
    channels whose removal costs most and the channel pages' data carry each channel's line."""
    channelpage = pytest.importorskip("cnnviz.report.channelpage")
    if not hasattr(channelpage, "read_ablation"):
        pytest.skip("this report has no ablation slot")
    t = setup
    idx = _index(cli, t)
    r = cli(*_args(t, "--index", str(idx), "-k", "3"))
    assert r.exit_code == 0, r.stderr
    d = json.loads((t / "out" / OUTPUTS[2]).read_bytes())
    r = cli("report", str(t / "val" / "cat" / "0.png"), "-m", f"{t / 'net.py'}:Net", "--labels", str(t / "classes.txt"),
            "--index", str(idx), "--stage", "act", "-s", "32", "-o", str(t / "site"), "-q")
    assert r.exit_code == 0, r.stderr
    page = (t / "site" / "layer-01.html").read_text()  # features.2, the conv whose activation features.3 is
    assert "id=ablation" in page and "cnnviz ablate" in page
    best = d["units"][0]
    assert f'channel-01.html#{best["channels"][0]}' in page
    data = (t / "site" / "data" / "layer-01.js").read_text()
    got = json.loads(data[data.index("{"):data.rindex("}") + 1])
    entry = got["ablation"]["channels"][str(best["channels"][0])]
    assert entry[0] == pytest.approx(best["accuracy_drop"], abs=1e-3) and entry[1] == best["hurts"][0]["name"]
    assert got["ablation"]["images"] == 9 and got["ablation"]["curves"]
    assert (t / "site" / got["ablation"]["curves"]).is_file()
