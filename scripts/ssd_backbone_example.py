"""A detection example with trained convs: torchvision's ssd300_vgg16 whose VGG16 backbone carries
the trained VGG16 conv weights of the real-weights cache (vgg16-397923af.pth: the CRAFT text
detector's VGG16-BN backbone, ImageNet-initialised, fine-tuned on text, BatchNorm folded; see
docs/gallery.md), its SSD heads left random.

    TORCH_HOME=/work/realcache python scripts/ssd_backbone_example.py [--out docs/gallery] [--top]

1. Builds ssd300_vgg16 (torch.manual_seed(0), no pretrained weights), copies the cache's
   vgg16-397923af.pth convs into its backbone and checks every copied tensor is equal:
     VGG16 features.{0,2,5,7,10,12,14,17,19,21} (conv1_1 .. conv4_3) -> backbone.features.<same index>
     VGG16 features.{24,26}                  (conv5_1, conv5_2)  -> backbone.extra.0.{1,3}
   conv5_3 (features.28) is not copied: the cache's conv5_3 is not trained weights (mean ~0, unlike
   every trained VGG conv). SSD's own fc6/fc7 (extra.0.7), its extra layers, the L2Norm scale and the
   box/class heads stay random: the picture says nothing about detection.
2. Saves that state dict as a checkpoint (outside the repository: ~100 MB).
3. Runs `cnnviz maps PHOTO -m ssd300_vgg16 --weights CKPT -l backbone.features.21 --stage act` (conv4_3
   after its ReLU, the layer SSD's first head reads). The SSD's own transform resizes to 300x300; its
   own normalisation (0-255 pixels minus a mean) is not the one these VGG16 weights are used with,
   so --mean/--std give the ImageNet normalisation (a detector applies them inside its
   own transform). The maps are checked against torchvision's vgg16 (same cache weights) features[:23]
   on the same 300x300 image.
4. With --top: `cnnviz top` of a few conv4_3 channels over ten real photos (skimage.data, matplotlib's
   grace_hopper.jpg).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

VGG_TO_SSD = {**{f"features.{i}": f"backbone.features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)},
              "features.24": "backbone.extra.0.1", "features.26": "backbone.extra.0.3"}
LAYER = "backbone.features.21"  # conv4_3
MEAN, STD = "0.485,0.456,0.406", "0.229,0.224,0.225"  # ImageNet normalisation, as for VGG16 elsewhere


def build_checkpoint(path: str) -> None:
    from torchvision.models import vgg16
    from torchvision.models.detection import ssd300_vgg16

    vgg_file = os.path.join(torch.hub.get_dir(), "checkpoints", "vgg16-397923af.pth")
    if not os.path.exists(vgg_file):
        sys.exit(f"no {vgg_file}: set TORCH_HOME to the real-weights cache (/work/realcache)")
    vgg = torch.load(vgg_file, map_location="cpu", weights_only=True)
    vgg16().load_state_dict(vgg)  # the file is a whole torchvision VGG16
    torch.manual_seed(0)
    ssd = ssd300_vgg16(weights=None, weights_backbone=None)
    sd = ssd.state_dict()
    for src, dst in VGG_TO_SSD.items():
        for p in ("weight", "bias"):
            assert sd[f"{dst}.{p}"].shape == vgg[f"{src}.{p}"].shape, (src, dst, p)
            sd[f"{dst}.{p}"] = vgg[f"{src}.{p}"].clone()
    ssd.load_state_dict(sd)
    back = ssd.state_dict()
    for src, dst in VGG_TO_SSD.items():  # every copied tensor is exactly the trained one
        for p in ("weight", "bias"):
            assert torch.equal(back[f"{dst}.{p}"], vgg[f"{src}.{p}"]), (src, dst, p)
    print(f"copied {2 * len(VGG_TO_SSD)} tensors (conv1_1..conv5_2), all equal to {os.path.basename(vgg_file)}'s; "
          "conv5_3, fc6/fc7, extra layers and heads random (seed 0)")
    torch.save(back, path)


def photo(path: str, name: str) -> str:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    if name == "grace_hopper":
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            im = Image.open(f).convert("RGB")
    else:
        a = getattr(skimage.data, name)()
        im = Image.fromarray(a[0] if isinstance(a, tuple) else a).convert("RGB")
    out = os.path.join(path, f"{name}.png")
    im.save(out)
    return out


def cnnviz(*args: str) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "cnnviz", *args, "--json", "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cnnviz {' '.join(args)} failed: {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def check_maps(npy: str, image: str) -> float:
    """The conv4_3 (after ReLU) maps cnnviz captured = torchvision's vgg16 with the cache weights,
    features[:23] (pool3 rounding up, as SSD builds it), on the image resized to 300x300 (bilinear,
    as SSD's transform) and normalised."""
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.models import vgg16

    net = vgg16()
    net.load_state_dict(torch.load(os.path.join(torch.hub.get_dir(), "checkpoints", "vgg16-397923af.pth"),
                                   map_location="cpu", weights_only=True))
    net.features[16].ceil_mode = True  # SSD's one change to VGG16's layers: pool3 rounds up (75 -> 38, not 37)
    img = torch.from_numpy(np.asarray(Image.open(image).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    x = F.interpolate(img[None], size=(300, 300), mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        ref = net.features[:23].eval()(x)[0].numpy()
    got = np.load(npy)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/gallery")
    ap.add_argument("--checkpoint", default=os.path.join(tempfile.gettempdir(), "ssd300_vgg16-vgg16backbone.pth"))
    ap.add_argument("--photo", default="astronaut")
    ap.add_argument("--top", action="store_true", help="also a cnnviz top picture over ten real photos")
    a = ap.parse_args()
    build_checkpoint(a.checkpoint)
    work = tempfile.mkdtemp()
    img = photo(work, a.photo)
    model = ["-m", "ssd300_vgg16", "--weights", a.checkpoint, "--mean", MEAN, "--std", STD]
    rec = cnnviz("maps", img, *model, "-l", LAYER, "--stage", "act", "-k", "8", "--cols", "4", "--tile", "150", "--overlay",
                 "--alpha", "1", "--cmap", "inferno", "--npy", "-o", work)
    png = next(r["path"] for r in rec if r["path"].endswith(".png"))
    npy = next(r["npy"] for r in rec if r.get("npy"))
    err = check_maps(npy, img)
    print(f"maps of {LAYER} (act) = torchvision vgg16 features[:23]: max abs diff {err:.2e} of the maps' range")
    assert err < 1e-4
    os.makedirs(a.out, exist_ok=True)
    dst = os.path.join(a.out, f"detection-ssd300-vgg16backbone-conv4_3-{a.photo}.png")
    os.replace(png, dst)
    print(dst)
    if a.top:
        photos = os.path.join(work, "photos")
        os.makedirs(photos)
        for name in ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "grace_hopper", "camera",
                     "immunohistochemistry", "hubble_deep_field", "retina"):
            photo(photos, name)
        rec = cnnviz("top", photos, *model, "-l", LAYER, "--stage", "act", "-c", "0:8", "-n", "4", "-o", work)
        dst = os.path.join(a.out, "detection-ssd300-vgg16backbone-conv4_3-top.png")
        os.replace(rec[0]["picture"], dst)
        print(dst)


if __name__ == "__main__":
    main()
