"""One small generic registry, used for metrics and encoders.

Registration checks the name and refuses duplicates; a lookup of an unknown name suggests
close matches and names the command that lists what exists.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Generic, TypeVar

from evalkit.errors import UnknownNameError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """A name -> entry mapping that refuses duplicates and explains misses."""

    def __init__(self, kind: str, list_command: str):
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if not _NAME.match(name):
            raise ValueError(f"invalid {self.kind} name {name!r}: use lower-case letters, digits and _")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def replace(self, name: str, entry: T) -> T:
        """Put ``entry`` under an already registered ``name`` (keeping its position)."""
        if name not in self._entries:
            raise ValueError(f"{self.kind} {name!r} is not registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint}; `{self.list_command}` lists them"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()
