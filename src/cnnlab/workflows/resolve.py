"""The one resolution step: where a new config meets the registries and the file system (does the
data exist, is the augmentation preset, model, optimiser or engine known, do the model's options
fit its builder, are pretrained weights there to freeze). A saved config is never resolved again:
``predict``, ``export``, ``serve`` and ``report`` of a run read it with the schema alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.core import schema
from cnnlab.core.errors import CnnlabError
from cnnlab.core.options import options_problem
from cnnlab.core.registry import Registry, did_you_mean
from cnnlab.core.schema import Config, DataConfig, ModelConfig
from cnnlab.data.sources import DATASETS
from cnnlab.data.transforms import PRESETS, option_problem
from cnnlab.models.factory import MODELS, get_spec
from cnnlab.train.engines import ENGINES
from cnnlab.train.optim import OPTIMIZERS

__all__ = ["build_config", "data_problem", "resolve"]


def _registered(value: str, registry: Registry[Any]) -> str | None:
    """None when ``registry`` has ``value``, else what is wrong, listing what it has."""
    if value in registry:
        return None
    return f"unknown {registry.kind}; choose from {', '.join(registry.names())}{did_you_mean(value, registry.names())}"


def _source(d: DataConfig) -> str | None:
    v = d.source
    if v in DATASETS or v.startswith(("http://", "https://")):  # a URL: shards on a web or object store
        return None
    try:
        if Path(v).exists():
            return None
    except OSError as e:  # a name too long for the file system, ...
        return f"cannot be a path here: {e.strerror}"
    return f"not a built-in dataset ({', '.join(DATASETS.names())}) and no such file or directory"


def data_problem(cfg: Config) -> str | None:
    """Why ``cfg``'s data is not on this machine (a run moved elsewhere), or None when it is."""
    return _source(cfg.data)


def source_problem(d: DataConfig) -> str | None:
    """Why ``d.source`` is neither a built-in dataset, a URL nor a path here, or None."""
    return _source(d)


def _model_name(m: ModelConfig) -> str | None:
    try:
        get_spec(m.name)
    except CnnlabError:
        return (
            f"unknown model; choose from {', '.join(MODELS.names())}, timm/<name>, tv/<name>"
            f"{did_you_mean(m.name, MODELS.names())}"
        )
    return None


def _freeze_needs_trained_weights(m: ModelConfig) -> str | None:
    """Freezing a backbone of random weights trains a head on noise (accuracy 0.21 was seen)."""
    policy = next(
        (
            f"model.{k}"
            for k, on in (
                ("freeze", m.freeze == "backbone"),
                ("fine_tune", m.fine_tune),
                ("unfreeze_last", m.unfreeze_last),
                ("train_bn_only", m.train_bn_only),
            )
            if on
        ),
        None,
    )
    if policy and not m.weights and not (get_spec(m.name).pretrained and m.pretrained):
        pretrained = [n for n in MODELS.names() if MODELS.get(n).pretrained]
        return (
            f"{policy} keeps a backbone's weights, but {m.name!r} "
            f"{'has no pretrained weights' if m.pretrained else 'is built with --no-pretrained'}: "
            f"use a pretrained model ({', '.join(pretrained)}, timm/<name>, tv/<name>) or give --weights FILE"
        )
    return None


def _model_options(m: ModelConfig) -> str | None:
    fields = sorted(set(m.options) & (set(ModelConfig.model_fields) - {"options"}))
    if fields:
        return (
            f"model.options {', '.join(fields)}: set {'these' if len(fields) > 1 else 'it'} with "
            f"{', '.join('model.' + f for f in fields)} (a flag of its own), where it is checked"
        )
    return options_problem(
        get_spec(m.name).builder, m.options, {"num_classes", "in_chans", "input_size"}, f"model.options of {m.name!r}"
    )


# (the field a problem is about, or None for a rule across a section's fields; the check), in the
# order the schema's fields come, so that the first problem reported is the first one in the file
CHECKS: list[tuple[str | None, Callable[[Config], str | None]]] = [
    ("data.source", lambda c: _source(c.data)),
    ("data.augment", lambda c: _registered(c.data.augment, PRESETS)),
    (None, lambda c: option_problem(c.data.augment, c.data.augment_options)),
    ("model.name", lambda c: _model_name(c.model)),
    (None, lambda c: _freeze_needs_trained_weights(c.model)),
    (None, lambda c: _model_options(c.model)),
    ("optim.name", lambda c: _registered(c.optim.name, OPTIMIZERS)),
    ("train.engine", lambda c: _registered(c.train.engine, ENGINES)),
]


def resolve(cfg: Config, source: str = "") -> Config:
    """``cfg`` when everything it names exists here; else a one-line error.

    Raises:
        CnnlabError: naming the field, the value and what is allowed (prefixed by ``source``).
    """
    prefix = f"{source}: " if source else ""
    for field, check in CHECKS:
        problem = check(cfg)
        if problem is None:
            continue
        if field is None:
            raise CnnlabError(f"{prefix}{problem}")
        section, key = field.split(".")
        value = getattr(getattr(cfg, section), key)
        raise CnnlabError(f"{prefix}invalid value for {field}: {schema.short_repr(value)} ({problem})")
    return cfg


def build_config(
    base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, source: str = ""
) -> Config:
    """A new config from a nested dict plus dotted overrides (:func:`cnnlab.core.schema.build_config`),
    then resolved against this machine's registries and files (:func:`resolve`)."""
    return resolve(schema.build_config(base, overrides, source), source)
