"""What the commands that read a finished run or its data return, typed: an evaluation (a
checkpoint's figures on one split, metrics.json's content), seed 002's keep-head baselines, the table
of several datasets, predictions, explanations, the Grad-CAM sanity checks, a data inspection and a
shard index. A figure is keyed by its name in the metric catalogue (``core/metrics.py``): adding a
metric adds a row there, not a field here. Pure data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cnnlab.core.metrics import catalogue

__all__ = [
    "DataReport",
    "ShardFile",
    "ShardIndex",
    "ShardSplit",
    "Baseline",
    "Baselines",
    "ClassScore",
    "DatasetRow",
    "DatasetTable",
    "Evaluation",
    "EvaluationResult",
    "Explained",
    "Explanation",
    "Prediction",
    "SanityReport",
    "TopK",
]

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


class ClassScore(BaseModel):
    """One class and its probability."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(alias="class")
    prob: float


class Prediction(BaseModel):
    """One image's top classes (multi-label runs: ``labels``, those over the tuned thresholds), or why
    it could not be read (``error``)."""

    path: str
    top: list[ClassScore] = Field(default_factory=list)
    labels: list[str] | None = None
    error: str | None = None


class Explanation(BaseModel):
    """One image explained: the predicted class and its probability, the Grad-CAM heat map of that
    class (H × W, 0..1) and the files written; or why it could not be read (``error``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str
    predicted: str | None = None
    prob: float | None = None
    heat: Any = None  # a NumPy array (H × W)
    files: list[str] = Field(default_factory=list)
    error: str | None = None


class SanityReport(BaseModel):
    """The Grad-CAM checks of a run on its test images (sanity.json): model randomisation, deletion
    against a random map and the heat on the border, overall and per class, and the files written."""

    split: str
    method: dict[str, str]
    deletion_steps: list[float]
    mean_curves: dict[str, list[float]]
    overall: dict[str, float]
    per_class: dict[str, dict[str, float]]
    looks_at_border: list[str]
    border_area: float
    images: list[dict[str, JsonValue]]
    files: list[str] = Field(default_factory=list)


class Explained(BaseModel):
    """`cnnlab explain`: the sanity checks (when asked for) and each image's explanation."""

    sanity: SanityReport | None = None
    images: list[Explanation] = Field(default_factory=list)


class DataReport(BaseModel):
    """What `cnnlab data inspect` found: the files and classes, the split, the sizes, modes and formats,
    unreadable files with their reasons, exact duplicates within and across splits, near duplicates when
    searched (the near_* fields; None when not), and the pictures written."""

    source: str
    classes: list[str]
    multilabel: bool
    num_files: int
    num_readable: int
    ignored_non_image_files: int | None = None
    presplit: bool
    class_counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    split_sizes: dict[str, int]
    imbalance_ratio: float | None
    sizes: dict[str, int]
    median_shorter_side: int | None
    modes: dict[str, int]
    formats: dict[str, int]
    extension_mismatch: list[str]
    unreadable: list[dict[str, Any]]
    unreadable_by_reason: dict[str, int]
    duplicates_within_split: list[dict[str, Any]]
    leaks_across_splits: list[dict[str, Any]]
    groups: int | None = None
    near_duplicate_rule: dict[str, float] | None = None
    near_duplicates_searched: str | None = None
    near_duplicates_within_split: list[dict[str, Any]] | None = None
    near_leaks_across_splits: list[dict[str, Any]] | None = None
    pictures: list[str] = []

    def document(self) -> dict[str, Any]:
        """As JSON (inspect.json, `data inspect --json`): the near-duplicate part only when searched."""
        return self.model_dump(mode="json", exclude_none=True)


class ShardFile(BaseModel):
    file: str
    count: int


class ShardSplit(BaseModel):
    count: int
    shards: list[ShardFile]


class ShardIndex(BaseModel):
    """index.json of a shard folder, as written: the data's classes, size and normalisation, and per
    split its shard files and their sample counts."""

    format: str = "cnnlab-shards/1"  # data/shards.py's FORMAT
    source: str
    description: str = ""
    classes: list[str]
    input_size: int
    channels: int
    normalize: str
    mean: list[float] | None
    std: list[float] | None
    fingerprint: str
    splits: dict[str, ShardSplit]
    seconds: float
