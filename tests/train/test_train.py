from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnlab import api
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset


def read_history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def digits_cfg(out: Path, **extra):
    """A quick digits run; without report.html (tests that read the report ask for it). Two threads,
    not auto: auto follows the machine's load, and the equality tests here compare runs bit for bit
    (the schema says so: a fixed N gives bitwise-equal reruns on any load)."""
    return build_config(
        None,
        {
            "data.source": "digits",
            "model.name": "cnn",
            "train.epochs": 3,
            "train.batch_size": 32,
            "train.threads": 2,
            "run.out": str(out),
            "run.report": False,
            **extra,
        },
    )


def test_cli_train_digits_mlp_writes_full_run_and_evaluate_agrees(tmp_path, capsys):
    run = tmp_path / "RUN"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--out", str(run), "-q"]) == 0
    out = capsys.readouterr().out
    for name in (
        "config.yaml",
        "history.csv",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "metrics.json",
        "dataset.json",
        "split.json",
        "run.json",
    ):
        assert (run / name).is_file(), name
    rows = read_history(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and len(metrics["confusion_matrix"]) == 10
    assert set(metrics["per_class"]["3"]) == {"precision", "recall", "f1", "support", "auc", "area_ratio"}
    assert f"test accuracy {metrics['accuracy']:.4f}" in out
    assert json.loads((run / "run.json").read_text())["status"] == "completed"

    assert main(["evaluate", str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy"] == metrics["accuracy"]
    assert again["confusion_matrix"] == metrics["confusion_matrix"]


def test_same_seed_same_history_other_seed_differs(tmp_path):
    a = api.train(digits_cfg(tmp_path / "a"), progress=False)
    b = api.train(digits_cfg(tmp_path / "b"), progress=False)
    c = api.train(digits_cfg(tmp_path / "c", **{"train.seed": 1}), progress=False)
    assert without_seconds(read_history(a.run)) == without_seconds(read_history(b.run))
    assert a.metrics["accuracy"] == b.metrics["accuracy"]
    assert without_seconds(read_history(a.run)) != without_seconds(read_history(c.run))


KILLER = textwrap.dedent("""
    import os, signal, sys
    from cnnlab import api
    from cnnlab.workflows.resolve import build_config
    from cnnlab.train.callbacks import Callback

    class KillMidEpoch(Callback):
        def on_batch_end(self, loop, step, logs):
            if loop.epoch == 1 and step == 20:   # 20 batches into epoch 2
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = build_config(None, {"data.source": "digits", "model.name": "cnn", "train.epochs": 3,
                              "train.batch_size": 32, "train.threads": 2, "run.out": sys.argv[1],
                              "run.report": False})
    api.train(cfg, callbacks=[KillMidEpoch()], progress=False)
""")


@pytest.mark.long
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(killed)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    assert proc.returncode == -9, proc.stderr
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    assert RunFolder(killed).state().describe() == "interrupted (process gone)"  # what is true
    assert not (killed / "metrics.json").exists()  # not passed off as complete
    assert torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert len(read_history(killed)) == 1

    resumed = api.train(None, api.TrainPlan(resume=killed), progress=False)
    # both at 2 threads: auto follows the machine's load, and another thread count sums in another order
    straight = api.train(digits_cfg(tmp_path / "straight", **{"train.threads": 2}), progress=False)

    assert without_seconds(read_history(killed)) == without_seconds(read_history(straight.run))
    wa = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(straight.run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.metrics == straight.metrics
    info = json.loads((killed / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed_from_epoch"] == 1


def test_resume_extends_a_finished_run(tmp_path, capsys):
    run = tmp_path / "r"
    api.train(digits_cfg(run, **{"train.epochs": 2, "train.schedule": "constant"}), progress=False)
    with pytest.raises(CnnlabError, match="already finished 2 epochs"):
        api.train(None, api.TrainPlan(resume=run), progress=False)
    assert main(["train", "--resume", str(run), "--epochs", "4", "-q"]) == 0
    assert [r["epoch"] for r in read_history(run)] == ["1", "2", "3", "4"]
    assert "epochs: 4" in (run / "config.yaml").read_text()
    # a 4-epoch run from scratch follows the same path (a constant LR does not depend on the total)
    straight = api.train(
        digits_cfg(tmp_path / "s", **{"train.epochs": 4, "train.schedule": "constant"}), progress=False
    )
    assert without_seconds(read_history(run)) == without_seconds(read_history(straight.run))


def test_early_stopping_stops_and_says_why(tmp_path):
    # lr so small that validation loss cannot improve by min_delta
    res = api.train(
        digits_cfg(
            tmp_path / "es", **{"train.epochs": 30, "train.patience": 2, "train.min_delta": 0.01, "optim.lr": 1e-6}
        ),
        progress=False,
    )
    assert len(res.history) == 3  # epoch 1 sets the best, epochs 2 and 3 fail to beat it
    assert res.stop_reason == "early stopping on val_loss after epoch 3"
    assert json.loads((res.run / "run.json").read_text())["stop_reason"] == res.stop_reason


def test_diverging_training_stops_with_a_reason_and_still_reports(tmp_path):
    res = api.train(
        digits_cfg(
            tmp_path / "nan", **{"train.epochs": 10, "optim.lr": 10.0, "optim.name": "sgd", "model.name": "mlp"}
        ),
        progress=False,
    )
    assert "training loss became nan" in res.stop_reason and "lower the learning rate" in res.stop_reason
    assert len(res.history) < 10 and "accuracy" in res.metrics


@pytest.mark.parametrize("opt", ["sgd", "rmsprop", "adamw"])
def test_other_optimizers_train(tmp_path, opt):
    res = api.train(
        digits_cfg(tmp_path / opt, **{"optim.name": opt, "train.epochs": 2, "optim.lr": 0.01, "model.name": "mlp"}),
        progress=False,
    )
    assert res.metrics["accuracy"] > 0.5


def test_folder_with_mixed_and_broken_files_trains_and_reports_skips(tmp_path, caplog):
    from tests.data.test_data import write_mixed_tree

    root = write_mixed_tree(tmp_path / "mixed")
    make_folder_dataset(root, classes=2, per_class=6, size=20)  # more images: class_0, class_1 too
    run = tmp_path / "run"
    cfg = build_config(
        None,
        {"data.source": str(root), "model.name": "cnn", "train.epochs": 1, "data.input_size": 16, "run.out": str(run)},
    )
    res = api.train(cfg, progress=False)
    assert res.metrics["num_samples"] > 0
    summary = json.loads((run / "dataset.json").read_text())
    assert sorted(Path(s["path"]).name for s in summary["skipped"]) == ["empty.png", "notes.png", "truncated.jpg"]
    assert summary["channels"] == 3 and summary["input_size"] == 16
    assert any("skipped 3 unreadable files" in r.getMessage() for r in caplog.records)


def test_predict_top_k_and_unreadable_image(tmp_path, folder_dataset, capsys):
    run = tmp_path / "run"
    api.train(
        build_config(
            None, {"data.source": str(folder_dataset), "model.name": "cnn", "train.epochs": 2, "run.out": str(run)}
        ),
        progress=False,
    )
    img = next((folder_dataset / "class_1").glob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    results = api.predict(run, [img, bad], api.PredictSettings(top_k=2))
    every = api.predict(run, [img], api.PredictSettings(top_k=100))[0].top  # all classes: a probability distribution
    assert len(every) == len(json.loads((run / "dataset.json").read_text())["classes"])
    assert abs(sum(t.prob for t in every) - 1) < 1e-5
    assert len(results[0].top) == 2 and results[0].top == every[:2]  # the two most probable of them
    assert results[0].top[0].prob >= results[0].top[1].prob
    assert results[1].error.startswith("not an image")
    assert main(["predict", str(run), str(img), "--top-k", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["top"][0]["class"] in {"class_0", "class_1", "class_2"}


def test_split_is_saved_and_reused_by_evaluate(tmp_path, folder_dataset):
    run = tmp_path / "run"
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(folder_dataset),
                "model.name": "mlp",
                "train.epochs": 1,
                "run.out": str(run),
                "train.seed": 5,
            },
        ),
        progress=False,
    )
    saved = json.loads((run / "split.json").read_text())
    assert len(saved["indices"]["test"]) == res.metrics["num_samples"]
    assert api.evaluate(run).figures["accuracy"] == res.metrics["accuracy"]
    # the data changed under the run: evaluate refuses to pretend the split still applies
    (folder_dataset / "class_0" / "img_000.png").unlink()
    with pytest.raises(CnnlabError, match="no longer matches"):
        api.evaluate(run)


def test_evaluate_on_another_dataset_matches_classes_by_name(tmp_path):
    train_dir = make_folder_dataset(tmp_path / "a", classes=3, per_class=10, seed=0)
    other = make_folder_dataset(tmp_path / "b", classes=2, per_class=5, seed=9)
    run = tmp_path / "run"
    api.train(
        build_config(
            None, {"data.source": str(train_dir), "model.name": "cnn", "train.epochs": 1, "run.out": str(run)}
        ),
        progress=False,
    )
    m = api.evaluate(run, api.EvaluateSettings(data=[str(other)])).document()
    assert m["num_samples"] == 10 and list(m["per_class"]) == ["class_0", "class_1", "class_2"]
    assert m["per_class"]["class_2"]["support"] == 0


def test_existing_run_folder_is_not_clobbered(tmp_path):
    run = tmp_path / "r"
    api.train(digits_cfg(run, **{"train.epochs": 1, "model.name": "mlp"}), progress=False)
    with pytest.raises(CnnlabError, match="already exists; resume it with"):
        api.train(digits_cfg(run, **{"train.epochs": 1}), progress=False)
    api.train(digits_cfg(run, **{"train.epochs": 1}), api.TrainPlan(overwrite=True), progress=False)
    assert RunFolder(run).status()["status"] == "completed"


def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(tmp_path):
    from cnnlab.train.callbacks import Callback

    class CtrlC(Callback):
        def on_batch_end(self, loop, step, logs):
            if loop.epoch == 1 and step == 3:
                raise KeyboardInterrupt

    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        api.train(digits_cfg(run, **{"model.name": "mlp"}), callbacks=[CtrlC()], progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_done"] == 1
    assert not (run / "metrics.json").exists()
    res = api.train(None, api.TrainPlan(resume=run), progress=False)
    assert len(res.history) == 3 and RunFolder(run).status()["status"] == "completed"


def test_a_refused_micro_batch_makes_no_run_folder(tmp_path):
    """train.micro_batch below the batch of a BatchNorm net in training mode is refused before the
    run folder exists, so the corrected command can use the same --out."""
    run = tmp_path / "r"
    cfg = digits_cfg(run, **{"model.name": "cnn-bn", "train.epochs": 1, "train.micro_batch": 8})
    with pytest.raises(CnnlabError, match="train.micro_batch 8 below train.batch_size 32"):
        api.train(cfg, progress=False)
    assert not run.exists()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_stop_while_preparing_a_new_run_is_written_into_its_run_json(tmp_path, monkeypatch, stop):
    """Ctrl-C or an error after the run folder is made but before its first epoch (a long feature
    cache, say) leaves run.json saying so, not 'running', and the lock released."""
    from cnnlab.train.engines import TorchEngine

    def halt(self, state):
        raise stop("while preparing")

    monkeypatch.setattr(TorchEngine, "prepare", halt)
    run = tmp_path / "r"
    with pytest.raises(stop):
        api.train(digits_cfg(run, **{"train.epochs": 1}), progress=False)
    info = json.loads((run / "run.json").read_text())
    if stop is KeyboardInterrupt:
        assert info["status"] == "interrupted" and info["epochs_done"] == 0
    else:
        assert info["status"] == "failed" and "while preparing" in info["error"]
    folder = RunFolder(run)
    folder.lock("check it is free")  # raises while another holder has it
    folder.unlock()


def test_a_monitor_the_data_cannot_have_fails_before_the_run_folder(tmp_path):
    with pytest.raises(CnnlabError, match="'val_hamming_loss' is defined for multi-label data"):
        api.train(digits_cfg(tmp_path / "r", **{"train.monitor": "val_hamming_loss"}), progress=False)
    assert not (tmp_path / "r").exists()
    res = api.train(
        digits_cfg(
            tmp_path / "ok", **{"train.monitor": "val_balanced_accuracy", "train.epochs": 1, "model.name": "mlp"}
        ),
        progress=False,
    )
    assert "val_balanced_accuracy" in (res.run / "history.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("engine", ["torch", "scratch"])
def test_steps_with_a_validation_row_every_k_steps_in_both_engines(tmp_path, engine):
    """Issue 25, item 3 (seed 001: dev accuracy every 100 steps): --steps N --eval-every K gives
    N / K history rows, each after K more optimisation steps, whatever the epoch length."""
    from cnnlab.cli import main

    out = tmp_path / engine
    args = ["train", "--data", "digits", "--model", "cnn-small", "--engine", engine, "--steps", "60", "--eval-every",
            "20", "--batch-size", "32", "--out", str(out), "-q"]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [20, 40, 60] and all(r["val_acc"] for r in rows)
    saved = RunFolder(out).read_config().train
    assert (saved.steps, saved.eval_every, saved.epochs) == (60, 20, 3)
    assert json.loads((out / "run.json").read_text())["epochs_done"] == 3


def test_validations_within_an_epoch_train_by_steps_with_epoch_counts_kept(tmp_path):
    """Issue 26 (a sweep's first rung below one epoch): --evals-per-epoch K splits each epoch's
    steps into K validated periods; patience counted in epochs counts periods, so it waits as long."""
    out = tmp_path / "r"
    args = ["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--evals-per-epoch", "3",
            "--batch-size", "64", "--patience", "2", "--threads", "1", "--out", str(out), "-q"]  # fmt: skip
    assert main(args) == 0
    n_train = len(json.loads((out / "split.json").read_text())["indices"]["train"])
    every = -(-n_train // 64) // 3
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [every * i for i in range(1, 7)] and all(r["val_acc"] for r in rows)
    saved = RunFolder(out).read_config().train
    assert (saved.steps, saved.eval_every, saved.epochs, saved.patience) == (6 * every, every, 6, 6)
    assert saved.evals_per_epoch == 1  # resolved: a resume continues by steps


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "20", "--evals-per-epoch", "2"], "train.evals_per_epoch splits epochs"),
        (
            ["--evals-per-epoch", "2", "--fine-tune", "1,1", "--model", "efficientnet-lite0"],
            "train.evals_per_epoch with model.fine_tune",
        ),  # fmt: skip
        (["--steps", "10", "--eval-every", "3"], "must be a multiple of train.eval_every 3"),
        (["--eval-every", "5"], "train.eval_every needs train.steps"),
        (["--steps", "10", "--epochs", "2"], "give train.steps or train.epochs, not both"),
        (["--steps", "1000000000"], "10,000,000 validations; at most 100,000"),
        (["--steps", "0"], "train.steps"),
        (["--steps", "20", "--fine-tune", "1,1", "--model", "efficientnet-lite0"], "train.steps with model.fine_tune"),
    ],
)
def test_bad_step_settings_are_one_line_before_any_work(tmp_path, capsys, flags, message):
    assert main(["train", "--data", "digits", "--model", "mlp", *flags, "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_the_report_draws_a_run_trained_by_steps_against_the_step(tmp_path, monkeypatch):
    """Issue 25 (seed 001's Figs 8-16: dev accuracy against the step): a run trained by --steps is
    drawn with the step on the x axis, its validation points at the steps they were taken."""
    from cnnlab.evaluate import plots

    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, tight=True: drawn.setdefault("fig", fig) and path)
    history = [{"epoch": str(i), "step": str(100 * i), "train_loss": "1", "val_loss": "1", "train_acc": ".5",
                "val_acc": ".6"} for i in (1, 2, 3)]  # fmt: skip
    steps = [{"step": str(s), "loss": "1", "acc": ".5"} for s in range(10, 301, 10)]
    plots.plot_curves(history, tmp_path / "c.png", steps)
    ax = drawn["fig"].axes[1]
    assert ax.get_xlabel() == "step"
    lines = {ln.get_label(): list(ln.get_xdata()) for ln in ax.get_lines()}
    assert lines["validation"] == [100, 200, 300] and lines["train, every 10 steps"][-1] == 300
    drawn.clear()
    plots.plot_curves([{k: v for k, v in h.items() if k != "step"} for h in history], tmp_path / "e.png")
    assert drawn["fig"].axes[0].get_xlabel() == "epoch"


def test_a_run_scored_on_validation_reuses_its_last_validation_and_agrees_with_a_second_pass(tmp_path, caplog):
    """A sweep trial (test split held out) is scored on the validation split: when its best
    checkpoint is its last validation, the loop's logits stand in for a second pass over the
    split, and they give the figures that pass gives."""
    import logging

    import numpy as np

    from cnnlab.runs.data import load_run_data
    from cnnlab.workflows.evaluation import evaluate_checkpoint
    from cnnlab.workflows.training import train

    cfg = digits_cfg(tmp_path / "run", **{"train.epochs": 2, "model.name": "mlp", "optim.lr": 0.003})
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        res = train(cfg, progress=False, hold_out_test=True)
    assert res.metrics["split"] == "val" and res.best_epoch == 2  # improving: the best is the last
    assert "as scored by its validation" in caplog.text
    run = RunFolder(res.run)
    data = load_run_data(run, run.read_config(), False)
    again = evaluate_checkpoint(run, data, torch.device("cpu"), 32, split="val")  # a fresh pass
    for k in ("accuracy", "macro_f1", "log_loss"):
        assert np.isclose(res.metrics[k], again[k], atol=1e-6), k
    best = next(h for h in res.history if h["epoch"] == res.best_epoch)
    assert res.metrics["accuracy"] == pytest.approx(best["val_acc"], abs=1e-9)
    assert np.load(run.path / "predictions.npz")["probs"].shape == (len(data.splits["val"]), 10)
