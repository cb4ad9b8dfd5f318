"""What the commands that read a finished run return, typed: an evaluation (a checkpoint's figures
on one split, metrics.json's content), seed 002's keep-head baselines, and the table of several
datasets. A figure is keyed by its name in the metric catalogue (``core/metrics.py``): adding a
metric adds a row there, not a field here. Pure data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cnnlab.core.metrics import catalogue

__all__ = ["TopK", "Baseline", "Baselines", "DatasetRow", "DatasetTable", "Evaluation", "EvaluationResult"]

# the fields of an evaluation that are not figures (metrics.json keys that say where and which)
PLACE = ("split", "num_samples", "data", "checkpoint", "best_epoch", "weights")


class Evaluation(BaseModel):
    """A checkpoint's figures on one split of its data (or of another dataset): where, which
    checkpoint, every figure by its catalogue name, per class, the confusion matrix, and what an option
    or the data added (``added``: calibration, tta, tuned_thresholds, leakage, absent classes …).
    :meth:`document` is the flat JSON that metrics.json and `evaluate --json` hold."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["evaluation"] = "evaluation"
    split: str
    num_samples: int
    data: str | None = None
    checkpoint: str | None = None
    best_epoch: int | None = None
    weights: str | None = None
    figures: dict[str, float | None] = Field(default_factory=dict)
    per_class: dict[str, dict[str, JsonValue]] = Field(default_factory=dict)
    confusion_matrix: list[list[int]] | None = None
    added: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Evaluation:
        """From metrics.json's flat form."""
        names = {m.name for m in catalogue()}
        figures = {k: v for k, v in doc.items() if k in names}
        known = {*PLACE, "per_class", "confusion_matrix", *figures}
        place = {k: doc[k] for k in PLACE if k in doc}
        return cls(**place, figures=figures, per_class=doc.get("per_class") or {},
                   confusion_matrix=doc.get("confusion_matrix"),
                   added={k: v for k, v in doc.items() if k not in known})  # fmt: skip

    def document(self) -> dict[str, Any]:
        """The flat form: place, figures, per class, confusion matrix and additions side by side."""
        out: dict[str, Any] = {k: getattr(self, k) for k in PLACE if getattr(self, k) is not None}
        out |= self.figures
        if self.per_class:
            out["per_class"] = self.per_class
        if self.confusion_matrix is not None:
            out["confusion_matrix"] = self.confusion_matrix
        return out | self.added


class TopK(BaseModel):
    """A top-k accuracy with its 95 % interval (``k``: for top-k beyond 1)."""

    value: float
    ci95: list[float]
    k: int | None = None


class Baseline(BaseModel):
    """Seed 002's baseline on one dataset: the pretrained net with its own output layer, its classes
    mapped onto the data's; top-1 and top-k with 95 % intervals."""

    baseline: str
    data: str
    split: str
    images: int
    top1: TopK
    top5: TopK
    mapped_top1: float
    per_class_top1: dict[str, float]
    net_classes_mapped: int
    dataset_classes_mapped: list[str]
    label_map: str


class Baselines(BaseModel):
    """`evaluate --keep-head`: one baseline per dataset."""

    kind: Literal["baselines"] = "baselines"
    baselines: list[Baseline]


class DatasetRow(BaseModel):
    data: str
    images: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    balanced_accuracy: float | None = None


class DatasetTable(BaseModel):
    """A run on several datasets: one row each, and with retrieval the query × gallery matrices."""

    kind: Literal["datasets"] = "datasets"
    run: str
    split: str
    rows: list[DatasetRow]
    map: list[list[float | None]] | None = None
    precision_at_k: list[list[float | None]] | None = None
    queries: list[int] | None = None
    k: int | None = None


EvaluationResult = Evaluation | Baselines | DatasetTable
