"""Issue 24's benchmark: `cnnlab study` against the best hand-made run on a real image folder.

The folder is built from Debian's oxygen-icon-theme (PNG icons in categories): one class per
category with at least 30 distinct icons (10 classes), each icon once, at the largest size the
theme ships it (so the images vary in size, and no icon is in two splits at two sizes), byte-identical
copies under other names dropped, at most 250 icons per class (seeded draw).

    python benchmarks/study_icons.py build DIR      # apt-get download + dpkg-deb -x, then the folder
    python benchmarks/study_icons.py study DIR [--budget 15m] [--out studies/icons]
    python benchmarks/study_icons.py hand DIR       # frozen EfficientNet-Lite0 at 224 px, 10 head epochs

Each prints the measured figures (test accuracy, seconds, each candidate's share of the budget,
predicted against actual seconds). Timings on 2 cores drift 20-50 % from run to run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "oxygen-icon-theme"
MIN_ICONS, MAX_ICONS = 30, 250


def build(dest: Path) -> None:
    """Download the package (no root needed), unpack it and write DEST/<category>/<icon>.png."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        base = Path(tmp) / "x" / "usr/share/icons/oxygen/base"
        largest: dict[tuple[str, str], tuple[int, Path]] = {}
        for png in base.glob("*x*/*/*.png"):
            side = int(png.parts[-3].split("x")[0])
            key = (png.parent.name, png.name)
            if side > largest.get(key, (0, png))[0]:
                largest[key] = (side, png)
        by_class: dict[str, list[Path]] = {}
        seen: set[str] = set()  # the theme ships some icons under several names: each image once
        for (category, _), (_, png) in sorted(largest.items()):
            digest = hashlib.sha256(png.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                by_class.setdefault(category, []).append(png)
        if dest.exists():
            shutil.rmtree(dest)
        rng = random.Random(0)
        for category, pngs in sorted(by_class.items()):
            if len(pngs) < MIN_ICONS:
                continue
            rng.shuffle(pngs)
            (dest / category).mkdir(parents=True)
            for png in sorted(pngs[:MAX_ICONS]):
                shutil.copyfile(png, dest / category / png.name)
    counts = {d.name: len(list(d.iterdir())) for d in sorted(dest.iterdir())}
    print(f"{dest}: {sum(counts.values())} images in {len(counts)} classes: {counts}")


def study(data: Path, budget: str, out: Path) -> None:
    start = time.time()
    if out.exists():
        shutil.rmtree(out)
    subprocess.run(
        [sys.executable, "-m", "cnnlab", "study", str(data), "--budget", budget, "--out", str(out)], check=True
    )
    wall = time.time() - start
    s = json.loads((out / "study.json").read_text())
    rows = {r["name"]: r for r in s["summary"]["rows"]}
    print(f"study: {wall:.0f} s wall for a {s['budget_seconds']:.0f} s budget; winner {s['summary']['winner']} "
          f"test accuracy {s['summary']['winner_test']['accuracy']:.4f}")  # fmt: skip
    for c in s["candidates"]:
        t = s.get("timing", {}).get(c["name"], {})
        r = rows.get(c["name"], {})
        took = t.get("seconds", 0) + t.get("search_seconds", 0)
        share = took / s["budget_seconds"]
        acc = r.get("accuracy", {}).get("value")
        print(
            f"  {c['name']:<28} {c['status']:<8} input {c['input_size']:>3}  share {100 * share:5.1f} %  "
            f"training predicted {t.get('predicted', 0):7.1f} s, took {t.get('seconds', 0):7.1f} s  "
            f"search predicted {t.get('search_predicted', 0):6.1f} s, took {t.get('search_seconds', 0):6.1f} s  "
            f"expected at its start {t.get('expected', 0):6.1f} s of {took:6.1f} s  "
            f"test acc {'-' if acc is None else f'{acc:.4f}'}"
        )


def hand(data: Path, out: Path) -> None:
    start = time.time()
    args = ["--data", str(data), "--model", "efficientnet-lite0", "--freeze", "backbone", "--input-size", "224",
            "--epochs", "10", "--batch-size", "32", "--out", str(out), "--overwrite", "-q"]  # fmt: skip
    subprocess.run([sys.executable, "-m", "cnnlab", "train", *args], check=True)
    m = json.loads((out / "metrics.json").read_text())
    print(
        f"hand run (frozen Lite0, 224 px, 10 epochs): test accuracy {m['accuracy']:.4f} in {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["build", "study", "hand"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.what == "build":
        build(a.folder)
    elif a.what == "study":
        study(a.folder, a.budget, a.out or Path("studies/icons"))
    else:
        hand(a.folder, a.out or Path("runs/icons-lite0-frozen-224"))
