"""What the MuJoCo-backed tasks (cheetah-dir / ant-dir, Meta-World) share: simulators held by the task, stepped by
``sim_threads`` worker threads, and pickling by options.

The simulators (MuJoCo models and data, gymnasium or Meta-World envs) and the thread pool cannot be pickled; they
are scratch space, since every episode's state lives in the task state. So a task pickles as its device and
constructor options, and unpickling builds it again from them (ES checkpoints pickle the problem and with it the
task).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from metods_evo.tasks.base import Task


class MujocoPoolTask(Task):
    """A task that steps its batch on per-worker simulators. ``options`` are the keyword arguments that rebuild it
    (``type(self)(device, **options)``) and hold ``sim_threads``, the number of workers."""

    def __init__(self, device: str | torch.device, options: dict[str, Any]):
        super().__init__(device)
        sim_threads = options["sim_threads"]
        if sim_threads < 1:
            raise ValueError(f"sim_threads must be >= 1, got {sim_threads}")
        self._options = options
        self.sim_threads = int(sim_threads)
        # Worker 0 runs on the calling thread when it is the only one.
        self._pool = ThreadPoolExecutor(self.sim_threads) if self.sim_threads > 1 else None

    def __getstate__(self) -> dict:
        return {"device": self.device, "options": self._options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["device"], **state["options"])

    def _run_workers(self, work: Callable[[int], None]) -> None:
        """``work(worker)`` for every worker index, on the pool's threads; returns when all are done and re-raises
        the first error."""
        if self._pool is None:
            work(0)
        else:
            list(self._pool.map(work, range(self.sim_threads)))
