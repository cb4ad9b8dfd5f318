"""One generic name → object registry, used for models, datasets, optimizers and more."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from cnnlab.core.errors import CnnlabError

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest of ``choices`` to a mistyped ``word``, else ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """Maps names to entries; refuses duplicates; lists names by glob pattern.

    Args:
        kind: what the entries are ("model", "dataset", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name can be registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise a CnnlabError listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            names = self.names()
            raise CnnlabError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(names)}{did_you_mean(name, names)}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a glob ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
