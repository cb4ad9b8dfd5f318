"""Decode-once cache, augmentation presets, imbalance tools, split reuse, k-fold."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import api
from cnnlab.core.errors import CnnlabError
from cnnlab.data.cache import decode_images
from cnnlab.data.files import scan_folder
from cnnlab.data.inspect import inspect_dataset
from cnnlab.data.loaders import TensorBatches, balanced_weights, split_loader
from cnnlab.data.pipeline import prepare_data
from cnnlab.data.split import kfold_indices, stratified_split
from cnnlab.data.transforms import PCALighting, build_batch_transform, build_transform, per_image_standardize
from cnnlab.models import create_model, get_spec
from cnnlab.train.engines import torch_engine
from cnnlab.train.losses import balanced_class_weights, init_output_bias
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset

# ---------------------------------------------------------------- cache


def test_disk_cache_is_reused_and_invalidated_by_file_or_setting_changes(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=5)
    files = scan_folder(root).files
    first = decode_images(files, 16, None, max_pixels=10**7, mode="disk", progress=False)
    again = decode_images(files, 16, None, max_pixels=10**7, mode="disk", progress=False)
    assert not first.cache_hit and again.cache_hit and first.mode == "disk"
    assert torch.equal(first.images, again.images) and tuple(again.images.shape) == (10, 3, 16, 16)
    assert not decode_images(files, 20, None, max_pixels=10**7, mode="disk", progress=False).cache_hit
    # a changed file (new content and mtime) makes a new entry with the new pixels
    Image.new("RGB", (24, 24), (0, 0, 255)).save(files[0])
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = decode_images(files, 16, None, max_pixels=10**7, mode="disk", progress=False)
    assert not changed.cache_hit and changed.images[0, 2].float().mean() > 250
    memory = decode_images(files, 16, None, max_pixels=10**7, mode="memory", progress=False)
    assert torch.equal(memory.images, changed.images)


def test_cache_modes_give_identical_training(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=10)
    hist = {}
    for mode in ("memory", "disk", "none"):
        res = api.train(
            build_config(
                None,
                {
                    "data.source": str(root),
                    "model.name": "cnn",
                    "train.epochs": 2,
                    "data.cache": mode,
                    "run.out": str(tmp_path / mode),
                    "run.report": False,
                },
            ),
            progress=False,
        )
        hist[mode] = [(h["train_loss"], h["val_loss"]) for h in res.history]
        assert json.loads((res.run / "dataset.json").read_text())["cache"] == mode
    assert hist["memory"] == hist["disk"] == hist["none"]


# ---------------------------------------------------------------- augmentation


@pytest.mark.parametrize(
    "preset",
    [
        "none",
        "flip",
        "keras",
        "paintings",
        "randaugment",
        "trivialaugment",
        "rrc",
        "colorjitter",
        "autoaugment",
        "augmix",
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_preset_keeps_shape_and_dtype(preset, channels):
    imgs = torch.randint(0, 256, (8, channels, 20, 20), dtype=torch.uint8)
    tf = build_transform(preset, 20, channels, images=imgs)
    out = tf(imgs[0]) if tf else imgs[0]
    assert out.shape == (channels, 20, 20) and out.dtype == torch.uint8
    if preset != "none":
        torch.manual_seed(0)
        assert any(not torch.equal(tf(imgs[0]), imgs[0]) for _ in range(10))


def test_keras_nearest_fill_leaves_no_black_borders():
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    nearest = build_transform("keras", 32, 3, {"rotation": 40, "zoom": 0.3})
    constant = build_transform("keras", 32, 3, {"rotation": 40, "zoom": 0.3, "fill_mode": "constant"})
    assert all(nearest(img).min() >= 199 for _ in range(10))
    assert any(constant(img).min() == 0 for _ in range(10))
    with pytest.raises(CnnlabError, match="has no option"):
        build_transform("keras", 32, 3, {"rotate": 3})


def test_per_image_standardisation_matches_the_formula():
    x = torch.rand(4, 3, 5, 5)
    x[1] = 0.25  # constant image: σ = 0, so the divisor is 1/√N
    out = per_image_standardize(x)
    n = 3 * 5 * 5
    for i in range(4):
        mean, std = x[i].mean(), x[i].std(unbiased=False)
        assert torch.allclose(out[i], (x[i] - mean) / max(float(std), 1 / n**0.5), atol=1e-6)


def test_pca_lighting_shifts_along_eigenvectors():
    eigval = torch.tensor([0.2, 0.01, 0.001])
    eigvec = torch.eye(3)
    light = PCALighting(eigval, eigvec, alpha_std=0.1)
    torch.manual_seed(0)
    img = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    shifts = torch.stack([light(img).float().mean((1, 2)) - 128 for _ in range(200)])
    assert shifts[:, 0].std() > 3 * shifts[:, 1].std()  # most variation along the first component


def test_augmentation_runs_on_training_batches_only(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=8)
    cfg = build_config(
        None,
        {
            "data.source": str(root),
            "model.name": "cnn",
            "train.epochs": 1,
            "data.augment": "flip",
            "run.out": str(tmp_path / "r"),
        },
    )
    data = prepare_data(cfg.data, get_spec("cnn"), 0, progress=False)
    train = torch_engine.train_loader(data, cfg, torch.device("cpu"), torch.nn.Conv2d(3, 1, 1))
    val = split_loader(data, "val", 8, torch.device("cpu"))
    assert train.transform is not None and val.transform is None


def test_mixup_cutmix_erasing_give_soft_targets_and_train(tmp_path):
    tf = build_batch_transform(0.5, 0.2, 1.0, 4, torch.device("cpu"))
    torch.manual_seed(0)
    np.random.seed(0)
    x, y = tf(torch.randn(7, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1, 2]))
    assert y.shape == (7, 4) and torch.allclose(y.sum(1), torch.ones(7))
    assert torch.equal(y[6], torch.tensor([0.0, 0, 1, 0]))  # odd last image unmixed
    with pytest.raises(CnnlabError, match="single-label"):
        build_batch_transform(0, 0.2, 0, 4, torch.device("cpu"), multilabel=True)
    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=8)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(root),
                "model.name": "cnn",
                "train.epochs": 1,
                "data.mixup": 0.2,
                "data.cutmix": 1.0,
                "data.random_erasing": 0.25,
                "data.augment": "keras",
                "run.out": str(tmp_path / "r"),
            },
        ),
        progress=False,
    )
    assert np.isfinite(res.history[0]["train_loss"])


def test_bad_augment_options_fail_before_work():
    with pytest.raises(CnnlabError, match="preset 'flip' has no option"):
        build_config(None, {"data.augment": "flip", "data.augment_options": {"degrees": 3}})
    with pytest.raises(CnnlabError, match="unknown augmentation preset"):
        build_config(None, {"data.augment": "autoaugment9000"})


# ---------------------------------------------------------------- imbalance


def test_class_weights_follow_seed_004_formula():
    counts = np.array([1064, 500, 400, 300, 100])  # Goya-like imbalance
    w = balanced_class_weights(counts).numpy()
    n, k = counts.sum(), len(counts)
    assert np.allclose(w, n / (k * counts))
    from sklearn.utils.class_weight import compute_class_weight

    y = np.repeat(np.arange(5), counts)
    assert np.allclose(w, compute_class_weight("balanced", classes=np.arange(5), y=y))


def test_output_bias_makes_the_untrained_model_predict_class_frequencies():
    counts = np.array([450, 250, 150, 100, 50])
    model = create_model("cnn", num_classes=5, in_chans=3, input_size=16)
    init_output_bias(model, counts)
    freqs = counts / counts.sum()
    assert np.allclose(torch.softmax(model.head.bias, 0).detach().numpy(), freqs, atol=1e-6)
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        mean_pred = torch.softmax(model(torch.randn(256, 3, 16, 16)), 1).mean(0).numpy()
    assert np.abs(mean_pred - freqs).max() < 0.05


def test_imbalance_options_train_and_summary_shows_ratio(tmp_path):
    root = tmp_path / "imb"
    rng = np.random.default_rng(0)
    from tests.conftest import class_image

    for c, n in enumerate([30, 10, 5]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(class_image(c, 16, rng)).save(root / f"c{c}" / f"{i}.png")
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(root),
                "model.name": "cnn",
                "train.epochs": 1,
                "train.class_weights": "auto",
                "train.init_output_bias": True,
                "data.sampler": "balanced",
                "run.out": str(tmp_path / "r"),
            },
        ),
        progress=False,
    )
    summary = json.loads((res.run / "dataset.json").read_text())
    assert summary["imbalance_ratio"] == 6.0
    w = balanced_weights(torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64))
    loader = TensorBatches(
        torch.zeros(4000, 1, 2, 2, dtype=torch.uint8),
        torch.tensor([0] * 3600 + [1] * 400),
        np.arange(4000),
        4000,
        [0.5],
        [0.5],
        shuffle=True,
        sampler="balanced",
    )
    _, y = next(iter(loader))
    assert 0.45 < y.float().mean() < 0.55  # the minority class is drawn as often as the majority


# ---------------------------------------------------------------- splits


def test_split_is_reused_exactly_by_evaluate_and_resume(tmp_path, monkeypatch):
    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=10)
    run = tmp_path / "r"
    res = api.train(
        build_config(
            None,
            {"data.source": str(root), "model.name": "mlp", "train.epochs": 1, "run.out": str(run), "train.seed": 3},
        ),
        progress=False,
    )

    def no_new_splits(*a, **k):
        raise AssertionError("a saved split must be reused, not recomputed")

    monkeypatch.setattr("cnnlab.data.pipeline.make_splits", no_new_splits)
    assert api.evaluate(run).figures["accuracy"] == res.metrics["accuracy"]
    resumed = api.train(None, api.TrainPlan(resume=run, epochs=2), progress=False)
    assert len(resumed.history) == 2


def test_multilabel_stratification_keeps_label_shares():
    rng = np.random.default_rng(0)
    y = (rng.random((600, 5)) < np.array([0.5, 0.3, 0.1, 0.05, 0.02])).astype(np.uint8)
    tr, va, te = stratified_split(y, (0.7, 0.2, 0.1), seed=0)
    assert len(tr) + len(va) + len(te) == 600 and not set(tr) & set(te) and not set(va) & set(te)
    assert abs(len(va) - 120) <= 2 and abs(len(te) - 60) <= 2
    overall = y.mean(0)
    for part in (tr, va, te):
        assert np.abs(y[part].mean(0) - overall).max() < 0.03


@pytest.mark.parametrize("multilabel", [False, True])
def test_kfold_indices_cover_everything_once(multilabel):
    rng = np.random.default_rng(1)
    y = (rng.random((100, 3)) < 0.4).astype(np.uint8) if multilabel else np.arange(100) % 4
    folds = kfold_indices(y, 5, seed=0)
    assert len(folds) == 5
    val = np.concatenate([v for _, v in folds])
    assert sorted(val.tolist()) == list(range(100))
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == 100
    if not multilabel:
        assert all(np.bincount(y[va], minlength=4).tolist() == [5, 5, 5, 5] for _, va in folds)
    assert [v.tolist() for _, v in kfold_indices(y, 5, seed=0)] == [v.tolist() for _, v in folds]


def test_inspect_finds_a_file_duplicated_across_train_and_test(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=5, splits=("train", "test"))
    (root / "test" / "class_1" / "copy.png").write_bytes((root / "train" / "class_1" / "img_002.png").read_bytes())
    (root / "train" / "class_0" / "twin.png").write_bytes((root / "train" / "class_0" / "img_000.png").read_bytes())
    rep = inspect_dataset(build_config(None, {"data.source": str(root)}).data, progress=False)
    assert len(rep.leaks_across_splits) == 1
    paths = {(f["path"], f["split"]) for f in rep.leaks_across_splits[0]["files"]}
    assert paths == {("train/class_1/img_002.png", "train"), ("test/class_1/copy.png", "test")}
    assert len(rep.duplicates_within_split) == 1


def test_cli_data_inspect_json_and_pictures(tmp_path, capsys):
    from cnnlab.cli import main

    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=4)
    assert main(["data", "inspect", str(root), "--json", "--out", str(tmp_path / "o"), "--augment", "flip"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["class_counts"] == {"class_0": 4, "class_1": 4}
    assert all(os.path.getsize(p) > 0 for p in rep["pictures"])
    assert main(["data", "inspect", "digits", "--out", str(tmp_path / "dg")]) == 0
    assert "imbalance ratio" in capsys.readouterr().out


def test_interrupted_cache_build_leaves_nothing_behind(tmp_path, monkeypatch):
    from cnnlab.data import cache

    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=4)
    files = scan_folder(root).files
    calls = {"n": 0}
    real = cache.decode_one

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "decode_one", interrupt)
    with pytest.raises(KeyboardInterrupt):
        decode_images(files, 16, None, max_pixels=10**7, mode="disk", workers=1, progress=False)
    assert list((cache.cache_dir() / "decoded").iterdir()) == []
    monkeypatch.setattr(cache, "decode_one", real)
    assert not decode_images(files, 16, None, max_pixels=10**7, mode="disk", progress=False).cache_hit


def test_pca_lighting_follows_seed_004s_formula_with_the_eigenvalues_themselves():
    """Issue 25, item 5: seed 004 §1.3.4 adds [p1 p2 p3][α1λ1 α2λ2 α3λ3]ᵀ with λ the eigenvalues of
    the pixels' covariance (the code used to take √λ). Training pixels with independent channels of
    standard deviations about 0.3, 0.15, 0.05 (0..1 scale): the covariance is diagonal, so each channel's
    shift is ±255·α·variance of that channel — computed here by hand (α's spread raised to 1 so the
    shifts are many grey levels, and √λ would be told apart)."""
    from cnnlab.data.transforms import PRESETS

    rng = np.random.default_rng(0)
    sds = np.array([0.3, 0.15, 0.05])
    pixels = np.clip(0.5 + rng.normal(0, 1, (200, 16, 16, 3)) * sds, 0, 1)
    images = torch.from_numpy(np.round(pixels * 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    light = PRESETS.get("paintings")(16, 3, sample=lambda: images, flip=False, alpha_std=1.0)
    flat = images.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy() / 255.0
    variances = np.sort(np.var(flat, axis=0, ddof=1))  # by hand: the diagonal of the covariance, ascending
    img = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    for seed in range(5):
        torch.manual_seed(seed)
        alpha = torch.randn(3).double().numpy()  # the draw the transform makes (eigh: ascending λ)
        torch.manual_seed(seed)
        shift = light(img).double().mean((1, 2)).numpy() - 100
        channel_of = np.argsort(np.var(flat, axis=0, ddof=1))  # eigenvalue i belongs to this channel
        expected = np.zeros(3)
        expected[channel_of] = np.abs(alpha * variances) * 255
        assert np.allclose(np.abs(shift), expected, atol=0.51), (shift, expected)  # rounded to whole levels


def test_inspect_warns_when_the_test_split_is_too_small_to_rank_by(tmp_path, capsys):
    """Issue 46: a held-out test split of 32 images is said to be small before anything trains."""
    from cnnlab.cli import main

    root = make_folder_dataset(tmp_path / "d", classes=8, per_class=38)
    assert main(["data", "inspect", str(root), "--out", str(tmp_path / "o"), "--near-duplicates", "off"]) == 0
    assert "SMALL TEST SPLIT: 32 images; a 95 % accuracy interval over it spans up to ±17 points" in (
        capsys.readouterr().out
    )
