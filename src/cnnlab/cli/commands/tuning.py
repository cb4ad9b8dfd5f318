"""`cnnlab sweep`, `cnnlab sweep-report` and `cnnlab study`: searches and comparisons that train many runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import schema_default
from cnnlab.cli.render import progress_wanted


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
    sw.add_argument("spec", nargs="?", metavar="SPEC.yaml", help="the sweep spec (not needed with --resume)")
    sw.add_argument("--out", metavar="DIR", help="sweep folder (default sweeps/<spec name>)")
    sw.add_argument(
        "--workers",
        type=argtypes.positive_int,
        default=1,
        metavar="N",
        help="local worker processes (default 1); the cores are shared among them",
    )
    sw.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna RDB URL (postgresql://user:pass@host/db) to share "
        "one study between machines; default: a journal file in the sweep folder",
    )
    sw.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out: finished trials are kept, dead ones retried once",
    )
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
    st.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="a folder of class folders, a CSV label file or a dataset name (not needed with --resume)",
    )
    st.add_argument(
        "--budget",
        metavar="T",
        help="wall-clock budget of the whole study: 90s, 20m, 1.5h (default 20m); kept within 10 %%",
    )
    st.add_argument(
        "--models",
        metavar="LIST",
        help="candidates instead of the automatic pick, comma-separated: "
        "model names, a pretrained one with :frozen or :fine-tune (e.g. "
        "mlp,cnn,efficientnet-lite0:fine-tune)",
    )
    st.add_argument(
        "--folds",
        type=argtypes.positive_int,
        metavar="K",
        help="cross-validate with K folds when the budget "
        "allows (default: 5 or 3 folds when every candidate's full recipe fits, else one split)",
    )
    st.add_argument(
        "--no-tune",
        dest="tune",
        action="store_false",
        default=None,
        help="one recipe per candidate: no search (by default every candidate gets the same share of the "
        "budget to search its learning rate and weight decay on the validation split first)",
    )
    st.add_argument(
        "--fractions",
        metavar="LIST",
        help="learning curves: also train each candidate on these shares of the training split (e.g. "
        "0.1,0.25,0.5,1; same validation and test images), fit a power law per candidate and say where "
        "the curves cross and what twice the data is predicted to give (one split, no folds)",
    )
    st.add_argument(
        "--audit-labels",
        action="store_true",
        default=None,
        help="with --folds: rank the images whose label the best candidate's out-of-fold models doubt "
        "(cleanlab; label_audit.csv and a page in its CV folder, a section in the report)",
    )
    st.add_argument(
        "--group-by",
        metavar="REGEX",
        help="keep the images a regular expression on their paths groups (its first group) inside one split "
        "and one fold (a CSV's group column does this by itself)",
    )
    st.add_argument(
        "--on-leak",
        choices=("off", "warn", "drop", "refuse"),
        help="validation/test images that copy training images: warn (default; the test figure without them "
        "beside the raw one), drop them, refuse, or off",
    )
    st.add_argument("--out", metavar="DIR", help="study folder (default studies/<data name>)")
    st.add_argument("--resume", action="store_true", help="finish the study in --out: finished candidates are kept")
    st.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help=f"seed of the candidates' training (the split and folds use data.split_seed, 0) "
        f"(default {schema_default('train.seed')})",
    )
    st.add_argument(
        "--seeds",
        type=argtypes.positive_int,
        metavar="N",
        help="train every candidate (every fold) from N initialisations on the same split: rank by the "
        "mean, show each gap beside the spread over seeds and test it with that spread (default 1)",
    )
    st.add_argument(
        "--batch-size",
        type=argtypes.positive_int,
        metavar="N",
        help=f"batch size (default {schema_default('train.batch_size')})",
    )
    st.add_argument(
        "--device",
        type=argtypes.device,
        metavar="DEV",
        help="auto (default), cpu, cuda, cuda:N, mps",
    )
    st.add_argument("--data-dir", metavar="DIR", help="where a built-in dataset's files are")
    st.add_argument("-q", "--quiet", action="store_true")
    st.set_defaults(handler=cmd_study)


def cmd_sweep(args: argparse.Namespace) -> int:
    s = api.run_sweep(
        args.spec, args.out, workers=args.workers, storage=args.storage, resume=args.resume, progress=not args.quiet
    )
    o, out = s["outcomes"], Path(s["out"])
    print(
        f"sweep {s['study']}: {s['done']}/{s['budget'] if s['budget'] is not None else '-'} trials done "
        f"({o.get('complete', 0)} complete, {o.get('pruned', 0)} pruned, {o.get('failed', 0)} failed)"
    )
    if s["best"]:
        b = s["best"]
        params = "  ".join(f"{k}={v}" for k, v in b["params"].items())
        print(f"best: trial {b['trial']}  {s['objective']} = {b['value']:.4f}  {params}")
        print(f"best config: {out / 'best.yaml'}  (cnnlab train --config {out / 'best.yaml'})")
    if s["budget"] is not None and s["done"] < s["budget"]:
        print(f"{s['budget'] - s['done']} trial(s) left: continue with cnnlab sweep --resume --out {out}")
    print(f"wrote {out / 'sweep.html'}")
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    print(f"wrote {api.rebuild(args.sweep, args.storage)}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    state = api.run_study(
        args.data,
        args.out,
        args.budget,
        args.models,
        args.folds,
        resume=args.resume,
        seed=args.seed,
        seeds=args.seeds,
        batch_size=args.batch_size,
        device=args.device,
        data_dir=args.data_dir,
        progress=progress_wanted(args),
        started=args.started,
        tune=args.tune,
        fractions=args.fractions,
        audit_labels=args.audit_labels,
        group_by=args.group_by,
        on_leak=args.on_leak,
    )
    print("\n".join(state["summary_lines"]))
    print(
        f"study took {state['spent_seconds']:.0f} s of a {state['budget_seconds']:.0f} s budget; "
        f"report: {Path(state['out']) / 'report.html'}"
    )
    return 0
