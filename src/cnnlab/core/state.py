"""The typed state of a folder of runs: the base every workflow's state model derives from
(``cnnlab.runs.group.RunGroup`` reads and writes it), a cross-validation's (cv.json) and a seed
group's (seeds.json), and a sweep's summary (sweep.json); a study's is in ``core/study.py``. Pure data."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

__all__ = [
    "MAX_SEED",
    "MAX_SEEDS",
    "STATE_VERSION",
    "CvFold",
    "CvState",
    "FoldStat",
    "GroupState",
    "SeedRow",
    "SeedsState",
    "Spread",
    "SweepSummary",
]

STATE_VERSION = 1  # the first format version; a model bumps its own VERSION when its file changes shape
MAX_SEED = 2**32 - 1
MAX_SEEDS = 1000  # seeds in one group: a tampered seeds.json cannot start training without end


class GroupState(BaseModel):
    """A group's state file, typed: each workflow's state model (a study's, a CV's, a seed group's)
    derives from it and is the only reader of its file. Fields an older cnnlab wrote and this one
    no longer reads are ignored; fields it did not yet write take their defaults. ``VERSION``: the
    shape this model writes (bumped when a field changes meaning; files with a newer one are refused)."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)
    VERSION: ClassVar[int] = STATE_VERSION

    status: str = "running"
    started: str | None = None
    finished: str | None = None


class CvFold(BaseModel):
    """One fold of a cross-validation: its run(s) (one per seed), its images and its figures (with
    seeds, their mean; ``seed_metrics``: each seed's)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    repeat: int = 1
    fold: int = 1
    images: int = 0
    train_images: int | None = None  # absent in CVs from before the corrected t-test
    metrics: dict[str, float] = Field(default_factory=dict)
    runs: list[str] = Field(default_factory=list)  # empty in CVs from before --seeds: the fold's name
    seed_metrics: dict[str, list[float]] | None = None

    @property
    def run_names(self) -> list[str]:
        return self.runs or [self.name]


class FoldStat(BaseModel):
    """One metric over the folds: mean, standard deviation and 95 % bootstrap interval of the mean."""

    mean: float
    std: float
    ci95: tuple[float, float]


class CvState(GroupState):
    """cv.json: what the CV is (a resume must ask for the same), its folds and, when finished, each
    metric over the folds."""

    status: str = "completed"  # a CV from before cv.json said its status was a finished one
    model: str
    data: str
    seed: int
    split_seed: int | None = None  # CVs before data.split_seed made their folds with train.seed
    folds: int
    repeats: int = 1
    seeds: int = 1
    config: dict[str, Any] = Field(default_factory=dict)
    test_images_held_out: int = 0
    runs: list[CvFold] = Field(default_factory=list)
    summary: dict[str, FoldStat] | None = None
    seed_sd: dict[str, float] = Field(default_factory=dict)  # metric → mean spread over seeds within a fold
    label_audit: dict[str, Any] | None = None

    @property
    def fold_seed(self) -> int:
        """The seed the folds were cut with."""
        return self.seed if self.split_seed is None else self.split_seed


class Spread(BaseModel):
    """One metric over a group's seeds: mean, standard deviation (ddof 1; 0 for one seed), range, values."""

    mean: float
    sd: float
    min: float
    max: float
    values: list[float]


class SeedRow(BaseModel):
    """One seed's run: its seed, folder name, best epoch and test figures."""

    seed: int
    run: str
    best_epoch: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class SeedsState(GroupState):
    """seeds.json: the group's seeds, its config (every field) and the fields of it that were given (so
    that a resumed seed resolves the default recipe exactly as its siblings did), and when finished
    every seed's figures, each metric's spread and the test split they share."""

    seeds: list[StrictInt] = Field(min_length=1, max_length=MAX_SEEDS)
    config: dict[str, Any]
    given: dict[str, Any] | None = None  # absent in groups saved before cnnlab kept it
    runs: list[SeedRow] = Field(default_factory=list)
    summary: dict[str, Spread] | None = None
    test_split: str | None = None
    images: int | None = None

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if any(not 0 <= s <= MAX_SEED for s in v):
            raise ValueError(f"every seed must be a whole number from 0 to {MAX_SEED}")
        if len(set(v)) < len(v):
            raise ValueError("a seed is listed more than once")
        return v


class SweepSummary(BaseModel):
    """sweep.json: what a sweep's report says of it — its objective, budget and progress, every
    trial's row, the best trial, the pace, the parameters' importance and correlation, its spec.
    (A sweep's own state is its Optuna study; this is the summary written from it.)"""

    model_config = ConfigDict(extra="ignore")

    format: Literal["cnnlab-sweep"] = "cnnlab-sweep"
    study: str
    written: str | None = None
    objective: str
    direction: str = "maximize"
    method: str = "random"
    budget: int | None = None
    done: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict)
    running: int = 0
    waiting: int = 0
    best: dict[str, Any] | None = None  # the best completed trial's row
    pace: dict[str, Any] = Field(default_factory=dict)
    importance: dict[str, dict[str, float]] = Field(default_factory=dict)  # method → parameter → importance
    correlation: dict[str, float] = Field(default_factory=dict)
    trials: list[dict[str, Any]] = Field(default_factory=list)  # one row per trial
    spec: dict[str, Any] = Field(default_factory=dict)
