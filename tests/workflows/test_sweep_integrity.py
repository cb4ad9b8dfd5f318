"""A sweep folder whose files a kill or a hand damaged (issue 23, item 6): a journal cut short is
repaired before anything appends, a damaged record is refused naming its byte offset, a lost
journal beside trial folders is refused instead of re-training them, and a broken sweep.yaml is
one line."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from cnnlab.cli import main
from tests.workflows.test_sweep import GRID, write_spec

SMALL = {**GRID, "base": {**GRID["base"], "train": {"epochs": 1, "batch_size": 64}},
         "space": {"optim.lr": [0.001, 0.01]}}  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sw")
    assert main(["sweep", str(write_spec(tmp / "s.yaml", SMALL)), "--out", str(tmp / "sweep"), "-q"]) == 0
    return tmp / "sweep"


def _copy(finished, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(finished, out)
    return out, out / "study.journal"


def test_a_journal_cut_short_by_a_kill_is_repaired_and_stays_usable(finished, tmp_path, capsys):
    out, journal = _copy(finished, tmp_path)
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines(keepends=True)[-1][:25])  # a record half written
    for _ in range(2):  # the first resume repairs it; the second finds a sound journal
        assert main(["sweep", "--resume", "--out", str(out), "-q"]) == 0
        now = journal.read_bytes()
        assert now.startswith(whole) and now.endswith(b"\n") and all(map(json.loads, now.splitlines()))
    assert main(["sweep-report", str(out)]) == 0
    assert json.loads((out / "sweep.json").read_text())["done"] == 2
    journal.write_bytes(whole + b'{"op_code": 0, "worker_id": "x"')  # no newline, not JSON either
    assert main(["sweep-report", str(out)]) == 0 and journal.read_bytes().startswith(whole)
    journal.write_bytes(whole + b"garbage\n")  # a damaged last record, newline and all
    assert main(["sweep-report", str(out)]) == 0 and b"garbage" not in journal.read_bytes()


def test_a_damaged_record_inside_the_journal_is_refused_naming_its_offset(finished, tmp_path, capsys):
    out, journal = _copy(finished, tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    offset = len(lines[0])
    journal.write_bytes(lines[0] + b"{not json}\n" + b"".join(lines[1:]))
    assert main(["sweep", "--resume", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"is damaged at byte {offset} (record 2 is not JSON)" in err and "Traceback" not in err


def test_a_lost_journal_beside_trial_folders_is_refused_not_re_run(finished, tmp_path, capsys):
    out, journal = _copy(finished, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("metrics.json")}
    journal.unlink()
    assert main(["sweep", "--resume", "--out", str(out), "-q"]) == 2
    assert "is missing but" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("metrics.json")} == before


@pytest.mark.parametrize("text", ["- a\n- b\n", "study: x\n", "spec: [1]\nstudy: x\n", "{{{{", ""])
def test_a_broken_sweep_yaml_is_one_line(finished, tmp_path, capsys, text):
    out, _ = _copy(finished, tmp_path)
    (out / "sweep.yaml").write_text(text)
    assert main(["sweep", "--resume", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "sweep.yaml" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_spec_saved_in_the_folder_is_read_through_the_bounded_loader(finished, tmp_path, capsys):
    out, _ = _copy(finished, tmp_path)
    tree = yaml.safe_load((out / "sweep.yaml").read_text())
    (out / "sweep.yaml").write_text("a: &a [1]\n" + "b: [" + ", ".join(["*a"] * 10) + "]\n" + yaml.safe_dump(tree))
    assert main(["sweep", "--resume", "--out", str(out), "-q"]) == 2
    assert "alias" in capsys.readouterr().err.lower()


def test_a_huge_grid_is_refused_unbounded_and_drawn_lazily_when_trials_bound_it(tmp_path, capsys):
    """Issue 23, item 9: train.seed 0 … 10⁹ on a grid used to be listed whole (MemoryError)."""
    import resource

    huge = {**SMALL, "space": {"train.seed": {"type": "int", "low": 0, "high": 10**9, "step": 1},
                               "optim.lr": [0.001, 0.01]}}  # fmt: skip
    assert main(["sweep", str(write_spec(tmp_path / "h.yaml", huge)), "--out", str(tmp_path / "a")]) == 2
    assert "the grid has 2,000,000,002 points" in capsys.readouterr().err and not (tmp_path / "a").exists()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spec = write_spec(tmp_path / "h2.yaml", {**huge, "trials": 3})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "b"), "-q"]) == 0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 300 * 2**20
    s = json.loads((tmp_path / "b" / "sweep.json").read_text())
    points = [json.dumps(t["params"], sort_keys=True) for t in s["trials"]]
    assert s["done"] == 3 and len(set(points)) == 3  # distinct points of the grid
    for t in s["trials"]:
        assert 0 <= t["params"]["train.seed"] <= 10**9 and t["params"]["optim.lr"] in (0.001, 0.01)
