"""The leakage guard: planted near copies across splits are found, distinct images are not paired."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.data.leakage import NearDuplicateRule, fingerprints, near_duplicate_pairs
from cnnlab.data.sources import DATASETS
from tests.data.leak_fixtures import KINDS, distinct_images, planted_copy

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fmnist = pytest.mark.skipif(not FMNIST.is_file(), reason="needs Debian's dataset-fashion-mnist (make setup)")


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    """2,000 distinct Fashion-MNIST images in train/ and, in test/, 30 copies of training images
    made four ways (JPEG q 60 files, resized ±20 %, cropped ≤ 10 %, colour-shifted) beside 100
    distinct test images."""
    src = DATASETS.get("fashion-mnist").loader(data_dir=None, download=False)
    originals = distinct_images(src.images, 2100)
    root = tmp_path_factory.mktemp("planted")
    classes = [c.replace("/", "-") for c in src.classes]  # "T-shirt/top" is no folder name
    for i, im in enumerate(originals):
        split = "train" if i < 2000 else "test"
        d = root / split / classes[src.labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{i:05d}.png")
    rng = np.random.default_rng(1)
    sources = rng.choice(2000, 30, replace=False)
    for j, i in enumerate(sources):
        kind = KINDS[j % 4]
        copy = planted_copy(originals[i], kind, rng)
        d = root / "test" / classes[src.labels[i]]
        copy.save(d / f"copy{j:02d}_of_{i:05d}.{'jpg' if kind == 'jpeg' else 'png'}", quality=90)
    return root, {f"{i:05d}": j for j, i in enumerate(sources)}


@needs_fmnist
@pytest.mark.long
def test_inspect_finds_planted_near_copies_with_few_false_pairs(planted_folder, tmp_path, capsys):
    root, planted = planted_folder
    out = tmp_path / "inspect"
    assert main(["data", "inspect", str(root), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    found, false = set(), 0
    near = report["near_leaks_across_splits"] + report["near_duplicates_within_split"]
    for pair in near + report["leaks_across_splits"]:  # an unchanged crop is an exact copy
        names = sorted(Path(f["path"]).stem for f in pair["files"])
        copy = next((n for n in names if n.startswith("copy")), None)
        if copy is not None and copy.split("_of_")[1] in names:
            found.add(copy.split("_of_")[1])
            assert pair not in report["near_duplicates_within_split"]  # test vs train/val: across splits
        else:
            false += 1
    share = len(found & set(planted)) / len(planted)
    print(f"planted copies found {share:.2f}; false pairs {false} among 2,100 distinct images")
    assert share >= 0.9
    assert false <= 20  # 1 % of 2,000
    assert len(near) >= 25  # most copies are near, not exact
    assert report["near_duplicate_rule"] == {"hash_distance": 14, "similarity": 0.99}
    assert (out / "near_duplicates.png").is_file()
    assert str(out / "near_duplicates.png") in report["pictures"]


def test_exact_copies_stay_out_of_the_near_pairs_and_the_text_says_what_was_found(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
    from PIL import Image

    base = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((64, 64)) for _ in range(12)]
    for i, im in enumerate(base[:10]):
        im.save(root / "train" / "ab"[i % 2] / f"{i}.png")
    base[10].save(root / "test" / "a" / "10.png")
    base[11].save(root / "test" / "b" / "11.png")
    base[0].save(root / "test" / "a" / "exact0.png")  # an exact copy: reported by digest, not as a near pair
    base[1].save(root / "test" / "b" / "near1.jpg", quality=60)  # a re-encoded copy
    assert main(["data", "inspect", str(root), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "LEAKAGE: 1 identical images" in text
    assert "NEAR-DUPLICATE LEAKAGE: 1 pairs" in text and "near1.jpg [test]" in text
    assert "exact0" not in text.split("NEAR-DUPLICATE")[1]
    assert main(["data", "inspect", str(root), "--out", str(tmp_path / "o"), "--near-duplicates", "off"]) == 0
    assert "near duplicates: not searched" in capsys.readouterr().out


def test_thresholds_are_honoured_and_across_only_searches_only_across():
    rng = np.random.default_rng(0)
    from PIL import Image

    ims = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((64, 64)) for _ in range(6)]
    ims.append(ims[0].resize((58, 58)))  # 6 ~ 0, across splits
    ims.append(ims[1].resize((70, 70)))  # 7 ~ 1, within a split
    fp = fingerprints(ims)
    splits = ["train"] * 6 + ["test", "train"]
    every = {(p["a"], p["b"]) for p in near_duplicate_pairs(fp)}
    assert every == {(0, 6), (1, 7)}
    assert {(p["a"], p["b"]) for p in near_duplicate_pairs(fp, split_of=splits, across_only=True)} == {(0, 6)}
    assert near_duplicate_pairs(fp, NearDuplicateRule(similarity=1.0001)) == []
