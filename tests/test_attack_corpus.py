"""The attack corpus (issue 23): every hostile input handled cleanly — no traceback, no silent
success, nothing read or written outside its folder. The default suite runs a sample that holds
every kind of damage and every command; the whole corpus (`make attack`) is a `long` test."""

from __future__ import annotations

import pytest

from tests.attack.corpus import cases, run_all, sample, summary


def test_a_sample_of_the_attack_corpus_with_every_kind_of_damage_is_handled_cleanly(tmp_path, capsys):
    chosen = sample()
    assert len(chosen) == len(cases()) - 198 + 33
    outcomes = run_all(tmp_path, progress=False, chosen=chosen)
    report = summary(outcomes)
    with capsys.disabled():
        print("\n" + report.splitlines()[0])
    assert all(o.verdict == "clean" for o in outcomes), report


@pytest.mark.long
def test_every_case_of_the_attack_corpus_is_handled_cleanly(tmp_path, capsys):
    assert len(cases()) >= 300
    outcomes = run_all(tmp_path, progress=False)
    report = summary(outcomes)
    with capsys.disabled():
        print("\n" + report.splitlines()[0])
    assert all(o.verdict == "clean" for o in outcomes), report
