"""Issue 46's benchmark: `cnnlab study DATA --budget B` against the single commands a user would try
first, each given the same budget on the same split, in one invocation, paired on the same test images.

    python benchmarks/study_vs_rivals.py DATA [--budget 15m] [--out bench/rivals] [--only study,default]

The rivals: the default net (`cnnlab train --data DATA`), a frozen EfficientNet-Lite0
(`--freeze backbone`) and a fine-tuned one at its native size (`--fine-tune auto --input-size 224`),
each with `--time B`. Every run uses the default split (data.split_seed 0), so their test images are
the study's; the study's final model is its winner's run (or, when the study cross-validated small
data, its out-of-fold figures, which are not paired with anything: said so). Prints, per model, its test
accuracy with its 95 % interval, its wall time, and its paired difference to the study's model
(McNemar exact, `cnnlab compare`). Timings on 2 cores drift 20-50 % from run to run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RIVALS = {
    "default": [],
    "lite0-frozen": ["--model", "efficientnet-lite0", "--freeze", "backbone"],
    "lite0-fine-tune": ["--model", "efficientnet-lite0", "--fine-tune", "auto", "--input-size", "224"],
}


def _cnnlab(*args: str) -> float:
    """Run one cnnlab command; its wall seconds."""
    started = time.time()
    subprocess.run([sys.executable, "-m", "cnnlab", *args, "-q"], check=True)
    return time.time() - started


def _study_run(folder: Path) -> tuple[Path | None, dict]:
    """The study's final model's run folder (None for small data) and its study.json."""
    state = json.loads((folder / "study.json").read_text())
    summ = state.get("summary") or {}
    if state.get("small_data") or not summ.get("winner_test"):
        return None, state
    return folder / summ["winner_test"]["run"], state


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--out", default="bench/rivals")
    ap.add_argument("--only", default="study," + ",".join(RIVALS), help="which of study and the rivals to run")
    args = ap.parse_args()
    out, only = Path(args.out), set(args.only.split(","))
    walls: dict[str, float] = {}
    if "study" in only:
        walls["study"] = _cnnlab("study", args.data, "--budget", args.budget, "--out", str(out / "study"))
    for name, flags in RIVALS.items():
        if name in only:
            walls[name] = _cnnlab("train", "--data", args.data, *flags, "--time", args.budget,
                                  "--out", str(out / name), "--overwrite")  # fmt: skip
    from cnnlab import api
    from cnnlab.evaluate.stats import accuracy_interval

    study_run, state = _study_run(out / "study") if (out / "study" / "study.json").is_file() else (None, {})
    print(f"{'model':<18} {'test acc':>8}  {'95 % interval':<17} {'wall s':>7}  vs the study's model")
    rows = ([("study", study_run)] if study_run else []) + [(n, out / n) for n in RIVALS if (out / n).is_dir()]
    for name, run in rows:
        m = json.loads((run / "metrics.json").read_text())
        acc = m["accuracy"]
        n = m["num_samples"]
        ci = accuracy_interval(round(acc * n), n)  # Wilson's (scipy), its coverage checked in tests/evaluate
        versus = "-"
        if study_run and name != "study":
            res = api.compare_results([study_run, run], out / f"compare-{name}.html")
            p = res.paired if res.kind == "runs" else None
            if p:
                lo, hi = p["accuracy_ci95"]
                versus = (f"{p['accuracy_difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] (rival − study), "
                          f"McNemar p = {p['mcnemar']['p']:.3g}")  # fmt: skip
            else:
                versus = f"not paired: {res.unpaired}"
        shown = f"[{ci[0]:.4f}, {ci[1]:.4f}]"
        print(f"{name:<18} {acc:8.4f}  {shown:<17} {walls.get(name, float('nan')):7.0f}  {versus}")
    if state.get("small_data"):
        acc = (state.get("summary") or {}).get("winner_test", {}).get("accuracy")
        print(f"study: small data, cross-validated over every image; out-of-fold accuracy {acc} (not paired)")
    if state:
        print(f"study spent {state.get('spent_seconds')} s of {state['settings']['budget']} s; "
              f"probes {state.get('probe_seconds')} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
