"""Max abs difference of every `cnnviz cam` map from pytorch-grad-cam 1.5 and Captum, on full-size models.

    pip install 'grad-cam==1.5.*' captum
    python scripts/cam_equality.py                       # ResNet-50 and VGG16, random weights, sample photo at 224
    python scripts/cam_equality.py --models resnet50 --perturb   # also Score-CAM and Ablation-CAM (slow)

Both maps are scaled to [0, 1] before comparing (the references' own output for the CAM family;
Captum's attributions reduced to (H, W) as cnnviz does: saliency max |g| over colour channels, the
others |sum over colour channels|). EigenCAM/Eigen-Grad-CAM are compared with the reference's
sign-corrected projection (see docs/cam.md: the plain reference's sign is arbitrary). Prints a
Markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnviz import cam  # noqa: E402
from cnnviz.io import load_image, preprocess, sample_image_path  # noqa: E402

REFS = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
        "layercam": "LayerCAM", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM", "scorecam": "ScoreCAM",
        "ablationcam": "AblationCAM"}


def _mm(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return (a - a.min()) / (a.max() - a.min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--perturb", action="store_true", help="include scorecam and ablationcam (a forward per channel)")
    args = ap.parse_args()
    import captum.attr as ca
    import pytorch_grad_cam as pgc
    import torchvision
    from pytorch_grad_cam import eigen_cam, eigen_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    eigen_cam.get_2d_projection = get_2d_projection_with_sign_correction
    eigen_grad_cam.get_2d_projection = get_2d_projection_with_sign_correction
    warnings.simplefilter("ignore")
    x, _ = preprocess(load_image(sample_image_path()), size=args.size, crop=True)
    xt = torch.from_numpy(x)[None]
    print(f"| model | method | reference | max abs diff ([0, 1] maps, {args.size} px, sample photo, top-1 class, random weights) |")
    print("|---|---|---|---:|")
    for arch in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        layer = cam.default_layer(model)
        module = dict(model.named_modules())[layer.point.module]
        target = int(cam.predict(model, xt).argmax())
        for name, cls in REFS.items():
            if name in ("scorecam", "ablationcam") and not args.perturb:
                continue
            with getattr(pgc, cls)(model=model, target_layers=[module]) as c:
                if name in ("scorecam", "ablationcam"):
                    c.batch_size = 64
                ref = c(input_tensor=xt, targets=[ClassifierOutputTarget(target)])[0]
            got = cam.explain(model, xt, [target], method=name, layers=[layer], batch_size=64).norm[0]
            print(f"| {arch} | {name} | pytorch-grad-cam {cls} | {np.abs(got - ref).max():.1e} |", flush=True)
        t = torch.tensor([target])
        for name, ref in (
            ("saliency", lambda: ca.Saliency(model).attribute(xt.clone(), target=t, abs=True).amax(1)),
            ("inputxgrad", lambda: ca.InputXGradient(model).attribute(xt.clone(), target=t).sum(1).abs()),
            ("integrated-gradients", lambda: ca.IntegratedGradients(model).attribute(xt.clone(), target=t, n_steps=32, internal_batch_size=8).sum(1).abs()),
            ("guided-backprop", lambda: ca.GuidedBackprop(model).attribute(xt.clone(), target=t).sum(1).abs()),
        ):
            r = _mm(ref().detach().numpy()[0])
            got = cam.explain(model, xt, [target], method=name, ig_steps=32, batch_size=8).norm[0]
            print(f"| {arch} | {name} | Captum | {np.abs(got - r).max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
