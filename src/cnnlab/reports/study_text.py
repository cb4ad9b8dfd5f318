"""What `cnnlab study` prints at its end and its page says in words: the winner, said only as strongly
as its paired test allows, the ranked table, what each search found and the gaps beside the seed
spread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnlab.core.study import StudyState, StudySummary

__all__ = ["format_summary", "how_judged", "next_subject", "search_text", "seed_spreads", "winner_sentence"]


def search_text(search: dict[str, Any] | None) -> str:
    """A candidate's search in a few words: default → tuned validation accuracy, or why none."""
    if not search:
        return "-"
    if "trials" not in search:
        return search.get("note", "-")
    default, tuned = (("-" if v is None else f"{v:.4f}") for v in (search["default_val"], search["tuned_val"]))
    return f"{default} → {tuned} ({search['trials']} trials × {search['epochs']} ep)"


def seed_spreads(sds: list[float | None] | None) -> str:
    return ", ".join("-" if v is None else f"{v:.4f}" for v in sds) if sds else "-"


def winner_sentence(summ: StudySummary) -> str:
    """Who ranks first, said only as strongly as the paired test against the runner-up allows (its
    Holm-adjusted p-value within the family of winner-against-each tests)."""
    rows, paired = summ.rows, summ.paired
    if not rows:
        return "no candidate finished"
    first = rows[0]["name"]
    runner = next((p for p in paired if p["other"] == rows[1]["name"]), None) if len(rows) > 1 else None
    if runner is None:
        return f"{first} ranks first"
    p = runner.get("p_holm", runner["p"])
    if p >= 0.05:
        return f"{first} is tied with {runner['other']} (paired test, Holm-adjusted p = {p:.2g}); it ranks first"
    return f"{first} ranks first, ahead of {runner['other']} (paired test, Holm-adjusted p = {p:.2g})"


def format_summary(state: StudyState) -> Sequence[str]:
    """The lines `cnnlab study` prints at the end."""
    summ = state.summary or StudySummary()
    rows = summ.rows
    multilabel = bool(summ.multilabel)
    second = "mAP" if multilabel else "macro-F1"  # the second test figure; multi-label accuracy is subset accuracy
    tie = summ.cheaper_tie
    lines = [
        winner_sentence(summ)
        + (
            f"; {tie['candidate']} is tied with it and {tie['times_cheaper']}× cheaper to train: the next commands "
            "use it"
            if tie
            else ""
        )
        + ".",  # fmt: skip
        f"{'#':>2}  {'candidate':<30} {'params':>10}  {'select':>7}  {'accuracy':>8}  {second:>8}  "
        f"{'run s':>7}  {'ms/img':>7}",
    ]
    searched = any(r.get("search") and "trials" in r["search"] for r in rows)
    seeded = any(r["accuracy"].get("sd") is not None for r in rows)
    if seeded:
        lines[1] += f"  {'acc sd':>7}"
    for i, r in enumerate(rows):
        name = r["name"] + (" (ran frozen)" if r.get("ran_as", r["mode"]) != r["mode"] else "")
        lines.append(
            f"{i + 1:>2}  {name:<30} {r['parameters'] or 0:>10,}  {r['selection']['value'] or 0:7.4f}  "
            f"{r['accuracy']['value']:8.4f}  {r['map' if multilabel else 'macro_f1']['value']:8.4f}  "
            f"{r['run_seconds']:7.1f}  "
            f"{r['ms_per_image'] or 0:7.2f}" + (f"  {r['accuracy'].get('sd') or 0:7.4f}" if seeded else "")
        )
    if searched:
        lines.append(f"    search (validation {'mAP' if multilabel else 'accuracy'}, default → tuned):")
        lines += [f"      {r['name']}: {search_text(r.get('search'))}" for r in rows]
    for p in summ.paired:
        if p.get("seed_sd"):
            lines.append(
                f"    gap {p['best']} − {p['other']}: {p['difference']:+.4f} "
                f"(sd over seeds {seed_spreads(p['seed_sd'])}; "
                f"Holm-adjusted p = {p.get('p_holm', p['p']):.2g})"
            )
    curves = summ.curves or {}
    for name, f in curves.get("fits", {}).items():
        lines.append(
            f"    curve {name}: error ∝ n^{f['b']:.2f}; twice the training images predicted to give "
            f"{f['at_double']:.4f} (fit at the full split {f['at_max']:.4f})"
        )
    lines += [f"    {c['sentence']}" for c in curves.get("crossings", [])]
    for c in state.candidates:
        if c.status in ("dropped", "failed"):
            lines.append(f"    {c.name}: {c.status} ({c.why})")
    return lines


def next_subject(summ: StudySummary) -> str:
    """Whom the next commands retrain: the winner, or the cheaper candidate tied with it."""
    tie = summ.cheaper_tie
    if not tie:
        return "the winner"
    return (f"{tie['candidate']}, tied with the winner {tie['instead_of']} (Holm-adjusted p = {tie['p_holm']:.2g}) "
            f"and {tie['times_cheaper']}× cheaper to train,")  # fmt: skip


def how_judged(s: StudyState) -> str:
    """How the study's figures were made: one split, folds beside a held-out test split, or (small
    data) folds over every image."""
    if s.small_data:
        return (f"{s.folds}-fold cross-validation over all {sum(s.split_sizes.values())} images (a held-out test "
                f"split would have held {s.split_sizes.get('test')}): every figure, interval and paired test is "
                "out-of-fold, over every image.")  # fmt: skip
    if s.folds > 1:
        return (f"{s.folds}-fold cross-validation on train+val (the test split in no fold); the winner was then "
                "trained once on the train/val split and tested once.")  # fmt: skip
    return ("One train/val/test split; each candidate's test split was evaluated once, after training, and is not "
            "used to rank.")  # fmt: skip
