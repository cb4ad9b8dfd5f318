"""Every sampler and pruner a spec can name, through cnnlab's own sweep runner, on a synthetic
objective: each trial's "training" is a curve computed from its parameters, delivered to the run's
callbacks epoch by epoch exactly as the epoch loop does (the pruning callback decides), so 12
trials take a fraction of a second and the test is about the sweep, not the nets."""

from __future__ import annotations

import json
import math
import time

import pytest
import yaml

from cnnlab.core.settings import SweepSettings
from cnnlab.train.state import LoopState
from cnnlab.workflows.sweep import runner
from cnnlab.workflows.training import TrainResult

EPOCHS = 9


def curve(cfg, epoch: int) -> float:
    """val_acc after ``epoch``: best at lr 1e-2.5 and 64 hidden units, approached as 1 - e^(-epoch/3)."""
    quality = 0.95 - 0.08 * (math.log10(cfg.optim.lr) + 2.5) ** 2 - (0.05 if cfg.model.hidden != [64] else 0.0)
    return quality * (1 - math.exp(-epoch / 3))


def fake_train(cfg, overwrite=False, callbacks=(), progress=False, hold_out_test=False, seconds=0.0):
    loop, history = LoopState(epochs=cfg.train.epochs), []
    for cb in callbacks:
        cb.on_train_begin(loop)
    for epoch in range(1, cfg.train.epochs + 1):
        for cb in callbacks:
            cb.on_epoch_begin(loop, epoch)
        time.sleep(seconds)
        row = {"epoch": epoch, "val_acc": curve(cfg, epoch)}
        history.append(row)
        loop.epoch = epoch
        for cb in callbacks:
            try:
                cb.on_epoch_end(loop, epoch, row)
            except runner.StopTraining as stop:
                loop.stop(stop.reason)
        if loop.stop_training:
            break
    best = max(history, key=lambda h: h["val_acc"])
    return TrainResult(cfg.run.out, history, {}, loop.stop_reason, "val_acc", best["val_acc"], best["epoch"])


def sweep(tmp_path, monkeypatch, method: str, pruner: str | dict = "none", trials: int = 12, **extra):
    seconds = extra.pop("seconds", 0.0)
    monkeypatch.setattr(runner, "train", lambda cfg, **k: fake_train(cfg, **k, seconds=seconds))
    space = {"optim.lr": {"type": "log-float", "low": 1e-4, "high": 1e-1}, "model.hidden": [[32], [64]]}
    if method == "grid":
        space = {"optim.lr": [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "model.hidden": [[32], [64]]}
    tree = {"base": {"data": {"source": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": EPOCHS},
                     "run": {"report": False}},
            "space": space, "method": method, "trials": trials, "objective": "val_acc", "pruner": pruner,
            "seed": 0, **extra}  # fmt: skip
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tree))
    out = tmp_path / "sw"
    runner.run_sweep(SweepSettings(spec=str(spec), out=str(out)), progress=False)
    return json.loads((out / "sweep.json").read_text())


@pytest.mark.parametrize("method", ["grid", "random", "tpe", "cmaes", "gp"])
def test_each_sampler_runs_twelve_trials_and_finds_a_good_point(tmp_path, monkeypatch, method):
    s = sweep(tmp_path, monkeypatch, method)
    trials = s["trials"]
    assert len(trials) == 12 and all(t["state"] == "complete" for t in trials)
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 12  # twelve different points
    best = max(t["value"] for t in trials)
    assert best == pytest.approx(max(curve_of(t) for t in trials))  # the value is the trial's best epoch
    assert best > 0.85 * (1 - math.exp(-EPOCHS / 3))  # near the optimum's 0.95 x the curve's height


def curve_of(t) -> float:
    class C:
        class optim:
            lr = t["params"]["optim.lr"]

        class model:
            hidden = t["params"]["model.hidden"]

    return max(curve(C, e) for e in range(1, EPOCHS + 1))


@pytest.mark.parametrize("pruner", ["median", "halving", "hyperband"])
def test_each_pruner_stops_poor_trials_early_and_records_them_pruned_with_their_last_epoch(
    tmp_path, monkeypatch, pruner
):
    s = sweep(tmp_path, monkeypatch, "random", {"type": pruner, "warmup_epochs": 1, "startup_trials": 2})
    trials = s["trials"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    complete = [t for t in trials if t["state"] == "complete"]
    assert len(trials) == 12 and pruned and complete
    for t in pruned:
        assert 1 <= t["last_epoch"] < EPOCHS  # stopped early, and says where
    assert all(t["last_epoch"] == EPOCHS for t in complete)
    best_pruned = max(t["value"] for t in pruned)
    assert max(t["value"] for t in complete) >= best_pruned  # what was cut was not the best


def test_a_sweep_timeout_starts_no_trial_after_it(tmp_path, monkeypatch):
    started = time.time()
    s = sweep(tmp_path, monkeypatch, "random", trials=1000, timeout="2s", seconds=0.05)
    took = time.time() - started
    assert 2 <= len(s["trials"]) < 1000
    assert took < 2 + EPOCHS * 0.05 + 5  # the last trial started before the deadline, then finished
    starts = [t["started_at"] for t in s["trials"]]
    assert max(starts) - min(starts) <= 2.0 + 0.1


def test_a_method_whose_package_is_missing_is_refused_before_any_trial(tmp_path, monkeypatch):
    import importlib.util

    from cnnlab.core.errors import CnnlabError
    from cnnlab.workflows.sweep.spec import check_spec

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real(name, *a))
    tree = {"base": {"data": {"source": "digits"}}, "space": {"optim.lr": [0.01, 0.1]}, "trials": 4, "method": "cmaes"}
    with pytest.raises(CnnlabError, match="pip install cmaes"):
        check_spec(tree, "spec.yaml")
