from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from cnnlab.cli import main


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "--data", "/no/such/folder"], "invalid value for data.source: '/no/such/folder'"),
        (["train", "--data", "digits", "--model", "resnet9000"], "invalid value for model.name: 'resnet9000'"),
        (
            ["train", "--data", "digits", "--lr", "-0.1"],
            "invalid value for optim.lr: -0.1 (Input should be greater than 0)",
        ),
        (["train", "--data", "digits", "--set", "optim.speed=3"], "unknown config key 'optim.speed'"),
        (["train", "--config", "/no/such.yaml"], "config file '/no/such.yaml' not found"),
        (["train", "--resume", "/no/such/run"], "run folder '/no/such/run' does not exist"),
        (["train", "--resume", "x", "--lr", "0.1"], "only --epochs may be given (got --lr)"),
        (["evaluate", "/no/such/run"], "run folder '/no/such/run' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_bad_flag_syntax_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "lots"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --epochs: invalid int value: 'lots'" in err and err.count("\n") == 1


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = shutil.which("cnnlab", path=os.path.dirname(sys.executable))
    assert exe, "the cnnlab console script is installed beside the interpreter"
    proc = subprocess.run(
        [exe, "train", "--data", "digits", "--model", "nope"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("cnnlab: error: invalid value for model.name: 'nope' (unknown model; choose from")


def test_list_models_and_datasets(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "cnn-small" in out and "mlp" in out and "Conv32-pool-Conv64" in out
    assert main(["list", "datasets", "--json"]) == 0
    names = [d["name"] for d in json.loads(capsys.readouterr().out)]
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "emnist-letters"} <= set(names)


def test_help_texts_describe_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--set", "--data", "--input-size", "--model", "--resume", "--patience", "--out"):
        assert flag in out


def test_yaml_config_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("data:\n  source: digits\nmodel:\n  name: mlp\n  hidden: [32]\ntrain:\n  epochs: 5\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--set", "train.seed=3", "--out", str(run), "-q"]) == 0
    saved = (run / "config.yaml").read_text()
    assert "epochs: 1" in saved and "seed: 3" in saved and "- 32" in saved
