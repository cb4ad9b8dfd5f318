"""Fashion-MNIST trained from its IDX files (decoded into memory) and from WebDataset shards
(streamed): test accuracy and peak memory of each, same recipe and seed.

Usage: python benchmarks/shards_vs_memory.py [--epochs 4] [--model cnn] [--shard-size 20]

Each training runs in its own process; peak RSS is that process's high-water mark (ru_maxrss),
and, for the streamed run, also the largest of its reading worker processes. Needs the real
Fashion-MNIST files (make setup installs Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from cnnlab import api
from cnnlab.workflows.resolve import build_config
t = time.perf_counter()
cfg = build_config(None, json.loads(sys.argv[1]))
res = api.train(cfg, progress=False)
print(json.dumps({"accuracy": res.metrics["accuracy"], "seconds": time.perf_counter() - t,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def train(overrides: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--shard-size", type=float, default=20.0, help="MB per shard (default 20)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shards-bench-"))
    shards = tmp / "fmnist-shards"
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "data",
            "shard",
            "fashion-mnist",
            "--out",
            str(shards),
            "--shard-size",
            str(args.shard_size),
        ],
        check=True,
    )
    print(
        f"sharded in {time.perf_counter() - t:.1f} s: "
        f"{sum(f.stat().st_size for f in shards.glob('*.tar')) / 2**20:.1f} MB in "
        f"{len(list(shards.glob('*.tar')))} shards"
    )
    base = {"model.name": args.model, "train.epochs": args.epochs, "run.report": False}
    rows = {
        "memory (IDX)": train({**base, "data.source": "fashion-mnist", "run.out": str(tmp / "memory")}),
        "shards": train({**base, "data.source": str(shards), "run.out": str(tmp / "shards")}),
    }
    print(f"{'':<14}{'test acc':>9}{'seconds':>9}{'peak RSS MB':>13}{'worker RSS MB':>15}")
    for name, r in rows.items():
        print(f"{name:<14}{r['accuracy']:>9.4f}{r['seconds']:>9.1f}{r['rss_mb']:>13.0f}{r['children_rss_mb']:>15.0f}")
    diff = 100 * (rows["shards"]["accuracy"] - rows["memory (IDX)"]["accuracy"])
    print(
        f"accuracy difference {diff:+.2f} points; peak RSS ratio shards / memory "
        f"{rows['shards']['rss_mb'] / rows['memory (IDX)']['rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
