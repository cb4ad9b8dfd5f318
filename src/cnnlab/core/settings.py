"""The settings of the workflows that train many runs, as typed models: each field is written once —
its type, range, default and help — and the command's flags are generated from it (cli/flags.py's
``add_settings_flags``), as the config's are from the schema. Pure data, like the schema."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import DataConfig, TrainConfig, parse_duration

__all__ = [
    "config_default",
    "CvSettings",
    "LrFindSettings",
    "Settings",
    "StudySettings",
    "SweepSettings",
    "parse_budget",
]


def parse_budget(text: Any) -> float:
    """``90s``, ``20m``, ``1.5h`` or plain seconds → seconds, between 10 seconds and 7 days."""
    try:
        value = parse_duration(str(text).strip().lower())
    except ValueError:
        raise ValueError("give a duration like 90s, 20m or 1.5h") from None
    if not 10 <= value <= 7 * 24 * 3600:
        raise ValueError("give between 10 seconds and 7 days")
    return value


def config_default(section: type[BaseModel], name: str) -> Any:
    """A config field's default, so that a workflow's setting that is one never restates it."""
    return section.model_fields[name].get_default(call_default_factory=True)


class Settings(BaseModel):
    """What every workflow's settings share: frozen, no unknown field, strict types (no True for a
    seed, no 2.5 for a count), no empty text, one-line errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @field_validator("*")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("empty; leave it out for its default")
        return v

    @classmethod
    def of(cls, **given: Any) -> Self:
        """The settings from the values given (None: not given, the default applies); a bad value is
        one line naming its flag.

        Raises:
            CnnlabError: a value out of range, of the wrong type, or settings that contradict each other.
        """
        try:
            return cls(**{k: v for k, v in given.items() if v is not None})
        except ValidationError as e:
            err = e.errors()[0]
            msg = str(err["msg"]).removeprefix("Value error, ")
            if not err["loc"]:  # settings that contradict each other: the message names the flags
                raise CnnlabError(msg) from None
            name = str(err["loc"][0])
            if name not in cls.model_fields:
                raise CnnlabError(
                    f"{cls.__name__} has no setting {name!r}; it has {', '.join(cls.model_fields)}"
                ) from None
            if msg.startswith("empty;"):
                raise CnnlabError(f"{cls.flag(name)} is empty; leave it out for its default") from None
            value = f" {given[name]!r}" if name in given else ""
            raise CnnlabError(f"{cls.flag(name)}{value}: {msg}") from None

    @classmethod
    def flag(cls, name: str) -> str:
        """How the command line spells field ``name``."""
        extra = cls.model_fields[name].json_schema_extra or {}
        return str(extra.get("flag") or "--" + name.replace("_", "-")) if isinstance(extra, dict) else name

    def given(self) -> dict[str, Any]:
        """The fields that were given (not left to their defaults)."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class StudySettings(Settings):
    """`cnnlab study`: what to study, within which budget, and how."""

    data: str | None = Field(
        None,
        description="a folder of class folders, a CSV label file or a dataset name (not needed with --resume)",
        json_schema_extra={"flag": "DATA", "metavar": "DATA"},
    )
    budget: float = Field(
        1200.0,
        description="wall-clock budget of the whole study: 90s, 20m, 1.5h, kept within 10 %",
        json_schema_extra={"metavar": "T", "shown": "20m"},
    )
    models: str | None = Field(
        None,
        description="candidates instead of the automatic pick, comma-separated: model names, a pretrained one "
        "with :frozen or :fine-tune (e.g. mlp,cnn,efficientnet-lite0:fine-tune)",
        json_schema_extra={"metavar": "LIST"},
    )
    folds: int | None = Field(
        None,
        description="cross-validate with K folds when the budget allows (default: 5 or 3 folds when every "
        "candidate's full recipe fits, else one split)",
        json_schema_extra={"metavar": "K"},
    )
    tune: bool = Field(
        True,
        description="one recipe per candidate: no search (by default every candidate gets the same share of the "
        "budget to search its learning rate and weight decay on the validation split first)",
        json_schema_extra={"flag": "--no-tune"},
    )
    fractions: str | None = Field(
        None,
        description="learning curves: also train each candidate on these shares of the training split (e.g. "
        "0.1,0.25,0.5,1; same validation and test images), fit a power law per candidate and say where the curves "
        "cross and what twice the data is predicted to give (one split, no folds)",
        json_schema_extra={"metavar": "LIST"},
    )
    audit_labels: bool = Field(
        False,
        description="with --folds: rank the images whose label the best candidate's out-of-fold models doubt "
        "(cleanlab; label_audit.csv and a page in its CV folder, a section in the report)",
    )
    group_by: str | None = Field(
        None,
        description="keep the images a regular expression on their paths groups (its first group) inside one "
        "split and one fold (a CSV's group column does this by itself)",
        json_schema_extra={"metavar": "REGEX"},
    )
    on_leak: Literal["off", "warn", "drop", "refuse"] = Field(
        config_default(DataConfig, "on_leak"),
        description="validation/test images that copy training images: warn (the test figure without them "
        "beside the raw one), drop them, refuse, or off",
    )
    out: str | None = Field(
        None, description="study folder (default studies/<data name>)", json_schema_extra={"metavar": "DIR"}
    )
    resume: bool = Field(False, description="finish the study in --out: finished candidates are kept")
    seed: int = Field(
        config_default(TrainConfig, "seed"),
        ge=0,
        description="seed of the candidates' training (the split and folds use data.split_seed, 0)",
        json_schema_extra={"metavar": "S"},
    )
    seeds: int = Field(
        1,
        ge=1,
        description="train every candidate (every fold) from N initialisations on the same split: rank by the "
        "mean, show each gap beside the spread over seeds and test it with that spread",
        json_schema_extra={"metavar": "N"},
    )
    batch_size: int = Field(
        config_default(TrainConfig, "batch_size"), ge=1, description="batch size", json_schema_extra={"metavar": "N"}
    )
    device: str = Field(
        config_default(TrainConfig, "device"),
        description="auto, cpu, cuda, cuda:N, mps",
        json_schema_extra={"metavar": "DEV"},
    )
    data_dir: str | None = Field(
        None, description="where a built-in dataset's files are", json_schema_extra={"metavar": "DIR"}
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_budget(v)

    @field_validator("folds")
    @classmethod
    def _two_folds(cls, v: int | None) -> int | None:
        if v is not None and v < 2:
            raise ValueError("needs at least 2 (leave it out to let the budget decide)")
        return v

    @field_validator("fractions", mode="before")
    @classmethod
    def _some_shares(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():  # what an empty list of shares needs, before "empty"
            raise ValueError("give shares of the training split, e.g. 0.1,0.25,0.5,1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudySettings:
        if not self.data and not (self.resume and self.out):
            raise ValueError("cnnlab study needs DATA (or --resume --out DIR of a study)")
        if self.resume:
            return self
        if self.fractions is not None and self.folds:
            raise ValueError("--fractions with --folds: learning curves use one split; leave one of them out")
        if self.audit_labels and not self.folds:
            raise ValueError("--audit-labels needs --folds K: the audit reads out-of-fold predictions")
        return self

    @property
    def data_options(self) -> dict[str, Any]:
        """``data.group_by`` and ``data.on_leak`` for the study's split, folds and candidates, as given."""
        return {k: getattr(self, k) for k in ("group_by", "on_leak") if k in self.model_fields_set}


class CvSettings(Settings):
    """`cnnlab cv`: how many folds and repeats, where, and what each fold adds (the model, data and
    recipe are the config's)."""

    folds: int = Field(5, description="folds", json_schema_extra={"metavar": "K"})
    repeats: int = Field(1, ge=1, description="repeats with other folds", json_schema_extra={"metavar": "R"})
    seeds: int = Field(
        1,
        ge=1,
        description="train each fold from N initialisations (--seed, +1 …); a fold scores their mean, and the "
        "summary adds the spread over seeds",
        json_schema_extra={"metavar": "N"},
    )
    audit_labels: bool = Field(
        False,
        description="rank the images whose given label the out-of-fold models doubt (cleanlab): label_audit.csv, "
        "label_issues.csv (retrain without them with --exclude) and label_audit.html in the CV folder",
    )
    out: str | None = Field(
        None, description="CV folder (default cv/<model>-<data>)", json_schema_extra={"metavar": "DIR"}
    )
    resume: bool = Field(False, description="finish an interrupted CV; finished folds are kept")

    @field_validator("folds")
    @classmethod
    def _two_folds(cls, v: int) -> int:
        if v < 2:
            raise ValueError("cv needs --folds of at least 2")
        return v


class SweepSettings(Settings):
    """`cnnlab sweep`: which spec, where, on how many workers and which storage (the space, budget,
    sampler and pruner are the spec's)."""

    spec: str | None = Field(
        None,
        description="the sweep spec (not needed with --resume)",
        json_schema_extra={"flag": "SPEC", "metavar": "SPEC.yaml"},
    )
    out: str | None = Field(
        None, description="sweep folder (default sweeps/<spec name>)", json_schema_extra={"metavar": "DIR"}
    )
    workers: int = Field(
        1,
        ge=1,
        description="local worker processes; the cores are shared among them",
        json_schema_extra={"metavar": "N"},
    )
    storage: str | None = Field(
        None,
        description="an Optuna RDB URL (postgresql://user:pass@host/db) to share one study between machines; "
        "default: a journal file in the sweep folder",
        json_schema_extra={"metavar": "URL"},
    )
    resume: bool = Field(
        False, description="continue the sweep in --out: finished trials are kept, dead ones retried once"
    )

    @model_validator(mode="after")
    def _spec_or_folder(self) -> SweepSettings:
        if not self.spec and not (self.resume and self.out):
            raise ValueError("cnnlab sweep needs SPEC.yaml (or --resume --out DIR of a sweep)")
        return self


class LrFindSettings(Settings):
    """`cnnlab lr-find`: the range of learning rates, the batches tried and where the files go."""

    out: str = Field(
        "lr_find", description="folder for lr_find.csv and lr_find.png", json_schema_extra={"metavar": "DIR"}
    )
    start_lr: float = Field(1e-7, gt=0, description="the first learning rate", json_schema_extra={"metavar": "LR"})
    end_lr: float = Field(10.0, gt=0, description="the last learning rate", json_schema_extra={"metavar": "LR"})
    steps: int = Field(100, ge=1, description="batches to try", json_schema_extra={"metavar": "N"})

    @model_validator(mode="after")
    def _rising(self) -> LrFindSettings:
        if self.start_lr >= self.end_lr:
            raise ValueError(f"--start-lr {self.start_lr:g} must be below --end-lr {self.end_lr:g}")
        return self
