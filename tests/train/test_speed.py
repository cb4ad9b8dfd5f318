"""The speed seams: the CPU thread policy under a busy core, autocast precisions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cnnlab import api
from cnnlab.core.errors import CnnlabError
from cnnlab.train.threads import ThreadPolicy
from cnnlab.workflows.resolve import build_config


@pytest.mark.alone  # other tests' load would be the busy core it waits to see go
def test_thread_policy_leaves_a_busy_core_to_its_process_and_takes_it_back():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    policy = ThreadPolicy("auto", interval=0.4)
    policy.on_train_begin(None)
    x = torch.randn(256, 256)

    def work(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                x @ x
            policy.on_batch_end(None, 0, {})

    # busy loops on all cores but one, started through a shell that exits: they are other processes,
    # not children of this one (a process's own children, its data workers, count as its own CPU)
    spinners = [
        int(
            subprocess.run(
                ["sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range((os.cpu_count() or 2) - 1)
    ]
    try:
        work(3.0)
        assert torch.get_num_threads() == 1, policy.changes
    finally:
        for pid in spinners:
            os.kill(pid, signal.SIGKILL)
    work(3.0)
    assert torch.get_num_threads() == 2 and [n for _, n in policy.changes] == [1, 2]
    policy.on_train_end(None)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)


def test_the_policy_counts_its_own_children_as_its_own():
    from cnnlab.train.threads import own_busy_seconds

    before = own_busy_seconds()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    time.sleep(1.2)
    during = own_busy_seconds()
    child.wait()
    assert during - before > 0.8  # the child's CPU time, read while it runs


def test_a_fixed_thread_count_is_used_and_restored(tmp_path):
    before = torch.get_num_threads()
    seen = []

    from cnnlab.train.callbacks import Callback

    class Probe(Callback):
        def on_epoch_end(self, loop, epoch, logs):
            seen.append(torch.get_num_threads())

    cfg = build_config(
        None,
        {
            "data.source": "digits",
            "model.name": "mlp",
            "train.epochs": 1,
            "train.threads": 1,
            "run.out": str(tmp_path / "r"),
            "run.report": False,
        },
    )
    api.train(cfg, callbacks=[Probe()], progress=False)
    assert seen == [1] and torch.get_num_threads() == before


def test_bf16_autocast_trains_on_the_cpu_and_fp16_is_refused_there(tmp_path):
    base = {"data.source": "digits", "model.name": "cnn", "train.epochs": 2, "run.report": False}
    res = api.train(
        build_config(None, {**base, "train.precision": "bf16", "run.out": str(tmp_path / "bf16")}), progress=False
    )
    assert res.metrics["accuracy"] > 0.7
    with pytest.raises(CnnlabError, match="fp16' is for GPUs"):
        api.train(
            build_config(None, {**base, "train.precision": "fp16", "run.out": str(tmp_path / "fp16")}), progress=False
        )


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_decoding_processes_give_the_same_pixels_sums_and_skips_as_one_thread(tmp_path, mode):
    import numpy as np
    from PIL import Image

    from cnnlab.data.cache import PROCESS_MIN_FILES, decode_images

    rng = np.random.default_rng(0)
    files = []
    for i in range(PROCESS_MIN_FILES + 44):
        p = tmp_path / f"{i:04d}.{'png' if i % 2 else 'jpg'}"
        if i in (7, 150):
            p.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (20 + i % 9, 24, 3), dtype=np.uint8)).save(p)
        files.append(p)
    one = decode_images(files, 16, 3, max_pixels=10**6, workers=1, mode="memory", progress=False)
    many = decode_images(files, 16, 3, max_pixels=10**6, workers=2, mode=mode, progress=False)
    assert [s["path"] for s in many.skipped] == [str(files[7]), str(files[150])]
    assert many.skipped == one.skipped and np.array_equal(many.keep, one.keep)
    assert torch.equal(torch.as_tensor(np.asarray(many.images)), torch.as_tensor(np.asarray(one.images)))
    assert np.array_equal(many.sums, one.sums) and many.digests == one.digests


def test_the_default_recipe_is_a_one_cycle_that_resume_can_extend(tmp_path):
    from cnnlab.runs.store import RunFolder
    from cnnlab.train.build import DEFAULT_PEAK_LR
    from tests.conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=20)
    base = {"data.source": str(root), "model.name": "mlp", "train.batch_size": 16, "train.seed": 1}
    res = api.train(build_config(None, {**base, "run.out": str(tmp_path / "r")}), progress=False)
    cfg = RunFolder(res.run).read_config()
    steps = -(-len(RunFolder(res.run).read_json(RunFolder(res.run).path / "split.json")["indices"]["train"]) // 16)
    assert (cfg.train.schedule, cfg.optim.lr) == ("onecycle", DEFAULT_PEAK_LR)
    assert cfg.train.epochs == min(max(round(1200 / steps), 3), 30) == len(res.history)
    # the user's choice wins: a schedule given keeps the plain defaults, and so does the NumPy engine
    plain = build_config(
        None, {**base, "train.schedule": "constant", "run.out": str(tmp_path / "p"), "train.epochs": 2}
    )
    assert RunFolder(api.train(plain, progress=False).run).read_config().optim.lr == 1e-3
    scratch = api.train(
        build_config(None, {**base, "train.engine": "scratch", "run.out": str(tmp_path / "s")}), progress=False
    )
    assert RunFolder(scratch.run).read_config().train.schedule == "constant" and len(scratch.history) == 10
    # --resume --epochs N re-plans the cycle for N epochs and goes on from the step reached
    more = api.train(None, api.TrainPlan(resume=res.run, epochs=cfg.train.epochs + 6), progress=False)
    total = (cfg.train.epochs + 6) * steps
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=DEFAULT_PEAK_LR)
    fresh = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=DEFAULT_PEAK_LR, total_steps=total)
    expected = []
    for k in range(1, total + 1):
        opt.step()
        fresh.step()
        if k % steps == 0:
            expected.append(opt.param_groups[0]["lr"])
    got = [h["lr"] for h in more.history[cfg.train.epochs :]]
    assert got == pytest.approx(expected[cfg.train.epochs :], rel=1e-4)
