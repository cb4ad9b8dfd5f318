"""`cnnlab sweep` (issue 11): grid/TPE over run folders, honest objective, importance beside
correlation, parallel local workers that survive a SIGKILL, a shared PostgreSQL study, the report in
a real browser, and the experiment trackers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.sweep.spec import check_spec

GRID = {
    "base": {
        "data": {"source": "digits"},
        "model": {"name": "mlp"},
        "train": {"epochs": 3, "batch_size": 64},
        "run": {"report": False},
    },
    "space": {"optim.lr": [0.001, 0.01], "model.hidden": [[32], [64]]},
    "method": "grid",
    "objective": "val_acc",
    "pruner": "none",
}


def write_spec(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = write_spec(tmp / "grid.yaml", GRID)
    assert main(["sweep", str(spec), "--out", str(tmp / "sweep"), "-q"]) == 0
    return tmp / "sweep"


def test_grid_runs_every_point_once_and_its_best_yaml_retrains_to_the_same_figure(grid_sweep, tmp_path, capsys):
    s = json.loads((grid_sweep / "sweep.json").read_text())
    assert s["done"] == 4 and s["outcomes"] == {"complete": 4}
    points = {json.dumps(t["params"], sort_keys=True) for t in s["trials"]}
    assert len(points) == 4 and len(s["trials"]) == 4  # every grid point, none twice
    for t in s["trials"]:  # ordinary run folders that never saw a test image
        run = RunFolder(grid_sweep / t["run"])
        assert run.state().status == "completed"
        split = json.loads((run.path / "split.json").read_text())
        assert split["indices"]["test"] == [] and len(split["indices"]["val"]) > 0
        assert json.loads(run.metrics_json.read_text())["split"] == "val"
    best = s["best"]
    assert best["value"] == max(t["value"] for t in s["trials"])
    html = (grid_sweep / "sweep.html").read_text()
    assert f"Best config (trial {best['trial']})" in html
    pace = s["pace"]  # issue 26: trials per hour, and the best so far against wall time
    assert pace["trials_per_hour"] > 0 and "trials per hour" in html
    assert 0 < pace["median_setup_seconds"] < 30 and "start to its first batch" in html
    bests = [v for _, v in pace["best_over_time"]]
    minutes = [m for m, _ in pace["best_over_time"]]
    assert bests == sorted(bests) and bests[-1] == best["value"] and minutes == sorted(minutes)
    # the best YAML re-trains (on the full split, test used once) to the same validation figure
    out = tmp_path / "best-run"
    assert main(["train", "--config", str(grid_sweep / "best.yaml"), "--out", str(out), "-q"]) == 0
    retrained = max(h["val_acc"] for h in RunFolder(out).history())
    assert retrained == pytest.approx(best["value"], abs=1e-6)
    # a finished sweep resumed does nothing more
    assert main(["sweep", "--resume", "--out", str(grid_sweep), "-q"]) == 0
    assert len(json.loads((grid_sweep / "sweep.json").read_text())["trials"]) == 4
    capsys.readouterr()


def test_sweep_report_opens_in_chromium_with_every_figure_drawn(grid_sweep):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (make browser)")
    assert main(["sweep-report", str(grid_sweep)]) == 0  # rebuilt from the study at any time
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((grid_sweep / "sweep.html").resolve().as_uri())
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        ids = page.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
        first = page.evaluate("document.querySelector('table.sortable tbody tr td').textContent")
        page.click("table.sortable th:nth-child(3)")  # sort by the objective, twice: highest first
        page.click("table.sortable th:nth-child(3)")
        top = page.evaluate("document.querySelector('table.sortable tbody tr td:nth-child(3)').textContent")
        browser.close()
    assert not errors, errors
    assert {"band", "over-time", "importance", "parallel", "scatter", "best", "trials"} <= set(ids)
    assert len(images) == 5 and all(ok for _, ok in images), images
    assert first == "0"
    s = json.loads((grid_sweep / "sweep.json").read_text())
    assert float(top) == pytest.approx(s["best"]["value"], abs=1e-4)


def test_importance_and_correlation_rank_the_one_parameter_that_matters_first(tmp_path):
    import optuna

    from cnnlab.workflows.sweep.report import correlations, importance, trial_rows
    from cnnlab.workflows.sweep.runner import open_sweep

    tree = {
        "base": {"data": {"source": "digits"}},
        "trials": 40,
        "method": "random",
        "objective": "val_acc",
        "space": {
            "optim.lr": {"type": "log-float", "low": 1e-4, "high": 1e-1},
            "optim.weight_decay": {"type": "float", "low": 0.0, "high": 1e-3},
            "train.batch_size": [32, 64, 128],
        },
    }
    sweep = open_sweep(write_spec(tmp_path / "s.yaml", tree), tmp_path / "sweep")
    study = sweep.study(sampler=optuna.samplers.RandomSampler(seed=3))
    rng = np.random.default_rng(0)

    def objective(trial):  # depends on lr only; the others are noise
        lr = trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("optim.weight_decay", 0.0, 1e-3)
        trial.suggest_categorical("train.batch_size", [32, 64, 128])
        trial.set_user_attr("verdict", "run")
        return 0.9 - 0.05 * (np.log10(lr) + 2.5) ** 2 + rng.normal(0, 0.002)

    study.optimize(objective, n_trials=40)
    imp = importance(sweep, study)
    for name in ("fanova", "ped_anova"):
        assert next(iter(imp[name])) == "optim.lr", imp[name]
    # correlation is signed: on the rising side of the optimum, larger lr is better
    lo = [t for t in study.trials if t.params["optim.lr"] < 10**-2.5]
    rows = trial_rows(sweep, lo)
    corr = correlations(sweep.spec, rows)
    assert max(corr, key=lambda k: abs(corr[k])) == "optim.lr" and corr["optim.lr"] > 0.8


@pytest.mark.parametrize(
    "tree,match",
    [
        ({"objective": "test_acc"}, "validation figures only"),
        ({"objective": "val_acuracy"}, "did you mean 'val_acc'"),
        ({"space": {"optim.lrr": [0.1]}}, "did you mean 'optim.lr'"),
        ({"space": {"run.out": ["a"]}}, "chosen by the sweep"),
        ({"space": {"train.evals_per_epoch": [1, 3]}}, "same fractions of an epoch"),
        ({"space": {"optim.lr": [-1.0]}}, "value -1.0 is not accepted"),
        ({"space": {"optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "low < high"),
        ({"space": {"optim.lr": {"type": "log-float", "low": 0.0, "high": 0.1}}}, "log scale needs low > 0"),
        ({"method": "grid", "space": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1}}}, "needs a choice"),
        ({"trials": None, "method": "tpe"}, "give a budget"),
        ({"budget": 3}, "unknown field 'budget'"),
        ({"timeout": "ten minutes"}, "not a duration"),
        ({"seed": True}, "seed: expected a number, not true/false"),
        ({"trials": True}, "trials: expected a number, not true/false"),
        ({"space": {"optim.lr": {"type": "float", "low": float("nan"), "high": 1.0}}}, "finite number"),
        ({"start": [{"optim.lr": 0.5}]}, r"start\[0\]: optim.lr=0.5 is not one of its values"),
        ({"start": [{"optim.lr": 0.01, "optim.weight_decay": 0}]}, r"start\[0\]: give a value of each of optim.lr"),
        (
            {"space": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1}}, "start": [{"optim.lr": 1.0}]},
            r"optim.lr=1.0 is not a number within \[0.01, 0.1\]",
        ),  # fmt: skip
    ],
)
def test_bad_specs_are_refused_before_any_trial_with_the_field_named(tree, match):
    base = {"base": {"data": {"source": "digits"}}, "space": {"optim.lr": [0.01, 0.1]}, "trials": 4}
    merged = {**base, **tree}
    merged = {k: v for k, v in merged.items() if v is not None}
    with pytest.raises(CnnlabError, match=match):
        check_spec(merged, "spec.yaml")


def test_sweep_folder_misuse_is_explained(tmp_path, capsys):
    spec = write_spec(tmp_path / "g.yaml", GRID)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists; add --resume" in capsys.readouterr().err
    assert main(["sweep", "--resume", "--out", str(tmp_path / "taken")]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err
    assert main(["sweep-report", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err


def test_an_unreachable_storage_is_named_before_any_folder_is_made(tmp_path, capsys):
    spec = write_spec(tmp_path / "g.yaml", GRID)
    url = "postgresql+psycopg://me:secret@127.0.0.1:1/none"
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "cannot be opened" in err and "secret" not in err and "me:***@" in err and err.count("\n") == 1
    assert not (tmp_path / "sw").exists()


def test_a_finite_space_is_not_searched_twice(tmp_path):
    """Random search over 2 × 2 values with a budget of 10: the budget is the 4 distinct
    configurations, and a proposal that repeats one is recorded as skipped, never trained."""
    tree = {
        **GRID,
        "method": "random",
        "trials": 10,
        "base": {**GRID["base"], "train": {"epochs": 1, "batch_size": 64}},
    }
    spec = write_spec(tmp_path / "r.yaml", tree)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "-q"]) == 0
    s = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    trained = [t for t in s["trials"] if t["state"] != "skipped"]
    assert s["budget"] == 4 and len(trained) == 4
    assert len({json.dumps(t["params"], sort_keys=True) for t in trained}) == 4
    assert all("duplicate of trial" in t["note"] for t in s["trials"] if t["state"] == "skipped")
    assert len(list((tmp_path / "sw" / "trials").iterdir())) == 4


def test_successive_halving_prunes_below_one_epoch_with_validations_within_epochs(tmp_path):
    """Issue 26 (multi-fidelity): base train.evals_per_epoch 3 and halving from the first validation
    put rungs at 1/3, 1 and 3 epochs: losing trials stop after a third of an epoch, the first (alone
    at every rung) trains to the end, and the report's curves are drawn at fractions of an epoch."""
    tree = {
        **GRID,
        "method": "random",
        "trials": 8,
        "space": {"optim.lr": {"type": "log-float", "low": 1e-5, "high": 0.3}},
        "base": {**GRID["base"], "train": {"epochs": 3, "batch_size": 64, "evals_per_epoch": 3, "threads": 1}},
        "pruner": {"type": "halving", "warmup_epochs": 0},
    }
    spec = write_spec(tmp_path / "h.yaml", tree)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "-q"]) == 0
    s = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    periods = {t["trial"]: len(t["curve"]) for t in s["trials"]}
    states = {t["trial"]: t["state"] for t in s["trials"]}
    assert states[0] == "complete" and periods[0] == 9
    assert any(n == 1 for n in periods.values()), periods  # pruned at a third of an epoch
    assert all(periods[t] in (1, 3) for t, st in states.items() if st == "pruned"), (periods, states)
    assert [x for x, _ in s["trials"][0]["curve"]][:3] == [0.3333, 0.6667, 1.0]


def test_the_pruners_count_rungs_in_validations_and_take_the_specs_settings():
    """halving/hyperband rungs are validations: with base train.evals_per_epoch 3 and 10 epochs the
    top rung is 30 and warmup_epochs 1 puts the first at 3; the reduction factor passes through."""
    from cnnlab.workflows.sweep.spec import pruner_for

    def spec(pruner):
        tree = {"base": {"data": {"source": "digits"}, "train": {"epochs": 10, "evals_per_epoch": 3}},
                "space": {"optim.lr": [0.01, 0.1]}, "trials": 4, "pruner": pruner}  # fmt: skip
        return check_spec(tree, "spec.yaml")

    hb = pruner_for(spec({"type": "hyperband", "warmup_epochs": 1, "reduction_factor": 4}))
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (3, 30, 4)
    sh = pruner_for(spec({"type": "halving", "warmup_epochs": 0})).halving
    assert (sh._min_resource, sh._reduction_factor) == (1, 3)
    assert type(pruner_for(spec({"type": "halving", "recheck": False}))).__name__ == "SuccessiveHalvingPruner"
    quoted = check_spec({"base": {"data": {"source": "digits"}, "train": {"epochs": 10, "evals_per_epoch": "3"}},
                         "space": {"optim.lr": [0.01, 0.1]}, "trials": 4, "pruner": "hyperband"}, "s.yaml")  # fmt: skip
    assert pruner_for(quoted)._max_resource == 30  # the value as the trials read it, not the raw YAML


def test_a_promotion_made_with_no_one_to_beat_is_undone_when_better_trials_reach_its_rung():
    """A reaches the first rung alone and is promoted (asynchronous halving); B then reports better
    there. Plain halving lets A train on; rechecked halving prunes A at its next report (it would
    not have been promoted had B come first). B, the best when C and D arrive, then stands; so
    does E, promoted among five, even after F and G push it out of the rung's top third."""
    import optuna

    from cnnlab.workflows.sweep.spec import RecheckedHalving

    def run(pruner):
        study = optuna.create_study(direction="maximize", pruner=pruner)
        pruned = {}

        def report(t, value, step):
            t.report(value, step)
            pruned[t.number, step] = t.should_prune()
            if pruned[t.number, step]:
                study.tell(t, state=optuna.trial.TrialState.PRUNED)

        a, b = study.ask(), study.ask()
        report(a, 0.5, 1)
        report(b, 0.9, 1)
        for v in (0.8, 0.7):
            report(study.ask(), v, 1)  # C and D: not the top third, pruned by halving itself
        report(b, 0.91, 2)
        e = study.ask()
        report(e, 0.95, 1)  # the best of five: promoted among enough
        for v in (0.97, 0.96):
            report(study.ask(), v, 1)  # F and G
        report(a, 0.55, 2)
        report(e, 0.951, 2)
        report(b, 0.92, 3)
        return pruned[0, 1], pruned[0, 2], pruned[1, 2], pruned[1, 3], pruned[4, 1], pruned[4, 2]

    def halving():
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)

    assert run(halving()) == (False, False, False, False, False, False)
    assert run(RecheckedHalving(halving(), 3)) == (False, True, False, False, False, False)


def test_start_points_are_tried_first_and_once(tmp_path):
    """A spec's ``start`` (here the default recipe, as cnnlab study uses it) is trial 0, before the
    sampler proposes anything; a list value goes through Optuna's JSON encoding and back."""
    tree = {
        **GRID,
        "method": "random",
        "trials": 3,
        "space": {"optim.lr": {"type": "log-float", "low": 1e-4, "high": 1e-1}, "model.hidden": [[32], [64]]},
        "start": [{"optim.lr": 0.001, "model.hidden": [64]}],
        "base": {**GRID["base"], "train": {"epochs": 1, "batch_size": 64}},
    }
    spec = write_spec(tmp_path / "s.yaml", tree)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "-q"]) == 0
    s = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    first = next(t for t in s["trials"] if t["trial"] == 0)
    assert first["params"] == {"optim.lr": 0.001, "model.hidden": [64]} and first["state"] == "complete"
    assert RunFolder(tmp_path / "sw" / first["run"]).read_config().model.hidden == [64]
    assert sum(t["params"] == first["params"] for t in s["trials"]) == 1 and len(s["trials"]) == 3


SLOW_TPE = {
    "base": {
        "data": {"source": "digits"},
        "model": {"name": "mlp"},
        "train": {"epochs": 12, "batch_size": 64},
        "run": {"report": False},
    },
    "space": {"optim.lr": {"type": "log-float", "low": 1e-4, "high": 1e-1}, "model.hidden": [[32], [64], [128]]},
    "method": "tpe",
    "objective": "val_acc",
    "pruner": "none",
}


def _unique_trained(s: dict) -> list[dict]:
    return [t for t in s["trials"] if t["state"] not in ("skipped",) and "retried as" not in t["note"]]


@pytest.mark.long
def test_local_workers_survive_a_sigkill_and_resume_completes(tmp_path, workers=4, trials=16):
    """4 worker processes on the default (journal) store, 16 trials; one worker is killed with
    SIGKILL in the middle of a trial: that trial is marked failed with the reason and retried once;
    nothing is duplicated or lost, no 'database is locked'; --resume completes the budget."""
    spec = write_spec(tmp_path / "t.yaml", {**SLOW_TPE, "trials": trials})
    out = tmp_path / "sw"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "sweep", str(spec), "--out", str(out), "--workers", str(workers), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline and proc.poll() is None:
        for lock in sorted(out.glob("trials/*/.lock")):
            run = RunFolder(lock.parent)
            if run.run_json.is_file() and run.status().get("status") == "running" and run.history():
                victim = int(lock.read_text().split()[1])  # "pid N on HOST since …"
                break
        time.sleep(0.2)
    assert victim is not None, "no trial was seen running"
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert "database is locked" not in output
    logs = "".join(p.read_text() for p in (out / "workers").glob("worker-*.log"))
    assert "database is locked" not in logs and "Traceback" not in logs
    assert main(["sweep", "--resume", "--out", str(out), "-q"]) == 0
    s = json.loads((out / "sweep.json").read_text())
    assert s["done"] == trials and s["outcomes"].get("complete") == trials, s["outcomes"]
    dead = [t for t in s["trials"] if "stopped (killed or interrupted)" in t["note"]]
    assert len(dead) == 1 and "retried as trial" in dead[0]["note"]
    retry = next(t for t in s["trials"] if t["retry_of"] == dead[0]["trial"])
    assert retry["params"] == dead[0]["params"] and retry["state"] == "complete"
    unique = _unique_trained(s)
    assert len(unique) == trials and len({json.dumps(t["params"], sort_keys=True) for t in unique}) == trials
    assert RunFolder(out / dead[0]["run"]).state().status == "interrupted"  # its run folder says so too


@pytest.mark.long
def test_two_workers_share_one_postgresql_study(tmp_path):
    pytest.importorskip("psycopg")
    from tests.servers import postgres_server

    spec = write_spec(
        tmp_path / "t.yaml",
        {**SLOW_TPE, "trials": 8, "name": "shared", "base": {**SLOW_TPE["base"], "train": {"epochs": 3}}},
    )
    with postgres_server() as url:
        # two "machines": two sweep folders, one study in the database
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cnnlab",
                    "sweep",
                    str(spec),
                    "--out",
                    str(tmp_path / f"m{i}"),
                    "--storage",
                    url,
                    "-q",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=400)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        assert main(["sweep-report", str(tmp_path / "m0"), "--storage", url]) == 0
    s = json.loads((tmp_path / "m0" / "sweep.json").read_text())
    trained = _unique_trained(s)
    assert s["done"] == 8 and len(trained) == 8, s["outcomes"]
    assert len({json.dumps(t["params"], sort_keys=True) for t in trained}) == 8
    hosts_runs = [len(list((tmp_path / f"m{i}" / "trials").iterdir())) for i in range(2)]
    assert sum(hosts_runs) == 8 and min(hosts_runs) >= 1  # both machines worked, nothing was lost


def test_tensorboard_and_mlflow_record_every_epoch(tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "3",
                "--out",
                str(out),
                "-q",
                "--logger",
                "tensorboard,mlflow",
                "--set",
                "run.report=false",
            ]
        )
        == 0
    )
    history = RunFolder(out).history()
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/loss", "val/acc"} <= set(events.Tags()["scalars"])
    scalars = events.Scalars("val/acc")  # float32 there, 6 digits in history.csv: equal within 1e-5
    assert [e.step for e in scalars] == [int(h["epoch"]) for h in history]
    assert [e.value for e in scalars] == pytest.approx([h["val_acc"] for h in history], abs=1e-5)
    info = RunFolder(out).status()
    client = MlflowClient(info["mlflow_tracking_uri"])
    got = client.get_metric_history(info["mlflow_run_id"], "val_loss")
    assert [m.value for m in sorted(got, key=lambda m: m.step)] == pytest.approx(
        [h["val_loss"] for h in history], abs=1e-5
    )
    assert client.get_run(info["mlflow_run_id"]).data.params["optim.lr"] == "0.003"  # the default one-cycle's peak
    capsys.readouterr()


def test_a_missing_tracker_package_is_named_before_training(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r"),
                "--logger",
                "wandb",
            ]
        )
        == 2
    )
    assert "--logger wandb needs the wandb package: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_sweep_can_tune_on_the_mean_over_cv_folds(tmp_path):
    tree = {
        **GRID,
        "space": {"optim.lr": [0.001, 0.01]},
        "cv": {"folds": 2},
        "base": {**GRID["base"], "train": {"epochs": 2, "batch_size": 64}},
    }
    spec = write_spec(tmp_path / "cv.yaml", tree)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "-q"]) == 0
    s = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert s["done"] == 2 and s["outcomes"] == {"complete": 2}
    for t in s["trials"]:
        cv = json.loads((tmp_path / "sw" / t["run"] / "cv.json").read_text())
        folds = [
            max(h["val_acc"] for h in RunFolder(tmp_path / "sw" / t["run"] / r["name"]).history()) for r in cv["runs"]
        ]
        assert len(folds) == 2 and t["value"] == pytest.approx(sum(folds) / 2)
    assert yaml.safe_load((tmp_path / "sw" / "best.yaml").read_text())["optim"]["lr"] == s["best"]["params"]["optim.lr"]


def test_wandb_logs_offline_when_it_is_installed(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "2",
                "--out",
                str(out),
                "-q",
                "--logger",
                "wandb",
                "--set",
                "run.report=false",
            ]
        )
        == 0
    )
    runs = list((out / "wandb").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0  # offline: nothing left the machine
    capsys.readouterr()


def test_every_example_spec_is_a_valid_sweep():
    from cnnlab.workflows.sweep.spec import load_spec

    specs = sorted((Path(__file__).resolve().parents[2] / "examples").glob("sweep-*.yaml"))
    assert specs
    for p in specs:
        assert load_spec(p).budget()


@pytest.mark.parametrize("low,high", [(3e-4, 9e-3), (0.01, 0.02), (1e-5, 1e-1)])
def test_a_log_range_of_any_width_gets_legible_tick_labels(tmp_path, low, high):
    """A narrow log range (the study's learning-rate search spans 1.5 decades) used to get labelled
    minor ticks that overlapped; the figure check of conftest fails on any overlap."""
    from cnnlab.workflows.sweep.report import _scatter

    spec = check_spec(
        {
            "base": {"data": {"source": "digits"}},
            "space": {"optim.lr": {"type": "float", "low": low, "high": high, "log": True}},
            "trials": 5,
        },
        "spec.yaml",
    )
    done = [
        {"state": "complete", "params": {"optim.lr": float(v)}, "value": 0.9 + 0.01 * i}
        for i, v in enumerate(np.geomspace(low, high, 5))
    ]
    assert _scatter(spec, done, ["optim.lr"], tmp_path / "scatter.png").is_file()
