"""How fast the board's index answers over thousands of run folders, and how much memory it holds.

Makes N run folders (default 2,000) by copying one real finished run (digits, MLP, 5 epochs) with
its config varied; then, in a process of its own (so that the training's PyTorch is not counted),
starts the board and times the first scan, a rescan with nothing changed, a rescan after 20 runs
gained an epoch, and GET /api/index (median of 20), and prints that process's peak RSS.

    .venv/bin/python benchmarks/board.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnlab.cli import main
from cnnlab.workflows.board import create_board


def make_runs(root: Path, n: int) -> None:
    template = root / "template"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "5",
                "-q",
                "--no-report",
                "--out",
                str(template),
            ]
        )
        == 0
    )
    config = (template / "config.yaml").read_text()
    for i in range(n):
        run = root / "runs" / f"group{i // 100:02d}" / f"run{i:04d}"
        shutil.copytree(template, run, ignore=shutil.ignore_patterns("checkpoints", "predictions.npz", ".lock"))
        (run / "config.yaml").write_text(config.replace("seed: 0", f"seed: {i}"))
    shutil.rmtree(template)


def measure(root: Path, runs: int) -> None:
    from fastapi.testclient import TestClient

    t = time.perf_counter()
    app = create_board(root)
    print(f"first scan (the board's start): {time.perf_counter() - t:.2f} s")
    watcher = app.state.watcher
    t = time.perf_counter()
    watcher.rescan()
    print(f"rescan, nothing changed: {(time.perf_counter() - t) * 1000:.0f} ms")
    for i in range(20):
        with open(root / "runs" / "group00" / f"run{i:04d}" / "history.csv", "a") as f:
            f.write("6,0.1,0.97,0.12,0.96,0.001,0.5\n")
    t = time.perf_counter()
    watcher.rescan()
    print(f"rescan, 20 runs changed: {(time.perf_counter() - t) * 1000:.0f} ms")
    client = TestClient(app)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        r = client.get("/api/index")
        times.append(time.perf_counter() - t)
        assert r.status_code == 200 and len(r.json()["entries"]) == runs
    print(f"GET /api/index over {runs} runs: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms")  # fmt: skip
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec from the parent (here the
    # process that trained the template with PyTorch loaded)
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    rss = int(hwm.split()[1]) / 1024
    torch = "with" if "torch" in sys.modules else "without"
    print(f"peak RSS of the board's process: {rss:.0f} MB ({torch} PyTorch imported)")


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--measure", metavar="ROOT", help=argparse.SUPPRESS)  # the board's own process
    args = ap.parse_args()
    if args.measure:
        measure(Path(args.measure), args.runs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_runs(root, args.runs)
        print(f"made {args.runs} run folders in {time.perf_counter() - t:.1f} s")
        subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--measure", str(root)], check=True)


if __name__ == "__main__":
    main_()
