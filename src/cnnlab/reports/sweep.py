"""A sweep's page (sweep.html): the summary tiles, the best config, the sortable trial table, the
figures the sweep drew and importance beside correlation. It takes a typed view of the sweep and
its saved summary (sweep.json's values); the sweep workflow writes the page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.core.state import SweepSummary
from cnnlab.reports.kit import Markup, Section, img_tag, join, page, pre, table

__all__ = ["Figure", "SweepView", "sweep_page"]

# cnnlab's own script (the only one on the page): a click on a heading sorts the trial table
SORT_JS = Markup("""
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.style.cursor = 'pointer'; th.title = 'sort';
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent;
      var y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
""")


@dataclass(frozen=True)
class Figure:
    """One figure of the page: its anchor, title, PNG and a caption (text)."""

    id: str
    title: str
    png: Path
    caption: str


@dataclass(frozen=True)
class SweepView:
    """What the page shows of a sweep besides its summary: its name and its spec's settings."""

    name: str
    method: str
    objective: str
    minimize: bool
    cv: bool
    space: tuple[str, ...]
    summary: SweepSummary

    @classmethod
    def of(cls, name: str, spec: Any, summary: SweepSummary) -> SweepView:
        """The view of a sweep ``name`` with spec ``spec`` (a SweepSpec) and sweep.json's ``summary``."""
        return cls(name, spec.method, spec.objective, spec.direction == "minimize", bool(spec.cv),
                   tuple(spec.space), summary)  # fmt: skip


def _fmt(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v)


def _trial_table(view: SweepView) -> Markup:
    keys = list(view.space)
    head = ["trial", "state", view.objective, "best epoch", "min train loss", "min val loss", "seconds", *keys]
    head += ["run", "note"]
    rows = []
    for r in view.summary.trials:
        params = [json.dumps(v) if isinstance(v, list) else v for v in (r["params"].get(k) for k in keys)]
        cells = [r["trial"], r["state"], r["value"], r["best_epoch"], r["min_train_loss"], r["min_val_loss"]]
        tds = join(
            Markup("<td data-v='{}'>{}</td>").format("" if v is None else v, _fmt(v))
            for v in [*cells, r["seconds"], *params]
        )
        link = Markup("<a href='{}'>{}</a>").format(r["page"], r["run"]) if r["page"] else (r["run"] or "")
        rows.append(Markup("<tr>{}<td>{}</td><td style='text-align:left'>{}</td></tr>").format(tds, link, r["note"]))
    head_cells = join(Markup("<th>{}</th>").format(h) for h in head)
    return Markup("<table class='sortable'><thead><tr>{}</tr></thead><tbody>{}</tbody></table>").format(
        head_cells, join(rows)
    )


def _summary(view: SweepView) -> Markup:
    s, o, pace = view.summary, view.summary.outcomes, view.summary.pace
    tiles = [
        (f"{s.done}/{s.budget if s.budget is not None else '–'}", "trials done"),
        *((o.get(k, 0), k) for k in ("complete", "pruned", "failed")),
        (s.running, "running"),
    ]
    if s.best:
        tiles.append((f"{s.best['value']:.4f}", f"best {view.objective} (trial {s.best['trial']})"))
    if pace.get("trials_per_hour"):
        tiles.append((f"{pace['trials_per_hour']:.0f}", f"trials per hour ({pace['wall_hours'] * 60:.0f} min)"))
    if pace.get("median_setup_seconds") is not None:
        tiles.append((f"{pace['median_setup_seconds']:.1f} s", "a trial's start to its first batch"))
    kpi = join(Markup("<div><b>{}</b>{}</div>").format(v, label) for v, label in tiles)
    intro = Markup(
        "<p>{} search over {} parameter(s), objective <b>{}</b> ({} is better) on the validation split{}; no trial "
        "reads the test split. Written {}.</p>"
    ).format(view.method, len(view.space), view.objective, "lower" if view.minimize else "higher",
             " (mean over CV folds)" if view.cv else "", s.written)  # fmt: skip
    return Markup("<div class='kpi'>{}</div>").format(kpi) + intro


def sweep_page(view: SweepView, figures: Sequence[Figure], best_yaml: str | None) -> str:
    """The whole sweep.html."""
    s = view.summary
    sections = [Section("summary", "Summary", _summary(view))]
    if best_yaml:
        saved = Markup("<p>Saved as best.yaml beside this page.</p>")
        trial = s.best["trial"] if s.best else "?"
        sections.append(Section("best", f"Best config (trial {trial})", saved + pre(best_yaml)))
    sections.append(Section("trials", "Trials (click a heading to sort)", _trial_table(view)))
    for f in figures:
        sections.append(Section(f.id, f.title, Markup("<p>{}</p>").format(f.caption) + img_tag(f.png, f.title)))
    imp, corr = s.importance, s.correlation
    if imp or corr:
        keys = sorted(set(corr) | {k for v in imp.values() for k in v})
        rows = [[k, imp.get("fanova", {}).get(k), imp.get("ped_anova", {}).get(k), corr.get(k)] for k in keys]
        numbers = table(["parameter", "fANOVA", "PED-ANOVA", "correlation"], rows)
        sections.append(Section("importance-table", "Importance and correlation (numbers)", numbers))
    return page(f"cnnlab sweep: {view.name}", f"{view.method} · {view.objective}", sections, script=SORT_JS)
