#!/usr/bin/env python3
"""Side-by-side benchmark of cnnviz against the tutorial way and against the hardware floor.

Every figure is the median of several repetitions, measured in this one run, and reported with
its baseline as a ratio. Writes a Markdown table (default docs/benchmarks.md) and prints it.

    python scripts/bench.py            # full run, a few minutes on 2 cores
    python scripts/bench.py --quick    # smoke run on small nets and sizes (used by the tests)

Models use random weights (--weights none): timings do not depend on the weight values.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")


def median_time(fn: Callable[[], Any], reps: int, *, setup: Callable[[], Any] | None = None) -> float:
    """Median wall time of ``fn()`` over ``reps`` runs (``setup()`` untimed before each)."""
    times = []
    for _ in range(reps):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def maps_job(lm: Any, out_dir: str, layers: str, *images: str, sample: bool = True, size: int, batch_size: int = 8) -> None:
    """The `cnnviz maps` job itself on an already loaded model: everything after model load."""
    from cnnviz.jobs import ImageInputs, Output
    from cnnviz.jobs.maps import MapsRequest, run_maps
    from cnnviz.sources import ModelSpec

    inputs = ImageInputs(images=images, sample=sample, size=size, crop=True)
    request = MapsRequest(inputs=inputs, layers=(layers,), model=ModelSpec(source=lm.name, weights=lm.weights),
                          batch_size=batch_size)
    run_maps(request, output=Output(out_dir), model=lm)


def cam_job(lm: Any, out_dir: str, image: str, *, box: int, layers: tuple[str, ...] = ()) -> None:
    """The `cnnviz cam IMAGE --box K` job itself on an already loaded detector."""
    from cnnviz.jobs import ImageInputs, Output
    from cnnviz.jobs.cam import CamRequest, run_cam
    from cnnviz.sources import ModelSpec

    request = CamRequest(inputs=ImageInputs(images=(image,)), model=ModelSpec(source=lm.name, weights=lm.weights),
                         box=box, layers=layers)
    run_cam(request, output=Output(out_dir), model=lm)


def detection_rows(table: "Table", *, reps: int, quick: bool, tmp: str, out_dir: str) -> str:
    """Rows for a detector (issue 20): maps of a backbone layer against torchvision's transform +
    backbone up to that layer, and a Grad-CAM of one box against one full forward of the
    unmodified model, on the same photo. Returns the line saying what was measured."""
    import copy

    import torch
    from PIL import Image

    from cnnviz.models import load_model

    name = "fasterrcnn_mobilenet_v3_large_fpn"
    lm = load_model(name, weights="none")
    with torch.no_grad():  # random weights detect nothing: 'person' favoured so boxes exist (costs are the same)
        lm.model.roi_heads.box_predictor.cls_score.bias[1] += 4.0
    side = 320 if quick else 800  # the model's own min_size (800), or a small one for the smoke run
    t = lm.model.transform.original
    t.min_size, t.max_size = (side,), max(side, round(side * 1333 / 800))
    lm.crop_size = lm.resize_size = side
    bare = copy.deepcopy(lm.model)
    bare.transform = t  # the unmodified torchvision model: its own transform inside forward
    from skimage import data

    path = os.path.join(tmp, "astronaut.png")
    Image.fromarray(data.astronaut()).save(path)
    img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    body = bare.backbone.body
    stage = 15
    layer = f"backbone.body.{stage}.block.3.0"

    def torchvision_to_layer() -> None:
        with torch.inference_mode():
            x = bare.transform([img])[0].tensors
            for k in range(stage):
                x = body[str(k)](x)
            block = body[str(stage)].block  # expand, depthwise, squeeze-excitation, then the projection conv
            block[3][0](block[2](block[1](block[0](x))))

    def torchvision_forward() -> None:
        with torch.inference_mode():
            bare([img])

    t_map, t_bare_map, t_cam, t_full = [], [], [], []
    for _ in range(reps):  # interleaved: the machine is shared, each pair sees the same load
        t_map.append(median_time(lambda: maps_job(lm, out_dir, layer, path, sample=False, size=side), 1,
                                 setup=lambda: clean(out_dir)))
        t_bare_map.append(median_time(torchvision_to_layer, 1))
        t_cam.append(median_time(lambda: cam_job(lm, out_dir, path, box=0), 1, setup=lambda: clean(out_dir)))
        t_full.append(median_time(torchvision_forward, 1))
    a, b = statistics.median(t_map), statistics.median(t_bare_map)
    table.add(f"{name}: maps of backbone layer {layer} at {side} px (astronaut 512x512 photo), end to end",
              ms(a), ms(b) + " (torchvision: model.transform + backbone up to that conv)", f"{a / b:.2f}x", "<= 1.3x",
              a / b <= 1.3)
    c, f = statistics.median(t_cam), statistics.median(t_full)
    table.add(f"{name}: cam --box 0 (Grad-CAM at backbone.fpn.layer_blocks.0) at {side} px, end to end",
              ms(c), ms(f) + " (one full torchvision forward, model([image]))", f"{c / f:.2f}x", "<= 2.5x", c / f <= 2.5)
    return (f"- *{name}*: random weights, box classifier's 'person' bias +4 so that boxes exist; the maps and cam jobs "
            f"given the loaded model (decode, the model's own resize, capture or forward + backward, picture, PNG write) "
            f"against the bare torchvision calls on the same photo, each pair interleaved {reps} times (medians).")


def filters_job(lm: Any, out_dir: str, layers: str) -> None:
    """The `cnnviz filters` job itself on an already loaded model."""
    from cnnviz.jobs import Output
    from cnnviz.jobs.filters import FiltersRequest, run_filters
    from cnnviz.sources import ModelSpec

    request = FiltersRequest(layers=(layers,), model=ModelSpec(source=lm.name, weights=lm.weights))
    run_filters(request, output=Output(out_dir), model=lm)


def clean(folder: str) -> None:
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))


def written_images(folder: str) -> list[tuple[np.ndarray, Any]]:
    """The PNGs in ``folder`` decoded to (pixels, palette): palette pictures stay (H, W) indices,
    so the floor encodes exactly these pixels the same way, from arrays ready to encode."""
    from PIL import Image

    out = []
    for n in sorted(os.listdir(folder)):
        if n.endswith(".png"):
            with Image.open(os.path.join(folder, n)) as im:
                pal = bytes(im.getpalette()) if im.mode == "P" else None
                out.append((np.ascontiguousarray(np.asarray(im)), pal))
    return out


def encode(image: tuple[np.ndarray, Any]) -> bytes:
    from cnnviz.io import _png_bytes

    return _png_bytes(image[0], None, 1, palette=image[1])


def sample_input(size: int) -> Any:
    import torch

    from cnnviz.io import load_image, preprocess, sample_image_path

    x, _ = preprocess(load_image(sample_image_path()), size=size, crop=True)
    return torch.from_numpy(x)[None]


def tutorial_figure(maps: np.ndarray, path: str) -> None:
    """The tutorials' way: one pyplot subplot + imshow per feature map, savefig per layer."""
    import matplotlib.pyplot as plt

    n = maps.shape[0]
    side = int(np.ceil(np.sqrt(n)))
    fig = plt.figure(figsize=(8, 8))
    for i in range(n):
        plt.subplot(side, side, i + 1)
        plt.imshow(maps[i], cmap="viridis")
        plt.axis("off")
    plt.savefig(path)
    plt.close(fig)


def cnnviz_figure(maps: np.ndarray, path: str) -> None:
    """cnnviz's renderer on the same maps: one grid array, one PNG encode."""
    from cnnviz.io import save_png
    from cnnviz.maps import render_grid

    pixels, palette = render_grid(maps).pixels()
    save_png(path, pixels, palette=palette)


def peak_rss_mb(argv: list[str]) -> float:
    """Peak resident memory (MB) of a fresh process running ``argv``."""
    code = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "assert r.returncode == 0, r.stderr\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024.0


def wall(argv: list[str], reps: int) -> float:
    def go() -> None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    return median_time(go, reps)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, what: str, ours: str, base: str, ratio: str, target: str, met: bool | None) -> None:
        verdict = "" if met is None else ("yes" if met else "**no**")
        self.rows.append((what, ours, base, ratio, target, verdict))
        print(f"  {what}: {ours} vs {base} -> {ratio} (target {target}) {verdict}", flush=True)

    def markdown(self) -> str:
        head = ("measure", "cnnviz", "baseline", "ratio", "target", "met")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small nets, small sizes, one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5, quick 1)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"))
    ap.add_argument("--detection", action="store_true",
                    help="only the detector rows, written to docs/benchmarks-detection.md (unless --out)")
    args = ap.parse_args(argv)
    if args.detection:
        return detection_main(args, ap)

    import torch

    from cnnviz.layers import conv_layers
    from cnnviz.models import load_model

    quick = args.quick
    reps = args.reps or (1 if quick else 5)
    resnet = "resnet18" if quick else "resnet50"
    vgg = "vgg11" if quick else "vgg16"
    size = 64 if quick else 224
    big = 128 if quick else 512
    huge = 128 if quick else 1024
    n_batch = 4 if quick else 64
    table = Table()
    tmp = tempfile.mkdtemp(prefix="cnnviz-bench-")
    out_dir = os.path.join(tmp, "out")
    os.makedirs(out_dir)
    print(f"cnnviz benchmark ({'quick' if quick else 'full'}), torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    lm = load_model(resnet, weights="none")
    layers = conv_layers(lm.model)
    x = sample_input(size)

    # ---------------------------------------------------------------- 1. render vs tutorial
    from cnnviz.capture import Capture, HookPoint, capture

    with torch.inference_mode():
        maps = {n: t[0, :64].numpy() for n, t in capture(lm.model, x, layers).items()}
    subset = [layers[i].name for i in np.linspace(0, len(layers) - 1, 2 if quick else 4).round().astype(int)]
    t_tut = median_time(lambda: [tutorial_figure(maps[n], os.path.join(tmp, "tut.png")) for n in subset], 1 if quick else 2)
    t_ours = median_time(lambda: [cnnviz_figure(maps[n], os.path.join(tmp, "ours.png")) for n in subset], reps)
    n_maps = sum(maps[n].shape[0] for n in subset)
    table.add(f"render per map ({resnet} layers {', '.join(subset)}; first 64 maps each)",
              ms(t_ours / n_maps), ms(t_tut / n_maps) + " (pyplot subplot per map)", f"{t_tut / t_ours:.0f}x faster",
              ">= 50x", t_tut / t_ours >= 50)
    t_all = median_time(lambda: [cnnviz_figure(m, os.path.join(tmp, "ours.png")) for m in maps.values()], reps)
    per_layer_tut = t_tut / len(subset)
    table.add(f"render per layer (all {len(layers)} layers, 64 maps)", ms(t_all / len(layers)), ms(per_layer_tut),
              f"{per_layer_tut / (t_all / len(layers)):.0f}x faster", "", None)

    # ---------------------------------------------------------------- 2. against the floor
    t_cnn = median_time(lambda: maps_job(lm, out_dir, "all", size=size), reps, setup=lambda: clean(out_dir))
    written = written_images(out_dir)
    n_px = sum(a.shape[0] * a.shape[1] for a, _ in written)
    total_maps = sum(layer.out_channels for layer in layers)

    def floor() -> None:
        with torch.inference_mode():
            lm.model(x)
        for image in written:
            encode(image)

    t_floor = median_time(floor, reps)
    table.add(f"every channel of all {len(layers)} {resnet} layers ({total_maps:,} maps, {n_px / 1e6:.0f} Mpx of PNG), end to end",
              ms(t_cnn), ms(t_floor) + " (forward + PNG encode of the same pixels)", f"{t_cnn / t_floor:.2f}x the floor",
              "<= 2x", t_cnn / t_floor <= 2)

    # ---------------------------------------------------------------- 3. early stop
    lv = load_model(vgg, weights="none")
    t0 = median_time(lambda: maps_job(lv, out_dir, "0", size=big), reps, setup=lambda: clean(out_dir))
    t1 = median_time(lambda: maps_job(lv, out_dir, "-1", size=big), reps, setup=lambda: clean(out_dir))
    table.add(f"early stop: {vgg} at {big} px, maps --layer 0 vs --layer -1", ms(t0), ms(t1), f"{t1 / t0:.1f}x faster",
              ">= 5x", t1 / t0 >= 5)
    vl = conv_layers(lv.model)
    xv = sample_input(big)

    def forward_to(layer: Any) -> Callable[[], None]:
        def go() -> None:
            with Capture(lv.model, [HookPoint(layer.name)]) as cap:
                cap.run(xv)
        return go

    c0, c1 = median_time(forward_to(vl[0]), reps), median_time(forward_to(vl[-1]), reps)
    table.add(f"early stop, capture only: {vgg} at {big} px, layer 0 vs layer -1", ms(c0), ms(c1), f"{c1 / c0:.0f}x faster",
              "", None)

    # ---------------------------------------------------------------- 4. batch throughput
    from PIL import Image

    from cnnviz.io import load_image, sample_image_path

    mid = layers[len(layers) // 2]
    base = load_image(sample_image_path())
    img_dir = os.path.join(tmp, "imgs")
    os.makedirs(img_dir)
    paths = []
    for i in range(n_batch):  # distinct inputs: shifted crops, some mirrored
        w, h = base.size
        im = base.crop((i % 8 * 4, i // 8 * 4, w - 32 + i % 8 * 4, h - 32 + i // 8 * 4))
        if i % 2:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        p = os.path.join(img_dir, f"im{i:02d}.jpg")
        im.save(p, quality=90)
        paths.append(p)
    t_b = median_time(lambda: maps_job(lm, out_dir, str(mid.index), *paths, sample=False, size=size, batch_size=n_batch),
                      max(1, reps // 2), setup=lambda: clean(out_dir))
    xb = torch.cat([sample_input(size)] * n_batch)

    def bare() -> None:
        with Capture(lm.model, [HookPoint(mid.name)]) as cap:
            cap.run(xb)

    t_bare = median_time(bare, max(1, reps // 2))
    table.add(f"batch of {n_batch} images, {resnet} layer {mid.index} ({mid.name}), per image",
              ms(t_b / n_batch), ms(t_bare / n_batch) + " (batched forward to that layer)",
              f"{t_b / t_bare:.2f}x", "<= 1.3x", t_b / t_bare <= 1.3)

    # ---------------------------------------------------------------- 5. memory
    cmd = [sys.executable, "-m", "cnnviz", "maps", "--sample", "--size", str(huge), "-m", resnet, "--weights", "none", "-o", out_dir]
    m_all = peak_rss_mb([*cmd, "--layer", "all"])
    clean(out_dir)
    m_last = peak_rss_mb([*cmd, "--layer", "-1"])
    clean(out_dir)
    table.add(f"peak RSS, {resnet} maps at --size {huge}: --layer all vs --layer -1", f"{m_all:.0f} MB", f"{m_last:.0f} MB",
              f"{m_all / m_last:.2f}x", "<= 1.5x", m_all / m_last <= 1.5)

    # ---------------------------------------------------------------- 6. start-up
    exe = [sys.executable, "-m", "cnnviz"]
    t_help = wall([*exe, "--help"], reps)
    t_py = wall([sys.executable, "-c", "pass"], reps)
    table.add("start-up: cnnviz --help (wall)", ms(t_help), ms(t_py) + " (python -c pass)", f"+{ms(t_help - t_py)}",
              "< 0.3 s", t_help < 0.3)
    t_layers = wall([*exe, "layers", "--model", resnet], reps)
    t_tv = wall([sys.executable, "-c", "import torchvision"], reps)
    table.add(f"cnnviz layers --model {resnet} (wall)", ms(t_layers), ms(t_tv) + " (import torchvision)",
              f"{t_layers / t_tv:.2f}x", "close to 1x", None)

    # ---------------------------------------------------------------- 7. filters
    t_f = median_time(lambda: filters_job(lm, out_dir, "all"), reps, setup=lambda: clean(out_dir))
    n_files = len(os.listdir(out_dir))
    table.add(f"filters --layer all on {resnet}, after model load ({n_files} PNGs)", ms(t_f), "", "", "< 1 s", t_f < 1)

    # ---------------------------------------------------------------- PNG compression levels
    from cnnviz.io import _png_bytes

    grid_px, grid_pal = written[len(written) // 2]
    levels = []
    for level in (1, 6, 9):
        t = median_time(lambda level=level: _png_bytes(grid_px, None, level, palette=grid_pal), reps)
        levels.append((level, t, len(_png_bytes(grid_px, None, level, palette=grid_pal))))
    rgb = None if grid_pal is None else np.frombuffer(grid_pal, np.uint8).reshape(-1, 3)[grid_px]
    if rgb is not None:  # the same picture as an RGB PNG through Pillow, for comparison
        from PIL import Image

        def pil_rgb() -> bytes:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
            return buf.getvalue()

        levels.append(("RGB via Pillow, 1", median_time(pil_rgb, reps), len(pil_rgb())))

    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    lvl = "\n".join(f"| {lv} | {ms(t)} | {b / 1024:.0f} KiB |" for lv, t, b in levels)
    md = f"""# Benchmarks

Produced by `python scripts/bench.py{' --quick' if quick else ''}` on {when}: {cpu}, {os.cpu_count()} cores,
{torch.get_num_threads()} torch threads, no GPU; Python {platform.python_version()}, torch {torch.__version__}.
Every figure is the median of {reps} repetition(s) measured side by side in that one run; random weights.

{table.markdown()}

What the rows measure:
- *render per map*: the same captured maps rendered by cnnviz (`maps.render_grid` + one PNG encode) and by the
  tutorials' matplotlib loop (one `subplot` + `imshow` per map, `savefig`).
- *end to end*: the work of `cnnviz maps --layer all` (`cnnviz.jobs.maps.run_maps`, given the loaded model:
  checks, capture, normalise, tile, colormap, encode, atomic write of one PNG per layer) against one bare forward pass plus encoding exactly the pixels written.
- *early stop*: the maps job with `--layer 0` against `--layer -1` (both include rendering and writing their grid).
- *batch*: the maps job on {n_batch} JPEG files in one batch (decode, preprocess, capture, render, write) against a
  batched forward pass stopped at the same layer.
- *peak RSS*: two fresh processes; the second only captures the last layer.

PNG encoding of one written grid ({grid_px.shape[1]}x{grid_px.shape[0]}, {'palette' if grid_pal else 'RGB'}); cnnviz writes palette PNGs at zlib level 1:

| zlib level | encode time | size |
|---|---|---|
{lvl}
"""
    if not quick or args.out != ap.get_default("out"):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(md)
        print(f"wrote {os.path.abspath(args.out)}", flush=True)
    print(md)
    return 0


def detection_main(args: Any, ap: argparse.ArgumentParser) -> int:
    import torch

    reps = args.reps or (1 if args.quick else 3)
    tmp = tempfile.mkdtemp(prefix="cnnviz-bench-")
    out_dir = os.path.join(tmp, "out")
    os.makedirs(out_dir)
    table = Table()
    note = detection_rows(table, reps=reps, quick=args.quick, tmp=tmp, out_dir=out_dir)
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    md = f"""# Benchmarks: detectors

Produced by `python scripts/bench.py --detection{' --quick' if args.quick else ''}` on {when}: {os.cpu_count()} cores,
{torch.get_num_threads()} torch threads, no GPU; torch {torch.__version__}. The machine was shared with other jobs:
each cnnviz figure and its baseline were measured alternately, {reps} times, and the medians are given.

{table.markdown()}

{note}
"""
    out = args.out
    if out == ap.get_default("out"):
        out = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks-detection.md")
    if not args.quick or args.out != ap.get_default("out"):
        with open(out, "w") as f:
            f.write(md)
        print(f"wrote {os.path.abspath(out)}", flush=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
