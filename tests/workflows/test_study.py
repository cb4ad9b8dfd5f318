"""`cnnlab study`: a budgeted comparison of candidates with one report; resume; class weights."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.core.settings import StudySettings, parse_budget
from cnnlab.core.study import Candidate, StudyState, StudySummary
from cnnlab.evaluate.stats import holm
from cnnlab.reports.study_text import winner_sentence
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.study.plan import plan_epochs
from tests.conftest import class_image

CNNLAB = [sys.executable, "-m", "cnnlab"]


def _open_in_chromium(page_path: Path) -> tuple[list[str], list[int]]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1600})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        page.goto(page_path.resolve().as_uri())
        page.wait_for_load_state("load")
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        browser.close()
    return errors, widths


@pytest.mark.slow  # a 3-minute budget with five candidates and their searches: make test-slow
def test_study_of_digits_keeps_its_budget_and_its_report_opens_in_chromium(tmp_path):
    """Issue 24, item 3: with tuning on, the study of digits stays within 1.1 × --budget 3m and
    every row shows its default and tuned validation figure (the default suite keeps the 1.1 ×
    bound on the shorter studies: the multi-label one, 60 s)."""
    if not Path(shutil.which("chromium") or "/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    out = tmp_path / "study"
    start = time.time()
    proc = subprocess.run(
        CNNLAB + ["study", "digits", "--budget", "3m", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    wall = time.time() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall <= 198, f"study took {wall:.0f} s for a 180 s budget"
    state = json.loads((out / "study.json").read_text())
    done = [c for c in state["candidates"] if c["status"] == "done"]
    assert state["status"] == "completed" and len(done) >= 3, state["candidates"]
    for c in done:  # each candidate is an ordinary, completed run folder
        run = RunFolder(out / ("cv" if state["folds"] > 1 else "runs") / c["name"])
        assert (run.path / "cv.json").is_file() if state["folds"] > 1 else run.state().status == "completed"
    summ = state["summary"]
    rows = summ["rows"]
    assert [r["selection"]["value"] for r in rows] == sorted((r["selection"]["value"] for r in rows), reverse=True)
    for r in rows:
        lo, hi = r["accuracy"]["ci95"]
        assert lo <= r["accuracy"]["value"] <= hi and r["parameters"] > 0 and r["ms_per_image"] > 0
        assert set(r["per_class_f1"]) == set(state["classes"])
    # winner against each other candidate: Holm-adjusted p-values, and a summary sentence that says no
    # more than they do
    assert len(summ["paired"]) == len(rows) - 1
    assert [p["p_holm"] for p in summ["paired"]] == pytest.approx(holm([p["p"] for p in summ["paired"]]))
    for r in rows:  # equal effort: every candidate searched, its default and tuned validation figures shown
        assert r["search"]["trials"] >= 2 and None not in (r["search"]["default_val"], r["search"]["tuned_val"]), r
    assert "search (validation accuracy, default → tuned)" in proc.stdout
    runner_up = next(p for p in summ["paired"] if p["other"] == rows[1]["name"])
    sentence = winner_sentence(summ)
    assert ("is tied with" in sentence) == (runner_up["p_holm"] >= 0.05) and sentence + "." in proc.stdout
    assert "cnnlab train --data digits --model " + rows[0]["model"] in summ["commands"]["retrain"]
    page = (out / "report.html").read_text()
    for section in ("Ranking", "Per-class F1", "Paired differences", "Over-fitting", "Confusions that remain", "Next"):
        assert section in page
    errors, widths = _open_in_chromium(out / "report.html")
    assert errors == [] and len(widths) >= 4 and all(w > 0 for w in widths), (errors, widths)
    assert "report:" in proc.stdout and rows[0]["name"] in proc.stdout


@pytest.mark.long
def test_an_interrupted_study_resumes_without_retraining_finished_candidates(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.Popen(
        CNNLAB + ["study", "digits", "--models", "mlp,cnn", "--budget", "2m", "--out", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = None
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None:
        state = json.loads((out / "study.json").read_text()) if (out / "study.json").is_file() else {}
        if any(c["status"] == "done" for c in state.get("candidates", [])):
            first = next(c["name"] for c in state["candidates"] if c["status"] == "done")
            break
        time.sleep(0.1)
    assert first is not None and proc.poll() is None, "the first candidate should finish while the second trains"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    state = json.loads((out / "study.json").read_text())
    assert state["status"] == "interrupted" and "--resume" in err
    kept = {
        p: p.stat().st_mtime_ns
        for p in (out / ("cv" if state["folds"] > 1 else "runs") / first).rglob("*")
        if p.is_file()
    }
    assert kept
    assert main(["study", "--resume", "--out", str(out), "-q"]) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["status"] == "completed" and all(c["status"] == "done" for c in state["candidates"])
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "a finished candidate was trained again"
    assert (out / "report.html").is_file()
    if state["folds"] > 1:  # folds were used: paired differences over them, and the winner tested once
        assert state["summary"]["paired"][0]["test"].startswith("Nadeau-Bengio corrected resampled t")
        assert RunFolder(out / "winner").state().status == "completed"


@pytest.mark.long
def test_an_imbalanced_folder_turns_class_weights_on_and_the_report_says_so(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imb"
    for c, n in ((0, 100), (1, 10), (2, 10)):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(class_image(c, 16, rng)).save(d / f"img_{i:03d}.png")
    out = tmp_path / "study"
    assert main(["study", str(root), "--models", "mlp", "--budget", "40s", "--out", str(out), "-q"]) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["class_weights"] is True and state["imbalance_ratio"] == 10.0
    run = RunFolder(out / ("cv" if state["folds"] > 1 else "runs") / "mlp")
    cfg_file = next(run.path.rglob("config.yaml"))
    assert "class_weights: auto" in cfg_file.read_text()
    page = (out / "report.html").read_text()
    assert "class weights are on" in page and "10.0×" in page


@pytest.mark.parametrize(
    "args, message",
    [
        (["study", "digits", "--budget", "soon"], "give a duration like 90s"),
        (["study", "digits", "--budget", "2s"], "between 10 seconds and 7 days"),
        (["study", "digits", "--models", "mlp,resnet99"], "unknown model 'resnet99'"),
        (["study", "digits", "--models", "cnn:frozen"], "has no pretrained weights"),
        (["study", "digits", "--models", "mlp,mlp"], "twice"),
        (["study", "digits", "--folds", "1"], "at least 2"),
        (["study"], "needs DATA"),
        (["study", "digits", "--budget", ""], "give a duration like 90s"),  # not a silent 20 m
        (["study", "/nonexistent/folder"], "DATA '/nonexistent/folder': not a built-in dataset"),
        (["study", "digits", "--fractions", "nan,0.5,1"], "every share must be above 0 and at most 1"),
        (["study", "digits", "--fractions", "0,0.5"], "every share must be above 0 and at most 1"),
        (["study", "digits", "--fractions", ""], "give shares of the training split"),  # not silently none
        (["study", "digits", "--fractions", "half"], "give shares of the training split"),
        (["study", "digits", "--fractions", "0.5"], "at least 3 sizes"),
        (["study", "digits", "--fractions", "0.25,0.5", "--folds", "3"], "learning curves use one split"),
        (["study", "digits", "--audit-labels"], "--audit-labels needs --folds K"),
    ],
)
def test_study_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, message):
    assert main(args + ["--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_study_refuses_a_used_folder_and_resume_of_a_folder_that_is_no_study(tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    assert main(["study", "digits", "--out", str(tmp_path / "used")]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(["study", "--resume", "--out", str(tmp_path / "used")]) == 2
    assert "not a study folder" in capsys.readouterr().err


def test_the_plan_shares_the_budget_and_drops_the_most_expensive_first():
    sizes = {"train": 1000, "val": 100, "test": 100}
    cheap = Candidate("a", "mlp", full_epochs=10, train_s=1e-4, eval_s=1e-5)
    dear = Candidate("b", "cnn", full_epochs=10, train_s=1e-2, eval_s=1e-3)
    assert plan_epochs([cheap, dear], 1e6, sizes) and (cheap.epochs, dear.epochs) == (10, 10)
    full = cheap.cost(10, 1000, 100, 100) + dear.cost(10, 1000, 100, 100)
    assert plan_epochs([cheap, dear], full * 0.55, sizes)
    assert 1 <= dear.epochs < 10 and cheap.epochs <= 10
    assert cheap.cost(cheap.epochs, 1000, 100, 100) + dear.cost(dear.epochs, 1000, 100, 100) <= full * 0.55
    assert plan_epochs([cheap, dear], cheap.cost(1, 1000, 100, 100) + 1, sizes)
    assert dear.status == "dropped" and "does not fit the budget" in dear.why and cheap.status == "planned"
    assert parse_budget("1.5h") == 5400 and parse_budget("90s") == parse_budget("1.5m") == 90
    # issue 24: one expensive candidate is not planned more than 40 % of the budget beside others
    third = Candidate("c", "mlp", full_epochs=10, train_s=1e-4, eval_s=1e-5)
    dear = Candidate("b", "cnn", full_epochs=30, train_s=1e-2, eval_s=1e-3)
    seconds = dear.cost(30, 1000, 100, 100)
    assert plan_epochs([cheap, dear, third], seconds, sizes)
    assert dear.cost(dear.epochs, 1000, 100, 100) <= 0.4 * seconds and dear.epochs >= 1
    # one whose minimum alone is over 40 % beside others (a frozen net's features on 60,000 images) is
    # dropped, saying so, rather than eating the budget; alone it keeps the whole budget
    frozen = Candidate("f", "efficientnet-lite0", mode="frozen", full_epochs=10, eval_s=1e-2)
    cheap = Candidate("a", "mlp", full_epochs=10, train_s=1e-4, eval_s=1e-5)
    seconds = 2 * frozen.cost(1, 1000, 100, 100)
    assert plan_epochs([cheap, frozen], seconds, sizes)
    assert frozen.status == "dropped" and "more than 40 %" in frozen.why and cheap.status == "planned"
    alone = Candidate("f", "efficientnet-lite0", mode="frozen", full_epochs=10, eval_s=1e-2)
    assert plan_epochs([alone], seconds, sizes) and alone.status == "planned"
    late = Candidate("f", "efficientnet-lite0", mode="frozen", full_epochs=10, eval_s=1e-2)
    assert not plan_epochs([late], seconds, sizes, cap=0.4 * seconds) and late.status == "dropped"


def test_every_example_is_a_valid_config_sweep_spec_or_script():
    from cnnlab.core.yamlio import load_yaml
    from cnnlab.workflows.resolve import build_config
    from cnnlab.workflows.sweep.spec import load_spec

    examples = sorted((Path(__file__).parents[2] / "examples").iterdir())
    assert {e.name[4:7] for e in examples if e.name.startswith("seed")} == {"000", "001", "002", "003", "004"}
    for e in examples:
        if e.suffix == ".sh":
            assert subprocess.run(["sh", "-n", str(e)]).returncode == 0, e
        elif e.suffix == ".py":
            compile(e.read_text(), str(e), "exec")
        elif e.suffix == ".csv":
            continue
        elif "name" in load_yaml(e):  # a sweep spec
            load_spec(e)
        else:
            build_config(load_yaml(e))


def _noisy_folder(root: Path) -> Path:
    """4 classes of 60 small images, 35 % of them moved to another class: a net's validation loss
    bottoms out late while its validation accuracy peaks early (the two disagree)."""
    from tests.conftest import make_folder_dataset

    make_folder_dataset(root, classes=4, per_class=60, size=16, seed=3)
    rng = np.random.default_rng(0)
    for f in sorted(root.rglob("*.png")):
        if rng.random() < 0.35:
            c = int(f.parent.name.split("_")[1])
            f.rename(root / f"class_{(c + 1 + rng.integers(3)) % 4}" / ("n" + f.name))
    return root


def test_a_study_selects_by_validation_accuracy_and_says_tied_when_the_test_says_so(tmp_path):
    import csv

    data = _noisy_folder(tmp_path / "noisy")
    out = tmp_path / "st"
    argv = ["study", str(data), "--models", "mlp,cnn-small", "--budget", "60s", "--no-tune", "--out", str(out), "-q"]
    assert main(argv) == 0
    disagree = 0
    for metrics in sorted(out.rglob("metrics.json")):
        hist = list(csv.DictReader(metrics.with_name("history.csv").open()))
        acc, loss = [float(h["val_acc"]) for h in hist], [float(h["val_loss"]) for h in hist]
        best = json.loads(metrics.read_text())["best_epoch"]
        assert best == int(np.argmax(acc)) + 1, (metrics, acc)  # the best validation-accuracy epoch
        disagree += int(np.argmin(loss)) != int(np.argmax(acc))
    assert disagree, "the folder was built so that validation loss and accuracy disagree"
    summ = json.loads((out / "study.json").read_text())["summary"]
    (pair,) = summ["paired"]
    assert pair["p_holm"] >= 0.05  # two nets within a point or two of each other on a small test set
    page = (out / "report.html").read_text()
    assert "Holm-adjusted p" in page and "is tied with" in page and "ranks first, ahead of" not in page


@pytest.mark.long
def test_a_study_killed_before_its_plan_is_replaced_and_resume_checks_the_settings(tmp_path, capsys, monkeypatch):
    """Issue 23, items 7-8: a folder a kill left during probing (inspect.json, no study.json) is
    started again; planning time is counted once; a resume with other settings is refused."""
    out = tmp_path / "st"
    out.mkdir()
    (out / "inspect.json").write_text("{}")  # what SIGKILL during the probes leaves
    started = time.time()
    assert main(["study", "digits", "--models", "mlp", "--budget", "40s", "--out", str(out), "-q"]) == 0
    wall = time.time() - started
    state = json.loads((out / "study.json").read_text())
    assert state["status"] == "completed" and state["spent_seconds"] <= wall + 1  # counted once
    for flags, saved in ((["--budget", "5m"], "40.0"), (["--models", "cnn"], "'mlp'"), (["--seed", "3"], "0"),
                         (["--seeds", "2"], "1")):  # fmt: skip
        assert main(["study", "--resume", "--out", str(out), *flags, "-q"]) == 2
        err = capsys.readouterr().err
        assert f"was started with {flags[0]} {saved}" in err, err
    assert main(["study", "--resume", "--out", str(out), "--budget", "40s", "-q"]) == 0  # the same: fine


def test_a_study_that_trains_nothing_fails_in_one_line(tmp_path, capsys, monkeypatch):
    from cnnlab.workflows.study import run as study_run

    def nothing_fits(study, *args):
        for c in study.cands:
            c.status, c.why = "dropped", "the budget ran out before it started"

    monkeypatch.setattr(study_run, "_train_all", nothing_fits)
    assert main(["study", "digits", "--models", "mlp", "--budget", "30s", "--out", str(tmp_path / "s"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no candidate finished within the 30 s budget (mlp: the budget ran out" in err
    assert json.loads((tmp_path / "s" / "study.json").read_text())["status"] == "failed"


@pytest.mark.long
def test_every_candidate_trains_at_the_size_and_batch_its_probe_timed(tmp_path):
    """Issue 24: a model whose own default size differs from the study's (mobilenetv2-small: 224)
    used to train at that default while its probe timed the study's size."""
    from cnnlab.workflows.study.plan import make_candidates, shrink_to_fit

    pairs = [("mlp", "scratch"), ("mobilenetv2-small", "scratch"), ("efficientnet-lite0", "frozen")]
    made = {c.name: c for c in make_candidates(pairs, 64, 2000, 128)}
    assert made["mobilenetv2-small"].input_size == 64 and made["mlp"].input_size == 64
    lite = made["efficientnet-lite0-frozen"]
    assert lite.input_size == 224 and lite.batch_size == 32
    # too dear at 224 px for its share: the largest size whose predicted cost fits (cost ∝ pixels)
    lite.eval_s = 0.02  # seconds per image at 224: 2,600 images' features take 52 s
    sizes = {"train": 2000, "val": 300, "test": 300}
    assert shrink_to_fit(lite, 30.0, sizes) and lite.input_size == 160  # 192 px: 41 s, 160 px: 28.7 s
    assert not shrink_to_fit(lite, 1e4, sizes) and lite.input_size == 160
    out = tmp_path / "st"
    assert (
        main(
            [
                "study",
                "digits",
                "--models",
                "mlp,mobilenetv2-small",
                "--budget",
                "30s",
                "--no-tune",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    state = json.loads((out / "study.json").read_text())
    for c in state["candidates"]:
        folder = out / ("cv" if state["folds"] > 1 else "runs") / c["name"]
        configs = sorted(folder.rglob("config.yaml"))
        assert configs, c
        for cfg_file in configs:
            cfg = RunFolder(cfg_file.parent).read_config()
            assert (cfg.data.input_size, cfg.train.batch_size) == (c["input_size"], c["batch_size"]), cfg_file
    page = (out / "report.html").read_text()
    assert "input (probed and trained)" in page and " s</td>" in page


@pytest.mark.alone  # its 60 s budget holds a search only on an unloaded machine
def test_each_candidate_searches_from_its_default_recipe_on_validation_and_no_tune_keeps_it(tmp_path, capsys):
    """Issue 24, item 3: the same share of the budget for every candidate's search (learning rate,
    weight decay) through the sweep code, trial 0 its default recipe, the test split held out; its
    final run trains with what the search found; --no-tune keeps one recipe each."""
    out = tmp_path / "st"
    assert main(["study", "digits", "--models", "mlp,cnn", "--budget", "60s", "--out", str(out), "-q"]) == 0
    state = json.loads((out / "study.json").read_text())
    shares = {c["search_seconds"] for c in state["candidates"]}
    assert len(shares) == 1 and shares.pop() > 0  # equal effort
    for c in state["candidates"]:
        sweep = json.loads((out / "search" / c["name"] / "sweep.json").read_text())
        first = next(t for t in sweep["trials"] if t["trial"] == 0)
        assert first["params"] == {"optim.lr": 3e-3, "optim.weight_decay": 0.0}  # the default recipe
        assert c["search"]["default_val"] == first["value"] and c["search"]["tuned_val"] == sweep["best"]["value"]
        for trial in sweep["trials"]:  # tuned on validation: no trial scored the test split
            metrics = json.loads((out / "search" / c["name"] / trial["run"] / "metrics.json").read_text())
            assert metrics["split"] == "val", trial
        final = RunFolder(out / "runs" / c["name"]).read_config()
        assert (
            final.optim.lr
            == pytest.approx(c["params"]["optim.lr"])
            == pytest.approx(sweep["best"]["params"]["optim.lr"])
        )
        assert final.optim.weight_decay == c["params"]["optim.weight_decay"]
    page = (out / "report.html").read_text()
    assert "search: val acc. default → tuned" in page and "trials ×" in page
    assert main(["study", "--resume", "--out", str(out), "--no-tune", "-q"]) == 2
    assert "was started with a search per candidate" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["study", "digits", "--models", "mlp", "--budget", "30s", "--no-tune", "--out", str(plain), "-q"]) == 0
    state = json.loads((plain / "study.json").read_text())
    assert not (plain / "search").exists() and state["summary"]["rows"][0]["search"] is None
    configs = sorted(plain.rglob("config.yaml"))  # one split or folds, whichever the budget allowed
    assert configs and all(RunFolder(c.parent).read_config().optim.weight_decay == 0.0 for c in configs)


def test_a_multi_label_csv_is_studied_by_map_with_intervals_and_paired_tests(tmp_path, capsys):
    """Issue 24, item 4: multi-label data ranked by validation mAP; test mAP and subset accuracy with
    95 % intervals, seed 003's accuracy and tuned-threshold figures; paired permutation tests of mAP."""
    from tests.fixtures import csv_dataset

    labels = csv_dataset(tmp_path / "ml", multilabel=True, n=160)
    out = tmp_path / "st"
    started = time.time()
    assert main(["study", str(labels), "--models", "mlp,cnn", "--budget", "40s", "--no-tune", "--out", str(out)]) == 0
    assert time.time() - started <= 44
    printed = capsys.readouterr().out
    state = json.loads((out / "study.json").read_text())
    assert state["multilabel"] and state["folds"] == 1 and not state["class_weights"]
    summ = state["summary"]
    assert summ["multilabel"] and len(summ["rows"]) == 2
    for r in summ["rows"]:
        assert r["selection"]["metric"] == "validation mAP"
        for key in ("map", "accuracy"):
            lo, hi = r[key]["ci95"]
            assert lo <= r[key]["value"] <= hi
        assert r["subset_of_truth_accuracy"] is not None and r["tuned_thresholds"]["threshold"]
        history = (out / "runs" / r["name"] / "history.csv").read_text()
        assert "val_mean_average_precision" in history
    vals = [r["selection"]["value"] for r in summ["rows"]]
    assert vals == sorted(vals, reverse=True)
    (pair,) = summ["paired"]
    assert pair["test"].startswith("paired permutation test of mAP") and 0 < pair["p"] <= 1
    assert pair["ci95"][0] <= pair["difference"] <= pair["ci95"][1]
    assert "mAP" in printed.splitlines()[1] and printed.startswith(winner_sentence(StudySummary(**summ)))
    page = (out / "report.html").read_text()
    assert "test mAP" in page and "seed 003" in page and "search: val mAP default → tuned" in page
    assert main(["study", str(labels), "--seeds", "2", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "multi-label data with --seeds" in capsys.readouterr().err


@pytest.mark.long
def test_fractions_draw_learning_curves_and_state_the_crossing_or_that_there_is_none(tmp_path, capsys):
    """Issue 24, item 4: --fractions trains each candidate on nested shares of the training split
    (same validation images), fits a power law each, and says where the curves cross."""
    out = tmp_path / "st"
    args = ["study", "digits", "--models", "mlp,cnn", "--budget", "90s", "--fractions", "0.1,0.25,0.5", "--no-tune"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    state = json.loads((out / "study.json").read_text())
    assert state["fractions"] == [0.1, 0.25, 0.5, 1.0] and state["folds"] == 1
    curves = state["summary"]["curves"]
    val = set(RunFolder(out / "runs" / "mlp").read_json(RunFolder(out / "runs" / "mlp").split_json)["indices"]["val"])
    previous: set[int] = set()
    for f in (0.1, 0.25, 0.5):
        run = RunFolder(out / "fractions" / "mlp" / f"{f:g}")
        idx = run.read_json(run.split_json)["indices"]
        assert set(idx["val"]) == val and not idx["test"]  # the same validation images; test held out
        assert previous <= set(idx["train"])  # nested: a smaller share is a subset of a larger one
        previous = set(idx["train"])
    for name in ("mlp", "cnn"):
        f = curves["fits"][name]
        ns = [n for n, _ in f["points"]]
        assert len(ns) == 4 and ns == sorted(ns) and ns[-1] == state["sizes"]["train"]
        assert f["b"] < 0  # more data, less error
    (pair,) = curves["crossings"]
    assert ("cross at about" in pair["sentence"]) == pair["within"]
    assert pair["sentence"] in printed and "twice the training images predicted" in printed
    page = (out / "report.html").read_text()
    assert "Learning curves by data size" in page and (out / "figures" / "learning_curves.png").is_file()
    if Path(shutil.which("chromium") or "/usr/bin/chromium").exists():  # the page renders, every figure drawn
        errors, widths = _open_in_chromium(out / "report.html")
        assert errors == [] and len(widths) >= 5 and all(w > 0 for w in widths), (errors, widths)
    assert main(["study", "digits", "--fractions", "0.5", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "at least 3 sizes" in capsys.readouterr().err


@pytest.mark.long
def test_unreadable_files_are_summarised_once_in_a_study(tmp_path):
    """Issue 24, item 5: the skipped-files summary used to be printed again for every candidate."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for c, name in enumerate(("circle", "square")):
        (root / name).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(class_image(c, 24, rng)).save(root / name / f"{i}.png")
    (root / "circle" / "broken.png").write_bytes(b"not a png at all")
    (root / "square" / "empty.jpg").write_bytes(b"")
    proc = subprocess.run(
        CNNLAB + ["study", str(root), "--models", "mlp,cnn", "--budget", "45s", "--out", str(tmp_path / "st")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in proc.stderr.splitlines() if "broken.png" in line]
    assert len(said) == 1, said


@pytest.mark.long
@pytest.mark.alone  # the hog is the only other load: not beside another test's worker
def test_a_one_minute_study_beside_a_cpu_hog_still_ends_ranked_and_its_probes_keep_to_a_tenth(tmp_path, capsys):
    """Issue 46: the default candidates of `study digits --budget 60s` on a machine whose other core is
    busy. Before, the probes (a pretrained net probed twice) took 53 s and the study exited with "a
    budget of 60 s leaves -0 s for training"; now the probes stop at a tenth of the budget, cheapest
    first, and the cheap candidates train."""
    import subprocess
    import sys

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = tmp_path / "s"
        assert main(["study", "digits", "--budget", "60s", "--out", str(out), "-q"]) == 0
    finally:
        hog.kill()
        hog.wait()
    state = json.loads((out / "study.json").read_text())
    assert state["status"] == "completed" and state["summary"]["rows"], state["candidates"]
    assert state["probe_seconds"] <= 0.1 * 60 + 3  # the last probe may run over by its own length
    assert "leaves -0 s" not in capsys.readouterr().err


def test_a_fine_tune_candidate_whose_best_epoch_precedes_the_unfreeze_ran_frozen():
    """Issue 46: a 'fine-tune' winner whose best checkpoint came before its backbone was unfrozen is a
    frozen head; it is reported as what it ran."""
    c = Candidate(name="lite-ft", model="efficientnet-lite0", mode="fine-tune", epochs=6)
    assert c.overrides()["model.fine_tune"] == [4, 2]  # 4 frozen epochs, then 2 unfrozen
    assert c.ran_as(3.0) == "frozen" and c.ran_as(4.0) == "frozen"
    assert c.ran_as(5.0) == "fine-tune" and c.ran_as(None) == "fine-tune"
    assert Candidate(name="m", model="mlp").ran_as(1.0) == "scratch"


def test_a_tie_sends_the_next_commands_to_the_clearly_cheaper_candidate():
    """Issue 46: when the winner's lead is no evidence (Holm-adjusted paired p ≥ 0.05), the next
    commands retrain the tied candidate that costs least, if it is at least 1.5× cheaper; a clear
    lead, or a tied one that is no cheaper, keeps the winner."""
    from cnnlab.core.study import cheaper_tie
    from cnnlab.reports.study_text import format_summary, next_subject

    rows = [{"name": "lite-ft", "run_seconds": 300.0}, {"name": "lite-frozen", "run_seconds": 4.0},
            {"name": "mlp", "run_seconds": 2.0}]  # fmt: skip
    paired = [{"other": "lite-frozen", "p": 0.4, "p_holm": 0.8}, {"other": "mlp", "p": 1e-5, "p_holm": 2e-5}]
    tie = cheaper_tie(rows, paired)
    assert tie == {"candidate": "lite-frozen", "instead_of": "lite-ft", "p_holm": 0.8, "times_cheaper": 75.0}
    assert cheaper_tie(rows, [{**paired[0], "p_holm": 0.01}, paired[1]]) is None  # a clear lead: the winner
    assert cheaper_tie([{**rows[0], "run_seconds": 5.0}, *rows[1:]], paired) is None  # not 1.5× cheaper
    summ = StudySummary(rows=[], paired=[], cheaper_tie=tie)
    assert next_subject(summ).startswith("lite-frozen, tied with the winner lite-ft (Holm-adjusted p = 0.8)")
    assert (
        "lite-frozen is tied with it and 75.0× cheaper to train: the next commands use it"
        in format_summary(StudyState(settings=StudySettings(data="d"), summary=summ))[0]
    )


@pytest.mark.long
def test_a_small_folder_is_cross_validated_over_every_image_by_default(tmp_path, capsys):
    """Issue 46: 304 images in 8 classes would leave a held-out test split of ~30 images, intervals
    25-36 points wide; the study cross-validates all of them instead, says why, and every figure and
    paired test is over the 304 out-of-fold images (no winner's run on a split, no test split)."""
    from tests.conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", classes=8, per_class=38, seed=3)
    out = tmp_path / "s"
    argv = ["study", str(root), "--models", "mlp,cnn-small", "--no-tune", "--budget", "75s", "--out", str(out)]
    assert main([*argv, "-q"]) == 0
    state = json.loads((out / "study.json").read_text())
    summ = state["summary"]
    assert state["small_data"] and state["folds"] > 1 and state["sizes"]["test"] == 0
    assert any("too few to tell candidates apart" in n for n in state["notes"])
    (pair,) = summ["paired"]
    assert pair["on"] == "304 out-of-fold images" and pair["test"].startswith("McNemar exact")
    assert all(r["accuracy"]["of"] == "out-of-fold" and r["accuracy"]["ci95"] for r in summ["rows"])
    assert summ["winner_test"]["images"] == 304 and not (out / "winner").exists()
    assert "cross-validation over all 304 images" in (out / "report.html").read_text()
