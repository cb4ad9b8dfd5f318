"""Every dataset format: read from fixture files, and one epoch of training on each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab import api
from cnnlab.core.errors import CnnlabError
from cnnlab.data.files import read_label_csv
from cnnlab.data.pipeline import prepare_data
from cnnlab.models import get_spec
from cnnlab.workflows.resolve import build_config
from tests import fixtures
from tests.conftest import make_folder_dataset, write_idx


def _folder(tmp):
    return {"data.source": str(make_folder_dataset(tmp / "f", classes=3, per_class=8))}


def _presplit(tmp):
    return {"data.source": str(make_folder_dataset(tmp / "p", classes=3, per_class=4, splits=("train", "val", "test")))}


def _csv(tmp):
    return {"data.source": str(fixtures.csv_dataset(tmp / "csv"))}


def _csv_multi(tmp):
    return {"data.source": str(fixtures.csv_dataset(tmp / "csvm", multilabel=True))}


def _mnist(tmp):
    return {"data.source": "mnist", "data.data_dir": str(fixtures.idx_files(tmp / "mnist"))}


def _emnist(tmp):
    folder = fixtures.idx_files(tmp / "emnist", prefix="emnist-letters-", classes=26, offset=1, n_train=104)
    return {"data.source": "emnist-letters", "data.data_dir": str(folder)}


def _cifar10(tmp):
    return {"data.source": "cifar10", "data.data_dir": str(fixtures.cifar10_files(tmp / "c10"))}


def _cifar100(tmp):
    return {"data.source": "cifar100", "data.data_dir": str(fixtures.cifar100_files(tmp / "c100"))}


def _svhn(tmp):
    return {"data.source": "svhn", "data.data_dir": str(fixtures.svhn_files(tmp / "svhn"))}


FORMATS = {
    "folder": _folder,
    "presplit-folder": _presplit,
    "csv": _csv,
    "csv-multilabel": _csv_multi,
    "mnist-idx": _mnist,
    "emnist-idx": _emnist,
    "cifar10-pickle": _cifar10,
    "cifar100-pickle": _cifar100,
    "svhn-mat": _svhn,
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_one_epoch_on_every_format(fmt, tmp_path):
    cfg = build_config(
        None,
        {
            **FORMATS[fmt](tmp_path),
            "model.name": "cnn",
            "train.epochs": 1,
            "train.batch_size": 16,
            "run.out": str(tmp_path / "run"),
            "run.report": False,
        },
    )
    res = api.train(cfg, progress=False)
    assert len(res.history) == 1 and res.metrics["num_samples"] > 0
    summary = json.loads((res.run / "dataset.json").read_text())
    assert summary["split_sizes"]["train"] > 0 and summary["skipped"] == []
    assert summary["multilabel"] == (fmt == "csv-multilabel")
    if fmt == "csv-multilabel":
        assert {"subset_of_truth_accuracy", "hamming_loss", "mean_average_precision"} <= set(res.metrics)


def test_benchmark_readers_give_expected_shapes_labels_and_classes(tmp_path):
    def load(source, data_dir):
        return prepare_data(
            build_config(None, {"data.source": source, "data.data_dir": str(data_dir)}).data,
            get_spec("cnn"),
            seed=0,
            progress=False,
        )

    c10 = load("cifar10", fixtures.cifar10_files(tmp_path / "c10"))
    assert tuple(c10.images.shape) == (120, 3, 32, 32) and c10.classes[:2] == ["c0", "c1"]
    assert len(c10.splits["test"]) == 20
    svhn = load("svhn", fixtures.svhn_files(tmp_path / "svhn"))
    assert set(svhn.labels.tolist()) == set(range(10))  # label 10 became digit 0
    assert tuple(svhn.images.shape) == (120, 3, 32, 32)
    # the class of the SVHN fixture is the bright quadrant: a 0 (written as 10) sits top-left
    first_zero = int(np.flatnonzero(svhn.labels.numpy() == 0)[0])
    assert svhn.images[first_zero, :, :16, :16].float().mean() > 200
    em = load(
        "emnist-letters",
        fixtures.idx_files(tmp_path / "em", prefix="emnist-letters-", classes=26, offset=1, n_train=52),
    )
    assert em.classes[0] == "a" and len(em.classes) == 26 and em.labels.min() == 0
    # EMNIST images are stored transposed: the fixture's bright column becomes a bright row
    i = int(np.flatnonzero(em.labels.numpy() == 3)[0])
    assert em.images[i, 0, 3, :].float().mean() == 255


def test_csv_variants_header_delimiter_and_errors(tmp_path):
    tsv = fixtures.csv_dataset(tmp_path / "tsv", header=False, delimiter="\t")
    fl = read_label_csv(tsv)
    assert fl.classes == ["cat", "dog", "fox", "owl"] and len(fl.files) == 40 and fl.labels.ndim == 1
    multi = read_label_csv(fixtures.csv_dataset(tmp_path / "m", multilabel=True))
    assert multi.labels.shape == (40, 4) and multi.labels.sum() == 40 + 14
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nimages/a.png\n")
    with pytest.raises(CnnlabError, match=r"bad.csv:2: expected a path and a label column"):
        read_label_csv(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("x.png,a\ny.png,b\n")
    with pytest.raises(CnnlabError, match="none of the 2 files listed .* set data.image_root"):
        read_label_csv(missing)
    partial = tmp_path / "partial" / "l.csv"
    fixtures.csv_dataset(tmp_path / "partial")
    partial.write_text((tmp_path / "partial" / "labels.csv").read_text() + "images/gone.png,cat\n")
    fl = read_label_csv(partial)
    assert fl.skipped == [{"path": str(tmp_path / "partial" / "images" / "gone.png"), "reason": "file not found"}]


def test_csv_image_root_option(tmp_path):
    csv_path = fixtures.csv_dataset(tmp_path / "d")
    moved = tmp_path / "elsewhere" / "labels.csv"
    moved.parent.mkdir()
    moved.write_text(csv_path.read_text())
    fl = read_label_csv(moved, image_root=tmp_path / "d")
    assert len(fl.files) == 40


def test_two_readers_of_one_gzipped_idx_file_on_a_cold_cache_both_get_it(tmp_path, monkeypatch):
    """Sweep workers start together on a cold cache: a second reader that arrives while the first
    is still decompressing must neither truncate nor rename the first one's copy."""
    from cnnlab.data import sources

    folder = write_idx(tmp_path / "idx", n_train=300)
    gz = folder / "train-images-idx3-ubyte.gz"
    copy, second = sources.shutil.copyfileobj, []

    def copy_with_a_second_reader(fin, fout, *a, **k):
        fout.write(fin.read(1000))  # the first reader is part-way through ...
        if not second:
            second.append(None)
            second[0] = sources._read_idx(gz)  # ... when a second one reads the same file
        copy(fin, fout, *a, **k)

    monkeypatch.setattr(sources.shutil, "copyfileobj", copy_with_a_second_reader)
    first = sources._read_idx(gz)
    assert first.shape == second[0].shape == (300, 28, 28) and (first == second[0]).all()
    assert not [p.name for p in (sources.cache_dir() / "idx").iterdir() if p.name.endswith(".tmp")]
