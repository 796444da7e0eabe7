"""One episode at a time as a ``gymnasium.Env``: ``gymnasium.make("metods_evo/Harlow-v0")`` (registered beside
the vector env in ``gym_vector.register_gymnasium``), the batched task stepped with a batch of 1."""

from __future__ import annotations

from typing import Any

import gymnasium
import torch

from metods_evo.tasks.base import Task, TaskState
from metods_evo.tasks.gym_vector import EpisodeLengthSpec, action_space, observation_space, task_action


def make_env(task_id: str, **options: Any) -> TaskEnv:
    """``gymnasium.make``'s entry point: task ``task_id`` built with ``options``."""
    from metods_evo.tasks import make_task

    return TaskEnv(make_task(task_id, **options))


class TaskEnv(EpisodeLengthSpec, gymnasium.Env):
    """A batch of one episode of ``task`` (numpy in, numpy out).

    ``reset(seed=s)`` plays the same episodes as ``make_vec(id, num_envs=1).reset(seed=s)``; ``reset()`` continues
    the random stream. Stepping a finished episode is an error (call ``reset``): the task would only freeze it.
    No reset options and no rendering.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: Task):
        self.task = task
        self.observation_space = observation_space(task)
        self.action_space = action_space(task)
        self.max_episode_steps = task.max_steps
        self._generator = torch.Generator(device=task.device)
        self._seeded = False
        self._state: TaskState | None = None
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)  # np_random, which gymnasium's checks and wrappers expect
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}: {type(self).__name__}.reset takes none "
                             f"(task options are given to gymnasium.make)")
        if seed is not None:
            self._generator.manual_seed(int(seed))
        elif not self._seeded:
            self._generator.manual_seed(int(self.np_random.integers(2**63)))
        self._seeded = True
        self._state, obs = self.task.reset(1, self._generator)
        self._ended = False
        return obs[0].cpu().numpy().copy(), {}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self._ended:
            raise RuntimeError("the episode has ended (terminated or truncated): call reset() before step()")
        batch_action = task_action(self.task, [action], 1)
        self._state, obs, reward, done = self.task.step(self._state, batch_action, self._generator)
        truncated = bool((done & self.task.time_limit_reached(self._state))[0])
        self._ended = bool(done[0])
        return obs[0].cpu().numpy().copy(), float(reward[0]), self._ended and not truncated, truncated, {}
