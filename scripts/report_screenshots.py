#!/usr/bin/env python3
"""Screenshots of a `cnnviz report` folder in headless Chromium, its pages' load times and what
its bytes are made of.

    python scripts/report_screenshots.py report/ --out docs/gallery --prefix report-vgg16 \\
        --layer 7 --channel 7:17 --image 0

Writes {prefix}-model.png, -layer.png, -channel.png and -image.png (a 1366 px wide window, the
laptop screen the report is designed for; full pages cut at --max-height px; 256-colour PNGs), then prints per page
the DOMContentLoaded and load times from file:// (median of --reps visits, from the browser's
navigation timing) and the folder's size by kind of file (img/maps-* sprites, img/top-* dataset
examples, ...). Debian's Chromium driven by Playwright (apt-get install chromium; pip install
playwright), never a downloaded browser.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
WIDTH = 1366


def size_by_kind(folder: str) -> dict[str, tuple[int, int]]:
    """{kind: (files, bytes)}: img/ pictures by their name's prefix (maps, top, filters, ...), data/
    scripts, pages, the rest."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for dp, _dirs, files in os.walk(folder):
        for f in files:
            rel = os.path.relpath(os.path.join(dp, f), folder)
            if rel.startswith("img" + os.sep):
                m = re.match(r"([a-z]+(?:-profile)?)-", f)
                kind = f"img/{m.group(1) if m else 'other'}-*"
            elif rel.startswith("data" + os.sep):
                kind = "data/*.js"
            elif f.endswith(".html"):
                kind = "*.html"
            else:
                kind = "other"
            out[kind][0] += 1
            out[kind][1] += os.path.getsize(os.path.join(dp, f))
    return {k: (v[0], v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][1])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a cnnviz report folder")
    ap.add_argument("--out", default=None, help="folder for the screenshots (default: none taken)")
    ap.add_argument("--prefix", default="report")
    ap.add_argument("--layer", type=int, default=0, help="layer index of the layer page")
    ap.add_argument("--channel", default="0:0", help="LAYER:CHANNEL of the channel page")
    ap.add_argument("--image", type=int, default=0, help="image number of the image page")
    ap.add_argument("--max-height", type=int, default=1500, help="cut full-page screenshots at this many px")
    ap.add_argument("--model-height", type=int, default=3400, help="... and that of the model page (every row)")
    ap.add_argument("--reps", type=int, default=5, help="visits per page for the load times")
    ap.add_argument("--colors", type=int, default=256, help="palette PNGs of this many colours (0: full RGB)")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs Playwright for Python: pip install playwright", file=sys.stderr)
        return 1
    exe = os.environ.get("CNNVIZ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(exe):
        print("needs Chromium: apt-get install -y chromium (or set CNNVIZ_CHROMIUM)", file=sys.stderr)
        return 1
    from PIL import Image

    folder = os.path.abspath(args.folder)
    layer, channel = (int(v) for v in args.channel.split(":"))
    pages = {"model": "index.html", "layer": f"layer-{args.layer:02d}.html",
             "channel": f"channel-{layer:02d}.html#{channel}", "image": f"image-{args.image:02d}.html"}
    with tempfile.TemporaryDirectory() as prof, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(prof, executable_path=exe, headless=True, args=ARGS,
                                                   viewport={"width": WIDTH, "height": 800})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        print(f"{'page':<8} {'file':<22} {'DOMContentLoaded':>17} {'load':>8} {'width':>6}")
        for name, rel in pages.items():
            dcl, load = [], []
            for _ in range(args.reps):
                page.goto("about:blank")
                page.goto(f"file://{folder}/{rel}", wait_until="load")
                t = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                                  " return [n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime]; })()")
                dcl.append(t[0])
                load.append(t[1])
            width = page.evaluate("document.documentElement.scrollWidth")
            print(f"{name:<8} {rel:<22} {statistics.median(dcl):>14.0f} ms {statistics.median(load):>5.0f} ms {width:>6}")
            if args.out:
                page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
                page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=120_000)
                page.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
                page.wait_for_timeout(300)
                png = page.screenshot(full_page=True)
                im = Image.open(io.BytesIO(png))
                cut = args.model_height if name == "model" else args.max_height
                if im.height > cut:
                    im = im.crop((0, 0, im.width, cut))
                os.makedirs(args.out, exist_ok=True)
                path = os.path.join(args.out, f"{args.prefix}-{name}.png")
                im = im.convert("RGB")
                if args.colors:  # a few hundred kB instead of MB for the docs; text and thumbnails stay sharp
                    im = im.quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                im.save(path, optimize=True)
                print(f"{'':<8} -> {path} ({im.width}x{im.height})")
        ctx.close()
    if errors:
        print("console errors:", *errors, sep="\n  ", file=sys.stderr)
    total = 0
    print(f"\n{'kind':<22} {'files':>7} {'MB':>8}")
    for kind, (n, b) in size_by_kind(folder).items():
        total += b
        print(f"{kind:<22} {n:>7} {b / 1e6:>8.1f}")
    print(f"{'total':<22} {'':>7} {total / 1e6:>8.1f}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
