"""What a study tells its user to run next: its chosen candidate re-trained with its recipe on all
the data, exported and served."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnlab.core.study import Candidate
    from cnnlab.workflows.study.state import Study

__all__ = ["commands"]


def commands(study: Study, c: Candidate) -> dict[str, str]:
    """Re-train the winner with its recipe on all the data (no test split left), export and serve it."""
    s = study.state
    final = f"runs/{c.name}-final"
    args = ["cnnlab", "train", "--data", str(s.settings.data)]
    if s.settings.data_dir:
        args += ["--data-dir", s.settings.data_dir]
    o = c.overrides()
    args += ["--model", c.model, "--epochs", str(o["train.epochs"]), "--seed", str(s.settings.seed)]
    if "data.input_size" in o:
        args += ["--input-size", str(o["data.input_size"])]
    if "optim.lr" in o:  # what its search found
        args += ["--lr", f"{o['optim.lr']:.6g}", "--weight-decay", f"{o.get('optim.weight_decay', 0.0):g}"]
    if c.mode == "frozen":
        args += ["--freeze", "backbone"]
    elif c.mode == "fine-tune":
        args += ["--fine-tune", ",".join(map(str, o["model.fine_tune"]))]
    if s.class_weights:
        args += ["--class-weights", "auto"]
    if not s.presplit:  # no test split of its own: give the test part to training as well
        args += ["--split", "0.9,0.1,0"]
    args += ["--out", final]
    run = study.folder(c) if s.folds == 1 else study.out / "winner"
    if s.small_data:  # no winner's run on a split: the first fold's run of the candidate
        run = study.folder(c) / "r1-fold1"
    return {
        "retrain": shlex.join(args),
        "export": f"cnnlab export {shlex.quote(final)}",
        "serve": f"cnnlab serve {shlex.quote(final + '/export/model.onnx')}",
        "export_study_run": f"cnnlab export {shlex.quote(str(run))}",
    }
