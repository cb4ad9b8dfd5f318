"""cnnlab cv (issue 11, done-when 5): folds as runs, the test split held out, a summary with
intervals, and a paired comparison of two CVs."""

from __future__ import annotations

import json
import shutil

import numpy as np

from cnnlab.cli import main
from cnnlab.core.settings import CvSettings
from cnnlab.data.pipeline import prepare_data
from cnnlab.models import get_spec
from cnnlab.workflows.resolve import build_config

FLAGS = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "-q", "--set", "run.report=false"]


def test_five_fold_cv_on_digits_and_a_paired_comparison(tmp_path, capsys):
    mlp, cnn = tmp_path / "cv-mlp", tmp_path / "cv-cnn"
    assert main(["cv", "--folds", "5", "--model", "mlp", "--hidden", "64", "--out", str(mlp), *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "5-fold cross-validation × 1 of mlp" in out and "accuracy" in out and "95 %" in out
    cv = json.loads((mlp / "cv.json").read_text())
    assert [r["name"] for r in cv["runs"]] == [f"r1-fold{i}" for i in range(1, 6)]
    acc = [r["metrics"]["accuracy"] for r in cv["runs"]]
    s = cv["summary"]["accuracy"]
    assert s["mean"] == np.mean(acc) and s["std"] == np.std(acc, ddof=1) and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert (mlp / "cv.html").read_text().count("r1-fold") == 5

    # every image outside the test split is scored exactly once, as its fold run's test part; the
    # checkpoint and early stopping of a fold see only its inner validation part, never those images;
    # no image of the data's test split is ever used
    data = prepare_data(build_config(None, {"data.source": "digits"}).data, get_spec("mlp"), 0, progress=False)
    seen = []
    for r in cv["runs"]:
        split = json.loads((mlp / r["name"] / "split.json").read_text())["indices"]
        train, val, held_out = set(split["train"]), set(split["val"]), set(split["test"])
        assert val and held_out and not (train & val) and not (held_out & (train | val))
        assert not (train | val | held_out) & set(data.splits["test"].tolist())
        assert r["images"] == len(held_out)
        preds = np.load(mlp / r["name"] / "predictions.npz")
        assert sorted(preds["indices"].tolist()) == sorted(held_out)  # out-of-fold predictions, saved
        seen += split["test"]
    assert sorted(seen) == sorted(data.splits["train"].tolist() + data.splits["val"].tolist())

    assert main(["cv", "--folds", "5", "--model", "cnn", "--out", str(cnn), *FLAGS]) == 0
    capsys.readouterr()
    assert main(["compare", str(mlp), str(cnn)]) == 0
    text = capsys.readouterr().out
    assert "accuracy per fold: mlp vs cnn" in text and "corrected resampled t-test" in text
    assert "McNemar exact on the pooled out-of-fold predictions" in text and "Wilcoxon signed-rank" in text
    assert main(["compare", str(mlp), str(cnn), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    b = [r["metrics"]["accuracy"] for r in json.loads((cnn / "cv.json").read_text())["runs"]]
    assert res["differences"] == [y - x for x, y in zip(acc, b)]
    assert res["ci95"][0] <= res["mean_difference"] <= res["ci95"][1]
    # after one epoch the cnn is clearly better on digits: McNemar on the pooled out-of-fold
    # predictions says so at 5 %, which the Wilcoxon test over 5 folds never can (its smallest p is
    # 0.0625); the corrected t-test agrees in direction and is more conservative (p 0.054 here: df 4
    # and the variance inflated by n_test/n_train)
    assert res["mean_difference"] > 0 and res["pooled_mcnemar"]["p"] < 0.05, res
    assert res["corrected_t"]["t"] > 0 and res["corrected_t"]["p"] < 0.1, res["corrected_t"]
    assert res["wilcoxon_p"] >= 0.0625


def test_an_interrupted_cv_resumes_without_retraining_finished_folds(tmp_path, capsys):
    cv = tmp_path / "cv"
    assert main(["cv", "--folds", "2", "--model", "mlp", "--out", str(cv), *FLAGS]) == 0
    kept = (cv / "r1-fold1" / "metrics.json").stat().st_mtime_ns
    shutil.rmtree(cv / "r1-fold2")
    (cv / "cv.json").unlink()
    assert main(["cv", "--folds", "2", "--model", "mlp", "--out", str(cv), *FLAGS]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(["cv", "--folds", "2", "--model", "mlp", "--out", str(cv), "--resume", *FLAGS]) == 0
    assert (cv / "r1-fold1" / "metrics.json").stat().st_mtime_ns == kept
    assert len(json.loads((cv / "cv.json").read_text())["runs"]) == 2


def test_cvs_with_different_folds_are_not_compared(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["cv", "--folds", "2", "--model", "mlp", "--out", str(a), *FLAGS]) == 0
    assert main(["cv", "--folds", "2", "--model", "mlp", "--split-seed", "1", "--out", str(b), *FLAGS]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 2
    assert "differ in split_seed" in capsys.readouterr().err


def test_a_fold_stopped_before_its_first_epoch_is_started_again_on_resume(tmp_path):
    cv = tmp_path / "cv"
    assert main(["cv", "--folds", "2", "--model", "mlp", "--out", str(cv), *FLAGS]) == 0
    fold = cv / "r1-fold2"
    for f in [fold / "metrics.json", *(fold / "checkpoints").iterdir()]:
        f.unlink()
    info = json.loads((fold / "run.json").read_text())
    (fold / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    assert main(["cv", "--folds", "2", "--model", "mlp", "--out", str(cv), "--resume", *FLAGS]) == 0
    assert (fold / "metrics.json").is_file() and json.loads((fold / "run.json").read_text())["status"] == "completed"


def test_a_resumed_fold_keeps_its_callbacks(tmp_path):
    """A fold interrupted after its first epoch resumes with the callbacks the CV was given (a
    study's budget guard among them), not without them."""
    import pytest

    from cnnlab.train.callbacks import Callback
    from cnnlab.workflows.cv import FoldHooks, cross_validate

    class Seen(Callback):
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, loop, epoch, logs):
            self.epochs.append(epoch)

    class Interrupt(Callback):
        order = 200  # after the checkpoint of epoch 1 is written

        def on_epoch_end(self, loop, epoch, logs):
            raise KeyboardInterrupt

    cfg = build_config(
        None,
        {"data.source": "digits", "model.name": "mlp", "model.hidden": [16], "train.epochs": 2, "run.report": False},
    )
    first = Seen()
    with pytest.raises(KeyboardInterrupt):
        cross_validate(
            cfg, CvSettings(out=str(tmp_path / "cv"), folds=2), False, FoldHooks(callbacks=[first, Interrupt()])
        )
    assert first.epochs == [1]
    again = Seen()
    cross_validate(cfg, CvSettings(out=str(tmp_path / "cv"), folds=2, resume=True), False, FoldHooks(callbacks=[again]))
    assert again.epochs == [2, 1, 2]  # fold 1 resumed at epoch 2 with the callback, then fold 2 whole


def test_resume_refuses_other_folds_or_settings_naming_the_saved_value(tmp_path):
    import pytest

    from cnnlab.core.errors import CnnlabError
    from cnnlab.workflows.cv import cross_validate, read_cv

    base = {"data.source": "digits", "model.name": "mlp", "model.hidden": [16], "train.epochs": 1, "run.report": False}
    cfg = build_config(None, base)
    (tmp_path / "cv").mkdir()
    from cnnlab.workflows.cv.folds import _plan_state, cv_group

    cv_group(tmp_path / "cv").save(_plan_state(cfg, 2, 1))  # as a killed CV leaves it
    with pytest.raises(CnnlabError, match="started with --folds 2, not 3"):
        cross_validate(cfg, CvSettings(out=str(tmp_path / "cv"), folds=3, resume=True), progress=False)
    other = build_config(None, {**base, "model.name": "cnn"})
    with pytest.raises(CnnlabError, match="started with model.name = 'mlp', not 'cnn'"):
        cross_validate(other, CvSettings(out=str(tmp_path / "cv"), folds=2, resume=True), progress=False)
    with pytest.raises(CnnlabError, match="has not finished; finish it with cnnlab cv --resume"):
        read_cv(tmp_path / "cv")
    done = cross_validate(cfg, CvSettings(out=str(tmp_path / "cv"), folds=2, resume=True), progress=False)
    assert done.status == "completed" and read_cv(tmp_path / "cv").folds == 2
