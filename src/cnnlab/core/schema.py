"""The schema of a run's config (data, model, optimiser, training, run): types, ranges, closed
choices and cross-field rules, filled from YAML and flags. Pure: it asks no registry and no file
system, so a saved config is read with it alone; ``cnnlab.workflows.resolve`` checks a new config
against the registries and the disk."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.monitor import monitorable
from cnnlab.core.names import Activation, EngineName, Init, Logger, Schedule
from cnnlab.core.patterns import PatternError, user_pattern
from cnnlab.core.registry import did_you_mean


def no_bool_as_number(model: type[BaseModel], v: Any, info: Any) -> Any:
    """``true`` is not a batch size: pydantic's lax mode would read it as 1 (a field validator
    shared by the config sections and the sweep spec)."""
    annotation = str(model.model_fields[info.field_name].annotation)
    if isinstance(v, bool) and ("int" in annotation or "float" in annotation) and "bool" not in annotation:
        raise ValueError("expected a number, not true/false")
    return v


class _Section(BaseModel):
    # NaN and infinity are meaningless for every field (a NaN weight decay used to train to a NaN loss)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    _no_bool_as_number = field_validator("*", mode="before")(classmethod(no_bool_as_number))


class DataConfig(_Section):
    """Where the images come from and how they are prepared."""

    source: str = Field(
        "fashion-mnist",
        description="built-in dataset name, a folder of class folders, a CSV "
        "label file, or a shard folder/URL (cnnlab data shard)",
    )
    data_dir: str | None = Field(None, description="where a built-in dataset's files are")
    download: bool = Field(False, description="let torchvision download a built-in dataset")
    input_size: int | None = Field(None, ge=4, le=4096, description="side of the square input")
    channels: Literal[1, 3] | None = Field(None, description="1 or 3; default: the data's own")
    split_seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="seed of the train/val/test split and of CV folds, apart from "
        "train.seed: runs that differ only in --seed are scored on the same test images",
    )
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train/val/test fractions for data that is not pre-split"
    )
    val_size: float = Field(0.1, gt=0, description="validation carved from a given train split: fraction <1 or count")
    workers: int = Field(2, ge=0, le=64, description="threads that decode image files")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto",
        description="decode-once cache of file datasets: auto (disk where it fits, else memory), "
        "memory, disk, or none (decode every epoch)",
    )
    max_pixels: int = Field(
        50_000_000, ge=1, description="larger images are downscaled while decoding (JPEG) or skipped"
    )
    image_root: str | None = Field(None, description="folder the paths of a CSV label file are relative to")
    delimiter: str | None = Field(None, description="CSV field delimiter (default: tab for .tsv, else comma)")
    label_sep: str = Field(" ", description="separator of several labels in one CSV cell (multi-label)")
    augment: str = Field("none", description="augmentation preset (see `cnnlab list augmentations`)")
    augment_options: dict[str, Any] = Field(default_factory=dict, description="preset parameter overrides")
    normalize: Literal["auto", "dataset", "model", "per-image", "none"] = Field(
        "auto",
        description="auto (the pretrained model's mean/std, else the dataset's), dataset, model, "
        "per-image standardisation (seed 004), or none (only /255)",
    )
    train_per_class: int | None = Field(
        None, ge=1, description="keep at most this many training images per class (seeded subsample)"
    )
    train_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="keep this share of the training split (per class; the same validation and test images; "
        "smaller shares are subsets of larger ones)",
    )
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing (timm)")
    mixup: float = Field(0.0, ge=0, description="mixup alpha (timm); 0 disables")
    cutmix: float = Field(0.0, ge=0, description="cutmix alpha (timm); 0 disables")
    drop_empty_classes: bool = Field(
        False, description="drop classes left without usable images instead of refusing the data"
    )
    sampler: Literal["random", "balanced"] = Field(
        "random", description="random shuffling, or class-balanced sampling with replacement"
    )
    group_by: str | None = Field(
        None,
        description="regular expression on file paths whose first group (or whole match) names an image's "
        "group (same scene, painting, patient): a group stays inside one split and one CV fold; a CSV's "
        "group column does the same",
    )
    on_leak: Literal["off", "warn", "drop", "refuse"] = Field(
        "warn",
        description="near-duplicate copies of training images in val/test (file data): off (do not look), "
        "warn, drop them from val/test, or refuse to train",
    )
    exclude: str | None = Field(
        None,
        description="a CSV whose path or index column names images to leave out of training and validation "
        "(e.g. the label_issues.csv of cnnlab cv --audit-labels); the test split keeps them",
    )
    leak_hash_bits: int = Field(
        14, ge=0, le=64, description="near duplicates: most differing perceptual-hash bits (of 64) for a candidate"
    )
    leak_similarity: float = Field(
        0.99, ge=0, le=1, description="near duplicates: least pixel correlation that confirms a candidate"
    )

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty; give a built-in dataset name or a folder (use '.' for the current folder)")
        return v

    @field_validator("group_by")
    @classmethod
    def _group_by_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            if not v:  # an empty pattern matches every path at its start: one group, never what is meant
                raise ValueError("empty; give a regular expression, e.g. '^([^_]+)_' groups files by their prefix")
            try:
                user_pattern(v)
            except PatternError as e:
                raise ValueError(f"not a regular expression RE2 accepts ({e}; no look-around or back-references); "
                                 "e.g. '^([^_]+)_' groups files by their prefix") from None  # fmt: skip
        return v

    @field_validator("split", mode="before")
    @classmethod
    def _three_fractions(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and len(v) != 3:
            raise ValueError(f"needs three fractions train,val,test (e.g. 0.8,0.1,0.1), got {len(v)}")
        return v

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6 or v[0] <= 0:
            raise ValueError("must be three fractions train,val,test, train > 0, summing to 1")
        return v


class ModelConfig(_Section):
    """Which registered model to build, and its options."""

    name: str = Field("cnn-bn", description="model name (see `cnnlab list models`), timm/<name> or tv/<name>")
    hidden: list[int] | None = Field(None, description="hidden dense layer sizes")
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="dropout rate of the dense head (default: the model's)"
    )
    activation: Activation | None = Field(None, description="activation of models that vary it (default: the model's)")
    init: Init | None = Field(None, description="weight initialisation")
    batch_norm: bool | None = Field(None, description="batch normalisation on/off (models that vary it)")
    options: dict[str, Any] = Field(default_factory=dict, description="other builder options, e.g. conv_bias")
    pretrained: bool = Field(True, description="load pretrained weights (pretrained models only)")
    weights: str | None = Field(None, description="weights file (safetensors or state dict) to start from")
    freeze: Literal["none", "backbone"] = Field("none", description="backbone: train only the new head")
    unfreeze_last: int | None = Field(None, ge=1, description="also train the top N backbone blocks")
    train_bn_only: bool = Field(False, description="train only BatchNorm layers and the head (seed 000)")
    fine_tune: tuple[int, int] | Literal["auto"] | None = Field(
        None,
        description="E1,E2: E1 epochs with a frozen backbone (on cached features), then E2 epochs unfrozen; "
        "auto: phase lengths from the data size and train.epochs",
    )
    backbone_lr_mult: float | None = Field(
        None, gt=0, le=1, description="backbone LR = lr × this (default 0.1 when fine-tuning, else 1)"
    )

    @field_validator("fine_tune")
    @classmethod
    def _positive_phases(cls, v: tuple[int, int] | str | None) -> tuple[int, int] | str | None:
        if isinstance(v, tuple) and (v[0] < 1 or v[1] < 1):
            raise ValueError("must be two positive epoch counts E1,E2")
        return v

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(h < 1 or h > 1_000_000 for h in v)):
            raise ValueError("must be a non-empty list of layer sizes between 1 and 1,000,000")
        return v


class OptimConfig(_Section):
    """Optimiser and its hyper-parameters."""

    name: str = Field("adam", description="optimizer: adam, adamw, sgd or rmsprop")
    lr: float = Field(1e-3, gt=0, le=10, description="learning rate (the peak of the default one-cycle recipe is 3e-3)")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    momentum: float | None = Field(
        None, ge=0, lt=1, description="momentum of sgd (default 0.9) and rmsprop (default 0)"
    )


MAX_EPOCHS = 100_000


def parse_duration(value: Any) -> float:
    """Seconds from a number or '90s' / '20m' / '1.5h'."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or e.g. 20m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration (e.g. 90s, 20m, 1.5h)")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not 0 < seconds < 10 * 365 * 86400:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


class TrainConfig(_Section):
    """The training loop."""

    engine: EngineName = Field("torch", description="training engine (see `cnnlab list engines`): torch or scratch")
    epochs: int = Field(
        10,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs (the default recipe of a net trained from "
        "scratch plans ~1,200 steps or the net's own length, 2-30 epochs); with --resume: the new total",
    )
    batch_size: int = Field(
        128,
        ge=1,
        le=65_536,
        description="images per batch; auto: on a GPU the largest power of two whose step "
        "fits with 20 % memory headroom (a CPU keeps 128)",
    )
    auto_batch: bool = Field(False, description="set by train.batch_size auto; a resolved run keeps the batch it found")
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="seed of the initialisation, shuffling and augmentation (the split has its own, "
        "data.split_seed): 0 … 2**32-1",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="autocast precision: auto = bf16 on a CUDA GPU that has it, else fp32; fp16 adds a gradient scaler",
    )
    threads: Literal["auto"] | int = Field(
        "auto",
        description="CPU threads of PyTorch: auto = all this process may use, fewer while other processes "
        "keep cores busy (checked every few seconds); N fixes it (bitwise-equal reruns on any load)",
    )
    monitor: str = Field(
        "val_loss",
        description="metric that picks best.pt and drives early stopping: val_loss, val_acc "
        "or val_<metric> (macro_f1, balanced_accuracy, weighted_auc, mean_average_precision, ...)",
    )
    log_every: int = Field(50, ge=1, description="steps between rows of steps.csv (per-step curves)")
    patience: int | None = Field(None, ge=1, description="early-stopping patience in epochs")
    min_delta: float = Field(0.0, ge=0, description="smallest change of the monitored metric that counts")
    schedule: Schedule = Field(
        "constant",
        description="learning-rate schedule; left unset for a net trained from scratch by the "
        "torch engine, cnnlab's recipe applies: onecycle peaking at 3e-3 (unless optim.lr is set) over ~1,200 "
        "steps or the net's measured length (unless train.epochs is set)",
    )
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs (cosine)")
    step_size: int = Field(10, ge=1, description="epochs between LR drops (step)")
    gamma: float = Field(0.1, gt=0, lt=1, description="LR factor of step and plateau")
    plateau_patience: int = Field(3, ge=1, description="epochs without improvement before plateau cuts the LR")
    decay_start: int = Field(10, ge=0, description="exp-decay: epochs at the initial LR (seed 004: 10)")
    decay_rate: float = Field(0.05, gt=0, description="exp-decay: LR × exp(-rate) per epoch after decay_start")
    decay_steps: int = Field(
        1000, ge=1, description="exponential (Keras' ExponentialDecay): steps over which the LR is multiplied once"
    )
    decay_multiplier: float = Field(
        0.96, gt=0, description="exponential: LR × multiplier^(step / decay_steps) (Keras' decay_rate)"
    )
    staircase: bool = Field(False, description="exponential: whole decay periods only, floor(step / decay_steps)")
    feature_cache: bool = Field(
        True, description="with a frozen backbone and no augmentation, compute backbone features once"
    )
    class_weights: Literal["none", "auto"] = Field(
        "none", description="auto: weight class c by n / (k * n_c) in the loss (seed 004)"
    )
    init_output_bias: bool = Field(
        False, description="initialise the output bias so softmax(bias) = class frequencies (seed 004)"
    )

    steps: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="train for this many optimisation steps instead of epochs, validating every "
        "train.eval_every steps (seed 001); each history row is one such period",
    )
    eval_every: int | None = Field(
        None, ge=1, description="with train.steps: steps between validations (default 100, or steps if fewer)"
    )
    evals_per_epoch: int = Field(
        1,
        ge=1,
        le=100,
        description="validations per epoch (Lightning's val_check_interval): K > 1 trains by steps, each "
        "epoch split into K periods that are validated, checkpointed and (in a sweep) pruning rungs; "
        "options counted in epochs (patience, warm-up, step size, decay start) then count periods",
    )
    micro_batch: int | None = Field(
        None,
        ge=1,
        le=65_536,
        description="images per forward/backward pass, gradients summed over a batch (the same step); "
        "default: as many as fit ~1.5 GB of activations, where BatchNorm statistics are kept "
        "(fine-tuning) or absent",
    )

    accumulate: int = Field(
        1,
        ge=1,
        le=1024,
        description="gradient accumulation: N batches of train.batch_size per optimizer step (the step of "
        "one N-times larger batch; BatchNorm normalises each pass); epochs and the recipe count those steps",
    )
    clip_grad: float | None = Field(
        None, gt=0, description="clip the gradients' global L2 norm to this before each optimizer step"
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="single-label training targets (1 - e) one-hot + e / K (timm, Keras); validation "
        "loss stays plain cross-entropy",
    )
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights with this decay after every step "
        "(timm --model-ema, Ultralytics, Keras use_ema; e.g. 0.999): validation, best.pt, evaluate, export and "
        "serve use the average",
    )
    ema_warmup: bool = Field(
        True,
        description="with train.ema: update t decays by min(ema, (1 + t) / (10 + t)) (TensorFlow's), so the "
        "first steps' weights fade within tens of steps",
    )
    time: float | None = Field(
        None,
        gt=0,
        description="wall-clock budget for training in seconds (--time 20m): stops at the last epoch (or "
        "validation period) end that fits, keeps the best checkpoint, and evaluates as usual; a one-cycle "
        "schedule is re-planned to end there (judged again after every epoch)",
    )

    calibrate: Literal["none", "temperature"] = Field(
        "none",
        description="temperature: after training, fit a temperature T on the validation split (logits / T, "
        "the classes unchanged) and report ECE before/after; T goes with the run into predict, serve and export",
    )

    @model_validator(mode="before")
    @classmethod
    def _batch_size_auto(cls, data: Any) -> Any:
        """``batch_size: auto`` is ``auto_batch: true`` with the default batch until a GPU's is found."""
        if isinstance(data, dict) and str(data.get("batch_size", "")).strip() == "auto":
            data = {k: v for k, v in data.items() if k != "batch_size"} | {"auto_batch": True}
        return data

    @property
    def step_batch(self) -> int:
        """Images per optimizer step: the batch times ``accumulate``."""
        return self.batch_size * self.accumulate

    @model_validator(mode="after")
    def _steps_as_periods(self) -> TrainConfig:
        """``steps`` of training become ``steps / eval_every`` periods: the loop's epochs."""
        if self.steps is None:
            if self.eval_every is not None:
                raise ValueError("train.eval_every needs train.steps (--steps N --eval-every K)")
            return self
        if self.evals_per_epoch > 1:
            raise ValueError(
                "train.evals_per_epoch splits epochs; with train.steps give train.eval_every (--eval-every) instead"
            )
        every = self.eval_every or min(100, self.steps)
        if self.steps % every:
            raise ValueError(f"train.steps {self.steps} must be a multiple of train.eval_every {every}")
        periods = self.steps // every
        if periods > MAX_EPOCHS:  # the periods are the loop's epochs
            raise ValueError(f"train.steps / train.eval_every is {periods:,} validations; at most {MAX_EPOCHS:,}")
        if "epochs" in self.model_fields_set and self.epochs != periods:
            raise ValueError("give train.steps or train.epochs, not both (--steps counts optimisation steps)")
        self.__dict__.update(epochs=periods, eval_every=every)  # not through assignment (it re-validates)
        self.model_fields_set.update({"epochs", "eval_every"})
        return self

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, v: str) -> str:
        if v in ("train_loss", "train_acc") or (v.startswith("val_") and v.removeprefix("val_") in monitorable()):
            return v
        raise ValueError(f"choose val_<metric> with metric one of {', '.join(monitorable())}, or train_loss/train_acc")

    @model_validator(mode="after")
    def _accumulate_or_micro_batch(self) -> TrainConfig:
        if self.accumulate > 1 and self.micro_batch is not None:
            raise ValueError(
                "give train.accumulate (N batches a step) or train.micro_batch (a batch in slices), not both"
            )
        return self

    @field_validator("time", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024):
            raise ValueError("must be auto or a number of threads from 1 to 1024")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        base, _, index = v.partition(":")
        if base not in {"auto", "cpu", "cuda", "mps"} or (":" in v and (base != "cuda" or not index.isdigit())):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v


class RunConfig(_Section):
    """Where the run folder goes."""

    out: str | None = Field(None, description="run folder; default runs/<model>-<data>-<time>")
    report: bool = Field(True, description="write report.html when training ends")
    loggers: list[Logger] = Field(
        default_factory=list,
        description="experiment trackers fed each epoch and, once evaluated, the test figures, per-class F1, "
        "the confusion matrix, metrics.json and the report: tensorboard, mlflow, wandb",
    )
    log_checkpoint: bool = Field(False, description="the trackers also keep the best checkpoint as an artifact")

    @field_validator("loggers")
    @classmethod
    def _unique_loggers(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class Config(_Section):
    """Everything one training run needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _fine_tune_epochs(self) -> Config:
        ft = self.model.fine_tune
        if ft is not None and (self.train.steps is not None or self.train.evals_per_epoch > 1):
            what = "train.steps" if self.train.steps is not None else "train.evals_per_epoch"
            raise ValueError(f"{what} with model.fine_tune: fine-tuning phases are counted in epochs; use epochs")
        if ft is None or ft == "auto":  # auto is resolved with the data (train.build.resolve_fine_tune)
            if ft == "auto" and "epochs" in self.train.model_fields_set and self.train.epochs < 2:
                raise ValueError(
                    "model.fine_tune auto needs train.epochs of at least 2 (a frozen and an unfrozen phase)"
                )
            return self
        if "epochs" not in self.train.model_fields_set:
            self.train.epochs = ft[0] + ft[1]
        elif self.train.epochs <= ft[0]:
            raise ValueError(
                f"train.epochs {self.train.epochs} leaves no epoch after the frozen phase of "
                f"model.fine_tune {ft[0]},{ft[1]}"
            )
        return self


def short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def _format_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    # union members show up in the location as tags like "tuple[int, int]": they are not field names
    parts = [str(p) for p in first["loc"] if not isinstance(p, int) and not any(c in str(p) for c in "[']")]
    loc = ".".join(parts) or "config"
    msg = " ".join(first["msg"].removeprefix("Value error, ").split())
    if first["type"] == "extra_forbidden":
        return (
            f"{prefix}unknown config key {loc!r}; known keys: {', '.join(config_keys())}"
            f"{did_you_mean(loc, config_keys())}"
        )
    value = first.get("input")
    if isinstance(value, dict) and len(parts) <= 1:  # a check across a section's fields: its message names them
        return f"{prefix}{msg}"
    return f"{prefix}invalid value for {loc}: {short_repr(value)} ({msg})"


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config tree (``model_dump``) as dotted keys: ``{"optim.lr": 0.001, ...}``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def nest_config(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as a config tree (flatten_config's inverse); unknown keys are refused."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        _set_dotted(tree, key, value)
    return tree


def config_keys() -> list[str]:
    """Every settable dotted key, e.g. ``optim.lr``."""
    return [
        f"{section}.{key}"
        for section, field in Config.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]  # a section's annotation is its model class
    ]


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if key not in config_keys():
        raise CnnlabError(
            f"unknown config key {key!r}; known keys: {', '.join(config_keys())}{did_you_mean(key, config_keys())}"
        )
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def build_config(
    base: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    source: str = "",
) -> Config:
    """Build a validated Config from a nested dict plus flat dotted overrides.

    Args:
        base: nested dict (from YAML or a saved run), may be partial.
        overrides: flat ``{"optim.lr": 0.01}`` values applied on top, in order.
        source: where ``base`` came from, named in error messages.

    Raises:
        CnnlabError: naming the field, the value and what is allowed.
    """
    if base is not None and not isinstance(base, dict):
        raise CnnlabError(f"{source or 'config'}: must be a mapping of sections, not a {type(base).__name__}")
    tree: dict[str, Any] = {}
    for k, v in (base or {}).items():
        if k in Config.model_fields and not isinstance(v, (dict, type(None))):
            raise CnnlabError(
                f"{source + ': ' if source else ''}section {k!r} must be a mapping of keys, "
                f"e.g. '{k}:\\n  key: value', not a {type(v).__name__}"
            )
        tree[k] = dict(v) if isinstance(v, dict) else ({} if v is None else v)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise CnnlabError(_format_error(e, f"{source}: " if source else "")) from None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    atomic_write_text(Path(path), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
