"""Hyper-parameter sweeps: an Optuna study whose trials are run folders (see runner.py)."""

from cnnlab.workflows.sweep.runner import open_sweep, run_sweep
from cnnlab.workflows.sweep.spec import SweepSpec, load_spec

__all__ = ["SweepSpec", "load_spec", "open_sweep", "run_sweep"]
