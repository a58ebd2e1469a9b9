"""The report's model page at a glance (cnnviz/report/atlas.py): which channels each layer row
shows and what their thumbnails hold, checked against the network run directly with torch; the
per-image pages and the search data. Browser checks: test_report_browser.py."""
from __future__ import annotations

import json
import re

import numpy as np
import torch
from PIL import Image

from cnnviz.jobs.report import index_query
from cnnviz.report import build_report
from cnnviz.report.atlas import ATLAS_K, GAP, MIN_WINDOW, THUMB

from test_report import EVIL, images, tiny_model, top_index


def _row(index_html: str, layer: int) -> tuple[list[int], str | None]:
    """(channels in the row's order, the row picture's src) of layer ``layer`` on the model page."""
    seg = index_html.split(f'<div class=arow id="L{layer}">', 1)[1].split("<div class=arow", 1)[0].split("</section>", 1)[0]
    chans = [int(c) for c in re.findall(rf'href="channel-{layer:02d}\.html#(\d+)"', seg)]
    srcs = set(re.findall(r'<img src="(img/atlas-[0-9a-f]+\.(?:png|jpg))"', seg))
    assert len(srcs) <= 1, srcs  # one picture per row
    return chans, (srcs.pop() if srcs else None)


def _convs(model, x):
    """Every conv's own output (stage conv), by conv index, from forward hooks."""
    out, hooks = [], []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda _m, _i, o: out.append(o.detach().clone())))
    with torch.no_grad():
        model(torch.from_numpy(np.asarray(x)))
    for h in hooks:
        h.remove()
    return [o.numpy() for o in out]


def test_map_rows_rank_channels_by_mean_over_the_images_and_show_the_best_images_map(tmp_path):
    import matplotlib

    lm = tiny_model()
    ims = images(2)
    out = tmp_path / "s"
    build_report(lm, ims, output=str(out), progress=False)  # stage conv
    acts = _convs(lm.model, np.stack([im.x for im in ims]))  # [layer] (images, C, h, w)
    html = (out / "index.html").read_text()
    cmap = matplotlib.colormaps["viridis"]
    for layer, a in enumerate(acts):
        means = a.mean(axis=(2, 3))  # (images, C)
        want = sorted(range(a.shape[1]), key=lambda c: (-means[:, c].mean(), c))[:ATLAS_K]
        chans, src = _row(html, layer)
        assert chans == want, layer
        pic = np.asarray(Image.open(out / src).convert("RGB")).astype(int)
        assert pic.shape == (THUMB, THUMB * len(want) + GAP * (len(want) - 1), 3)
        for j, c in enumerate(chans):
            m = a[int(means[:, c].argmax()), c]  # its map on the image it excites most
            h, w = m.shape
            v = (m - m.min()) / (m.max() - m.min())
            colours = (np.asarray(cmap(v))[..., :3] * 255).astype(int)
            s = THUMB / max(h, w)  # the longer side fills the thumbnail, centred on white
            oy, ox = (THUMB - round(h * s)) // 2, (THUMB - round(w * s)) // 2
            ys, xs = oy + ((np.arange(h) + 0.5) * s).astype(int), ox + ((np.arange(w) + 0.5) * s).astype(int)
            tile = pic[:, j * (THUMB + GAP):j * (THUMB + GAP) + THUMB]
            if oy or ox:
                assert (tile[:max(oy, 1) if oy else THUMB, :max(ox, 1) if ox else THUMB] == 255).all()
            tile = tile[ys][:, xs]
            assert np.abs(tile - colours).max() <= 6, (layer, c)  # the sprite's palette levels


def test_index_rows_show_each_channels_best_dataset_window(tmp_path):
    """With --index, a row ranks the channels by their best max over the index's images and
    shows that image's receptive-field window of the peak unit (checked on layer 2: rf 10 px,
    jump 2, first window at -4, shown inside MIN_WINDOW px of context)."""
    from cnnviz.index import ActivationIndex
    from cnnviz.report.atlas import index_preprocess

    lm = tiny_model()
    idx = top_index(tmp_path, lm, photos=5, layers=("0", "1", "2"))
    out = tmp_path / "s"
    build_report(lm, images(1), output=str(out), progress=False, index=idx, index_k=3, examples=index_query(lm))
    html = (out / "index.html").read_text()
    prep = index_preprocess(ActivationIndex.open(idx).provenance)  # as the index scanned them
    paths = sorted((tmp_path / "photos").glob("*.png"))
    loaded = [prep(str(p)) for p in paths]
    acts = _convs(lm.model, np.stack([x for x, _d in loaded]))
    for layer, a in enumerate(acts):
        best = a.reshape(a.shape[0], a.shape[1], -1).max(axis=2)  # (images, C)
        want = sorted(range(a.shape[1]), key=lambda c: (-best[:, c].max(), c))[:ATLAS_K]
        chans, src = _row(html, layer)
        assert chans == want, layer
        assert src.endswith(".jpg")
    chans, src = _row(html, 2)
    pic = np.asarray(Image.open(out / src).convert("RGB")).astype(float)
    a = acts[2]
    for j, c in enumerate(chans):
        n = int(a[:, c].reshape(len(paths), -1).max(axis=1).argmax())
        uy, ux = np.unravel_index(int(a[n, c].argmax()), a[n, c].shape)
        disp = loaded[n][1].astype(float)
        y0, x0 = -4 + 2 * int(uy), -4 + 2 * int(ux)
        cy, cx = y0 + (10 - MIN_WINDOW) // 2, x0 + (10 - MIN_WINDOW) // 2  # the context square's corner
        s = THUMB / MIN_WINDOW
        tile = pic[:, j * (THUMB + GAP):j * (THUMB + GAP) + THUMB]

        def err(dy: int, dx: int) -> float:
            d = []
            for y in range(y0 + 1, y0 + 9):  # inside the window, clear of its outline
                for x in range(x0 + 1, x0 + 9):
                    if 0 <= y + dy < disp.shape[0] and 0 <= x + dx < disp.shape[1]:
                        ty, tx = int((y - cy + 0.5) * s), int((x - cx + 0.5) * s)
                        d.append(np.abs(tile[ty, tx] - disp[y + dy, x + dx]).mean())
            return float(np.mean(d))

        assert err(0, 0) < 25, (c, err(0, 0))  # JPEG of random pixels: far below a shifted window's error
        assert err(0, 0) < 0.5 * min(err(3, 0), err(0, 3)), c


def test_image_pages_search_data_and_a_model_page_without_sheets(tmp_path):
    lm = tiny_model()
    out = tmp_path / "s"
    from cnnviz.layers import conv_layers

    ims = images(3)
    build_report(lm, ims, output=str(out), progress=False, layers=conv_layers(lm.model)[1:])
    index = (out / "index.html").read_text()
    acts = _convs(lm.model, np.stack([im.x for im in ims]))
    for n in range(3):  # beside the sheet, its tiles as links: each layer's 8 strongest channels on this image
        page = (out / f"image-{n:02d}.html").read_text()
        table = page.split("<details class=sheetlinks", 1)[1].split("</details>", 1)[0]
        for layer in (1, 2):
            means = acts[layer][n].mean(axis=(1, 2))
            want = sorted(range(len(means)), key=lambda c: (-means[c], c))[:8]
            row = table.split(f'href="layer-{layer:02d}.html"', 1)[1].split("</tr>", 1)[0]
            assert [int(c) for c in re.findall(rf'href="channel-{layer:02d}\.html#(\d+)"', row)] == want
    assert "img/sheet-" not in index  # the sheets are on the image pages now
    for n in range(3):
        assert f'href="image-{n:02d}.html"' in index
        page = (out / f"image-{n:02d}.html").read_text()
        assert len(re.findall(r'<img src="img/sheet-[0-9a-f]+\.png"', page)) == 1
        assert ('rel=prev href="image-%02d.html"' % (n - 1) in page) == (n > 0)
        assert ('rel=next href="image-%02d.html"' % (n + 1) in page) == (n < 2)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in (out / "image-00.html").read_text()
    data = (out / "data" / "search.js").read_text()
    assert "<" not in data
    payload = json.loads(data[len("window.CNNVIZ_SEARCH = "):].rstrip().rstrip(";"))
    assert payload == {"layers": [[0, "features.0", "", 4, False], [1, "features.2", "", 6, True],
                                  [2, "features.5", "", 8, True]]}
    assert EVIL not in data
    # the model page rows: only the report's layers
    assert 'id="L0"' not in index and 'id="L1"' in index and 'id="L2"' in index
