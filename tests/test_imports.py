"""The package's import structure: every module imports alone, and the modules' imports form no cycle.

An import cycle makes a module's meaning depend on which module was imported first (names that are not yet defined
when the circle closes); the registries live with their kinds so that none is needed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metods_evo"
ROOT = PACKAGE.parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names[name] = path
    return names


def top_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``path`` imports when it is imported: its module-level import statements (not those
    inside functions, nor ``if TYPE_CHECKING:`` blocks, which never run)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_top_level_imports_resolve_modules_and_skip_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nimport metods_evo.config\nfrom metods_evo import tasks\n"
                      "from metods_evo.models import build_model\nif TYPE_CHECKING:\n    import metods_evo.runs\n"
                      "def f():\n    import metods_evo.train\n")
    assert top_level_imports(source, module_names()) == {"metods_evo.config", "metods_evo.tasks",
                                                         "metods_evo.models"}


@pytest.mark.slow
def test_package_imports_form_no_cycle():
    modules = module_names()
    graph = {name: top_level_imports(path, modules) - {name} for name, path in modules.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module imported first, in a state where no other module of the package is loaded (torch stays)."""
    script = (
        "import importlib, sys, traceback\n"
        "import torch, numpy\n"
        "failed = []\n"
        f"for name in {sorted(module_names())!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'metods_evo' or m.startswith('metods_evo.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as err:\n"
        "        if err.name and err.name.split('.')[0] != 'metods_evo':\n"
        "            continue  # an optional dependency that is not installed\n"
        "        failed.append(f'{name}: {traceback.format_exc().strip().splitlines()[-1]}')\n"
        "    except Exception:\n"
        "        failed.append(f'{name}: {traceback.format_exc().strip().splitlines()[-1]}')\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout
