"""A folder of runs: started new, reopened to resume, its state stamped with format and version."""

from __future__ import annotations

import json
import re

import pytest

from cnnlab.core.errors import CnnlabError
from cnnlab.core.state import STATE_VERSION, CvState, GroupState
from cnnlab.core.study import StudyState
from cnnlab.runs.group import RunGroup


def _group(path):
    return RunGroup(path, "cv", "cv.json", "cnnlab cv --out DIR")


def test_a_new_group_refuses_a_folder_that_holds_something_or_is_a_file(tmp_path):
    _group(tmp_path / "new").check_new()  # nothing there
    (tmp_path / "empty").mkdir()
    _group(tmp_path / "empty").check_new()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CnnlabError, match="already exists; add --resume"):
        _group(tmp_path / "full").check_new()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CnnlabError, match="is a file, not a folder"):
        _group(tmp_path / "file").check_new()


class _Folds(GroupState):
    folds: int


def test_state_is_saved_with_format_and_version_and_read_back(tmp_path):
    g = _group(tmp_path / "g")
    g.save(_Folds(status="running", folds=5))
    saved = json.loads(g.state_path.read_text())
    assert saved == {"status": "running", "started": None, "finished": None, "folds": 5, "format": "cnnlab-cv",
                     "version": STATE_VERSION}  # fmt: skip
    assert g.load(_Folds).folds == 5 and g.run("r1-fold1").path == tmp_path / "g" / "r1-fold1"


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "is not a cv folder (no cv.json); start one with cnnlab cv"),
        ("{not json", "cannot be read"),
        ('{"format": "cnnlab-study"}', "is not a cnnlab cv file"),
        ("[]", "is not a cnnlab cv file"),
        ('{"format": "cnnlab-cv", "version": 99}', "has format version 99; this cnnlab reads up to"),
        ('{"format": "cnnlab-cv", "version": "x"}', "is damaged: its format version is 'x'"),
        ('{"format": "cnnlab-cv", "version": true}', "is damaged: its format version is True"),
    ],
)
def test_a_missing_damaged_foreign_or_newer_state_is_one_line(tmp_path, content, message):
    (tmp_path / "g").mkdir()
    if content is not None:
        (tmp_path / "g" / "cv.json").write_text(content)
    with pytest.raises(CnnlabError, match=re.escape(message)):
        _group(tmp_path / "g").load(GroupState)


def test_a_state_file_of_before_versions_reads_as_version_1(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "cv.json").write_text(
        '{"format": "cnnlab-cv", "model": "mlp", "data": "digits", "seed": 0, "folds": 2, "summary": {}}'
    )
    cv = _group(tmp_path / "g").load(CvState)
    assert cv.summary == {} and cv.status == "completed" and cv.fold_seed == 0  # before split_seed: train.seed


def test_a_state_its_model_refuses_is_one_line_naming_the_field(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "cv.json").write_text('{"format": "cnnlab-cv", "model": "mlp", "data": "d", "seed": 0}')
    with pytest.raises(CnnlabError, match=r"cv.json is damaged: folds: Field required; start it again"):
        _group(tmp_path / "g").load(CvState)
    (tmp_path / "g" / "cv.json").write_text(
        '{"format": "cnnlab-cv", "model": "mlp", "data": "d", "seed": 0, "folds": 2, "runs": [{"name": 3}]}'
    )
    with pytest.raises(CnnlabError, match=r"damaged: runs.0.name: Input should be a valid string"):
        _group(tmp_path / "g").load(CvState)


V1_STUDY = {  # a study.json as cnnlab wrote it before the study's state was typed (format version 1)
    "format": "cnnlab-study", "version": 1, "status": "completed", "data": "digits", "data_dir": None,
    "data_options": {"on_leak": "drop"}, "budget_seconds": 60.0, "seed": 3, "seeds": 2, "batch_size": 64,
    "device": "cpu", "folds_requested": None, "models_requested": "mlp,cnn", "folds": 1, "tune": True,
    "fractions": [], "fractions_requested": None, "sizes": {"train": 10, "val": 5, "test": 5}, "input_size": 8,
    "channels": 1, "classes": ["a", "b"], "presplit": False, "smallest_pool_class": 7, "imbalance_ratio": 1.2,
    "class_weights": False, "multilabel": False, "notes": [], "speed": 1.3, "spent_seconds": 50.0,
    "timing": {"mlp": {"predicted": 1.0, "seconds": 2.0}}, "audit_labels": False,
    "candidates": [{"name": "mlp", "model": "mlp", "status": "done", "epochs": 3}],
    "summary": {"rows": [{"name": "mlp"}], "paired": [], "winner": "mlp", "multilabel": False},
}  # fmt: skip


def test_a_version_1_study_loads_into_the_typed_state_and_is_written_back_as_version_2(tmp_path):
    g = RunGroup(tmp_path / "s", "study", "study.json", "cnnlab study DATA")
    (tmp_path / "s").mkdir()
    g.state_path.write_text(json.dumps(V1_STUDY))
    st = g.load(StudyState)
    assert st.settings.budget == 60.0 and st.settings.seeds == 2 and st.settings.models == "mlp,cnn"
    assert st.settings.on_leak == "drop" and st.settings.batch_size == 64 and st.seed_values == [3, 4]
    assert st.candidates[0].epochs == 3 and st.timing["mlp"].seconds == 2.0 and st.summary.winner == "mlp"
    g.save(st)
    again = json.loads(g.state_path.read_text())
    assert again["version"] == StudyState.VERSION == 2 and again["settings"]["budget"] == 60.0
    assert g.load(StudyState) == st
    again["version"] = 3
    g.state_path.write_text(json.dumps(again))
    with pytest.raises(CnnlabError, match="has format version 3; this cnnlab reads up to 2: upgrade cnnlab"):
        g.load(StudyState)


@pytest.mark.parametrize("field,value", [("spent_seconds", "NaN"), ("speed", "0"), ("winner_reserve", "-5"),
                                         ("probe_seconds", "Infinity"), ("imbalance_ratio", "0.5")])  # fmt: skip
def test_a_study_whose_times_a_resume_computes_deadlines_from_are_not_finite_is_refused(tmp_path, field, value):
    g = RunGroup(tmp_path / "s", "study", "study.json", "cnnlab study DATA")
    (tmp_path / "s").mkdir()
    g.state_path.write_text(json.dumps(V1_STUDY)[:-1] + f', "{field}": {value}}}')
    with pytest.raises(CnnlabError, match=f"study.json is damaged: {field}: "):
        g.load(StudyState)
