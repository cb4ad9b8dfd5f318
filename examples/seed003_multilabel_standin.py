"""Stand-in multi-label data for seed 003 (its 31,925-image, 20-label set is not available offline).

Each image is a 56×56 canvas with one Fashion-MNIST garment (78 % of the images, as the report's
78 % single-label share) or two garments of different classes (22 %) in random quadrant-aligned
places; its labels are the classes on it. Writes OUT/images/*.png and OUT/labels.csv
(``path,labels``, labels separated by spaces), the CSV format `cnnlab` reads as multi-label.

    python examples/seed003_multilabel_standin.py OUT [--images 4000] [--single 0.78] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
SPOTS = [(0, 0), (0, 28), (28, 0), (28, 28), (14, 14), (0, 14), (28, 14), (14, 0), (14, 28)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--single", type=float, default=0.78, help="share of images with one garment")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"{FASHION} has no Fashion-MNIST: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    rng = np.random.default_rng(a.seed)
    (a.out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(a.images):
        count = 1 if rng.random() < a.single else 2
        picks = [int(rng.integers(len(labels)))]
        while len(picks) < count:  # the second garment of another class
            j = int(rng.integers(len(labels)))
            if labels[j] != labels[picks[0]]:
                picks.append(j)
        canvas = np.zeros((56, 56), np.uint8)
        spots = rng.choice(4, size=count, replace=False) if count == 2 else [rng.integers(len(SPOTS))]
        for i, s in zip(picks, spots):
            y, x = SPOTS[int(s)]
            canvas[y : y + 28, x : x + 28] = np.maximum(canvas[y : y + 28, x : x + 28], pixels[i])
        name = f"images/{n:05d}.png"
        Image.fromarray(canvas).save(a.out / name)
        rows.append((name, " ".join(sorted(CLASSES[labels[i]] for i in picks))))
    with open(a.out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels"])
        w.writerows(rows)
    single = sum(" " not in r[1] for r in rows) / len(rows)
    print(f"wrote {len(rows)} images and {a.out / 'labels.csv'} ({single:.0%} single-label, {len(CLASSES)} labels)")


if __name__ == "__main__":
    main()
