"""Regenerate the README gallery pictures of maps, filters, rf and maximize from the commands the
README shows, so every picture is reproducible and current.

    TORCH_HOME=DIR python scripts/gallery.py [--only maps,filters,...] [--out docs/gallery]

DIR must be a torch hub cache holding VGG16 weights under torchvision's file name
(``hub/checkpoints/vgg16-397923af.pth``): the README's pictures use real trained VGG16 conv
weights (see "Weights used in the gallery"). ResNet-50 pictures use random weights (``-w none``)
and say so. Each command runs in its own temporary folder through the real CLI
(``python -m cnnviz ... --json``); the picture it wrote (the one whose record matches ``pick``)
is copied to ``--out`` under the gallery name. Not used by the tests (it needs real weights).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

VGG = ("-m", "vgg16")
PHOTO = ("--sample", "--crop")

# (gallery file, command after `cnnviz`, which record to keep: None = the only one, else a key=value)
GALLERY: list[tuple[str, tuple[str, ...], str | None]] = [
    ("maps-vgg16-sheet.png", ("maps", *PHOTO, *VGG, "-l", "block*_conv1", "--stage", "act", "--sheet"), "kind=sheet"),
    ("maps-vgg16-overlay.png", ("maps", *PHOTO, *VGG, "-l", "block4_conv1", "--stage", "act", "--top", "8", "--overlay",
                                "--cols", "4", "--tile", "160"), None),
    ("maps-vgg16-block1_conv1.png", ("maps", *PHOTO, *VGG, "-l", "block1_conv1", "--stage", "act", "--top", "8"), None),
    ("maps-vgg16-block3_conv1.png", ("maps", *PHOTO, *VGG, "-l", "block3_conv1", "--stage", "act", "--top", "16"), None),
    ("maps-vgg16-block5_conv1.png", ("maps", *PHOTO, *VGG, "-l", "block5_conv1", "--stage", "act", "--top", "16"), None),
    ("filters-vgg16-block1_conv1.png", ("filters", *VGG), None),
    ("filters-vgg16-block1_conv1-norm-filter.png", ("filters", *VGG, "--norm", "filter"), None),
    ("filters-vgg16-block5_conv1-mean.png", ("filters", *VGG, "-l", "block5_conv1", "--norm", "filter", "--channels", "0:64",
                                             "--tile-numbers"), None),
    ("filters-vgg16-block5_conv1-channels.png", ("filters", *VGG, "-l", "block5_conv1", "--mode", "channels", "--norm",
                                                 "filter", "--channels", "0:8", "--inputs", "0:16", "--tile-numbers"), None),
    ("filters-resnet50-layer1.0.conv1-heatmap.png", ("filters", "-m", "resnet50", "-w", "none", "-l", "layer1.0.conv1",
                                                     "--tile-numbers"), None),
    ("filters-resnet50-conv1-random.png", ("filters", "-m", "resnet50", "-w", "none", "-l", "conv1", "--tile-numbers"), None),
    ("rf-vgg16-boxes.png", ("rf", *PHOTO, *VGG), None),
    ("rf-profile-vgg16-resnet50.png", ("rf", "--compare", "vgg16,resnet50"), None),
    ("rf-vgg16-effective.png", ("rf", *PHOTO, *VGG, "-l", "block3_conv3,block4_conv3,block5_conv2", "--effective",
                                "--samples", "8"), None),
    ("rf-vgg16-channel-peaks.png", ("rf", *PHOTO, *VGG, "-l", "block5_conv2", "--channels", "0:4"), None),
    ("maximize-vgg16-block4_conv1.png", ("maximize", *VGG, "-l", "block4_conv1", "-c", "0:16"), None),
    ("maximize-vgg16-block4_conv1-pixel.png", ("maximize", *VGG, "-l", "block4_conv1", "-c", "0:4", "--param", "pixel",
                                               "--no-transforms"), None),
]


def _pick(records: list[dict], pick: str | None, argv: tuple[str, ...]) -> str:
    if pick is not None:
        key, value = pick.split("=", 1)
        records = [r for r in records if str(r.get(key)) == value]
    if len(records) != 1:
        raise SystemExit(f"gallery: {' '.join(argv)} wrote {len(records)} matching pictures, expected 1")
    return records[0]["path"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated commands to regenerate (maps, filters, rf, maximize)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "gallery"))
    args = ap.parse_args()
    cache = os.path.join(os.environ.get("TORCH_HOME", ""), "hub", "checkpoints", "vgg16-397923af.pth")
    if not os.environ.get("TORCH_HOME") or not os.path.exists(cache):
        raise SystemExit("gallery: set TORCH_HOME to a torch hub cache with hub/checkpoints/vgg16-397923af.pth "
                         "(trained VGG16 weights; see README 'Weights used in the gallery')")
    only = {c for c in args.only.split(",") if c}
    os.makedirs(args.out, exist_ok=True)
    for name, argv, pick in GALLERY:
        if only and argv[0] not in only:
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-m", "cnnviz", *argv, "-o", tmp, "--json"], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"gallery: cnnviz {' '.join(argv)} failed: {r.stderr.strip().splitlines()[-1:]}")
            records = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
            shutil.copyfile(_pick(records, pick, argv), os.path.join(args.out, name))
        print(f"{name:<48} {time.perf_counter() - t0:6.1f} s  cnnviz {' '.join(argv)}", file=sys.stderr)


if __name__ == "__main__":
    main()
