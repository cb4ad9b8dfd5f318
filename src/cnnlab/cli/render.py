"""How the command line shows results: plain-text tables of metrics and dataset reports, and when
to draw progress bars."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from cnnlab.core.metrics import catalogue
from cnnlab.core.state import SeedsState

if TYPE_CHECKING:  # the CLI imports no data code at start
    from cnnlab.core.results import DataReport

__all__ = ["format_metrics_table", "format_report", "progress_wanted"]


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars unless ``-q`` was given or stderr is not a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def format_metrics_table(m: dict[str, Any], title: str = "") -> str:
    """A plain-text table of per-class metrics and the summary figures."""
    names = list(m["per_class"])
    rows = [(r.name, r.label) for r in catalogue() if r.name != "accuracy" and m.get(r.name) is not None]
    w = max([len(n) for n in names] + [len("weighted avg")] + [len(label) for _, label in rows])
    if title and str(m.get("weights", "")).startswith("EMA"):  # train.ema: say whose figures these are
        title = f"{title.removesuffix(':')} ({m['weights']}):"
    lines = [title] if title else []
    lines.append(f"{'class':<{w}}  precision  recall     f1  support")
    for n in names:
        c = m["per_class"][n]
        lines.append(f"{n:<{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}")
    lines.append("")
    lines.append(f"{'accuracy':<{w}}  {m['accuracy']:.4f}   ({m['num_samples']} images)")
    lines += [f"{label:<{w}}  {m[key]:.4f}" for key, label in rows]
    if m.get("absent_classes"):
        lines.append(f"(F1 averaged over the classes present; absent from this data: {', '.join(m['absent_classes'])})")
    return "\n".join(lines)


def format_report(r: DataReport) -> str:
    """The human-readable summary printed by `cnnlab data inspect`."""
    lines = [
        f"{r.source}: {r.num_readable} readable of {r.num_files} files, {len(r.classes)} classes"
        f"{' (multi-label)' if r.multilabel else ''}, {'pre-split' if r.presplit else 'split by seed'}"
    ]
    splits = list(r.split_counts)
    w = max(len(c) for c in r.classes + ["class"])
    lines.append(f"{'class':<{w}}  " + "  ".join(f"{s:>6}" for s in splits) + "   total")
    for c in r.classes:
        lines.append(
            f"{c:<{w}}  " + "  ".join(f"{r.split_counts[s][c]:>6}" for s in splits) + f"  {r.class_counts[c]:>6}"
        )
    lines.append(f"imbalance ratio (largest/smallest class): {r.imbalance_ratio}")
    lines += _small_test(r)
    lines.append("sizes: " + ", ".join(f"{k} ×{v}" for k, v in r.sizes.items()))
    lines.append(
        "modes: "
        + ", ".join(f"{k} ×{v}" for k, v in r.modes.items())
        + ("; formats: " + ", ".join(f"{k} ×{v}" for k, v in r.formats.items()) if r.formats else "")
    )
    if r.extension_mismatch:
        lines.append(f"extension does not match content: {', '.join(r.extension_mismatch)}")
    big = [u for u in r.unreadable if u["reason"].startswith("too many pixels")]
    bad = [u for u in r.unreadable if u not in big]
    if big:
        lines.append(f"over the pixel budget, skipped ({len(big)}; raise --max-pixels to use them):")
        lines += [f"  {u['path']}: {u['reason']}" for u in big]
    if bad:
        lines.append(f"unreadable files ({len(bad)}):")
        lines += [f"  {u['path']}: {u['reason']}" for u in bad]
    if r.leaks_across_splits:
        lines.append(f"LEAKAGE: {len(r.leaks_across_splits)} identical images in more than one split:")
        for e in r.leaks_across_splits:
            lines.append("  " + "  ==  ".join(f"{f.get('path', f.get('index'))} [{f['split']}]" for f in e["files"]))
    if r.duplicates_within_split:
        lines.append(f"duplicates within a split: {len(r.duplicates_within_split)} groups")
    if not r.leaks_across_splits and not r.duplicates_within_split:
        lines.append("no duplicate images, within or across splits")
    lines += _near_lines(r)
    for p in r.pictures:
        lines.append(f"wrote {p}")
    return "\n".join(lines)


def _small_test(r: DataReport) -> list[str]:
    """A warning when the test split is under 100 images (``SMALL_TEST`` of cnnlab.workflows.study.probes)."""
    test = r.split_sizes.get("test", 0)
    if test >= 100 or r.multilabel:
        return []
    half = 98 / max(test, 1) ** 0.5  # a 95 % interval's half-width at 50 % accuracy, in points (normal approx.)
    return [f"SMALL TEST SPLIT: {test} images; a 95 % accuracy interval over it spans up to ±{half:.0f} points "
            "(cnnlab study cross-validates such data over every image instead)"]  # fmt: skip


def _near_lines(r: DataReport, most: int = 20) -> list[str]:
    """The inspect report's near-duplicate part (absent when it was not searched)."""
    rule = r.near_duplicate_rule
    if r.near_leaks_across_splits is None or r.near_duplicates_within_split is None or rule is None:
        return ["near duplicates: not searched (--near-duplicates on to search)"]
    how = f"pHash within {rule['hash_distance']} bits, pixel correlation ≥ {rule['similarity']}"
    leaks, within = r.near_leaks_across_splits, r.near_duplicates_within_split
    lines = []
    if leaks:
        lines.append(f"NEAR-DUPLICATE LEAKAGE: {len(leaks)} pairs of near copies in different splits ({how}):")
        for e in leaks[:most]:
            a, b = e["files"]
            lines.append(
                f"  {a.get('path', a.get('index'))} [{a['split']}]  ~  {b.get('path', b.get('index'))} "
                f"[{b['split']}]  (similarity {e['similarity']}, {e['bits']} bits)"
            )
        if len(leaks) > most:
            lines.append(f"  … and {len(leaks) - most} more (--json lists them all)")
    if within:
        lines.append(f"near duplicates within a split: {len(within)} pairs")
    if not leaks and not within:
        lines.append(f"no near duplicates ({how}; searched {r.near_duplicates_searched})")
    return lines


def format_seed_spread(group: SeedsState) -> str:
    """A seed group's test metrics: each seed, then mean ± sd and the range."""
    seeds = group.seeds
    lines = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) on one split, {group.images} test images:"]
    for r in group.runs:
        m = r.metrics
        lines.append(f"  seed {r.seed:<6} accuracy {m.get('accuracy', float('nan')):.4f}  "
                     f"macro-F1 {m.get('macro_f1', float('nan')):.4f}  best epoch {r.best_epoch}")  # fmt: skip
    for k, st in (group.summary or {}).items():
        lines.append(f"  {k:<24} {st.mean:.4f} ± {st.sd:.4f}   range {st.min:.4f} – {st.max:.4f}")
    return "\n".join(lines)
