"""`cnnlab study`: a dataset in, a budgeted comparison of candidate models and one report out."""

from cnnlab.workflows.study.run import run_study

__all__ = ["run_study"]
