"""The whole attack corpus (issue 23), the same as `make attack`: every hostile input handled
cleanly — no traceback, no silent success, nothing read or written outside its folder."""

from __future__ import annotations

from tests.attack.corpus import cases, run_all, summary


def test_every_case_of_the_attack_corpus_is_handled_cleanly(tmp_path, capsys):
    assert len(cases()) >= 300
    outcomes = run_all(tmp_path, progress=False)
    report = summary(outcomes)
    with capsys.disabled():
        print("\n" + report.splitlines()[0])
    assert all(o.verdict == "clean" for o in outcomes), report
