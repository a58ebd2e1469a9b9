"""cnnviz top never draws a picture larger than --max-side: many channels x K are paged
(-p01, -p02, ...), rows wider than a page wrap, and every example is drawn exactly once, in rank
order (found by its colour in the pixels, not by the planner's own bookkeeping)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.errors import UsageError
from cnnviz.jobs.output import Output
from cnnviz.jobs.top import TopRequest, run_top
from cnnviz.models import LoadedModel
from cnnviz.patches import Patch, Row, examples_size, page_rows, paginate_examples, render_examples

from conftest import TinyVGG, assert_png_valid
from test_top import _photos


def _colour(r: int, j: int) -> tuple[int, int, int]:
    return (20 + 7 * r, 20 + 5 * j, 210)  # unique per (row, rank); never a grey, the hatch or text


def _rows(counts: list[int]) -> list[Row]:
    return [Row(f"{100 + r}", [Patch(np.full((9, 7, 3), _colour(r, j), np.uint8), f"{-j / 7:.3g}", f"photo_{r}_{j}.jpg")
                               for j in range(n)]) for r, n in enumerate(counts)]


def _drawn(img: np.ndarray, counts: list[int], tile: int) -> list[tuple[int, int]]:
    """The (row, rank) patches found in a page, in reading order (top to bottom, left to right)."""
    found = []
    for r, n in enumerate(counts):
        for j in range(n):
            ys, xs = np.nonzero((img == _colour(r, j)).all(axis=2))
            if len(ys):
                assert len(ys) >= tile * tile * 0.5, (r, j, len(ys))
                found.append((int(ys.min()), int(xs.min()), (r, j)))
    return [rj for _, _, rj in sorted(found)]


@pytest.mark.parametrize("counts, k, tile, max_side", [
    ([25, 3, 0, 40, 25, 25, 7, 25], 25, 24, 300),  # rows wrap (25 > columns); several rows per page
    ([25, 25, 25], 25, 40, 256),                    # a row taller than a page: split, '(cont.)'
    ([4] * 30, 4, 16, 256),                          # narrow rows, many per page
    ([9, 9], 9, 112, 8192),                          # fits: one page, the old picture
])
def test_pages_hold_every_example_once_in_order_within_the_limit(counts, k, tile, max_side):
    rows = _rows(counts)
    title = "vgg16 IMAGENET1K_V1 \u00b7 layer 7 features.17 (block4_conv1) \u00b7 stage conv\nthe 25 images ..."
    cols, pages = paginate_examples(rows, k=k, tile=tile, title=title, max_side=max_side)
    drawn = []
    for page in pages:
        img = render_examples(page_rows(rows, page), k=cols, tile=tile, title=title, max_height=max_side)
        assert max(img.shape[:2]) <= max_side
        assert img.shape[:2] == examples_size(page_rows(rows, page), k=cols, tile=tile, title=title, max_height=max_side)
        got = _drawn(img, counts, tile)
        assert got == [(line.row, j) for line in page for j in range(line.start, line.stop)]
        drawn += got
    assert drawn == [(r, j) for r, n in enumerate(counts) for j in range(min(n, k))]
    if max_side == 8192:
        assert len(pages) == 1 and cols == k
    else:
        assert len(pages) > 1


def test_a_row_is_split_only_when_taller_than_a_page():
    rows = _rows([25, 25, 25])
    cols, pages = paginate_examples(rows, k=25, tile=40, max_side=256)
    labels = [line.label for page in pages for line in page if line.label]
    assert "100 (cont.)" in labels and labels[0] == "100"
    rows = _rows([5, 5, 5, 5, 5, 5, 5])
    cols, pages = paginate_examples(rows, k=5, tile=40, max_side=256)
    assert cols < 5 and len(pages) > 1
    for page in pages:  # rows of 5 wrap onto a few lines; none is cut between pages
        assert page[0].start == 0 and page[-1].stop == 5


def test_title_is_cut_only_when_a_single_line_leaves_no_room():
    rows = _rows([1])
    long = " ".join(["word"] * 400)
    img = render_examples(rows, k=1, tile=100, title=long, max_height=300)
    assert img.shape[0] <= 300
    assert render_examples(rows, k=1, tile=100, title=long).shape[0] > 300


def test_tile_larger_than_max_side_is_a_usage_error(tmp_path, cli):
    with pytest.raises(UsageError, match="--tile 1024 px patches do not fit in --max-side 512"):
        paginate_examples(_rows([3]), k=3, tile=1024, max_side=512)
    # before any work: the images do not even exist
    with pytest.raises(UsageError, match="--max-side"):
        run_top(TopRequest(images=(str(tmp_path / "nothing"),), layers=("1",), tile=1024, max_side=512),
                output=Output(str(tmp_path / "o")))
    r = cli("top", str(tmp_path / "nothing"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "--tile", "1024",
            "--max-side", "512")
    assert r.exit_code == 2 and r.stderr.startswith("cnnviz: error: --tile 1024") and r.stderr.count("\n") == 1


@pytest.fixture
def tiny_lm():
    torch.manual_seed(0)
    return LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")


def test_many_channels_x_k_are_paged_and_every_page_is_reported(tmp_path, tiny_lm):
    _photos(tmp_path / "p", 30)
    out = tmp_path / "out"
    recs = []
    res = run_top(TopRequest(images=(str(tmp_path / "p"),), layers=("1", "2"), k=25, size=32, workers=0, tile=40,
                             max_side=400), model=tiny_lm, output=Output(str(out), on_record=recs.append))
    files = sorted(os.listdir(out))
    assert files and all(f.endswith(f"-p{i + 1:02d}.png") for f in files for i in [int(f[-6:-4]) - 1])
    assert {os.path.join(out, f) for f in files} == {p for r in recs for p in r["pictures"]}
    assert len(files) > len(res.layers)
    seen: dict[tuple[int, int], list[int]] = {}
    for f in files:
        assert_png_valid(out / f)
        with Image.open(out / f) as im:
            assert max(im.size) <= 400
            meta = {key: json.loads(v) if key in ("examples", "layer", "page", "pages") else v for key, v in im.text.items()}
        for c, first, last in meta["examples"]:
            seen.setdefault((meta["layer"], c), []).extend(range(first, last + 1))
    # every channel of both layers: ranks 1..25, each on exactly one page
    assert seen == {(lr.layer.index, c): list(range(1, 26)) for lr in res.layers for c in lr.examples}
    for r in recs:
        assert r["picture"] == r["pictures"][0] and r["picture"].startswith(str(out))


def test_separate_strips_wider_than_max_side_wrap_and_page(tmp_path, tiny_lm):
    _photos(tmp_path / "p", 30)
    recs = []
    run_top(TopRequest(images=(str(tmp_path / "p"),), layers=("2",), channels="0:2", k=25, size=32, workers=0, tile=48,
                       max_side=300, separate=True, overlay=True), model=tiny_lm,
            output=Output(str(tmp_path / "o"), on_record=recs.append))
    names = sorted(os.listdir(tmp_path / "o"))
    assert names[0] == "tinyvgg-02-features.5-c0000-top-max-k25-overlay-tile48-side300-s32-p01.png"
    assert {n.split("-c")[1][:4] for n in names} == {"0000", "0001"}
    for n in names:
        with Image.open(tmp_path / "o" / n) as im:
            assert max(im.size) <= 300
    assert [len(r["pictures"]) for r in recs] == [len(names) // 2] * 2


def test_cli_readme_query_shape_pages_and_json_lists_every_page(tmp_path, cli):
    """The README's `top --index idx -c 0:512 -n 25` at test size: more channels x K than fit
    one --max-side picture (it used to be one 221 Mpx PNG that Pillow refuses to open)."""
    _photos(tmp_path / "p", 26)
    idx = str(tmp_path / "idx")
    r = cli("top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "3", "-s", "40", "--workers", "0",
            "--index", idx, "--no-pictures")
    assert r.exit_code == 0, r.stderr
    r = cli("top", "--index", idx, "-c", "0:64", "-n", "25", "--tile", "32", "--max-side", "1024", "-o",
            str(tmp_path / "o"), "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["channel"] for x in recs] == list(range(64))
    files = sorted(os.listdir(tmp_path / "o"))
    assert len(files) > 1 and {os.path.join(tmp_path, "o", f) for f in files} == {p for x in recs for p in x["pictures"]}
    for f in files:
        with Image.open(tmp_path / "o" / f) as im:
            assert max(im.size) <= 1024
    r = cli("top", "--index", idx, "-c", "0:64", "-n", "25", "--tile", "32", "--max-side", "1024", "-o",
            str(tmp_path / "o2"))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == [os.path.join(tmp_path, "o2", f) for f in files]


# ---------------------------------------------------------------- -o -: exactly one PNG on stdout


def test_stream_one_picture_to_stdout_equals_the_file(tmp_path, cli):
    _photos(tmp_path / "p", 6)
    common = ["top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "-c", "0:3", "-n", "2",
              "-s", "40", "--workers", "0"]
    r = cli(*common, "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert_png_valid(r.stdout_bytes)
    f = cli(*common, "-o", str(tmp_path / "o"))
    assert f.exit_code == 0, f.stderr
    with Image.open(f.stdout.strip()) as want, Image.open(io.BytesIO(r.stdout_bytes)) as got:
        assert np.array_equal(np.asarray(want), np.asarray(got)) and got.text["channels"] == "[0,1,2]"


@pytest.mark.parametrize("extra, why", [
    (["-l", "2"], "one picture per layer, 2 layers"),
    (["--separate"], "--separate: one strip per channel, 3 channels"),
    (["-c", "0:16", "-n", "200", "--max-side", "512"], "16 channel(s) x 200 examples need"),
    (["--no-pictures"], "--no-pictures draws none"),
])
def test_stream_of_more_than_one_picture_is_refused_before_any_work(tmp_path, cli, extra, why):
    """The images do not exist: the -o - error comes first, before any file is looked at."""
    r = cli("top", str(tmp_path / "missing"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "-c", "0:3", *extra,
            "-o", "-")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and why in r.stderr, r.stderr
    assert r.stderr.startswith("cnnviz: error: ") and r.stdout_bytes == b""


def test_library_stream_gets_the_png_and_records(tmp_path, tiny_lm):
    _photos(tmp_path / "p", 6)
    buf = io.BytesIO()
    sink = Output("-", stream=buf)
    run_top(TopRequest(images=(str(tmp_path / "p"),), layers=("2",), channels="0:2", k=3, size=32, workers=0, tile=32),
            model=tiny_lm, output=sink)
    assert_png_valid(buf.getvalue())
    assert [r["channel"] for r in sink.records] == [0, 1] and all(r["pictures"] == ["-"] for r in sink.records)


# ---------------------------------------------------------------- output names


def test_option_variants_never_share_a_file(tmp_path):
    """README "Output names": runs into one folder that differ only in options that change the
    picture write different files; a default run keeps the plain name."""
    torch.manual_seed(0)
    lm = LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none", crop_size=32, resize_size=36)
    _photos(tmp_path / "p", 12)
    out = tmp_path / "out"
    variants = [{}, {"k": 5}, {"bottom": True}, {"score": "mean"}, {"bottom": True, "score": "mean"}, {"stage": "act"},
                {"overlay": True}, {"overlay": True, "cmap": "viridis"}, {"overlay": True, "alpha": 0.3},
                {"separate": True}, {"separate": True, "k": 5}, {"channels": "0:3"}, {"channels": "3:6"},
                {"tile": 40}, {"k": 12, "tile": 32, "max_side": 256}, {"size": 40}, {"crop": False}, {"size": "32x40", "crop": False},
                {"size": 40, "crop": False}]
    written = []
    for v in variants:
        sink = Output(str(out))
        run_top(TopRequest(images=(str(tmp_path / "p"),), layers=("2",), workers=0, **v), model=lm, output=sink)
        written.append({p for r in sink.records for p in r["pictures"]})
    assert os.path.basename(*written[0]) == "tinyvgg-02-features.5-top-max.png"
    for i, a in enumerate(written):
        for j in range(i):
            assert not a & written[j], (variants[i], variants[j], a & written[j])
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for w in written for p in w)
    # an explicit option equal to its default is the default run: same name
    sink = Output(str(out))
    run_top(TopRequest(images=(str(tmp_path / "p"),), layers=("2",), workers=0, k=9, size=32, channels="all"), model=lm,
            output=sink)
    assert {r["picture"] for r in sink.records} == written[0]


def test_max_side_stays_within_what_pillow_opens(cli, tmp_path):
    """--max-side is capped at the largest square within Pillow's MAX_IMAGE_PIXELS (the CLI's
    literal keeps --help free of numpy/PIL imports; it must equal patches.MAX_SIDE)."""
    from cnnviz.patches import MAX_SIDE

    assert MAX_SIDE * MAX_SIDE <= Image.MAX_IMAGE_PIXELS < (MAX_SIDE + 1) ** 2
    with pytest.raises(UsageError, match="--max-side 20000 out of range"):
        paginate_examples(_rows([3]), k=3, max_side=20000)
    with pytest.raises(UsageError, match="--max-side"):
        run_top(TopRequest(images=(str(tmp_path / "nothing"),), layers=("1",), max_side=MAX_SIDE + 1))
    r = cli("top", "--index", str(tmp_path), "--max-side", str(MAX_SIDE + 1))
    assert r.exit_code == 2 and f"256<=x<={MAX_SIDE}" in r.stderr
