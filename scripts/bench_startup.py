#!/usr/bin/env python3
"""Time to first picture: cnnviz commands in fresh processes against ``import torch, torchvision``.

Each row runs the baseline and the command alternately in fresh Python processes (so both see the
same machine load), takes the median of the repetitions, and reports their ratio. Pretrained
weights come from a temporary $TORCH_HOME holding random-weight state dicts under torchvision's
own file names, so the hub-cache path is what gets measured (never the network).

    python scripts/bench_startup.py                 # 5 repetitions, writes its section of docs/benchmarks.md
    python scripts/bench_startup.py --reps 1 --no-write
    python scripts/bench_startup.py --before dd096b8    # also the revision before fast loading, same run

The section between the ``bench_startup`` markers in docs/benchmarks.md is replaced; the rest of
the file is left alone.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- bench_startup:begin -->", "<!-- bench_startup:end -->"


def cached_weights(torch_home: str, names: list[str]) -> None:
    """Random-weight state dicts saved where torchvision's weights API looks for them."""
    import torch
    from torchvision import models as tvm

    folder = os.path.join(torch_home, "hub", "checkpoints")
    os.makedirs(folder, exist_ok=True)
    for name in names:
        member = tvm.get_model_weights(name).DEFAULT
        path = os.path.join(folder, os.path.basename(member.url))
        if not os.path.exists(path):
            torch.save(tvm.get_model(name, weights=None).state_dict(), path)


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one fresh process."""
    before = os.times()
    t = time.perf_counter()
    # cwd: a neutral folder, so `python -m cnnviz` imports the checkout on PYTHONPATH
    r = subprocess.run(argv, env=env, cwd=env["TORCH_HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    after = os.times()
    if r.returncode != 0:
        raise SystemExit(f"bench_startup: {' '.join(argv)} failed:\n{r.stderr}")
    return took, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--only", default=None, help="run only rows whose label contains this text")
    ap.add_argument("--root", default=ROOT, help="the cnnviz checkout to measure (default: this one)")
    ap.add_argument("--before", default=None, metavar="REF",
                    help="also measure git revision REF of this repository in the same run (a 'before' column)")
    args = ap.parse_args(argv)

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        home = os.path.join(tmp, "torch")
        cached_weights(home, ["vgg16", "resnet50"])
        env = {**os.environ, "TORCH_HOME": home, "PYTHONPATH": args.root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "CNNVIZ_OFFLINE": "1", "MPLBACKEND": "Agg"}
        out = os.path.join(tmp, "out")
        img = os.path.join(tmp, "photo.jpg")
        from PIL import Image

        Image.new("RGB", (640, 427), (120, 90, 60)).save(img)
        env_before = None
        if args.before:
            old = os.path.join(tmp, "before")
            os.makedirs(old)
            archive = subprocess.run(["git", "-C", ROOT, "archive", args.before], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
            env_before = {**env, "PYTHONPATH": old + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cnnviz = [py, "-m", "cnnviz"]
        baseline = [py, "-c", "import torch, torchvision"]
        rows = [
            ("cnnviz maps IMG -m vgg16 -l 0 (cached weights)", [*cnnviz, "maps", img, "-m", "vgg16", "-l", "0", "-o", out], 1.3),
            ("cnnviz maps IMG -m resnet50 -l 0 (cached weights)", [*cnnviz, "maps", img, "-m", "resnet50", "-l", "0", "-o", out], 1.3),
            ("cnnviz filters -m resnet50 (cached weights)", [*cnnviz, "filters", "-m", "resnet50", "-o", out], 1.3),
            ("cnnviz models", [*cnnviz, "models"], 1.5),
            ("cnnviz layers -m resnet50", [*cnnviz, "layers", "-m", "resnet50"], None),
        ]
        if args.only:
            rows = [r for r in rows if args.only in r[0]]
        for _, cmd, _ in rows:  # warm the page cache and any on-disk caches once, untimed
            run_once(cmd, env)
        run_once(baseline, env)
        results = []
        for label, cmd, target in rows:
            base_t, ours_t, old_t = [], [], []
            for _ in range(args.reps):
                base_t.append(run_once(baseline, env))
                ours_t.append(run_once(cmd, env))
                if env_before is not None:
                    old_t.append(run_once(cmd, env_before))
            b, o = (statistics.median(t[0] for t in base_t), statistics.median(t[0] for t in ours_t))
            bc, oc = (statistics.median(t[1] for t in base_t), statistics.median(t[1] for t in ours_t))
            before = (statistics.median(t[0] for t in old_t), statistics.median(t[1] for t in old_t)) if old_t else None
            results.append((label, o, b, oc, bc, target, before))
            print(f"{label}: wall {o:.2f} s vs {b:.2f} s = {o / b:.2f}x; cpu {oc:.2f} s vs {bc:.2f} s = {oc / bc:.2f}x"
                  + (f"; before: wall {before[0] / b:.2f}x, cpu {before[1] / bc:.2f}x" if before else ""), file=sys.stderr)

    import torch

    lines = [
        BEGIN,
        "## Start-up: time to first picture",
        "",
        f"Produced by `python scripts/bench_startup.py` on {_dt.datetime.now():%Y-%m-%d %H:%M}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}, torch {torch.__version__}. Each command and "
        f"the baseline `python -c \"import torch, torchvision\"` run alternately in fresh processes, {args.reps} times; "
        "medians. Pretrained weights are random-weight state dicts in a temporary `$TORCH_HOME` under "
        "torchvision's file names (the hub-cache path, no network).",
        "",
        "The machine is shared, so wall times swing with other people's load; the CPU time (user + system) "
        "of each process is steadier and is reported beside it.",
        "",
        *([f"The *before* columns run the same commands on revision `{args.before}` in the same loop."] if args.before else []),
        "",
        "| command | cnnviz wall | baseline wall | wall ratio | cnnviz CPU | baseline CPU | CPU ratio | target | met (wall) | met (CPU) |"
        + (" before: wall ratio | before: CPU ratio |" if args.before else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.before else ""),
    ]
    for label, o, b, oc, bc, target, before in results:
        r = o / b
        met = "" if target is None else ("yes" if r <= target else "**no**")
        met_cpu = "" if target is None else ("yes" if oc / bc <= target else "**no**")
        lines.append(f"| `{label}` | {o:.2f} s | {b:.2f} s | {r:.2f}x | {oc:.2f} s | {bc:.2f} s | {oc / bc:.2f}x | "
                     f"{'' if target is None else f'<= {target}x'} | {met} | {met_cpu} |"
                     + (f" {before[0] / b:.2f}x | {before[1] / bc:.2f}x |" if before else ""))
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
        if BEGIN in text and END in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
