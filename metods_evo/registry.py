"""A named registry of one kind of thing (tasks, models, optimizers), each owned by the package of its kind.

An entry is the thing itself or its ``"module:name"`` string, imported on first ``load`` (as gymnasium's registry
does), so that a heavy dependency (evotorch, a simulator, a user's module) is only imported when it is chosen.
A ``Registry`` is a ``dict`` of name -> entry; ``lookup`` / ``load`` answer an unknown name with a one-line
``ConfigError`` listing the choices.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from metods_evo.errors import ConfigError

T = TypeVar("T")


def is_entry_point(text: object) -> bool:
    """Whether ``text`` is a ``"module:name"`` string."""
    return isinstance(text, str) and text.count(":") == 1 and all(text.split(":"))


def import_entry_point(text: str) -> Any:
    module, name = text.split(":")
    return getattr(importlib.import_module(module), name)


class Registry(dict[str, "T | str"], Generic[T]):
    """name -> entry; ``kind`` names the registry in errors ("unknown optimizer 'x'; choose from ...")."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, entry: T | str) -> None:
        self[name] = entry

    def lookup(self, name: str) -> T | str:
        """The entry registered as ``name`` (a ``"module:name"`` string stays one)."""
        if name not in self:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self))}")
        return self[name]

    def load(self, name: str) -> T:
        """The entry registered as ``name``, its ``"module:name"`` string imported."""
        entry = self.lookup(name)
        return import_entry_point(entry) if isinstance(entry, str) else entry


__all__ = ["Registry", "import_entry_point", "is_entry_point"]
