"""The seams (issue 9): one metric-direction table, engines behind train(), one run-folder writer,
one Predictor that imports no training or plotting code."""

from __future__ import annotations

import inspect
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import api
from cnnlab.core.monitor import direction, monitorable
from cnnlab.inference.predictor import Predictor
from cnnlab.train.optim import build_schedule
from cnnlab.workflows import training as train_run
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset
from tests.fixtures import csv_dataset

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"


@pytest.mark.parametrize("metric", sorted(monitorable()))
def test_plateau_follows_the_one_direction_table(metric):
    """For a minimised metric (ECE, losses, Hamming loss) the LR drops when the value stops
    falling; for a maximised one when it stops rising — never the other way round."""
    cfg = build_config(
        None, {"train.schedule": "plateau", "train.plateau_patience": 1, "train.monitor": f"val_{metric}"}
    )
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, interval = build_schedule(opt, cfg.train, 10, 1)
    assert interval == "plateau"
    better = [1.0, 0.8, 0.6, 0.4] if direction(metric) == "min" else [0.2, 0.4, 0.6, 0.8]
    for v in better:
        sched.step(v)
    assert opt.param_groups[0]["lr"] == 1.0  # improving every epoch: no cut
    for v in [better[-1]] * 2:
        sched.step(v)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # stopped improving: cut


def test_ece_and_losses_are_minimised_and_unknown_directions_refused():
    assert {m for m, (_, d) in monitorable().items() if d == "min"} == {"loss", "log_loss", "ece", "hamming_loss"}
    with pytest.raises(ValueError, match="no direction is declared"):
        direction("val_mystery")


def test_predict_module_imports_no_training_or_plotting_code():
    code = (
        "import cnnlab.inference.predictor, sys; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'jinja2') or m.startswith('cnnlab.train')]; assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_train_and_its_direct_steps_are_short():
    steps = [
        train_run.train,
        train_run.open_run,
        train_run.fit,
        train_run.finish_run,
        train_run.recorded_failures.__wrapped__,
    ]
    called = set(re.findall(r"\b(\w+)\(", inspect.getsource(train_run.train)))
    assert {"open_run", "fit", "finish_run", "recorded_failures"} <= called
    for fn in steps:
        assert len(inspect.getsource(fn).splitlines()) <= 60, fn.__name__


WRITES = re.compile(
    r"atomic_write_\w+\(|atomic_torch_save|torch\.save\(|np\.save|savez|\.write_text\(|"
    r"\.write_bytes\(|open_memmap|savefig\(|open\([^)]*['\"][wa]"
)
# modules that write, and where: none of them into a run folder except through RunFolder
ALLOWED = {
    "runs/store.py": "the run folder's writer",
    "core/atomic.py": "the atomic write every writer goes through",
    "runs/group.py": "the state file of a folder of runs (cv.json, study.json)",
    "runs/ledger.py": "the test-set ledger in the cache folder, never a run folder",
    "inference/exported.py": "the digests of this machine's TorchScript exports, in the cache folder",
    "checkpoints.py": "a checkpoint at the path it is given (RunFolder passes its own)",
    "data/cache.py": "the decode cache under ~/.cache/cnnlab",
    "data/sources.py": "decompressed IDX files in the cache",
    "evaluate/plots.py": "a figure at the path it is given (scratch folders of RunFolder.artifacts)",
    "reports/run.py": "compare.html at --out (report.html goes through RunFolder.write_text)",
    "workflows/lrfind.py": "lr-find's own --out folder",
    "train/engines/torch_engine.py": "checkpoint bytes in memory",
    "train/build.py": "the persistent feature cache under ~/.cache/cnnlab",
    "workflows/cv/folds.py": "cv.json and cv.html in a CV folder (its fold runs are written by RunFolder)",
    "workflows/seeds.py": "seeds.html in a seed group (its seed runs are written by RunFolder)",
    "core/schema.py": "save_config to a path the caller gives",
    "workflows/sweep/runner.py": "sweep.yaml in a sweep folder (its trial runs are written by RunFolder)",
    "workflows/sweep/state.py": "sweep.yaml in a new sweep folder",
    "workflows/sweep/report.py": "sweep.json, sweep.html and best.yaml in a sweep folder",
    "data/shards.py": "shards, labels and index.json in a `cnnlab data shard --out` folder",
    "workflows/deploy/batch.py": "predictions at `cnnlab predict --out` (.csv/.jsonl)",
    "workflows/deploy/export.py": "a model at `cnnlab export --out` (RUN/export/ goes through RunFolder)",
    "workflows/study/run.py": "study.json and inspect.json in a study folder (candidates' runs use RunFolder)",
    "reports/study.py": "report.html in a study folder",
    "workflows/cv/audit.py": "label_audit.csv, label_issues.csv and label_audit.html in a CV folder",
    "workflows/sanity.py": "sanity.json into the scratch folder of RunFolder.artifacts",
    "workflows/study/results.py": "agreement.npz (the report's thumbnails) in a study folder",
}


def test_only_the_run_folder_writer_writes_into_run_folders():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1) if WRITES.search(line)]
    assert not offenders, offenders


def test_train_result_carries_the_best_validation_value(tmp_path):
    res = api.train(
        build_config(
            None,
            {
                "data.source": "digits",
                "model.name": "mlp",
                "train.epochs": 3,
                "train.monitor": "val_acc",
                "run.out": str(tmp_path / "r"),
                "run.report": False,
            },
        ),
        progress=False,
    )
    best = max(h["val_acc"] for h in res.history)
    assert res.monitor == "val_acc" and res.best_value == best
    assert res.history[res.best_epoch - 1]["val_acc"] == best and res.metrics["best_epoch"] == res.best_epoch


def test_predictor_gives_the_same_probabilities_from_a_path_bytes_a_pil_image_and_an_array(tmp_path):
    data = make_folder_dataset(tmp_path / "d", per_class=10)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "cnn-small",
                "train.epochs": 1,
                "run.out": str(tmp_path / "r"),
                "run.report": False,
            },
        ),
        progress=False,
    )
    p = Predictor.from_run(res.run)
    f = data / "class_1" / "img_004.png"
    out = p.predict([f, f.read_bytes(), Image.open(f), np.asarray(Image.open(f)), tmp_path / "nope.png"])
    assert all(o["top"] == out[0]["top"] for o in out[:4]) and out[4]["error"] == "file not found"
    # one image alone and in a batch of five: the same classes, probabilities equal to float32
    # rounding (oneDNN picks its convolution kernel by batch size)
    for alone in (p.predict([f])[0]["top"], [c.model_dump(by_alias=True) for c in api.predict(res.run, [f])[0].top]):
        assert [c["class"] for c in alone] == [c["class"] for c in out[0]["top"]]
        assert np.allclose([c["prob"] for c in alone], [c["prob"] for c in out[0]["top"]], rtol=0, atol=1e-6)


def test_multilabel_prediction_uses_the_thresholds_tuned_on_validation(tmp_path):
    csv = csv_dataset(tmp_path / "ml", multilabel=True, n=60)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(csv),
                "model.name": "cnn-small",
                "train.epochs": 2,
                "run.out": str(tmp_path / "r"),
                "run.report": False,
            },
        ),
        progress=False,
    )
    p = Predictor.from_run(res.run)
    tuned = res.metrics["tuned_thresholds"]["threshold"]
    assert p.thresholds == tuned
    p.thresholds = [0.0] * len(tuned)  # every label passes a zero threshold...
    img = sorted((tmp_path / "ml" / "images").iterdir())[0]
    assert p.predict([img])[0]["labels"] == p.classes
    p.thresholds = [1.01] * len(tuned)  # ...and none passes one above 1
    assert p.predict([img])[0]["labels"] == []
    p.thresholds = tuned
    row = p.predict([io.BytesIO(img.read_bytes()).getvalue()], top_k=len(tuned))[0]
    probs = {t["class"]: t["prob"] for t in row["top"]}
    assert row["labels"] == [c for c, t in zip(p.classes, tuned) if probs[c] >= t]
