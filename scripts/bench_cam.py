"""cnnviz cam vs pytorch-grad-cam 1.5, side by side in one run: time per image, peak memory, equality.

    pip install 'grad-cam==1.5.*'
    python scripts/bench_cam.py                      # ResNet-50 at 224, random weights (seeded)
    python scripts/bench_cam.py --methods gradcam,gradcam++ --batches 1,16 --repeat 3
    # the issue-19 setup: trained SqueezeNet 1.1, features.12 (512 channels), one photo at 224x448,
    # 16 masked images per pass, 5 interleaved rounds, one thread each
    TORCH_HOME=DIR python scripts/bench_cam.py --model squeezenet1_1 --weights DEFAULT --layer features.12 \\
        --size 224x448 --image sample --methods scorecam,ablationcam --perturb-images 1 --mask-batch 16 --repeat 5

Every measurement runs in a fresh subprocess (same model weights, same images, same targets, the
same --threads), so peak memory (ru_maxrss growth over the loaded model) is each tool's own. The
rounds interleave the two tools (ABBA order) so a machine shared with other work slows both
alike; the table gives the median over the rounds of the wall-clock seconds and of the process
CPU seconds (user + system) per image, and the speed-up as the median of the per-round ratios
pytorch-grad-cam / cnnviz (> 1: cnnviz faster). The targets are each image's top --classes
classes; both tools get the same layer (default: cnnviz's default layer, e.g. ResNet-50
'layer4'). With --classes K > 1 pytorch-grad-cam gets each image K times with one target each,
as its API takes one target per input. Score-CAM and Ablation-CAM make one forward per channel,
so they run on --perturb-images images only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PERTURB = ("scorecam", "ablationcam")


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def _setup(args: argparse.Namespace, n: int):  # type: ignore[no-untyped-def]
    import torch
    import torchvision

    sys.path.insert(0, os.path.dirname(HERE))
    from cnnviz import cam

    torch.manual_seed(0)
    weights = None if args.weights.lower() == "none" else args.weights
    # Parameters keep requires_grad: pytorch-grad-cam needs it (cnnviz works either way).
    model = getattr(torchvision.models, args.model)(weights=weights).eval()
    size = _size(args.size)
    if args.image == "sample":
        from cnnviz.io import load_image, preprocess, sample_image_path

        x1, _ = preprocess(load_image(sample_image_path()), size=size, crop=False)
        x = torch.from_numpy(x1)[None].repeat(n, 1, 1, 1)
    else:
        x = torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).topk(args.classes, dim=1).indices.tolist()
    layer = cam.default_layer(model) if not args.layer else cam.CamLayer(args.layer, cam.HookPoint(args.layer, 0))
    return model, x, targets, layer


def one(tool: str, method: str, batch: int, n: int, args: argparse.Namespace) -> None:
    """Run one measurement in this process; write the maps to ``args.out`` (.npy) and a JSON line to stdout."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    model, x, targets, layer = _setup(args, n)
    if tool == "cnnviz":
        from cnnviz import cam
    else:  # imported before the clock starts (it pulls in cv2, ttach, ...)
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maps = []
    c0, t0 = os.times(), time.perf_counter()
    for s in range(0, n, batch):
        # every image once per target class: (image, class) pairs
        xb = torch.cat([x[i:i + 1].repeat(len(targets[i]), 1, 1, 1) for i in range(s, min(n, s + batch))])
        tb = [t for i in range(s, min(n, s + batch)) for t in targets[i]]
        if tool == "cnnviz":
            maps.append(cam.explain(model, xb, tb, method=method, layers=[layer], batch_size=args.mask_batch).norm)
        else:
            cls = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
                   "ablationcam": pgc.AblationCAM}[method]
            with cls(model=model, target_layers=[dict(model.named_modules())[layer.point.module]]) as c:
                c.batch_size = args.mask_batch
                maps.append(c(input_tensor=xb, targets=[ClassifierOutputTarget(t) for t in tb]))
    wall, c1 = time.perf_counter() - t0, os.times()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(args.out, np.concatenate(maps))
    print(json.dumps({"wall": wall / n, "cpu": (c1.user - c0.user + c1.system - c0.system) / n,
                      "sys": (c1.system - c0.system) / n, "peak_extra_mb": (peak - base) / 1024}))


def _run(tool: str, method: str, b: int, n: int, args: argparse.Namespace, out: str) -> dict:
    cmd = [sys.executable, __file__, "--one", tool, method, str(b), "--n", str(n), "--out", out]
    for k in ("model", "weights", "layer", "size", "image", "classes", "mask_batch", "threads"):
        v = getattr(args, k)
        if v not in (None, ""):
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{tool} {method} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--weights", default="none", help="torchvision weights: none (random, seeded) or DEFAULT (trained)")
    ap.add_argument("--layer", default="", help="module name (default: cnnviz's default layer)")
    ap.add_argument("--size", default="224", help="S or HxW")
    ap.add_argument("--image", choices=("random", "sample"), default="random", help="random noise or the sample photo")
    ap.add_argument("--classes", type=int, default=1, help="explain each image's top K classes")
    ap.add_argument("--methods", default="gradcam,gradcam++,scorecam,ablationcam")
    ap.add_argument("--batches", default="1,16", help="images per call")
    ap.add_argument("--images", type=int, default=16, help="images for the gradient methods")
    ap.add_argument("--perturb-images", type=int, default=1, help="images for scorecam/ablationcam")
    ap.add_argument("--mask-batch", type=int, default=64, help="masked/ablated inputs per forward pass (both tools)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each measurement (both tools)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds per row")
    ap.add_argument("--one", nargs=3, metavar=("TOOL", "METHOD", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        tool, method, batch = args.one
        one(tool, method, int(batch), args.n, args)
        return
    import tempfile

    import numpy as np

    rows = []
    print(f"# cam benchmark: {args.model} ({args.weights} weights) at {args.size}, {args.image} image(s), top-{args.classes} "
          f"targets, {args.mask_batch} masked inputs per pass, {args.threads} thread(s), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}; {args.repeat} interleaved rounds", file=sys.stderr)
    tools = ("pytorch-grad-cam", "cnnviz")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            perturb = method in PERTURB
            n = args.perturb_images if perturb else args.images
            for b in sorted({min(int(b), n) for b in args.batches.split(",")}):
                runs: dict[str, list[dict]] = {t: [] for t in tools}
                maps = {}
                for r in range(args.repeat):
                    for tool in (tools if r % 2 == 0 else tools[::-1]):  # ABBA: drift hits both alike
                        out = os.path.join(tmp, f"{tool}.npy")
                        runs[tool].append(_run(tool, method, b, n, args, out))
                        maps[tool] = np.load(out)
                        m = runs[tool][-1]
                        print(f"  {method} batch {b} round {r + 1}: {tool} {m['wall']:.2f}s wall, {m['cpu']:.2f}s cpu "
                              f"({m['sys']:.2f}s system)/img", file=sys.stderr, flush=True)
                diff = float(np.abs(maps["cnnviz"] - maps["pytorch-grad-cam"]).max())
                med = {t: {k: statistics.median(m[k] for m in runs[t]) for k in ("wall", "cpu", "sys", "peak_extra_mb")}
                       for t in tools}
                ratio = statistics.median(a["wall"] / c["wall"] for a, c in zip(runs[tools[0]], runs["cnnviz"]))
                ratio_cpu = statistics.median(a["cpu"] / c["cpu"] for a, c in zip(runs[tools[0]], runs["cnnviz"]))
                row = (method, b, n, med[tools[0]], med["cnnviz"], ratio, ratio_cpu, diff)
                rows.append(row)
                print(f"{method:<12} batch {b:>2} ({n} img): pytorch-grad-cam {row[3]['wall']:.3f}s/img, "
                      f"cnnviz {row[4]['wall']:.3f}s/img, ratio {ratio:.2f}x wall, {ratio_cpu:.2f}x cpu, "
                      f"max|diff| {diff:.1e}", file=sys.stderr, flush=True)
    print(f"| method | images x classes | pytorch-grad-cam s/img wall (cpu) | cnnviz s/img wall (cpu) | speed-up wall "
          f"| speed-up cpu | peak MB (pgc / cnnviz) | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m, b, n, a, c, r, rc, d in rows:
        print(f"| {m} | {n} x {args.classes} (batch {b}) | {a['wall']:.3f} ({a['cpu']:.3f}) | {c['wall']:.3f} ({c['cpu']:.3f}) "
              f"| {r:.2f}x | {rc:.2f}x | {a['peak_extra_mb']:.0f} / {c['peak_extra_mb']:.0f} | {d:.1e} |")


if __name__ == "__main__":
    main()
