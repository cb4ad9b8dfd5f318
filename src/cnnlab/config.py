"""The one typed config of a run (data, model, optimiser, training, run), filled from YAML and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import CnnlabError
from .registry import did_you_mean


def _registered(value: str, registry: Any) -> str:
    """``value`` when ``registry`` has it, else a ValueError listing what it has."""
    if value not in registry:
        raise ValueError(f"unknown {registry.kind}; choose from {', '.join(registry.names())}"
                         f"{did_you_mean(value, registry.names())}")
    return value


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

    source: str = Field("fashion-mnist", description="built-in dataset name, a folder of class folders, a CSV "
                        "label file, or a shard folder/URL (cnnlab data shard)")
    data_dir: Optional[str] = Field(None, description="where a built-in dataset's files are")
    download: bool = Field(False, description="let torchvision download a built-in dataset")
    input_size: Optional[int] = Field(None, ge=4, le=4096, description="side of the square input")
    channels: Optional[Literal[1, 3]] = Field(None, description="1 or 3; default: the data's own")
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train/val/test fractions for data that is not pre-split"
    )
    val_size: float = Field(
        0.1, gt=0, description="validation carved from a given train split: fraction <1 or count"
    )
    workers: int = Field(2, ge=0, le=64, description="threads that decode image files")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="decode-once cache of file datasets: auto (disk where it fits, else memory), "
        "memory, disk, or none (decode every epoch)"
    )
    max_pixels: int = Field(
        50_000_000, ge=1, description="larger images are downscaled while decoding (JPEG) or skipped"
    )
    image_root: Optional[str] = Field(None, description="folder the paths of a CSV label file are relative to")
    delimiter: Optional[str] = Field(None, description="CSV field delimiter (default: tab for .tsv, else comma)")
    label_sep: str = Field(" ", description="separator of several labels in one CSV cell (multi-label)")
    augment: str = Field("none", description="augmentation preset (see `cnnlab list augmentations`)")
    augment_options: dict[str, Any] = Field(default_factory=dict, description="preset parameter overrides")
    normalize: Literal["auto", "dataset", "model", "per-image", "none"] = Field(
        "auto", description="auto (the pretrained model's mean/std, else the dataset's), dataset, model, "
        "per-image standardisation (seed 004), or none (only /255)"
    )
    train_per_class: Optional[int] = Field(
        None, ge=1, description="keep at most this many training images per class (seeded subsample)"
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

    @field_validator("augment")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from .data.transforms import PRESETS

        return _registered(v, PRESETS)

    @model_validator(mode="after")
    def _known_preset_options(self) -> "DataConfig":
        from .data.transforms import option_problem

        problem = option_problem(self.augment, self.augment_options)
        if problem:
            raise ValueError(problem)
        return self

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

    @field_validator("source")
    @classmethod
    def _source_exists(cls, v: str) -> str:
        from .data.sources import DATASETS

        if not v.strip():
            raise ValueError("empty; give a built-in dataset name or a folder (use '.' for the current folder)")
        if v in DATASETS or v.startswith(("http://", "https://")):  # a URL: shards on a web or object store
            return v
        try:
            if Path(v).exists():
                return v
        except OSError as e:  # a name too long for the file system, ...
            raise ValueError(f"cannot be a path here: {e.strerror}") from None
        raise ValueError(
            f"not a built-in dataset ({', '.join(DATASETS.names())}) and no such file or directory"
        )


class ModelConfig(_Section):
    """Which registered model to build, and its options."""

    name: str = "cnn"
    hidden: Optional[list[int]] = Field(None, description="hidden dense layer sizes")
    dropout: Optional[float] = Field(None, ge=0.0, lt=1.0)
    activation: Optional[Literal["relu", "elu", "tanh", "sigmoid", "prelu", "relu6"]] = None
    init: Optional[Literal["default", "he", "xavier"]] = None
    batch_norm: Optional[bool] = None
    options: dict[str, Any] = Field(default_factory=dict, description="other builder options, e.g. conv_bias")
    pretrained: bool = Field(True, description="load pretrained weights (pretrained models only)")
    weights: Optional[str] = Field(None, description="weights file (safetensors or state dict) to start from")
    freeze: Literal["none", "backbone"] = Field("none", description="backbone: train only the new head")
    unfreeze_last: Optional[int] = Field(None, ge=1, description="also train the top N backbone blocks")
    train_bn_only: bool = Field(False, description="train only BatchNorm layers and the head (seed 000)")
    fine_tune: Optional[tuple[int, int] | Literal["auto"]] = Field(
        None, description="E1,E2: E1 epochs with a frozen backbone (on cached features), then E2 epochs unfrozen; "
        "auto: phase lengths from the data size and train.epochs"
    )
    backbone_lr_mult: Optional[float] = Field(
        None, gt=0, le=1, description="backbone LR = lr × this (default 0.1 when fine-tuning, else 1)"
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from .errors import CnnlabError
        from .models.factory import MODELS, get_spec

        try:
            get_spec(v)
        except CnnlabError:
            raise ValueError(f"unknown model; choose from {', '.join(MODELS.names())}, timm/<name>, tv/<name>"
                             f"{did_you_mean(v, MODELS.names())}") from None
        return v

    @field_validator("fine_tune")
    @classmethod
    def _positive_phases(cls, v: Optional[tuple[int, int] | str]) -> Optional[tuple[int, int] | str]:
        if v is not None and v != "auto" and (v[0] < 1 or v[1] < 1):
            raise ValueError("must be two positive epoch counts E1,E2")
        return v

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (not v or any(h < 1 or h > 1_000_000 for h in v)):
            raise ValueError("must be a non-empty list of layer sizes between 1 and 1,000,000")
        return v

    @model_validator(mode="after")
    def _freeze_needs_trained_weights(self) -> "ModelConfig":
        """Freezing a backbone of random weights trains a head on noise (accuracy 0.21 was seen)."""
        from .models.factory import MODELS, get_spec

        policy = next((f"model.{k}" for k, on in (("freeze", self.freeze == "backbone"), ("fine_tune", self.fine_tune),
                                                   ("unfreeze_last", self.unfreeze_last),
                                                   ("train_bn_only", self.train_bn_only)) if on), None)
        if policy and not self.weights and not (get_spec(self.name).pretrained and self.pretrained):
            pretrained = [n for n in MODELS.names() if MODELS.get(n).pretrained]
            raise ValueError(f"{policy} keeps a backbone's weights, but {self.name!r} "
                             f"{'has no pretrained weights' if self.pretrained else 'is built with --no-pretrained'}: "
                             f"use a pretrained model ({', '.join(pretrained)}, timm/<name>, tv/<name>) or give "
                             "--weights FILE")
        return self

    @model_validator(mode="after")
    def _typed_options(self) -> "ModelConfig":
        from .models.factory import get_spec
        from .options import options_problem

        fields = sorted(set(self.options) & (set(type(self).model_fields) - {"options"}))
        if fields:
            raise ValueError(f"model.options {', '.join(fields)}: set {'these' if len(fields) > 1 else 'it'} with "
                             f"{', '.join('model.' + f for f in fields)} (a flag of its own), where it is checked")
        problem = options_problem(get_spec(self.name).builder, self.options, {"num_classes", "in_chans",
                                  "input_size"}, f"model.options of {self.name!r}")
        if problem:
            raise ValueError(problem)
        return self


class OptimConfig(_Section):
    """Optimiser and its hyper-parameters."""

    name: str = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: Optional[float] = Field(
        None, ge=0, lt=1, description="momentum of sgd (default 0.9) and rmsprop (default 0)"
    )

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        from .train.optim import OPTIMIZERS

        return _registered(v, OPTIMIZERS)


class TrainConfig(_Section):
    """The training loop."""

    engine: str = Field("torch", description="training engine (see `cnnlab list engines`): torch or scratch (NumPy)")
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="0 … 2**32-1 (NumPy's seed range)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast precision: auto = bf16 on a CUDA GPU that has it, else fp32; fp16 adds a "
        "gradient scaler"
    )
    threads: Union[Literal["auto"], int] = Field(
        "auto", description="CPU threads of PyTorch: auto = all this process may use, fewer while other processes "
        "keep cores busy (checked every few seconds); N fixes it (bitwise-equal reruns on any load)"
    )
    monitor: str = Field(
        "val_loss", description="metric that picks best.pt and drives early stopping: val_loss, val_acc "
        "or val_<metric> (macro_f1, balanced_accuracy, weighted_auc, mean_average_precision, ...)"
    )
    log_every: int = Field(50, ge=1, description="steps between rows of steps.csv (per-step curves)")
    patience: Optional[int] = Field(None, ge=1, description="early-stopping patience in epochs")
    min_delta: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "cosine", "onecycle", "plateau", "exp-decay"] = Field(
        "constant", description="learning-rate schedule; left unset for a net trained from scratch by the "
        "torch engine, cnnlab's recipe applies: onecycle peaking at 3e-3 (unless optim.lr is set) over ~1,200 "
        "steps (unless train.epochs is set)"
    )
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs (cosine)")
    step_size: int = Field(10, ge=1, description="epochs between LR drops (step)")
    gamma: float = Field(0.1, gt=0, lt=1, description="LR factor of step and plateau")
    plateau_patience: int = Field(3, ge=1, description="epochs without improvement before plateau cuts the LR")
    decay_start: int = Field(10, ge=0, description="exp-decay: epochs at the initial LR (seed 004: 10)")
    decay_rate: float = Field(0.05, gt=0, description="exp-decay: LR × exp(-rate) per epoch after decay_start")
    feature_cache: bool = Field(
        True, description="with a frozen backbone and no augmentation, compute backbone features once"
    )
    class_weights: Literal["none", "auto"] = Field(
        "none", description="auto: weight class c by n / (k * n_c) in the loss (seed 004)"
    )
    init_output_bias: bool = Field(
        False, description="initialise the output bias so softmax(bias) = class frequencies (seed 004)"
    )

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from .train.engines import ENGINES

        return _registered(v, ENGINES)

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, v: str) -> str:
        from .evaluate.metrics import MONITORABLE

        if v in ("train_loss", "train_acc") or (v.startswith("val_") and v.removeprefix("val_") in MONITORABLE):
            return v
        raise ValueError(f"choose val_<metric> with metric one of {', '.join(MONITORABLE)}, or train_loss/train_acc")

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

    out: Optional[str] = Field(None, description="run folder; default runs/<model>-<data>-<time>")
    report: bool = Field(True, description="write report.html when training ends")
    loggers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="experiment trackers fed each epoch: tensorboard, mlflow, wandb"
    )

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
    def _fine_tune_epochs(self) -> "Config":
        ft = self.model.fine_tune
        if ft is None or ft == "auto":  # auto is resolved with the data (train.build.resolve_fine_tune)
            if ft == "auto" and "epochs" in self.train.model_fields_set and self.train.epochs < 2:
                raise ValueError("model.fine_tune auto needs train.epochs of at least 2 (a frozen and an unfrozen "
                                 "phase)")
            return self
        if "epochs" not in self.train.model_fields_set:
            self.train.epochs = ft[0] + ft[1]
        elif self.train.epochs <= ft[0]:
            raise ValueError(f"train.epochs {self.train.epochs} leaves no epoch after the frozen phase of "
                             f"model.fine_tune {ft[0]},{ft[1]}")
        return self


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def _format_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    # union members show up in the location as tags like "tuple[int, int]": they are not field names
    parts = [str(p) for p in first["loc"] if not isinstance(p, int) and not any(c in str(p) for c in "[']")]
    loc = ".".join(parts) or "config"
    msg = " ".join(first["msg"].removeprefix("Value error, ").split())
    if first["type"] == "extra_forbidden":
        return f"{prefix}unknown config key {loc!r}; known keys: {', '.join(config_keys())}" \
               f"{did_you_mean(loc, config_keys())}"
    value = first.get("input")
    if isinstance(value, dict) and len(parts) <= 1:  # a check across a section's fields: its message names them
        return f"{prefix}{msg}"
    return f"{prefix}invalid value for {loc}: {_short(value)} ({msg})"


def config_keys() -> list[str]:
    """Every settable dotted key, e.g. ``optim.lr``."""
    return [
        f"{section}.{key}"
        for section, field in Config.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]
    ]


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if key not in config_keys():
        raise CnnlabError(f"unknown config key {key!r}; known keys: {', '.join(config_keys())}"
                          f"{did_you_mean(key, config_keys())}")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


MAX_YAML_BYTES = 1 << 20  # a config is a few KB; a megabyte is generous
MAX_YAML_DEPTH = 32


def safe_yaml(text: str, where: str) -> Any:
    """Parse YAML text as plain data, bounded: ``safe_load`` (no tags that build objects), no
    anchors/aliases (a few of them nested make a "billion laughs" bomb), at most
    ``MAX_YAML_BYTES`` and ``MAX_YAML_DEPTH`` levels of nesting.

    Raises:
        CnnlabError: naming ``where`` and what is wrong.
    """
    if len(text) > MAX_YAML_BYTES:
        raise CnnlabError(f"{where} is {len(text):,} characters; a config may have at most {MAX_YAML_BYTES:,}")
    depth = 0
    try:  # the event stream is checked before anything is built (PyYAML's parser is not recursive)
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise CnnlabError(f"{where}: YAML anchors and aliases (&name, *name) are not allowed in a config")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise CnnlabError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CnnlabError(f"{where} is not valid YAML: " + " ".join(str(e).split())) from None


def parse_set(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """Parse ``a.b=value`` strings (values read as YAML scalars/lists) into a flat dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CnnlabError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = safe_yaml(raw, f"{flag} {key.strip()}") if raw.strip() else None
        except CnnlabError:
            out[key.strip()] = raw
    return out


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path`` as plain data (see :func:`safe_yaml`), with one-line errors."""
    p = Path(path)
    try:
        if not p.is_file():
            raise CnnlabError(f"{what} {str(p)!r} not found")
        if p.stat().st_size > MAX_YAML_BYTES:
            raise CnnlabError(f"{what} {str(p)!r} is {p.stat().st_size:,} bytes; at most {MAX_YAML_BYTES:,} allowed")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CnnlabError(f"{what} {str(p)!r} is not UTF-8 text") from None
    except OSError as e:
        raise CnnlabError(f"{what} {str(p)!r} cannot be read: {e.strerror or e}") from None
    if "\x00" in text:
        raise CnnlabError(f"{what} {str(p)!r} is not text (it holds NUL bytes)")
    return safe_yaml(text, f"{what} {str(p)!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a nested dict, with a clear error when it is not one."""
    tree = read_yaml_file(path) or {}
    if not isinstance(tree, dict):
        raise CnnlabError(f"config file {str(path)!r} must hold a mapping of sections (data, model, optim, "
                          f"train, run), not a {type(tree).__name__}")
    return tree


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
            raise CnnlabError(f"{source + ': ' if source else ''}section {k!r} must be a mapping of keys, "
                              f"e.g. '{k}:\\n  key: value', not a {type(v).__name__}")
        tree[k] = dict(v) if isinstance(v, dict) else ({} if v is None else v)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise CnnlabError(_format_error(e, f"{source}: " if source else "")) from None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    from .runs.store import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
