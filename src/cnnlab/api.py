"""cnnlab's public library: the function behind every CLI command, and what a notebook needs beside
them. Each lives with its subject; ``EXPORTS`` says where.

    from cnnlab import api
    cfg = api.build_config(None, {"data.source": "digits", "model.name": "cnn"})
    result = api.train(cfg)

A name is imported from its module on first use (PEP 562). This is one of the two places where
cnnlab imports its own code by name (the other is ``cnnlab.inference.load``): it lets ``cnnlab
--help`` start at once and ``cnnlab predict model.onnx`` run without PyTorch, while the CLI still
goes through this one door. ``tests/test_architecture.py`` reads ``EXPORTS`` as import edges of this
module, so the layer and cycle checks see them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for readers, IDEs and the type checker
    from cnnlab.core.run_settings import (
        BoardSettings,
        EvaluateSettings,
        ExportSettings,
        PredictSettings,
        ServeSettings,
    )
    from cnnlab.core.settings import CvSettings, StudySettings, SweepSettings
    from cnnlab.data.cache_admin import clean_cache, list_cache, manage_cache
    from cnnlab.data.inspect import inspect_dataset
    from cnnlab.data.pipeline import prepare_data
    from cnnlab.data.shards import write_shards
    from cnnlab.inference.load import load_model
    from cnnlab.inference.predictor import Predictor
    from cnnlab.models.factory import count_parameters, get_spec
    from cnnlab.models.ops import resolve_device
    from cnnlab.train.gradcheck import LAYERS, TOLERANCE_FD, TOLERANCE_TORCH, gradcheck
    from cnnlab.workflows.board import board
    from cnnlab.workflows.catalog import catalog, list_augmentations, list_datasets, list_engines, list_models
    from cnnlab.workflows.comparison import compare_results
    from cnnlab.workflows.cv import cross_validate, paired_comparison, read_cv
    from cnnlab.workflows.datasets import shard_dataset
    from cnnlab.workflows.deploy.batch import predict_files
    from cnnlab.workflows.deploy.export import export_run
    from cnnlab.workflows.deploy.serve import serve
    from cnnlab.workflows.evaluation import compare, evaluate, evaluate_datasets, explain, predict, report
    from cnnlab.workflows.lrfind import lr_find
    from cnnlab.workflows.resolve import build_config
    from cnnlab.workflows.sanity import explain_run, explain_sanity
    from cnnlab.workflows.seeded import TrainPlan, train
    from cnnlab.workflows.study import run_study
    from cnnlab.workflows.sweep import run_sweep
    from cnnlab.workflows.sweep.report import rebuild
    from cnnlab.workflows.training import TrainResult

# public name → the module that defines it
EXPORTS: dict[str, str] = {
    **dict.fromkeys(["build_config"], "cnnlab.workflows.resolve"),
    **dict.fromkeys(["StudySettings", "CvSettings", "SweepSettings", "LrFindSettings"], "cnnlab.core.settings"),
    **dict.fromkeys(
        ["EvaluateSettings", "ExplainSettings", "PredictSettings", "ExportSettings", "ServeSettings", "BoardSettings"],
        "cnnlab.core.run_settings",
    ),
    **dict.fromkeys(["explain_sanity", "explain_run"], "cnnlab.workflows.sanity"),
    **dict.fromkeys(["TrainResult"], "cnnlab.workflows.training"),
    **dict.fromkeys(["lr_find"], "cnnlab.workflows.lrfind"),
    **dict.fromkeys(["train", "TrainPlan"], "cnnlab.workflows.seeded"),
    **dict.fromkeys(
        ["evaluate", "evaluate_datasets", "predict", "explain", "report", "compare"], "cnnlab.workflows.evaluation"
    ),
    **dict.fromkeys(["cross_validate", "paired_comparison", "read_cv"], "cnnlab.workflows.cv"),
    **dict.fromkeys(["compare_results"], "cnnlab.workflows.comparison"),
    **dict.fromkeys(["run_sweep"], "cnnlab.workflows.sweep"),
    **dict.fromkeys(["rebuild"], "cnnlab.workflows.sweep.report"),
    **dict.fromkeys(["run_study"], "cnnlab.workflows.study"),
    **dict.fromkeys(["export_run"], "cnnlab.workflows.deploy.export"),
    **dict.fromkeys(["predict_files"], "cnnlab.workflows.deploy.batch"),
    **dict.fromkeys(["serve"], "cnnlab.workflows.deploy.serve"),
    **dict.fromkeys(["board"], "cnnlab.workflows.board"),
    **dict.fromkeys(["load_model"], "cnnlab.inference.load"),
    **dict.fromkeys(["Predictor"], "cnnlab.inference.predictor"),
    **dict.fromkeys(["resolve_device"], "cnnlab.models.ops"),
    **dict.fromkeys(["get_spec", "count_parameters"], "cnnlab.models.factory"),
    **dict.fromkeys(
        ["catalog", "list_models", "list_datasets", "list_augmentations", "list_engines"], "cnnlab.workflows.catalog"
    ),
    **dict.fromkeys(["shard_dataset"], "cnnlab.workflows.datasets"),
    **dict.fromkeys(["prepare_data"], "cnnlab.data.pipeline"),
    **dict.fromkeys(["inspect_dataset"], "cnnlab.data.inspect"),
    **dict.fromkeys(["write_shards"], "cnnlab.data.shards"),
    **dict.fromkeys(["manage_cache", "list_cache", "clean_cache"], "cnnlab.data.cache_admin"),
    **dict.fromkeys(["gradcheck", "LAYERS", "TOLERANCE_FD", "TOLERANCE_TORCH"], "cnnlab.train.gradcheck"),
}

__all__ = [
    "BoardSettings",
    "CvSettings",
    "EvaluateSettings",
    "ExportSettings",
    "LAYERS",
    "PredictSettings",
    "Predictor",
    "ServeSettings",
    "StudySettings",
    "SweepSettings",
    "TOLERANCE_FD",
    "TOLERANCE_TORCH",
    "TrainPlan",
    "TrainResult",
    "board",
    "build_config",
    "catalog",
    "clean_cache",
    "compare",
    "compare_results",
    "count_parameters",
    "cross_validate",
    "evaluate",
    "evaluate_datasets",
    "explain",
    "explain_run",
    "explain_sanity",
    "export_run",
    "get_spec",
    "gradcheck",
    "inspect_dataset",
    "list_augmentations",
    "list_cache",
    "list_datasets",
    "list_engines",
    "list_models",
    "load_model",
    "lr_find",
    "manage_cache",
    "paired_comparison",
    "predict",
    "predict_files",
    "prepare_data",
    "read_cv",
    "rebuild",
    "report",
    "resolve_device",
    "run_study",
    "run_sweep",
    "serve",
    "shard_dataset",
    "train",
    "write_shards",
]


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))
