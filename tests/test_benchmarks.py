"""The benchmarks that the default suite can afford: benchmarks/gpu.py's CPU dry run (tiny sizes)
checks the GPU script runs end to end, so it works the first time a GPU is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_gpu_benchmark_runs_as_a_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--dry-run", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    # 3 nets × fp32/bf16 × data on the device or copied, one process each (no second GPU here)
    assert len(rows) == 12 and {r["net"] for r in rows} == {"cnn", "resnet29", "efficientnet-lite0"}
    assert {(r["precision"], r["data"]) for r in rows} == {
        (p, d) for p in ("fp32", "bf16") for d in ("on GPU", "copied")
    }
    assert all(r["images_per_s"] > 0 for r in rows)
    assert "2 needed for the 1-vs-2-process figure" in done.stdout
    refused = subprocess.run([sys.executable, str(BENCH / "gpu.py")], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--dry-run" in refused.stderr


def test_the_race_runs_cnnlab_through_its_public_loop(tmp_path):
    """benchmarks/race.py's cnnlab contestant goes through api.train with a callback: one dense
    epoch (far from the target) shows that it still fits the loop's callback seam."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST's IDX files are not installed (make data)")
    cmd = [sys.executable, str(BENCH / "race.py"), "--only", "dense", "--skip", "keras,torch", "--max-epochs", "1",
           "--seeds", "3"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("cnnlab       seed 3"))
    assert "failed" not in line and "test acc per epoch 0.8" in line and '"epochs": 4' in line, done.stdout
