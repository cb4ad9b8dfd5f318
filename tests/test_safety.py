"""Misuse and attack cases (issue 8): data files never run code, --overwrite deletes only idle runs,
one process per run, honest status after kills, bounded YAML, content fingerprints, any file
name, full disks, damaged caches, empty classes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import api
from cnnlab.cli import main
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset
from tests.fixtures import cifar10_files

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def one_line_error(capsys) -> str:
    """The one error line (info lines of the log may come before it), and no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err, err
    return errors[0]


def digits(out: Path, **extra):
    return build_config(
        None,
        {
            "data.source": "digits",
            "model.name": "mlp",
            "model.hidden": [32],
            "train.epochs": 2,
            "train.batch_size": 64,
            "run.out": str(out),
            **extra,
        },
    )


# ------------------------------------------------------------------ 1. no code from data files


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--data", "cifar10", "--epochs", "1", "-q"],
        ["data", "inspect", "cifar10"],
        ["lr-find", "--data", "cifar10", "-q"],
    ],
)
def test_a_pickle_payload_in_a_cifar_file_runs_nothing(tmp_path, capsys, monkeypatch, argv):
    root = cifar10_files(tmp_path / "c")
    marker = tmp_path / "pwned"
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f)
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--data-dir", str(root)]) == 2
    err = one_line_error(capsys)
    assert "data_batch_1" in err and "refused to load posix.system" in err
    assert not marker.exists()


def test_plain_cifar_files_still_load(tmp_path):
    from cnnlab.data.sources import DATASETS

    src = DATASETS.get("cifar10").loader(data_dir=str(cifar10_files(tmp_path)))
    assert src.images.shape == (120, 3, 32, 32) and src.classes[0] == "c0"


# ------------------------------------------------------------------ 2./3. overwrite, locks, status


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "run.json").write_text("{}")
    (proj / "src" / "thesis.tex").write_text("x")
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(proj), "--overwrite", "-q"]) == 2
    assert "not a cnnlab run folder" in one_line_error(capsys)
    assert (proj / "src" / "thesis.tex").read_text() == "x"


def test_overwrite_refuses_a_run_with_foreign_files_and_replaces_a_clean_one(tmp_path, capsys):
    run = tmp_path / "r"
    api.train(digits(run, **{"run.report": False}), progress=False)
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(run), "--overwrite", "-q"]) == 2
    assert "'notes.txt', which no cnnlab run writes" in one_line_error(capsys)
    (run / "notes.txt").unlink()
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--out",
                str(run),
                "--overwrite",
                "-q",
                "--set",
                "run.report=false",
            ]
        )
        == 0
    )
    assert len((run / "history.csv").read_text().splitlines()) == 2


def test_existing_out_is_refused_before_any_decoding(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "d", per_class=400, size=32)
    run = tmp_path / "r"
    run.mkdir()
    (run / "x").write_text("")
    started = time.perf_counter()
    assert main(["train", "--data", str(data), "--out", str(run), "-q"]) == 2
    assert time.perf_counter() - started < 2.0
    assert "already exists" in one_line_error(capsys)
    assert main(["train", "--data", "digits", "--out", str(run / "x"), "-q"]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)


LIVE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cnnlab import api
    from cnnlab.workflows.resolve import build_config
    from cnnlab.train.callbacks import Callback

    class Pause(Callback):
        def on_epoch_begin(self, loop, epoch):
            if epoch == 2:  # epoch 1 is checkpointed
                Path(sys.argv[2]).write_text("ready")
                time.sleep(60)

    cfg = build_config(None, {"data.source": "digits", "model.name": "mlp", "model.hidden": [32],
                              "train.epochs": 3, "train.batch_size": 64, "run.out": sys.argv[1]})
    api.train(cfg, callbacks=[Pause()], progress=False)
""")


def start_live_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    run, ready = tmp_path / "live", tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE, str(run), str(ready)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the live run did not start"
        time.sleep(0.1)
    return proc, run


def test_one_process_per_run_and_honest_status_after_sigkill(tmp_path, capsys, caplog):
    proc, run = start_live_run(tmp_path)
    try:
        state = RunFolder(run).state()
        assert state.status == "running" and f"pid {proc.pid}" in state.holder
        assert main(["train", "--data", "digits", "--out", str(run), "--overwrite", "-q"]) == 2
        assert f"in use by pid {proc.pid}" in one_line_error(capsys)
        assert main(["train", "--resume", str(run), "-q"]) == 2
        assert f"in use by pid {proc.pid}" in one_line_error(capsys)
        assert main(["report", str(run)]) == 2
        assert "is running" in one_line_error(capsys)
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # what the file says...
    state = RunFolder(run).state()  # ...and what is true
    assert (state.status, state.detail) == ("interrupted", "process gone")
    assert state.next_step == f"cnnlab train --resume {run}"
    assert main(["evaluate", str(run), "--json"]) == 0
    assert "interrupted (process gone)" in caplog.text and "cnnlab train --resume" in caplog.text
    assert main(["train", "--resume", str(run), "-q"]) == 0  # the stale lock is taken over
    assert RunFolder(run).state().status == "completed"


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    run, ready = tmp_path / "t", tmp_path / "ready"
    script = LIVE.replace(
        "api.train(cfg, callbacks=[Pause()], progress=False)",
        "from cnnlab.cli.main import on_sigterm, main\nimport signal\n"
        "signal.signal(signal.SIGTERM, on_sigterm)\n"
        "try:\n    api.train(cfg, callbacks=[Pause()], progress=False)\n"
        "except KeyboardInterrupt:\n    sys.exit(143)",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(run), str(ready)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not ready.exists():
        assert proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_done"] == 1
    assert "continue with: cnnlab train --resume" in proc.stderr.read()


def test_a_kill_between_metrics_and_run_json_reads_as_completed_everywhere(tmp_path, capsys):
    run = tmp_path / "r"
    api.train(digits(run), progress=False)
    info = json.loads((run / "run.json").read_text())
    info["status"] = "running"
    (run / "run.json").write_text(json.dumps(info))
    (run / "report.html").unlink()
    state = RunFolder(run).state()
    assert state.status == "completed" and state.next_step == f"cnnlab report {run}"
    assert main(["train", "--resume", str(run), "-q"]) == 2
    assert "already finished 2 epochs" in one_line_error(capsys)
    assert main(["report", str(run)]) == 0
    assert RunFolder(run).state().next_step is None


def test_stale_temp_files_are_removed_when_a_run_is_resumed(tmp_path):
    run = tmp_path / "r"
    api.train(digits(run, **{"run.report": False}), progress=False)
    (run / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"")
    (run / ".run.json.x.tmp").write_bytes(b"")
    api.train(None, api.TrainPlan(resume=run, epochs=3), progress=False)
    assert not list(run.rglob("*.tmp"))


# ------------------------------------------------------------------ 4. YAML bombs


def test_a_yaml_alias_bomb_is_refused_fast(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 2000
    started = time.perf_counter()
    assert main(["train", "--config", str(bomb)]) == 2
    assert time.perf_counter() - started < 1.0
    assert "anchors and aliases" in one_line_error(capsys)


# ------------------------------------------------------------------ 5./6. content and names


def test_changed_pixels_under_the_same_name_are_detected(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "d", per_class=10)
    run = tmp_path / "r"
    api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "mlp",
                "train.epochs": 1,
                "run.out": str(run),
                "run.report": False,
            },
        ),
        progress=False,
    )
    assert main(["evaluate", str(run), "--json"]) == 0
    capsys.readouterr()
    img = data / "class_1" / "img_003.png"
    arr = np.asarray(Image.open(img)).copy()
    arr[:4, :4] = 255 - arr[:4, :4]
    Image.fromarray(arr).save(img)
    assert main(["evaluate", str(run)]) == 2
    assert "pixels or labels changed" in one_line_error(capsys)


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_a_file_name_that_is_not_utf8_trains(tmp_path, cache):
    data = make_folder_dataset(tmp_path / "d", per_class=8)
    odd = os.fsdecode(os.fsencode(str(data / "class_0")) + b"/x\xff\xfe.png")
    shutil.copy(data / "class_0" / "img_000.png", odd)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "cnn-small",
                "train.epochs": 1,
                "data.cache": cache,
                "run.out": str(tmp_path / "r"),
            },
        ),
        progress=False,
    )
    assert res.metrics["num_samples"] > 0 and (res.run / "report.html").is_file()
    assert main(["evaluate", str(res.run), "--json"]) == 0


# ------------------------------------------------------------------ 7. full disk


def _tmpfs_prefix() -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "-m"]
    return ["unshare", "-rm"]


DISK_FULL = textwrap.dedent("""
    set -u
    mount -t tmpfs -o size=2600k tmpfs "$MNT" || exit 77
    "$PY" -m cnnlab train --data digits --model mlp --hidden 1500 --epochs 2 --batch-size 64 --out "$MNT/run" -q \
        --set run.report=false 2>"$OUT/err1"; echo $? > "$OUT/rc1"
    cp "$MNT/run/run.json" "$OUT/run1.json"; ls -a "$MNT/run" "$MNT/run/checkpoints" > "$OUT/ls1"
    mount -o remount,size=20m "$MNT"
    "$PY" -m cnnlab train --resume "$MNT/run" -q 2>"$OUT/err2"; echo $? > "$OUT/rc2"
    cp "$MNT/run/run.json" "$OUT/run2.json"
    mount -o remount,ro "$MNT"
    "$PY" -m cnnlab train --data digits --model mlp --epochs 1 --out "$MNT/other" -q 2>"$OUT/err3"; echo $? > "$OUT/rc3"
""")


@pytest.mark.long
def test_a_full_disk_gives_one_line_and_a_resumable_run(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing: cannot mount a private tmpfs")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    proc = subprocess.run(
        _tmpfs_prefix() + ["sh", "-c", DISK_FULL],
        capture_output=True,
        text=True,
        env={**ENV, "MNT": str(mnt), "OUT": str(out), "PY": sys.executable},
    )
    if proc.returncode == 77 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[:200]}")
    assert (out / "rc1").read_text().strip() == "2", proc.stderr
    err = (out / "err1").read_text()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "the disk is full" in err and "cnnlab train --resume" in err
    assert ".tmp" not in (out / "ls1").read_text()
    assert json.loads((out / "run1.json").read_text())["status"] in ("failed", "running")
    assert (out / "rc2").read_text().strip() == "0", (out / "err2").read_text()
    assert json.loads((out / "run2.json").read_text())["status"] == "completed"
    err = (out / "err3").read_text()  # a read-only file system: one line naming the path
    assert (out / "rc3").read_text().strip() == "2" and err.count("\n") == 1, err
    assert "cannot write" in err and "/other" in err and "read-only" in err


# ------------------------------------------------------------------ 8.-11. the rest


def test_cache_none_writes_the_same_report(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "d", per_class=10)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "cnn-small",
                "train.epochs": 1,
                "data.cache": "none",
                "run.out": str(tmp_path / "r"),
            },
        ),
        progress=False,
    )
    page = (res.run / "report.html").read_text()
    assert "Grad-CAM" in page or "misclassified" in page.lower()
    assert main(["report", str(res.run)]) == 0


def test_an_empty_class_is_refused_by_name_unless_dropped(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "d", classes=3, per_class=10)
    for f in (data / "class_2").iterdir():
        f.write_bytes(b"not an image")
    (data / "empty_class").mkdir()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = one_line_error(capsys)
    assert "'class_2', 'empty_class' have no usable images" in err and "--drop-empty-classes" in err
    assert not (tmp_path / "r").exists()
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--drop-empty-classes",
                "--out",
                str(tmp_path / "r"),
                "-q",
                "--set",
                "run.report=false",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "r" / "dataset.json").read_text())["classes"] == ["class_0", "class_1"]


def test_a_damaged_decode_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    from cnnlab.data.cache import cache_dir

    data = make_folder_dataset(tmp_path / "d", per_class=10)
    cfg = build_config(
        None,
        {
            "data.source": str(data),
            "data.cache": "disk",
            "model.name": "mlp",
            "train.epochs": 1,
            "run.out": str(tmp_path / "a"),
            "run.report": False,
        },
    )
    first = api.train(cfg, progress=False)
    entries = list((cache_dir() / "decoded").iterdir())
    assert len(entries) == 1
    npy = entries[0] / "images.npy"
    npy.write_bytes(npy.read_bytes()[:200])  # truncated
    again = api.train(
        cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": str(tmp_path / "b")})}), progress=False
    )
    assert "is damaged" in caplog.text and "decoding again" in caplog.text
    assert again.metrics["accuracy"] == first.metrics["accuracy"]


def test_a_last_batch_of_one_image_is_dropped_for_batch_norm(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=3, per_class=10)  # 30 images → 24 train: 23 + 1
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "baseline-cnn",
                "data.input_size": 16,
                "train.batch_size": 23,
                "train.epochs": 1,
                "run.out": str(tmp_path / "r"),
                "run.report": False,
            },
        ),
        progress=False,
    )
    assert len(res.history) == 1


def test_a_malicious_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    api.train(digits(run, **{"run.report": False}), progress=False)
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, run / "checkpoints" / "best.pt")
    assert main(["evaluate", str(run)]) == 2
    err = one_line_error(capsys)
    assert "was refused" in err and "could run code" in err and "weights_only" not in err
    assert not marker.exists()


def test_predict_names_folders_and_fifos_for_what_they_are(tmp_path, capsys):
    run = tmp_path / "r"
    api.train(digits(run, **{"run.report": False}), progress=False)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir").mkdir()
    res = api.predict(run, [tmp_path / "dir", tmp_path / "pipe.png", tmp_path / "missing.png"])
    assert [r.error for r in res] == [
        "a folder, not an image file",
        "not a regular file (a FIFO, socket or device)",
        "file not found",
    ]
