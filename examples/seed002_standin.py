"""Stand-in data for seed 002 (its scene photos, clip art and sketches are not available offline).

Writes OUT/photos/<class>/*.png and two differently styled copies of the same images:
OUT/clipart (flat colours: four grey levels painted with a two-colour palette) and OUT/sketches
(dark edges on white). The source is Debian's Fashion-MNIST test set (dataset-fashion-mnist;
its classes are clothes that ImageNet also names, so the untouched ImageNet net can be scored
through examples/seed002-imagenet-to-fashion.csv) or any folder with one subfolder per class.

    python examples/seed002_standin.py OUT [--source fashion-mnist|DIR] [--per-class 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip  # '/' cannot be in a folder name


def fashion_images(per_class: int, seed: int) -> dict[str, list[Image.Image]]:
    """``per_class`` seeded Fashion-MNIST test images of each class."""
    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"{FASHION} has no Fashion-MNIST: apt-get install dataset-fashion-mnist, or give --source DIR")
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    rng = np.random.default_rng(seed)
    out = {}
    for c, name in enumerate(FASHION_CLASSES):
        pick = rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
        out[name] = [Image.fromarray(pixels[i]) for i in sorted(pick)]
    return out


def folder_images(src: Path, per_class: int, seed: int) -> dict[str, list[Image.Image]]:
    """Up to ``per_class`` seeded images of each class folder of ``src``."""
    out = {}
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})
        random.Random(seed).shuffle(files)
        out[d.name] = [Image.open(f).convert("RGB") for f in files[:per_class]]
    if not out:
        sys.exit(f"{src} has no class folders")
    return out


def clipart(img: Image.Image) -> Image.Image:
    """Flat colours: the grey image cut to four levels and painted navy → gold."""
    grey = ImageOps.posterize(img.convert("L"), 2)
    return ImageOps.colorize(grey, black="#102060", white="#f0c020").convert("RGB")


def sketch(img: Image.Image) -> Image.Image:
    """Dark edges on white, as a pen drawing."""
    grey = img.convert("L")
    if min(grey.size) < 64:  # small images: edges of the upscaled image, so the lines stay thin
        grey = grey.resize((grey.width * 4, grey.height * 4), Image.Resampling.BICUBIC)
    edges = grey.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
    return ImageOps.invert(edges).convert("RGB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", default="fashion-mnist", help="fashion-mnist (Debian) or a folder of class folders")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.source == "fashion-mnist":
        images = fashion_images(a.per_class, a.seed)
    else:
        images = folder_images(Path(a.source), a.per_class, a.seed)
    for style, fn in (("photos", lambda im: im.convert("RGB")), ("clipart", clipart), ("sketches", sketch)):
        for name, imgs in images.items():
            d = a.out / style / name
            d.mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(imgs):
                fn(im).save(d / f"{i:04d}.png")
    n = sum(len(v) for v in images.values())
    print(f"wrote {n} images in each of {a.out}/photos, clipart, sketches ({len(images)} classes)")


if __name__ == "__main__":
    main()
