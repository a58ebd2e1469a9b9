#!/usr/bin/env python3
"""Benchmark of `cnnviz top` against the floor, side by side in one run.

* throughput: images/s of cnnviz top (library call, model preloaded) on a folder of JPEGs, and of
  the floor: the same decode + preprocess (cnnviz.io, in a torch DataLoader with the same number of
  worker processes and batch size) + batched forward to the layer (torchvision's
  create_feature_extractor, which prunes the graph after the layer), in a plain loop; the ratio;
* peak memory (RSS of the scanning process) over 1,000 vs 4,000 images;
* an index query for one channel over a synthetic index of 100,000 images x 512 channels.

    python scripts/bench_top.py                  # full run (several minutes on 2 cores)
    python scripts/bench_top.py --quick          # smoke run

The JPEGs are made from the photographs scikit-image and matplotlib ship (random crops, resized to
about 500x375, like an average ImageNet photo); timings do not depend on their content. Models use
random weights (--weights none): timings do not depend on the weight values. Writes
docs/benchmarks-top.md and prints it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_jpegs(folder: str, n: int, *, seed: int = 0, start: int = 0) -> list[str]:
    """``n`` JPEGs of about 500x375 px cut from the packaged photographs."""
    from PIL import Image

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from top_photos import MATPLOTLIB_PHOTOS, SKIMAGE_PHOTOS

    import matplotlib

    srcs = [os.path.join(matplotlib.get_data_path(), "sample_data", n_) for n_ in MATPLOTLIB_PHOTOS]
    try:
        import skimage

        sk = os.path.join(os.path.dirname(skimage.__file__), "data")
        srcs += [os.path.join(sk, n_) for n_ in SKIMAGE_PHOTOS if os.path.exists(os.path.join(sk, n_))]
    except ImportError:
        pass
    photos = [Image.open(s).convert("RGB") for s in srcs]
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = []
    for i in range(start, start + n):
        im = photos[i % len(photos)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        tw = int(rng.integers(420, 560))
        th = max(64, int(tw * ch / cw))
        p = os.path.join(folder, f"img{i:05d}.jpg")
        im.crop((x0, y0, x0 + cw, y0 + ch)).resize((tw, th), Image.Resampling.BILINEAR).save(p, quality=90)
        out.append(p)
    return out


class _Floor:
    """The floor's dataset: the same decode + preprocess as cnnviz, nothing else."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):  # noqa: ANN204
        import torch

        from cnnviz.io import load_image, preprocess

        x, _ = preprocess(load_image(self.paths[i]), size=self.size, crop=True)
        return torch.from_numpy(x)


def floor_scan(model, layer: str, paths: list[str], *, size: int, batch: int, workers: int) -> int:  # noqa: ANN001
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    fx = create_feature_extractor(model, return_nodes=[layer]).eval()
    loader = torch.utils.data.DataLoader(_Floor(paths, size), batch_size=batch, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    n = 0
    with torch.inference_mode():
        for x in loader:
            fx(x)
            n += len(x)
    return n


def cnnviz_scan(lm, layer: str, folder: str, *, size: int, batch: int, workers: int, index: str | None = None) -> int:  # noqa: ANN001
    from cnnviz.jobs.top import TopRequest, run_top

    req = TopRequest(images=(folder,), layers=(layer,), k=9, size=size, batch_size=batch, workers=workers,
                     pictures=False, index=index)
    return run_top(req, model=lm).scanned


_MEM_CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
from cnnviz.jobs.top import TopRequest, run_top
from cnnviz.models import load_model
lm = load_model({model!r}, weights="none")
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = run_top(TopRequest(images=({folder!r},), layers=({layer!r},), k=9, size={size}, batch_size={batch},
                         workers={workers}, pictures=False), model=lm)
print(res.scanned, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, loaded)
"""


def peak_rss(model: str, layer: str, folder: str, *, size: int, batch: int, workers: int) -> tuple[int, float, float]:
    """(images scanned, peak RSS MB of the scanning process, its RSS MB once torch and the model were loaded)."""
    code = _MEM_CHILD.format(root=ROOT, model=model, layer=layer, folder=folder, size=size, batch=batch, workers=workers)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, kb, kb0 = r.stdout.split()
    return int(n), int(kb) / 1024, int(kb0) / 1024


def synthetic_index(root: str, *, images: int, channels: int, part: int, layer: int, name: str) -> None:
    from cnnviz.index import ActivationIndex, make_provenance, write_part
    from cnnviz.scan import LayerStats, image_id

    prov = make_provenance(model="vgg16", weights="synthetic", weights_sha256="0" * 64,
                           preprocess={"size": 224, "crop": True, "resize_size": 256, "crop_size": 224,
                                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"},
                           stage="conv", layers=[{"index": layer, "name": name, "alias": None, "channels": channels}])
    idx = ActivationIndex.create_or_open(root, prov)
    rng = np.random.default_rng(0)
    for start in range(0, images, part):
        n = min(part, images - start)
        paths = [f"/data/synthetic/img{i:07d}.jpg" for i in range(start, start + n)]
        mx = rng.gamma(2.0, 1.0, (n, channels)).astype(np.float32)
        st = LayerStats(mx, (mx * 0.2).astype(np.float32), rng.integers(0, 28, (n, channels, 2)).astype(np.int32))
        ids = np.asarray([image_id(p) for p in paths], np.int64)
        write_part(idx.root, layer_ids=[layer], layer_names=[name], ids=[ids], stats=[{name: st}],
                   images=[(int(i), p, 1000, 0, True, None) for i, p in zip(ids, paths)])


def throughput(lm, lname: str, tmp: str, *, n_img: int, reps: int, args) -> list[tuple[str, ...]]:  # noqa: ANN001
    """Floor, cnnviz top, cnnviz top --index over the same JPEGs; the order alternates between
    repetitions (floor first, then cnnviz first), so load changes on a shared machine hit both."""
    folder = os.path.join(tmp, "jpegs")
    t = time.perf_counter()
    all_paths = make_jpegs(folder, n_img)
    print(f"made {n_img} JPEGs in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    got: dict[str, list[float]] = {"floor": [], "top": [], "index": []}

    def run(what: str, r: int) -> int:
        t = time.perf_counter()
        if what == "floor":
            n = floor_scan(lm.model, lname, all_paths, size=args.size, batch=args.batch, workers=args.workers)
        else:
            n = cnnviz_scan(lm, lname, folder, size=args.size, batch=args.batch, workers=args.workers,
                            index=os.path.join(tmp, f"idx{r}") if what == "index" else None)
        got[what].append(n / (time.perf_counter() - t))
        return n

    for r in range(reps):
        order = ["floor", "top", "index"] if r % 2 == 0 else ["index", "top", "floor"]
        counts = [run(w, r) for w in order]
        print(f"rep {r} ({', '.join(order)}): floor {got['floor'][-1]:.1f}/s, top {got['top'][-1]:.1f}/s, "
              f"top --index {got['index'][-1]:.1f}/s ({counts} images)", file=sys.stderr)
    f, o, i = (statistics.median(got[k]) for k in ("floor", "top", "index"))
    return [(f"scan {n_img} JPEGs (~500x375), {args.model} to {lname} at {args.size}, batch {args.batch}, "
             f"{args.workers} workers", f"{o:.1f} img/s", f"{f:.1f} img/s", f"{f / o:.2f}x", "<= 1.25x"),
            ("same, writing the index (--index)", f"{i:.1f} img/s", f"{f:.1f} img/s", f"{f / i:.2f}x", "<= 1.25x")]


def memory(model: str, lname: str, tmp: str, *, small: int, big: int, args) -> list[tuple[str, ...]]:  # noqa: ANN001
    """Peak RSS of a scanning process over ``small`` vs ``big`` images (a subset of the same JPEGs)."""
    big_dir = os.path.join(tmp, "jpegs-big")
    make_jpegs(big_dir, big, seed=1)
    small_dir = os.path.join(tmp, "jpegs-small")
    os.makedirs(small_dir)
    for name in sorted(os.listdir(big_dir))[:small]:
        os.link(os.path.join(big_dir, name), os.path.join(small_dir, name))
    n_s, rss_s, base_s = peak_rss(model, lname, small_dir, size=112, batch=args.batch, workers=args.workers)
    n_b, rss_b, base_b = peak_rss(model, lname, big_dir, size=112, batch=args.batch, workers=args.workers)
    return [(f"peak RSS of the scanning process, {n_b} vs {n_s} images ({model} to {lname}, size 112; of which "
             f"{base_b:.0f} / {base_s:.0f} MB were there before the scan: torch and the model)",
             f"{rss_b:.0f} MB", f"{rss_s:.0f} MB", f"{rss_b / rss_s:.2f}x", "flat (~1x)")]


def index_query(tmp: str, *, images: int, channels: int) -> list[tuple[str, ...]]:
    """One-channel top-9 query (with paths) on a synthetic index, library and command line."""
    from cnnviz.index import ActivationIndex

    idx_dir = os.path.join(tmp, "synthetic-index")
    t = time.perf_counter()
    synthetic_index(idx_dir, images=images, channels=channels, part=1000, layer=7, name="features.17")
    print(f"synthetic index of {images} images x {channels} channels in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    times = []
    rng = np.random.default_rng(1)
    for _ in range(5):
        c = int(rng.integers(0, channels))
        t = time.perf_counter()
        idx = ActivationIndex.open(idx_dir)
        top = idx.top(layer=7, channels=[c], k=9, score="max")
        paths = idx.paths(e.image for e in top[c])
        times.append(time.perf_counter() - t)
        assert len(paths) == 9
    q = statistics.median(times)
    size_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(idx_dir) for f in fs) / 2**20
    rows = [(f"index query: top 9 of one channel over {images:,} images x {channels} channels "
             f"({size_mb:.0f} MB of Parquet), with paths", f"{q * 1000:.0f} ms", "-", "-", "< 1 s")]
    env = dict(os.environ, PYTHONPATH=ROOT)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cnnviz", "top", "--index", idx_dir, "-c", "7", "-n", "9", "--json",
                        "--no-pictures"], capture_output=True, text=True, env=env)
    cli = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    json.loads(r.stdout.splitlines()[0])
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchvision, duckdb, pyarrow"], check=True, env=env)
    imports = time.perf_counter() - t
    rows.append(("the same from the command line (`cnnviz top --index DIR -c 7 -n 9 --json --no-pictures`), "
                 "vs starting Python and importing torch, torchvision, duckdb, pyarrow",
                 f"{cli:.2f} s", f"{imports:.2f} s", f"{cli / imports:.2f}x", "-"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: few images, small index")
    ap.add_argument("--images", type=int, default=None, help="JPEGs for the throughput rows (default 2000)")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--layer", default="layer3.1.conv2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None, help="repetitions of the throughput pair (default 2, quick 1)")
    ap.add_argument("--sections", default="throughput,memory,index",
                    help="comma-separated: throughput, memory, index (default all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks-top.md"))
    args = ap.parse_args(argv)
    quick = args.quick
    n_img = args.images or (64 if quick else 2000)
    reps = args.reps or (1 if quick else 2)
    mem_small, mem_big = (32, 128) if quick else (1000, 4000)
    index_images, index_channels = (2000, 64) if quick else (100_000, 512)

    import torch

    from cnnviz.layers import conv_layers
    from cnnviz.models import load_model

    lm = load_model(args.model, weights="none")
    lname = next(lay.name for lay in conv_layers(lm.model) if lay.name == args.layer)
    rows: list[tuple[str, str, str, str, str]] = []
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-top-") as tmp:
        if "throughput" in sections:
            rows += throughput(lm, lname, tmp, n_img=n_img, reps=reps, args=args)
        if "memory" in sections:
            rows += memory(args.model, lname, tmp, small=mem_small, big=mem_big, args=args)
        if "index" in sections:
            rows += index_query(tmp, images=index_images, channels=index_channels)

    md = [f"# `cnnviz top` benchmark ({'quick smoke run' if quick else 'full run'})", "",
          f"`python scripts/bench_top.py {' '.join(sys.argv[1:] if argv is None else argv)}` on {platform.machine()}, {os.cpu_count()} CPU cores "
          f"(shared), torch {torch.__version__}, {_dt.date.today().isoformat()}. Sections: {args.sections}; throughput: "
          f"medians of {reps} runs, the order alternating.", "",
          "| what | cnnviz | baseline | ratio | target |", "|---|---|---|---|---|"]
    md += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    md += ["", "Baseline of the scan rows: the floor, the same decode + preprocess in a DataLoader with the same workers and "
           "batch size, and torchvision's create_feature_extractor forward to the same layer, in a plain loop. "
           "Baseline of the memory row: the same scan over 4x fewer images.", ""]
    text = "\n".join(md)
    print(text)
    if not quick or args.out != ap.get_default("out"):  # a smoke run never overwrites the real results
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
