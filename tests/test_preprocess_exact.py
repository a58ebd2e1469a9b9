"""--crop and --size are torchvision's own preprocessing, bit for bit.

The reference is each weights enum member's ``transforms()`` (torchvision's ImageClassification:
Resize(resize_size, interpolation, antialias=True) + CenterCrop(crop_size) + rescale + Normalize)
applied to the same PIL image: an independent implementation, compared with torch.equal.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image
from torchvision import transforms as T

from cnnviz.io import preprocess
from cnnviz.models import architecture

# (width, height): odd, even, portrait, landscape, near-square, smaller and larger than the crop.
SIZES = [
    (640, 427), (427, 640), (1001, 750), (750, 1001), (300, 301), (301, 300), (224, 224), (256, 256),
    (232, 300), (500, 375), (375, 500), (333, 333), (299, 400), (1024, 768), (97, 131), (131, 97),
    (512, 600), (600, 512), (1280, 720), (257, 255), (480, 640), (800, 533), (225, 224), (1000, 1001),
]


def _image(w: int, h: int) -> Image.Image:
    """Noise on a gradient: every resize/crop offset error changes many values."""
    rng = np.random.default_rng(w * 10007 + h)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    a = np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


IMAGES = {wh: _image(*wh) for wh in SIZES}
# The other configurations (crop 240..600, bicubic, other mean/std) on a subset, to keep the test fast.
FEW = [(640, 427), (750, 1001), (300, 301), (301, 300), (97, 131), (257, 255)]
MAIN = {("resnet50", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V2"), ("vgg16", "IMAGENET1K_V1")}


def _distinct_members() -> list[tuple[str, str]]:
    """One (model, weights) per distinct transforms configuration among all of torchvision's
    classification weights (resize, crop, interpolation, mean, std): 28 in torchvision 0.29."""
    seen: dict[tuple, tuple[str, str]] = {}
    for name in tvm.list_models(module=tvm):
        for member in tvm.get_model_weights(name):
            t = member.transforms()
            key = (tuple(t.resize_size), tuple(t.crop_size), t.interpolation, tuple(t.mean), tuple(t.std), t.antialias)
            seen.setdefault(key, (name, member.name))
    return sorted(seen.values())


MEMBERS = sorted({*_distinct_members(), *MAIN})


def _cnnviz(lm, img: Image.Image, **kw) -> torch.Tensor:
    x, disp = preprocess(img, resize_size=lm.resize_size, crop_size=lm.crop_size, mean=lm.mean, std=lm.std,
                         interpolation=lm.interpolation, **kw)
    assert disp.shape == (x.shape[1], x.shape[2], 3)
    return torch.from_numpy(x)


@pytest.mark.parametrize("model,weights", MEMBERS, ids=[f"{m}-{w}" for m, w in MEMBERS])
def test_crop_is_the_weights_transforms_bit_for_bit(model, weights):
    lm = architecture(model, weights=weights)
    ref_t = tvm.get_model_weights(model)[weights].transforms()
    bad = []
    for wh in SIZES if (model, weights) in MAIN else FEW:
        img = IMAGES[wh]
        ours, ref = _cnnviz(lm, img, size=lm.crop_size, crop=True), ref_t(img)
        if ours.shape != ref.shape or not torch.equal(ours, ref):
            diff = (ours - ref).abs().max().item() if ours.shape == ref.shape else f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
            bad.append(f"{wh[0]}x{wh[1]}: {diff}")
    assert not bad, f"{model} {weights}: --crop differs from weights.transforms() on " + ", ".join(bad)


@pytest.mark.parametrize("model,weights", [("resnet50", "IMAGENET1K_V2"), ("vgg16", "IMAGENET1K_V1"),
                                           ("efficientnet_b0", "IMAGENET1K_V1")])
def test_size_is_torchvision_resize_of_the_shorter_side(model, weights):
    """Without --crop, --size S is Resize(S) with the weights' interpolation (long side truncated)."""
    lm = architecture(model, weights=weights)
    t = tvm.get_model_weights(model)[weights].transforms()
    for s in (224, 100, 257):
        ref_t = T.Compose([T.Resize(s, interpolation=t.interpolation, antialias=True), T.PILToTensor(),
                           T.ConvertImageDtype(torch.float), T.Normalize(t.mean, t.std)])
        for img in (IMAGES[wh] for wh in FEW):
            ours, ref = _cnnviz(lm, img, size=s), ref_t(img)
            assert ours.shape == ref.shape and torch.equal(ours, ref), (model, s, img.size)


def test_cli_image_reading_uses_the_weights_transforms(tmp_path):
    """The path the commands take (file -> ImageInputs.read) gives the same tensor as transforms()."""
    from cnnviz.jobs.inputs import ImageInputs

    img = IMAGES[(640, 427)]
    path = tmp_path / "p.png"
    img.save(path)
    for model, weights in (("resnet50", "IMAGENET1K_V2"), ("efficientnet_b0", "IMAGENET1K_V1")):
        lm = architecture(model, weights=weights)
        (im,) = ImageInputs(images=(str(path),), crop=True).read(lm)
        ref = tvm.get_model_weights(model)[weights].transforms()(img)
        assert torch.equal(torch.from_numpy(im.x), ref), model
