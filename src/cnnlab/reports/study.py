"""The study report (report.html): data, plan, ranking with intervals, per-class F1, paired
differences, figures, over-fitting, remaining confusions and the next commands. Self-contained:
figures are embedded, no external assets."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.study import StudyState, StudySummary
from cnnlab.evaluate.plots import plot_confusion, save_figure
from cnnlab.reports.kit import Markup, Section, img_tag, join, page, pre, table
from cnnlab.reports.run import agreement_section
from cnnlab.reports.study_text import how_judged, next_subject, search_text, seed_spreads, winner_sentence
from cnnlab.runs.predictions import load_thumbnails

log = logging.getLogger(__name__)


class StudyFolder(Protocol):
    """What the page needs of a study (a ``cnnlab.workflows.study.state.Study``): folder, state, candidates."""

    @property
    def out(self) -> Path: ...

    @property
    def state(self) -> StudyState: ...

    @property
    def cands(self) -> Sequence[Any]: ...


COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _ci(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "-"
    ci, sd = d.get("ci95"), d.get("sd")
    return (
        f"{d['value']:.4f}"
        + (f" ± {sd:.4f} over seeds" if sd is not None else "")
        + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    )


def _figures(study: StudyFolder, rows: list[dict[str, Any]], fig_dir: Path) -> list[tuple[Path, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    what = (
        "out-of-fold accuracy"
        if study.state.folds > 1
        else "test subset accuracy"
        if study.state.multilabel
        else "test accuracy"
    )
    axes = (
        ("parameters", "parameters", True, "acc_vs_params.png"),
        ("run_seconds", "seconds per run (data, features, training, test)", False, "acc_vs_time.png"),
    )
    for key, label, log_x, name in axes:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, r in enumerate(rows):
            x, a = r.get(key), r["accuracy"]
            if x is None or a.get("value") is None:
                continue
            lo, hi = a.get("ci95") or (a["value"], a["value"])
            ax.errorbar(
                [x],
                [a["value"]],
                yerr=[[a["value"] - lo], [hi - a["value"]]],
                fmt="o",
                capsize=4,
                color=COLORS[i % len(COLORS)],
                label=r["name"],
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{what} (95 % interval)")
        ax.set_title(f"{what} vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        out.append((save_figure(fig, fig_dir / name), f"{what} against {label}"))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, r in enumerate(rows):
        h = [x for x in r["history"] if "val_acc" in x]
        if h:
            col = COLORS[i % len(COLORS)]
            ax.plot([x["epoch"] for x in h], [x["val_acc"] for x in h], "-o", ms=3, color=col, label=f"{r['name']} val")
            if all("train_acc" in x for x in h):
                ax.plot([x["epoch"] for x in h], [x["train_acc"] for x in h], "--", color=col, alpha=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (solid: validation, dashed: train)")
    ax.set_title("learning curves" + (" (fold 1)" if study.state.folds > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out.append((save_figure(fig, fig_dir / "curves.png"), "learning curves"))
    if rows and "confusion_matrix" in rows[0]:  # single-label
        w = rows[0]
        out.append(
            (
                plot_confusion(w["confusion_matrix"], study.state.classes, fig_dir / "confusion_winner.png"),
                f"confusion matrix of {w['name']}",
            )
        )
    return out


def _view(study: StudyFolder) -> tuple[StudyState, StudySummary, list[dict[str, Any]], bool]:
    """The study's state, its summary, the ranked rows and whether it cross-validated."""
    s = study.state
    summ = s.summary or StudySummary()
    return s, summ, summ.rows, s.folds > 1


def _winner_line(summ: StudySummary, w: dict[str, Any]) -> Markup:
    """The winner, what it was chosen by and its test figures, as a paragraph."""
    wt, sel = summ.winner_test or {}, w["selection"]
    if not summ.multilabel:
        text = Markup("<p>{} by {} ({:.4f}); its test accuracy is {:.4f} on {} images (macro-F1 {:.4f}).</p>")
        nan = float("nan")
        return text.format(winner_sentence(summ), sel["metric"], sel["value"], wt.get("accuracy", nan),
                           wt.get("images", "?"), wt.get("macro_f1", nan))  # fmt: skip
    tuned, at_tuned = w.get("tuned_thresholds"), Markup("")
    if tuned:
        at_tuned = Markup(
            "; at per-class thresholds tuned on validation: subset accuracy {:.4f}, seed 003's accuracy {:.4f}"
        ).format(tuned["accuracy"], tuned["subset_of_truth_accuracy"])
    text = Markup(
        "<p>{} by {} ({:.4f}); its test mAP is {} on {} images, subset accuracy {}, seed 003's accuracy "
        "(every predicted label true) {:.4f}{}.</p>"
    )
    return text.format(winner_sentence(summ), sel["metric"], sel["value"], _ci(w["map"]), wt.get("images", "?"),
                       _ci(w["accuracy"]), w.get("subset_of_truth_accuracy") or float("nan"), at_tuned)  # fmt: skip


def _summary_section(study: StudyFolder) -> Section:
    """The page's summary section."""
    s, summ, rows, cv_mode = _view(study)
    lines = [_winner_line(summ, rows[0])] if rows else []
    how = how_judged(s)
    lines.append(Markup("<p>Budget {:.0f} s; the study took {:.0f} s. {}</p>").format(
        s.budget_seconds, s.spent_seconds, how))  # fmt: skip
    lines.append(Markup(
        "<p>Candidates are ranked by {} accuracy, never by the test split; each candidate's best checkpoint is "
        "chosen by validation accuracy too, the figure it is ranked by.</p>"
    ).format("out-of-fold" if cv_mode else "validation"))  # fmt: skip
    balance = (
        "<p class=warn>The data is imbalanced: the largest class has {:.1f}× the images of the smallest, so <b>class "
        "weights are on</b> (train.class_weights=auto: class c weighted n / (k·n<sub>c</sub>)) for every candidate.</p>"
        if s.class_weights
        else "<p>Class balance: largest/smallest class {:.2f}× (class weights go on from 3×): class weights are "
        "off.</p>"
    )
    lines.append(Markup(balance).format(s.imbalance_ratio))
    for n in s.notes + ([summ.test_set_note] if summ.test_set_note else []):
        lines.append(Markup("<p class=warn>{}</p>").format(n))
    return Section("summary", "Summary", join(lines))


def _data_section(study: StudyFolder) -> Section:
    """The page's data section."""
    s, summ, rows, cv_mode = _view(study)
    insp = study.out / "inspect.json"
    r = json.loads(insp.read_text()) if insp.is_file() else {}
    body = table(["class", "images"], sorted(r.get("class_counts", {}).items()))
    body += Markup(
        "<p>Split sizes: {}. Input {}×{}×{}. Unreadable files: {}; duplicate groups within a split: {}; duplicate "
        "groups across splits (leaks): {}.</p>"
    ).format(", ".join(f"{k} {v}" for k, v in s.sizes.items()), s.input_size, s.input_size, s.channels,
             len(r.get("unreadable", [])), len(r.get("duplicates_within_split", [])),
             len(r.get("leaks_across_splits", [])))  # fmt: skip
    return Section("data", "Data", body)


def _plan_section(study: StudyFolder) -> Section:
    """The page's plan section."""
    s, summ, rows, cv_mode = _view(study)
    timing = s.timing
    ran = {r["name"]: r for r in rows}

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} s"

    def epochs(c: Any) -> str:
        done = ran.get(c.name, {}).get("epochs_done")
        return (f"{done} done of " if done is not None else "") + f"{c.epochs} planned ({c.full_epochs} full)"

    def outcome(c: Any) -> str:
        stop = ran.get(c.name, {}).get("stop_reason")
        return c.status + (f": {c.why}" if c.why else "") + (f" ({stop})" if stop else "")

    prow = [
        [
            c.name,
            c.mode if ran.get(c.name, {}).get("ran_as", c.mode) == c.mode else f"{c.mode}, ran frozen (best epoch)",
            f"{ran.get(c.name, {}).get('input_size') or c.input_size or s.input_size} px",
            c.batch_size or s.settings.batch_size,
            epochs(c),
            (
                f"{c.search_trials} × {c.search_epochs} ep in {c.search_seconds:.0f} s"
                + (f" (took {c.search['seconds']:.1f} s)" if c.search and "seconds" in c.search else "")
            )
            if c.search_trials
            else (c.search or {}).get("note", "-"),
            f"{c.train_s * 1e3:.2f}",
            f"{c.eval_s * 1e3:.2f}",
            secs(timing[c.name].predicted if c.name in timing else None),
            secs(timing[c.name].seconds if c.name in timing else None),
            outcome(c),
        ]
        for c in study.cands
    ]
    plan_note = Markup(
        "<p>{}Epochs were planned from a timed probe of each candidate and re-planned from the measured speed "
        "after each one.</p>"
    ).format(f"Each run × {s.folds} folds. " if cv_mode else "")
    return Section(
        "plan",
        "Plan and time",
        table(
            [
                "candidate",
                "mode",
                "input (probed and trained)",
                "batch",
                "epochs",
                "search: trials × epochs in its share",
                "probe ms/img train",
                "probe ms/img infer",
                "predicted",
                "took",
                "status (why it stopped)",
            ],
            prow,
        )
        + plan_note,
    )


def _ranking_section(study: StudyFolder) -> Section:
    """The page's ranking section."""
    s, summ, rows, cv_mode = _view(study)
    what = "out-of-fold" if cv_mode else "test"
    multilabel = bool(summ.multilabel)
    rrows = [
        [
            i + 1,
            x["name"],
            f"{x['parameters']:,}",
            search_text(x.get("search")),
            x["selection"]["value"],
            _ci(x["accuracy"]),
            _ci(x["map"] if multilabel else x["macro_f1"]),
            round(x["train_seconds"], 1),
            round(x["run_seconds"], 1),
            x["ms_per_image"],
            x["epochs_done"],
            x["overfit"] or "-",
        ]
        for i, x in enumerate(rows)
    ]
    return Section(
        "ranking",
        "Ranking",
        table(
            [
                "#",
                "candidate",
                "parameters",
                "search: val mAP default → tuned" if multilabel else "search: val acc. default → tuned",
                "selection: "
                + ("out-of-fold acc." if cv_mode else "val mAP" if multilabel else "val acc.")
                + " (final run)",
                f"{what} {'subset ' if multilabel else ''}accuracy [95 %]",
                f"{what} mAP [95 %]" if multilabel else f"{what} macro-F1 [95 %]",
                "train s",
                "run s",
                "ms/image",
                "epochs",
                "over-fitting",
            ],
            rrows,
        )
        + Markup(
            "<p>Search: each candidate's learning rate and weight decay searched in the same share of the "
            "budget on the validation split (short trials, the default recipe first); its final run trains with "
            "the best and is ranked by its own validation figure. Intervals: {} ms/image: batch of one on the "
            "study's device, median.</p>"
        ).format("bootstrap over folds." if cv_mode else "bootstrap over the test images (1000 draws)."),
    )


def _per_class_section(study: StudyFolder) -> Section:
    """The page's per-class F1 section."""
    s, _, rows, cv_mode = _view(study)
    what = "out-of-fold" if cv_mode else "test"
    classes = s.classes
    pc = [[k] + [x["per_class_f1"].get(k) for x in rows] for k in classes]
    return Section("per-class", f"Per-class F1 ({what})", table(["class"] + [x["name"] for x in rows], pc))


def _paired_section(study: StudyFolder) -> Section:
    """The page's paired section."""
    s, summ, rows, cv_mode = _view(study)
    prs = summ.paired
    seeded = any(p.get("seed_sd") for p in prs)
    body = (
        table(
            ["best", "other", "difference (best − other)", "95 % interval"]
            + (["seed sd (best, other)"] if seeded else [])
            + ["p", "Holm-adjusted p", "test", "on"],
            [
                [
                    p["best"],
                    p["other"],
                    p["difference"],
                    f"[{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]",
                    *([seed_spreads(p.get("seed_sd"))] if seeded else []),
                    f"{p['p']:.2g}",
                    f"{p['p_holm']:.2g}" if "p_holm" in p else "-",
                    p["test"],
                    p["on"],
                ]
                for p in prs
            ],
        )
        if prs
        else Markup("<p>Only one candidate finished.</p>")
    )
    return Section("paired", "Paired differences (accuracy)", body)


def _figures_section(study: StudyFolder) -> Section:
    """The page's figures section."""
    s, summ, rows, cv_mode = _view(study)
    figs = _figures(study, rows, study.out / "figures")
    body = join(
        Markup("<figure>{}<figcaption>{}</figcaption></figure>").format(img_tag(p, alt), alt) for p, alt in figs
    )
    return Section("figures", "Figures", body)


def _curves_section(study: StudyFolder) -> Section | None:
    """Learning curves by data size (``--fractions``): the figure, each fit, where curves cross."""
    s, summ, rows, _ = _view(study)
    curves = summ.curves
    if not curves:
        return None
    fits = curves["fits"]
    body = Markup("")
    if fits:
        path = _curves_figure(curves, study.out / "figures" / "learning_curves.png")
        caption = "validation figure by training images (log scale), fitted power laws"
        body += Markup("<figure>{}<figcaption>{}</figcaption></figure>").format(
            img_tag(path, "learning curves"), caption
        )
    trows = [
        [
            name,
            ", ".join(f"{n:,}: {v:.4f}" for n, v in f["points"]),
            f"{f['b']:.3f}",
            "-" if f["r2"] is None else f"{f['r2']:.3f}",
            f"{f['at_max']:.4f}",
            f"{f['at_double']:.4f}",
        ]
        for name, f in fits.items()
    ]
    metric = _metric_name(curves["metric"])
    body += table(
        [
            "candidate",
            f"training images: validation {metric}",
            "exponent b (error ∝ n^b)",
            "R²",
            "fit at the full split",
            "predicted with twice the data",
        ],  # fmt: skip
        trows,
    )
    body += join(Markup("<p>{}.</p>").format(c["sentence"]) for c in curves["crossings"])
    body += Markup(
        "<p>Each candidate trained with its own recipe on nested shares of the training split, read on the same "
        "validation images; a power law error = a·n<sup>b</sup> fitted to the logarithms. The prediction for twice "
        "the data extrapolates the fit: a guide, not a measurement.</p>"
    )
    return Section("curves", "Learning curves by data size", body)


def _metric_name(monitor: str) -> str:
    return {"val_acc": "accuracy", "val_mean_average_precision": "mAP"}.get(monitor, monitor)


def _curves_figure(curves: dict[str, Any], path: Path) -> Path:
    import matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, f) in enumerate(curves["fits"].items()):
        col = COLORS[i % len(COLORS)]
        ax.plot(*zip(*f["points"]), "o", color=col, label=name)
        ax.plot(*zip(*f["line"]), "-", color=col, alpha=0.6)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks (3×10², 4×10²) collide
    ax.set_xlabel("training images")
    ax.set_ylabel("validation " + _metric_name(curves["metric"]))
    ax.set_title("learning curves (fit extended to twice the data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def _over_fitting_section(study: StudyFolder) -> Section:
    """The page's over fitting section."""
    s, summ, rows, cv_mode = _view(study)
    flagged = [x for x in rows if x["overfit"]]
    body = join(Markup("<p class=warn><b>{}</b>: {}</p>").format(x["name"], x["overfit"]) for x in flagged) or Markup(
        "<p>No candidate's train accuracy ran more than 0.05 above validation, and no validation loss rose "
        "more than 15 % after its minimum.</p>"
    )
    return Section("overfitting", "Over-fitting", body)


def _confusions_section(study: StudyFolder) -> Section | None:
    """The page's confusions section, or None when it has nothing to show."""
    s, summ, rows, cv_mode = _view(study)
    conf = summ.confusions
    if rows:
        body = table(["true", "predicted as", "images"], conf) if conf else Markup("<p>None.</p>")
        return Section("confusions", f"Confusions that remain ({rows[0]['name']})", body)
    return None


def _next_section(study: StudyFolder) -> Section | None:
    """The page's next section, or None when it has nothing to show."""
    s, summ, rows, cv_mode = _view(study)
    cmds = summ.commands
    if cmds:
        body = join(
            [
                Markup("<p>Re-train {} with its recipe on all the data:</p>").format(next_subject(summ)),
                pre(cmds["retrain"]),
                Markup("<p>then export it (with a parity check) and serve it:</p>"),
                pre(f"{cmds['export']}\n{cmds['serve']}"),
                Markup("<p>or export the study's own run of it now:</p>"),
                pre(cmds["export_study_run"]),
            ]
        )
        return Section("next", "Next", body)
    return None


def _leaks_section(study: StudyFolder) -> Section | None:
    """Copies across splits (inspect.json: exact and near) and each candidate's test figure without the
    test images that copy training images (its run's leak guard), when there are any."""
    s, summ, rows, cv_mode = _view(study)
    insp = study.out / "inspect.json"
    r = json.loads(insp.read_text()) if insp.is_file() else {}
    exact, near = r.get("leaks_across_splits", []), r.get("near_leaks_across_splits", [])
    guarded = [x for x in rows if (x.get("leakage") or {}).get("without_copies")]
    if not exact and not near and not guarded:
        return None
    rule = r.get("near_duplicate_rule") or {}
    body = Markup(
        "<p class=warn>{} groups of identical images and {} pairs of near copies (pHash within {} bits, pixel "
        "correlation ≥ {}) lie in more than one split: a model that memorised a training image is scored on its "
        "copy.</p>"
    ).format(len(exact), len(near), rule.get("hash_distance"), rule.get("similarity"))
    if near:
        body += table(
            ["image", "split", "near copy", "split", "similarity"],
            [[e["files"][0].get("path", e["files"][0].get("index")), e["files"][0]["split"],
              e["files"][1].get("path", e["files"][1].get("index")), e["files"][1]["split"], e["similarity"]]
             for e in near[:15]],
        )  # fmt: skip
    if guarded:
        body += Markup("<p>Test accuracy with and without the test images that copy training images:</p>") + table(
            ["candidate", "test accuracy", "without the copies", "images left out"],
            [[x["name"], x["accuracy"]["value"], x["leakage"]["without_copies"]["accuracy"],
              x["leakage"]["without_copies"]["left_out"]] for x in guarded],
        )  # fmt: skip
    return Section("leaks", "Leaks between the splits", body)


def _audit_section(study: StudyFolder) -> Section | None:
    """The label audit of the best candidate's cross-validation, when the study ran one."""
    a = _view(study)[1].label_audit
    if not a:
        return None
    link = f"{a['folder']}/label_audit.html"
    body = Markup(
        "<p>{} of {} out-of-fold images flagged as likely label errors by cleanlab, from {}'s fold models (each "
        'image scored by a model that never trained on it). Thumbnails: <a href="{}">{}</a>; the flagged ones are '
        "in {}/label_issues.csv: retrain without them with <code>--exclude</code> and compare the two "
        "cross-validations fold by fold.</p>"
    ).format(a["issues"], a["images"], a["candidate"], link, link, a["folder"])
    body += table(
        ["rank", "image", "given", "suggested", "confidence", "flagged"],
        [[r["rank"], r["path"] or r["index"], r["given"], r["suggested"], r["suggested_confidence"],
          "yes" if r["issue"] else ""] for r in a["top"]],
    )  # fmt: skip
    return Section("label-audit", "Labels the models doubt", body)


def _agreement_study_section(study: StudyFolder) -> Section | None:
    """The best two candidates image by image, with the thumbnails the study saved."""
    _, summ, _, _ = _view(study)
    g = summ.agreement
    if not g:
        return None
    saved = study.out / "agreement.npz"
    images, labels = None, None  # a damaged agreement.npz costs the thumbnails, not the page
    if saved.is_file():
        try:  # checked like predictions.npz
            images, labels = load_thumbnails(saved, len(study.state.classes))
        except CnnlabError as e:
            log.warning("the study page shows no thumbnails: %s", e)
    section = agreement_section(g, images, study.state.classes, labels)
    counts = Markup("<p>Counts over all {} images; thumbnails of the first ones.</p>").format(g["images"])
    return Section(
        section.id, f"{g['a']} (A) and {g['b']} (B), image by image ({g['on']} images)", counts + section.body
    )


SECTIONS = [
    _summary_section,
    _data_section,
    _plan_section,
    _ranking_section,
    _per_class_section,
    _paired_section,
    _agreement_study_section,
    _leaks_section,
    _audit_section,
    _figures_section,
    _curves_section,
    _over_fitting_section,
    _confusions_section,
    _next_section,
]  # in the page's order


def write_study_report(study: StudyFolder) -> Path:
    """Write ``report.html`` of the study folder from its state: summary, data, plan and time,
    ranking, per-class F1, paired differences, figures, over-fitting, confusions and next steps."""
    s, _, rows, _ = _view(study)
    sections = [section(study) for section in SECTIONS]
    text = page(
        f"Study of {s.settings.data}",
        f"{len(rows)} candidates · {s.folds} fold(s) · budget {s.budget_seconds:.0f} s · seed {s.settings.seed}",
        [x for x in sections if x is not None],
    )
    path = study.out / "report.html"
    atomic_write_text(path, text)
    return path
