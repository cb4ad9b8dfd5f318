"""The benchmarks that the default suite can afford: benchmarks/gpu.py's CPU dry run (tiny sizes)
checks the GPU script runs end to end, so it works the first time a GPU is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
