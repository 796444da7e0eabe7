"""Shared by the test modules (``from helpers import cli``): the command line run in-process or as a user runs it,
and the check of its answer to bad input."""

import subprocess
import sys

from click.testing import CliRunner, Result

from metods_evo.cli import main


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
