"""How well the leakage guard finds planted near-copies, and how many distinct pairs it flags.

2,000 distinct Fashion-MNIST images (upscaled to 112 px RGB), and copies of some of them made
four ways: re-encoded (JPEG quality 60), resized (±20 %), cropped (to 90–100 % of the side) or
colour-shifted (a gain and offset per channel). Prints, per threshold pair, the share of copies
found (per kind) and the confirmed pairs among the 2,000 originals (every one of which is false).

    .venv/bin/python -m benchmarks.leakage [--copies 120] [--images 2000]   (from the repository root:
    it reuses the test suite's planted-copy fixtures)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tests.data.leak_fixtures import KINDS, distinct_images, planted_copy

from cnnlab.data.leakage import NearDuplicateRule, fingerprints, near_duplicate_pairs
from cnnlab.data.sources import DATASETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=120)
    args = ap.parse_args()
    src = DATASETS.get("fashion-mnist").loader(data_dir=None, download=False)
    originals = distinct_images(src.images, args.images)
    rng = np.random.default_rng(0)
    copies = [planted_copy(originals[j], KINDS[j % 4], rng) for j in range(args.copies)]
    t = time.perf_counter()
    fp = fingerprints(originals + copies)
    print(f"fingerprints of {len(originals) + len(copies)} images: {time.perf_counter() - t:.1f} s")
    n = len(originals)
    for bits in (10, 12, 14, 16):
        for sim in (0.97, 0.98, 0.985, 0.99):
            t = time.perf_counter()
            pairs = near_duplicate_pairs(fp, NearDuplicateRule(bits, sim))
            found = {p["b"] - n for p in pairs if p["b"] >= n and p["a"] == p["b"] - n}
            false = sum(1 for p in pairs if p["b"] < n)
            per = {k: np.mean([j in found for j in range(args.copies) if j % 4 == i]) for i, k in enumerate(KINDS)}
            print(
                f"bits<={bits:2d} sim>={sim:.3f}: copies found {len(found) / args.copies:.3f} "
                f"({', '.join(f'{k} {v:.2f}' for k, v in per.items())}); false pairs among the {n} "
                f"originals {false} ({false / n:.2%} of the images); {time.perf_counter() - t:.1f} s"
            )


if __name__ == "__main__":
    main()
