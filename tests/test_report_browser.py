"""cnnviz report in a real browser: headless Chromium (Debian's package) driven by Playwright.

Every page must load with no console error, no failed request and no 4xx response, every <img>
must decode, the layer table must sort and filter, links and keys must reach layer and channel
pages, and screenshots must not be blank. Without Chromium or Playwright these tests are skipped
with the reason (install: `apt-get install -y chromium` and `pip install playwright`; never
`playwright install`, the browser comes from Debian).
"""
from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from test_report import EVIL, images, tiny_model, top_index

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for c in (os.environ.get("CNNVIZ_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright for Python: pip install playwright (the test extra has it)")
    exe = _chromium()
    if exe is None:
        pytest.skip("browser tests need Chromium: apt-get install -y chromium (or set CNNVIZ_CHROMIUM to its path)")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=exe, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory):
    from cnnviz.jobs.report import index_query
    from cnnviz.report import build_report

    root = tmp_path_factory.mktemp("report")
    lm = tiny_model()
    idx = top_index(root, lm, photos=5, layers=("2",))  # dataset examples on layer 2's channel pages
    out = root / "site"
    build_report(lm, images(2), output=str(out), progress=False, index=idx, index_k=3, examples=index_query(lm))
    return out


@pytest.fixture(scope="module")
def served(tiny_site):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tiny_site)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Visit:
    """A page with every console error, page error, failed request, HTTP error and dialog recorded."""

    def __init__(self, ctx, *, navigating: bool = False):
        # navigating: the test leaves pages before their lazy images finish, which aborts those
        # requests (net::ERR_ABORTED) by design; every other failure still counts
        self.navigating = navigating
        self.page = ctx.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        p = self.page
        p.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        p.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        p.on("requestfailed", self._failed)
        p.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        p.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def _failed(self, request) -> None:
        if not (self.navigating and request.failure == "net::ERR_ABORTED"):
            self.problems.append(f"failed request: {request.url} {request.failure}")

    def open(self, url: str) -> "Visit":
        self.page.goto(url, wait_until="load")
        return self

    def key(self, key: str, url_glob: str) -> None:
        self.page.keyboard.press(key)
        self.page.wait_for_url(url_glob)

    def all_images_decode(self) -> int:
        """Switch lazy images to eager, wait for every one, return how many there are."""
        p = self.page
        p.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        p.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
        bad = p.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
        assert not bad, f"images that did not decode: {bad}"
        return p.evaluate("document.images.length")

    def screenshot_not_blank(self) -> None:
        png = self.page.screenshot(full_page=True)
        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)
        colours = np.unique((a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2])
        assert a.std() > 10 and len(colours) > 50, "blank screenshot"

    def clean(self) -> None:
        assert not self.problems, self.problems
        assert not self.dialogs, f"a script ran from page content: {self.dialogs}"


def _pages(n_layers: int, last_channel: dict[int, int]) -> list[str]:
    out = ["index.html", "image-00.html", "image-01.html"]
    for i in range(n_layers):
        out += [f"layer-{i:02d}.html", f"channel-{i:02d}.html", f"channel-{i:02d}.html#{last_channel[i]}"]
    return out


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_every_page_loads_clean_with_decoded_images(browser, tiny_site, served, scheme):
    base = served if scheme == "http" else tiny_site.as_uri()
    for rel in _pages(3, {0: 3, 1: 5, 2: 7}):
        v = Visit(browser).open(f"{base}/{rel}")
        n = v.all_images_decode()
        assert n >= {"index.html": 1 + 2 + 3}.get(rel, 2 if rel.startswith("image-") else 3), rel  # profile, images, rows
        v.screenshot_not_blank()
        v.clean()
        v.page.close()


def test_channel_page_shows_dataset_examples(browser, tiny_site):
    """Large patches (>= 128 px at 1366 px) with the window drawn, the same images whole, and the
    least-exciting ones; every picture is one of the example JPEGs, lazy, with its size given."""
    v = Visit(browser).open(f"{tiny_site.as_uri()}/channel-02.html#5")
    p = v.page
    p.set_viewport_size({"width": 1366, "height": 900})
    assert p.locator("section.examples .patches:not(.small) .patch").count() == 3
    assert p.locator("section.examples .wholes .whole").count() == 3
    assert p.locator("section.examples .patches.small .patch").count() == 2  # 5 images: the 2 not in the top 3
    sizes = p.eval_on_selector_all("section.examples .patches:not(.small) .patch",
                                   "ps => ps.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
    assert all(w >= 128 and abs(w - h) < 1 for w, h in sizes), sizes
    imgs = p.eval_on_selector_all("section.examples img", "is => is.map(i => [i.getAttribute('src'), i.loading, "
                                  "i.getAttribute('width'), i.getAttribute('height')])")
    assert imgs and all(s.startswith("img/ex-") and s.endswith(".jpg") and lazy == "lazy" and w and h
                        for s, lazy, w, h in imgs), imgs
    assert p.locator("section.examples .patch .win").count() == 5 and p.locator(".whole .dot").count() == 3
    v.all_images_decode()
    v.clean()


def _dead_links(page, root) -> list[str]:
    """Links of the page that lead nowhere: a missing file, or a channel past the layer's last."""
    import re

    bad = []
    for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))"):
        if href.startswith("#"):
            continue
        path, _, frag = href.partition("#")
        if not (root / path).is_file():
            bad.append(href)
            continue
        m = re.fullmatch(r"channel-(\d+)\.html", path)
        if m and frag:
            data = (root / f"data/layer-{m.group(1)}.js").read_text()
            out = int(re.search(r'"out":(\d+)', data).group(1))
            if not (frag.isdigit() and int(frag) < out):
                bad.append(href)
    return bad


def test_built_from_links_walk_down_to_the_previous_layers_channels(browser, tiny_site):
    """The cards link the previous conv's channels, strongest first (norms computed here from the
    weights), and clicking one opens that channel's page; feeds-into links the next layer's."""
    import torch

    lm = tiny_model()  # the fixture's model (same seed): conv features.5 reads features.2
    w = lm.model.features[5].weight.detach()
    norms = torch.linalg.vector_norm(w[5], dim=(1, 2))
    want = sorted(range(len(norms)), key=lambda i: (-float(norms[i]), i))
    v = Visit(browser, navigating=True).open(f"{tiny_site.as_uri()}/channel-02.html#5")
    p = v.page
    p.set_viewport_size({"width": 1366, "height": 900})
    hrefs = p.eval_on_selector_all("section.built .card > a", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs == [f"channel-01.html#{i}" for i in want], hrefs
    assert p.locator("section.built .sign").count() == len(want)
    assert p.evaluate("document.documentElement.scrollWidth") <= 1366
    assert not _dead_links(p, tiny_site)
    p.locator("section.built .card > a").first.click()
    p.wait_for_url(f"**/channel-01.html#{want[0]}")
    p.wait_for_function(f"document.getElementById('ch-num').textContent === '{want[0]}'")
    # one layer further down, and back up through "feeds into": channel 5 of layer 2 reads it
    feeds = p.eval_on_selector_all("section.feeds .card > a", "as => as.map(a => a.getAttribute('href'))")
    assert feeds and all(h.startswith("channel-02.html#") for h in feeds)
    p.locator("section.built .card > a").first.click()
    p.wait_for_url("**/channel-00.html#*")
    # the first layer keeps its RGB filter: on the layer's scale, and on its own (a canvas)
    assert p.locator("section.built figure.filter").count() == 2
    assert p.locator("section.built canvas.ownscale").count() == 1
    assert not _dead_links(p, tiny_site)
    v.all_images_decode()
    v.clean()


def test_resnet_built_from_links_the_previous_layers_page_and_the_residual_stream(browser, cli, tmp_path, monkeypatch):
    """ResNet-18 (random weights, 64 px): layer2.0.conv1 reads the residual stream, whose nearest
    producer is layer1.1.conv2, the conv just before it; the stream's other convs are 'also' links."""
    monkeypatch.chdir(tmp_path)
    r = cli("report", "--sample", "-m", "resnet18", "--weights", "none", "-s", "64", "-o", "rn", "-q")
    assert r.exit_code == 0, r.stderr
    root = tmp_path / "rn"
    from cnnviz.layers import conv_layers
    from cnnviz.sources import architecture

    lays = {lay.name: lay.index for lay in conv_layers(architecture("resnet18").model)}
    me, prev = lays["layer2.0.conv1"], lays["layer1.1.conv2"]
    assert prev == me - 1
    v = Visit(browser, navigating=True).open(f"{root.as_uri()}/channel-{me:02d}.html#17")
    p = v.page
    p.set_viewport_size({"width": 1366, "height": 900})
    hrefs = p.eval_on_selector_all("section.built .card > a", "as => as.map(a => a.getAttribute('href'))")
    assert len(hrefs) == 9 and all(h.startswith(f"channel-{prev:02d}.html#") for h in hrefs), hrefs
    also = p.eval_on_selector_all("section.built .also a", "as => as.map(a => a.getAttribute('href'))")
    assert {h.split("#")[0] for h in also} == {f"channel-{lays['layer1.0.conv2']:02d}.html", f"channel-{lays['conv1']:02d}.html"}
    assert "residual sum" in p.inner_text("section.built .hint")
    assert p.evaluate("document.documentElement.scrollWidth") <= 1366
    assert not _dead_links(p, root)
    p.locator("section.built .card > a").first.click()
    p.wait_for_url(f"**/channel-{prev:02d}.html#*")
    v.all_images_decode()
    v.clean()


def test_names_show_as_text_never_as_markup(browser, tiny_site):
    for rel in ("index.html", "layer-01.html", "channel-01.html#2", "image-00.html", "image-01.html"):
        v = Visit(browser).open(f"{tiny_site.as_uri()}/{rel}")
        heads = v.page.locator("article.image h3, a.imthumb .cap, body[data-page=image] h1").all_inner_texts()
        if rel.startswith("image-"):
            assert heads == [[EVIL, "grace & <b>hopper</b>.jpg"][int(rel[6:8])]], heads
        else:
            assert EVIL in heads and "grace & <b>hopper</b>.jpg" in heads, heads
        assert v.page.locator("b").count() == 0
        v.clean()
        v.page.close()


def _column(page, i):
    return page.eval_on_selector_all(
        f"#layer-table tbody tr:not([hidden]) td:nth-child({i})", "cells => cells.map(c => c.textContent)")


def test_layer_table_sorts_and_filters(browser, tiny_site):
    v = Visit(browser).open(f"{tiny_site.as_uri()}/index.html")
    p = v.page
    assert _column(p, 1) == ["0", "1", "2"]
    p.click("#layer-table th:nth-child(5) button")  # out channels, ascending
    assert _column(p, 5) == ["4", "6", "8"]
    p.click("#layer-table th:nth-child(5) button")  # descending
    assert _column(p, 5) == ["8", "6", "4"] and _column(p, 1) == ["2", "1", "0"]
    assert p.get_attribute("#layer-table th:nth-child(5)", "aria-sort") == "descending"
    p.click("#layer-table th:nth-child(2) button")  # by name
    assert _column(p, 2) == ["features.0", "features.2", "features.5"]
    p.fill("#filter", "features.5")
    assert _column(p, 2) == ["features.5"] and p.inner_text("#count") == "1 of 3 layers"
    p.fill("#filter", "nothing-like-this")
    assert _column(p, 2) == [] and p.inner_text("#count") == "0 of 3 layers"
    p.fill("#filter", "")
    assert len(_column(p, 2)) == 3
    v.clean()


def test_links_and_keys_reach_layer_and_channel_pages(browser, tiny_site):
    v = Visit(browser, navigating=True).open(f"{tiny_site.as_uri()}/index.html")
    p = v.page
    p.click("#layer-table a:text-is('features.0')")
    p.wait_for_url("**/layer-00.html")
    p.keyboard.press("ArrowRight")
    p.wait_for_url("**/layer-01.html")
    p.keyboard.press("ArrowRight")
    p.wait_for_url("**/layer-02.html")
    p.keyboard.press("ArrowLeft")
    p.wait_for_url("**/layer-01.html")
    # the first top-K tile of the first image opens its channel
    tile = p.locator("article.image").first.locator("a.tile").first
    href = tile.get_attribute("href")
    channel = int(href.split("#")[1])
    tile.click()
    p.wait_for_url(f"**/channel-01.html#{channel}")
    assert p.inner_text("#ch-num") == str(channel)
    assert p.locator("article.image").count() == 2
    # arrow keys walk the channels, u goes back to the layer
    if channel < 5:
        p.keyboard.press("ArrowRight")
        p.wait_for_function(f"document.getElementById('ch-num').textContent === '{channel + 1}'")
        assert p.url.endswith(f"#{channel + 1}")
    p.keyboard.press("]")
    p.wait_for_url("**/channel-02.html")
    assert p.inner_text("#ch-num") == "0"
    p.keyboard.press("u")
    p.wait_for_url("**/layer-02.html")
    # "show all" puts a link on every map; one of them opens that channel
    p.click("article.image >> nth=0 >> button.show-all")
    links = p.locator("article.image >> nth=0 >> .all-maps .overlay a")
    assert links.count() == 8
    links.nth(6).click()
    p.wait_for_url("**/channel-02.html#6")
    assert p.inner_text("#ch-num") == "6"
    # the filters picture links every filter to its channel
    p.goto(f"{tiny_site.as_uri()}/layer-00.html")
    flinks = p.locator(".overlay-host.filters .overlay a")
    assert flinks.count() == 4
    flinks.nth(3).click()
    p.wait_for_url("**/channel-00.html#3")
    v.all_images_decode()
    v.clean()


@pytest.mark.slow
def test_vgg16_report_in_the_browser(browser, cli, tmp_path, monkeypatch):
    """A few VGG16 layers (random weights): big layers, non-tiny sprites, 1x1-free 3x3 filters."""
    monkeypatch.chdir(tmp_path)
    r = cli("report", "--sample", "-m", "vgg16", "--weights", "none", "-l", "0,7,12", "-o", "vgg")
    assert r.exit_code == 0, r.stderr
    base = (tmp_path / "vgg").as_uri()
    for rel in ["index.html", "layer-00.html", "layer-07.html", "layer-12.html", "channel-07.html#255",
                "channel-12.html#511", "channel-00.html#63"]:
        v = Visit(browser).open(f"{base}/{rel}")
        v.all_images_decode()
        v.screenshot_not_blank()
        v.clean()
        v.page.close()
    v = Visit(browser, navigating=True).open(f"{base}/layer-12.html")
    v.page.click("button.show-all")
    assert v.page.locator(".all-maps .overlay a").count() == 512
    v.page.keyboard.press("ArrowLeft")
    v.page.wait_for_url("**/layer-07.html")
    v.clean()


# ---------------------------------------------------------------- the model at a glance, image pages, search


def _timing(page) -> dict:
    """The page's own navigation timing (ms from navigation start)."""
    return page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                         " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()")


def _atlas_counts(page) -> list[int]:
    return page.eval_on_selector_all("#atlas .arow", "rows => rows.map(r => r.querySelectorAll('a.thumb').length)")


def _no_horizontal_scroll(page) -> None:
    w = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert w[0] <= w[1], f"horizontal scrolling: content {w[0]} px wide in a {w[1]} px window"


@pytest.fixture(scope="module")
def resnet_site(tmp_path_factory):
    """resnet18 (random weights) at 64 px, one image, a top index holding layer1.0.conv1: every conv
    layer on the model page (20 rows), the search box's target layer3.1.conv2 among them."""
    import cnnviz
    from cnnviz.io import load_image, preprocess, sample_image_path
    from cnnviz.jobs.report import index_query
    from cnnviz.report import ReportImage, build_report

    root = tmp_path_factory.mktemp("resnet")
    lm = cnnviz.load_model("resnet18", weights="none")
    idx = top_index(root, lm, photos=4, layers=("layer1.0.conv1",))
    x, d = preprocess(load_image(sample_image_path()), size=64, mean=lm.mean, std=lm.std)
    out = root / "site"
    build_report(lm, [ReportImage(name="grace_hopper.jpg", x=x, display=d)], output=str(out), progress=False, index=idx,
                 index_k=3, examples=index_query(lm))
    return out


def test_model_page_at_a_glance_search_and_screenshots(browser, resnet_site, tmp_path):
    page_rows = {}
    v = Visit(browser, navigating=True)
    p = v.page
    p.set_viewport_size({"width": 1366, "height": 768})
    v.open(f"{resnet_site.as_uri()}/index.html")
    t = _timing(p)
    assert 0 < t["dcl"] < 1000 and 0 < t["load"] < 1000, t
    counts = _atlas_counts(p)
    assert len(counts) == 20 and min(counts) >= 4, counts  # every conv layer, at least 4 channels each
    assert p.locator("#L4 a.thumb").count() == 8  # layer1.0.conv1: from the index
    p.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    _no_horizontal_scroll(p)
    v.all_images_decode()
    shots = {"model": p.screenshot(path=str(tmp_path / "model.png"), full_page=True)}
    # the search box: layer:channel, then a layer, then something that is not there
    p.fill("#jump", "layer3.1.conv2:17")
    p.keyboard.press("Enter")
    p.wait_for_url("**/channel-*.html#17")
    assert p.inner_text("#ch-num") == "17" and "layer3.1.conv2" in p.inner_text("#ch-title")
    page_rows["channel"] = p.url
    v.all_images_decode()
    _no_horizontal_scroll(p)
    shots["channel"] = p.screenshot(path=str(tmp_path / "channel.png"), full_page=True)
    p.keyboard.press("/")  # focuses the search box from any page
    assert p.evaluate("document.activeElement.id") == "jump"
    p.keyboard.type("layer3.1.conv2")
    p.keyboard.press("Enter")
    p.wait_for_url("**/layer-*.html")
    assert "layer3.1.conv2" in p.inner_text("h1")
    v.all_images_decode()
    _no_horizontal_scroll(p)
    shots["layer"] = p.screenshot(path=str(tmp_path / "layer.png"), full_page=True)
    p.fill("#jump", "layer3.1.conv2:9999")
    p.keyboard.press("Enter")
    assert "has 256 channels" in p.inner_text("#jump-msg")
    p.fill("#jump", "no-such-layer")
    p.keyboard.press("Enter")
    assert "no layer matches" in p.inner_text("#jump-msg") and "layer-" in p.url
    # a thumbnail opens its channel; the image strip opens the image page
    p.goto(f"{resnet_site.as_uri()}/index.html")
    thumb = p.locator("#L4 a.thumb").first
    ch = int(thumb.get_attribute("href").split("#")[1])
    thumb.click()
    p.wait_for_url(f"**/channel-04.html#{ch}")
    p.goto(f"{resnet_site.as_uri()}/index.html")
    p.click("a.imthumb")
    p.wait_for_url("**/image-00.html")
    v.all_images_decode()
    _no_horizontal_scroll(p)
    shots["image"] = p.screenshot(path=str(tmp_path / "image.png"), full_page=True)
    for name in shots:
        a = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")).astype(np.int32)
        assert a.std() > 10 and a.shape[1] == 1366, name
    v.clean()


def test_tiny_site_rows_and_image_pages_keys(browser, tiny_site):
    v = Visit(browser, navigating=True).open(f"{tiny_site.as_uri()}/index.html")
    p = v.page
    assert _atlas_counts(p) == [4, 6, 8]  # every channel of these small layers (at most 8)
    p.keyboard.press("/")
    p.keyboard.type("2:5")  # a layer by its index
    p.keyboard.press("Enter")
    p.wait_for_url("**/channel-02.html#5")
    p.goto(f"{tiny_site.as_uri()}/image-00.html")
    p.keyboard.press("ArrowRight")
    p.wait_for_url("**/image-01.html")
    p.keyboard.press("ArrowLeft")
    p.wait_for_url("**/image-00.html")
    p.keyboard.press("u")
    p.wait_for_url("**/index.html")
    v.clean()


@pytest.mark.slow
def test_resnet50_model_page_opens_in_under_a_second(browser, tmp_path):
    """All 53 ResNet-50 conv layers (random weights), 3 images (128 px), a top index: the model page's
    DOMContentLoaded and load from file:// under 1 s (lazy thumbnails, one picture per row)."""
    import cnnviz
    from cnnviz.io import load_image, preprocess, sample_image_path
    from cnnviz.jobs.report import index_query
    from cnnviz.report import ReportImage, build_report

    lm = cnnviz.load_model("resnet50", weights="none")
    idx = top_index(tmp_path, lm, photos=4, layers=("conv1", "layer1.0.conv1"))
    x, d = preprocess(load_image(sample_image_path()), size=128, mean=lm.mean, std=lm.std)  # the page, not the maps, is timed
    ims = [ReportImage(name=f"image {k}", x=(x * (1 - 0.2 * k)).astype(np.float32), display=d) for k in range(3)]
    out = tmp_path / "site"
    build_report(lm, ims, output=str(out), progress=False, index=idx, index_k=3, examples=index_query(lm))
    v = Visit(browser)
    v.page.set_viewport_size({"width": 1366, "height": 768})
    v.open(f"{out.as_uri()}/index.html")
    t = _timing(v.page)
    counts = _atlas_counts(v.page)
    assert len(counts) == 53 and min(counts) == 8, counts
    assert t["dcl"] < 1000 and t["load"] < 1000, t
    print(f"ResNet-50 model page from file://: DOMContentLoaded {t['dcl']:.0f} ms, load {t['load']:.0f} ms")
    _no_horizontal_scroll(v.page)
    v.all_images_decode()
    v.clean()
