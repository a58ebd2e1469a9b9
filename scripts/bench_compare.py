#!/usr/bin/env python3
"""Benchmark of `cnnviz compare` against its floor, side by side in one run.

For every conv layer of model A against every conv layer of model B (default ResNet-18 against
ResNet-34, random weights: timings do not depend on the weight values), over N and 4N images:

* bare: decoding + preprocessing (cnnviz's loader, the same workers and batch size) and the two
  models' forward passes, nothing else: the floor;
* compare: cnnviz.jobs.compare.run_compare with the models preloaded (exact streaming linear CKA);
* in-memory: the same images, every layer's spatially averaged features of every image kept in
  memory (as torch_cka keeps activations), then the same CKA from them.

Each run is a fresh process; its peak RSS is reported (memory of compare should not grow with N;
the in-memory reference's does). Writes nothing; prints a markdown table.

    python scripts/bench_compare.py                          # 200 and 800 images at 64 px
    python scripts/bench_compare.py --images 1000 --size 224 # the issue's setting (long on 2 cores)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _make_jpegs(folder: str, n: int) -> None:
    spec = importlib.util.spec_from_file_location("bench_top", os.path.join(ROOT, "scripts", "bench_top.py"))
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    mod.make_jpegs(folder, n)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, folder: str, a: str, b: str, size: int, batch: int, workers: int) -> dict:
    import numpy as np
    import torch

    from cnnviz.capture import Capture, hook_points
    from cnnviz.compare import LinearCKA
    from cnnviz.jobs.compare import CompareRequest, run_compare
    from cnnviz.jobs.output import Output
    from cnnviz.jobs.top import batch_preprocess
    from cnnviz.layers import conv_layers
    from cnnviz.scan import expand_images, load_batches

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    la, lb = load_spec(a), load_spec(b)
    paths = expand_images([folder])
    preps = [batch_preprocess(lm, size=str(size), crop=True, max_pixels=None) for lm in (la, lb)]
    base = _peak_mb()
    t0 = time.perf_counter()
    if mode == "compare":
        req = CompareRequest(images=(folder,), picture=False, size=str(size), batch_size=batch, workers=workers)
        with tempfile.TemporaryDirectory() as out:
            res = run_compare(req, output=Output(out), model=la, with_model=lb)
        shape = res.cka.shape
    else:
        feats: list[list[list]] = [[], []]
        for side, (lm, prep) in enumerate(zip((la, lb), preps)):
            layers = conv_layers(lm.model)
            points = hook_points(lm.model, layers, "act")
            got: dict = {}
            cap = Capture(lm.model, points, on_output=lambda p, t: got.__setitem__(p, t.mean(dim=(2, 3)).numpy()),
                          stop_early=False) if mode == "inmemory" else None
            per_layer: list[list] = [[] for _ in layers]
            if cap:
                cap.__enter__()
            try:
                for step in load_batches(paths, prep, batch_size=batch, workers=workers):
                    for bt in step.batches:
                        if cap:
                            cap.run(bt.x)
                            for i, p in enumerate(points):
                                per_layer[i].append(got[p])
                        else:
                            with torch.inference_mode():
                                lm.model(bt.x)
            finally:
                if cap:
                    cap.__exit__(None, None, None)
            feats[side] = [np.concatenate(f) for f in per_layer] if cap else []
        if mode == "inmemory":
            cka = LinearCKA([f.shape[1] for f in feats[0]], [f.shape[1] for f in feats[1]])
            cka.update(feats[0], feats[1])
            shape = cka.matrix().shape
        else:
            shape = (0, 0)
    return {"mode": mode, "images": len(paths), "seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(),
            "before_mb": base, "matrix": list(shape)}


def load_spec(source: str):
    from cnnviz.sources import ModelSpec, load

    return load(ModelSpec(source=source, weights="none"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="N (the second run uses 4N)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--with", dest="other", default="resnet34")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.model, args.other, args.size, args.batch_size,
                                args.workers)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        for n in (args.images, 4 * args.images):
            folder = os.path.join(tmp, f"n{n}")
            os.makedirs(folder)
            _make_jpegs(folder, n)
            for mode in ("bare", "compare", "inmemory"):
                cmd = [sys.executable, __file__, "--child", mode, folder, "--size", str(args.size), "--model",
                       args.model, "--with", args.other, "--batch-size", str(args.batch_size), "--workers",
                       str(args.workers)]
                r = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                   env={**os.environ, "PYTHONPATH": ROOT})
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(f"  {rows[-1]}", file=sys.stderr)
    print(f"{args.model} vs {args.other}, all conv layers, stage act, {args.size} px, batch {args.batch_size}, "
          f"{args.workers} loader worker(s) per model, {os.cpu_count()} CPU(s)\n")
    print("| images | mode | seconds | x bare | peak RSS MB | after loading MB |")
    print("|---|---|---|---|---|---|")
    bare = {r["images"]: r["seconds"] for r in rows if r["mode"] == "bare"}
    for r in rows:
        print(f"| {r['images']} | {r['mode']} | {r['seconds']:.1f} | {r['seconds'] / bare[r['images']]:.2f} | "
              f"{r['peak_mb']:.0f} | {r['before_mb']:.0f} |")


if __name__ == "__main__":
    main()
