"""Exported files are data checked like configs, TorchScript runs only when trusted, and a kill
during export or report leaves nothing the next command trips on (issue 23, items 3–5)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cnnlab import api
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.inference.exported import ExportedModel
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.resolve import build_config
from tests.attack import files


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "mlp"
    cfg = {"data.source": "digits", "model.name": "mlp", "model.hidden": [16], "train.epochs": 1}
    return api.train(build_config(None, {**cfg, "run.out": str(out), "run.report": False}), progress=False).run


@pytest.fixture(scope="module")
def onnx_file(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    return out


_with_meta = files.with_onnx_meta


CHANGES = {
    "input_size 20000": (lambda m: m["preprocess"].update(input_size=20000), "input_size is 20000"),
    "input_size 32": (lambda m: m["preprocess"].update(input_size=32), "input shape"),
    "short classes": (lambda m: m.update(classes=m["classes"][:3]), "output shape"),
    "no classes": (lambda m: m.update(classes=[]), "non-empty list"),
    "std 0": (lambda m: m["preprocess"].update(std=[0.0]), "std must be positive"),
    "std NaN": (lambda m: m["preprocess"].update(std=[float("nan")]), "finite"),
    "channels 7": (lambda m: m["preprocess"].update(channels=7), "channels"),
    "normalize odd": (lambda m: m["preprocess"].update(normalize="exec"), "normalize"),
    "interpolation odd": (lambda m: m["preprocess"].update(interpolation="__import__"), "interpolation"),
    "input dtype": (lambda m: m["input"].update(dtype="float64"), "dtype"),
    "deep JSON": (lambda m: "[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "huge JSON": (lambda m: json.dumps({**m, "pad": "x" * (2 << 20)}), "too large"),
    "not JSON": (lambda m: "{classes: [", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_a_tampered_onnx_metadata_is_refused_in_one_line(onnx_file, tmp_path, case, capsys):
    change, message = CHANGES[case]
    bad = _with_meta(onnx_file, tmp_path / "bad.onnx", change)
    with pytest.raises(CnnlabError, match=message):
        ExportedModel.load(bad)
    image = tmp_path / "a.png"
    image.write_bytes(files.png(8, value=90))
    assert main(["predict", str(bad), str(image)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_file_may_lower_the_pixel_budget_but_never_lift_it(onnx_file, tmp_path):
    lifted = _with_meta(onnx_file, tmp_path / "lift.onnx", lambda m: m["preprocess"].update(max_pixels=10**12))
    assert ExportedModel.load(lifted).preprocess.max_pixels == 50_000_000
    lowered = _with_meta(onnx_file, tmp_path / "low.onnx", lambda m: m["preprocess"].update(max_pixels=1000))
    model = ExportedModel.load(lowered)
    assert model.preprocess.max_pixels == 1000
    assert "too many pixels" in model.predict([files.png(64)])[0]["error"]


def test_torchscript_loads_only_when_exported_here_or_trusted(run, tmp_path, monkeypatch, capsys):
    ts = tmp_path / "m.ts"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(ts)]) == 0
    image = tmp_path / "a.png"
    image.write_bytes(files.png(8, value=90))
    assert main(["predict", str(ts), str(image)]) == 0  # this machine exported it: its digest is known
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "other-machine"))  # as if it came from elsewhere
    assert main(["predict", str(ts), str(image)]) == 2
    err = capsys.readouterr().err
    assert "runs code when it is loaded" in err and "--trust-torchscript" in err
    assert main(["predict", str(ts), str(image), "--trust-torchscript"]) == 0
    with pytest.raises(CnnlabError, match="runs code"):
        api.serve(str(ts), api.ServeSettings(port=1))  # refused before it binds anything


def test_a_kill_during_export_or_report_leaves_nothing_the_next_command_trips_on(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for left in (".export.abc123.tmp", ".report.xyz.tmp"):  # what kill -9 leaves mid-way
        (copy / left).mkdir()
        (copy / left / "model.onnx").write_bytes(b"partial")
    assert main(["report", str(copy)]) == 0
    assert not list(copy.glob(".*.tmp"))
    assert main(["export", str(copy)]) == 0 and (copy / "export" / "model.onnx").is_file()
    cfg = RunFolder(copy).read_config()
    overrides = {"data.source": "digits", "model.name": "mlp", "model.hidden": [16], "train.epochs": 1}
    assert cfg.model.name == "mlp"
    res = api.train(build_config(None, {**overrides, "run.out": str(copy), "run.report": False}),
                    api.TrainPlan(overwrite=True), progress=False)  # fmt: skip
    assert res.run == copy  # a run with an export folder is still a run that --overwrite may replace


def test_export_where_it_cannot_write_is_one_line(run, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export's folder would go")
    assert main(["export", str(run), "--out", str(blocker / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert main(["export", str(run), "--out", str(locked / "m.onnx")]) == 2
            assert "permission denied" in capsys.readouterr().err
        finally:
            locked.chmod(0o700)
