"""`--seeds N`: N initialisations of one recipe on one split, for train, cv and study; their mean ±
sd, and every model gap shown beside that spread and tested with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab import api
from cnnlab.cli import main
from cnnlab.runs.ledger import usage_of
from cnnlab.runs.store import RunFolder
from cnnlab.train.callbacks import Callback

FLAGS = ["--data", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "2", "-q", "--no-report"]


def test_train_with_seeds_shares_one_split_and_reports_mean_and_sd(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["train", *FLAGS, "--seed", "5", "--seeds", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    state = json.loads((out / "seeds.json").read_text())
    assert state["status"] == "completed" and state["seeds"] == [5, 6, 7]
    runs = [RunFolder(out / f"seed-{s}") for s in (5, 6, 7)]
    tests = [json.loads(r.split_json.read_text())["indices"]["test"] for r in runs]
    assert tests[0] == tests[1] == tests[2]  # one split: the seeds differ in their initialisation only
    assert [r.read_config().train.seed for r in runs] == [5, 6, 7]
    probs = [r.load_predictions()["probs"] for r in runs]
    assert not np.allclose(probs[0], probs[1])  # other initialisations, other models
    accs = [r.read_json(r.metrics_json)["accuracy"] for r in runs]
    acc = state["summary"]["accuracy"]
    assert acc["mean"] == pytest.approx(np.mean(accs)) and acc["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert f"{acc['mean']:.4f} ± {acc['sd']:.4f}" in printed and "seeds.html" in printed
    assert (out / "seeds.html").is_file()
    # three scorings of one test split by one recipe (the seed is not a configuration of its own)
    assert usage_of(runs[0].test_split_id()) == {"scored": 3, "configurations": 1, "runs": 3}
    assert main(["train", *FLAGS, "--seeds", "2", "--out", str(out)]) == 2  # a group is not overwritten unasked
    (out / "notes.txt").write_text("mine")
    assert main(["train", *FLAGS, "--seeds", "2", "--out", str(out), "--overwrite"]) == 2
    assert "'notes.txt', which no seed group writes" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    assert main(["train", *FLAGS, "--seeds", "2", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "seeds.json").read_text())["seeds"] == [0, 1] and not (out / "seed-7").exists()


class _InterruptSecondSeed(Callback):
    def __init__(self):
        self.begun = 0

    def on_train_begin(self, loop):
        self.begun += 1

    def on_epoch_end(self, loop, epoch, logs):
        if self.begun == 2 and epoch == 2:
            raise KeyboardInterrupt


def test_an_interrupted_seed_group_resumes_keeping_finished_seeds(tmp_path):
    out = tmp_path / "g"
    cfg = api.build_config(None, {"data.source": "digits", "model.name": "mlp", "model.hidden": [16],
                                  "train.epochs": 3, "run.out": str(out), "run.report": False})  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, api.TrainPlan(seeds=2), callbacks=[_InterruptSecondSeed()], progress=False)
    assert json.loads((out / "seeds.json").read_text())["status"] == "running"
    first = RunFolder(out / "seed-0").metrics_json
    finished_at = first.stat().st_mtime_ns
    assert RunFolder(out / "seed-1").state().status == "interrupted"
    assert main(["train", "--resume", str(out), "-q"]) == 0
    assert first.stat().st_mtime_ns == finished_at  # the finished seed was kept, not retrained
    second = RunFolder(out / "seed-1")
    assert second.state().status == "completed" and second.status()["resumed_from_epoch"] == 1
    assert json.loads((out / "seeds.json").read_text())["status"] == "completed"


def test_compare_of_two_seed_groups_puts_the_gap_beside_the_seed_spread(tmp_path, capsys):
    a, b, other = tmp_path / "a", tmp_path / "b", tmp_path / "other"
    assert main(["train", *FLAGS, "--seeds", "2", "--out", str(a)]) == 0
    assert main(["train", *FLAGS, "--hidden", "64", "--seeds", "2", "--out", str(b)]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    res = api.compare_results([a, b])
    sa, sb = (json.loads((g / "seeds.json").read_text())["summary"]["accuracy"] for g in (a, b))
    assert res.kind == "seeds" and res.metrics["accuracy"]["gap"] == pytest.approx(sb["mean"] - sa["mean"])
    p = res.paired
    assert p["seed_sd_a"] == pytest.approx(sa["sd"]) and p["seeds_b"] == 2 and 0 <= p["p"] <= 1
    assert f"A {sa['mean']:.4f} ± {sa['sd']:.4f}" in printed and f"p = {p['p']:.4g}" in printed
    assert main(["train", *FLAGS, "--split-seed", "3", "--seeds", "2", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(other)]) == 0
    assert "not paired: the groups were tested on different images" in capsys.readouterr().err
    with pytest.raises(Exception, match="exactly two seed groups"):
        api.compare_results([a, RunFolder(b / "seed-0").path])


def test_cv_with_seeds_trains_each_fold_from_each_seed_and_reports_the_seed_spread(tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["cv", *FLAGS, "--folds", "2", "--seeds", "2", "--out", str(out)]) == 0
    assert "sd over seeds" in capsys.readouterr().out
    cv = json.loads((out / "cv.json").read_text())
    assert cv["seeds"] == 2 and set(cv["seed_sd"]) >= {"accuracy", "macro_f1"}
    row = cv["runs"][0]
    assert row["runs"] == ["r1-fold1-seed0", "r1-fold1-seed1"]
    accs = [RunFolder(out / n).read_json(RunFolder(out / n).metrics_json)["accuracy"] for n in row["runs"]]
    assert row["metrics"]["accuracy"] == pytest.approx(np.mean(accs))
    folds = [json.loads(RunFolder(out / n).split_json.read_text())["indices"]["test"] for n in row["runs"]]
    assert folds[0] == folds[1]  # both seeds hold out the same fold
    assert cv["seed_sd"]["accuracy"] == pytest.approx(
        np.mean([np.std(r["seed_metrics"]["accuracy"], ddof=1) for r in cv["runs"]])
    )
    assert main(["cv", *FLAGS, "--folds", "2", "--seeds", "3", "--resume", "--out", str(out)]) == 2
    assert "--seeds 2, not 3" in capsys.readouterr().err


def test_a_study_with_seeds_ranks_by_the_mean_and_tests_each_gap_with_the_seed_spread(tmp_path, capsys):
    out = tmp_path / "st"
    args = ["study", "digits", "--models", "mlp,cnn-small", "--budget", "25s", "--seeds", "2", "--out", str(out)]
    assert main([*args, "-q"]) == 0
    printed = capsys.readouterr().out
    state = json.loads((out / "study.json").read_text())
    assert state["settings"]["seeds"] == 2
    summ = state["summary"]
    rows = {r["name"]: r for r in summ["rows"]}
    folder = out / ("cv" if state["folds"] > 1 else "runs")
    for name, row in rows.items():
        if state["folds"] == 1:
            runs = [RunFolder(folder / name / f"seed-{s}") for s in (0, 1)]
            accs = [r.read_json(r.metrics_json)["accuracy"] for r in runs]
            assert row["accuracy"]["value"] == pytest.approx(np.mean(accs))
            assert row["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
        else:
            assert row["accuracy"]["sd"] == pytest.approx(
                json.loads((folder / name / "cv.json").read_text())["seed_sd"]["accuracy"]
            )
    (pair,) = summ["paired"]
    best, other = rows[pair["best"]], rows[pair["other"]]
    assert pair["seed_sd"] == pytest.approx([best["accuracy"]["sd"], other["accuracy"]["sd"]])
    assert pair["test"].startswith("paired t over images with the seed spread" if state["folds"] == 1 else "Nadeau")
    assert f"gap {pair['best']} − {pair['other']}: {pair['difference']:+.4f}" in printed
    assert "seed sd (best, other)" in (out / "report.html").read_text()


@pytest.fixture(scope="module")
def finished_group(tmp_path_factory):
    """A finished 2-seed group (1 epoch each) and its seeds.json as written."""
    out = tmp_path_factory.mktemp("group") / "g"
    flags = ["--data", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "1", "-q", "--no-report"]
    assert main(["train", *flags, "--seeds", "2", "--out", str(out)]) == 0
    return out, json.loads((out / "seeds.json").read_text())


TAMPERED = {
    "100000 seeds": lambda s: s.update(seeds=list(range(100_000))),
    "one seed three times": lambda s: s.update(seeds=[0, 0, 0]),
    "booleans": lambda s: s.update(seeds=[True, False]),
    "a path": lambda s: s.update(seeds="/etc/passwd"),
    "a float": lambda s: s.update(seeds=[0.5]),
    "10**30": lambda s: s.update(seeds=[10**30]),
    "no seed": lambda s: s.update(seeds=[]),
    "null": lambda s: s.update(seeds=None),
    "the key missing": lambda s: s.pop("seeds"),
    "a NaN learning rate": lambda s: s["config"]["optim"].update(lr=float("nan")),
    "a config that is a list": lambda s: s.update(config=[1, 2]),
}


@pytest.mark.parametrize("damage", sorted(TAMPERED))
def test_a_tampered_seeds_json_is_refused_in_one_line(finished_group, tmp_path, capsys, damage):
    import shutil

    out = tmp_path / "g"
    shutil.copytree(finished_group[0], out)
    state = json.loads(json.dumps(finished_group[1]))
    state["status"] = "running"
    TAMPERED[damage](state)
    (out / "seeds.json").write_text(json.dumps(state))
    assert main(["train", "--resume", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seeds.json" in err and "Traceback" not in err, err
    assert not (out / "seed-2").exists() and not (out / "seed-True").exists()  # nothing started


def test_a_damaged_seed_group_is_replaced_with_overwrite(finished_group, tmp_path, capsys):
    """--overwrite replaces a group whose seeds.json is damaged (its seed folders are known by name),
    and still refuses a folder that holds what no seed group writes."""
    import shutil

    out = tmp_path / "g"
    shutil.copytree(finished_group[0], out)
    (out / "seeds.json").write_text(json.dumps({**finished_group[1], "seeds": "0,1"}))
    flags = ["--data", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "1", "-q", "--no-report"]
    (out / "notes.txt").write_text("mine")
    assert main(["train", *flags, "--seeds", "2", "--overwrite", "--out", str(out)]) == 2
    assert "refuses to delete" in capsys.readouterr().err and (out / "notes.txt").is_file()
    (out / "notes.txt").unlink()
    assert main(["train", *flags, "--seeds", "2", "--overwrite", "--out", str(out)]) == 0
    assert json.loads((out / "seeds.json").read_text())["seeds"] == [0, 1]


def test_a_group_saved_before_cnnlab_kept_the_given_config_resumes_with_its_first_seeds_recipe(
    finished_group, tmp_path
):
    """seeds.json of an older cnnlab holds the config with every field: a seed that never finished an
    epoch is trained from its first seed's resolved config, not from the plain defaults."""
    import shutil

    out = tmp_path / "old"
    shutil.copytree(finished_group[0], out)
    state = {k: v for k, v in finished_group[1].items() if k not in ("given", "summary", "runs")}
    state.update(status="running", seeds=[0, 1, 2])
    (out / "seeds.json").write_text(json.dumps(state))
    assert main(["train", "--resume", str(out), "-q"]) == 0
    recipes = {(c.optim.lr, c.train.schedule) for c in (RunFolder(out / f"seed-{s}").read_config() for s in (0, 1, 2))}
    assert len(recipes) == 1 and recipes.pop()[1] == "onecycle"


def test_a_group_whose_seeds_trained_different_recipes_is_refused_naming_the_field(finished_group, tmp_path, capsys):
    import shutil

    import yaml

    out = tmp_path / "mixed"
    shutil.copytree(finished_group[0], out)
    cfg = yaml.safe_load((out / "seed-1" / "config.yaml").read_text())
    cfg["optim"]["lr"] = 0.001
    (out / "seed-1" / "config.yaml").write_text(yaml.safe_dump(cfg))
    state = {**finished_group[1], "status": "running"}
    (out / "seeds.json").write_text(json.dumps(state))
    assert main(["train", "--resume", str(out), "-q"]) == 2
    assert "optim.lr" in capsys.readouterr().err


@pytest.mark.long
def test_kill_or_ctrl_c_at_any_moment_of_a_seed_group_then_resume_gives_the_uninterrupted_recipe_and_figures(tmp_path):
    """train --seeds 3, stopped by SIGKILL (or SIGINT) at five moments of its life, then train --resume:
    every seed's config.yaml and metrics equal those of the group that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    argv = [sys.executable, "-m", "cnnlab", "train", "--data", "digits", "--model", "mlp", "--epochs", "2",
            "--threads", "1", "--seeds", "3", "-q", "--no-report"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def figures(out):
        runs = [RunFolder(out / f"seed-{s}") for s in (0, 1, 2)]
        configs = [{k: v for k, v in yaml.safe_load(r.config.read_text()).items() if k != "run"} for r in runs]
        return configs, [round(r.read_json(r.metrics_json)["accuracy"], 6) for r in runs]

    subprocess.run([*argv, "--out", str(tmp_path / "whole")], check=True, env=env, timeout=600)
    whole = figures(tmp_path / "whole")
    moments = [("seed-0/history.csv", signal.SIGKILL), ("seed-0/metrics.json", signal.SIGKILL),
               ("seed-1/config.yaml", signal.SIGKILL), ("seed-1/history.csv", signal.SIGINT),
               ("seed-2/config.yaml", signal.SIGKILL)]  # fmt: skip
    for i, (marker, sig) in enumerate(moments):
        out = tmp_path / f"cut{i}"
        proc = subprocess.Popen([*argv, "--out", str(out)], env=env, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not (out / marker).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(60)
        assert json.loads((out / "seeds.json").read_text())["status"] != "completed", marker
        subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out), "-q"], check=True, env=env,
                       timeout=600)  # fmt: skip
        assert figures(out) == whole, marker
