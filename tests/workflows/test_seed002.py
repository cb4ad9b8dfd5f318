"""Seed 002 end to end: the untouched pretrained net scored with its own output layer through a
label map (top-1/top-5), a frozen base with a Dense-256 head (flatten or pooled), retrieval on
each dataset's test split with mAP and P@10, and examples/seed002-scene-transfer.sh on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import api
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.evaluate.metrics import mapped_topk
from cnnlab.models.factory import create_model
from cnnlab.models.transfer import DenseHead, head_block
from cnnlab.workflows.scoring import read_label_map
from tests.conftest import make_folder_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_mapped_top_k_counts_an_unmapped_top_class_as_wrong_by_hand():
    # 4 net classes → data classes: 0→0, 1→1, 2→0, 3 unmapped
    target = np.array([0, 1, 0, -1])
    logits = np.array(
        [
            [5.0, 1.0, 0.0, 0.0],  # top-1 net 0 → data 0: right (y 0)
            [0.0, 1.0, 0.0, 5.0],  # top-1 net 3 unmapped: wrong; top-2 has net 1 → data 1: right at k=2
            [0.0, 0.0, 5.0, 1.0],  # top-1 net 2 → data 0, y 1: wrong; its top-2 (2, 3) has no 1
        ]
    )
    y = np.array([0, 1, 1])
    res = mapped_topk(logits, target, y, num_classes=2, k=2)
    assert res["top1"] == pytest.approx(1 / 3) and res["topk"] == pytest.approx(2 / 3) and res["k"] == 2
    assert res["mapped"] == pytest.approx(2 / 3) and res["per_class"] == [1.0, 0.0]


def test_a_label_map_takes_indices_full_names_and_unambiguous_synonyms_and_refuses_the_rest(tmp_path):
    source = ["tabby, tabby cat", "Cardigan, Cardigan Welsh corgi", "cardigan", "espresso", "crane", "crane"]
    classes = ["cat", "Pull_over", "coffee"]
    f = tmp_path / "map.csv"
    f.write_text("# comment\nsource,target\ntabby cat,cat\ncardigan,pull over\n3,coffee\n")
    assert read_label_map(f, source, classes).tolist() == [0, -1, 1, 2, -1, -1]  # "cardigan" as written: 2
    for text, why in [
        ("crane,cat\n", "names 2 of the net's classes"),
        ("tabby cta,cat\n", "close: tabby cat"),
        ("espresso,tea\n", "'tea' is not a class of the data"),
        ("espresso\n", "expected 'net class,dataset class'"),
        ("# nothing\n", "maps no class"),
    ]:
        f.write_text(text)
        with pytest.raises(CnnlabError, match=why) as e:
            read_label_map(f, source, classes)
        assert "map.csv" in str(e.value)
    assert read_label_map(None, ["espresso", "cat, pussy"], ["Cat", "espresso"]).tolist() == [1, 0]  # by name
    with pytest.raises(CnnlabError, match="--label-map FILE"):
        read_label_map(None, ["tench"], classes)


def test_a_dense_head_on_a_pretrained_net_trains_alone_above_the_frozen_base():
    m = create_model("efficientnet-lite0", num_classes=3, in_chans=3, input_size=64, hidden=[16], pool="flatten")
    head = head_block(m)
    assert isinstance(head, DenseHead)
    assert head[1].in_features == 1280 * 2 * 2  # the 2×2×1280 map at 64 px, flattened (Keras' Flatten)
    pooled = create_model("efficientnet-lite0", num_classes=3, in_chans=3, input_size=64, hidden=[256])
    assert head_block(pooled)[0].in_features == 1280  # global average pooling, the default
    with pytest.raises(CnnlabError, match="pool must be avg or flatten"):
        create_model("efficientnet-lite0", num_classes=3, in_chans=3, input_size=64, pool="max")
    with pytest.raises(CnnlabError, match="keep_head keeps the pretrained output layer"):
        create_model("efficientnet-lite0", num_classes=3, in_chans=3, input_size=64, hidden=[8], keep_head=True)
    tv = create_model("tv/resnet18", num_classes=3, in_chans=3, input_size=64, hidden=[8], pretrained=False)
    assert isinstance(tv.fc, DenseHead) and tv.fc[-1].out_features == 3


def test_frozen_base_with_a_dense_256_head_uses_the_feature_cache_and_reloads(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=3, per_class=8, size=32)
    out = tmp_path / "r"
    res = api.train(
        api.build_config(
            {
                "data": {"source": str(data), "input_size": 32, "split": [0.5, 0.25, 0.25]},
                "model": {"name": "efficientnet-lite0", "freeze": "backbone", "hidden": [256]},
                "train": {"epochs": 2},
                "run": {"out": str(out), "report": False},
            }
        ),
        progress=False,
    )
    run = json.loads((out / "run.json").read_text())
    assert run["feature_cache"]["used"] is True  # features of the frozen base, the two-layer head on them
    params = run["parameters"]
    assert params["trainable"] == 1280 * 256 + 256 + 256 * 3 + 3  # the head and nothing else
    again = api.evaluate(out).document()
    assert again["accuracy"] == pytest.approx(res.metrics["accuracy"])  # the checkpoint rebuilds the head


def _photos(root: Path) -> Path:
    """scikit-image's cat and coffee photos, six crops each, as a two-class folder."""
    from skimage import data

    for name, img in (("cat", data.chelsea()), ("coffee", data.coffee())):
        (root / name).mkdir(parents=True)
        h, w = img.shape[:2]
        for i, (top, left) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1), (0.5, 0.5), (0.2, 0.7)]):
            y, x = int(top * h * 0.15), int(left * w * 0.15)
            crop = Image.fromarray(img[y : y + int(h * 0.85), x : x + int(w * 0.85)])
            (crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else crop).save(root / name / f"{i}.png")
    return root


def test_keep_head_scores_the_untouched_imagenet_net_on_real_photos_through_a_label_map(tmp_path, capsys):
    photos = _photos(tmp_path / "photos")
    run = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--model", "efficientnet-lite0", "--freeze", "backbone",
                 "--epochs", "1", "--split", "0.5,0.17,0.33", "--out", str(run), "-q", "--no-report"]) == 0  # fmt: skip
    cmap = tmp_path / "map.csv"
    cmap.write_text("tabby cat,cat\ntiger cat,cat\nEgyptian cat,cat\nespresso,coffee\ncup,coffee\n")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--keep-head", "--label-map", str(cmap), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "test" and res["images"] == 4 and res["net_classes_mapped"] == 5
    assert res["top1"]["value"] == 1.0 and res["top5"]["value"] == 1.0  # ImageNet's net knows a cat and an espresso
    assert res["top1"]["ci95"][0] < 1.0 == res["top1"]["ci95"][1]
    with pytest.raises(CnnlabError, match="named like a dataset class; give --label-map FILE"):
        api.evaluate(run, api.EvaluateSettings(keep_head=True))  # by name: ImageNet has no "cat" or "coffee" class
    (photos / "coffee").rename(photos / "espresso")
    assert main(["evaluate", str(run), "--keep-head", "--label-map", str(cmap), "--split", "test",
                 "--data", str(photos)]) == 2  # fmt: skip
    assert "classes the model never saw: espresso" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--label-map", str(cmap)]) == 2
    assert "--label-map goes with --keep-head" in capsys.readouterr().err


def test_evaluate_on_a_split_of_other_data_scores_the_same_images_as_the_run_and_retrieval_has_p_at_k(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=3, per_class=30, size=16)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "cnn-small", "--epochs", "2", "--out", str(run),
                 "-q", "--no-report"]) == 0  # fmt: skip
    own = api.evaluate(run).document()
    same = api.evaluate(run, api.EvaluateSettings(data=[str(data)], split="test")).document()
    assert same["num_samples"] == own["num_samples"] and same["accuracy"] == pytest.approx(own["accuracy"])
    assert api.evaluate(run, api.EvaluateSettings(data=[str(data)])).num_samples == 90  # without --split: every image
    res = api.evaluate(run, api.EvaluateSettings(data=[str(data), str(data)], split="test", retrieval=True, top_k=3))
    n = own["num_samples"]
    assert res.split == "test" and res.queries == [n, n] and res.k == 3
    assert res.map[0][1] == pytest.approx(res.map[1][0]) and 0 <= res.precision_at_k[0][0] <= 1


@pytest.mark.slow  # ~45 s / ~20 s: in `make test-slow`, to keep the default suite under 10 minutes
def test_the_seed002_example_runs_end_to_end_on_tiny_stand_in_data(tmp_path):
    src = make_folder_dataset(tmp_path / "src", classes=3, per_class=10, size=16)
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(EXAMPLES / "seed002_standin.py"), str(data), "--source", str(src)], check=True)
    assert {p.name for p in data.iterdir()} == {"photos", "clipart", "sketches"}
    cmap = tmp_path / "map.csv"
    cmap.write_text("0,class_0\n1,class_1\n2,class_2\n")
    env = {**os.environ, "MAP": str(cmap), "SIZE": "32", "EPOCHS": "1", "FT": "1,1",
           "CNNLAB": f"{sys.executable} -m cnnlab"}  # fmt: skip
    done = subprocess.run(["sh", str(EXAMPLES / "seed002-scene-transfer.sh"), str(data), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("baseline: efficientnet-lite0 with its own 1000-class output layer") == 3
    assert done.stdout.count("retrieval mAP") == 2 and done.stdout.count("retrieval precision at 10") == 2
    for run in ("frozen-dense256", "fine-tuned"):
        assert json.loads((tmp_path / "out" / run / "run.json").read_text())["status"] == "completed"
