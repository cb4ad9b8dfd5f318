"""Safe, bounded YAML: configs, sweep specs and ``--set KEY=VALUE`` values read as plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cnnlab.core.errors import CnnlabError
from cnnlab.core.textfiles import read_text_file

__all__ = ["MAX_YAML_BYTES", "load_yaml", "parse_set", "read_yaml_file", "safe_yaml"]


MAX_YAML_BYTES = 1 << 20  # a config is a few KB; a megabyte is generous


MAX_YAML_DEPTH = 32
# libyaml's C parser where PyYAML was built with it (the same safe constructor, ~10× faster: the
# board reads thousands of run configs), else the pure-Python one
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _OneOfEachKey(SAFE_LOADER):
    """SafeLoader that refuses a mapping key given twice (PyYAML keeps the last one silently, so
    a second ``pruner:`` or ``lr:`` would quietly replace the first)."""

    where = "YAML"

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise CnnlabError(
                        f"{self.where}: key {key!r} is given twice (lines {seen[key]} and "
                        f"{key_node.start_mark.line + 1}); keep one"
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def safe_yaml(text: str, where: str) -> Any:
    """Parse YAML text as plain data, bounded: ``safe_load`` (no tags that build objects), no
    anchors/aliases (a few of them nested make a "billion laughs" bomb), at most
    ``MAX_YAML_BYTES`` and ``MAX_YAML_DEPTH`` levels of nesting.

    Raises:
        CnnlabError: naming ``where`` and what is wrong.
    """
    if len(text) > MAX_YAML_BYTES:
        raise CnnlabError(f"{where} is {len(text):,} characters; a config may have at most {MAX_YAML_BYTES:,}")
    depth = 0
    try:  # the event stream is checked before anything is built (PyYAML's parser is not recursive)
        for event in yaml.parse(text, Loader=SAFE_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise CnnlabError(f"{where}: YAML anchors and aliases (&name, *name) are not allowed in a config")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise CnnlabError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        loader = type("Loader", (_OneOfEachKey,), {"where": where})
        return yaml.load(text, Loader=loader)  # noqa: S506  (a SafeLoader: plain data only)
    except yaml.YAMLError as e:
        if "nesting depth" in str(e):  # libyaml's own limit, met while it reads ahead of the events
            raise CnnlabError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels") from None
        raise CnnlabError(f"{where} is not valid YAML: " + " ".join(str(e).split())) from None


def parse_set(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """Parse ``a.b=value`` strings (values read as YAML scalars/lists) into a flat dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CnnlabError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = safe_yaml(raw, f"{flag} {key.strip()}") if raw.strip() else None
        except CnnlabError:
            out[key.strip()] = raw
    return out


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path`` as plain data (see :func:`safe_yaml`), with one-line errors."""
    p = Path(path)
    return safe_yaml(read_text_file(p, what, MAX_YAML_BYTES), f"{what} {str(p)!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a nested dict, with a clear error when it is not one."""
    tree = read_yaml_file(path) or {}
    if not isinstance(tree, dict):
        raise CnnlabError(
            f"config file {str(path)!r} must hold a mapping of sections (data, model, optim, "
            f"train, run), not a {type(tree).__name__}"
        )
    return tree
