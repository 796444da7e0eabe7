"""Expose any registered task to gymnasium: ``gymnasium.make_vec("metods_evo/Harlow-v0", num_envs=64)`` steps the
batched task as one ``VectorEnv``; ``gymnasium.make("metods_evo/Harlow-v0")`` gives one episode at a time
(``gym_single.TaskEnv``). One id serves both (gymnasium 1.x looks up ``vector_entry_point`` for ``make_vec`` and
``entry_point`` for ``make``), so ``make_vec(id, vectorization_mode="sync")`` works as well.

The vector env is numpy in, numpy out, with gymnasium's next-step autoreset: the step after an episode ends
resets that sub-environment (its action is ignored, its reward is 0 and its ``terminated``/``truncated`` are
False).

``spec.max_episode_steps`` of a made env is its task's episode length under the options it was made with. The
registry entry leaves it None: options change the length (Harlow's ``max_steps``, the maze's ``episode_steps``),
and a registered value would make ``gymnasium.make`` wrap a ``TimeLimit`` that cuts lengthened episodes short.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from metods_evo.tasks.base import Task, TaskState


def make_vector_env(spec, num_envs: int = 1, max_episode_steps: int | None = None, **options: Any) -> TaskVectorEnv:
    """``gymnasium.make_vec``'s entry point: ``num_envs`` episodes of the task of ``spec`` (its ``TaskSpec``) built
    with ``options``."""
    return TaskVectorEnv(spec.make(**options), num_envs, max_episode_steps)


def observation_space(task: Task) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, (task.obs_dim,), np.float32)


def action_space(task: Task) -> spaces.Space:
    """Discrete(num_actions), or the task's own bounds ``[action_low, action_high]^action_dim``."""
    if task.discrete:
        return spaces.Discrete(task.num_actions)
    return spaces.Box(task.action_low, task.action_high, (task.action_dim,), np.float32)


def task_action(task: Task, actions: Any, batch: int) -> torch.Tensor:
    """Actions from gymnasium (numpy, ``[batch]`` ints or ``[batch, action_dim]`` floats) as the task takes them;
    continuous ones clipped into the task's bounds, as the project's rollout does (``rollout.env_action``)."""
    if task.discrete:
        action = torch.as_tensor(np.asarray(actions, dtype=np.int64), device=task.device)
        expected: tuple[int, ...] = (batch,)
    else:
        action = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=task.device)
        expected = (batch, task.action_dim)
    if tuple(action.shape) != expected:
        raise ValueError(f"actions must have shape {expected}, got {tuple(action.shape)}")
    return action if task.discrete else action.clamp(task.action_low, task.action_high)


def merge_rows(mask: torch.Tensor, fresh: TaskState, state: TaskState) -> TaskState:
    """``state`` with the rows where ``mask`` (bool ``[B]``) taken from ``fresh``; ``_``-keys stay ``state``'s."""
    return {k: v if k.startswith("_") else torch.where(mask.view(-1, *[1] * (v.dim() - 1)), fresh[k], v)
            for k, v in state.items()}


class EpisodeLengthSpec:
    """``spec`` with ``max_episode_steps`` set to the env's episode length, whatever ``make`` assigns."""

    max_episode_steps: int
    _spec: gymnasium.envs.registration.EnvSpec | None = None

    @property
    def spec(self) -> gymnasium.envs.registration.EnvSpec | None:
        return self._spec

    @spec.setter
    def spec(self, value: gymnasium.envs.registration.EnvSpec | None) -> None:
        # gymnasium.make / make_vec assign the registry's spec after construction, with max_episode_steps None.
        self._spec = None if value is None else dataclasses.replace(value, max_episode_steps=self.max_episode_steps)


class TaskVectorEnv(EpisodeLengthSpec, gymnasium.vector.VectorEnv):
    """``num_envs`` episodes of ``task`` stepped as one batch (module docstring).

    Seeding: the batch draws from one random stream. ``reset(seed=s)`` seeds it; ``reset()`` continues it (a
    fresh random seed on the first call). A list of seeds is taken where it means the same thing, gymnasium's
    expansion ``[s, s + 1, ..., s + num_envs - 1]`` of ``seed=s`` (or all None); independent per-sub-env seeds are
    refused, since no sub-environment has a stream of its own. ``options``: only ``{"reset_mask": bool [num_envs]}``
    (gymnasium's partial reset: those sub-environments start new episodes, the others go on).
    ``max_episode_steps`` (``make_vec(..., max_episode_steps=K)``): truncate episodes after K steps, as
    gymnasium's ``TimeLimit``; the task's own limit still holds.
    """

    def __init__(self, task: Task, num_envs: int, max_episode_steps: int | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.metadata = {"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP}
        self.task, self.num_envs = task, num_envs
        self.time_limit = max_episode_steps
        self.max_episode_steps = min(task.max_steps, max_episode_steps or task.max_steps)
        self.single_observation_space = observation_space(task)
        self.single_action_space = action_space(task)
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space, num_envs)
        self._generator = torch.Generator(device=task.device)
        self._seeded = False
        self._state: TaskState | None = None
        self._obs: torch.Tensor | None = None
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        mask = self._reset_mask(options)
        seed = self._batch_seed(seed)
        if seed is not None:
            self._generator.manual_seed(seed)
        elif not self._seeded:
            self._generator.manual_seed(int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1))
        self._seeded = True
        fresh_state, fresh_obs = self.task.reset(self.num_envs, self._generator)
        if mask is None or self._state is None:
            self._state, self._obs = fresh_state, fresh_obs
            self._needs_reset[:], self._elapsed[:] = False, 0
        else:
            rows = torch.as_tensor(mask, device=self.task.device)
            self._state = merge_rows(rows, fresh_state, self._state)
            self._obs = torch.where(rows[:, None], fresh_obs, self._obs)
            self._needs_reset[mask], self._elapsed[mask] = False, 0
        return self._obs.cpu().numpy(), {}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = task_action(self.task, actions, self.num_envs)
        state, obs, reward, done = self.task.step(self._state, action, self._generator)
        reward, done = reward.clone(), done.clone()
        restart = self._needs_reset
        if restart.any():
            # Next-step autoreset: sub-environments that ended last step start a fresh episode now.
            mask = torch.as_tensor(restart, device=self.task.device)
            fresh_state, fresh_obs = self.task.reset(self.num_envs, self._generator)
            state = merge_rows(mask, fresh_state, state)
            obs = torch.where(mask[:, None], fresh_obs, obs)
            reward[mask], done[mask] = 0.0, False
        self._state, self._obs = state, obs
        self._elapsed = np.where(restart, 0, self._elapsed + 1)
        ended = done.cpu().numpy()
        truncated = (done & self.task.time_limit_reached(state)).cpu().numpy()
        if self.time_limit is not None:
            cut = ~ended & (self._elapsed >= self.time_limit)
            ended, truncated = ended | cut, truncated | cut
        self._needs_reset = ended.copy()
        return obs.cpu().numpy(), reward.cpu().numpy(), ended & ~truncated, truncated, {}

    def _batch_seed(self, seed: int | list[int | None] | None) -> int | None:
        """One seed for the batch's stream, from gymnasium's ``seed`` argument (class docstring)."""
        if seed is None or isinstance(seed, (int, np.integer)):
            return None if seed is None else int(seed)
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset(seed=[...]) takes one seed per sub-environment ({self.num_envs}), "
                             f"got {len(seeds)}")
        if all(s is None for s in seeds):
            return None
        if all(isinstance(s, (int, np.integer)) for s in seeds) and seeds == list(range(seeds[0],
                                                                                        seeds[0] + self.num_envs)):
            return int(seeds[0])
        raise ValueError(f"the {self.num_envs} sub-environments of {type(self).__name__} are one batch with one "
                         f"random stream, so they cannot take independent seeds: pass reset(seed=s) (the same as "
                         f"[s, s + 1, ..., s + {self.num_envs - 1}]) or seed=None")

    def _reset_mask(self, options: dict[str, Any] | None) -> np.ndarray | None:
        """``options["reset_mask"]`` checked as gymnasium's SyncVectorEnv checks it; other options are refused."""
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}: {type(self).__name__}.reset takes only "
                             f"'reset_mask' (task options are given to gymnasium.make_vec)")
        if mask is None:
            return None
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},), "
                             f"got {mask!r}")
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one sub-environment")
        return mask
