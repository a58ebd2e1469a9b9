"""cnnviz ablate vs the naive method, side by side in one run, on the same images and channels.

    TORCH_HOME=/work/realcache python scripts/bench_ablate.py --out docs/benchmarks-ablate.md
    python scripts/bench_ablate.py --quick --out /tmp/b.md          # the code path, tiny sizes

Naive: for every channel and every image batch, a full forward pass of the network with a
forward hook zeroing that channel of the layer's output (what one writes without cnnviz).
cnnviz: cnnviz.ablate.measure (the network up to the layer once per batch, the rest per
ablation, several ablated copies per tail batch, a linear first tail step updated instead of
recomputed). Both score the same thing: top-1 agreement, mean probability and logit of the
intact model's class, and the script checks they agree (max abs difference of the per-channel
drops).

Cases: SqueezeNet 1.1 'features.12' with its trained weights (TORCH_HOME must hold them;
offline) and ResNet-50 'layer4' with random weights (seed 0). Images: scikit-image's bundled
photographs (plus matplotlib's grace_hopper.jpg), each as several views (the whole photo, the
four corner crops and the centre at 3/4 size, each mirrored) until --images are reached.

The naive side costs a full forward per channel per image: on a small machine it runs on a
stated subset of channels (--naive-channels); cnnviz runs on the same subset (the ratio) and on
every channel (its real time). Wall time and CPU time (this process) are both reported: on a
shared machine CPU time is the fairer measure; the ratio uses wall time unless --cpu-ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SKIMAGE_PHOTOS = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
                  "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png",
                  "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
                  "clock_motion.png"]


def photos() -> list[str]:
    import matplotlib

    paths = []
    try:
        import skimage

        sk = os.path.join(os.path.dirname(skimage.__file__), "data")
        paths += [os.path.join(sk, n) for n in SKIMAGE_PHOTOS if os.path.exists(os.path.join(sk, n))]
    except ImportError:
        pass
    paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    return paths


def images(n: int, size: int):  # type: ignore[no-untyped-def]
    """(n, 3, size, size) float32: views of the photos, ImageNet-normalised (resize + centre crop)."""
    import numpy as np
    import torch
    from PIL import Image

    from cnnviz.io import load_image, preprocess

    views = []
    for p in photos():
        img = load_image(p)
        w, h = img.size
        cw, ch = int(w * 0.75), int(h * 0.75)
        boxes = [(0, 0, w, h), (0, 0, cw, ch), (w - cw, 0, w, ch), (0, h - ch, cw, h), (w - cw, h - ch, w, h),
                 ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)]
        for box in boxes:
            crop = img.crop(box)
            views.append(crop)
            views.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    # photo by photo first, so a small n still spans many photos
    order = [i * 12 + j for j in range(12) for i in range(len(views) // 12)]
    picked = [views[i] for i in order][:n]
    while len(picked) < n:
        picked += picked[: n - len(picked)]
    return torch.from_numpy(np.stack([preprocess(v, size=size, crop=True)[0] for v in picked]))


def naive(model, layer: str, x, channels, batch: int):  # type: ignore[no-untyped-def]
    """(intact (3,), per-channel (len(channels), 3)) of (agreement, mean prob, mean logit): a
    full forward per channel per batch, the channel zeroed by a hook."""
    import numpy as np
    import torch

    module = dict(model.named_modules())[layer]
    sums = np.zeros((1 + len(channels), 3))
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            xb = x[s:s + batch]
            out = model(xb).double()
            lab = out.argmax(1)
            rows = [out]
            for c in channels:
                h = module.register_forward_hook(lambda _m, _i, o, c=c: o.index_fill(1, torch.tensor([c]), 0))
                try:
                    rows.append(model(xb).double())
                finally:
                    h.remove()
            for i, o in enumerate(rows):
                idx = torch.arange(len(lab))
                sums[i] += [float((o.argmax(1) == lab).sum()), float(torch.softmax(o, 1)[idx, lab].sum()),
                            float(o[idx, lab].sum())]
    sums /= len(x)
    return sums[0], sums[1:]


def ours(model, layer: str, x, channels, batch: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    from cnnviz import ablate as ab
    from cnnviz.capture import HookPoint

    split = ab.LayerSplit(model, HookPoint(layer, 0))
    e = ab.measure(split, [(x[s:s + batch], torch.full((len(x[s:s + batch]),), -1)) for s in range(0, len(x), batch)],
                   [[c] for c in channels])
    table = np.stack([e.accuracy, e.probability, e.logit], 1)
    return table[0], table[1:], split


def timed(f, *a):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    out = f(*a)
    return out, time.perf_counter() - w0, time.process_time() - c0


def case(name: str, model, layer: str, x, *, naive_channels: int, total: int, batch: int) -> dict:  # type: ignore[no-untyped-def]
    import numpy as np

    # a random sample of channels (seed 0): the naive cost is linear in the channels, so its time on
    # all of them is extrapolated from the sample; cnnviz runs the same sample (the measured ratio)
    sub = sorted(int(c) for c in np.random.default_rng(0).choice(total, naive_channels, replace=False))
    load0 = os.getloadavg()[0]
    print(f"{name}: cnnviz on {len(sub)} channels x {len(x)} images ...", file=sys.stderr, flush=True)
    (o_int, o_sub, split), o_wall, o_cpu = timed(ours, model, layer, x, sub, batch)
    print(f"  {o_wall:.1f}s wall, {o_cpu:.1f}s CPU; naive on the same ...", file=sys.stderr, flush=True)
    (n_int, n_sub), n_wall, n_cpu = timed(naive, model, layer, x, sub, batch)
    print(f"  {n_wall:.1f}s wall, {n_cpu:.1f}s CPU; cnnviz on all {total} channels ...", file=sys.stderr, flush=True)
    (_, _, _), f_wall, f_cpu = timed(ours, model, layer, x, list(range(total)), batch)
    diff = float(np.abs(np.concatenate([o_int[None], o_sub]) - np.concatenate([n_int[None], n_sub])).max())
    print(f"  {f_wall:.1f}s wall, {f_cpu:.1f}s CPU; max diff {diff:.1e}", file=sys.stderr, flush=True)
    return {"load": (load0 + os.getloadavg()[0]) / 2, "name": name, "layer": layer, "images": len(x), "sub": len(sub), "total": total, "o_wall": o_wall, "o_cpu": o_cpu,
            "n_wall": n_wall, "n_cpu": n_cpu, "f_wall": f_wall, "f_cpu": f_cpu, "diff": diff,
            "path": "traced tail + linear shortcut" if split._linear else ("traced tail" if split.traced else "whole network")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--naive-channels", type=int, default=64, help="channels the naive side runs (SqueezeNet)")
    ap.add_argument("--naive-channels-resnet", type=int, default=8, help="channels the naive side runs (ResNet-50)")
    ap.add_argument("--resnet-images", type=int, default=None, help="images for ResNet-50 (the first N; default: --images)")
    ap.add_argument("--skip-resnet", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the code path only")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    import torch
    import torchvision

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n = 8 if args.quick else args.images
    rows = []
    x = images(n, 224)
    sq = torchvision.models.squeezenet1_1(weights=None if args.quick else "DEFAULT").eval()
    rows.append(case("SqueezeNet 1.1 (trained)", sq, "features.12", x, naive_channels=4 if args.quick else args.naive_channels,
                     total=512, batch=args.batch_size))
    if not args.skip_resnet:
        torch.manual_seed(0)
        rn = torchvision.models.resnet50(weights=None).eval()
        rows.append(case("ResNet-50 (random, seed 0)", rn, "layer4", x[: 4] if args.quick else x[: args.resnet_images or n],
                         naive_channels=2 if args.quick else args.naive_channels_resnet, total=2048, batch=args.batch_size))
    lines = ["# Benchmarks: cnnviz ablate vs the naive method", "",
             f"`{' '.join(['python', 'scripts/bench_ablate.py'] + sys.argv[1:])}` on {platform.machine()} "
             f"{platform.processor() or ''}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "Naive = a full forward per channel per batch of images, the channel zeroed by a forward hook. "
             "Both sides run in this one process on the same images (batch " f"{args.batch_size}) and the same channels; "
             "the ratio is naive / cnnviz on the naive side's channel subset (cnnviz's per-batch head pass is then "
             "shared by fewer channels than in a full run, so the ratio understates it). 'max diff' is the largest "
             "absolute difference between the two methods' scores (agreement, mean probability, mean logit).", "",
             "| model, layer | images | channels (naive side) | naive wall / CPU s | cnnviz wall / CPU s (same channels) "
             "| ratio wall / CPU | cnnviz, all channels: wall / CPU s | naive, all channels (extrapolated): wall / CPU s (ratio) "
             "| path | max diff | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        # the naive side runs sub + 1 forwards per batch (the intact one too): all channels = total + 1
        full_w = r["n_wall"] / (r["sub"] + 1) * (r["total"] + 1)
        full_c = r["n_cpu"] / (r["sub"] + 1) * (r["total"] + 1)
        lines.append(f"| {r['name']} {r['layer']} | {r['images']} | {r['sub']} of {r['total']} | {r['n_wall']:.1f} / {r['n_cpu']:.1f} "
                     f"| {r['o_wall']:.1f} / {r['o_cpu']:.1f} | {r['n_wall'] / r['o_wall']:.1f}x / {r['n_cpu'] / r['o_cpu']:.1f}x "
                     f"| {r['f_wall']:.1f} / {r['f_cpu']:.1f} | ~{full_w:.0f} / ~{full_c:.0f} s "
                     f"({full_w / r['f_wall']:.0f}x / {full_c / r['f_cpu']:.0f}x) | {r['path']} | {r['diff']:.1e} | {r['load']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
