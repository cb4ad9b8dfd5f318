"""`cnnlab study`: a dataset in, a budgeted comparison of candidate models and one report out."""

from cnnlab.workflows.study.run import parse_budget, run_study

__all__ = ["parse_budget", "run_study"]
