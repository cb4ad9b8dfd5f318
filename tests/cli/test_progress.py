"""Progress bars draw (issue 27): tqdm bars on the captured stderr for training, backbone feature
extraction, evaluation, batch prediction and a study; and the CLI draws them in a terminal only."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from cnnlab import api
from cnnlab.core.settings import StudySettings
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset


def bar(desc: str, text: str) -> bool:
    """Whether ``text`` holds a tqdm bar labelled ``desc``: 'desc:  40%|████      | 2/5 [00:01<...'"""
    return re.search(re.escape(desc) + r"[^\n\r]*: +\d+%\|[^|]*\| *\d+/\d+ \[", text) is not None


def test_train_features_evaluate_predict_and_study_draw_their_bars(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=8, size=32)
    common = {"data.source": str(root), "data.input_size": 32, "train.batch_size": 8, "run.report": False,
              "train.threads": 1}  # fmt: skip
    run = api.train(
        build_config(None, {**common, "model.name": "mlp", "train.epochs": 1, "run.out": str(tmp_path / "r")}),
        progress=True,
    ).run
    err = capsys.readouterr().err
    assert bar("epoch 1/1", err) and bar("evaluating on test", err)

    frozen = {**common, "model.name": "efficientnet-lite0", "model.freeze": "backbone", "train.epochs": 1}
    api.train(build_config(None, {**frozen, "run.out": str(tmp_path / "f")}), progress=True)
    assert bar("backbone features", capsys.readouterr().err)

    api.evaluate(run, api.EvaluateSettings(split="val"), progress=True)
    assert bar("evaluating on val", capsys.readouterr().err)

    api.predict_files(run, [str(root)], api.PredictSettings(out=str(tmp_path / "p.csv")), progress=True)
    assert bar("predicting", capsys.readouterr().err)

    study = StudySettings.of(data=str(root), out=str(tmp_path / "s"), budget="20s", models="mlp", tune=False)
    api.run_study(study, progress=True)
    assert bar("epoch 1/", capsys.readouterr().err)


def test_the_cli_draws_bars_on_a_terminal_and_not_into_a_pipe(tmp_path):
    """`cnnlab evaluate` in a pseudo-terminal draws its bar; the same command piped does not."""
    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=8, size=32)
    cfg = {"data.source": str(root), "model.name": "mlp", "train.epochs": 1, "run.out": str(tmp_path / "r"),
           "run.report": False}  # fmt: skip
    run = api.train(build_config(None, cfg), progress=False).run
    cmd = [sys.executable, "-m", "cnnlab", "evaluate", str(run)]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns, as a terminal has
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command has exited
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    assert bar("evaluating on test", seen.decode(errors="replace")), seen[-2000:]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and not bar("evaluating on test", piped.stderr), piped.stderr[-2000:]
