"""A study folder's state: its settings, plan and progress (study.json) and its candidates, read by
the study's run, its results and its page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.core.schema import Config
from cnnlab.runs.group import RunGroup
from cnnlab.workflows.resolve import build_config
from cnnlab.workflows.study.plan import Candidate

__all__ = ["Study", "StudyResult", "study_group"]


def study_group(out: Path) -> RunGroup:
    """The study folder ``out``: a run folder per candidate, its state in study.json."""
    return RunGroup(out, "study", "study.json", f"cnnlab study DATA --out {out}")


class Study:
    """One study folder: its settings, plan and progress (study.json) and its candidates."""

    def __init__(self, out: Path, state: dict[str, Any]):
        self.out, self.state = out, state
        self.cands = [Candidate(**c) for c in state.get("candidates", [])]

    @property
    def group(self) -> RunGroup:
        return study_group(self.out)

    def save(self, **fields: Any) -> None:
        self.state.update(fields)
        self.state["candidates"] = [c.to_dict() for c in self.cands]
        self.group.save(self.state)

    @property
    def seeds(self) -> list[int]:
        """The initialisations each candidate is trained from (``--seeds N``: seed, seed + 1 …)."""
        return [self.state["seed"] + i for i in range(self.state.get("seeds", 1))]

    @property
    def monitor(self) -> str:
        """The validation figure candidates are tuned, checkpointed and ranked by."""
        return "val_mean_average_precision" if self.state.get("multilabel") else "val_acc"

    def fraction_folder(self, c: Candidate, fraction: float) -> Path:
        """The run of candidate ``c`` on ``fraction`` of the training split (its learning curve)."""
        return self.out / "fractions" / c.name / f"{fraction:g}"

    def folder(self, c: Candidate) -> Path:
        return self.out / ("cv" if self.state["folds"] > 1 else "runs") / c.name

    def base_overrides(self) -> dict[str, Any]:
        s = self.state
        o = {
            "data.source": s["data"],
            "train.seed": s["seed"],
            "train.batch_size": s["batch_size"],
            "train.device": s["device"],
            "run.report": False,
            "train.monitor": self.monitor,  # the checkpoint is chosen by the figure the study ranks by
        }
        if s.get("data_dir"):
            o["data.data_dir"] = s["data_dir"]
        for key, value in (s.get("data_options") or {}).items():  # --group-by, --on-leak
            o[f"data.{key}"] = value
        if s["class_weights"]:
            o["train.class_weights"] = "auto"
        return o

    def config(self, c: Candidate, out: Path, extra: dict[str, Any] | None = None) -> Config:
        """Candidate ``c``'s run config into ``out`` (``extra``: keys of one run, e.g. a learning
        curve's share of the training split)."""
        return build_config(None, {**self.base_overrides(), **c.overrides(), **(extra or {}), "run.out": str(out)})


@dataclass(frozen=True)
class StudyResult:
    """What `run_study` returns: where the study is, how it ended, its time and its summary."""

    out: Path
    status: str
    budget_seconds: float
    spent_seconds: float
    summary: dict[str, Any]  # the ranked rows, paired tests and the winner (study.json's "summary")
    summary_lines: list[str]  # the console's summary
    state: dict[str, Any]  # study.json as saved

    @classmethod
    def of(cls, out: Path, state: dict[str, Any], lines: list[str]) -> StudyResult:
        return cls(out, state["status"], state["budget_seconds"], state["spent_seconds"], state.get("summary") or {},
                   lines, state)  # fmt: skip
