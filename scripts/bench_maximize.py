"""Benchmark `cnnviz.optimize.maximize` against Lucent (torch-lucent 0.1.8) on a trained VGG16.

Same model, layer, channels, image size (128, seen at 224), learning rate and step count. Reports

* quality: the objective each method's final image reaches, scored the same way for both
  (cnnviz.optimize.evaluate: no random transform, upscaled to 224, forward pass in float32), on the
  conv output and on the post-ReLU activation (Lucent's hook on VGG's conv sees the tensor its
  in-place ReLU overwrites, so Lucent optimises relu(conv): we run stage 'act' for the same target);
* speed: seconds per channel, Lucent one channel at a time vs cnnviz with 16 channels in one batch.

Ratios come from one run on a shared CPU; the load average is printed with them.

Benchmark-only dependency, never the package's (it must not change torch/torchvision)::

    pip install --no-deps torch-lucent==0.1.8 kornia kornia-rs
    TORCH_HOME=/work/realcache python scripts/bench_maximize.py --steps 32

Lucent 0.1.8 calls kornia.get_rotation_matrix2d / kornia.warp_affine, which moved to
kornia.geometry.transform; they are aliased below before Lucent is imported.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch


def lucent_render(model, layer: str, channel: int, *, steps: int, lr: float, size: int, seed: int) -> np.ndarray:
    import kornia
    import kornia.geometry.transform as kt

    kornia.get_rotation_matrix2d = kt.get_rotation_matrix2d  # moved in kornia >= 0.6
    kornia.warp_affine = kt.warp_affine
    from lucent.optvis import param, render

    np.random.seed(seed)
    torch.manual_seed(seed)
    images = render.render_vis(
        model, f"{layer.replace('.', '_')}:{channel}",
        param_f=lambda: param.image(size),
        optimizer=lambda p: torch.optim.Adam(p, lr=lr),
        thresholds=(steps,), show_image=False, progress=False,
    )
    return images[-1][0]  # (H, W, 3) float32 in [0, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="features.17", help="VGG16 module name (features.17 = block4_conv1)")
    ap.add_argument("--channels", type=int, default=16, help="channels cnnviz optimises in one batch")
    ap.add_argument("--lucent-channels", type=int, default=3, help="channels Lucent renders, one at a time")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], help="cnnviz precisions to run")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    from cnnviz.layers import conv_layers
    from cnnviz.models import load_model
    from cnnviz.optimize import evaluate, maximize

    lm = load_model("vgg16")  # TORCH_HOME must hold trained weights
    model = lm.model
    layer = next(l for l in conv_layers(model) if l.name == args.layer)
    chans = list(range(args.channels))
    luc_chans = chans[: args.lucent_channels]
    print(f"# vgg16 {layer.alias} ({layer.name}), {args.steps} steps, lr {args.lr}, size {args.size}; "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", file=sys.stderr)

    def score(images: np.ndarray, targets: list[int]) -> dict[str, list[float]]:
        return {st: evaluate(model, images, targets=targets, layer=layer, stage=st).round(4).tolist() for st in ("act", "conv")}

    results: dict[str, object] = {"layer": layer.name, "alias": layer.alias, "steps": args.steps, "lr": args.lr,
                                  "size": args.size, "lucent_channels": luc_chans, "cnnviz_channels": len(chans)}

    # Lucent: a private copy (it hooks every module and never removes the hooks)
    luc_model = copy.deepcopy(model)
    luc_imgs, t0 = [], time.perf_counter()
    for c in luc_chans:
        luc_imgs.append(lucent_render(luc_model, layer.name, c, steps=args.steps, lr=args.lr, size=args.size, seed=c))
        print(f"lucent channel {c}: {time.perf_counter() - t0:.1f}s cumulative", file=sys.stderr)
    luc_time = (time.perf_counter() - t0) / len(luc_chans)
    luc_imgs = np.stack(luc_imgs)
    results["lucent"] = {"s_per_channel": round(luc_time, 2), "objective": score(luc_imgs, luc_chans)}
    print(f"lucent: {luc_time:.2f} s/channel", file=sys.stderr)

    for prec in args.precision:
        t0 = time.perf_counter()
        res = maximize(model, targets=chans, layer=layer, stage="act", steps=args.steps, lr=args.lr,
                       size=args.size, seed=0, batch_size=len(chans), precision=prec)
        ours_time = (time.perf_counter() - t0) / len(chans)
        ours = score(res.images[: len(luc_chans)], luc_chans)
        results[f"cnnviz_{prec}"] = {"s_per_channel": round(ours_time, 2), "objective": ours,
                                     "objective_all16_act_mean": round(float(res.values.mean()), 4)}
        luc = results["lucent"]["objective"]  # type: ignore[index]
        # the post-ReLU objective is >= 0, so a ratio means something; the conv output can be
        # negative, so report the difference of means for it
        ratio = round(float(np.mean(ours["act"]) / np.mean(luc["act"])), 2) if np.mean(luc["act"]) > 0 else None
        diff = round(float(np.mean(ours["conv"]) - np.mean(luc["conv"])), 3)
        results[f"ratio_{prec}"] = {"objective_act_ours_over_lucent": ratio, "objective_conv_ours_minus_lucent": diff,
                                    "lucent_time_over_ours_per_channel": round(luc_time / ours_time, 2)}
        print(f"cnnviz {prec}: {ours_time:.2f} s/channel", file=sys.stderr)
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
