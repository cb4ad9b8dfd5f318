"""How fast the reports' heaviest workload runs: seed 000's 54-trial sweep (issue 26).

    python benchmarks/sweep_pace.py                 # a warm worker's fixed cost per trial (~3 min)
    python benchmarks/sweep_pace.py --full          # + the 54-trial sweep and its 12-trial reference (~1 h)

The fixed cost: one worker runs 4 one-epoch trials of examples/seed000-lego-sweep.yaml; a trial's
clock starts when the worker takes it and stops at its first batch (config, data, model), so the
first trial carries the process's cold start and the later ones are what a warm worker pays.

--full runs the example as it is (`--workers 2`: successive halving on validations three times an
epoch) and then the reference: the same space, base and seed with 12 trials trained in full
(`pruner: none`, one validation an epoch, no time budget). It prints each one's wall time, trials
per hour, completed and pruned trials and best validation accuracy. Run it on a quiet machine:
both sweeps use every core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "seed000-lego-sweep.yaml"


def run_sweep(tree: dict, out: Path, workers: int) -> tuple[dict, float]:
    spec = out.with_suffix(".yaml")
    spec.write_text(yaml.safe_dump(tree))
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "cnnlab", "sweep", str(spec), "--out", str(out), "--workers", str(workers), "-q"]
    subprocess.run(cmd, check=True)
    return json.loads((out / "sweep.json").read_text()), time.perf_counter() - started


def summary(name: str, s: dict, wall: float) -> None:
    states = [t["state"] for t in s["trials"]]
    best = s["best"]
    print(
        f"{name}: {len(states)} trials in {wall / 60:.1f} min ({s['pace']['trials_per_hour']:.0f} trials/h), "
        f"{states.count('complete')} complete, {states.count('pruned')} pruned, {states.count('failed')} failed; "
        f"best val_acc {best['value']:.4f} (trial {best['trial']}: {best['params']})"
        if best
        else f"{name}: no completed trial"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also the 54-trial sweep and the 12-trial reference")
    ap.add_argument("--out", default=None, help="folder for the sweeps (default: a temporary one)")
    args = ap.parse_args()
    base = yaml.safe_load(SPEC.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        warm = dict(base, trials=4, timeout=None, pruner="none", name="fixed-cost")
        warm["base"] = dict(base["base"], train={**base["base"]["train"], "epochs": 1, "evals_per_epoch": 1})
        s, _ = run_sweep(warm, out / "fixed-cost", 1)
        setups = [t["setup_seconds"] for t in sorted(s["trials"], key=lambda t: t["trial"])]
        warm_s = ", ".join(f"{x:.2f}" for x in setups[1:])
        print(f"trial start to first batch, one worker: cold (first trial) {setups[0]:.2f} s; warm trials "
              f"{warm_s} s (median {statistics.median(setups[1:]):.2f} s)")  # fmt: skip
        if not args.full:
            return
        s, wall = run_sweep(base, out / "multi-fidelity", 2)
        summary("54 trials, successive halving, 2 workers", s, wall)
        ref = dict(base, trials=12, timeout=None, pruner="none", name="full-fidelity")
        ref["base"] = dict(base["base"], train={**base["base"]["train"], "evals_per_epoch": 1})
        s, wall = run_sweep(ref, out / "full-fidelity", 2)
        summary("12 trials in full, 2 workers", s, wall)


if __name__ == "__main__":
    main()
