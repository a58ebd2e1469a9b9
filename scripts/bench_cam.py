"""cnnviz cam vs pytorch-grad-cam 1.5, side by side in one run: per-image time, peak memory, equality.

    pip install 'grad-cam==1.5.*'
    python scripts/bench_cam.py                      # ResNet-50 at 224, random weights (seeded)
    python scripts/bench_cam.py --methods gradcam,gradcam++ --batches 1,16 --repeat 3

Every measurement runs in a fresh subprocess (same model weights, same images, same targets), so
peak memory (ru_maxrss growth over the loaded model) is each tool's own. The targets are each
image's top-1 class; both tools get the same layer (ResNet-50 'layer4'). Reported: seconds per
image (best of --repeat), the ratio pytorch-grad-cam / cnnviz (> 1: cnnviz faster), peak extra
memory, and the max abs difference of the two [0, 1] maps. Score-CAM and Ablation-CAM make one
forward per channel (2,048 at layer4), so they run on --perturb-images images only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _setup(model_name: str, n: int, size: int):  # type: ignore[no-untyped-def]
    import torch
    import torchvision

    torch.manual_seed(0)
    # Parameters keep requires_grad: pytorch-grad-cam needs it (cnnviz works either way).
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()
    return model, x, targets


def one(tool: str, method: str, batch: int, n: int, size: int, model_name: str, repeat: int, out: str) -> None:
    """Run one measurement in this process and write the map to ``out`` (.npy) and a JSON line to stdout."""
    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(HERE))
    model, x, targets = _setup(model_name, n, size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        maps = []
        for s in range(0, n, batch):
            xb, tb = x[s:s + batch], targets[s:s + batch]
            if tool == "cnnviz":
                from cnnviz import cam

                layer = cam.CamLayer("layer4", cam.HookPoint("layer4", 0)) if model_name.startswith("resnet") else None
                maps.append(cam.explain(model, xb, tb, method=method, layers=[layer] if layer else None, batch_size=64).norm)
            else:
                import pytorch_grad_cam as pgc
                from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

                cls = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
                       "ablationcam": pgc.AblationCAM}[method]
                layer_mod = model.layer4 if model_name.startswith("resnet") else model.features[29]
                with cls(model=model, target_layers=[layer_mod]) as c:
                    if method == "scorecam":
                        c.batch_size = 64
                    if method == "ablationcam":
                        c.batch_size = 64
                    maps.append(c(input_tensor=xb, targets=[ClassifierOutputTarget(t) for t in tb]))
        best = min(best, time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, np.concatenate(maps))
    print(json.dumps({"seconds_per_image": best / n, "peak_extra_mb": (peak - base) / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--methods", default="gradcam,gradcam++,scorecam,ablationcam")
    ap.add_argument("--batches", default="1,16", help="images per call")
    ap.add_argument("--images", type=int, default=16, help="images for the gradient methods")
    ap.add_argument("--perturb-images", type=int, default=1, help="images for scorecam/ablationcam")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--one", nargs=3, metavar=("TOOL", "METHOD", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        tool, method, batch = args.one
        one(tool, method, int(batch), args.n, args.size, args.model, args.repeat, args.out)
        return
    import tempfile

    import numpy as np

    rows = []
    print(f"# cam benchmark: {args.model} at {args.size}, random weights, top-1 targets, {os.cpu_count()} CPU(s), "
          f"torch threads default; best of {args.repeat}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            perturb = method in ("scorecam", "ablationcam")
            n = args.perturb_images if perturb else args.images
            for batch in (int(b) for b in args.batches.split(",")):
                b = min(batch, n)
                if perturb and batch > n:
                    continue
                res = {}
                for tool in ("pytorch-grad-cam", "cnnviz"):
                    out = os.path.join(tmp, f"{tool}.npy")
                    cmd = [sys.executable, __file__, "--one", tool, method, str(b), "--n", str(n), "--size", str(args.size),
                           "--model", args.model, "--repeat", str(1 if perturb else args.repeat), "--out", out]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode:
                        sys.exit(f"{tool} {method} failed:\n{r.stderr[-2000:]}")
                    res[tool] = json.loads(r.stdout.strip().splitlines()[-1])
                    res[tool]["map"] = np.load(out)
                diff = float(np.abs(res["cnnviz"]["map"] - res["pytorch-grad-cam"]["map"]).max())
                ref, me = res["pytorch-grad-cam"], res["cnnviz"]
                row = (method, b, n, ref["seconds_per_image"], me["seconds_per_image"],
                       ref["seconds_per_image"] / me["seconds_per_image"], ref["peak_extra_mb"], me["peak_extra_mb"], diff)
                rows.append(row)
                print(f"{method:<12} batch {b:>2} ({n} img): pytorch-grad-cam {row[3]:.3f}s/img, cnnviz {row[4]:.3f}s/img, "
                      f"ratio {row[5]:.2f}x, peak +{row[6]:.0f}/+{row[7]:.0f} MB, max|diff| {diff:.1e}", file=sys.stderr, flush=True)
    print("| method | batch | images | pytorch-grad-cam s/img | cnnviz s/img | speed-up | peak MB (pgc / cnnviz) | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m, b, n, a, c, r, pa, pc, d in rows:
        print(f"| {m} | {b} | {n} | {a:.3f} | {c:.3f} | {r:.2f}x | {pa:.0f} / {pc:.0f} | {d:.1e} |")


if __name__ == "__main__":
    main()
