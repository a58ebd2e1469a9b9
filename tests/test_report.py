"""cnnviz report: the site's files, its pictures' geometry against independent computations,
escaping, the incremental cache, and the folder-safety rules. Browser checks: test_report_browser.py."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.errors import OutputError
from cnnviz.io import load_image, preprocess, sample_image_path
from cnnviz.models import LoadedModel
from cnnviz.jobs.report import index_query
from cnnviz.report import ReportImage, build_report
from cnnviz.report import pages as report_pages
from cnnviz.report.cache import MANIFEST

EVIL = "<script>alert(1)</script>.jpg"


def tiny_model():
    from conftest import TinyVGG

    torch.manual_seed(0)
    return LoadedModel(model=TinyVGG().eval(), name="tinyvgg", weights="none")


def images(n=2, size=48):
    x, d = preprocess(load_image(sample_image_path()), size=size)
    names = [EVIL, "grace & <b>hopper</b>.jpg", "third.jpg"]
    return [ReportImage(name=names[k], x=(x * (1 - 0.3 * k)).astype(np.float32), display=d) for k in range(n)]


def top_index(root, lm, *, photos: int, layers: tuple[str, ...]) -> str:
    """A top index (k=3, 32 px) over ``photos`` random 40x36 PNGs written to ``root``/photos."""
    from cnnviz.jobs.top import TopRequest, run_top

    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(photos):
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    idx = str(root / "idx")
    run_top(TopRequest(images=(str(folder),), layers=layers, index=idx, k=3, size=32, workers=0, pictures=False), model=lm)
    return idx


@pytest.fixture
def built(tmp_path):
    lm = tiny_model()
    out = tmp_path / "site"
    res = build_report(lm, images(), output=str(out), progress=False, stage="act")  # maps after the ReLUs
    return lm, out, res


def manifest(out):
    return json.loads((out / MANIFEST).read_text())["entries"]


def test_site_has_every_page_asset_and_picture(built):
    lm, out, res = built
    assert res.layers == 3 and res.images == 2 and res.channels == 4 + 6 + 8 and res.pages == 9
    for rel in ["index.html", "assets/report.css", "assets/report.js", "data/search.js", "image-00.html", "image-01.html",
                *(f"layer-{i:02d}.html" for i in range(3)),
                *(f"channel-{i:02d}.html" for i in range(3)), *(f"data/layer-{i:02d}.js" for i in range(3))]:
        assert (out / rel).is_file(), rel
    # every local reference of every page exists; nothing points outside the folder or to the network
    for page in out.glob("*.html"):
        text = page.read_text()
        for ref in re.findall(r'(?:src|href)="([^"]+)"', text):
            if ref.startswith("#") or ref.startswith("data:,"):
                continue
            assert not re.match(r"^[a-z]+://", ref) and not ref.startswith("//"), (page.name, ref)
            target = ref.split("#")[0]
            assert (out / target).is_file(), (page.name, ref)
    for png in (out / "img").glob("*.png"):
        with Image.open(png) as im:
            im.verify()
    assert not list(out.rglob("*.part"))  # no temp file of an atomic write left behind


def test_names_are_escaped_in_pages_and_data(built):
    _lm, out, _res = built
    for pages in [["index.html"], ["layer-00.html"], ["image-00.html", "image-01.html"]]:
        text = "".join((out / p).read_text() for p in pages)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in text
        assert "<script>alert" not in text and "<b>hopper" not in text
        assert "grace &amp; &lt;b&gt;hopper&lt;/b&gt;.jpg" in text
    data = (out / "data" / "layer-00.js").read_text()
    assert "<" not in data and ">" not in data and "&" not in data.replace("\\u0026", "")
    payload = json.loads(data[len("window.CNNVIZ_LAYER = "):].rstrip().rstrip(";"))
    assert payload["images"][0]["name"] == EVIL  # the text survives intact, only its encoding is safe


def test_js_data_cannot_close_a_script():
    s = report_pages.js_data({"a": "</script><!-- \u2028 & >"})
    assert "</" not in s and "<!--" not in s and "\u2028" not in s
    assert json.loads(s) == {"a": "</script><!-- \u2028 & >"}


def _layer_data(out, index):
    text = (out / "data" / f"layer-{index:02d}.js").read_text()
    return json.loads(text[len("window.CNNVIZ_LAYER = "):].rstrip().rstrip(";"))


def test_sprite_tiles_are_the_maps_colormapped(built):
    """Each tile of a sprite, located by the geometry the pages use, is that channel's map on its
    own min..max through the colormap (checked with matplotlib directly)."""
    import matplotlib

    lm, out, _res = built
    ims = images()
    x = torch.from_numpy(np.stack([im.x for im in ims]))
    with torch.no_grad():
        f = lm.model.features
        acts = {2: f[:5](x), 1: f[:4](x)}  # features.2 + ReLU (layer 1), features.5 + ReLU (layer 2) below
        acts[2] = f[:7](x)
    cmap = matplotlib.colormaps["viridis"]
    for layer, act in ((1, acts[1]), (2, acts[2])):
        d = _layer_data(out, layer)
        for k, im in enumerate(d["images"]):
            m = im["map"]
            sprite = np.asarray(Image.open(out / m["src"]).convert("RGB")).astype(int)
            g = m["sprite"]
            assert (g["height"], g["width"]) == sprite.shape[:2]
            maps = act[k].numpy()
            assert m["shape"] == list(maps.shape)
            for c in range(maps.shape[0]):
                x0, y0 = (c % g["cols"]) * (g["tw"] + g["gap"]), (c // g["cols"]) * (g["th"] + g["gap"])
                tile = sprite[y0:y0 + g["th"], x0:x0 + g["tw"]]
                a = maps[c]
                span = a.max() - a.min()
                v = (a - a.min()) / span if span > 0 else np.zeros_like(a)
                want = (np.asarray(cmap(v))[..., :3] * 255).astype(int)
                assert np.abs(tile - want).max() <= 6, (layer, k, c)  # 193 palette levels
                assert m["mean"][c] == pytest.approx(float(a.mean()), rel=1e-3, abs=1e-6)
                assert m["max"][c] == pytest.approx(float(a.max()), rel=1e-3, abs=1e-6)
                py, px = m["peak"][c]
                assert a[py, px] == a.max()


def test_filter_rectangles_hold_each_filter(built):
    """rgb mode (first layer): the rectangle of filter f shows w[f] on the layer's symmetric scale."""
    lm, out, _res = built
    d = _layer_data(out, 0)
    w = lm.model.features[0].weight.detach().numpy()
    fl = d["filters"]
    assert fl["mode"] == "rgb" and len(fl["rects"]) == w.shape[0]
    m = np.abs(w).max()
    for f, (p, x, y, rw, rh) in enumerate(fl["rects"]):
        page = np.asarray(Image.open(out / fl["pages"][p]["src"]).convert("RGB")).astype(float)
        tile = page[y:y + rh, x:x + rw]
        s = rh // w.shape[2]
        want = (w[f].transpose(1, 2, 0) / (2 * m) + 0.5) * 255
        got = tile[::s, ::s]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1.01, f


def test_rerun_reuses_everything_and_new_image_adds_only_its_own(tmp_path):
    lm = tiny_model()
    out = tmp_path / "site"
    first = build_report(lm, images(2), output=str(out), progress=False)
    assert first.computed["maps"] == 6 and not first.reused
    pngs = {p: p.stat().st_mtime_ns for p in (out / "img").glob("*.png")}
    again = build_report(lm, images(2), output=str(out), progress=False)
    assert again.computed == {} and again.reused["maps"] == 6
    assert {p: p.stat().st_mtime_ns for p in (out / "img").glob("*.png")} == pngs
    more = build_report(lm, images(3), output=str(out), progress=False)
    assert more.computed == {"maps": 3, "sheet": 1, "atlas": 3}  # the rows rank over the images: all redrawn
    # other weights: maps and filters are remade, the architecture-only pictures are not
    with torch.no_grad():
        lm.model.features[0].weight.mul_(2)
    changed = build_report(lm, images(1), output=str(out), progress=False)
    assert changed.computed["maps"] == 3 and changed.computed["filters"] == 3
    assert "rf" not in changed.computed and "rf profile" not in changed.computed


def test_a_deleted_picture_is_made_again(built):
    lm, out, _ = built
    victim = next((out / "img").glob("maps-*.png"))
    victim.unlink()
    res = build_report(lm, images(), output=str(out), progress=False, stage="act")  # as built
    assert res.computed.get("maps", 0) >= 1 and victim.exists()


def test_foreign_folder_is_refused_and_other_files_are_kept(tmp_path):
    lm = tiny_model()
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("my own page")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="index.html that cnnviz did not write"):
        build_report(lm, images(1), output=str(out), progress=False)
    assert (out / "index.html").read_text() == "my own page"
    build_report(lm, images(1), output=str(out), progress=False, force=True)
    assert (out / "notes.txt").read_text() == "keep me"
    # a folder of other files (no index.html) is fine, and nothing of it is removed
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2")
    build_report(lm, images(1), output=str(other), progress=False)
    assert (other / "data.csv").read_text() == "1,2" and (other / "index.html").exists()


def test_report_without_images_has_filters_and_fields(tmp_path, capsys):
    lm = tiny_model()
    res = build_report(lm, [], output=str(tmp_path / "s"))
    assert capsys.readouterr() == ("", "")  # a library call prints nothing by default
    assert res.images == 0
    text = (tmp_path / "s" / "layer-01.html").read_text()
    assert "Filters" in text and "Feature maps" not in text
    assert "No images were given" in (tmp_path / "s" / "index.html").read_text()


def test_maximize_pictures_are_cached_per_channel(tmp_path):
    lm = tiny_model()
    out = tmp_path / "s"
    res = build_report(lm, images(1), output=str(out), progress=False, maximize={2: [0, 3]}, maximize_steps=3,
                       maximize_precision="fp32")
    assert res.computed["maximize"] == 2
    d = _layer_data(out, 2)
    assert set(d["maximize"]) == {"0", "3"}
    for e in d["maximize"].values():
        with Image.open(out / e["src"]) as im:
            assert im.size[0] > 0
    assert 'id=maximize' in (out / "layer-02.html").read_text()
    res = build_report(lm, images(1), output=str(out), progress=False, maximize={2: [0, 3, 5]}, maximize_steps=3,
                       maximize_precision="fp32")
    assert res.computed == {"maximize": 1} and res.reused["maximize"] == 2


# ---------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_report_vgg16_escapes_file_names(cli, tmp_path, monkeypatch, rgb_image):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "<script>alert(1)<").mkdir()
    os.replace(rgb_image, tmp_path / EVIL)
    r = cli("report", EVIL, "-m", "vgg16", "--weights", "none", "-l", "0,5", "-o", "out", "--json", "-s", "32")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["path"] == os.path.join("out", "index.html") and rec["layers"] == 2 and rec["images"] == 1
    text = (tmp_path / "out" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in text and "<script>alert" not in text
    # the summary on stderr; no progress bar, stderr not being a terminal (tests/test_progress.py)
    assert "report: 2 layer(s)" in r.stderr and "\r" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["-o", "-"], "a report is a folder"),
    (["-l", "nope"], "unknown layer"),
    (["--steps", "3"], "add --maximize"),
    (["--maximize", "--maximize-channels", "99"], "channel"),
    (["--cmap", "nocmap"], "colormap"),
])
def test_cli_usage_errors_write_nothing(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = cli("report", "--sample", "-m", "vgg16", "--weights", "none", "-l", "0", *(args if "-o" in args else [*args, "-o", "out"]))
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr and r.stderr.startswith("cnnviz: error:")
    assert not (tmp_path / "out").exists()


def test_included_pictures_are_filed_under_their_layer_and_image(tmp_path):
    """--include: pictures of other commands land on the page of the layer (by PNG metadata or
    by cnnviz's file naming) or the image they are about; anything else on the model page."""
    from cnnviz.io import save_png

    lm = tiny_model()
    other = tmp_path / "other"
    other.mkdir()
    px = np.zeros((8, 8, 3), np.uint8)
    save_png(str(other / "anything.png"), px, metadata={"model": "tinyvgg", "layer": 1, "kind": "top"})
    save_png(str(other / "tinyvgg-02-features.5-top.png"), px + 50)
    save_png(str(other / "third-tinyvgg-cam.png"), px + 100)
    save_png(str(other / "unrelated <x>.png"), px + 150)
    (other / "notes.txt").write_text("not a picture")
    ims = images(3)
    ims[2].source = "photos/third.jpg"
    out = tmp_path / "s"
    res = build_report(lm, ims, output=str(out), progress=False, include=[str(other)])
    assert res.computed["included"] == 4
    assert "anything.png" in (out / "layer-01.html").read_text()
    assert "tinyvgg-02-features.5-top.png" in (out / "layer-02.html").read_text()
    index = (out / "index.html").read_text()
    assert "third-tinyvgg-cam.png" in (out / "image-02.html").read_text() and "unrelated &lt;x&gt;.png" in index
    assert "anything.png" not in index and "notes.txt" not in index
    again = build_report(lm, ims, output=str(out), progress=False, include=[str(other)])
    assert again.reused["included"] == 4 and "included" not in again.computed


def test_dataset_examples_come_from_a_top_index(tmp_path):
    """--index: the channel pages of the index's layers get the top job's answer (same images,
    same order), as the top job's own per-channel pictures; other weights are refused."""
    from cnnviz.errors import CnnvizError
    from cnnviz.jobs.output import Output
    from cnnviz.jobs.top import TopRequest, run_top

    lm = tiny_model()
    idx = top_index(tmp_path, lm, photos=6, layers=("1", "2"))
    out = tmp_path / "s"
    res = build_report(lm, images(1), output=str(out), progress=False, index=idx, index_k=3, stage="conv", examples=index_query(lm))
    assert res.computed["examples"] == 2
    d = _layer_data(out, 2)
    assert len(d["examples"]) == 8 and all(d["examples"]) and d["index"]["images"] == 6
    assert d["index"]["bottom"] == 3  # 6 images: the 3 least exciting are not among the 3 best
    for which in ("top", "bottom"):
        want: list = []
        run_top(TopRequest(index=idx, layers=("2",), k=3, bottom=which == "bottom", pictures=False), model=lm,
                output=Output(on_record=want.append))
        for rec in want:
            got = d["examples"][rec["channel"]][which]
            assert [d["exImages"][g[0]]["name"] for g in got] == [os.path.basename(e["path"]) for e in rec["examples"]]
            assert [g[2:] for g in got] == [e["unit"] for e in rec["examples"]]  # the peak unit
            f = d["exField"]  # whose window is the layer's field there, as the top job says
            assert [[f[0] + y * f[4], f[1] + x * f[5], f[2] + y * f[4], f[3] + x * f[5]] for _i, _s, y, x in got] == \
                [e["box"] for e in rec["examples"]]
            assert [g[1] for g in got] == pytest.approx([e["score"] for e in rec["examples"]], abs=1e-4)
    # one JPEG per example image, the pixels the model saw (the index's preprocessing: 32 px)
    from cnnviz.scan import Preprocess
    from cnnviz.index import ActivationIndex

    prep = Preprocess.from_dict(ActivationIndex.open(idx).provenance["preprocess"])
    srcs = {im["src"] for im in d["exImages"]}
    assert len(srcs) == len(d["exImages"]) <= 6
    photos = {p.name: prep(str(p))[1].astype(int) for p in (tmp_path / "photos").iterdir()}
    for im in d["exImages"]:
        with Image.open(out / im["src"]) as pic:
            got = np.asarray(pic.convert("RGB")).astype(int)
        assert got.shape == photos[im["name"]].shape == (im["h"], im["w"], 3)
        # a JPEG of random noise is lossy (chroma subsampling), but it is nearest to its own photo
        dist = {name: np.abs(got - px).mean() for name, px in photos.items()}
        assert min(dist, key=dist.get) == im["name"], dist
    assert "Dataset examples" in (out / "layer-02.html").read_text()
    assert _layer_data(out, 0)["examples"] == []
    again = build_report(lm, images(1), output=str(out), progress=False, index=idx, index_k=3, stage="conv", examples=index_query(lm))
    assert again.reused["examples"] == 2 and "examples" not in again.computed
    with torch.no_grad():
        lm.model.features[0].weight.add_(1)
    with pytest.raises(CnnvizError, match="other weights"):
        build_report(lm, images(1), output=str(out), progress=False, index=idx, stage="conv", examples=index_query(lm))


def test_an_index_of_another_stage_is_refused(tmp_path):
    """A report at stage act would show maps after the activation next to examples ranked on the
    conv outputs (the index's): refused in one line that says how to agree."""
    from cnnviz.index import IndexStoreError

    lm = tiny_model()
    idx = top_index(tmp_path, lm, photos=3, layers=("1",))  # top's default stage: conv
    with pytest.raises(IndexStoreError) as err:
        build_report(lm, images(1), output=str(tmp_path / "s"), progress=False, index=idx, stage="act")
    assert str(err.value) == (f"index {idx!r} ranks the conv layers' outputs (stage conv), but this report shows stage act; "
                              f"give the report --stage conv, or scan an index with --stage act"), str(err.value)
    assert not (tmp_path / "s").exists()


def test_cli_report_refuses_an_index_of_another_stage_before_reading_weights(tmp_path, cli, monkeypatch):
    import cnnviz.jobs.report

    (tmp_path / "p").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "p" / "a.png")
    idx = str(tmp_path / "idx")
    r = cli("top", str(tmp_path / "p"), "-m", "squeezenet1_1", "-w", "none", "-l", "1", "-s", "40", "--workers", "0",
            "--index", idx, "--no-pictures")
    assert r.exit_code == 0, r.stderr

    def no_weights(*a, **k):
        raise AssertionError("weights were read")

    monkeypatch.setattr(cnnviz.jobs.report, "load", no_weights)
    r = cli("report", "--sample", "-m", "squeezenet1_1", "-w", "none", "-l", "1", "--stage", "act", "--index", idx,
            "-o", str(tmp_path / "site"))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "stage conv" in r.stderr and "--stage act" in r.stderr, r.stderr
    assert not (tmp_path / "site").exists()


def test_prune_removes_only_unused_pictures_of_earlier_runs(tmp_path):
    lm = tiny_model()
    out = tmp_path / "s"
    build_report(lm, images(2), output=str(out), progress=False)
    (out / "img" / "mine.png").write_bytes(b"not cnnviz's")
    before = set((out / "img").iterdir())
    res = build_report(lm, images(1), output=str(out), progress=False, prune=True)
    after = set((out / "img").iterdir())
    # the second image: its input picture, 3 sprites, its sheet; and the 3 model-page rows ranked over both images
    assert res.computed["pruned files"] == 8
    assert len(before - after) == 8 and len(after - before) == 3
    assert (out / "img" / "mine.png").read_bytes() == b"not cnnviz's"
    assert (out / "image-00.html").exists() and not (out / "image-01.html").exists()  # the page of the image gone
    # everything the remaining pages show is still there
    for page in out.glob("*.html"):
        for ref in re.findall(r'src="(img/[^"]+)"', page.read_text()):
            assert (out / ref).is_file()


@pytest.mark.slow
def test_cli_cam_shows_each_images_class_activation_map_and_caches_it(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("report", "--sample", "-m", "resnet18", "--weights", "none", "-l", "-1", "--cam", "-o", "out", "--json")
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["computed"]["cam"] == 1
    page = (tmp_path / "out" / "image-00.html").read_text()  # on the image's page
    src = re.search(r'<img src="(img/cam-[0-9a-f]+\.png)" alt="gradcam: ', page).group(1)
    with Image.open(tmp_path / "out" / src) as im:
        im.verify()
    with Image.open(tmp_path / "out" / src) as im:
        assert im.text["method"] == "gradcam"  # the cam job's own picture and metadata
    again = json.loads(cli(*args).stdout)
    assert again["reused"]["cam"] == 1 and "cam" not in again["computed"]


def test_two_files_of_the_same_pixels_are_two_inputs(cli, tmp_path):
    """Identity includes the path: each file gets its own id, input, sheet and CAM, each made once
    (one shared id drew the sheet twice and put both CAMs on both images)."""
    pixels = (np.random.default_rng(0).random((40, 36, 3)) * 255).astype(np.uint8)
    for name in ("a.png", "b.png"):
        Image.fromarray(pixels).save(tmp_path / name)
    r = cli("report", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-m", "resnet18", "--weights", "none", "-l", "-1",
            "--cam", "-o", str(tmp_path / "out"), "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["computed"]["sheet"] == 2 and rec["computed"]["cam"] == 2 and rec["computed"]["maps"] == 2
    assert "sheet" not in rec["reused"]
    index = "".join((tmp_path / "out" / p).read_text() for p in ("index.html", "image-00.html", "image-01.html"))
    for kind in ("in", "sheet", "cam"):
        assert len(set(re.findall(rf'img/{kind}-[0-9a-f]+\.png', index))) == 2, kind
