"""One episode at a time as a ``gymnasium.Env``: ``gymnasium.make("metods_evo/Harlow-v0")`` (registered beside
the vector env by ``register_gymnasium``), the batched task stepped with a batch of 1."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import torch

from metods_evo.tasks.base import Task, TaskState
from metods_evo.tasks.gym_vector import EpisodeLengthSpec, action_space, make_vector_env, observation_space, task_action


def register_gymnasium(spec) -> None:
    """Register ``spec.gym_id`` (``spec``: a ``TaskSpec``) with gymnasium: a single env (``make``) and a vector env
    (``make_vec``)."""
    if spec.gym_id in gymnasium.registry:
        return
    # partials of module-level functions, not closures: AsyncVectorEnv pickles the entry point.
    gymnasium.register(id=spec.gym_id, entry_point=functools.partial(make_env, spec),
                       vector_entry_point=functools.partial(make_vector_env, spec))


def make_env(spec, **options: Any) -> TaskEnv:
    """``gymnasium.make``'s entry point: the task of ``spec`` (its ``TaskSpec``) built with ``options``."""
    return TaskEnv(spec.make(**options))


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
