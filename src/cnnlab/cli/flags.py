"""The config flags, generated from the schema: every field of ``cnnlab.core.schema.Config`` is a
flag whose name, type, help and default come from the field itself (a flag is sugar for
``--set KEY=VALUE``; nothing here restates a default)."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, TypeVar, Union

from pydantic.fields import FieldInfo

from cnnlab.cli import argtypes
from cnnlab.core.schema import Config
from cnnlab.core.settings import Settings
from cnnlab.core.yamlio import parse_set

__all__ = [
    "FLAG_NAMES",
    "add_config_flags",
    "add_settings_flags",
    "config_overrides",
    "flag_of",
    "given_config_keys",
    "schema_default",
    "settings_of",
]

SettingsT = TypeVar("SettingsT", bound=Settings)

# config key → flag, where the flag is not the field's own name
FLAG_NAMES = {
    "data.source": "data",
    "model.name": "model",
    "optim.name": "optimizer",
    "run.loggers": "logger",
    "data.augment_options": "augment-option",
    "model.options": "model-option",
}
# how --help names a text value, where the type alone says too little
METAVARS = {
    "data.source": "NAME|DIR|CSV", "data.data_dir": "DIR", "data.image_root": "DIR", "data.delimiter": "C",
    "data.label_sep": "C", "data.augment": "PRESET", "model.name": "NAME", "model.weights": "FILE",
    "optim.name": "NAME", "train.engine": "NAME", "train.device": "DEV", "train.monitor": "METRIC", "run.out": "DIR",
}  # fmt: skip
AUTO_OR_INT = {"train.batch_size"}  # a whole number, or auto (the schema turns auto into its own field)
HIDDEN = {"train.auto_batch"}  # set through another flag (--batch-size auto)
DURATIONS = {"train.time"}  # seconds in the config; 90s, 20m or 1.5h on the command line (the schema parses them)
SECTIONS = {"data": "data", "model": "model and transfer learning", "optim": "optimisation", "train": "training",
            "run": "run folder"}  # fmt: skip
DEST = "cfg__"  # argparse dest of a config flag: cfg__<section>__<field>


def flag_of(key: str) -> str:
    """``--flag`` of config key ``section.field``."""
    return "--" + FLAG_NAMES.get(key, key.split(".", 1)[1].replace("_", "-"))


def _field(key: str) -> FieldInfo:
    section, name = key.split(".")
    return Config.model_fields[section].annotation.model_fields[name]  # type: ignore[union-attr]  # a section's annotation is its model class


def schema_default(key: str) -> Any:
    """The schema's default of config key ``section.field``."""
    return _field(key).get_default(call_default_factory=True)


def _members(annotation: Any) -> list[Any]:
    """The members of a union (``X | None`` → ``[X]``), or the annotation itself."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _argparse_kwargs(annotation: Any) -> dict[str, Any]:
    """How argparse reads a value of this annotation; the schema checks ranges and choices."""
    members = _members(annotation)
    origins = [typing.get_origin(m) for m in members]
    if members == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if dict in origins:
        return {"action": "append", "metavar": "KEY=VALUE"}
    if tuple in origins and Literal in origins:
        return {"type": argtypes.int_pair, "metavar": "E1,E2|auto"}
    if tuple in origins:
        return {"type": argtypes.float_list, "metavar": ",".join(["X"] * len(typing.get_args(members[0])))}
    if list in origins:
        (item,) = typing.get_args(members[origins.index(list)])
        if item is int:
            return {"type": argtypes.int_list, "metavar": "N[,N]"}
        return {"type": argtypes.name_list, "metavar": "|".join(typing.get_args(item)) or "NAME"}
    if int in members and Literal in origins:
        return {"type": argtypes.auto_or_int, "metavar": "auto|N"}
    if members == [int] or (origins == [Literal] and all(isinstance(v, int) for v in typing.get_args(members[0]))):
        return {"type": int, "metavar": "N"}
    if members == [float]:
        return {"type": float, "metavar": "X"}
    if origins == [Literal]:
        return {"metavar": "|".join(str(v) for v in typing.get_args(members[0]))}
    return {"metavar": "TEXT"}


def _help(key: str) -> str:
    info = _field(key)
    default = schema_default(key)
    text = (info.description or "").replace("%", "%%")
    if default not in (None, [], {}, False):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text += f" (default {shown})"
    return text


def add_config_flags(
    parser: argparse.ArgumentParser, without: Iterable[str] = (), only: Iterable[str] | None = None
) -> None:
    """``--config``, ``--set`` and one flag per config field (but the keys ``without``; with ``only``,
    just those keys and no --config/--set), grouped by section; every flag defaults to "not given",
    so the schema's default applies."""
    if only is None:
        parser.add_argument("--config", metavar="FILE", help="YAML config file (sections data/model/optim/train/run)")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override any config field, e.g. --set optim.lr=3e-4 (repeatable)",
        )
    keep = None if only is None else set(only)
    skip = set(without)
    for section, title in SECTIONS.items():
        group = parser.add_argument_group(title)
        for name, info in Config.model_fields[section].annotation.model_fields.items():  # type: ignore[union-attr]  # a section's annotation is its model class
            key = f"{section}.{name}"
            if key in skip or key in HIDDEN or (keep is not None and key not in keep):
                continue
            kwargs = {"metavar": "DURATION"} if key in DURATIONS else _argparse_kwargs(info.annotation)
            if key in AUTO_OR_INT:
                kwargs = {"type": argtypes.auto_or_int, "metavar": "N|auto"}
            if key in METAVARS:
                kwargs["metavar"] = METAVARS[key]
            group.add_argument(flag_of(key), dest=f"{DEST}{section}__{name}", default=None, help=_help(key), **kwargs)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """config key → the value its flag was given, for the config flags that were given."""
    return {
        d.removeprefix(DEST).replace("__", "."): v
        for d, v in vars(args).items()
        if d.startswith(DEST) and v is not None
    }


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config values the flags gave (KEY=VALUE lists parsed), then ``--set`` on top."""
    out = {k: parse_set(v, flag_of(k)) if isinstance(schema_default(k), dict) else v for k, v in _given(args).items()}
    out.update(parse_set(getattr(args, "set", None) or []))
    return out


def given_config_keys(args: argparse.Namespace) -> list[str]:
    """The config keys whose flags were given, as flags (``--lr``), in the schema's order."""
    return [flag_of(k) for k in _given(args)]


SETTINGS_DEST = "st__"  # argparse dest of a workflow setting's flag: st__<field>


def add_settings_flags(
    parser: argparse.ArgumentParser, settings: type[Settings], types: dict[str, Any] | None = None
) -> None:
    """One flag per field of a workflow's settings model (a field whose ``flag`` is a bare NAME is
    positional and optional), its help and "(default …)" from the field; every flag defaults to "not
    given", so the model's default applies. ``types``: argparse types that read a value more kindly
    than the field's own type (a device name, a positive whole number)."""
    types = types or {}
    for name, info in settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag, default = settings.flag(name), info.get_default(call_default_factory=True)
        text = (info.description or "").replace("%", "%%")
        if default is not None and not isinstance(default, bool):
            text += f" (default {extra.get('shown', default)})"
        if isinstance(default, bool):  # --x turns on what is off, --no-x turns off what is on
            kwargs: dict[str, Any] = {"action": "store_false" if default else "store_true"}
        else:
            kwargs = _argparse_kwargs(info.annotation)
            if name in types:
                kwargs["type"] = types[name]
            if extra.get("metavar"):
                kwargs["metavar"] = extra["metavar"]
            members = _members(info.annotation)
            if len(members) == 1 and typing.get_origin(members[0]) is Literal:  # a closed list: argparse's choices
                kwargs["choices"] = typing.get_args(members[0])
            if extra.get("action") == "append":  # a repeatable flag: each use adds one value
                kwargs = {"action": "append", "metavar": kwargs.get("metavar")}
        if not flag.startswith("-"):
            parser.add_argument(SETTINGS_DEST + name, nargs="?", default=None, help=text, **kwargs)
        else:
            parser.add_argument(flag, dest=SETTINGS_DEST + name, default=None, help=text, **kwargs)


def settings_of(args: argparse.Namespace, settings: type[SettingsT]) -> SettingsT:
    """The settings the command line gave (flags not given take the model's defaults).

    Raises:
        CnnlabError: a value the model refuses, in one line naming its flag.
    """
    return settings.of(**{n: getattr(args, SETTINGS_DEST + n, None) for n in settings.model_fields})
