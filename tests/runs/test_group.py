"""A folder of runs: started new, reopened to resume, its state stamped with format and version."""

from __future__ import annotations

import json
import re

import pytest

from cnnlab.core.errors import CnnlabError
from cnnlab.runs.group import STATE_VERSION, RunGroup


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


def test_state_is_saved_with_format_and_version_and_read_back(tmp_path):
    g = _group(tmp_path / "g")
    g.save({"status": "running", "folds": 5})
    saved = json.loads(g.state_path.read_text())
    assert saved == {"status": "running", "folds": 5, "format": "cnnlab-cv", "version": STATE_VERSION}
    assert g.read()["folds"] == 5 and g.run("r1-fold1").path == tmp_path / "g" / "r1-fold1"


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
        _group(tmp_path / "g").read()


def test_a_state_file_of_before_versions_reads_as_version_1(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "cv.json").write_text('{"format": "cnnlab-cv", "summary": {}}')
    assert _group(tmp_path / "g").read()["summary"] == {}
