"""Shared by the test modules (``from helpers import cli``): the command line run in-process or as a user runs it,
the check of its answer to bad input, and the markers of tests whose task needs an optional extra."""

import subprocess
import sys

import pytest
from click.testing import CliRunner, Result

from metods_evo.cli import main

EXTRA_OF_TASK = {"cheetah-dir": "mujoco", "ant-dir": "mujoco", "metaworld-reach": "metaworld",
                 "metaworld-push": "metaworld", "metaworld-ml10": "metaworld"}
"""The optional extra (pyproject.toml) each registered task's simulator needs; the others need none."""
EXTRA_MARKS = {"mujoco": (pytest.mark.mujoco,), "metaworld": (pytest.mark.mujoco, pytest.mark.metaworld)}
"""The markers of a test that needs an extra (Meta-World runs on MuJoCo)."""


def task_params(task_ids) -> list:
    """``task_ids`` for ``pytest.mark.parametrize``, each carrying the markers of the extra its task needs."""
    return [pytest.param(task_id, id=task_id, marks=EXTRA_MARKS.get(EXTRA_OF_TASK.get(task_id), ()))
            for task_id in task_ids]


def cli(*args, catch: bool = False) -> Result:
    """``metods-evo ARGS`` in-process through Click's runner (no interpreter start-up per call); paths and numbers
    may be passed as they are. A crash (any exception but the CLI's own exit) is re-raised so that the test fails with
    its traceback; ``catch=True`` leaves it in ``result.exception``, for tests of how a crash surfaces."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if not catch and result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def cli_process(*args, **kwargs) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter: exit code and stderr exactly as a user sees them, and
    nothing imported or registered by the test process."""
    return subprocess.run([sys.executable, "-m", "metods_evo.cli", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def refused(result: Result | subprocess.CompletedProcess, *parts: str) -> None:
    """The CLI's answer to bad input: exit code 2 and exactly one ``error:`` line on stderr, naming every part."""
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    lines = result.stderr.strip().splitlines()
    assert code == 2, (code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(part in lines[0] for part in parts), (parts, result.stderr)


def local_ray_instance(num_cpus: int):
    """Generator body of a module fixture: a local Ray instance without the dashboard (evotorch only calls
    ``ray.init()`` when none is running), shut down afterwards if this started it; skips where Ray cannot start."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        except Exception as error:  # e.g. a sandbox that forbids the processes or sockets Ray needs
            pytest.skip(f"a local Ray instance could not start here: {type(error).__name__}: {error}")
    yield ray
    if started:
        ray.shutdown()
