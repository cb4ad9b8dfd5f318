"""Regular expressions that come from users (``data.group_by``): compiled by RE2, whose matching takes
time linear in the text, so a pattern such as ``(a+)+$`` cannot hang cnnlab on long file names the
way a backtracking engine (Python's ``re``) does. RE2 has no look-around and no back-references;
such a pattern is refused in one line."""

from __future__ import annotations

from typing import Any

import re2

__all__ = ["PatternError", "user_pattern"]


class PatternError(ValueError):
    """A pattern RE2 cannot compile; its message says why."""


def user_pattern(text: str) -> Any:
    """``text`` compiled by RE2 (``search``, ``groups`` and ``group()`` as Python's ``re``).

    Raises:
        PatternError: not a regular expression RE2 accepts.
    """
    options = re2.Options()
    options.log_errors = False  # RE2 would also print the error to stderr itself
    try:
        return re2.compile(text, options=options)
    except re2.error as e:
        why = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise PatternError(why) from None
