"""`cnnlab train`, `cnnlab lr-find` and `cnnlab cv`: a config from the flags, one api call each."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import add_config_flags, add_settings_flags, config_overrides, given_config_keys, settings_of
from cnnlab.cli.render import format_metrics_table, format_seed_spread, progress_wanted
from cnnlab.core.errors import CnnlabError
from cnnlab.core.settings import CvSettings, LrFindSettings
from cnnlab.core.yamlio import load_yaml


def register(sub: Any) -> None:
    """The parsers of train, lr-find and cv."""
    t = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a model on a dataset; writes config, history, checkpoints and test metrics "
        "into a run folder. Flags override --config; --set overrides both.",
    )
    add_config_flags(t)
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN (or a seed group) from its last checkpoint (add --epochs to extend)",
    )
    t.add_argument(
        "--seeds",
        type=argtypes.positive_int,
        default=1,
        metavar="N",
        help="train N initialisations (--seed, +1 …) on one split into --out/seed-<s>; prints mean ± sd "
        "of the test metrics, the spread a model gap must exceed (default 1)",
    )
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-epoch lines")
    t.set_defaults(handler=cmd_train)

    lf = sub.add_parser(
        "lr-find",
        help="learning-rate range test with a plot",
        description="Train a few hundred batches with an exponentially growing learning rate and "
        "suggest the LR where the loss falls fastest; writes lr_find.csv/.png.",
    )
    add_config_flags(lf, without={"run.out", "train.steps", "train.eval_every"})  # its own --steps
    add_settings_flags(lf, LrFindSettings, {"start_lr": argtypes.positive_float, "end_lr": argtypes.positive_float,
                                            "steps": argtypes.positive_int})  # fmt: skip
    lf.add_argument("-q", "--quiet", action="store_true")
    lf.set_defaults(handler=cmd_lr_find)

    cv = sub.add_parser(
        "cv",
        help="k-fold cross-validation: a run per fold, a summary",
        description="Stratified K-fold cross-validation (R times): one ordinary run folder per fold, "
        "scored on its out-of-fold images; the test split belongs to no fold. Writes cv.json and "
        "cv.html (mean ± std, 95 %% bootstrap intervals). The folds depend only on the data and "
        "--seed, so `cnnlab compare CV_A CV_B` compares two CVs fold by fold.",
    )
    add_config_flags(cv, without={"run.out"})
    add_settings_flags(cv, CvSettings, types={"repeats": argtypes.positive_int, "seeds": argtypes.positive_int})
    cv.add_argument("-q", "--quiet", action="store_true")
    cv.set_defaults(handler=cmd_cv)


def _config(args: argparse.Namespace) -> Any:
    base = load_yaml(args.config) if args.config else None
    return api.build_config(base, config_overrides(args), source=args.config or "")


def cmd_train(args: argparse.Namespace) -> int:
    progress = progress_wanted(args) and os.environ.get("RANK", "0") == "0"
    if args.resume:
        extra = [f for f in given_config_keys(args) if f != "--epochs"]
        if extra or args.config or args.set:
            names = ", ".join(extra) or "--config/--set"
            raise CnnlabError(
                f"--resume continues a run with its saved config; only --epochs may be given (got {names})"
            )
        epochs = getattr(args, "cfg__train__epochs", None)
        result = api.train(None, api.TrainPlan(args.seeds, args.resume, epochs), progress=progress)
    else:
        result = api.train(_config(args), api.TrainPlan(args.seeds, overwrite=args.overwrite), progress=progress)
    m = result.metrics
    if not m:  # a torchrun rank other than 0: rank 0 evaluates and prints
        return 0
    if result.seeds:
        print(format_seed_spread(result.seeds))
        print(f"\nwrote {result.run / 'seeds.json'} and {result.run / 'seeds.html'}")
    else:
        print(format_metrics_table(m, f"{m['split']} set, best epoch {m['best_epoch']}:"))
        print(f"\n{m['split']} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  run folder {result.run}")
        w = (m.get("leakage") or {}).get("without_copies")
        if w:
            print(
                f"without the {w['left_out']} near copies of training images: accuracy {w['accuracy']:.4f}  "
                f"macro-F1 {w['macro_f1']:.4f} ({w['images']} images; leaks.json lists them)"
            )
    if result.test_set_note:
        print(f"note: {result.test_set_note}", file=sys.stderr)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    res = api.lr_find(_config(args), settings_of(args, LrFindSettings), progress_wanted(args))
    tried = f"{len(res.lrs)} steps from {res.lrs[0]:.1e} to {res.lrs[-1]:.1e}" if res.lrs else "no steps"
    print(f"LR range test: {tried}")
    if res.suggestion:
        print(f"suggested learning rate: {res.suggestion:.2e} (steepest loss descent)")
    else:
        print("no suggestion: the loss did not change enough; widen --start-lr/--end-lr or add --steps")
    for f in res.files:
        print(f"wrote {f}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    res = api.cross_validate(_config(args), settings_of(args, CvSettings), progress_wanted(args))
    seeds = f", {res.seeds} seeds per fold" if res.seeds > 1 else ""
    print(
        f"{res.folds}-fold cross-validation × {res.repeats} of {res.model} "
        f"({res.test_images_held_out} test images held out{seeds})"
    )
    for k, st in res.summary.items():
        spread = f"   sd over seeds {res.seed_sd[k]:.4f}" if k in res.seed_sd else ""
        print(f"  {k:<24} {st.mean:.4f} ± {st.std:.4f}   95 % [{st.ci95[0]:.4f}, {st.ci95[1]:.4f}]{spread}")
    out = res.out
    if res.label_audit:
        a = res.label_audit
        print(
            f"label audit: {a['issues']} of {a['images']} images flagged as likely label errors; wrote "
            f"{out / 'label_audit.csv'}, {out / 'label_issues.csv'} (retrain without them: --exclude) and "
            f"{out / 'label_audit.html'}"
        )
    print(f"wrote {out / 'cv.json'} and {out / 'cv.html'}")
    return 0
