"""Faithfulness of every `cnnviz cam` method on a set of images: a methods x metrics table.

    python scripts/top_photos.py photos/            # the real photos scikit-image and matplotlib ship
    TORCH_HOME=/work/realcache python scripts/cam_metrics.py photos/astronaut.png photos/chelsea.png ... \\
        -m vgg16 --layer features.27 --out docs/cam-metrics.md

For each image, the target is the model's top-1 class; each method's map (at --layer for the CAM
family) is scored with deletion and insertion AUC (Petsiuk et al. 2018; --steps steps, class
probability) and the average drop / increase in confidence (Chattopadhay et al. 2018), and a
random map (uniform noise, seeded) is scored alongside as the floor. Lower deletion and higher
insertion AUC, lower drop and higher increase are better. Writes a Markdown table (means over the
images) to --out and prints it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnviz import cam, faithfulness as fa  # noqa: E402
from cnnviz.io import load_image, preprocess  # noqa: E402
from cnnviz.models import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("-m", "--model", default="vgg16")
    ap.add_argument("-w", "--weights", default="DEFAULT")
    ap.add_argument("--layer", default=None, help="CAM layer (default: cnnviz's default layer)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=32, help="deletion/insertion steps")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--ig-steps", type=int, default=32)
    ap.add_argument("--out", default="docs/cam-metrics.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    lm = load_model(args.model, weights=args.weights)
    net = lm.model
    layers = cam.resolve_layers(net, [args.layer] if args.layer else None)
    methods = cam.resolve_methods(args.methods)
    rows: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in [*methods, "random map"]}
    rng = np.random.default_rng(0)
    for path in args.images:
        x, _ = preprocess(load_image(path), size=args.size, crop=True, mean=lm.mean, std=lm.std)
        xt = torch.from_numpy(x)[None]
        target = int(cam.predict(net, xt).argmax())
        for m in [*methods, "random map"]:
            if m == "random map":
                norm = rng.random(x.shape[1:]).astype(np.float32)
            else:
                norm = cam.explain(net, xt, [target], method=m, layers=layers, ig_steps=args.ig_steps).norm[0]
            dc = fa.causal_curve(net, xt[0], target, norm, mode="deletion", steps=args.steps)
            ic = fa.causal_curve(net, xt[0], target, norm, mode="insertion", steps=args.steps)
            drop, inc = fa.confidence_change(net, xt, [target], norm[None], mean=lm.mean, std=lm.std)
            # Relative AUCs: the curve over the intact image's probability, comparable across images
            # (and readable when a random classifier keeps every probability near 1/1000).
            row = (fa.auc(dc), fa.auc(ic), fa.auc(dc / dc[0]), fa.auc(ic / dc[0]), float(drop[0]), float(inc[0]))
            rows[m].append(row)
            print(f"{os.path.basename(path)} class {target} {m}: " + " ".join(f"{v:.5g}" for v in row), file=sys.stderr, flush=True)
    head = (f"Faithfulness of each method: {args.model} ({lm.weights}), layer "
            f"{', '.join(layer.name for layer in layers)}, {len(args.images)} images "
            f"({', '.join(os.path.basename(p) for p in args.images)}) at {args.size} px (centre crop), "
            f"top-1 class, {args.steps} deletion/insertion steps; means over the images. "
            f"`python scripts/cam_metrics.py` ({time.perf_counter() - t0:.0f} s).")
    lines = [head, "", "| method | deletion AUC (lower is better) | insertion AUC (higher) | deletion AUC / p(image) (lower) | "
             "insertion AUC / p(image) (higher) | average drop % (lower) | increase in confidence % (higher) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, vals in rows.items():
        a = np.asarray(vals)
        lines.append(f"| {m} | {a[:, 0].mean():.3e} | {a[:, 1].mean():.3e} | {a[:, 2].mean():.3f} | {a[:, 3].mean():.3f} | "
                     f"{100 * a[:, 4].mean():.1f} | {100 * a[:, 5].mean():.0f} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
