"""`cnnlab evaluate`, `report`, `explain` and `compare`: commands that read run folders."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import add_settings_flags, schema_default, settings_of
from cnnlab.cli.render import format_metrics_table, progress_wanted
from cnnlab.core.run_settings import EvaluateSettings, ExplainSettings

if TYPE_CHECKING:  # the result types, for the type checker only (the CLI imports no workflow at start)
    from cnnlab.core.results import Baseline, DatasetTable, EvaluationResult, SanityReport
    from cnnlab.workflows.comparison import RunsComparison, SeedGroupsComparison


def register(sub: Any) -> None:
    """The parsers of evaluate, report, explain and compare."""
    e = sub.add_parser(
        "evaluate",
        help="evaluate a run's best checkpoint",
        description="Evaluate a run's best checkpoint on its saved test split (or --split), "
        "or on another dataset with --data (classes matched by name).",
    )
    e.add_argument("run", metavar="RUN")
    positive = dict.fromkeys(("batch_size", "top_k", "max_pixels"), argtypes.positive_int)
    add_settings_flags(e, EvaluateSettings, {"device": argtypes.device, **positive})
    e.add_argument("--json", action="store_true", help="print metrics as JSON")
    e.set_defaults(handler=cmd_evaluate)

    r = sub.add_parser(
        "report",
        help="write report.html for a run",
        description="Write RUN/report.html: curves, metrics, per-class figures, confusion, "
        "misclassified images, Grad-CAM, data, model, timing, config; one file.",
    )
    r.add_argument("run", metavar="RUN")
    r.add_argument("--device", default=schema_default("train.device"), type=argtypes.device, metavar="DEV")
    r.set_defaults(handler=cmd_report)

    x = sub.add_parser(
        "explain",
        help="Grad-CAM, filters and feature maps for images",
        description="Grad-CAM overlays for the predicted class (and --class), the first layer's "
        "filters and feature maps of each conv stage, as PNGs. With --sanity (no images needed): check "
        "the run's Grad-CAM on its test images: model randomisation (map similarity with re-initialised "
        "weights, beside the trained model's own stability), the deletion curve against a random map, and "
        "the share of the heat on the border, per class, into RUN/explain/sanity.json and sanity.png.",
    )
    x.add_argument("run", metavar="RUN")
    x.add_argument("images", nargs="*", metavar="IMAGE")
    add_settings_flags(x, ExplainSettings, {"device": argtypes.device, "sanity_images": argtypes.positive_int,
                                            "max_pixels": argtypes.positive_int})  # fmt: skip
    x.set_defaults(handler=cmd_explain)

    c = sub.add_parser(
        "compare",
        help="one page comparing runs",
        description="Write an HTML page comparing runs: accuracy, macro-F1, parameters, training "
        "time, validation curves overlaid.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("--out", default="compare.html", metavar="FILE")
    c.add_argument(
        "--metric",
        default="accuracy",
        metavar="NAME",
        help="with two CV folders: the metric compared fold by fold (default accuracy)",
    )
    c.add_argument("--json", action="store_true", help="with two CV folders: print the comparison as JSON")
    c.set_defaults(handler=cmd_compare)


def cmd_evaluate(args: argparse.Namespace) -> int:
    res = api.evaluate(args.run, settings_of(args, EvaluateSettings), progress_wanted(args))
    if args.json:
        print(json.dumps(_document(res), indent=2))
    elif res.kind == "baselines":
        for one in res.baselines:
            _print_baseline(one)
    elif res.kind == "datasets":
        _print_datasets(res)
    else:
        doc = res.document()
        where = res.data or res.split + " split"
        if res.data and res.split != "all":
            where += f" ({res.split} split)"
        print(format_metrics_table(doc, f"{args.run}: {where}"))
        t = res.added.get("tta")
        if isinstance(t, dict):
            both = [f"{k.replace('_', ' ')} {t[k]:.4f} (plain {doc[k]:.4f})" for k in ("accuracy", "log_loss", "ece")
                    if isinstance(t.get(k), float) and isinstance(doc.get(k), float)]  # fmt: skip
            print(f"with TTA ({t['views']}): " + ", ".join(both))
    return 0


def _document(res: EvaluationResult) -> dict[str, Any]:
    """`evaluate --json`: metrics.json's form; one baseline alone, several as ``{"baselines": […]}``."""
    if res.kind == "evaluation":
        return res.document()
    if res.kind == "baselines":
        rows = [b.model_dump(mode="json") for b in res.baselines]
        return rows[0] if len(rows) == 1 else {"baselines": rows}
    return res.model_dump(mode="json", exclude={"kind"}, exclude_none=True)


def _print_baseline(res: Baseline) -> None:
    t1, t5 = res.top1, res.top5
    print(f"baseline: {res.baseline}; {res.net_classes_mapped} of its classes mapped onto "
          f"{len(res.dataset_classes_mapped)} data classes ({res.label_map})")  # fmt: skip
    print(f"on {res.data}, {res.split} split, {res.images} images:")
    print(f"  top-1 {t1.value:.4f}  [95% {t1.ci95[0]:.4f}, {t1.ci95[1]:.4f}]")
    print(f"  top-{t5.k} {t5.value:.4f}  [95% {t5.ci95[0]:.4f}, {t5.ci95[1]:.4f}]")
    print(f"  top-1 prediction on a mapped class for {res.mapped_top1:.1%} of the images (others count as wrong)")


def _print_datasets(res: DatasetTable) -> None:
    w = max(len(r.data) for r in res.rows)
    print(f"{'data':<{w}}  images  accuracy  macro F1   ({res.split} {'images' if res.split == 'all' else 'split'})")
    for r in res.rows:
        print(f"{r.data:<{w}}  {r.images:>6}  {r.accuracy:8.4f}  {r.macro_f1:8.4f}")
    if res.map is not None and res.precision_at_k is not None and res.queries is not None:
        for matrix, title in ((res.map, "mAP"), (res.precision_at_k, f"precision at {res.k}")):
            print(f"\nretrieval {title} (rows: queries, columns: gallery)")
            cw = max(8, w)
            print(" " * w + "  " + "  ".join(f"{r.data:>{cw}}" for r in res.rows) + "  queries")
            for i, row in enumerate(matrix):
                cells = "  ".join(f"{v:{cw}.4f}" if v is not None else f"{'-':>{cw}}" for v in row)
                print(f"{res.rows[i].data:<{w}}  {cells}  {res.queries[i]:>7}")


def cmd_report(args: argparse.Namespace) -> int:
    print(f"wrote {api.report(args.run, device=args.device, progress=progress_wanted(args))}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    res = api.explain_run(args.run, args.images, settings_of(args, ExplainSettings), progress_wanted(args))
    if res.sanity:
        _print_sanity(res.sanity)
    for r in res.images:
        if r.error is not None:
            print(f"{r.path}: error: {r.error}")
        else:
            print(f"{r.path}: {r.predicted} ({r.prob:.3f}); wrote {', '.join(r.files[:2])}")
    explained = [r for r in res.images if r.files]
    if explained:
        print(f"first-layer filters: {explained[0].files[2]}")
    return 0 if all(r.error is None for r in res.images) else 1


def _print_sanity(res: SanityReport) -> None:
    o = res.overall
    print(f"Grad-CAM sanity on {o['images']:.0f} {res.split} images:")
    print(
        f"  randomisation: map similarity {o['similarity_randomised']:.3f} with re-initialised weights vs "
        f"{o['similarity_trained']:.3f} for the trained model on a noisy copy; lower on "
        f"{o['randomisation_passed']:.0%} of the images"
    )
    print(
        f"  deletion: area {o['deletion_area']:.3f} removing the hottest pixels first vs "
        f"{o['deletion_area_random']:.3f} for a random map; faster on {o['deletion_faster']:.0%} of the images"
    )
    print(f"  heat on the border: {o['border_share']:.0%} (the ring is {res.border_area:.0%} of the area)")
    w = max([len(c) for c in res.per_class] + [5])
    print(f"  {'class':<{w}}  images  rand.sim  trained.sim  deletion  random  border")
    for c, b in res.per_class.items():
        print(
            f"  {c:<{w}}  {b['images']:>6}  {b['similarity_randomised']:>8.3f}  {b['similarity_trained']:>11.3f}  "
            f"{b['deletion_area']:>8.3f}  {b['deletion_area_random']:>6.3f}  {b['border_share']:>6.0%}"
        )
    if res.looks_at_border:
        print(f"  LOOKS AT THE BORDER: {', '.join(res.looks_at_border)} (as much heat on the edges as a flat map)")
    print(f"wrote {', '.join(res.files)}")


def cmd_compare(args: argparse.Namespace) -> int:
    res = api.compare_results(args.runs, args.out, args.metric)
    if args.json:  # the figures; for run folders and seed groups, without the parts that are not there
        print(json.dumps(res.model_dump(mode="json", exclude={"kind"}, exclude_none=res.kind != "cv"), indent=2))
        return 0
    if res.kind == "runs":
        _print_paired(res)
        print(f"wrote {res.page}")
        return 0
    if res.kind == "seeds":
        _print_seed_groups(res)
        return 0
    a, b = res.a, res.b
    print(f"{res.metric} per fold: {a} vs {b} (difference {b} − {a})")
    for name, va, vb, d in zip(res.folds, res.a_values, res.b_values, res.differences):
        print(f"  {name:<12} {va:.4f}  {vb:.4f}  {d:+.4f}")
    lo, hi = res.ci95
    n = len(res.folds)
    print(f"mean difference {res.mean_difference:+.4f}, 95 % interval [{lo:+.4f}, {hi:+.4f}] over {n} folds")
    if res.seed_sd_a is not None or res.seed_sd_b is not None:
        sds = " and ".join(f"{v:.4f}" if v is not None else "one seed" for v in (res.seed_sd_a, res.seed_sd_b))
        print(f"spread over seeds within a fold: {sds} (a gap below it is what a change of seed alone does)")
    ct, pm = res.corrected_t, res.pooled_mcnemar
    if ct:
        print(
            f"corrected resampled t-test (Nadeau-Bengio, the folds share training images): t = {ct['t']:.3f}, "
            f"df {ct['df']}, p = {ct['p']:.4g}"
        )
    if pm:
        print(
            f"McNemar exact on the pooled out-of-fold predictions: p = {pm['p']:.4g} (right only for "
            f"{res.a}: {pm['only_a_right']}, only for {res.b}: {pm['only_b_right']})"
        )
    print(
        f"(Wilcoxon signed-rank over the folds: p = {res.wilcoxon_p:.4g}; with {n} folds it cannot go below "
        f"{2 / 2**n:.4g})"
    )
    return 0


def _print_seed_groups(res: SeedGroupsComparison) -> None:
    print(f"seed groups: A = {res.a}, B = {res.b} (gap B − A beside each group's spread over its seeds)")
    for k, m in res.metrics.items():
        a, b = m["a"], m["b"]
        print(f"  {k:<20} A {a['mean']:.4f} ± {a['sd']:.4f}  B {b['mean']:.4f} ± {b['sd']:.4f}  gap {m['gap']:+.4f}")
    p = res.paired
    if res.unpaired or p is None:
        print(f"not paired: {res.unpaired}", file=sys.stderr)
        return
    lo, hi = p["ci95"]
    print(
        f"accuracy gap {p['difference']:+.4f}, 95 % interval [{lo:+.4f}, {hi:+.4f}], p = {p['p']:.4g} on the same "
        f"{p['images']} test images, {p['seeds_a']} and {p['seeds_b']} seeds ({p['test']})"
    )
    biggest = max(p["seed_sd_a"], p["seed_sd_b"])
    if abs(p["difference"]) <= biggest:
        print(f"the gap is within one seed's spread ({biggest:.4f}): a change of seed alone moves accuracy this much")
    if p.get("test_set_note"):
        print(f"note: {p['test_set_note']}", file=sys.stderr)


def _print_paired(res: RunsComparison) -> None:
    if res.unpaired:
        print(f"not paired: {res.unpaired}", file=sys.stderr)
        return
    p = res.paired
    if not p:
        return
    mc, (lo, hi), (flo, fhi) = p["mcnemar"], p["accuracy_ci95"], p["macro_f1_ci95"]
    print(f"paired on the same {p['images']} test images (split {p['test_split']}): A = {p['a']}, B = {p['b']}")
    print(
        f"  accuracy A {p['accuracy_a']:.4f}  B {p['accuracy_b']:.4f}  difference B − A {p['accuracy_difference']:+.4f}"
        f"  95 % interval [{lo:+.4f}, {hi:+.4f}] (paired bootstrap)"
    )
    print(f"  macro-F1 difference B − A {p['macro_f1_difference']:+.4f}  95 % interval [{flo:+.4f}, {fhi:+.4f}]")
    print(
        f"  McNemar exact p = {mc['p']:.4g} (right only for A: {mc['only_a_right']}, only for B: "
        f"{mc['only_b_right']}); smallest difference this test size detects (80 % power, α 0.05): "
        f"{p['minimum_detectable_difference']:.4f}"
    )
    if res.agreement:
        _print_agreement(res.agreement)
    if p.get("test_set_note"):
        print(f"note: {p['test_set_note']}", file=sys.stderr)


def _print_agreement(g: dict[str, Any]) -> None:
    """Two runs image by image: the right/wrong table, κ, the oracle bound and the ensemble."""
    (both, only_a), (only_b, neither) = g["agreement"]
    lo, hi = g["ensemble_ci95"]
    print(
        f"  image by image: both right {both}, only A {only_a}, only B {only_b}, both wrong {neither}; "
        f"same prediction on {g['same_prediction']:.1%}, Cohen's κ {g['kappa']:.3f}"
    )
    print(
        f"  oracle bound (right when either is) {g['oracle_accuracy']:.4f}; ensemble of the two (averaged "
        f"probabilities) accuracy {g['ensemble_accuracy']:.4f}  95 % interval [{lo:.4f}, {hi:.4f}] (Wilson)"
    )
