"""The test-set ledger counts every scoring of a test split — by training, by `cnnlab evaluate`, by a
study's candidates — and the commands say so once a test set has been used more than once."""

from __future__ import annotations

from cnnlab.cli import main
from cnnlab.runs.ledger import ledger_path, usage_of
from cnnlab.runs.store import RunFolder

FLAGS = ["--data", "digits", "--hidden", "16", "--epochs", "1", "-q", "--no-report"]


def test_the_ledger_counts_scorings_of_one_test_split_across_train_and_evaluate(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *FLAGS, "--model", "mlp", "--out", str(a)]) == 0
    assert "scored" not in capsys.readouterr().err  # first use: nothing to say
    assert main(["train", *FLAGS, "--model", "mlp", "--dropout", "0.3", "--out", str(b)]) == 0
    err = capsys.readouterr().err
    split = RunFolder(a).test_split_id()
    assert split == RunFolder(b).test_split_id()
    assert f"this test set ({split}) has been scored 2 times by 2 configurations" in err
    assert main(["evaluate", str(a)]) == 0
    assert usage_of(split) == {"scored": 3, "configurations": 2, "runs": 2}
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.html")]) == 0
    assert "has been scored 3 times by 2 configurations" in capsys.readouterr().err
    with ledger_path().open("a") as f:  # a damaged line (a crash mid-write) is skipped, not fatal
        f.write('{"test_split": "trunc')
    assert usage_of(split)["scored"] == 3
    assert main(["evaluate", str(a), "--split", "val"]) == 0  # validation is not the test set
    assert usage_of(split)["scored"] == 3


def test_cv_folds_and_study_candidates_are_recorded_too(tmp_path):
    import json as _json

    from cnnlab.runs.ledger import ledger_path

    assert main(["cv", "--folds", "2", *FLAGS, "--model", "mlp", "--out", str(tmp_path / "cv")]) == 0
    entries = [_json.loads(line) for line in ledger_path().read_text().splitlines()]
    folds = {RunFolder(tmp_path / "cv" / f"r1-fold{i}").test_split_id() for i in (1, 2)}
    assert {e["test_split"] for e in entries} == folds and len(entries) == 2  # each held-out fold, once
    argv = ["study", "digits", "--models", "mlp", "--budget", "30s", "--no-tune", "--out", str(tmp_path / "st"), "-q"]
    assert main(argv) == 0
    study_runs = {e["run"] for e in map(_json.loads, ledger_path().read_text().splitlines())} - {
        e["run"] for e in entries
    }
    assert study_runs and all(str((tmp_path / "st").resolve()) in r for r in study_runs)
