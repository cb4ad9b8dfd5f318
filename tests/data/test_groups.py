"""Group-aware splits: a group (same scene, painting, patient) stays inside one split and one fold."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.core.errors import CnnlabError
from cnnlab.data.files import read_label_csv
from cnnlab.data.pipeline import prepare_data
from cnnlab.data.split import image_groups, kfold_indices, make_splits
from cnnlab.models import get_spec
from cnnlab.workflows.cv.folds import _fold_splits
from cnnlab.workflows.resolve import build_config
from tests.conftest import class_image


def _one_home(parts: dict[str, np.ndarray], groups: np.ndarray) -> None:
    seen: dict[str, str] = {}
    for name, idx in parts.items():
        for g in groups[idx]:
            assert seen.setdefault(g, name) == name, f"group {g} is in {seen[g]} and {name}"


@pytest.fixture
def grouped_csv(tmp_path):
    """60 groups of 2–6 images (of one class each), listed in a CSV with a group column."""
    rng = np.random.default_rng(0)
    rows = ["file,label,group"]
    for g in range(60):
        c = g % 3
        for k in range(int(rng.integers(2, 7))):
            name = f"g{g:02d}_{k}.png"
            Image.fromarray(class_image(c, 16, rng)).save(tmp_path / name)
            rows.append(f"{name},c{c},scene{g:02d}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def test_a_csv_group_column_keeps_every_group_inside_one_split_and_one_fold(grouped_csv):
    fl = read_label_csv(grouped_csv)
    groups = image_groups(None, fl.groups, None)
    assert groups is not None and len(set(groups)) == 60
    for seed in range(3):
        parts = make_splits(fl.labels, {}, (0.6, 0.2, 0.2), 0.1, seed, groups)
        assert sorted(np.concatenate(list(parts.values()))) == list(range(len(fl.labels)))
        assert all(len(p) for p in parts.values())
        _one_home(parts, groups)
        for fold, (tr, va) in enumerate(kfold_indices(fl.labels, 5, seed, groups)):
            assert not set(groups[tr]) & set(groups[va])
    # without groups, a 60/20/20 split of these images cuts groups (what the guard is for)
    plain = make_splits(fl.labels, {}, (0.6, 0.2, 0.2), 0.1, 0)
    with pytest.raises(AssertionError):
        _one_home(plain, groups)


def test_training_data_and_cv_folds_keep_groups_whole(grouped_csv):
    cfg = build_config(None, {"data.source": str(grouped_csv), "data.split": [0.6, 0.2, 0.2], "train.epochs": 1})
    data = prepare_data(cfg.data, get_spec(cfg.model.name), 0, progress=False)
    assert data.groups is not None
    _one_home(data.splits, data.groups)
    plans, _, data = _fold_splits(cfg, 4, 1, progress=False)
    held_out = {p["name"]: np.asarray(p["splits"]["test"]) for p in plans}
    _one_home(held_out, data.groups)  # every group is held out by exactly one fold
    for p in plans:  # and a fold's inner validation part does not cut a group either
        _one_home({k: np.asarray(v) for k, v in p["splits"].items()}, data.groups)


def test_group_by_regex_groups_files_by_name(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for g in range(12):
            for k in range(3):
                Image.fromarray(class_image(c, 16, rng)).save(tmp_path / f"c{c}" / f"scene{c}{g:02d}_{k}.png")
    cfg = build_config(None, {"data.source": str(tmp_path), "data.group_by": r"(scene\d+)_"})
    data = prepare_data(cfg.data, get_spec(cfg.model.name), 0, progress=False)
    assert data.groups is not None and len(set(data.groups)) == 24
    _one_home(data.splits, data.groups)
    with pytest.raises(CnnlabError, match="matches none of the 72 file paths"):
        image_groups(data.paths, None, "nothing-like-this")
    with pytest.raises(CnnlabError, match="not a regular expression"):
        build_config(None, {"data.source": str(tmp_path), "data.group_by": "(unclosed"})
    with pytest.raises(CnnlabError, match="needs at least 10"):  # 0.8/0.1/0.1 needs ten groups
        make_splits(np.zeros(6, np.int64), {}, (0.8, 0.1, 0.1), 0.1, 0, np.asarray(list("aabbcc"), object))


def test_a_group_cut_by_the_given_splits_is_an_error():
    groups = np.asarray(["a", "a", "b", "b"], object)
    with pytest.raises(CnnlabError, match="group 'a' has images in both"):
        make_splits(
            np.zeros(4, np.int64),
            {"train": np.array([0, 2, 3]), "test": np.array([1])},
            (0.8, 0.1, 0.1),
            0.1,
            0,
            groups,
        )


@pytest.mark.long
def test_a_study_keeps_a_csv_groups_whole_and_passes_its_data_options_to_every_candidate(grouped_csv, tmp_path):
    import json

    from cnnlab.cli import main

    out = tmp_path / "study"
    argv = ["study", str(grouped_csv), "--models", "mlp", "--budget", "30s", "--no-tune", "--on-leak", "off"]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["settings"]["on_leak"] == "off" and state["settings"]["group_by"] is None  # the options given
    groups = image_groups(None, read_label_csv(grouped_csv).groups, None)
    # the budget may choose folds on this small set: then every fold's run keeps the groups too
    runs = [out / "runs" / "mlp"] if state["folds"] == 1 else sorted((out / "cv" / "mlp").glob("r*-fold*"))
    assert runs
    for run in runs:
        assert "on_leak: 'off'" in (run / "config.yaml").read_text()
        split = json.loads((run / "split.json").read_text())["indices"]
        _one_home({k: np.asarray(v) for k, v in split.items()}, groups)
    assert main(["study", str(grouped_csv), "--group-by", "(unclosed", "--out", str(tmp_path / "bad")]) == 2


def test_a_catastrophic_group_by_pattern_returns_at_once_on_long_names():
    """'(a+)+$' backtracks exponentially in Python's re on a run of a's that does not end the text;
    cnnlab matches user patterns with RE2, in time linear in the path."""
    import time

    paths = [f"class_{i % 2}/" + "a" * 200 + f"{i}.png" for i in range(50)]
    started = time.perf_counter()
    with pytest.raises(CnnlabError, match="matches none"):
        image_groups(paths, None, "(a+)+$")
    assert time.perf_counter() - started < 5
    groups = image_groups(paths, None, r"/(a+)\d")
    assert len(set(groups)) == 1  # the pattern still groups what it matches


def test_a_group_by_pattern_re2_cannot_run_is_refused_in_one_line(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["train", "--data", "digits", "--group-by", "(?<=x)y", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("--group-by" in err or "group_by" in err), err
    assert "look-around" in err
