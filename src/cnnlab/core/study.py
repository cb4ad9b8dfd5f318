"""A study's state, typed: what was asked (its :class:`StudySettings`), what the data is, its
candidates, the plan and its progress, and when finished its summary — study.json, read and written
only through :class:`StudyState` (``cnnlab.workflows.study.state.Study`` holds it). Files an older
cnnlab wrote (format version 1, the settings as flat keys) load. Pure data and arithmetic."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cnnlab.core.settings import StudySettings
from cnnlab.core.state import GroupState

__all__ = ["Candidate", "StudyState", "StudySummary", "Timing", "cheaper_tie"]

RUN_OVERHEAD_S = 1.5  # opening a run, evaluating the test split, checkpoints: measured 1-2 s for digits on 2 cores


@dataclasses.dataclass
class Candidate:
    """One model of the study, trained from scratch, on a frozen pretrained backbone or fine-tuned."""

    name: str  # unique in the study: its folder name
    model: str
    mode: str = "scratch"
    input_size: int | None = None  # the side it is probed and trained at (None: studies before it was set)
    batch_size: int | None = None  # the batch it is probed and trained with (None: the study's)
    full_epochs: int = 10  # what its recipe would train without a budget
    min_epochs: int = 1
    epochs: int = 0  # planned
    # measured by the probe: seconds per training image (forward, backward, step) and per evaluated image
    train_s: float = 0.0
    eval_s: float = 0.0
    status: str = "planned"  # planned, running, done, dropped
    why: str = ""
    # equal effort: the search before its final training (seconds: its share; trials: planned, 0 = none)
    search_seconds: float = 0.0
    search_trials: int = 0
    search_epochs: int = 0
    search: dict[str, Any] | None = None  # what the search found: default and tuned validation figures
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # the tuned values its final run uses

    def overrides(self, epochs: int | None = None) -> dict[str, Any]:
        """Config keys of this candidate (beyond the study's shared ones)."""
        e = epochs or self.epochs
        o: dict[str, Any] = {"model.name": self.model, "train.epochs": e, **self.params}
        if self.input_size:
            o["data.input_size"] = self.input_size
        if self.batch_size:
            o["train.batch_size"] = self.batch_size
        if self.mode == "frozen":
            o["model.freeze"] = "backbone"
        elif self.mode == "fine-tune":
            tuned = max(1, round(e / 3))
            o["model.fine_tune"] = [e - tuned, tuned]
        return o

    def cost(self, epochs: int, n_train: int, n_val: int, n_test: int, features: bool | None = None) -> float:
        """Predicted seconds of one run of ``epochs`` epochs (training, validation, test, overhead);
        ``features=False``: a pretrained net's backbone features are already in the cache (by
        default: when its search has run, which extracted them)."""
        evals = n_val * epochs + n_test
        features = not self.search_trials if features is None else features
        extract = n_test * self.eval_s + (self.feature_cost(n_train, n_val) if features else 0.0)
        if self.mode == "frozen":  # features once, then a linear head on them: ~0.05 s an epoch for 1,000 images
            return extract + epochs * (0.03 + n_train * 2e-5) + RUN_OVERHEAD_S
        if self.mode == "fine-tune":
            tuned = max(1, round(epochs / 3))
            return extract + tuned * n_train * self.train_s + evals * self.eval_s + epochs * 0.2 + RUN_OVERHEAD_S
        return epochs * (n_train * self.train_s + 0.1) + evals * self.eval_s + RUN_OVERHEAD_S

    def feature_cost(self, n_train: int, n_val: int) -> float:
        """Seconds to extract a pretrained net's backbone features of the train and val images
        (what its search's first trial does, and its final run then reads from the cache)."""
        return (n_train + n_val) * self.eval_s if self.mode != "scratch" else 0.0

    def search_extra(self, trials: int, epochs: int, n_train: int, n_val: int) -> float:
        """What a search of ``trials`` runs of ``epochs`` epochs adds to the study (no test split):
        its trials on features already extracted."""
        return max(0, trials) * self.cost(epochs, n_train, n_val, 0, features=False)

    def search_cost(self, trials: int, epochs: int, n_train: int, n_val: int) -> float:
        """Predicted seconds of that search: its trials, and the features its first trial extracts."""
        if trials <= 0:
            return 0.0
        return self.search_extra(trials, epochs, n_train, n_val) + self.feature_cost(n_train, n_val)

    def ran_as(self, best_epoch: float | None) -> str:
        """What its chosen checkpoint is: its mode, but "frozen" for a fine-tune candidate whose best
        epoch came before its backbone was unfrozen (a frozen backbone's head)."""
        if self.mode != "fine-tune" or not best_epoch:
            return self.mode
        return "frozen" if best_epoch <= self.overrides()["model.fine_tune"][0] else self.mode

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# version 1 kept the settings as flat keys of its own names: setting → that key
V1_KEYS = {"data": "data", "data_dir": "data_dir", "budget": "budget_seconds", "models": "models_requested",
           "folds": "folds_requested", "seed": "seed", "seeds": "seeds", "batch_size": "batch_size",
           "device": "device", "tune": "tune", "fractions": "fractions_requested",
           "audit_labels": "audit_labels"}  # fmt: skip


class StudySummary(BaseModel):
    """What a finished study found: the ranked rows (one per candidate: its figures, selection and
    search), the paired tests of the winner against each other, and what follows from them."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    multilabel: bool = False
    mode: str = "split"  # split or cv
    folds: int = 1
    rows: list[dict[str, Any]] = Field(default_factory=list)
    paired: list[dict[str, Any]] = Field(default_factory=list)
    winner: str | None = None
    winner_test: dict[str, Any] | None = None
    commands: dict[str, str] | None = None  # for the winner, or for the cheaper candidate tied with it
    cheaper_tie: dict[str, Any] | None = None  # that candidate: its name, the winner's, the p-value, how much cheaper
    confusions: list[Any] | None = None
    agreement: dict[str, Any] | None = None
    label_audit: dict[str, Any] | None = None
    curves: dict[str, Any] | None = None
    test_set_note: str | None = None


class Timing(BaseModel):
    """One finished candidate's time: what was predicted and what it took, training apart from search."""

    predicted: float
    seconds: float
    search_predicted: float = 0.0
    search_seconds: float = 0.0
    expected: float | None = None  # the probe's figure times the speed measured before it


# a duration a resumed study computes deadlines from: a finite number of seconds, never NaN
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class StudyState(GroupState):
    """study.json: the study's settings, the data it found, its plan and progress, its summary."""

    VERSION: ClassVar[int] = 2

    settings: StudySettings
    status: str = "planning"
    spent_seconds: Seconds = 0.0
    probe_seconds: Seconds = 0.0  # what the candidates' probes took (at most a tenth of the budget, and one probe)
    # the data, as inspected
    sizes: dict[str, int] = Field(default_factory=dict)
    input_size: int | None = None
    channels: int = 3
    classes: list[str] = Field(default_factory=list)
    presplit: bool = False
    smallest_pool_class: int = 0
    imbalance_ratio: float = Field(1.0, ge=1.0, allow_inf_nan=False)
    class_weights: bool = False
    multilabel: bool = False
    # the plan and its progress
    folds: int = 1  # chosen: 1 (one split) or K
    # too few images for a held-out test split worth its name: every candidate is cross-validated over
    # all of them, every figure out-of-fold; ``split_sizes``: the usual split it replaced
    small_data: bool = False
    split_sizes: dict[str, int] = Field(default_factory=dict)
    fractions: list[float] = Field(default_factory=list)  # the learning curves' shares (--fractions)
    notes: list[str] = Field(default_factory=list)
    winner_reserve: Seconds = 0.0  # seconds kept for the CV winner's run on the split
    speed: float = Field(1.0, gt=0, allow_inf_nan=False)  # measured seconds / predicted seconds, so far
    timing: dict[str, Timing] = Field(default_factory=dict)
    winner: str | None = None  # the CV winner whose run is in winner/
    candidates: list[Candidate] = Field(default_factory=list)
    summary: StudySummary | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """Version 1 wrote the settings as flat keys (budget_seconds, models_requested …)."""
        if not isinstance(data, dict) or "settings" in data:
            return data
        given = {name: data[key] for name, key in V1_KEYS.items() if data.get(key) is not None}
        given |= {k: v for k, v in (data.get("data_options") or {}).items() if k in ("group_by", "on_leak")}
        return {**data, "settings": given}

    @property
    def budget_seconds(self) -> float:
        return self.settings.budget

    @property
    def seed_values(self) -> list[int]:
        """The initialisations each candidate is trained from (``--seeds N``: seed, seed + 1 …)."""
        return [self.settings.seed + i for i in range(self.settings.seeds)]

    @property
    def monitor(self) -> str:
        """The validation figure candidates are tuned, checkpointed and ranked by."""
        return "val_mean_average_precision" if self.multilabel else "val_acc"


def cheaper_tie(rows: list[dict[str, Any]], paired: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate the next commands should use when the winner's lead is not evidence: of those
    tied with it (Holm-adjusted paired p ≥ 0.05), the one whose run took least, if it is at least
    1.5× cheaper than the winner's (None otherwise: the winner it is)."""
    w = rows[0]
    tied = {p["other"]: p for p in paired if p.get("p_holm", p["p"]) >= 0.05}
    cheap = min((r for r in rows[1:] if r["name"] in tied), key=lambda r: r["run_seconds"] or 0, default=None)
    if cheap is None or not cheap["run_seconds"] or w["run_seconds"] < 1.5 * cheap["run_seconds"]:
        return None
    p = tied[cheap["name"]]
    return {"candidate": cheap["name"], "instead_of": w["name"], "p_holm": p.get("p_holm", p["p"]),
            "times_cheaper": round(w["run_seconds"] / cheap["run_seconds"], 1)}  # fmt: skip
