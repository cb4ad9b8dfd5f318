"""The `cnnlab` command line: parses flags into a typed config and calls one api function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from cnnlab import __version__, api
from cnnlab.core.errors import CnnlabError
from cnnlab.core.registry import did_you_mean
from cnnlab.core.schema import TrainConfig
from cnnlab.core.yamlio import load_yaml, parse_set
from cnnlab.evaluate.metrics import format_metrics_table

# train flag → config key; every flag is sugar for `--set KEY=VALUE`.
TRAIN_FLAGS: dict[str, str] = {
    "data": "data.source",
    "data_dir": "data.data_dir",
    "download": "data.download",
    "input_size": "data.input_size",
    "channels": "data.channels",
    "split": "data.split",
    "val_size": "data.val_size",
    "workers": "data.workers",
    "cache": "data.cache",
    "max_pixels": "data.max_pixels",
    "image_root": "data.image_root",
    "delimiter": "data.delimiter",
    "label_sep": "data.label_sep",
    "augment": "data.augment",
    "normalize": "data.normalize",
    "random_erasing": "data.random_erasing",
    "mixup": "data.mixup",
    "cutmix": "data.cutmix",
    "sampler": "data.sampler",
    "class_weights": "train.class_weights",
    "init_output_bias": "train.init_output_bias",
    "train_per_class": "data.train_per_class",
    "drop_empty_classes": "data.drop_empty_classes",
    "activation": "model.activation",
    "init": "model.init",
    "batch_norm": "model.batch_norm",
    "pretrained": "model.pretrained",
    "weights": "model.weights",
    "freeze": "model.freeze",
    "unfreeze_last": "model.unfreeze_last",
    "train_bn_only": "model.train_bn_only",
    "fine_tune": "model.fine_tune",
    "backbone_lr_mult": "model.backbone_lr_mult",
    "schedule": "train.schedule",
    "warmup_epochs": "train.warmup_epochs",
    "step_size": "train.step_size",
    "gamma": "train.gamma",
    "decay_start": "train.decay_start",
    "decay_rate": "train.decay_rate",
    "feature_cache": "train.feature_cache",
    "model": "model.name",
    "hidden": "model.hidden",
    "dropout": "model.dropout",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "momentum": "optim.momentum",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "device": "train.device",
    "monitor": "train.monitor",
    "patience": "train.patience",
    "engine": "train.engine",
    "out": "run.out",
    "logger": "run.loggers",
}


def _name_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names separated by commas")
    return names


def _int_list(text: str) -> list[int]:
    try:  # negatives are kept, so the config check names them instead of a silent sign change
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 512,256, got {text!r}") from None


def _int_pair(text: str) -> list[int] | str:
    if text.strip() == "auto":
        return "auto"
    try:
        parts = _int_list(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected two epoch counts E1,E2 like 3,2, or auto, got {text!r}") from None
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two epoch counts E1,E2 like 3,2, or auto, got {text!r}")
    return parts


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace("/", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.8,0.1,0.1, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return port


def _device(text: str) -> str:

    try:
        TrainConfig._known_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}, got {text!r}") from None
    return text


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage is one `--help` away) and no abbreviated flags
    (``--epoch 3`` is a typo, not ``--epochs 3``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments: "):
            flags = _all_flags(self)
            first = message.removeprefix("unrecognized arguments: ").split()[0].split("=")[0]
            message += did_you_mean(first, flags)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _all_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser`` and of its sub-commands."""
    flags = []
    for action in parser._actions:
        flags += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += _all_flags(sub)
    return flags


def build_parser() -> argparse.ArgumentParser:
    """The `cnnlab` parser: one sub-command per public function."""
    p = _Parser(prog="cnnlab", description="Train, compare and understand image classifiers.")
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _config_flags()
    _add_train_commands(sub, common)
    _add_sweep_commands(sub)
    _add_study_command(sub)
    _add_scratch_commands(sub)
    _add_run_commands(sub)
    _add_other_commands(sub)
    return p


def _config_flags() -> argparse.ArgumentParser:
    """The config flags shared by train and lr-find (each is sugar for --set KEY=VALUE)."""
    common = _Parser(add_help=False)  # the config flags shared by train and lr-find
    t = common
    t.add_argument("--config", metavar="FILE", help="YAML config file (sections data/model/optim/train/run)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set optim.lr=3e-4 (repeatable)",
    )
    _data_flags(t)
    _model_flags(t)
    _optim_flags(t)
    return common


def _data_flags(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("data")
    g.add_argument(
        "--data",
        metavar="NAME|DIR",
        help="built-in dataset (see `cnnlab list datasets`) or a folder "
        "of class folders, optionally split into train/ val/ test/ (default fashion-mnist)",
    )
    g.add_argument("--data-dir", metavar="DIR", help="where a built-in dataset's files are")
    g.add_argument("--download", action="store_true", default=None, help="let torchvision download a built-in dataset")
    g.add_argument("--input-size", type=int, metavar="N", help="resize images to N×N (default: the model's or data's)")
    g.add_argument("--channels", type=int, metavar="C", help="1 (grey) or 3 (RGB); default: the data's own")
    g.add_argument(
        "--split",
        type=_float_list,
        metavar="TR,VA,TE",
        help="train,val,test fractions for unsplit folders (default 0.8,0.1,0.1)",
    )
    g.add_argument(
        "--val-size",
        type=float,
        metavar="F|N",
        help="validation taken from a given train split: fraction or count (default 0.1)",
    )
    g.add_argument("--workers", type=int, metavar="N", help="image decoding threads (default 2)")
    g.add_argument("--train-per-class", type=int, metavar="N", help="keep at most N training images per class")
    g.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder the paths of a CSV label file are relative to (default: the CSV's folder)",
    )
    g.add_argument("--delimiter", metavar="C", help="CSV delimiter (default: tab for .tsv, else sniffed)")
    g.add_argument("--label-sep", metavar="C", help="separator of several labels in a CSV cell (default space)")
    g.add_argument("--cache", metavar="MODE", help="decode-once cache: auto (default), memory, disk, none")
    g.add_argument(
        "--drop-empty-classes",
        action="store_true",
        default=None,
        help="drop classes left without usable images (default: refuse such data, naming them)",
    )
    g.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="pixel budget per image: larger JPEGs are decoded downscaled, others skipped (default 50M)",
    )
    g = t.add_argument_group("augmentation and imbalance")
    g.add_argument(
        "--augment",
        metavar="PRESET",
        help="none (default), flip, keras, paintings, randaugment, trivialaugment (see `cnnlab list augmentations`)",
    )
    g.add_argument(
        "--augment-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset parameter, e.g. rotation=20 (repeatable)",
    )
    g.add_argument(
        "--normalize",
        metavar="MODE",
        help="auto (default: a pretrained model's mean/std, else the dataset's), dataset, model, per-image, none",
    )
    g.add_argument("--random-erasing", type=float, metavar="P", help="random erasing probability (timm)")
    g.add_argument("--mixup", type=float, metavar="ALPHA", help="mixup alpha (timm)")
    g.add_argument("--cutmix", type=float, metavar="ALPHA", help="cutmix alpha (timm)")
    g.add_argument("--sampler", metavar="S", help="random (default) or balanced (class-balanced sampling)")
    g.add_argument("--class-weights", metavar="W", help="none (default) or auto: w_c = n / (k n_c) in the loss")
    g.add_argument(
        "--init-output-bias",
        action="store_true",
        default=None,
        help="start with softmax(output bias) = class frequencies",
    )


def _model_flags(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("model")
    g.add_argument("--model", metavar="NAME", help="model name (see `cnnlab list models`; default cnn)")
    g.add_argument("--hidden", type=_int_list, metavar="H1,H2", help="hidden dense sizes, e.g. 512,256")
    g.add_argument("--dropout", type=float, metavar="P", help="dropout rate of the dense head")
    g.add_argument("--activation", metavar="A", help="relu, elu, tanh, sigmoid, prelu or relu6 (models that vary it)")
    g.add_argument("--init", metavar="I", help="weight initialisation: default, he or xavier")
    g.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch normalisation on/off (models that vary it)",
    )
    g.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other builder option, e.g. conv_bias=true (repeatable)",
    )
    g = t.add_argument_group("transfer learning")
    g.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the pretrained weights of a pretrained model (default on)",
    )
    g.add_argument("--weights", metavar="FILE", help="start from these weights (safetensors or a state dict)")
    g.add_argument("--freeze", metavar="WHAT", help="none (default) or backbone: train only the new head")
    g.add_argument("--unfreeze-last", type=int, metavar="N", help="train the top N backbone blocks and the head")
    g.add_argument(
        "--train-bn-only", action="store_true", default=None, help="train only BatchNorm layers and the head (seed 000)"
    )
    g.add_argument(
        "--fine-tune",
        type=_int_pair,
        metavar="E1,E2|auto",
        help="E1 epochs with a frozen backbone (head on cached features), then E2 epochs with everything "
        "training (warm-up + cosine, BatchNorm statistics kept); auto picks E1,E2 from the data size",
    )
    g.add_argument(
        "--backbone-lr-mult",
        type=float,
        metavar="M",
        help="backbone LR = lr × M (default 0.1 with --fine-tune/--unfreeze-last, else 1)",
    )
    g.add_argument(
        "--feature-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with a frozen backbone and no augmentation, compute its features once (default on)",
    )


def _optim_flags(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("optimisation")
    g.add_argument("--optimizer", metavar="NAME", help="adam (default), adamw, sgd or rmsprop")
    g.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        help="learning rate (default 1e-3; 3e-3, the peak of the default one-cycle recipe)",
    )
    g.add_argument("--weight-decay", type=float, metavar="WD", help="weight decay (default 0)")
    g.add_argument("--momentum", type=float, metavar="M", help="momentum for sgd (default 0.9) / rmsprop (0)")
    g = t.add_argument_group("training")
    g.add_argument(
        "--engine",
        metavar="NAME",
        help="training engine: torch (default) or scratch (the NumPy engine; see `cnnlab list engines`)",
    )
    g.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="epochs (default: ~1,200 steps, 3-30 epochs, with the "
        "default recipe; else 10); with --resume: the new total",
    )
    g.add_argument("--batch-size", type=int, metavar="N", help="batch size (default 128)")
    g.add_argument("--seed", type=int, metavar="S", help="seed of split, init and shuffling (default 0)")
    g.add_argument("--device", metavar="DEV", help="auto (default: cuda when present), cpu, cuda, cuda:N, mps")
    g.add_argument(
        "--monitor",
        metavar="METRIC",
        help="val_loss (default), val_acc or val_<metric> (e.g. val_macro_f1): picks best.pt, drives --patience",
    )
    g.add_argument("--patience", type=int, metavar="N", help="stop after N epochs without improvement")
    g.add_argument(
        "--schedule",
        metavar="S",
        help="LR schedule: constant, step, cosine, onecycle, plateau, "
        "exp-decay (seed 004). Default for a net trained from scratch (torch engine): one-cycle, "
        "peak LR 3e-3, ~1,200 steps; otherwise constant",
    )
    g.add_argument("--warmup-epochs", type=int, metavar="N", help="linear warm-up epochs of cosine")
    g.add_argument("--step-size", type=int, metavar="N", help="epochs between drops of step (default 10)")
    g.add_argument("--gamma", type=float, metavar="F", help="LR factor of step and plateau (default 0.1)")
    g.add_argument("--decay-start", type=int, metavar="N", help="exp-decay: epochs before decay (default 10)")
    g.add_argument("--decay-rate", type=float, metavar="R", help="exp-decay: LR × exp(-R) per epoch (default 0.05)")
    g.add_argument(
        "--logger",
        type=_name_list,
        metavar="NAME[,NAME]",
        help="also log each epoch to tensorboard (RUN/tensorboard), mlflow (MLFLOW_TRACKING_URI, else "
        "RUN/mlflow.db) and/or wandb (offline unless WANDB_MODE says otherwise)",
    )


def _add_train_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model and write a run folder",
        description="Train a model on a dataset; writes config, history, checkpoints and "
        "test metrics into a run folder. Flags override --config; --set overrides both.",
    )
    g = t.add_argument_group("run folder")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<model>-<data>-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint (add --epochs to extend)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-epoch lines")

    lf = sub.add_parser(
        "lr-find",
        parents=[common],
        help="learning-rate range test with a plot",
        description="Train a few hundred batches with an exponentially growing learning rate and "
        "suggest the LR where the loss falls fastest; writes lr_find.csv/.png.",
    )
    lf.add_argument("--out", metavar="DIR", default="lr_find", help="folder for lr_find.csv and lr_find.png")
    lf.add_argument("--start-lr", type=_positive_float, default=1e-7, metavar="LR")
    lf.add_argument("--end-lr", type=_positive_float, default=10.0, metavar="LR")
    lf.add_argument("--steps", type=_positive_int, default=100, metavar="N", help="batches to try (default 100)")
    lf.add_argument("-q", "--quiet", action="store_true")

    cv = sub.add_parser(
        "cv",
        parents=[common],
        help="k-fold cross-validation: a run per fold, a summary",
        description="Stratified K-fold cross-validation (R times): one ordinary run folder per "
        "fold, scored on its out-of-fold images; the test split belongs to no fold. "
        "Writes cv.json and cv.html (mean ± std, 95 %% bootstrap intervals). The folds "
        "depend only on the data and --seed, so `cnnlab compare CV_A CV_B` compares two "
        "CVs fold by fold.",
    )
    cv.add_argument("--folds", type=_positive_int, default=5, metavar="K", help="folds (default 5)")
    cv.add_argument(
        "--repeats", type=_positive_int, default=1, metavar="R", help="repeats with other folds (default 1)"
    )
    cv.add_argument("--out", metavar="DIR", help="CV folder (default cv/<model>-<data>)")
    cv.add_argument("--resume", action="store_true", help="finish an interrupted CV; finished folds are kept")
    cv.add_argument("-q", "--quiet", action="store_true")


def _add_sweep_commands(sub: Any) -> None:
    sw = sub.add_parser(
        "sweep",
        help="hyper-parameter search (Optuna): each trial a run folder, one report",
        description="Search the space of SPEC.yaml (grid, random, TPE, CMA-ES, GP) for the best "
        "validation figure; pruning on the per-epoch validation metric; each trial an "
        "ordinary run folder under DIR/trials. Several workers share an Optuna journal "
        "file (no SQLite locks); several machines share --storage postgresql://…. "
        "Writes sweep.html, sweep.json and best.yaml. See examples/sweep-digits.yaml.",
    )
    sw.add_argument("spec", nargs="?", metavar="SPEC.yaml", help="the sweep spec (not needed with --resume)")
    sw.add_argument("--out", metavar="DIR", help="sweep folder (default sweeps/<spec name>)")
    sw.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="local worker processes (default 1); the cores are shared among them",
    )
    sw.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna RDB URL (postgresql://user:pass@host/db) to share "
        "one study between machines; default: a journal file in the sweep folder",
    )
    sw.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out: finished trials are kept, dead ones retried once",
    )
    sw.add_argument("-q", "--quiet", action="store_true")
    sr = sub.add_parser(
        "sweep-report",
        help="rebuild a sweep's sweep.html (also while it runs)",
        description="Rebuild sweep.html, sweep.json and best.yaml of a sweep folder from its study.",
    )
    sr.add_argument("sweep", metavar="DIR")
    sr.add_argument("--storage", metavar="URL", help="the --storage the sweep was started with, if any")


def _add_study_command(sub: Any) -> None:
    st = sub.add_parser(
        "study",
        help="a dataset in: candidates trained and compared within a time budget, one report",
        description="Inspect DATA, pick candidates (a dense net, the small CNN, a seed architecture "
        "that fits the size, EfficientNet-Lite0 frozen and fine-tuned when its weights "
        "are installed), time a short probe of each, plan epochs (and folds, when they "
        "fit) to the wall-clock budget, train each as an ordinary run folder, and write "
        "DIR/report.html: ranking with intervals, per-class F1, paired differences, "
        "figures, over-fitting, remaining confusions, the commands to re-train, export "
        "and serve the winner. Class weights go on when the largest class has 3x the "
        "images of the smallest. Ctrl-C, then --resume, continues where it stopped.",
    )
    st.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="a folder of class folders, a CSV label file or a dataset name (not needed with --resume)",
    )
    st.add_argument(
        "--budget",
        default="20m",
        metavar="T",
        help="wall-clock budget of the whole study: 90s, 20m, 1.5h (default 20m); kept within 10 %%",
    )
    st.add_argument(
        "--models",
        metavar="LIST",
        help="candidates instead of the automatic pick, comma-separated: "
        "model names, a pretrained one with :frozen or :fine-tune (e.g. "
        "mlp,cnn,efficientnet-lite0:fine-tune)",
    )
    st.add_argument(
        "--folds",
        type=_positive_int,
        metavar="K",
        help="cross-validate with K folds when the budget "
        "allows (default: 5 or 3 folds when every candidate's full recipe fits, else one split)",
    )
    st.add_argument("--out", metavar="DIR", help="study folder (default studies/<data name>)")
    st.add_argument("--resume", action="store_true", help="finish the study in --out: finished candidates are kept")
    st.add_argument("--seed", type=int, default=0, metavar="S", help="seed of split, folds and training (default 0)")
    st.add_argument("--batch-size", type=_positive_int, default=128, metavar="N", help="batch size (default 128)")
    st.add_argument("--device", default="auto", metavar="DEV", help="auto (default), cpu, cuda, cuda:N, mps")
    st.add_argument("--data-dir", metavar="DIR", help="where a built-in dataset's files are")
    st.add_argument("-q", "--quiet", action="store_true")


def _add_scratch_commands(sub: Any) -> None:
    g = sub.add_parser(
        "gradcheck",
        help="prove the NumPy engine's layers equal to PyTorch",
        description="Check every hand-written layer of the scratch (NumPy) engine in float64 over "
        "random shapes, kernels, strides and paddings: the relative error of its output, "
        "input gradient and parameter gradients against PyTorch autograd (tolerance "
        "1e-6) and against central finite differences (1e-5). Exit code 1 if any fails.",
    )
    g.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="only this layer (repeatable); default all: "
        "dense, conv2d, maxpool2d, avgpool2d, batchnorm1d/2d, relu, elu, tanh, sigmoid, softmax, flatten, "
        "dropout, cross-entropy, binary-cross-entropy",
    )
    g.add_argument("--configs", type=_positive_int, default=20, metavar="N", help="random configurations per layer")
    g.add_argument("--seed", type=int, default=0, metavar="S")


def _add_run_commands(sub: Any) -> None:
    """Commands that read run folders."""
    e = sub.add_parser(
        "evaluate",
        help="evaluate a run's best checkpoint",
        description="Evaluate a run's best checkpoint on its saved test split (or --split), "
        "or on another dataset with --data (classes matched by name).",
    )
    e.add_argument("run", metavar="RUN")
    e.add_argument(
        "--data",
        action="append",
        metavar="NAME|DIR",
        help="evaluate on all images of another dataset (repeat for a table of several)",
    )
    e.add_argument(
        "--retrieval",
        action="store_true",
        help="with --data: within- and cross-dataset retrieval mAP of penultimate features",
    )
    e.add_argument("--data-dir", metavar="DIR", help="where --data's files are, for built-ins")
    e.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test"],
        help="train, val or test of the run's own data (default test)",
    )
    e.add_argument("--batch-size", type=_positive_int, default=256, metavar="N")
    e.add_argument(
        "--max-pixels", type=_positive_int, metavar="N", help="pixel budget per image of --data (default: the run's)"
    )
    e.add_argument("--device", default="auto", type=_device, metavar="DEV")
    e.add_argument("--json", action="store_true", help="print metrics as JSON")

    pr = sub.add_parser(
        "predict",
        help="top-k classes for image files, folders and globs",
        description="Classify images with a run's best checkpoint, or with a model file from "
        "`cnnlab export` (an .onnx file needs only ONNX Runtime, not PyTorch). PATHs "
        "are files, folders (searched recursively) and globs; unreadable files are "
        "listed with their reason and do not stop the rest (exit 1 if any).",
    )
    pr.add_argument("run", metavar="RUN_OR_MODEL", help="a run folder, or an exported .onnx / .ts file")
    pr.add_argument("images", nargs="+", metavar="PATH")
    pr.add_argument("--out", metavar="FILE", help="write all predictions to a .csv or .jsonl file")
    pr.add_argument("--top-k", type=_positive_int, default=3, metavar="K")
    pr.add_argument("--batch-size", type=_positive_int, default=64, metavar="N", help="images per batch (default 64)")
    pr.add_argument(
        "--max-pixels",
        type=_positive_int,
        metavar="N",
        help="pixel budget per image (default: the run's); larger JPEGs are decoded downscaled",
    )
    pr.add_argument("--device", default="auto", type=_device, metavar="DEV", help="for a run folder (default auto)")
    pr.add_argument("--json", action="store_true", help="print results as one JSON list")

    ex = sub.add_parser(
        "export",
        help="export a run to ONNX or TorchScript, with a parity check",
        description="Export a run's best checkpoint with a dynamic batch axis and its classes, "
        "preprocessing and thresholds in the file's metadata, then run it against "
        "the PyTorch model on the run's test images at batch 1, 2 and 64; the "
        "command fails, writing nothing, when they disagree.",
    )
    ex.add_argument("run", metavar="RUN")
    ex.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="default onnx (opset 18)")
    ex.add_argument("--out", metavar="FILE", help="default RUN/export/model.onnx (or model.ts)")
    ex.add_argument(
        "--with-preprocessing",
        action="store_true",
        help="normalisation inside the graph: the model takes uint8 pixels (N, C, H, W)",
    )
    ex.add_argument(
        "--tolerance",
        type=_positive_float,
        default=1e-4,
        metavar="X",
        help="largest |Δprob| allowed against PyTorch (default 1e-4)",
    )
    ex.add_argument(
        "--min-agreement",
        type=_positive_float,
        default=0.999,
        metavar="X",
        help="smallest share of identical top-1 classes (default 0.999)",
    )
    ex.add_argument(
        "--check-images", type=_positive_int, metavar="N", help="check on the first N test images only (default all)"
    )
    ex.add_argument("--no-check", action="store_true", help="skip the parity check (not recommended)")
    ex.add_argument("--json", action="store_true", help="print the result as JSON")

    sv = sub.add_parser(
        "serve",
        help="an HTTP service (and a page at /) for a run or an exported model",
        description="Serve a run folder or an exported .onnx/.ts model: POST /predict, "
        "/predict/batch, /explain (Grad-CAM, run folders only), GET /health, /info, "
        "/docs, and a page at / to try it. Binds 127.0.0.1 unless told otherwise; "
        "another address needs --token or an explicit --no-auth.",
    )
    sv.add_argument("run", metavar="RUN_OR_MODEL", help="a run folder, or an exported .onnx / .ts file")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    sv.add_argument(
        "--token",
        metavar="SECRET",
        help="require 'Authorization: Bearer SECRET' on every request (env CNNLAB_TOKEN also works)",
    )
    sv.add_argument("--no-auth", action="store_true", help="serve a non-local address without a token")
    sv.add_argument(
        "--max-upload-mb", type=_positive_float, default=10.0, metavar="MB", help="largest request body (default 10 MB)"
    )
    sv.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=16_000_000,
        metavar="N",
        help="pixel budget per image (default 16,000,000); larger JPEGs are decoded downscaled",
    )
    sv.add_argument("--device", default="cpu", type=_device, metavar="DEV", help="for a run folder (default cpu)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    r = sub.add_parser(
        "report",
        help="write report.html for a run",
        description="Write RUN/report.html: curves, metrics, per-class figures, confusion, "
        "misclassified images, Grad-CAM, data, model, timing, config; one file.",
    )
    r.add_argument("run", metavar="RUN")
    r.add_argument("--device", default="auto", type=_device, metavar="DEV")

    x = sub.add_parser(
        "explain",
        help="Grad-CAM, filters and feature maps for images",
        description="Grad-CAM overlays for the predicted class (and --class), the first layer's "
        "filters and feature maps of each conv stage, as PNGs.",
    )
    x.add_argument("run", metavar="RUN")
    x.add_argument("images", nargs="+", metavar="IMAGE")
    x.add_argument("--class", dest="target_class", metavar="NAME", help="also show Grad-CAM for this class")
    x.add_argument("--out", metavar="DIR", help="where the PNGs go (default RUN/explain)")
    x.add_argument("--max-pixels", type=_positive_int, metavar="N", help="pixel budget per image (default: the run's)")
    x.add_argument("--device", default="auto", type=_device, metavar="DEV")

    c = sub.add_parser(
        "compare",
        help="one page comparing runs",
        description="Write an HTML page comparing runs: accuracy, macro-F1, parameters, training "
        "time, validation curves overlaid.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("--out", default="compare.html", metavar="FILE")
    c.add_argument(
        "--metric",
        default="accuracy",
        metavar="NAME",
        help="with two CV folders: the metric compared fold by fold (default accuracy)",
    )
    c.add_argument("--json", action="store_true", help="with two CV folders: print the comparison as JSON")


def _add_other_commands(sub: Any) -> None:
    """data inspect and list."""
    d = sub.add_parser("data", help="look at a dataset before training on it, or shard it for streaming")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    di = dsub.add_parser(
        "inspect",
        help="counts, imbalance, formats, unreadable files, duplicates, leakage",
        description="Report per-class and per-split counts, the imbalance ratio, image size/mode/"
        "format histograms, unreadable files by reason, exact duplicates within and "
        "across splits (leakage), and write samples.png and augment.png.",
    )
    di.add_argument("path", metavar="NAME|DIR|CSV")
    di.add_argument("--out", metavar="DIR", help="where the PNGs go (default inspect/<name>)")
    di.add_argument("--augment", default="keras", metavar="PRESET", help="preset shown in augment.png (default keras)")
    di.add_argument("--seed", type=int, default=0, help="seed of the split a training run would make (default 0)")
    di.add_argument("--split", type=_float_list, metavar="TR,VA,TE", help="train,val,test fractions")
    di.add_argument("--image-root", metavar="DIR")
    di.add_argument("--delimiter", metavar="C")
    di.add_argument("--label-sep", metavar="C")
    di.add_argument("--data-dir", metavar="DIR")
    di.add_argument("--max-pixels", type=int, metavar="N")
    di.add_argument("--json", action="store_true", help="print the report as JSON")
    ds = dsub.add_parser(
        "shard",
        help="write a dataset as WebDataset tar shards to train from by streaming",
        description="Decode SRC once (at --input-size, --channels), split it as training would, "
        "and write <split>-NNNNNN.tar shards (pixels as PNG, or raw when small; class "
        "index), labels and index.json to --out. Train from them with --data OUT (or an "
        "http(s) URL of the folder): batches stream from the shards, not memory.",
    )
    ds.add_argument("path", metavar="SRC", help="built-in dataset name, folder of class folders or CSV")
    ds.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    ds.add_argument(
        "--shard-size",
        type=_positive_float,
        default=100.0,
        metavar="MB",
        help="largest shard in MB (default 100); under torchrun each rank needs a shard of its own",
    )
    ds.add_argument("--input-size", type=_positive_int, metavar="S", help="side of the stored images")
    ds.add_argument("--channels", type=int, choices=[1, 3])
    ds.add_argument(
        "--model",
        default="cnn",
        metavar="NAME",
        help="the model whose input defaults pick size and channels when not given (default cnn)",
    )
    ds.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    ds.add_argument("--split", type=_float_list, metavar="TR,VA,TE", help="train,val,test fractions")
    ds.add_argument("--val-size", type=_positive_float, metavar="X", help="validation carved from a given train split")
    ds.add_argument("--data-dir", metavar="DIR")
    ds.add_argument("--image-root", metavar="DIR")

    ca = sub.add_parser(
        "cache",
        help="list or clean the decode-once and feature caches",
        description="The caches under $CNNLAB_CACHE (default ~/.cache/cnnlab): decoded images "
        "(reused by every run on the same files and size) and backbone features "
        "(reused by runs on the same data and pretrained backbone).",
    )
    ca.add_argument("action", choices=["list", "clean"], nargs="?", default="list")
    ca.add_argument("--kind", choices=["all", "decoded", "features"], default="all")
    ca.add_argument("--older-than", type=_positive_float, metavar="DAYS", help="clean: only entries older than this")
    ca.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="list registered models, datasets, augmentation presets or engines")
    ls.add_argument("what", choices=["models", "datasets", "augmentations", "engines"])
    ls.add_argument(
        "--classes", type=int, default=10, metavar="K", help="classes for the parameter counts (default 10)"
    )
    ls.add_argument("--channels", type=int, default=3, metavar="C", help="input channels for the counts (default 3)")
    ls.add_argument("--json", action="store_true")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (so redirection and test capture work)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("cnnlab")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, rank 0 speaks for all
    logger.setLevel(logging.WARNING if quiet or rank > 0 else logging.INFO)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:

    overrides = {
        key: getattr(args, flag)
        for flag, key in TRAIN_FLAGS.items()
        if getattr(args, flag, None) is not None and not (flag == "out" and args.command != "train")
    }
    if args.augment_option:
        overrides["data.augment_options"] = parse_set(args.augment_option)
    if args.model_option:
        overrides["model.options"] = parse_set(args.model_option)
    overrides.update(parse_set(args.set))
    return overrides


def cmd_train(args: argparse.Namespace) -> int:

    progress = not args.quiet and sys.stderr.isatty() and os.environ.get("RANK", "0") == "0"
    if args.resume:
        extra = [f for f in TRAIN_FLAGS if f != "epochs" and getattr(args, f) is not None]
        if extra or args.config or args.set or args.augment_option or args.model_option:
            names = ", ".join("--" + f.replace("_", "-") for f in extra) or "--config/--set"
            raise CnnlabError(
                f"--resume continues a run with its saved config; only --epochs may be given (got {names})"
            )
        result = api.train(None, resume=args.resume, epochs=args.epochs, progress=progress)  # type: ignore[arg-type]
    else:
        base = load_yaml(args.config) if args.config else None
        cfg = api.build_config(base, _train_overrides(args), source=args.config or "")
        result = api.train(cfg, overwrite=args.overwrite, progress=progress)
    m = result.metrics
    if not m:  # a torchrun rank other than 0: rank 0 evaluates and prints
        return 0
    print(format_metrics_table(m, f"{m['split']} set, best epoch {m['best_epoch']}:"))
    print(f"\n{m['split']} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  run folder {result.run}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:

    if args.retrieval and not args.data:
        raise CnnlabError("--retrieval needs datasets: add --data A [--data B ...]")
    if args.data and (len(args.data) > 1 or args.retrieval):
        res = api.evaluate_datasets(
            args.run,
            args.data,
            retrieval=args.retrieval,
            batch_size=args.batch_size,
            device=args.device,
            progress=sys.stderr.isatty(),
            max_pixels=args.max_pixels,
        )
        if args.json:
            print(json.dumps(res, indent=2))
            return 0
        w = max(len(r["data"]) for r in res["rows"])
        print(f"{'data':<{w}}  images  accuracy  macro F1")
        for r in res["rows"]:
            print(f"{r['data']:<{w}}  {r['images']:>6}  {r['accuracy']:8.4f}  {r['macro_f1']:8.4f}")
        if "map" in res:
            print("\nretrieval mAP (rows: queries, columns: gallery)")
            cw = max(8, w)
            print(" " * w + "  " + "  ".join(f"{r['data']:>{cw}}" for r in res["rows"]))
            for i, row in enumerate(res["map"]):
                cells = "  ".join(f"{v:{cw}.4f}" if v is not None else f"{'-':>{cw}}" for v in row)
                print(f"{res['rows'][i]['data']:<{w}}  {cells}")
        return 0
    m = api.evaluate(
        args.run,
        data=args.data[0] if args.data else None,
        data_dir=args.data_dir,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        progress=sys.stderr.isatty(),
        max_pixels=args.max_pixels,
    )
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(format_metrics_table(m, f"{args.run}: {m.get('data') or m['split'] + ' split'}"))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:

    model = api.load_model(args.run, args.device, args.max_pixels)
    summary = api.predict_files(
        model, args.images, args.out, args.top_k, args.batch_size, progress=sys.stderr.isatty(), collect=args.json
    )
    if args.json:
        print(json.dumps(summary["results"], indent=2))
    if args.out:
        print(f"{summary['predicted']} of {summary['images']} images predicted → {summary['out']}")
    if summary["errors"] and (args.out or args.json):
        print(f"{len(summary['errors'])} unreadable:", file=sys.stderr)
        for path, reason in summary["errors"][:20]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if len(summary["errors"]) > 20:
            print(f"  … and {len(summary['errors']) - 20} more (see the output file)", file=sys.stderr)
    return 1 if summary["errors"] else 0


def cmd_list(args: argparse.Namespace) -> int:

    if args.what == "engines":
        rows = api.list_engines()
        print(
            json.dumps(rows, indent=2) if args.json else "\n".join(f"{r['name']:<8}  {r['description']}" for r in rows)
        )
        return 0
    if args.what == "models":
        rows = api.list_models(args.classes, args.channels)
    else:
        rows = api.list_datasets() if args.what == "datasets" else api.list_augmentations()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.what == "augmentations":
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
            print(f"{r['name']:<{w}}  {opts}")
    elif args.what == "models":
        w = max(len(r["name"]) for r in rows)
        print(f"{'name':<{w}}  {'parameters':>10}  input  pretrained                description")
        for r in rows:
            print(
                f"{r['name']:<{w}}  {r['parameters']:>10,}  {r['input_size']:>5}  {r['pretrained']:<24}  "
                f"{r['description']}"
            )
        print(
            f"(parameters for {args.channels}-channel input at the default size and {args.classes} classes; "
            "also: timm/<name>, tv/<name>)"
        )
    else:
        w = max(len(r["name"]) for r in rows)
        print(f"{'name':<{w}}  size  classes  description")
        for r in rows:
            print(f"{r['name']:<{w}}  {r['size']:>4}  {r['classes']:>7}  {r['description']}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.data_command == "shard":
        return _cmd_shard(args)

    keys = {
        "path": "data.source",
        "split": "data.split",
        "image_root": "data.image_root",
        "delimiter": "data.delimiter",
        "label_sep": "data.label_sep",
        "data_dir": "data.data_dir",
        "max_pixels": "data.max_pixels",
        "augment": "data.augment",
    }
    cfg = api.build_config(None, {k: getattr(args, f) for f, k in keys.items() if getattr(args, f) is not None})
    out = args.out or str(Path("inspect") / (Path(args.path).stem or "data"))
    report = api.inspect_dataset(
        cfg.data, seed=args.seed, out=out, preview_augment=args.augment, progress=sys.stderr.isatty()
    )
    print(json.dumps(report, indent=2) if args.json else api.format_report(report))
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:

    keys = {
        "path": "data.source",
        "split": "data.split",
        "val_size": "data.val_size",
        "data_dir": "data.data_dir",
        "image_root": "data.image_root",
        "input_size": "data.input_size",
        "channels": "data.channels",
        "model": "model.name",
    }
    cfg = api.build_config(None, {k: getattr(args, f) for f, k in keys.items() if getattr(args, f) is not None})
    data = api.prepare_data(cfg.data, api.get_spec(cfg.model.name), args.seed, progress=sys.stderr.isatty())
    index = api.write_shards(data, args.out, args.shard_size, progress=sys.stderr.isatty())
    for name, part in index["splits"].items():
        print(f"{name:<5} {part['count']:>8} images in {len(part['shards'])} shard(s)")
    print(
        f"wrote {args.out}: {len(index['classes'])} classes, {index['input_size']} px, {index['channels']} "
        f"channel(s); train from it with --data {args.out}"
    )
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:

    if args.start_lr >= args.end_lr:
        raise CnnlabError(f"--start-lr {args.start_lr:g} must be below --end-lr {args.end_lr:g}")
    base = load_yaml(args.config) if args.config else None
    cfg = api.build_config(base, _train_overrides(args), source=args.config or "")
    res = api.lr_find(
        cfg, args.out, args.start_lr, args.end_lr, args.steps, progress=not args.quiet and sys.stderr.isatty()
    )
    tried = f"{len(res['lrs'])} steps from {res['lrs'][0]:.1e} to {res['lrs'][-1]:.1e}" if res["lrs"] else "no steps"
    print(f"LR range test: {tried}")
    if res["suggestion"]:
        print(f"suggested learning rate: {res['suggestion']:.2e} (steepest loss descent)")
    else:
        print("no suggestion: the loss did not change enough; widen --start-lr/--end-lr or add --steps")
    for f in res["files"]:
        print(f"wrote {f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    print(f"wrote {api.report(args.run, device=args.device, progress=sys.stderr.isatty())}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:

    results = api.explain(args.run, args.images, args.target_class, args.out, args.device, args.max_pixels)
    for r in results:
        if "error" in r:
            print(f"{r['path']}: error: {r['error']}")
        else:
            print(f"{r['path']}: {r['predicted']} ({r['prob']:.3f}); wrote {', '.join(r['files'][:2])}")
    explained = [r for r in results if "files" in r]
    if explained:
        print(f"first-layer filters: {explained[0]['files'][2]}")
    return 0 if all("error" not in r for r in results) else 1


def cmd_compare(args: argparse.Namespace) -> int:

    cvs = [api.read_cv(r) for r in args.runs]
    if any(cvs):
        if len(cvs) != 2 or not all(cvs):
            raise CnnlabError("compare takes run folders, or exactly two cross-validation folders (from cnnlab cv)")
        res = api.paired_comparison(cvs[0], cvs[1], args.metric)
        if args.json:
            print(json.dumps(res, indent=2))
            return 0
        a, b = res["a"], res["b"]
        print(f"{res['metric']} per fold: {a} vs {b} (difference {b} − {a})")
        for name, va, vb, d in zip(res["folds"], res["a_values"], res["b_values"], res["differences"]):
            print(f"  {name:<12} {va:.4f}  {vb:.4f}  {d:+.4f}")
        lo, hi = res["ci95"]
        print(
            f"mean difference {res['mean_difference']:+.4f}, 95 % interval [{lo:+.4f}, {hi:+.4f}], "
            f"Wilcoxon signed-rank p = {res['wilcoxon_p']:.4g} ({len(res['folds'])} paired folds)"
        )
        return 0
    print(f"wrote {api.compare(args.runs, args.out)}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from pathlib import Path

    base = load_yaml(args.config) if args.config else None
    cfg = api.build_config(base, _train_overrides(args), source=args.config or "")
    out = args.out or str(Path("cv") / f"{cfg.model.name}-{Path(cfg.data.source).name}")
    res = api.cross_validate(
        cfg, out, args.folds, args.repeats, resume=args.resume, progress=not args.quiet and sys.stderr.isatty()
    )
    print(
        f"{res['folds']}-fold cross-validation × {res['repeats']} of {res['model']} "
        f"({res['test_images_held_out']} test images held out)"
    )
    for k, st in res["summary"].items():
        print(f"  {k:<24} {st['mean']:.4f} ± {st['std']:.4f}   95 % [{st['ci95'][0]:.4f}, {st['ci95'][1]:.4f}]")
    print(f"wrote {Path(out) / 'cv.json'} and {Path(out) / 'cv.html'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not args.spec and not (args.resume and args.out):
        raise CnnlabError("cnnlab sweep needs SPEC.yaml (or --resume --out DIR of a sweep)")
    out = args.out or str(Path("sweeps") / Path(args.spec).stem)
    s = api.run_sweep(
        args.spec, out, workers=args.workers, storage=args.storage, resume=args.resume, progress=not args.quiet
    )
    o = s["outcomes"]
    print(
        f"sweep {s['study']}: {s['done']}/{s['budget'] if s['budget'] is not None else '-'} trials done "
        f"({o.get('complete', 0)} complete, {o.get('pruned', 0)} pruned, {o.get('failed', 0)} failed)"
    )
    if s["best"]:
        b = s["best"]
        print(
            f"best: trial {b['trial']}  {s['objective']} = {b['value']:.4f}  "
            + "  ".join(f"{k}={v}" for k, v in b["params"].items())
        )
        print(f"best config: {Path(out) / 'best.yaml'}  (cnnlab train --config {Path(out) / 'best.yaml'})")
    if s["budget"] is not None and s["done"] < s["budget"]:
        print(f"{s['budget'] - s['done']} trial(s) left: continue with cnnlab sweep --resume --out {out}")
    print(f"wrote {Path(out) / 'sweep.html'}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not args.data and not (args.resume and args.out):
        raise CnnlabError("cnnlab study needs DATA (or --resume --out DIR of a study)")
    out = args.out or str(Path("studies") / Path(args.data.rstrip("/")).name)
    state = api.run_study(
        args.data,
        out,
        args.budget,
        args.models,
        args.folds,
        resume=args.resume,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        data_dir=args.data_dir,
        progress=not args.quiet and sys.stderr.isatty(),
        started=args.started,
    )
    print("\n".join(api.format_summary(state)))
    print(
        f"study took {state['spent_seconds']:.0f} s of a {state['budget_seconds']:.0f} s budget; "
        f"report: {Path(out) / 'report.html'}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:

    r = api.export_run(
        args.run,
        args.format,
        args.out,
        args.with_preprocessing,
        check=not args.no_check,
        tolerance=args.tolerance,
        min_agreement=args.min_agreement,
        check_images=args.check_images,
        progress=sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    meta = r["metadata"]
    print(
        f"wrote {r['file']} ({r['format']}, {r['bytes'] / 2**20:.1f} MB): {meta['model']}, "
        f"{len(meta['classes'])} classes, input {meta['input']['dtype']} "
        f"(N, {meta['input']['channels']}, {meta['input']['size']}, {meta['input']['size']}), batch dynamic"
    )
    p = r["parity"]
    if p is None:
        print("parity check skipped (--no-check)")
        return 0
    print(f"parity against PyTorch on {p['images']} {p['split']} images:")
    for row in p["rows"]:
        print(
            f"  batch {row['batch']:>3} ({row['images']:>6} images): max |Δprob| {row['max_abs_dprob']:.2e}, "
            f"top-1 agreement {row['top1_agreement']:.4%}"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:

    token = args.token if args.token is not None else os.environ.get("CNNLAB_TOKEN")
    api.serve(
        args.run,
        host=args.host,
        port=args.port,
        token=token,
        no_auth=args.no_auth,
        device=args.device,
        max_upload=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        log_level=args.log_level,
    )
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:

    print(f"wrote {api.rebuild(args.sweep, args.storage)}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:

    for name in args.layer or []:
        if name not in api.LAYERS:
            raise CnnlabError(
                f"--layer {name!r} is not a scratch layer; choose from {', '.join(api.LAYERS)}"
                f"{did_you_mean(name, api.LAYERS)}"
            )
    rows = api.gradcheck(args.layer, args.configs, args.seed)
    cols = ("output", "input grad", "param grads", "finite differences")
    print(
        f"relative errors, float64 (tolerance {api.TOLERANCE_TORCH:g} against PyTorch, {api.TOLERANCE_FD:g} against "
        "finite differences)"
    )
    print(f"{'layer':<22}{'configs':>8}" + "".join(f"{c:>20}" for c in cols) + "  ")
    for r in rows:
        cells = "".join(f"{r[c]:>20.1e}" if c in r else f"{'-':>20}" for c in cols)
        print(f"{r['layer']:<22}{r['configs']:>8}{cells}  {'ok' if r['ok'] else 'FAILED'}")
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_cache(args: argparse.Namespace) -> int:

    if args.action == "clean":
        res = api.clean_cache(args.kind, args.older_than)
        print(json.dumps(res) if args.json else f"removed {res['removed']} cache entries ({res['mb']} MB)")
        return 0
    rows = api.list_cache(args.kind)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'kind':<9} {'key':<24} {'MB':>8} {'age (d)':>8}  holds")
    for r in rows:
        print(f"{r['kind']:<9} {r['key'][:24]:<24} {r['mb']:>8} {r['age_days']:>8}  {r['holds']}")
    print(
        f"{len(rows)} entries, {sum(r['mb'] for r in rows):.1f} MB; clean with: cnnlab cache clean [--kind K] "
        "[--older-than DAYS]"
    )
    return 0


COMMANDS = {
    "cache": cmd_cache,
    "compare": cmd_compare,
    "cv": cmd_cv,
    "data": cmd_data,
    "evaluate": cmd_evaluate,
    "explain": cmd_explain,
    "export": cmd_export,
    "gradcheck": cmd_gradcheck,
    "list": cmd_list,
    "lr-find": cmd_lr_find,
    "predict": cmd_predict,
    "report": cmd_report,
    "serve": cmd_serve,
    "study": cmd_study,
    "sweep": cmd_sweep,
    "sweep-report": cmd_sweep_report,
    "train": cmd_train,
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run is marked interrupted and can be resumed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnnlab` console script; returns the exit code."""
    import signal
    import time

    started = time.time()  # a study's budget counts from here
    args = build_parser().parse_args(argv)
    args.started = started
    _setup_logging(getattr(args, "quiet", False))
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return COMMANDS[args.command](args)
    except CnnlabError as e:
        print(f"cnnlab: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnlab list models | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Terminated:
        print("cnnlab: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
