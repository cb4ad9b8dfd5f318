"""The closed name lists, each written once: the config schema takes its choices from here, and each
registry that implements the names (activations, inits, schedules, loggers, engines) is checked
against its list by tests/core/test_names.py. Pure data."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "ACTIVATIONS",
    "ENGINES",
    "INITS",
    "LOGGERS",
    "SCHEDULES",
    "TTA_VIEWS",
    "Activation",
    "EngineName",
    "Init",
    "Logger",
    "Schedule",
    "TtaView",
]

Activation = Literal["relu", "elu", "tanh", "sigmoid", "prelu", "relu6"]
Init = Literal["default", "he", "xavier"]
Schedule = Literal["constant", "step", "cosine", "onecycle", "plateau", "exp-decay", "exponential"]
Logger = Literal["tensorboard", "mlflow", "wandb"]
EngineName = Literal["torch", "scratch"]
TtaView = Literal["none", "flips", "flips+crops"]  # --tta of evaluate, predict and serve (the Predictor's views)

ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INITS: tuple[str, ...] = get_args(Init)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
LOGGERS: tuple[str, ...] = get_args(Logger)
ENGINES: tuple[str, ...] = get_args(EngineName)
TTA_VIEWS: tuple[str, ...] = get_args(TtaView)
