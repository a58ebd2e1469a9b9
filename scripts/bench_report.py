#!/usr/bin/env python3
"""`cnnviz report` against the runs it replaces, side by side in one run.

A report of every conv layer (all channels) for a few images is timed against the commands a
user would otherwise run for the same pictures: `cnnviz maps -l all --top K --sheet` (the grids
and sheets), `cnnviz filters -l all` (the filter pictures) and `cnnviz rf` (the profile plot and
the boxes, 20 layers per picture, the most one picture takes). Every side runs in-process as its
job (cnnviz.jobs: run_report, run_maps, run_filters, run_rf) on one already loaded model (model
loading is excluded from both sides), each timing is the median of --reps runs, and the ratio report / (maps + filters + rf) is the figure of merit (target <= 1.5).
A second report run on the same folder (everything cached) is timed too, as well as the size of
the folder and, when Chromium and Playwright are here, how long its pages take to open.

    python scripts/bench_report.py                      # ResNet-50, 3 images, ~10 min on 2 busy cores
    python scripts/bench_report.py --model vgg16 --images 1 --reps 1
    python scripts/bench_report.py --quick               # tiny smoke run

Random weights (--weights none): timings do not depend on the weight values.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import median_time  # noqa: E402  (one timing helper for every benchmark)




def jobs_baseline(lm: Any, imgs: list[str], dirs: dict[str, str], *, top: int, groups: list[str]) -> dict[str, Callable[[], None]]:
    """The runs a report replaces, as the maps, filters and rf jobs on the loaded model."""
    from cnnviz.jobs import ImageInputs, Output
    from cnnviz.jobs.filters import FiltersRequest, run_filters
    from cnnviz.jobs.maps import MapsRequest, run_maps
    from cnnviz.jobs.rf import RFRequest, run_rf
    from cnnviz.sources import ModelSpec

    spec = ModelSpec(source=lm.name, weights=lm.weights)

    def maps() -> None:
        request = MapsRequest(inputs=ImageInputs(images=tuple(imgs)), layers=("all",), model=spec, stage="act",
                              top=top, sheet=True)
        run_maps(request, output=Output(dirs["maps"]), model=lm)

    def filters() -> None:
        run_filters(FiltersRequest(layers=("all",), model=spec), output=Output(dirs["filters"]), model=lm)

    def rf() -> None:
        run_rf(RFRequest(profile=True, model=spec), output=Output(dirs["rf"]))
        for g in groups:
            run_rf(RFRequest(inputs=ImageInputs(images=(imgs[0],)), layers=(g,), model=spec), output=Output(dirs["rf"]),
                   model=lm)

    return {"maps": maps, "filters": filters, "rf": rf}


def report_job(lm: Any, imgs: list[str], folder: str, *, top: int) -> Callable[[], None]:
    """`cnnviz report IMGS -l all --stage act --top K -o FOLDER` as the report job on the loaded model (stage act,
    as the maps baseline and as the report's default was when the benchmark was written)."""
    from cnnviz.jobs import ImageInputs, Output
    from cnnviz.jobs.report import ReportRequest, run_report
    from cnnviz.sources import ModelSpec

    request = ReportRequest(inputs=ImageInputs(images=tuple(imgs)), model=ModelSpec(source=lm.name, weights=lm.weights),
                            layers=("all",), stage="act", top=top)
    return lambda: run_report(request, output=Output(folder), model=lm)


def make_images(folder: str, n: int) -> list[str]:
    """``n`` distinct photos: the sample photo, mirrored, and cropped variants (JPEG)."""
    from PIL import Image, ImageOps

    from cnnviz.io import sample_image_path

    base = Image.open(sample_image_path()).convert("RGB")
    variants = [base, ImageOps.mirror(base), base.crop((40, 60, 472, 540)), ImageOps.mirror(base.crop((0, 0, 400, 400)))]
    paths = []
    for k in range(n):
        p = os.path.join(folder, f"photo{k}.jpg")
        variants[k % len(variants)].save(p, quality=92)
        paths.append(p)
    return paths


def folder_size(folder: str) -> tuple[int, int]:
    n = total = 0
    for dp, _d, fs in os.walk(folder):
        for f in fs:
            n += 1
            total += os.path.getsize(os.path.join(dp, f))
    return n, total


def page_open_times(folder: str, pages: list[str]) -> dict[str, float] | str:
    """Milliseconds from navigation start to the load event, per page (file://), in headless Chromium."""
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "not measured: Playwright is not installed"
    if exe is None:
        return "not measured: no Chromium"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    out = {}
    with tempfile.TemporaryDirectory() as prof, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(prof, executable_path=exe, headless=True, args=args,
                                                   viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        for rel in pages:
            times = []
            for _ in range(3):
                page.goto("about:blank")
                page.goto(f"file://{os.path.abspath(folder)}/{rel}", wait_until="load")
                times.append(page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; })()"))
            out[rel] = statistics.median(times)
        ctx.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="resnet18, 1 image, 1 repetition")
    ap.add_argument("--out", default=None, help="also write the Markdown table here")
    ap.add_argument("--keep", default=None, help="keep the report folder here (to look at it)")
    a = ap.parse_args(argv)
    if a.quick:
        a.model, a.images, a.reps = "resnet18", 1, 1

    import torch

    from cnnviz.models import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    lm = load_model(a.model, weights="none")
    from cnnviz.layers import conv_layers

    n_layers = len(conv_layers(lm.model))
    work = tempfile.mkdtemp(prefix="bench-report-")
    try:
        imgs = make_images(work, a.images)
        dirs = {k: os.path.join(work, k) for k in ("maps", "filters", "rf", "report")}

        def fresh(*keys: str) -> Callable[[], None]:
            def go() -> None:
                for k in keys:
                    shutil.rmtree(dirs[k], ignore_errors=True)
                    os.makedirs(dirs[k])
            return go

        groups = [f"{i}:{min(i + 20, n_layers)}" for i in range(0, n_layers, 20)]
        baseline = jobs_baseline(lm, imgs, dirs, top=a.top, groups=groups)
        report = report_job(lm, imgs, dirs["report"], top=a.top)
        report()  # warm-up: imports, fx traces, fonts
        t_maps = median_time(baseline["maps"], a.reps, setup=fresh("maps"))
        t_filt = median_time(baseline["filters"], a.reps, setup=fresh("filters"))
        t_rf = median_time(baseline["rf"], a.reps, setup=fresh("rf"))
        t_rep = median_time(report, a.reps, setup=fresh("report"))
        t_again = median_time(report, a.reps)
        files, size = folder_size(dirs["report"])
        base_files = sum(folder_size(dirs[k])[0] for k in ("maps", "filters", "rf"))
        base_size = sum(folder_size(dirs[k])[1] for k in ("maps", "filters", "rf"))
        channels = sum(lay.out_channels for lay in conv_layers(lm.model))
        last = n_layers - 1
        opens = page_open_times(dirs["report"], ["index.html", "layer-00.html", f"layer-{last:02d}.html",
                                                 f"channel-{last:02d}.html#{channels and 0}"])
        if a.keep:
            shutil.rmtree(a.keep, ignore_errors=True)
            shutil.copytree(dirs["report"], a.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = t_maps + t_filt + t_rf
    ratio = t_rep / base
    lines = [
        f"## `cnnviz report` vs the runs it replaces ({a.model}, {n_layers} conv layers, {channels} channels, "
        f"{a.images} image(s), random weights)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}; "
        f"median of {a.reps} run(s), model loading excluded on both sides. "
        f"Command: `python scripts/bench_report.py --model {a.model} --images {a.images} --reps {a.reps}`.",
        "",
        "| run | seconds | files | MB |",
        "|---|---:|---:|---:|",
        f"| `cnnviz maps IMGS -l all --stage act --top {a.top} --sheet` | {t_maps:.2f} | | |",
        f"| `cnnviz filters -l all` | {t_filt:.2f} | | |",
        f"| `cnnviz rf --profile` + `cnnviz rf IMG -l` ({len(groups)} pictures of <= 20 layers) | {t_rf:.2f} | | |",
        f"| **the three together** | **{base:.2f}** | {base_files} | {base_size / 1e6:.1f} |",
        f"| **`cnnviz report IMGS -l all --stage act --top {a.top}`** (fresh folder) | **{t_rep:.2f}** | {files} | {size / 1e6:.1f} |",
        f"| `cnnviz report` again on the same folder (all cached) | {t_again:.2f} | | |",
        "",
        f"Ratio report / (maps + filters + rf): **{ratio:.2f}x** (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}).",
        "",
    ]
    if isinstance(opens, dict):
        lines += ["Page open time (headless Chromium, file://, navigation start to load event, median of 3):", "",
                  "| page | ms |", "|---|---:|"] + [f"| `{k}` | {v:.0f} |" for k, v in opens.items()] + [""]
    else:
        lines += [f"Page open time: {opens}.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
