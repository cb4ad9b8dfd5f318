"""Data parallel under torchrun on CPU (gloo): equal to one process with the same global batch,
one run folder, resumable after a kill, and two "nodes" on localhost with a c10d rendezvous."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.runs.store import RunFolder
from tests.servers import free_port

TRAIN = [
    "-m",
    "cnnlab",
    "train",
    "--data",
    "digits",
    "--model",
    "cnn",
    "--dropout",
    "0",
    "--batch-size",
    "64",
    "-q",
    "--set",
    "run.report=false",
]


def why(proc: subprocess.CompletedProcess) -> str:
    """A failed torchrun's story: every line that names an error (a worker's first one is what
    matters; torchrun's own summary comes last), then the tail."""
    hits = [
        line
        for line in proc.stderr.splitlines()
        if any(w in line for w in ("Error", "error", "terminate", "Abort", "signal"))
    ]
    return "\n".join(hits[:40]) + "\n…\n" + proc.stderr[-1500:]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.long
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    proc = subprocess.run(
        torchrun("--nproc-per-node", "2", *TRAIN, "--epochs", "2", "--out", str(ddp)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(),
        timeout=300,
    )
    assert proc.returncode == 0, why(proc)
    proc = subprocess.run(
        [sys.executable, *TRAIN, "--epochs", "2", "--out", str(single)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(),
        timeout=300,
    )
    assert proc.returncode == 0, why(proc)
    a, b = weights(ddp), weights(single)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    for h_ddp, h_one in zip(RunFolder(ddp).history(), RunFolder(single).history(), strict=True):
        # losses to float noise; accuracy within an image or two (an argmax at a near-tie may flip when
        # the batch is split differently between BLAS calls)
        for key in ("train_loss", "val_loss"):
            assert h_ddp[key] == pytest.approx(h_one[key], rel=1e-4)
        for key in ("train_acc", "val_acc"):
            assert h_ddp[key] == pytest.approx(h_one[key], abs=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]  # one run folder each, nothing else
    assert RunFolder(ddp).state().status == "completed"


@pytest.mark.slow  # ~45 s / ~20 s: in `make test-slow`, to keep the default suite under 10 minutes
def test_a_killed_two_process_run_resumes_to_completion(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        torchrun("--nproc-per-node", "2", *TRAIN, "--epochs", "12", "--out", str(run)),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(RunFolder(run).history()) < 2:
        time.sleep(0.2)
    for pid in [proc.pid, *descendants(proc.pid)]:  # the agent and both workers, mid-training
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # the kernel drops the workers' lock as they die
        if RunFolder(run).state().status != "running":
            break
        time.sleep(0.1)
    done = len(RunFolder(run).history())
    assert 2 <= done < 12 and RunFolder(run).state().status == "interrupted"
    proc = subprocess.run(
        torchrun("--nproc-per-node", "2", "-m", "cnnlab", "train", "--resume", str(run), "-q"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(),
        timeout=600,
    )
    assert proc.returncode == 0, why(proc)
    hist = RunFolder(run).history()
    assert [int(h["epoch"]) for h in hist] == list(range(1, 13))
    assert RunFolder(run).state().status == "completed"
    # history.csv is written just before last.pt, so a kill between them resumes one epoch earlier
    assert json.loads((run / "run.json").read_text())["resumed_from_epoch"] >= done - 1 >= 1


@pytest.mark.slow  # ~12 s alone, ~24 s beside another worker: in `make test-slow` with the killed run
def test_two_nodes_on_localhost_with_a_c10d_rendezvous_write_one_run(tmp_path):
    port = free_port()
    run = tmp_path / "run"
    nodes = [
        subprocess.Popen(
            torchrun(
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "cnnlab-test",
                *TRAIN,
                "--epochs",
                "2",
                "--out",
                str(run),
            ),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    assert all(n.returncode == 0 for n in nodes), outs[0][-1500:] + outs[1][-1500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert RunFolder(run).state().status == "completed" and len(RunFolder(run).history()) == 2
    assert sum("test accuracy" in o for o in outs) == 1  # rank 0 reports, the other node stays quiet
