"""cnnviz report --with B: the comparison page (cnnviz/report/comparepage.py) - its numbers are
compare's, its links reach this report's and B's pages, bad input is one line and no folder - and
the page in a real browser (tests/test_report_browser.py's conventions: Debian's Chromium through
Playwright, skipped without them): no console error, no failed request, every image decodes,
every link resolves."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch

from test_compare import NET, world  # noqa: F401  (the fixture: a model file, a checkpoint, 12 photos)
from test_report_browser import Visit, browser  # noqa: F401  (Chromium through Playwright, skipped without them)


def _files(folder: Path) -> list[str]:
    return [str(p) for p in sorted(folder.iterdir())]


def _report(d: Path, out: str, weights: str, *extra: str) -> list[str]:
    return ["report", *_files(d / "photos"), "-m", f"{d}/net.py:Net", "-w", str(d / weights), "-s", "32", "-o", str(d / out),
            "--json", "-q", *extra]


@pytest.fixture
def pair(world, cli):  # noqa: F811
    """Reports of A (a.pth, with --with B and --with-report) and of B (b.pth: A with one conv perturbed)."""
    d, mod, net = world
    import copy

    other = copy.deepcopy(net)
    torch.manual_seed(5)
    with torch.no_grad():
        other.features[5].weight.add_(0.6 * torch.randn_like(other.features[5].weight))
    torch.save(other.state_dict(), d / "b.pth")
    r = cli(*_report(d, "rep-b", "b.pth"))
    assert r.exit_code == 0, r.stderr
    r = cli(*_report(d, "rep-a", "a.pth", "--with", f"{d}/net.py:Net", "--with-weights", str(d / "b.pth"),
                     "--with-report", str(d / "rep-b")))
    assert r.exit_code == 0, r.stderr
    return d, json.loads(r.stdout.splitlines()[-1])


def _links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', html)


def test_the_page_shows_compares_numbers_and_every_link_resolves(pair, cli):
    d, rec = pair
    page = d / "rep-a" / "compare.html"
    assert rec["compare"] == str(page) and page.is_file()
    html = page.read_text()
    # the same numbers as cnnviz compare on the same images, layers and stage (conv, the report's default)
    r = cli("compare", str(d / "photos"), "-m", f"{d}/net.py:Net", "-w", str(d / "a.pth"), "--with", f"{d}/net.py:Net",
            "--with-weights", str(d / "b.pth"), "-s", "32", "--no-crop", "--stage", "conv", "--workers", "0", "-k", "16",
            "--json", "--no-pictures")
    assert r.exit_code == 0, r.stderr
    want = json.loads(r.stdout.splitlines()[-1])
    for p in want["profile"]:
        assert f"<td>{p['cka']:.4f} " in html, p
    assert [p["cka"] for p in want["profile"]][:2] == pytest.approx([1.0, 1.0], abs=1e-6)  # unchanged convs
    assert want["profile"][2]["cka"] < 0.999  # the perturbed one
    for u in want["units"]:
        for row in u["changed_most"]:
            assert f'href="channel-{u["layer"]:02d}.html#{row["channel"]}"' in html
            assert f'href="../rep-b/channel-{u["layer"]:02d}.html#{row["match"]}"' in html
    # every local link and image exists, in this report or in B's
    targets = [t for t in _links(html) if not t.startswith(("http:", "https:", "data:"))]
    assert len(targets) > 40
    for t in targets:
        if t.startswith("#"):  # an anchor on this page
            assert f'id="{t[1:]}"' in html, t
            continue
        path = (page.parent / unquote(urlparse(t).path)).resolve()
        assert path.is_file(), t
    # the model page links the comparison page; the channel pages' compare slot links it and B's channel
    assert 'href="compare.html"' in (d / "rep-a" / "index.html").read_text()
    data = (d / "rep-a" / "data" / "layer-02.js").read_text()
    assert "compare.html#layer-2" in data and "../rep-b/channel-02.html#" in data


def test_report_with_bad_input_is_one_line_and_makes_no_folder(world, cli):  # noqa: F811
    d, _, _ = world
    few = d / "few"
    few.mkdir()
    for p in sorted((d / "photos").iterdir())[:3]:
        (few / p.name).write_bytes(p.read_bytes())
    cases = [
        (["report", *_files(few), "-m", f"{d}/net.py:Net", "--with", f"{d}/net.py:Net"], "at least 4"),
        (["report", *_files(d / "photos"), "-m", f"{d}/net.py:Net", "--with", f"{d}/net.py:Gray", "--with-weights", "none"],
         "different inputs"),
        (["report", *_files(d / "photos"), "-m", f"{d}/net.py:Net", "--with-report", str(d)], "add --with"),
        (["report", *_files(d / "photos"), "-m", f"{d}/net.py:Net", "--with-weights", str(d / "a.pth")], "add --with"),
        (["report", *_files(d / "photos"), "-m", f"{d}/net.py:Net", "--with", f"{d}/net.py:Net", "--with-report", str(d)],
         "not a cnnviz report"),
    ]
    for args, fragment in cases:
        r = cli(*args, "-s", "32", "-o", str(d / "nothing"))
        assert r.exit_code != 0, args
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cnnviz: error:") and fragment in err[0], (args, r.stderr)
        assert not (d / "nothing").exists(), args


def test_comparison_page_in_the_browser(pair, browser):  # noqa: F811
    d, _ = pair
    page = d / "rep-a" / "compare.html"
    ctx = browser
    v = Visit(ctx).open(page.as_uri())
    assert v.all_images_decode() == 1  # the heat map
    v.screenshot_not_blank()
    hrefs = v.page.eval_on_selector_all("main a[href]", "els => els.map(e => e.href)")
    v.clean()
    assert any("rep-b/channel-" in h for h in hrefs) and any(h.split("#")[0].endswith("/compare.html") for h in hrefs)
    # every distinct page the comparison links opens clean, with its images
    for url in sorted(set(hrefs)):
        w = Visit(ctx).open(url)
        w.all_images_decode()
        w.clean()
        w.page.close()
    # a link on the page opens A's channel page at that channel
    first = v.page.locator("section.changed a[href^='channel-']").first
    target = first.get_attribute("href")
    first.click()
    v.page.wait_for_url(f"**/{target}")
    assert v.page.inner_text("#ch-num") == target.split("#")[1]
    v.page.close()
