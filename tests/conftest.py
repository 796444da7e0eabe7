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


def pytest_sessionstart(session):
    """On a fresh machine (CI) the kernels cost a few minutes of one core to compile. Build them in a background
    process while the first tests run: a test that needs one meanwhile waits on torch's build lock, then loads it."""
    session.config.stash[_WARM] = subprocess.Popen([sys.executable, "-c", WARM_KERNELS], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)


def pytest_sessionfinish(session):
    process = session.config.stash.get(_WARM, None)
    if process is not None:
        process.wait()  # never kill it mid-build: torch's lock file would stay, and later builds would wait on it



@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
