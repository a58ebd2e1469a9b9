"""The segmentation picture of docs/segmentation.md: `cnnviz cam PHOTO -m deeplabv3_mobilenet_v3_large
--class person` through the pretrained-weights path (a state dict under the weights' own file name
in a temporary $TORCH_HOME hub cache), with RANDOM weights: no trained segmentation weights are
available offline. To make the random model's prediction non-trivial, its BatchNorm statistics are
taken from the photo and the person logit is shifted so about half the pixels are predicted
'person'. The picture shows the pipeline (the target, the mask outline, the map), not what a
trained DeepLabV3 sees.

    python scripts/seg_example.py [-o docs/gallery]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import torch
from PIL import Image
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="docs/gallery")
    ap.add_argument("--size", type=int, default=520)
    args = ap.parse_args()
    import skimage.data
    from torchvision.models import get_model

    from cnnviz.io import load_image, preprocess
    from cnnviz.models import checkpoint_path, resolve_weights

    name = "deeplabv3_mobilenet_v3_large"
    with tempfile.TemporaryDirectory() as tmp:
        photo = os.path.join(tmp, "astronaut.png")
        Image.fromarray(skimage.data.astronaut()).save(photo)
        x = torch.from_numpy(preprocess(load_image(photo), size=args.size)[0])[None]
        torch.manual_seed(0)
        net = get_model(name, weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
                m.reset_running_stats()
        with torch.no_grad():
            net.train()(x.repeat(2, 1, 1, 1))
            net.eval()
            out = net(x)["out"][0]
            others = torch.cat([out[:15], out[16:]]).amax(0)
            net.classifier[4].bias[15] += float((others - out[15]).median())
            share = float((net(x)["out"].argmax(1) == 15).float().mean())
        env = {**os.environ, "TORCH_HOME": os.path.join(tmp, "th"), "CNNVIZ_OFFLINE": "1"}
        os.environ["TORCH_HOME"] = env["TORCH_HOME"]
        path = checkpoint_path(resolve_weights(name, "DEFAULT"))
        os.makedirs(os.path.dirname(path))
        torch.save(net.state_dict(), path)
        print(f"random weights, BN statistics from the photo; person predicted at {100 * share:.0f}% of the pixels",
              file=sys.stderr)
        os.makedirs(args.output, exist_ok=True)
        got = subprocess.run([sys.executable, "-m", "cnnviz", "cam", photo, "-m", name, "--class", "person",
                              "-s", str(args.size), "-o", args.output, "-q"], check=True, env=env,
                             stdout=subprocess.PIPE, text=True).stdout.split()[0]
        os.replace(got, os.path.join(args.output, "cam-seg-deeplabv3-mobilenet-astronaut-random.png"))


if __name__ == "__main__":
    main()
