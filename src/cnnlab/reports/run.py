"""One self-contained HTML report per run (figures embedded, no network requests), and a
comparison page for several runs."""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import __version__
from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.metrics import catalogue
from cnnlab.core.schema import flatten_config
from cnnlab.evaluate import plots
from cnnlab.evaluate.metrics import reliability
from cnnlab.reports.kit import Markup, Section, img_tag, join, kpis, page, pre, table, thumbnails
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.store import RunFolder, read_table

log = logging.getLogger(__name__)

MAX_SAMPLE_CLASSES = 20


def agreement_section(
    agree: dict[str, Any], images: Any, classes: Sequence[str], labels: Any, most: int = 30
) -> Section:
    """Two runs image by image: the agreement table, κ, the oracle bound, the averaged ensemble
    with its interval, and thumbnails of the test images only A (only B) gets right."""
    (both, only_a), (only_b, neither) = agree["agreement"]
    lo, hi = agree["ensemble_ci95"]
    body = table(["", "B right", "B wrong"], [["A right", both, only_a], ["A wrong", only_b, neither]]) + Markup(
        "<p>Same prediction on {:.1%} of the images; Cohen's κ {:.3f}. Oracle bound (right when either run is) "
        "{:.4f}; the ensemble that averages the two runs' saved probabilities reaches <b>{:.4f}</b> (95 % Wilson "
        "interval {:.4f} – {:.4f}).</p>"
    ).format(agree["same_prediction"], agree["kappa"], agree["oracle_accuracy"], agree["ensemble_accuracy"], lo, hi)
    for key, who in (("only_a", "A"), ("only_b", "B")):
        idx = [i for i in agree[key] if not isinstance(images, dict) or i in images][:most]
        if images is None or not idx:
            continue
        pics = [np.asarray(images[int(i)]) for i in idx]
        pics = [p[0] if p.ndim == 4 else p for p in pics]
        caps = [f"#{i} {classes[int(labels[int(i)])]}" for i in idx]
        body += Markup("<h3>Right only for {} ({}; the first {})</h3>").format(who, len(agree[key]), len(idx))
        body += thumbnails(pics, caps)
    return Section("agreement", "Image by image: where the two runs differ", body)


def read_csv(path: Path) -> list[dict[str, str]]:
    """A run's history.csv or steps.csv, checked (see :func:`cnnlab.runs.store.read_table`)."""
    return read_table(path, "step" if path.name == "steps.csv" else "epoch")


def time_split(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where a run's time went, from run.json: data, feature extraction, training, evaluation, total."""
    fc = info.get("feature_cache") or {}
    parts = [
        ("data (decode, split)", info.get("data_seconds")),
        ("feature extraction", fc.get("seconds")),
        ("training", info.get("train_seconds")),
        ("evaluation", info.get("eval_seconds")),
        ("total", info.get("total_seconds")),
    ]
    return [(label, f"{v:.1f}") for label, v in parts if v is not None]


def top_confused(cm: Sequence[Sequence[int]], classes: Sequence[str], n: int = 8) -> list[tuple[str, str, int]]:
    pairs = [
        (classes[i], classes[j], int(cm[i][j]))
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and cm[i][j] > 0
    ]
    return sorted(pairs, key=lambda p: -p[2])[:n]


def write_report(
    run: RunFolder, images: Any, labels: torch.Tensor, grad_cams: Callable[[list[int]], list[np.ndarray] | None]
) -> Path:
    """Write ``report.html`` (and its PNGs under ``report/``) for a finished run, through the
    run folder's writer.

    Args:
        run: the run folder (config, history, metrics and predictions.npz must exist).
        images, labels: the run's decoded images and labels, indexed like predictions.npz.
        grad_cams: image indices → Grad-CAM overlays of the best checkpoint, or None when the
            model has no convolutional layer.
    """
    with run.artifacts("report") as fig_dir:
        page = _report_page(run, fig_dir, images, labels, grad_cams)
    return run.write_text("report.html", page)


@dataclass
class _Page:
    """What every section of a run's report reads: the run's files, loaded once."""

    run: RunFolder
    fig_dir: Path
    images: Any
    labels: torch.Tensor
    grad_cams: Callable[[list[int]], list[np.ndarray] | None]
    cfg: dict[str, Any] = field(init=False)
    info: dict[str, Any] = field(init=False)
    dataset: dict[str, Any] = field(init=False)
    metrics: dict[str, Any] = field(init=False)
    history: list[dict[str, str]] = field(init=False)
    steps: list[dict[str, str]] = field(init=False)
    probs: np.ndarray = field(init=False)
    y: np.ndarray = field(init=False)
    idx: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        run = self.run
        self.cfg = run.read_config().model_dump(mode="json")
        self.info = run.status()
        self.dataset = run.read_json(run.dataset_json)
        self.metrics = run.read_json(run.metrics_json)
        self.history = read_csv(run.history_csv)
        self.steps = read_csv(run.steps_csv)
        pred = run.load_predictions()
        self.probs, self.y, self.idx = pred["probs"], pred["labels"], pred["indices"]

    @property
    def classes(self) -> list[str]:
        return list(self.dataset["classes"])

    @property
    def multilabel(self) -> bool:
        return bool(self.dataset.get("multilabel"))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.info.get("parameters", {}))


def _report_page(
    run: RunFolder,
    fig_dir: Path,
    images: Any,
    labels: torch.Tensor,
    grad_cams: Callable[[list[int]], list[np.ndarray] | None],
) -> str:
    pg = _Page(run, fig_dir, images, labels, grad_cams)
    sections = [x for section in PAGE_SECTIONS for x in section(pg)]
    subtitle = (
        f"{pg.cfg['model']['name']} on {pg.dataset['source']} · run {run.path.name} · report written "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by cnnlab {__version__}"
    )
    return page(f"cnnlab report: {run.path.name}", subtitle, sections)


def _summary_section(pg: _Page) -> list[Section]:
    metrics, info, params = pg.metrics, pg.info, pg.params
    tiles: list[tuple[str, Any]] = [
        (m.label, metrics[m.name]) for m in catalogue() if m.headline and metrics.get(m.name) is not None
    ]
    tiles += [
        ("parameters", f"{params.get('total', 0):,}"),
        ("run time", f"{info.get('total_seconds', info.get('train_seconds', 0))} s"),
        ("of which training", f"{info.get('train_seconds', 0)} s"),
        ("best epoch", f"{metrics.get('best_epoch')} / {info.get('epochs_done')}"),
    ]
    status = info.get("status")
    warn = (
        Markup("")
        if status == "completed"
        else Markup('<p class="warn">This run is {}, not completed.</p>').format(status)
    )
    note = use_sentence(pg.run.test_split_id()) if metrics.get("split") == "test" else None
    if note:
        warn += Markup('<p class="warn">{}.</p>').format(note[0].upper() + note[1:])
    evaluated = Markup(
        "<p>Evaluated on the {} split ({} images) with the best checkpoint (epoch {}); stopped because: {}.</p>"
    ).format(metrics["split"], metrics["num_samples"], metrics.get("best_epoch"), info.get("stop_reason", ""))
    return [Section("summary", "Summary", warn + kpis(tiles) + evaluated + leakage_note(metrics.get("leakage")))]


def leakage_note(leak: dict[str, Any] | None) -> Markup:
    """The leakage guard's finding as a paragraph: copies of training images among the evaluation
    images, and the figure without them beside the raw one ("" when it found none or did not look)."""
    if not leak or not leak.get("copies"):
        return Markup("")
    rule = leak.get("rule") or {}
    found = ", ".join(f"{n} {s}" for s, n in leak["copies"].items())
    how = f"pHash within {rule.get('hash_distance')} bits, pixel correlation ≥ {rule.get('similarity')}"
    if leak.get("dropped"):
        return Markup(
            '<p class="warn">{} evaluation images ({}) copied training images ({}) and were left out '
            "(--on-leak drop).</p>"
        ).format(leak["dropped"], found, how)
    w = leak.get("without_copies")
    text = Markup("{} evaluation images are near copies of training images ({}); see leaks.json.").format(found, how)
    if w:
        text += Markup(
            " Without the {} in this split: accuracy <b>{:.4f}</b>, macro F1 {:.4f} on {} images (the raw figures "
            "above include them)."
        ).format(w["left_out"], w["accuracy"], w["macro_f1"], w["images"])
    return Markup('<p class="warn">{}</p>').format(text)


def _curves_section(pg: _Page) -> list[Section]:
    if not pg.history:
        return []
    curves = img_tag(plots.plot_curves(pg.history, pg.fig_dir / "curves.png", pg.steps), "training curves")
    return [Section("curves", "Training curves", curves)]


def _metrics_section(pg: _Page) -> list[Section]:
    metrics, multilabel = pg.metrics, pg.multilabel
    rows = [
        [c, m["precision"], m["recall"], m["f1"], m["support"]]
        + ([m.get("auc"), m.get("area_ratio")] if not multilabel else [])
        for c, m in metrics["per_class"].items()
    ]
    header = ["class", "precision", "recall", "F1", "support"] + ([] if multilabel else ["AUC", "AR = 2·AUC − 1"])
    summary_rows = [[k, v] for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [Section("metrics", "Metrics", table(["metric", "value"], summary_rows) + table(header, rows))]


def _per_class_section(pg: _Page) -> list[Section]:
    """Figures per class; for single-label data also the most confused pairs, the most confidently
    wrong images and Grad-CAM overlays."""
    metrics, classes, fig_dir, y, probs = pg.metrics, pg.classes, pg.fig_dir, pg.y, pg.probs
    per_class_figs = [img_tag(plots.plot_per_class(metrics["per_class"], fig_dir / "per_class_f1.png"), "per-class F1")]
    if pg.multilabel:
        return [Section("per-class", "Per class", join(per_class_figs))]
    cm = metrics["confusion_matrix"]
    per_class_figs.insert(0, img_tag(plots.plot_confusion(cm, classes, fig_dir / "confusion.png"), "confusion matrix"))
    per_class_figs.append(img_tag(plots.plot_gains(y, probs, classes, fig_dir / "gains.png"), "cumulative gains"))
    per_class_figs.append(img_tag(plots.plot_roc(y, probs, classes, fig_dir / "roc.png"), "ROC curves"))
    per_class_figs.append(
        img_tag(
            plots.plot_reliability(reliability(y, probs), fig_dir / "reliability.png", metrics["ece"]),
            "reliability diagram",
        )
    )
    confused = top_confused(cm, classes)
    figures = join(Markup("<figure>{}</figure>").format(f) for f in per_class_figs)
    body = Markup('<div class="grid">{}</div><h3>Most confused pairs</h3>').format(figures)
    per_class = Section("per-class", "Per class", body + table(["true", "predicted as", "images"], confused))
    return [per_class, *_errors_sections(pg)]


def _errors_sections(pg: _Page) -> list[Section]:
    """The most confidently wrong test images, and Grad-CAM of right and wrong ones."""
    classes, fig_dir, y, probs, idx, images = pg.classes, pg.fig_dir, pg.y, pg.probs, pg.idx, pg.images
    sections = []
    wrong = np.flatnonzero(probs.argmax(1) != y)
    wrong = wrong[np.argsort(-probs[wrong].max(1))][:18]
    if len(wrong):
        grid = plots.plot_image_grid(
            [images[int(idx[i])].numpy() for i in wrong],
            [f"{classes[y[i]]} →\n{classes[probs[i].argmax()]} {probs[i].max():.2f}" for i in wrong],
            fig_dir / "misclassified.png",
            title="most confidently wrong test images (true → predicted)",
        )
        sections.append(Section("errors", "Most confidently wrong", img_tag(grid, "misclassified")))
    right = np.flatnonzero(probs.argmax(1) == y)[:6]
    chosen = list(right) + list(wrong[:6])
    overlays = pg.grad_cams([int(idx[i]) for i in chosen])
    if overlays is not None:
        grid = plots.plot_image_grid(
            overlays,
            [f"{classes[y[i]]} →\n{classes[probs[i].argmax()]} {probs[i].max():.2f}" for i in chosen],
            fig_dir / "gradcam.png",
            title="Grad-CAM of the predicted class (true → predicted; green right, red wrong)",
            colors=["tab:green" if i in right else "tab:red" for i in chosen],
        )
        sections.append(Section("gradcam", "Grad-CAM", img_tag(grid, "Grad-CAM")))
    return sections


def _samples_section(pg: _Page) -> list[Section]:
    classes, multilabel, images, fig_dir = pg.classes, pg.multilabel, pg.images, pg.fig_dir
    samples, titles = [], []
    lab = pg.labels.numpy()
    shown = classes[:MAX_SAMPLE_CLASSES]  # 100 classes × 6 would be a 600-panel figure
    for c, name in enumerate(shown):
        members = np.flatnonzero(lab[:, c] > 0 if multilabel else lab == c)[:6]
        for i in members:
            samples.append(images[int(i)].numpy())
            titles.append(name)
    if samples:
        more = f" (the first {len(shown)} of {len(classes)} classes)" if len(shown) < len(classes) else ""
        grid = plots.plot_image_grid(samples, titles, fig_dir / "samples.png", cols=6, title="samples per class" + more)
        return [Section("samples", "Samples per class", img_tag(grid, "samples"))]
    return []


def _dataset_section(pg: _Page) -> list[Section]:
    dataset, classes = pg.dataset, pg.classes
    split_rows = [[c] + [dataset["class_counts"][s][i] for s in dataset["split_sizes"]] for i, c in enumerate(classes)]
    skipped = dataset.get("skipped", [])
    size = dataset["input_size"]
    intro = Markup(
        "<p>{}: {} images, {}×{}×{}, imbalance ratio {}, normalisation {}, {} unreadable files skipped.</p>"
    ).format(dataset["source"], dataset["num_images"], size, size, dataset["channels"], dataset["imbalance_ratio"],
             dataset.get("normalize"), len(skipped))  # fmt: skip
    body = intro + table(["class"] + list(dataset["split_sizes"]), split_rows)
    if skipped:
        body += table(["skipped file", "reason"], [[s["path"], s["reason"]] for s in skipped[:50]])
    return [Section("data", "Dataset", body)]


def _model_section(pg: _Page) -> list[Section]:
    params, info, cfg = pg.params, pg.info, pg.cfg
    frozen = params.get("frozen", 0)
    fc = info.get("feature_cache")
    phases = [
        [f"trainable, epochs {ph['epochs']}", f"{ph['trainable']:,} ({ph['frozen']:,} frozen)"]
        for ph in params.get("phases", [])
    ]
    return [
        Section(
            "model",
            "Model",
            table(
                ["", ""],
                [
                    ["model", cfg["model"]["name"]],
                    ["parameters", f"{params.get('total', 0):,}"],
                    *(phases or [["trainable", f"{params.get('trainable', 0):,}"], ["frozen", f"{frozen:,}"]]),
                    ["feature cache", f"used, {fc['seconds']} s to extract" if fc else "not used"],
                    ["optimizer", f"{cfg['optim']['name']} lr {cfg['optim']['lr']}"],
                    ["schedule", cfg["train"]["schedule"]],
                ],
            ),
        )
    ]


def _timing_section(pg: _Page) -> list[Section]:
    info = pg.info
    return [
        Section(
            "timing",
            "Timing and environment",
            table(
                ["", ""],
                [
                    ["started", info.get("started")],
                    ["finished", info.get("finished")],
                    *[[f"{label} seconds", v] for label, v in time_split(info)],
                    ["epochs", info.get("epochs_done")],
                    ["device", info.get("device")],
                    ["cnnlab", info.get("cnnlab")],
                    ["torch", info.get("torch")],
                    ["python", info.get("python")],
                    ["platform", platform.platform()],
                ],
            ),
        )
    ]


def _config_section(pg: _Page) -> list[Section]:
    return [Section("config", "Config", pre(pg.run.config.read_text()))]


# the sections of a run's report, in the page's order
def _sanity_section(pg: _Page) -> list[Section]:
    """`cnnlab explain --sanity`'s findings, when it was run: can the Grad-CAM maps above be trusted?"""
    path = pg.run.path / "explain" / "sanity.json"
    if not path.is_file():
        return []
    return [sanity_section(pg.run.read_json(path), path.with_suffix(".png"))]


def sanity_section(res: dict[str, Any], picture: Path | None = None) -> Section:
    """The Grad-CAM sanity checks as a page section: overall, per class, the border flag."""
    o = res["overall"]
    flag = Markup("")
    if res.get("looks_at_border"):
        flag = Markup(
            '<p class="warn">Looks at the border: {} (as much of the heat on the image\'s edges as a flat map would '
            "put there): the model may be using the background.</p>"
        ).format(", ".join(res["looks_at_border"]))
    body = flag + Markup(
        "<p>On {} {} images. Model randomisation: the maps' Spearman correlation with those of re-initialised "
        "weights is {:.3f}, against {:.3f} for the trained model on a noisy copy (lower on {:.0%} of the images: "
        "the maps depend on what was learned). Deletion: removing the hottest pixels first leaves an area of {:.3f} "
        "under the probability curve, a random map {:.3f} (faster on {:.0%}). Heat on the border ring: {:.0%} (the "
        "ring is {:.0%} of the area).</p>"
    ).format(o["images"], res["split"], o["similarity_randomised"], o["similarity_trained"], o["randomisation_passed"],
             o["deletion_area"], o["deletion_area_random"], o["deletion_faster"], o["border_share"],
             res["border_area"])  # fmt: skip
    header = ["class", "images", "sim. randomised", "sim. trained", "deletion", "deletion (random)", "border"]
    rows = [
        [c, b["images"], b["similarity_randomised"], b["similarity_trained"], b["deletion_area"],
         b["deletion_area_random"], f"{b['border_share']:.0%}"]
        for c, b in res["per_class"].items()
    ]  # fmt: skip
    body += table(header, rows)
    if picture is not None and picture.is_file():
        body += img_tag(picture, "deletion curves and randomisation check")
    return Section("sanity", "Can the heat maps be trusted? (Grad-CAM sanity)", body)


PAGE_SECTIONS = [_summary_section, _curves_section, _metrics_section, _per_class_section, _sanity_section,
                 _samples_section, _dataset_section, _model_section, _timing_section, _config_section]  # fmt: skip


def _policy(model: dict[str, Any]) -> str:
    """The transfer policy of a model config in a few words."""
    if model.get("fine_tune"):
        ft = model["fine_tune"]
        return "fine-tune auto" if ft == "auto" else f"fine-tune {ft[0]}+{ft[1]}"
    if model.get("unfreeze_last"):
        return f"top {model['unfreeze_last']} blocks"
    if model.get("train_bn_only"):
        return "BatchNorm + head"
    return "frozen backbone" if model.get("freeze") == "backbone" else "all layers"


def write_comparison(runs: Sequence[RunFolder], out: Path, extra: Sequence[Section] = ()) -> Path:
    """One page comparing runs: a table of status, settings, accuracy, macro-F1, parameters and
    time; the config fields that differ; validation curves overlaid; ``extra`` sections (two
    runs' image-by-image agreement). Unfinished runs are marked."""
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.NullFormatter below)

    rows, curves, configs = [], [], []
    for r in runs:
        info, state = r.status(), r.state()
        m = r.read_json(r.metrics_json) if state.status == "completed" else {}
        cfg = r.read_config().model_dump(mode="json")
        configs.append(flatten_config(cfg))
        params = info.get("parameters", {})
        rows.append(
            [
                r.path.name,
                state.describe(),
                cfg["model"]["name"],
                cfg["data"]["source"],
                cfg["data"]["input_size"],
                _policy(cfg["model"]),
                cfg["optim"]["lr"],
                info.get("epochs_done"),
                f"{params.get('total', 0):,}",
                f"{params.get('trainable', 0):,}",
                m.get("accuracy"),
                m.get("macro_f1"),
                *(f"{info[k]:.1f}" if info.get(k) is not None else None for k in ("total_seconds", "train_seconds")),
                m.get("best_epoch"),
            ]
        )
        curves.append((r.path.name, read_csv(r.history_csv)))
    differ = sorted(k for k in set().union(*configs) if k != "run.out" and len({repr(c.get(k)) for c in configs}) > 1)
    fig_dir = Path(out).with_suffix("")
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, hist in curves:
        ep = [int(h["epoch"]) for h in hist]
        for ax, key in zip(axes, ("val_acc", "val_loss")):
            vals = [float(h[key]) if h.get(key) else float("nan") for h in hist]
            ax.plot(ep, vals, "o-", label=name)
            ax.set_xlabel("epoch")
            ax.set_ylabel(key.replace("_", " "))
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("validation curves")
    png = plots.save_figure(fig, fig_dir / "curves.png")
    acc_fig, ax = plt.subplots(figsize=(6, 3.5))
    done = [r for r in rows if r[10] is not None]
    params = [int(str(r[8]).replace(",", "")) for r in done]
    ax.scatter(params, [r[10] for r in done])
    ax.set_xscale("log")
    if params:  # at least a decade wide, labelled at powers of ten only (minor labels collide)
        ax.set_xlim(min(params) / 3, max(params) * 3)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    mid = np.sqrt(min(params) * max(params)) if params else 1
    stacked: dict[int, int] = {}  # runs of one size (seeds of one net) get their labels one above another
    for row, p in zip(done, params):  # labels point inwards, so they stay inside the frame
        right = p > mid
        level = stacked[p] = stacked.get(p, -1) + 1
        ax.annotate(
            row[0][:28],
            (p, row[10]),
            fontsize=8,
            xytext=(-4 if right else 4, 4 - 11 * level),
            textcoords="offset points",
            ha="right" if right else "left",
        )
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy against size")
    scatter = plots.save_figure(acc_fig, fig_dir / "accuracy_vs_parameters.png")
    header = [
        "run",
        "status",
        "model",
        "data",
        "input",
        "transfer",
        "lr",
        "epochs",
        "parameters",
        "trainable",
        "accuracy",
        "macro F1",
        "run s",
        "train s",
        "best epoch",
    ]
    diff_rows = [[k] + [c.get(k) for c in configs] for k in differ]
    same = Markup("<p>The runs' configs are the same (apart from their folders).</p>")
    sections = [
        Section("table", "Runs", table(header, rows)),
        Section(
            "differences",
            "Config differences",
            table(["field"] + [r[0] for r in rows], diff_rows) if diff_rows else same,
        ),
        Section("curves", "Curves", img_tag(png, "validation curves")),
        Section("size", "Accuracy against size", img_tag(scatter, "accuracy vs parameters")),
        *extra,
    ]
    atomic_write_text(Path(out), page("cnnlab comparison", f"{len(rows)} runs", sections))
    return Path(out)
