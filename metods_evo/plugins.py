"""Plugins: tasks, optimizers and models of your own, used by the command line without editing the package.

A plugin is a module whose import registers them (``metods_evo.register``, ``metods_evo.register_optimizer``,
``metods_evo.models.register_model``). The command line loads, before it runs a command:

* every entry point of the group ``metods_evo.plugins`` that an installed package declares: one naming a module
  imports it, one naming a function calls it with no arguments;
* each ``--import MODULE`` (``metods-evo --import my_tasks train --task my-task``), found on the Python path or in
  the working directory.

A run of a plugin's task or optimizer needs the plugin again wherever it is resumed, evaluated or analyzed.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from metods_evo.config import ConfigError

ENTRY_POINT_GROUP = "metods_evo.plugins"
_loaded: set[str] = set()  # entry points already loaded in this process (a CLI invoked twice in one process)
_UNKNOWN = re.compile(r"unknown (task|optimizer|model\.kind) '([^']*)'")


class PluginError(ConfigError):
    """An ``--import`` module that cannot be found (one-line CLI error, exit code 2)."""


def import_plugin(name: str) -> ModuleType:
    """Import module ``name`` so that its ``register`` calls take effect; the working directory is searched too, as
    ``python -m`` does. A module that is not found is a ``PluginError``; an error inside the module propagates with
    its traceback, which is what its author needs."""
    if name.endswith(".py") or "/" in name or os.sep in name or not name.strip():
        raise PluginError(f"--import takes a module name (my_tasks, my_package.tasks), not {name!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise  # the module exists but imports one that does not: its own traceback says where
        raise PluginError(f"--import {name}: no module named {err.name!r} on the Python path or in the working "
                          f"directory {os.getcwd()}") from None


def load_entry_points() -> list[str]:
    """Load the plugins of the installed packages (entry points of the group ``metods_evo.plugins``), each once per
    process. Returns a line per plugin that failed: a broken plugin must not stop the commands that do not need it;
    ``--import`` of its module shows the traceback."""
    problems = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        key = f"{point.name}={point.value}"
        if key in _loaded:
            continue
        _loaded.add(key)
        try:
            _load(point)
        except Exception as err:  # noqa: BLE001 - any failure of third-party code is reported, not raised
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            problems.append(f"plugin {point.name!r} ({ENTRY_POINT_GROUP}: {point.value}) failed to load: "
                            f"{type(err).__name__}{': ' + first if first else ''}")
    return problems


def _load(point: EntryPoint) -> None:
    target = point.load()
    if not isinstance(target, ModuleType):
        target()


def with_import_hint(message: str) -> str:
    """``message`` (an error) followed, where it names an unknown task, optimizer or model, by how to load the plugin
    that registers it: a run of a plugin's task opened without it fails this way."""
    found = _UNKNOWN.search(message)
    if found is None:
        return message
    kind = found.group(1).replace("model.kind", "model")
    return (f"{message}; if {kind} {found.group(2)!r} is your own, pass the module that registers it: "
            f"metods-evo --import MODULE COMMAND ...")


__all__ = ["ENTRY_POINT_GROUP", "PluginError", "import_plugin", "load_entry_points", "with_import_hint"]
