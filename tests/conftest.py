import os
import subprocess
import sys

import pytest
import torch

# Builds the three C++ extensions (batched MuJoCo stepper, fused step, fused rollout) into the on-disk cache; each
# loader falls back quietly where it cannot compile, and the tests that need one then skip as before.
WARM_KERNELS = """
from metods_evo.tasks import mujoco_batch
from metods_evo.models import fused
from metods_evo import fused_rollout
mujoco_batch._load(); fused._load(); fused_rollout._load()
"""
_WARM = pytest.StashKey[subprocess.Popen]()  # the background build, for pytest_sessionfinish to wait on

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (pytest -n) share the cores: one thread each, here and in the subprocesses a test starts
    # (OpenMP threads waiting for a busy core cost far more than they gain).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_sessionstart(session):
    """On a fresh machine (CI) the kernels cost a few minutes of one core to compile. Build them in a background
    process while the first tests run: a test that needs one meanwhile waits on torch's build lock, then loads it.
    With parallel workers only the controller starts the build."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    session.config.stash[_WARM] = subprocess.Popen([sys.executable, "-c", WARM_KERNELS], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)


def pytest_collection_modifyitems(config, items):
    """A test marked ``gpu`` skips where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def pytest_sessionfinish(session):
    process = session.config.stash.get(_WARM, None)
    if process is not None:
        process.wait()  # never kill it mid-build: torch's lock file would stay, and later builds would wait on it


@pytest.fixture
def work_in_tmp(tmp_path, monkeypatch):
    """Default run directories (runs/...) land in a temporary folder, never in the repository; a module opts in with
    ``pytestmark = pytest.mark.usefixtures("work_in_tmp")``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def bandit_task():
    """test_gradient.py's two-armed bandit (the paying arm hidden per episode), registered for one test: its id."""
    from metods_evo.tasks import TASKS, register

    register("bandit-test", "test_gradient:TwoArmedBandit")
    yield "bandit-test"
    TASKS.pop("bandit-test")


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
