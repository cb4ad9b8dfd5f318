"""Bad configurations of every kind (types, ranges, NaN/inf, unknown keys, broken YAML, nested
option values): each must exit 2 with one line naming the problem, no traceback, and leave no
run folder behind. The corpus grows with each defect found."""

from __future__ import annotations

import pytest

from cnnlab.cli import main

FLOATS = {  # flag → values that must be refused
    "--lr": ["nan", "inf", "-inf", "-0.1", "0", "11", "abc"],
    "--weight-decay": ["nan", "inf", "-1", "x"],
    "--momentum": ["nan", "1", "-0.5", "1.5"],
    "--mixup": ["nan", "inf", "-1"],
    "--cutmix": ["nan", "-inf", "-2"],
    "--random-erasing": ["nan", "1.5", "-0.1"],
    "--dropout": ["nan", "1", "5", "-0.1"],
    "--gamma": ["nan", "0", "1", "2"],
    "--decay-rate": ["nan", "inf", "0", "-1"],
    "--backbone-lr-mult": ["nan", "0", "2"],
    "--val-size": ["nan", "inf", "0", "-3"],
    "--ema": ["nan", "inf", "0", "1", "-0.5", "x", ""],
    "--label-smoothing": ["nan", "1", "-0.1"],
    "--clip-grad": ["nan", "0", "-1"],
    "--time": ["soon", "0s", "-5m", "nan", ""],
    "--leak-similarity": ["nan", "inf", "1.5", "-0.1", ""],
}
INTS = {
    "--epochs": ["0", "-5", "1000001", "2.5", "x"],
    "--batch-size": ["0", "-1", "1000000", "big", "Auto", ""],
    "--accumulate": ["0", "-1", "2000"],
    "--seed": ["-1", "18446744073709551616", "4294967296", "1e3"],
    "--input-size": ["0", "3", "100000", "-28"],
    "--workers": ["-1", "1000"],
    "--patience": ["0", "-2"],
    "--warmup-epochs": ["-1"],
    "--step-size": ["0"],
    "--decay-start": ["-3"],
    "--train-per-class": ["0", "-10"],
    "--unfreeze-last": ["0"],
    "--max-pixels": ["0", "-1"],
    "--channels": ["2", "0", "4"],
    "--leak-hash-bits": ["-1", "65", "many", ""],
}
CHOICES = [
    "--cache",
    "--normalize",
    "--sampler",
    "--class-weights",
    "--activation",
    "--init",
    "--freeze",
    "--schedule",
    "--optimizer",
    "--model",
    "--augment",
    "--monitor",
    "--device",
    "--on-leak",
]

CASES: list[tuple[list[str], str]] = []
CASES += [([flag, v], "") for flag, values in FLOATS.items() for v in values]
CASES += [([flag, v], "") for flag, values in INTS.items() for v in values]
CASES += [([flag, "bogus"], "") for flag in CHOICES]
CASES += [  # groups and exclusions (issue 28)
    (["--group-by", "("], "data.group_by"),
    (["--group-by", ""], "data.group_by"),
    (["--group-by", "x"], "has no files"),  # a built-in benchmark has no file paths to group by
    (["--exclude", "/no/such.csv"], "data.exclude"),
    (["--exclude", "/etc/passwd"], "needs a header"),
]
CASES += [
    (["--split", "0.5,0.4"], "data.split"),
    (["--split", "nan,0.5,0.5"], "data.split"),
    (["--split", "a,b,c"], "fractions"),
    (["--split=-0.2,0.6,0.6"], "data.split"),
    (["--split", "0,0.5,0.5"], "data.split"),
    (["--split", "0.8,0.1,0.1,0.0"], "data.split"),
    (["--batch-size", "automatic"], "expected auto or a whole number"),
    (["--hidden=-5"], "model.hidden"),
    (["--hidden", "abc"], "whole numbers"),
    (["--hidden", "0"], "model.hidden"),
    (["--hidden", "1000000000"], "model.hidden"),
    (["--hidden", "64,,32"], "whole numbers"),
    (["--model", "mlp", "--hidden", "1000000,1000000"], "GiB"),
    (["--fine-tune=-1,2"], "model.fine_tune"),
    (["--fine-tune", "1"], "two epoch counts"),
    (["--fine-tune", "a,b"], "E1,E2"),
    (["--fine-tune", "0,0"], "model.fine_tune"),
    (["--fine-tune", ""], "or auto"),
    (["--fine-tune", "Auto"], "or auto"),
    (["--set", "model.fine_tune=autox"], "invalid value for model.fine_tune: 'autox'"),
    (["--model", "efficientnet-lite0", "--fine-tune", "auto", "--epochs", "1"], "at least 2"),
    (["--engine", ""], "train.engine"),
    (["--set", "data.drop_empty_classes=3"], "data.drop_empty_classes"),
    (["--model-option", "dropout=5"], "model.dropout"),
    (["--model-option", "hidden=abc"], "model.hidden"),
    (["--model-option", "hidden=[1000000000]"], "model.hidden"),
    (["--model-option", "nope=1"], "no option 'nope'"),
    (["--model", "mobilenetv2-small", "--model-option", "conv_bias=maybe"], "model.options"),
    (["--model", "mobilenetv2-small", "--model-option", "conv_bias=[1]"], "model.options"),
    (["--model-option", "activation=foo"], "model.activation"),
    (["--model-option", "=3"], "KEY=VALUE"),
    (["--augment", "keras", "--augment-option", "rotation=.inf"], "rotation"),
    (["--augment", "keras", "--augment-option", "rotation=.nan"], "rotation"),
    (["--augment", "keras", "--augment-option", "rotation=-5"], "rotation"),
    (["--augment", "keras", "--augment-option", "rotation=1000"], "rotation"),
    (["--augment", "keras", "--augment-option", "zoom=abc"], "zoom"),
    (["--augment", "keras", "--augment-option", "horizontal_flip=maybe"], "horizontal_flip"),
    (["--augment", "flip", "--augment-option", "degrees=3"], "no option 'degrees'"),
    (["--augment", "flip", "--augment-option", "p=2"], "p"),
    (["--augment", "randaugment", "--augment-option", "magnitude=99"], "magnitude"),
    (["--augment", "randaugment", "--augment-option", "num_ops=-1"], "num_ops"),
    (["--augment", "randaugment", "--augment-option", "num_ops=[1, 2]"], "num_ops"),
    (["--augment", "paintings", "--augment-option", "alpha_std=.inf"], "alpha_std"),
    (["--set", "optim.lr=.nan"], "optim.lr"),
    (["--set", "train.epochs=1e9"], "train.epochs"),
    (["--set", "data.split=[0.5]"], "data.split"),
    (["--set", "model.options={dropout: 5}"], "model.dropout"),
    (["--set", "data.augment_options=[1, 2]"], "data.augment_options"),
    (["--set", "model.hidden={a: 1}"], "model.hidden"),
    (["--set", "train.seed=18446744073709551616"], "train.seed"),
    (["--set", "nonsense"], "KEY=VALUE"),
    (["--set", "=3"], "KEY=VALUE"),
    (["--set", "optim=3"], "unknown config key"),
    (["--set", "data.source="], "data.source"),
    (["--set", "train.monitor=val_bogus"], "train.monitor"),
    (["--set", "train.monitor=bogus_loss"], "train.monitor"),
    (["--set", "train.engine=tensorflow"], "train.engine"),
    (["--set", "model.options=[1]"], "model.options"),
    (["--set", "data.workers=[1]"], "data.workers"),
    (["--set", "train.batch_size=true"], "train.batch_size"),
    (["--set", "model.freeze=[backbone]"], "model.freeze"),
    (["--set", "data.label_sep=[a]"], "data.label_sep"),
    (["--set", "run.out=[1]"], "run.out"),
    (["--set", "optim.lr=1e-3", "--set", "optim.lr=[1]"], "optim.lr"),
    (["--data", ""], "data.source"),
    (["--data", "x" * 5000], "data.source"),
    (["--data", "/no/such"], "data.source"),
    (["--data", "x/" * 3000], "data.source"),
    (["--monitor", "val_hamming_loss"], "multi-label"),
    (["--epoch", "3"], "unrecognized arguments"),
    (["--lr"], "expected one argument"),
    (["--resume", "some/run", "--lr", "0.1"], "only --epochs"),
    (["--resume", "/no/run"], "does not exist"),
]
OTHER: list[tuple[list[str], str]] = [
    (["evaluate", "RUN", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "RUN", "--batch-size", "-5"], "at least 1"),
    (["evaluate", "RUN", "--device", "tpu"], "--device"),
    (["predict", "RUN", "x.png", "--top-k", "0"], "--top-k"),
    (["predict", "RUN", "x.png", "--device", "cuda:x"], "--device"),
    (["report", "RUN", "--device", "gpu"], "--device"),
    (["lr-find", "--data", "digits", "--start-lr", "0"], "--start-lr"),
    (["lr-find", "--data", "digits", "--start-lr", "1", "--end-lr", "0.1"], "below --end-lr"),
    (["lr-find", "--data", "digits", "--steps", "0"], "--steps"),
    (["lr-find", "--data", "digits", "--end-lr", "nan"], "--end-lr"),
    (["data", "inspect", "/no/such/folder"], "data.source"),
    (["data", "inspect", "digits", "--max-pixels", "0"], "data.max_pixels"),
    (["list", "gadgets"], "invalid choice"),
    (["cv", "--data", "digits", "--folds", "1"], "--folds of at least 2"),
    (["cv", "--data", "digits", "--folds", "1000"], "use fewer folds"),
    (["cache", "clean", "--older-than", "nan"], "--older-than"),
    (["data", "inspect", "digits", "--near-duplicates", "sometimes"], "--near-duplicates"),
    (["study", "digits", "--audit-labels"], "--audit-labels needs --folds"),
    (["study", "digits", "--group-by", "("], "--group-by"),
    (["study", "digits", "--on-leak", "maybe"], "--on-leak"),
    (["explain", "/no/such/run", "--sanity"], "does not exist"),
    (["explain", "/no/such/run", "--sanity", "--images", "0"], "--images"),
    (["board", "/no/such/folder"], "is not a folder"),
    (["board", ".", "--port", "70000"], "--port"),
    (["board", ".", "--host", "0.0.0.0"], "--token"),
    (["board", ".", "--host", "0.0.0.0", "--token", ""], "--token is empty"),
    (["compare", "a", "b", "--metric"], "expected one"),
    (["evaluate", "RUN", "--split", "holdout"], "--split"),
]
YAMLS = {  # config file text → what the message names
    "- data\n- model\n": "must hold a mapping",
    "42\n": "must hold a mapping",
    "just text\n": "must hold a mapping",
    "data: [1, 2]\n": "section 'data'",
    "model: 3\n": "section 'model'",
    "optim: hello\n": "section 'optim'",
    "train: [epochs]\n": "section 'train'",
    "foo: {a: 1}\n": "unknown config key",
    "data: {colour: red}\n": "unknown config key",
    "data: {source: [digits]}\n": "data.source",
    "train: {epochs: .inf}\n": "train.epochs",
    "optim: {lr: .nan}\n": "optim.lr",
    "model: {options: {dropout: 5}}\n": "model.dropout",
    "data: {augment: keras, augment_options: {rotation: .inf}}\n": "rotation",
    "a: &x [1]\nb: *x\n": "anchors and aliases",
    "data: {source: digits\n": "not valid YAML",
    ":\n  - :\n\t:": "YAML",
    "[" * 5000 + "]" * 5000: "nested deeper",
    "data: !!python/object/apply:os.system [echo hi]\n": "YAML",
    "model: {hidden: {a: 1}}\n": "model.hidden",
}
BINARY = {
    "binary.yaml": bytes(range(256)) * 4,
    "utf16.yaml": "data:\n  source: digits\n".encode("utf-16"),
    "nul.yaml": b"data:\x00\n",
    "huge.yaml": b"# " + b"x" * (2 << 20),
}


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def _check(code, err, expected, tmp_path):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # info lines of the log may come first
    assert expected in errors[0], errors[0]
    left = [p for p in tmp_path.rglob("*") if p.name not in ("some", "cfg.yaml") and "cfg" not in p.name]
    assert not left, left  # no run folder, nothing half-made


@pytest.mark.parametrize("argv,expected", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_train_flags(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [] if "--data" in argv or "--resume" in argv else ["--data", "digits"]
    code, err = _run(
        ["train", *base, *argv, "--epochs", "1"]
        if "--epochs" not in argv and "--epoch" not in argv and "--resume" not in argv
        else ["train", *base, *argv],
        capsys,
    )
    _check(code, err, expected, tmp_path)


@pytest.mark.parametrize("argv,expected", OTHER, ids=[" ".join(a)[:60] for a, _ in OTHER])
def test_bad_flags_of_other_commands(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(argv, capsys)
    _check(code, err, expected, tmp_path)


@pytest.mark.parametrize("text,expected", list(YAMLS.items()), ids=[t[:30] for t in YAMLS])
def test_bad_yaml_configs(text, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text(text)
    code, err = _run(["train", "--config", "cfg.yaml"], capsys)
    _check(code, err, expected, tmp_path)


@pytest.mark.parametrize("name", BINARY)
def test_binary_and_oversized_config_files(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"cfg-{name}").write_bytes(BINARY[name])
    code, err = _run(["train", "--config", f"cfg-{name}"], capsys)
    _check(code, err, "config file", tmp_path)


def test_the_corpus_is_large_enough():
    assert len(CASES) + len(OTHER) + len(YAMLS) + len(BINARY) >= 150
