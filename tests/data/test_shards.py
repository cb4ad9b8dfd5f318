"""WebDataset shards: written by `cnnlab data shard`, streamed by training, evaluation and reports."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from cnnlab import api
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.data.loaders import ShardBatches
from cnnlab.data.pipeline import load_shards, prepare_data
from cnnlab.models import get_spec
from cnnlab.workflows.resolve import build_config


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "digits"
    assert main(["data", "shard", "digits", "--out", str(out), "--shard-size", "0.03"]) == 0
    return out


def test_shard_writes_tar_shards_labels_and_an_index_equal_to_the_decoded_data(digit_shards, capsys):
    index = json.loads((digit_shards / "index.json").read_text())
    assert index["format"] == "cnnlab-shards/1" and index["input_size"] == 8 and index["channels"] == 1
    cfg = build_config(None, {"data.source": "digits"})
    ref = prepare_data(cfg.data, get_spec("cnn"), 0, progress=False)
    assert {k: v["count"] for k, v in index["splits"].items()} == {k: len(v) for k, v in ref.splits.items()}
    assert len(index["splits"]["train"]["shards"]) >= 3  # 0.03 MB shards
    assert index["mean"] == ref.mean and index["std"] == ref.std
    with tarfile.open(digit_shards / index["splits"]["train"]["shards"][0]["file"]) as t:
        names = t.getnames()
    assert sorted(names[:2]) == ["000000000.cls", "000000000.u8"]  # 8×8 grey: raw bytes, nothing to decode
    data = load_shards(str(digit_shards))
    for split in ("train", "test"):  # the same pixels and labels, in the same order
        idx = ref.splits[split]
        mine = data.splits[split]
        assert torch.equal(data.labels[mine], ref.labels[idx])
        assert torch.equal(data.images[mine[[0, 5, -1]]], ref.images[idx[[0, 5, -1]]])


def test_larger_images_are_stored_as_png_and_read_back_exactly(tmp_path):
    from tests.conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=10, size=40)
    assert (
        main(["data", "shard", str(root), "--out", str(tmp_path / "s"), "--input-size", "40", "--channels", "3"]) == 0
    )
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    with tarfile.open(tmp_path / "s" / index["splits"]["train"]["shards"][0]["file"]) as t:
        assert any(n.endswith(".png") for n in t.getnames())
    cfg = build_config(None, {"data.source": str(root), "data.input_size": 40, "data.channels": 3})
    ref = prepare_data(cfg.data, get_spec("cnn"), 0, progress=False)
    data = load_shards(str(tmp_path / "s"))
    assert torch.equal(data.images[data.splits["train"]], ref.images[ref.splits["train"]])
    assert torch.equal(data.labels[data.splits["val"]], ref.labels[ref.splits["val"]])


@pytest.mark.long
def test_training_from_shards_streams_and_scores_like_training_from_memory(digit_shards, tmp_path):
    base = {"model.name": "cnn", "train.epochs": 4, "run.report": True}
    streamed = api.train(
        build_config(None, {**base, "data.source": str(digit_shards), "run.out": str(tmp_path / "s")}), progress=False
    )
    memory = api.train(
        build_config(None, {**base, "data.source": "digits", "run.out": str(tmp_path / "m")}), progress=False
    )
    assert streamed.metrics["accuracy"] > 0.85
    assert abs(streamed.metrics["accuracy"] - memory.metrics["accuracy"]) < 0.05
    dataset = json.loads((streamed.run / "dataset.json").read_text())
    assert dataset["cache"] == "shards"
    assert (streamed.run / "report.html").stat().st_size > 10_000  # figures drawn from shard pixels
    again = api.evaluate(streamed.run, progress=False).figures
    assert again["accuracy"] == pytest.approx(streamed.metrics["accuracy"])
    more = api.train(build_config(None, {}), api.TrainPlan(resume=streamed.run, epochs=5), progress=False)
    assert len(more.history) == 5


def test_each_rank_reads_its_own_shards_and_all_ranks_take_the_same_steps(digit_shards):
    data = load_shards(str(digit_shards))
    kw = dict(shuffle=True, seed=3, workers=1)
    ranks = [
        ShardBatches(data.images, data.labels, data.splits["train"], 32, data.mean, data.std, rank=r, world=2, **kw)
        for r in range(2)
    ]
    for b in ranks:
        b.set_epoch(1)
    files = [[u for u, _ in b._shards()[b.rank]] for b in ranks]
    assert files[0] and files[1] and not set(files[0]) & set(files[1])
    counts = [sum(1 for _ in b) for b in ranks]
    assert counts[0] == counts[1] == len(ranks[0]) > 0
    ranks[0].set_epoch(2)
    assert [u for u, _ in ranks[0]._shards()[0]] != files[0] or len(files[0]) == 1  # a new shard order


def test_shard_errors_are_one_line(digit_shards, tmp_path, capsys):
    assert main(["data", "shard", "digits", "--out", str(digit_shards)]) == 2
    assert "already holds shards" in capsys.readouterr().err
    with pytest.raises(CnnlabError, match="hold 8"):
        load_shards(str(digit_shards), input_size=28)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CnnlabError, match="not a cnnlab shard index"):
        load_shards(str(bad))
    (bad / "index.json").write_text("{not json")
    assert main(["train", "--data", str(bad), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "not a readable shard index" in capsys.readouterr().err
    data = load_shards(str(digit_shards))
    with pytest.raises(CnnlabError, match="a whole split at a time"):
        ShardBatches(data.images, data.labels, np.arange(10), 4, data.mean, data.std)
