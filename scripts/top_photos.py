"""Gather the real photographs that Python packages ship into one folder, for `cnnviz top` galleries.

    pip install scikit-image
    python scripts/top_photos.py photos/

Copies (unchanged) the photographs among scikit-image's bundled data and matplotlib's sample data:
people, animals, objects, textures, scenes, microscopy and astronomy. Synthetic images (logos,
test patterns, rendered text, phantoms) are left out. Offline: nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import shutil

SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png",
    "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
]
MATPLOTLIB_PHOTOS = ["grace_hopper.jpg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    args = ap.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    import matplotlib

    sources = []
    try:
        import skimage

        sk = os.path.join(os.path.dirname(skimage.__file__), "data")
        sources += [os.path.join(sk, n) for n in SKIMAGE_PHOTOS if os.path.exists(os.path.join(sk, n))]
    except ImportError:
        print("scikit-image is not installed: only matplotlib's photo is copied (pip install scikit-image)")
    mpl = os.path.join(matplotlib.get_data_path(), "sample_data")
    sources += [os.path.join(mpl, n) for n in MATPLOTLIB_PHOTOS]
    for s in sources:
        shutil.copyfile(s, os.path.join(args.folder, os.path.basename(s)))
    print(f"{len(sources)} photos in {args.folder}")


if __name__ == "__main__":
    main()
