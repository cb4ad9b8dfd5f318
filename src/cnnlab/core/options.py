"""Checking free-form option dicts (model builder and augmentation options) against the
typed signature of the function that takes them, with bounds, before any work."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

# (low, high) allowed for options of these names, wherever they occur; everything numeric
# must also be finite. Upper bounds keep values inside what the transforms accept.
BOUNDS: dict[str, tuple[float, float]] = {
    "p": (0, 1),
    "width_shift": (0, 1),
    "height_shift": (0, 1),
    "zoom": (0, 0.95),
    "shear": (0, 89),
    "rotation": (0, 360),
    "alpha_std": (0, 10),
    "num_ops": (0, 14),
    "magnitude": (0, 30),
}


def _numbers(value: Any) -> Iterable[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)


def options_problem(fn: Callable[..., Any], options: dict[str, Any], skip: Iterable[str], where: str) -> str | None:
    """What is wrong with ``options`` as keyword arguments of ``fn`` (unknown name, wrong type,
    out of bounds, NaN/inf), naming ``where.<option>``; None when they are fine.

    Options ``fn`` takes through ``**kwargs`` (timm models) are passed on unchecked.
    """
    import inspect

    params = {k: p for k, p in inspect.signature(fn).parameters.items() if k not in set(skip)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {k: p for k, p in params.items() if p.kind is not p.VAR_KEYWORD}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    for key, value in options.items():
        if key not in named:
            if takes_any:
                continue
            return f"{where} has no option {key!r}; its options: {', '.join(named) or 'none'}"
        hint = hints.get(key)
        if hint is not None:
            try:
                TypeAdapter(hint).validate_python(value, strict=not isinstance(value, (int, float)))
            except ValidationError as e:
                expected = getattr(hint, "__name__", str(hint).replace("typing.", ""))
                return (
                    f"invalid value for {where}.{key}: {value!r} (expected {expected}; {e.errors()[0]['msg'].lower()})"
                )
        for number in _numbers(value):
            if not math.isfinite(number):
                return f"invalid value for {where}.{key}: {value!r} (must be a finite number)"
            if key in BOUNDS and not BOUNDS[key][0] <= number <= BOUNDS[key][1]:
                lo, hi = BOUNDS[key]
                return f"invalid value for {where}.{key}: {value!r} (must be between {lo:g} and {hi:g})"
    return None
