"""One list per closed name (issue 44): core/names.py holds each list once, the schema takes its
choices from it, and every registry that implements the names has exactly those names."""

from __future__ import annotations

import typing

import pytest
import torch

from cnnlab.core import names
from cnnlab.core.schema import ModelConfig, RunConfig, TrainConfig
from cnnlab.models.common import ACTIVATION_MODULES, init_weights, make_act
from cnnlab.scratch import models as scratch_models
from cnnlab.train.engines import ENGINES
from cnnlab.train.optim import SCHEDULES
from cnnlab.train.trackers import PACKAGES, TRACKERS


def _choices(model: type, field: str) -> set[str]:
    """The string choices of a schema field's Literal (inside Optional or list)."""
    found: set[str] = set()

    def walk(t: object) -> None:
        if typing.get_origin(t) is typing.Literal:
            found.update(a for a in typing.get_args(t) if isinstance(a, str))
        for arg in typing.get_args(t):
            walk(arg)

    walk(model.model_fields[field].annotation)
    return found


@pytest.mark.parametrize(
    ("model", "field", "names_"),
    [
        (ModelConfig, "activation", names.ACTIVATIONS),
        (ModelConfig, "init", names.INITS),
        (TrainConfig, "schedule", names.SCHEDULES),
        (TrainConfig, "engine", names.ENGINES),
        (RunConfig, "loggers", names.LOGGERS),
    ],
)
def test_the_schema_takes_each_closed_list_from_core_names(model, field, names_):
    assert _choices(model, field) == set(names_)


def test_every_registry_implements_exactly_its_list():
    assert set(ACTIVATION_MODULES) == set(names.ACTIVATIONS)
    assert set(SCHEDULES.names()) == set(names.SCHEDULES)
    assert set(ENGINES.names()) == set(names.ENGINES)
    assert set(TRACKERS) == set(PACKAGES) == set(names.LOGGERS)
    assert set(scratch_models.ACTIVATIONS) <= set(names.ACTIVATIONS)  # the NumPy engine has a subset


def test_every_activation_and_init_builds():
    for name in names.ACTIVATIONS:
        assert isinstance(make_act(name, 4)(torch.ones(1, 4, 2, 2)), torch.Tensor)
    for scheme in names.INITS:
        init_weights(torch.nn.Linear(3, 2), scheme)
