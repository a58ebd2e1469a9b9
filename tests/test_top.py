"""cnnviz top: image lists, streaming top-K against a brute-force computation, patch geometry
against gradients, the index (resume, incremental, refusal, queries, kill -9), shards + merge."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.errors import ImageError, UsageError
from cnnviz.index import ActivationIndex, IndexStoreError, merge
from cnnviz.io import load_image, preprocess
from cnnviz.jobs.output import Output
from cnnviz.jobs.top import TopRequest, image_query, run_top
from cnnviz.layers import conv_layers
from cnnviz.models import LoadedModel
from cnnviz.patches import PAD_COLORS, crop_window
from cnnviz.rf import receptive_fields
from cnnviz.scan import TopK, expand_images, image_id, in_shard, parse_shard

from conftest import TinyVGG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32  # tiny inputs: Resize(36) + CenterCrop(32)


def _photos(folder, n, *, seed=0, start=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        a[: h // 2] //= int(rng.integers(1, 4))  # some structure, not pure noise
        p = folder / f"im{i:03d}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def tiny_lm():
    torch.manual_seed(0)
    return LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")


def _req(**kw):
    base = dict(layers=("1", "2"), k=4, size=SIZE, batch_size=5, workers=0, pictures=False)
    base.update(kw)
    return TopRequest(**base)


def _brute(lm, paths, layer_index, *, score="max", bottom=False, stage_conv=True):
    """Every image alone through the network's submodules run by hand; full maps kept."""
    feats = lm.model.features
    upto = {0: 1, 1: 3, 2: 6}[layer_index]  # conv 0 = features[0], conv 1 = features[2], conv 2 = features[5]
    rows = []
    for p in paths:
        x, _ = preprocess(load_image(p), size=SIZE, crop=True)
        with torch.no_grad():
            m = feats[:upto](torch.from_numpy(x)[None])[0].numpy().astype(np.float64)
        c, h, w = m.shape
        flat = m.reshape(c, -1)
        rows.append((image_id(p), flat.max(1), flat.mean(1), np.stack(np.unravel_index(flat.argmax(1), (h, w)), 1)))
    out = {}
    for ch in range(rows[0][1].shape[0]):
        s = [(r[1][ch] if score == "max" else r[2][ch], r[0], tuple(r[3][ch])) for r in rows]
        s.sort(key=lambda t: ((t[0] if bottom else -t[0]), t[1]))
        out[ch] = s
    return out


# ---------------------------------------------------------------- the image list


def test_expand_images_folders_globs_stdin_and_duplicates(tmp_path):
    d = tmp_path / "set"
    (d / "b").mkdir(parents=True)
    (d / "a").mkdir()
    (d / ".hidden").mkdir()
    for p in ["b/2.jpg", "a/1.PNG", "a/0.jpeg", "z.webp", ".x.jpg", ".hidden/h.jpg", "notes.txt"]:
        (d / p).write_bytes(b"x")
    got = expand_images([str(d)])
    assert [os.path.relpath(p, d) for p in got] == ["a/0.jpeg", "a/1.PNG", "b/2.jpg", "z.webp"]
    # a glob, a file listed again (kept once), '-' with paths and a folder on stdin
    stdin = io.StringIO(f"{d}/z.webp\n\n{d}/a\n")
    got = expand_images([str(d / "b" / "*.jpg"), "-", str(d / "b" / "2.jpg")], stdin=stdin)
    assert [os.path.relpath(p, d) for p in got] == ["b/2.jpg", "z.webp", "a/0.jpeg", "a/1.PNG"]
    with pytest.raises(ImageError, match="does not exist"):
        expand_images([str(d / "nope.jpg")])
    with pytest.raises(ImageError, match="no file matches"):
        expand_images([str(d / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no images"):
        expand_images([str(tmp_path / "empty")])


def test_shards_partition_the_list_and_are_stable():
    paths = [f"/data/img{i}.jpg" for i in range(200)]
    parts = [[p for p in paths if in_shard(p, (i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(paths) and all(parts)
    more = paths + [f"/data/new{i}.jpg" for i in range(50)]
    assert [p for p in more if in_shard(p, (1, 3)) and p in paths] == parts[1]  # adding files moves none
    assert parse_shard("2/4") == (2, 4)
    for bad in ["4/4", "-1/2", "x", "1/0"]:
        with pytest.raises(UsageError):
            parse_shard(bad)


# ---------------------------------------------------------------- top-K


def test_topk_equals_sorting_everything():
    rng = np.random.default_rng(1)
    from cnnviz.scan import LayerStats

    t = TopK([0, 2], 3, score="mean")
    all_rows = []
    for b in range(5):
        n = int(rng.integers(1, 4))
        ids = rng.integers(-1000, 1000, n)
        mean = rng.integers(0, 4, (n, 3)).astype(np.float32)  # many ties: broken by image id
        st = LayerStats(max=mean * 0, mean=mean, unit=np.zeros((n, 3, 2), np.int32))
        t.update(ids, st)
        all_rows += [(int(i), mean[j]) for j, i in enumerate(ids)]
    res = t.result()
    for c in (0, 2):
        want = sorted(all_rows, key=lambda r: (-r[1][c], r[0]))[:3]
        assert [e.image for e in res[c]] == [r[0] for r in want]


@pytest.mark.parametrize("score,bottom", [("max", False), ("mean", False), ("max", True)])
def test_scan_topk_matches_brute_force(tmp_path, tiny_lm, score, bottom):
    paths = _photos(tmp_path / "p", 23)
    res = run_top(_req(images=(str(tmp_path / "p"),), score=score, bottom=bottom), model=tiny_lm)
    assert res.scanned == 23 and res.skipped == 0
    for lr in res.layers:
        want = _brute(tiny_lm, paths, lr.layer.index, score=score, bottom=bottom)
        assert sorted(lr.examples) == list(range(lr.layer.out_channels))
        for c, entries in lr.examples.items():
            exp = want[c][:4]
            assert [e["image"] for e in entries] == [w[1] for w in exp]
            assert [tuple(e["unit"]) for e in entries] == [w[2] for w in exp]
            np.testing.assert_allclose([e["score"] for e in entries], [w[0] for w in exp], rtol=1e-5, atol=1e-6)
            assert all(os.path.abspath(e["path"]) in map(os.path.abspath, paths) for e in entries)


def test_worker_processes_give_the_same_answer(tmp_path, tiny_lm):
    _photos(tmp_path / "p", 12)
    a = run_top(_req(images=(str(tmp_path / "p"),), workers=0), model=tiny_lm)
    b = run_top(_req(images=(str(tmp_path / "p"),), workers=2, batch_size=3), model=tiny_lm)
    assert [lr.examples for lr in a.layers] == [lr.examples for lr in b.layers]


def test_boxes_are_the_gradient_support_of_the_peak_unit(tmp_path, tiny_lm):
    """The patch window = the input pixels that can change the peak unit (independent: autograd)."""
    paths = _photos(tmp_path / "p", 6)
    res = run_top(_req(images=(str(tmp_path / "p"),), layers=("2",), k=2), model=tiny_lm)
    lr = res.layers[0]
    torch.manual_seed(0)
    for c, entries in list(lr.examples.items())[:3]:
        for e in entries:
            x = torch.randn(1, 3, SIZE, SIZE, requires_grad=True)
            y0, x0, y1, x1 = e["box"]
            out = tiny_lm.model.features[:6](x)[0, c, e["unit"][0], e["unit"][1]]
            (g,) = torch.autograd.grad(out, x)
            ys, xs = np.nonzero(g.abs().sum(1)[0].numpy())
            assert ys.min() == max(y0, 0) and ys.max() == min(y1, SIZE - 1)
            assert xs.min() == max(x0, 0) and xs.max() == min(x1, SIZE - 1)
            assert (y1 - y0 + 1, x1 - x0 + 1) == lr.field.rf


def test_crop_window_pixels_and_padding():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    patch, inside = crop_window(img, (-2, 3, 1, 7))  # 2 rows above, 1 column right of the image
    assert patch.shape == (4, 5, 3) and inside.shape == (4, 5)
    np.testing.assert_array_equal(patch[2:, :3], img[0:2, 3:6])
    assert not inside[:2].any() and not inside[:, 3:].any() and inside[2:, :3].all()
    pad = patch[~inside]
    assert all(tuple(p) in PAD_COLORS for p in pad)
    assert img.flags.writeable and img[0, 0, 0] == 0  # input untouched


# ---------------------------------------------------------------- pictures and CLI


def test_grid_picture_has_a_row_per_channel_and_k_columns(tmp_path, tiny_lm):
    _photos(tmp_path / "p", 8)
    out = tmp_path / "out"
    recs = []
    res = run_top(_req(images=(str(tmp_path / "p"),), layers=("2",), channels="0:3", k=5, pictures=True, tile=40),
                  model=tiny_lm, output=Output(str(out), on_record=recs.append))
    assert [r["channel"] for r in recs] == [0, 1, 2]
    pics = {r["picture"] for r in recs}
    assert pics == {str(out / "tinyvgg-02-features.5-top-max-c0-2-k5-tile40-s32.png")}
    with Image.open(pics.pop()) as im:
        im.verify()
    grid = np.asarray(Image.open(out / "tinyvgg-02-features.5-top-max-c0-2-k5-tile40-s32.png").convert("RGB"))
    # 5 patch columns of 40 px and 3 rows of 40 px: count columns/rows of non-white tiles
    dark = (grid < 250).any(axis=2)
    assert grid.shape[1] >= 5 * 40 and grid.shape[0] >= 3 * 40
    assert res.layers[0].pictures[0].endswith("top-max-c0-2-k5-tile40-s32.png")
    # --separate: one strip per channel
    recs2 = []
    run_top(_req(images=(str(tmp_path / "p"),), layers=("2",), channels="0:2", k=3, pictures=True, separate=True, tile=40,
                 bottom=True), model=tiny_lm, output=Output(str(out), on_record=recs2.append))
    assert [os.path.basename(r["picture"]) for r in recs2] == ["tinyvgg-02-features.5-c0000-bottom-max-k3-tile40-s32.png",
                                                              "tinyvgg-02-features.5-c0001-bottom-max-k3-tile40-s32.png"]
    assert dark.any()


def test_overlay_runs_and_differs_from_plain(tmp_path, tiny_lm):
    _photos(tmp_path / "p", 5)
    a = run_top(_req(images=(str(tmp_path / "p"),), layers=("2",), channels="0", k=2, pictures=True, tile=32),
                model=tiny_lm, output=Output(str(tmp_path / "a")))
    b = run_top(_req(images=(str(tmp_path / "p"),), layers=("2",), channels="0", k=2, pictures=True, tile=32, overlay=True),
                model=tiny_lm, output=Output(str(tmp_path / "b")))
    pa = np.asarray(Image.open(a.layers[0].pictures[0]).convert("RGB"))
    pb = np.asarray(Image.open(b.layers[0].pictures[0]).convert("RGB"))
    assert pa.shape[0] > 0 and pa.shape != pb.shape or not np.array_equal(pa, pb)


def test_cli_json_bad_files_and_errors(tmp_path, cli):
    _photos(tmp_path / "p", 6)
    (tmp_path / "p" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    args = ["top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "-c", "0:2", "-n", "3",
            "-s", "48", "--workers", "0", "-o", str(tmp_path / "out")]
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["channel"] for x in recs] == [0, 1]
    e = recs[0]["examples"][0]
    assert set(e) >= {"path", "score", "unit", "box"} and len(e["box"]) == 4
    assert "warning: skipped" in r.stderr and "broken.jpg" in r.stderr and "1 unreadable skipped" in r.stderr
    r = cli(*args, "--strict")
    assert r.exit_code == 1 and "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    r = cli(*args[:-2], "-c", "7000", "-o", str(tmp_path / "out"))
    assert r.exit_code == 2 and r.stderr.startswith("cnnviz: error:") and "channel" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("top", str(tmp_path / "empty"), "-m", "squeezenet1_1", "-w", "none", "-l", "1")
    assert r.exit_code == 2 and "holds no images" in r.stderr
    r = cli("top", "--index", str(tmp_path / "nothing"), "-l", "1")
    assert r.exit_code == 1 and "does not exist" in r.stderr
    r = cli("top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "--shard", "1/2")
    assert r.exit_code == 2 and "--index" in r.stderr


def test_cli_stdin_list_and_text_output(tmp_path, cli):
    paths = _photos(tmp_path / "p", 4)
    r = cli("top", "-", "-m", "squeezenet1_1", "-w", "none", "-l", "0", "-c", "0", "-n", "2", "-s", "40", "--workers", "0",
            "-o", str(tmp_path / "o"), input="\n".join(paths).encode())
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "o" / "squeezenet1_1-00-features.0-top-max-c0-k2-s40.png")


# ---------------------------------------------------------------- the index


def _flat(res):
    """Images and peak units exactly; scores to float32 rounding (a batch composed of other
    images runs other conv kernels: the last bit of a sum can differ)."""
    return {(lr.layer.index, c): [(e["image"], round(e["score"], 5), tuple(e["unit"])) for e in ex]
            for lr in res.layers for c, ex in lr.examples.items()}


def _ids_in(index_dir):
    import pyarrow.parquet as pq

    ids = []
    for d in ActivationIndex.open(index_dir).part_dirs():
        t = pq.read_table(os.path.join(d, "images.parquet"))
        ids += [i for i, ok in zip(t.column("image").to_pylist(), t.column("ok").to_pylist()) if ok]
    return ids


def test_index_answers_equal_the_streaming_scan_and_queries_need_no_model(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 17)
    plain = run_top(_req(images=(str(folder),)), model=tiny_lm)
    idx = str(tmp_path / "idx")
    indexed = run_top(_req(images=(str(folder),), index=idx, part_images=5), model=tiny_lm)
    assert _flat(plain) == _flat(indexed)
    assert len(ActivationIndex.open(idx).part_dirs()) == 4  # batches of 5: 5, 5, 5, 2
    prov = json.load(open(os.path.join(idx, "index.json")))
    assert prov["model"] == "tinyvgg" and len(prov["weights_sha256"]) == 64 and prov["preprocess"]["crop"] is True
    assert prov["preprocess"]["size"] == SIZE and prov["cnnviz"] and [d["index"] for d in prov["layers"]] == [1, 2]
    # a query: the forward pass would raise, so none happens
    class NoForward(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("query ran the model")

    frozen = LoadedModel(model=tiny_lm.model, name="tinyvgg", weights="none")
    handle = frozen.model.register_forward_pre_hook(lambda *a: NoForward()(None))
    try:
        q = run_top(_req(index=idx, k=4, score="max"), model=frozen)
        q2 = run_top(_req(index=idx, layers=("2",), channels="1:3", k=2, score="mean"), model=frozen)
    finally:
        handle.remove()
    assert _flat(q) == _flat(plain)
    mean = run_top(_req(images=(str(folder),), layers=("2",), channels="1:3", k=2, score="mean"), model=tiny_lm)
    assert _flat(q2) == _flat(mean)


def test_image_query_ranks_against_brute_force(tmp_path, tiny_lm):
    paths = _photos(tmp_path / "p", 11)
    idx = str(tmp_path / "idx")
    run_top(_req(images=(str(tmp_path / "p"),), index=idx), model=tiny_lm)
    me = paths[4]
    recs = image_query(_req(index=idx, image=me, layers=("2",), k=3), model=tiny_lm)
    want = _brute(tiny_lm, paths, 2)
    mine = {c: next(s for s, i, _ in rows if i == image_id(me)) for c, rows in want.items()}
    best = sorted(mine, key=lambda c: -mine[c])[:3]
    got = recs[0]["channels"]
    assert [r["channel"] for r in got] == best
    for r in got:
        rank = 1 + [i for _, i, _ in want[r["channel"]]].index(image_id(me))
        assert r["rank"] == rank and r["of"] == 11
    assert recs[0]["indexed"] is True
    with pytest.raises(ImageError, match="does not exist"):
        image_query(_req(index=idx, image=str(tmp_path / "other.jpg"), layers=("2",)), model=tiny_lm)


def test_image_query_ranks_a_new_image_as_if_it_were_added(tmp_path, tiny_lm):
    """An image outside the index runs once through the index's model and gets exactly the
    channels, scores, peak units and ranks it gets once scanned into the index (brute force agrees)."""
    paths = _photos(tmp_path / "p", 10)
    (new,) = _photos(tmp_path / "new", 1, seed=5, start=50)
    idx, both = str(tmp_path / "idx"), str(tmp_path / "both")
    run_top(_req(images=(str(tmp_path / "p"),), index=idx), model=tiny_lm)
    run_top(_req(images=(str(tmp_path / "p"), new), index=both), model=tiny_lm)
    for layer, score, chans in [("2", "max", None), ("1", "mean", "0:3")]:
        req = dict(image=new, layers=(layer,), k=4, score=score, channels=chans)
        (fresh,) = image_query(_req(index=idx, **req), model=tiny_lm)
        (added,) = image_query(_req(index=both, **req), model=tiny_lm)
        assert fresh["indexed"] is False and added["indexed"] is True
        assert len(fresh["channels"]) == (4 if chans is None else 3)
        for a, b in zip(fresh["channels"], added["channels"]):
            assert a["channel"] == b["channel"] and a["unit"] == b["unit"] and a["box"] == b["box"]
            assert (a["rank"], a["of"]) == (b["rank"], b["of"]) and b["of"] == 11
            assert a["score"] == pytest.approx(b["score"], rel=1e-6) and a["max"] == pytest.approx(b["max"], rel=1e-6)
    want = _brute(tiny_lm, [*paths, new], 2)
    (fresh,) = image_query(_req(index=idx, image=new, layers=("2",), k=2), model=tiny_lm)
    for r in fresh["channels"]:
        assert r["rank"] == 1 + [i for _, i, _ in want[r["channel"]]].index(image_id(new))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="not an image") as err:
        image_query(_req(index=idx, image=str(tmp_path / "broken.png"), layers=("2",)), model=tiny_lm)
    assert "--strict" not in str(err.value)  # no scan option the user did not give
    # other weights than the index's: refused in one line, no ranking against the wrong numbers
    other = LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")
    with pytest.raises(IndexStoreError, match="weights"):
        image_query(_req(index=idx, image=new, layers=("2",)), model=other)


class _Interrupt:
    """A forward hook that raises KeyboardInterrupt (Ctrl-C) on the n-th forward pass."""

    def __init__(self, model, n):
        self.calls, self.n = 0, n
        self.handle = model.features[0].register_forward_hook(self)

    def __call__(self, mod, inp, out):
        if inp[0].shape[0] != 5:  # not a scan batch (e.g. the receptive-field analysis)
            return
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt


def test_ctrl_c_then_rerun_continues_and_counts_nothing_twice(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 20)
    idx = str(tmp_path / "idx")
    hook = _Interrupt(tiny_lm.model, 3)  # after 2 complete batches of 5
    with pytest.raises(KeyboardInterrupt):
        run_top(_req(images=(str(folder),), index=idx, part_images=100), model=tiny_lm)
    hook.handle.remove()
    assert len(_ids_in(idx)) == 10  # the complete batches were committed on the way out
    again = run_top(_req(images=(str(folder),), index=idx, part_images=100), model=tiny_lm)
    assert again.scanned == 10 and again.already == 10
    ids = _ids_in(idx)
    assert len(ids) == len(set(ids)) == 20
    clean = run_top(_req(images=(str(folder),)), model=tiny_lm)
    assert _flat(again) == _flat(clean)


def test_incremental_scan_processes_only_new_files(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 8)
    idx = str(tmp_path / "idx")
    first = run_top(_req(images=(str(folder),), index=idx), model=tiny_lm)
    assert first.scanned == 8
    _photos(folder, 5, seed=7, start=100)
    second = run_top(_req(images=(str(folder),), index=idx), model=tiny_lm)
    assert second.scanned == 5 and second.already == 8 and second.images == 13
    assert _flat(second) == _flat(run_top(_req(images=(str(folder),)), model=tiny_lm))
    third = run_top(_req(images=(str(folder),), index=idx), model=tiny_lm)
    assert third.scanned == 0 and third.already == 13


def test_index_refuses_other_weights_preprocessing_or_layers(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 4)
    idx = str(tmp_path / "idx")
    run_top(_req(images=(str(folder),), index=idx), model=tiny_lm)
    torch.manual_seed(5)
    other = LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")
    with pytest.raises(IndexStoreError, match="weights"):
        run_top(_req(images=(str(folder),), index=idx), model=other)
    with pytest.raises(IndexStoreError, match="preprocess"):
        run_top(_req(images=(str(folder),), index=idx, size=SIZE + 8), model=tiny_lm)
    with pytest.raises(IndexStoreError, match="layers"):
        run_top(_req(images=(str(folder),), index=idx, layers=("2",)), model=tiny_lm)
    with pytest.raises(IndexStoreError, match="stage"):
        run_top(_req(images=(str(folder),), index=idx, stage="act"), model=tiny_lm)
    with pytest.raises(UsageError, match="not in the index"):
        run_top(_req(index=idx, layers=("0",)), model=tiny_lm)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(IndexStoreError, match="not a cnnviz index"):
        run_top(_req(images=(str(folder),), index=str(tmp_path / "junk")), model=tiny_lm)


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
    from conftest import TinyVGG
    from cnnviz.jobs.top import TopRequest, run_top
    from cnnviz.models import LoadedModel
    import cnnviz.index as index
    torch.manual_seed(0)
    lm = LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")
    real = index.write_part
    state = {{"parts": 0}}
    def dying(root, **kw):
        state["parts"] += 1
        if state["parts"] == 3:  # killed while the third part is half written
            import pyarrow.parquet
            os.makedirs(os.path.join(root, "parts", ".tmp-dying"))
            open(os.path.join(root, "parts", ".tmp-dying", "acts.parquet"), "wb").write(b"PAR1 half")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(root, **kw)
    index.write_part = dying
    run_top(TopRequest(images=({folder!r},), layers=("1", "2"), k=4, size={size}, batch_size=3, workers=0,
                       pictures=False, index={idx!r}, part_images=3), model=lm)
""")


def test_kill_9_mid_scan_leaves_a_usable_index(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 14)
    idx = str(tmp_path / "idx")
    code = _KILL_SCRIPT.format(tests=os.path.join(ROOT, "tests"), root=ROOT, folder=str(folder), size=SIZE, idx=idx)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert len(_ids_in(idx)) == 6  # two whole parts; the third died unseen
    resumed = run_top(_req(images=(str(folder),), index=idx), model=tiny_lm)
    assert resumed.scanned == 8 and not any(n.startswith(".tmp") for n in os.listdir(os.path.join(idx, "parts")))
    ids = _ids_in(idx)
    assert len(ids) == len(set(ids)) == 14
    assert _flat(resumed) == _flat(run_top(_req(images=(str(folder),)), model=tiny_lm))


def test_shards_merged_equal_one_scan(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 19)
    shards = []
    for i in range(3):
        d = str(tmp_path / f"idx-{i}")
        run_top(_req(images=(str(folder),), index=d, shard=f"{i}/3"), model=tiny_lm)
        shards.append(d)
    sizes = [len(_ids_in(d)) for d in shards]
    assert sum(sizes) == 19 and all(sizes)
    counts = merge(str(tmp_path / "all"), shards)
    assert counts["images"] == 19
    again = merge(str(tmp_path / "all"), shards[:1])  # merging a shard twice adds nothing
    assert again["images"] == 0 and again["duplicates"] == sizes[0]
    ids = _ids_in(str(tmp_path / "all"))
    assert len(ids) == len(set(ids)) == 19
    merged = run_top(_req(index=str(tmp_path / "all")), model=tiny_lm)
    assert _flat(merged) == _flat(run_top(_req(images=(str(folder),)), model=tiny_lm))
    torch.manual_seed(3)
    other = LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")
    run_top(_req(images=(str(folder),), index=str(tmp_path / "other")), model=other)
    with pytest.raises(IndexStoreError, match="cannot be merged"):
        merge(str(tmp_path / "all2"), [shards[0], str(tmp_path / "other")])


def test_cli_index_query_and_image_and_merge(tmp_path, cli):
    from cnnviz.scan import in_shard

    paths = _photos(tmp_path / "p", 6)
    # Shards hash the absolute path, so with a few files in a random temp folder a shard can come
    # out empty (about 1 run in 32): add files until both shards hold one, so the test is exact.
    while not all(any(in_shard(p, (i, 2)) for p in paths) for i in range(2)):
        paths += _photos(tmp_path / "p", 1, seed=len(paths), start=len(paths))
    common = ["-m", "squeezenet1_1", "-w", "none", "-l", "1", "-s", "40", "--workers", "0"]
    for i in range(2):
        r = cli("top", str(tmp_path / "p"), *common, "--index", str(tmp_path / f"s{i}"), "--shard", f"{i}/2",
                "--no-pictures")
        assert r.exit_code == 0, r.stderr
    r = cli("top", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--into", str(tmp_path / "all"))
    assert r.exit_code == 0, r.stderr
    r = cli("top", "--index", str(tmp_path / "all"), "-c", "0:3", "-n", "2", "--score", "mean", "--json", "--no-pictures")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["channel"] for x in recs] == [0, 1, 2] and all(len(x["examples"]) == 2 for x in recs)
    r = cli("top", "--index", str(tmp_path / "all"), "--image", paths[2], "-n", "3")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("rank") == 3 and f"of {len(paths)}" in r.stdout
    # an image outside the index: the index's model (random squeezenet, seed 0: the same weights hash)
    (new,) = _photos(tmp_path / "new", 1, seed=9, start=90)
    r = cli("top", "--index", str(tmp_path / "all"), "--image", new, "-n", "3")
    assert r.exit_code == 0, r.stderr
    assert "not in the index: ranked as if added" in r.stdout and f"of {len(paths) + 1}" in r.stdout
    r = cli("top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "2", "-s", "40", "--workers", "0",
            "--index", str(tmp_path / "all"), "--no-pictures")
    assert r.exit_code == 1 and "other settings" in r.stderr and "layers" in r.stderr
    r = cli("top", "merge", "--help")
    assert r.exit_code == 0 and "--into" in r.stdout


def test_ray_engine_equals_local(tmp_path, tiny_lm, capfd):
    pytest.importorskip("ray")
    import re

    import ray

    folder = tmp_path / "p"
    _photos(folder, 14)
    (folder / "zz-broken.jpg").write_bytes(b"nope")
    local = run_top(_req(images=(str(folder),)), model=tiny_lm)
    path = os.pathsep.join([os.path.join(ROOT, "tests"), ROOT, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # workers unpickle the test's TinyVGG
    try:
        idx = str(tmp_path / "idx")
        capfd.readouterr()
        remote = run_top(_req(images=(str(folder),), engine="ray", index=idx, part_images=5, workers=1), model=tiny_lm)
        err = capfd.readouterr().err  # file descriptor 2: Ray's C++ core worker writes there, not to sys.stderr
    finally:
        ray.shutdown()
    # a successful run prints no error line of Ray's ('[date time E pid tid] core_worker.cc:...') and no warning
    assert not [ln for ln in err.splitlines() if re.search(r"\] \S+\.cc:\d+:|\bE \d+ \d+\]|Warning", ln)], err
    assert remote.scanned == 14 and remote.skipped == 1
    assert _flat(remote) == _flat(local)
    ids = _ids_in(idx)
    assert len(ids) == len(set(ids)) == 14 and len(ActivationIndex.open(idx).part_dirs()) >= 2


def test_ray_actor_block_commits_one_part_of_every_image(tmp_path, tiny_lm):
    """The Ray actor's batch function (run here without Ray): one part holding the readable images
    in order, then the unreadable one with its message; per-channel maxima equal a hand-run of the
    network's submodules."""
    import pyarrow.parquet as pq

    from cnnviz.capture import hook_points
    from cnnviz.index import make_provenance
    from cnnviz.rayscan import _ScanActor

    paths = _photos(tmp_path / "p", 5)
    layers = [conv_layers(tiny_lm.model)[i] for i in (1, 2)]
    idx = ActivationIndex.create_or_open(str(tmp_path / "idx"), make_provenance(
        model="tinyvgg", weights="none", weights_sha256="0", preprocess={"size": SIZE}, stage="conv",
        layers=[{"index": lay.index, "name": lay.name, "alias": lay.alias, "channels": lay.out_channels} for lay in layers]))
    points = hook_points(tiny_lm.model, layers, "conv")
    actor = object.__new__(_ScanActor)
    actor.model, actor.root = tiny_lm.model, idx.root
    actor.layer_ids, actor.layer_names = [1, 2], [lay.name for lay in layers]
    actor.points, actor.by_point = points, {p: [lay.name] for p, lay in zip(points, layers)}
    actor.batch_size, actor.strict = 2, False
    xs = [preprocess(load_image(p), size=SIZE, crop=True)[0] for p in paths]
    broken = str(tmp_path / "p" / "broken.jpg")
    batch = {"path": np.asarray([*paths[:2], broken, *paths[2:]], dtype=object),
             "x": [xs[0], xs[1], np.zeros((3, 1, 1), np.float32), *xs[2:]],
             "error": np.asarray(["", "", "image 'broken.jpg' is not an image", "", "", ""], dtype=object)}
    actor(batch)
    parts = idx.part_dirs()
    assert len(parts) == 1
    images = pq.read_table(os.path.join(parts[0], "images.parquet")).to_pylist()
    assert [(r["image"], r["path"], r["ok"], r["error"]) for r in images] == (
        [(image_id(p), p, True, None) for p in paths] + [(image_id(broken), broken, False, "image 'broken.jpg' is not an image")])
    assert [(r["bytes"], r["mtime_ns"]) for r in images[:5]] == [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
    assert (images[5]["bytes"], images[5]["mtime_ns"]) == (-1, -1)
    acts = pq.read_table(os.path.join(parts[0], "acts.parquet")).to_pylist()
    for lid in (1, 2):
        brute = _brute(tiny_lm, paths, lid)
        got = {(r["channel"], r["image"]): r["max"] for r in acts if r["layer"] == lid}
        want = {(c, i): s for c, rows in brute.items() for s, i, _ in rows}
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- issue 19: defects found by new users


_KILL_WITH_WORKERS = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
    from conftest import TinyVGG
    from cnnviz.jobs.top import TopRequest, run_top
    from cnnviz.models import LoadedModel
    torch.manual_seed(0)
    lm = LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")
    calls = [0]
    def hook(mod, inp, out):
        if inp[0].shape[0] == 2:  # a scan batch (not the receptive-field analysis)
            calls[0] += 1
            if calls[0] == 3:  # the DataLoader workers are alive and prefetching
                print("workers", *[c.pid for c in __import__("multiprocessing").active_children()], flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
    lm.model.features[0].register_forward_hook(hook)
    import time, torch.utils.data, cnnviz.scan
    real = cnnviz.scan.Preprocess.__call__
    def slow(self, path):  # a worker busy decoding a large image when the scan dies
        if torch.utils.data.get_worker_info() is not None and int(os.path.basename(path)[2:5]) >= 6:
            time.sleep(4)
        return real(self, path)
    cnnviz.scan.Preprocess.__call__ = slow
    run_top(TopRequest(images=({folder!r},), layers=("1",), k=2, size={size}, batch_size=2, workers=2,
                       pictures=False, index={idx!r}, part_images=2), model=lm)
""")


def _running(pid):
    """Alive and not a zombie (an orphan nobody reaps stays a zombie, which os.kill(pid, 0) finds)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\tZ" not in next(line for line in f if line.startswith("State:"))
    except (OSError, StopIteration):
        return False


def test_rerun_right_after_kill_9_with_worker_processes_is_not_refused(tmp_path, tiny_lm):
    """DataLoader workers are forked from the scanning process: they inherit its open files and
    outlive a kill -9 by seconds. The writer lock must be the dead scan's alone, so the rerun
    starts at once instead of 'being written by another scan'."""
    folder = tmp_path / "p"
    _photos(folder, 40)
    idx = str(tmp_path / "idx")
    code = _KILL_WITH_WORKERS.format(tests=os.path.join(ROOT, "tests"), root=ROOT, folder=str(folder), size=SIZE, idx=idx)
    # Output to files: the orphans keep inherited pipes open, and reading them would wait for their end.
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err)
        assert proc.wait(timeout=120) == -signal.SIGKILL, (tmp_path / "err").read_text()
    workers = [int(p) for p in (tmp_path / "out").read_text().split()[1:]]
    assert any(_running(pid) for pid in workers), "no worker outlived the kill: the test would prove nothing"
    resumed = run_top(_req(images=(str(folder),), index=idx, layers=("1",)), model=tiny_lm)
    assert resumed.already + resumed.scanned == 40 and resumed.already >= 2
    ids = _ids_in(idx)
    assert len(ids) == len(set(ids)) == 40


def test_index_lock_excludes_a_second_writer_in_this_process_and_in_another(tmp_path):
    from cnnviz.index import make_provenance

    idx = ActivationIndex.create_or_open(str(tmp_path / "idx"), make_provenance(
        model="m", weights="none", weights_sha256="0", preprocess={}, stage="conv", layers=[]))
    again = ActivationIndex.open(idx.root)
    probe = ("import sys; from cnnviz.index import ActivationIndex\n"
             "try:\n    ActivationIndex.open(sys.argv[1]).lock()\nexcept Exception as e:\n    print(e); sys.exit(3)")
    with idx:
        with pytest.raises(IndexStoreError, match="being written by another scan in this process"):
            again.lock()
        r = subprocess.run([sys.executable, "-c", probe, idx.root], capture_output=True, text=True, timeout=120)
        assert r.returncode == 3 and f"being written by another scan (process {os.getpid()})" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", probe, idx.root], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with again:  # released: this process may take it again
        pass


def test_a_missing_path_in_a_stdin_list_is_skipped_with_a_warning_and_strict_stops(tmp_path, cli):
    paths = _photos(tmp_path / "p", 4)
    gone = str(tmp_path / "p" / "deleted-since.jpg")
    listing = "\n".join([paths[0], gone, *paths[1:]]).encode()
    args = ["top", "-", "-m", "squeezenet1_1", "-w", "none", "-l", "0", "-c", "0", "-n", "2", "-s", "40", "--workers", "0",
            "--no-pictures", "--json"]
    r = cli(*args, input=listing)
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert warnings == [f"cnnviz: warning: skipped image {gone!r} does not exist (listed on stdin)"], r.stderr
    assert "4 scanned now" in r.stderr and "1 missing skipped" in r.stderr
    assert len(json.loads(r.stdout.splitlines()[0])["examples"]) == 2
    r = cli(*args, "--strict", input=listing)
    assert r.exit_code == 1 and r.stderr.strip() == f"cnnviz: error: image {gone!r} does not exist (listed on stdin) (--strict)"
    # into an index: the missing file is not recorded, so it is scanned once it exists
    r = cli(*args, "--index", str(tmp_path / "idx"), input=listing)
    assert r.exit_code == 0 and "1 missing skipped" in r.stderr, r.stderr
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(gone, format="PNG")
    r = cli(*args, "--index", str(tmp_path / "idx"), input=listing)
    assert r.exit_code == 0 and "1 scanned now, 4 already indexed" in r.stderr, r.stderr
    # a path typed on the command line is not a list entry: still an error
    r = cli("top", str(tmp_path / "nope.jpg"), *args[2:])
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_expand_images_reports_missing_listed_paths_to_a_callback(tmp_path):
    paths = _photos(tmp_path / "p", 2)
    missed = []
    got = expand_images(["-"], stdin=io.StringIO(f"{paths[0]}\n{tmp_path}/gone.png\n{paths[1]}\n"),
                        on_missing=lambda p, msg: missed.append((p, msg)))
    assert got == paths and missed == [(f"{tmp_path}/gone.png", f"image '{tmp_path}/gone.png' does not exist (listed on stdin)")]
    with pytest.raises(ImageError, match="does not exist"):
        expand_images(["-"], stdin=io.StringIO(f"{tmp_path}/gone.png\n"))
    with pytest.raises(UsageError, match="no images to scan"):  # every listed path missing: nothing left
        expand_images(["-"], stdin=io.StringIO(f"{tmp_path}/gone.png\n"), on_missing=lambda p, m: None)


def test_parts_are_committed_by_time_as_well_as_by_count(tmp_path, tiny_lm, cli):
    """A part at least every --part-seconds: a kill -9 loses that much scanning at most, however
    large --part-images is."""
    folder = tmp_path / "p"
    _photos(folder, 20)
    idx = str(tmp_path / "idx")
    run_top(_req(images=(str(folder),), index=idx, part_images=100, part_seconds=1e-6), model=tiny_lm)
    assert len(ActivationIndex.open(idx).part_dirs()) == 4  # batches of 5, each older than the bound
    idx2 = str(tmp_path / "idx2")
    run_top(_req(images=(str(folder),), index=idx2, part_images=100, part_seconds=3600), model=tiny_lm)
    assert len(ActivationIndex.open(idx2).part_dirs()) == 1
    r = cli("top", "--help")
    assert "--part-images" in r.stdout and "--part-seconds" in r.stdout and "kill -9" in r.stdout


def test_part_writer_commits_when_the_buffer_is_older_than_the_bound(tmp_path, monkeypatch):
    import cnnviz.index as index
    from cnnviz.scan import LayerStats

    clock = [1000.0]
    monkeypatch.setattr(index.time, "monotonic", lambda: clock[0])
    committed = []
    monkeypatch.setattr(index, "write_part", lambda root, **kw: committed.append(len(kw["images"])) or "part")
    w = index.PartWriter(str(tmp_path), layer_ids=[0], layer_names=["a"], part_images=1000, part_seconds=60)
    st = {"a": LayerStats(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 3, 2), np.int32))}
    w.add(["x.png", "y.png"], st)
    clock[0] += 59
    w.add(["x.png", "y.png"], st)
    assert committed == []
    clock[0] += 2  # 61 s since the writer started: this batch closes the part
    w.add(["x.png", "y.png"], st)
    assert committed == [6]
    clock[0] += 30
    w.add(["x.png", "y.png"], st)
    assert committed == [6]  # 30 s since that commit


def _prov(**kw):
    from cnnviz.index import make_provenance

    base = dict(model="vgg16", weights="DEFAULT", weights_sha256="a" * 64,
                preprocess={"size": 224, "crop": True, "mean": [0.485, 0.456, 0.406]}, stage="conv",
                layers=[{"index": 7, "name": "features.17", "alias": "block4_conv1", "channels": 512}])
    base.update(kw)
    return make_provenance(**base)


def _refusal(tmp_path, have, want):
    root = str(tmp_path / f"idx-{len(os.listdir(tmp_path))}")
    ActivationIndex.create_or_open(root, have)
    with pytest.raises(IndexStoreError) as err:
        ActivationIndex.create_or_open(root, want)
    return str(err.value).split("other settings: ", 1)[1]


def test_index_mismatch_messages_name_only_what_really_differs(tmp_path):
    # vgg16 -> vgg19: block4_conv1 is another conv layer (index 7 -> 8, features.17 -> features.19)
    msg = _refusal(tmp_path, _prov(), _prov(model="vgg19", weights_sha256="b" * 64, layers=[
        {"index": 8, "name": "features.19", "alias": "block4_conv1", "channels": 512}]))
    assert msg == ("model (vgg16 in the index, vgg19 now); "
                   "weights (both DEFAULT, but other values: sha256 aaaaaaaaaaaa in the index, bbbbbbbbbbbb now); "
                   "layer block4_conv1 (conv index 7 in the index, 8 now; name features.17 in the index, features.19 now); "
                   "use another --index folder"), msg
    assert "index: block4_conv1; now: block4_conv1" not in msg
    msg = _refusal(tmp_path, _prov(), _prov(preprocess={"size": 256, "crop": True, "mean": [0.485, 0.456, 0.406]}))
    assert msg == "preprocessing (size 224 in the index, 256 now); use another --index folder", msg
    msg = _refusal(tmp_path, _prov(), _prov(weights="none", weights_sha256="b" * 64, stage="act"))
    assert msg == ("weights (DEFAULT sha256 aaaaaaaaaaaa in the index, none sha256 bbbbbbbbbbbb now); "
                   "stage (conv in the index, act now); use another --index folder"), msg
    two = [{"index": 4, "name": "features.10", "alias": "block3_conv1", "channels": 256},
           {"index": 7, "name": "features.17", "alias": "block4_conv1", "channels": 512}]
    msg = _refusal(tmp_path, _prov(), _prov(layers=two))
    assert msg == ("layers (one layer: 7 (block4_conv1) in the index; 2 layers: 4 (block3_conv1) and 7 (block4_conv1) "
                   "now); use another --index folder"), msg
    msg = _refusal(tmp_path, _prov(), _prov(layers=two[:1]))  # another layer altogether
    assert msg == "layers (one layer: 7 (block4_conv1) in the index; one layer: 4 (block3_conv1) now); use another --index folder", msg
    # merging: the two indexes are named instead of 'the index' and 'now'
    a, b = str(tmp_path / "m-a"), str(tmp_path / "m-b")
    ActivationIndex.create_or_open(a, _prov())
    ActivationIndex.create_or_open(b, _prov(stage="act"))
    with pytest.raises(IndexStoreError) as err:
        merge(str(tmp_path / "m-out"), [a, b])
    assert f"stage (conv in {a!r}, act in {b!r})" in str(err.value), str(err.value)


def test_a_layer_outside_the_index_is_refused_in_plain_words(tmp_path, tiny_lm):
    folder = tmp_path / "p"
    _photos(folder, 3)
    idx = str(tmp_path / "idx")
    run_top(_req(images=(str(folder),), index=idx, layers=("1",)), model=tiny_lm)
    with pytest.raises(UsageError) as err:
        run_top(_req(index=idx, layers=("2",)), model=tiny_lm)
    assert str(err.value) == "layer 2 features.5 is not in the index; it holds one layer: 1 (features.2)", str(err.value)
    with pytest.raises(UsageError) as err:
        ActivationIndex.open(idx).layer(0)
    assert str(err.value) == f"layer 0 is not in index {idx!r}; it holds one layer: 1 (features.2)", str(err.value)
    from cnnviz.index import describe_layers

    assert describe_layers([{"index": 4, "name": "features.10", "alias": "block3_conv1"},
                            {"index": 7, "name": "features.17", "alias": "block4_conv1"},
                            {"index": 9, "name": "features.21", "alias": None}]) == \
        "3 layers: 4 (block3_conv1), 7 (block4_conv1) and 9 (features.21)"


def test_a_query_refuses_model_options_that_contradict_the_index(tmp_path, cli):
    """`top --index I -m OTHER` answered from I's model without a word: now one error line; options
    that agree with the index (or are left at their defaults) still pass."""
    _photos(tmp_path / "p", 3)
    idx = str(tmp_path / "idx")
    r = cli("top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "-s", "40", "--workers", "0",
            "--index", idx, "--no-pictures")
    assert r.exit_code == 0, r.stderr
    query = ["top", "--index", idx, "-c", "0:2", "-n", "2", "--no-pictures", "--json"]
    r = cli(*query, "-m", "resnet18")
    assert r.exit_code == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"cnnviz: error: index {idx!r} answers with the settings it was built with, but the "
                               f"command asks for others: model (squeezenet1_1 in the index, resnet18 given)"), r.stderr
    r = cli(*query, "--stage", "act", "-s", "64", "--no-crop")
    assert r.exit_code == 1 and "preprocessing (crop true in the index, false given; size 40 in the index, 64 given); " \
        "stage (conv in the index, act given)" in r.stderr, r.stderr
    r = cli(*query, "-m", "squeezenet1_1", "-w", "none", "--seed", "1")  # other random weights: checked by hash
    assert r.exit_code == 1 and "weights (both none, but other values: sha256 " in r.stderr, r.stderr
    r = cli(*query, "-m", "squeezenet1_1", "-w", "none", "--stage", "conv", "-s", "40", "--crop")  # all agree
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = cli("top", "--index", idx, "--image", str(tmp_path / "p" / "im000.png"), "-m", "resnet18")
    assert r.exit_code == 1 and "model (squeezenet1_1 in the index, resnet18 given)" in r.stderr, r.stderr
