"""`cnnlab sweep`, `cnnlab sweep-report` and `cnnlab study`: searches and comparisons that train many runs."""

from __future__ import annotations

import argparse
from typing import Any

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import add_settings_flags, settings_of
from cnnlab.cli.render import progress_wanted
from cnnlab.core.settings import StudySettings, SweepSettings


def register(sub: Any) -> None:
    """The parsers of sweep, sweep-report and study."""
    sw = sub.add_parser(
        "sweep",
        help="hyper-parameter search (Optuna): each trial a run folder, one report",
        description="Search the space of SPEC.yaml (grid, random, TPE, CMA-ES, GP) for the best "
        "validation figure; pruning on the per-epoch validation metric; each trial an "
        "ordinary run folder under DIR/trials. Several workers share an Optuna journal "
        "file (no SQLite locks); several machines share --storage postgresql://…. "
        "Writes sweep.html, sweep.json and best.yaml. See examples/sweep-digits.yaml.",
    )
    add_settings_flags(sw, SweepSettings, types={"workers": argtypes.positive_int})
    sw.add_argument("-q", "--quiet", action="store_true")
    sr = sub.add_parser(
        "sweep-report",
        help="rebuild a sweep's sweep.html (also while it runs)",
        description="Rebuild sweep.html, sweep.json and best.yaml of a sweep folder from its study.",
    )
    sr.add_argument("sweep", metavar="DIR")
    sr.add_argument("--storage", metavar="URL", help="the --storage the sweep was started with, if any")
    sw.set_defaults(handler=cmd_sweep)
    sr.set_defaults(handler=cmd_sweep_report)
    st = sub.add_parser(
        "study",
        help="a dataset in: candidates trained and compared within a time budget, one report",
        description="Inspect DATA, pick candidates (a dense net, the small CNN, a seed architecture "
        "that fits the size, EfficientNet-Lite0 frozen and fine-tuned when its weights "
        "are installed), time a short probe of each, plan epochs (and folds, when they "
        "fit) to the wall-clock budget, give every candidate the same share of it to search its "
        "learning rate and weight decay on the validation split (--no-tune: none), train each as an "
        "ordinary run folder, and write "
        "DIR/report.html: ranking with intervals, per-class F1, paired differences, "
        "figures, over-fitting, remaining confusions, the commands to re-train, export "
        "and serve the winner. Class weights go on when the largest class has 3x the "
        "images of the smallest. Multi-label CSVs are ranked by mAP. --fractions adds learning curves "
        "by data size. Ctrl-C, then --resume, continues where it stopped.",
    )
    types = {"budget": str, "seeds": argtypes.positive_int, "batch_size": argtypes.positive_int}
    add_settings_flags(st, StudySettings, types={**types, "device": argtypes.device})
    st.add_argument("-q", "--quiet", action="store_true")
    st.set_defaults(handler=cmd_study)


def cmd_sweep(args: argparse.Namespace) -> int:
    s = api.run_sweep(settings_of(args, SweepSettings), progress=not args.quiet)
    o, out = s.outcomes, s.out
    print(
        f"sweep {s.study}: {s.done}/{s.budget if s.budget is not None else '-'} trials done "
        f"({o.get('complete', 0)} complete, {o.get('pruned', 0)} pruned, {o.get('failed', 0)} failed)"
    )
    if s.best:
        b = s.best
        params = "  ".join(f"{k}={v}" for k, v in b["params"].items())
        print(f"best: trial {b['trial']}  {s.objective} = {b['value']:.4f}  {params}")
        print(f"best config: {out / 'best.yaml'}  (cnnlab train --config {out / 'best.yaml'})")
    if s.budget is not None and s.done < s.budget:
        print(f"{s.budget - s.done} trial(s) left: continue with cnnlab sweep --resume --out {out}")
    print(f"wrote {out / 'sweep.html'}")
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    print(f"wrote {api.rebuild(args.sweep, args.storage)}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    result = api.run_study(settings_of(args, StudySettings), progress=progress_wanted(args), started=args.started)
    print("\n".join(result.summary_lines))
    print(
        f"study took {result.spent_seconds:.0f} s of a {result.budget_seconds:.0f} s budget; "
        f"report: {result.out / 'report.html'}"
    )
    return 0
