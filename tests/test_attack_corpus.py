"""The attack corpus (issue 23): every hostile input handled cleanly — no traceback, no silent
success, nothing read or written outside its folder. The default suite runs a sample that holds
every kind of damage and every command; the whole corpus (`make attack`) is a `long` test."""

from __future__ import annotations

import pytest

from tests.attack.corpus import RUN_COMMANDS, RUN_TAMPERING, Case, cases, run_all, sample, summary


def _all_clean(chosen: list[Case], root, capsys) -> None:
    outcomes = run_all(root, progress=False, chosen=chosen)
    report = summary(outcomes)
    with capsys.disabled():
        print("\n" + report.splitlines()[0])
    assert all(o.verdict == "clean" for o in outcomes), report


def test_a_sample_of_the_attack_corpus_with_every_kind_of_damage_is_handled_cleanly(tmp_path, capsys):
    chosen = sample()
    runs = [c.name for c in chosen if c.name.startswith("run folder: ")]
    assert len(runs) == len(RUN_TAMPERING) and {n.rsplit(" → ", 1)[1] for n in runs} == set(RUN_COMMANDS)
    assert len(chosen) == len(cases()) - len(RUN_TAMPERING) * (len(RUN_COMMANDS) - 1)
    _all_clean(chosen, tmp_path, capsys)


@pytest.mark.long
def test_every_case_of_the_attack_corpus_is_handled_cleanly(tmp_path, capsys):
    chosen = cases()
    assert len(chosen) >= 300
    _all_clean(chosen, tmp_path, capsys)
