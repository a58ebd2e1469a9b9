#!/usr/bin/env python3
"""Benchmark of `cnnviz compare` against its floor, side by side in one run.

Every conv layer of model A against every conv layer of model B (default ResNet-18, 20 conv
layers, against ResNet-34, 36; random weights: timings do not depend on the weight values),
stage act, exact streaming linear CKA (--spatial mean). Three kinds of run, each in a fresh
subprocess whose peak RSS (ru_maxrss) and CPU time are recorded:

* bare: decoding + preprocessing (cnnviz's loader, each side with its own preprocessing, as
  compare does) and the two models' forward passes, nothing else: the floor;
* compare: cnnviz.jobs.compare.run_compare with the models preloaded (what the command runs);
* in-memory: the same images, every layer's spatially averaged features of every image kept in
  memory, then the same CKA from them (the exact answer needs at least these; torch_cka-style tools
  keep whole activations, whose size is computed, not run: see "full activations" below).

Part 1 (time): bare and compare over N images at --size (the issue: 1,000 at 224 px); the ratio
of their times (wall and CPU). Part 2 (memory): compare and in-memory over M and 4M images at
--mem-size px (peak RSS does not depend on the image count for compare; a smaller size makes the
constant part smaller, so growth is easier to see, not harder). The full-activation store is
computed from the layers' output shapes at --size.

    python scripts/bench_compare.py                                   # the issue's setting (~20 min on 1 core)
    python scripts/bench_compare.py --images 64 --mem-images 64 --size 64   # smoke run

The images are JPEGs (about 500x375) cut from the photographs scikit-image and matplotlib ship,
written to a temporary folder. Prints a markdown table (and the load average around each run).
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


def _cpus() -> int:
    """The CPUs this process may run on (os.cpu_count() counts the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _small_jpegs(folder: str, n: int, width: int) -> None:
    """``n`` smooth random colour fields of ``width`` x 3/4 ``width`` px as JPEGs (cheap to decode)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder)
    rng = np.random.default_rng(0)
    h = max(8, width * 3 // 4)
    yy, xx = np.mgrid[0:h, 0:width] / width
    for i in range(n):
        f = rng.uniform(2, 12, 3)
        a = np.stack([np.sin(f[c] * (xx * np.cos(c + i) + yy * np.sin(c + i)) + rng.uniform(0, 6)) for c in range(3)], -1)
        Image.fromarray(((a + 1) * 127.5).astype(np.uint8)).save(os.path.join(folder, f"s{i:05d}.jpg"), quality=90)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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

    torch.set_num_threads(_cpus())
    la, lb = load_spec(a), load_spec(b)
    paths = expand_images([folder])
    preps = [batch_preprocess(lm, size=str(size), crop=True, max_pixels=None) for lm in (la, lb)]
    base = _peak_mb()
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    if mode == "compare":
        req = CompareRequest(images=(folder,), picture=False, size=str(size), batch_size=batch, workers=workers,
                             quiet=True)
        with tempfile.TemporaryDirectory() as out:
            res = run_compare(req, output=Output(out), model=la, with_model=lb)
        shape = res.cka.shape
    else:
        feats: list[list] = [[], []]
        keep = mode == "inmemory"
        for side, (lm, prep) in enumerate(zip((la, lb), preps)):
            layers = conv_layers(lm.model)
            points = hook_points(lm.model, layers, "act")
            got: dict = {}
            cap = Capture(lm.model, points, on_output=lambda p, t: got.__setitem__(p, t.mean(dim=(2, 3)).numpy()),
                          stop_early=False) if keep else None
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
        if keep:
            cka = LinearCKA([f.shape[1] for f in feats[0]], [f.shape[1] for f in feats[1]])
            cka.update(feats[0], feats[1])
            shape = cka.matrix().shape
        else:
            shape = (0, 0)
    return {"mode": mode, "images": len(paths), "size": size, "seconds": time.perf_counter() - t0,
            "cpu": _cpu() - c0, "peak_mb": _peak_mb(), "before_mb": base, "matrix": list(shape),
            "load": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def _activation_bytes(a: str, b: str, size: int) -> tuple[int, int]:
    """Bytes per image of every conv layer's float32 output (stage act) of A and B at ``size`` px,
    what a store of whole activations keeps; and of their spatial means."""
    import torch

    from cnnviz.capture import Capture, hook_points
    from cnnviz.layers import conv_layers

    whole = means = 0
    for src in (a, b):
        lm = load_spec(src)
        points = hook_points(lm.model, conv_layers(lm.model), "act")
        shapes: dict = {}
        with Capture(lm.model, points, on_output=lambda p, t: shapes.__setitem__(p, tuple(t.shape)),
                     stop_early=False) as cap:
            cap.run(torch.zeros(1, 3, size, size))
        for p in points:
            s = shapes[p]
            whole += 4 * s[1] * s[2] * s[3]
            means += 4 * s[1]
    return whole, means


def load_spec(source: str):
    from cnnviz.sources import ModelSpec, load

    return load(ModelSpec(source=source, weights="none"))


def _run(mode: str, folder: str, size: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, folder, "--size", str(size), "--model", args.model,
           "--with", args.other, "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ROOT})
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"  {rec}", file=sys.stderr, flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="N, the time runs' image count")
    ap.add_argument("--size", type=int, default=224, help="the time runs' input size (px)")
    ap.add_argument("--mem-images", type=int, default=1000, help="M: the memory runs use M and 4M images")
    ap.add_argument("--mem-size", type=int, default=64, help="the memory runs' input size (px)")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--with", dest="other", default="resnet34")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="loader processes per model (0: decode in the process "
                                                           "itself, so its RSS is the whole cost)")
    ap.add_argument("--only", choices=["time", "memory"], default=None, help="run one part only")
    ap.add_argument("--mem-photo", type=int, default=0,
                    help="the memory runs' photos: 0 = the time runs' (about 500x375 JPEGs); W = synthetic W x 3W/4 "
                         "JPEGs made here (decoding then costs little: memory does not depend on it)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.model, args.other, args.size, args.batch_size,
                                args.workers)))
        return
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        m, n4 = args.mem_images, 4 * args.mem_images
        big = os.path.join(tmp, "all")
        need = (args.images if args.only != "memory" else 0, n4 if args.only != "time" and not args.mem_photo else 0)
        _make_jpegs(big, max(need)) if max(need) else os.makedirs(big)
        files = sorted(os.listdir(big))

        def subset(k: int) -> str:
            folder = os.path.join(tmp, f"n{k}")
            if not os.path.isdir(folder):
                os.makedirs(folder)
                for f in files[:k]:
                    os.symlink(os.path.join(big, f), os.path.join(folder, f))
            return folder

        if args.mem_photo:
            small = os.path.join(tmp, "small")
            _small_jpegs(small, n4, args.mem_photo)
            names = sorted(os.listdir(small))
            for k in (m, n4):
                folder = os.path.join(tmp, f"small{k}")
                os.makedirs(folder)
                for f in names[:k]:
                    os.symlink(os.path.join(small, f), os.path.join(folder, f))
        mem_folder = (lambda k: os.path.join(tmp, f"small{k}")) if args.mem_photo else subset
        timing = [] if args.only == "memory" else [_run(mode, subset(args.images), args.size, args)
                                                   for mode in ("bare", "compare")]
        memory = [] if args.only == "time" else [_run(mode, mem_folder(k), args.mem_size, args) for k in (m, n4)
                                                 for mode in ("compare", "inmemory")]
    whole, means = _activation_bytes(args.model, args.other, args.size)
    minutes = (time.time() - t_start) / 60
    print(f"{args.model} vs {args.other}, every conv layer (stage act), exact linear CKA (--spatial mean), batch "
          f"{args.batch_size}, {args.workers} loader worker(s), {_cpus()} CPU(s) usable of {os.cpu_count()}, torch threads = usable CPUs; "
          f"{minutes:.0f} min in all\n")
    print("Time:\n")
    print("| images | px | run | wall s | CPU s | x bare (wall) | x bare (CPU) | peak RSS MB | load avg before/after |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|")
    bare = timing[0] if timing else None
    for r in timing:
        print(f"| {r['images']} | {r['size']} | {r['mode']} | {r['seconds']:.1f} | {r['cpu']:.1f} | "
              f"{r['seconds'] / bare['seconds']:.2f} | {r['cpu'] / bare['cpu']:.2f} | {r['peak_mb']:.0f} | "
              f"{r['load'][0]} / {r['load'][1]} |")
    print("\nMemory" + (f" (synthetic {args.mem_photo} px JPEGs)" if args.mem_photo else "") + ":\n")
    print("| images | px | run | peak RSS MB | after loading the models MB | x the run at M images | wall s |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    first = {r["mode"]: r["peak_mb"] for r in memory if r["images"] == m}
    for r in memory:
        print(f"| {r['images']} | {r['size']} | {r['mode']} | {r['peak_mb']:.0f} | {r['before_mb']:.0f} | "
              f"{r['peak_mb'] / first[r['mode']]:.3f} | {r['seconds']:.1f} |")
    print(f"\nFull activations (every conv layer's act output, float32, {args.size} px): {whole / 2**20:.1f} MB per "
          f"image: {whole * m / 2**30:.1f} GB for {m} images, {whole * n4 / 2**30:.1f} GB for {n4} (computed from "
          f"the output shapes; not run). Their spatial means: {means / 1024:.1f} KB per image.")


if __name__ == "__main__":
    main()
