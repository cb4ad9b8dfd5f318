"""A study folder: its typed state (:class:`cnnlab.core.study.StudyState`, in study.json), its
candidates' folders and configs, and what `run_study` returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.core.schema import Config
from cnnlab.core.study import Candidate, StudyState, StudySummary
from cnnlab.runs.group import RunGroup, group_at
from cnnlab.workflows.resolve import build_config

__all__ = ["Study", "StudyResult", "study_group"]


def study_group(out: Path) -> RunGroup:
    """The study folder ``out``: a run folder per candidate, its state in study.json."""
    return group_at("study", out)


class Study:
    """One study folder: its state (study.json) and its candidates."""

    def __init__(self, out: Path, state: StudyState):
        self.out, self.state = out, state

    @classmethod
    def open(cls, out: Path) -> Study:
        """The study saved in ``out``.

        Raises:
            CnnlabError: no study there, or a damaged, foreign or newer study.json.
        """
        return cls(out, study_group(out).load(StudyState))

    @property
    def cands(self) -> list[Candidate]:
        return self.state.candidates

    @cands.setter
    def cands(self, value: list[Candidate]) -> None:
        self.state.candidates = value

    @property
    def group(self) -> RunGroup:
        return study_group(self.out)

    def save(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.state, name, value)
        self.group.save(self.state)

    @property
    def seeds(self) -> list[int]:
        return self.state.seed_values

    @property
    def monitor(self) -> str:
        return self.state.monitor

    def fraction_folder(self, c: Candidate, fraction: float) -> Path:
        """The run of candidate ``c`` on ``fraction`` of the training split (its learning curve)."""
        return self.out / "fractions" / c.name / f"{fraction:g}"

    def folder(self, c: Candidate) -> Path:
        return self.out / ("cv" if self.state.folds > 1 else "runs") / c.name

    def base_overrides(self) -> dict[str, Any]:
        st = self.state.settings
        o: dict[str, Any] = {
            "data.source": st.data,
            "train.seed": st.seed,
            "train.batch_size": st.batch_size,
            "train.device": st.device,
            "run.report": False,
            "train.monitor": self.monitor,  # the checkpoint is chosen by the figure the study ranks by
        }
        if st.data_dir:
            o["data.data_dir"] = st.data_dir
        for key, value in st.data_options.items():  # --group-by, --on-leak
            o[f"data.{key}"] = value
        if self.state.class_weights:
            o["train.class_weights"] = "auto"
        if self.state.small_data:  # no test split: the folds hold every image
            o["data.split"] = [0.9, 0.1, 0.0]
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
    summary: StudySummary
    summary_lines: list[str]  # the console's summary
    state: StudyState  # study.json as saved

    @classmethod
    def of(cls, out: Path, state: StudyState, lines: list[str]) -> StudyResult:
        return cls(out, state.status, state.budget_seconds, state.spent_seconds, state.summary or StudySummary(),
                   lines, state)  # fmt: skip
