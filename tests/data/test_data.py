from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.core.errors import CnnlabError
from cnnlab.data.files import scan_folder
from cnnlab.data.images import decode_file, to_mode
from cnnlab.data.pipeline import prepare_data
from cnnlab.data.sources import load_files
from cnnlab.data.split import make_splits, stratified_split
from cnnlab.models import get_spec
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset


def load_folder(root, size, channels=None, cache="memory", **kw):
    return load_files(
        scan_folder(root),
        size,
        channels,
        max_pixels=kw.pop("max_pixels", 50_000_000),
        workers=2,
        cache=cache,
        progress=False,
    )


def write_mixed_tree(root):
    """Class folders with every mode, size and format, plus three unreadable files."""
    rng = np.random.default_rng(1)
    a, b = root / "cats", root / "dogs"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(a / "rgb.png")
    Image.fromarray(rgb).save(a / "photo.jpg", quality=90)
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 128, np.uint8)]), "RGBA").save(a / "alpha.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(a / "anim.gif")
    Image.fromarray(rgb[:, :, 0], "L").save(a / "grey.bmp")
    Image.fromarray(rgb).save(a / "pic.webp")
    pal = Image.fromarray(rgb[:10, :10, 0], "L").convert("P")
    pal.info["transparency"] = 0
    pal.save(b / "palette_transparent.png", transparency=0)
    Image.fromarray(np.stack([rgb[:, :, 0], rgb[:, :, 1]], -1), "LA").save(b / "la.png")
    Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)).save(b / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (300, 120, 3), dtype=np.uint8)).save(b / "tall.png")
    Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)).save(b / "tiny.png")
    Image.fromarray(rgb).save(b / "ok.jpeg")
    # the unreadable ones
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (a / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (b / "empty.png").write_bytes(b"")
    (b / "notes.png").write_text("this is not an image\n")
    (b / "README.txt").write_text("ignored: not an image extension\n")
    return root


def test_mixed_modes_decode_and_bad_files_are_skipped_by_name(tmp_path, caplog):
    root = write_mixed_tree(tmp_path / "mixed")
    src = load_folder(root, size=16)
    assert tuple(src.images.shape) == (12, 3, 16, 16) and src.images.dtype == torch.uint8
    assert src.classes == ["cats", "dogs"]
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in src.skipped}
    assert set(skipped) == {"truncated.jpg", "empty.png", "notes.png"}
    assert skipped["empty.png"] == "empty file (0 bytes)"
    assert skipped["notes.png"].startswith("not an image")
    assert "truncated" in skipped["truncated.jpg"]
    assert any("truncated.jpg" in r.getMessage() for r in caplog.records)


def test_alpha_is_composited_on_white_and_16bit_is_scaled(tmp_path):
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_mode(clear, 3)).min() == 255  # fully transparent → white
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert np.asarray(to_mode(deep, 1)).max() == 255
    p = tmp_path / "g.png"
    Image.fromarray(np.full((8, 6), 77, np.uint8), "L").save(p)
    arr, mode = decode_file(p, channels=3, size=5)
    assert arr.shape == (3, 5, 5) and mode == "L" and (arr == 77).all()


def test_grey_folders_become_one_channel(tmp_path):
    root = tmp_path / "grey"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 10), 40 * i, np.uint8), "L").save(root / c / f"{i}.png")
    assert tuple(load_folder(root, 8).images.shape) == (6, 1, 8, 8)
    assert tuple(load_folder(root, 8, 3).images.shape) == (6, 3, 8, 8)


def test_stratified_split_is_seeded_disjoint_and_keeps_class_shares():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    tr, va, te = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    assert len(set(tr) | set(va) | set(te)) == 100 and not set(tr) & set(va) and not set(va) & set(te)
    assert np.bincount(labels[va], minlength=4).tolist() == [5, 3, 2, 0]  # 0.5 rounds to 0 for 5
    again = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    assert all((x == y).all() for x, y in zip((tr, va, te), again))
    other = stratified_split(labels, (0.8, 0.1, 0.1), seed=4)
    assert not (other[1] == va).all()


def test_tiny_classes_keep_a_training_image():
    labels = np.array([0, 1, 1, 2, 2, 2])
    tr, va, te = stratified_split(labels, (0.4, 0.3, 0.3), seed=0)
    assert set(labels[tr]) == {0, 1, 2}


def test_given_train_test_gets_validation_by_fraction_or_count():
    labels = np.arange(1000) % 10
    given = {"train": np.arange(800), "test": np.arange(800, 1000)}
    s = make_splits(labels, given, (0.8, 0.1, 0.1), 0.25, seed=0)
    assert len(s["val"]) == 200 and len(s["train"]) == 600 and (s["test"] == given["test"]).all()
    s = make_splits(labels, given, (0.8, 0.1, 0.1), 100, seed=0)
    assert len(s["val"]) == 100


def test_presplit_folder_uses_its_own_splits(tmp_path):
    root = make_folder_dataset(tmp_path / "pre", classes=2, per_class=4, splits=("train", "val", "test"))
    scan = scan_folder(root)
    assert scan.classes == ["class_0", "class_1"]
    cfg = build_config(None, {"data.source": str(root), "model.name": "cnn"}).data
    data = prepare_data(cfg, get_spec("cnn"), seed=0, progress=False)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 8, "val": 8, "test": 8}
    assert data.paths[data.splits["val"][0]].startswith("val/")


def test_folder_errors(tmp_path):
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(CnnlabError, match="at least two class folders"):
        scan_folder(tmp_path / "one")
    for c in ("a", "b"):
        (tmp_path / "txt" / c).mkdir(parents=True)
        (tmp_path / "txt" / c / "x.txt").write_text("x")
    with pytest.raises(CnnlabError, match="holds no image files"):
        scan_folder(tmp_path / "txt")
    for c in ("a", "b"):
        (tmp_path / "bad" / c).mkdir(parents=True)
        (tmp_path / "bad" / c / "x.png").write_text("x")
    with pytest.raises(CnnlabError, match="none of the 2 image files could be read"):
        load_folder(tmp_path / "bad", 8)


def test_fashion_mnist_reads_idx_files_from_data_dir(idx_dir):
    cfg = build_config(None, {"data.source": "fashion-mnist", "data.data_dir": str(idx_dir)}).data
    data = prepare_data(cfg, get_spec("cnn"), seed=0, progress=False)
    assert data.images.shape == (250, 1, 28, 28)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 180, "val": 20, "test": 50}
    assert data.classes[0] == "T-shirt/top"
    big = prepare_data(
        cfg.model_copy(update={"input_size": 32, "channels": 3}), get_spec("cnn"), seed=0, progress=False
    )
    assert big.images.shape == (250, 3, 32, 32)


def test_fashion_mnist_missing_files_say_what_to_do(tmp_path):
    cfg = build_config(None, {"data.source": "fashion-mnist", "data.data_dir": str(tmp_path)}).data
    with pytest.raises(CnnlabError, match=r"does not hold fashion-mnist's files \(the four IDX files"):
        prepare_data(cfg, get_spec("cnn"), seed=0, progress=False)


def test_digits_builtin_and_normalisation_stats():
    cfg = build_config(None, {"data.source": "digits"}).data
    data = prepare_data(cfg, get_spec("mlp"), seed=0, progress=False)
    assert data.images.shape == (1797, 1, 8, 8) and data.classes[:3] == ["0", "1", "2"]
    train = data.images[data.splits["train"]].double() / 255
    assert abs(data.mean[0] - float(train.mean())) < 1e-5
    assert abs(data.std[0] - float(train.std(unbiased=False))) < 1e-5
    s = data.summary()
    assert sum(s["split_sizes"].values()) == 1797 and 1.0 <= s["imbalance_ratio"] < 1.1
