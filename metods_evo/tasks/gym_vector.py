"""Expose any registered task as a gymnasium ``VectorEnv`` (``gymnasium.make_vec("metods_evo/Harlow-v0")``).

numpy in, numpy out, with gymnasium's next-step autoreset: the step after an episode ends resets
that sub-environment (its reward is 0 and its ``terminated``/``truncated`` are False).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def register_gymnasium(spec) -> None:
    import gymnasium

    if spec.gym_id in gymnasium.registry:
        return

    def make(num_envs: int = 1, **options: Any):
        from metods_evo.tasks import make_task

        return TaskVectorEnv(make_task(spec.id, **options), num_envs)

    gymnasium.register(id=spec.gym_id, vector_entry_point=make)


def _vector_env_base():
    import gymnasium

    return gymnasium.vector.VectorEnv


class TaskVectorEnv(_vector_env_base()):
    def __init__(self, task, num_envs: int):
        import gymnasium
        from gymnasium import spaces

        self.metadata = {"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP}

        self.task, self.num_envs = task, num_envs
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (task.obs_dim,), np.float32)
        self.single_action_space = spaces.Discrete(task.num_actions) if task.discrete else spaces.Box(
            -1.0, 1.0, (task.action_dim,), np.float32)
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space, num_envs)
        self._generator = torch.Generator(device=task.device)
        self._state = None
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if isinstance(seed, (list, tuple)):  # gymnasium allows one seed per sub-env; the batch takes one stream
            seed = seed[0]
        self._generator.manual_seed(int(seed) if seed is not None else int(np.random.randint(2**31)))
        self._state, obs = self.task.reset(self.num_envs, self._generator)
        self._obs = obs
        self._needs_reset[:] = False
        return obs.cpu().numpy(), {}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = torch.as_tensor(np.asarray(actions), device=self.task.device)
        state, obs, reward, done = self.task.step(self._state, action, self._generator)
        reward, done = reward.clone(), done.clone()
        if self._needs_reset.any():
            # Next-step autoreset: sub-environments that ended last step start a fresh episode now.
            mask = torch.as_tensor(self._needs_reset, device=self.task.device)
            fresh_state, fresh_obs = self.task.reset(self.num_envs, self._generator)
            state = {k: v if k.startswith("_") else torch.where(mask.view(-1, *[1] * (v.dim() - 1)), fresh_state[k], v)
                     for k, v in state.items()}
            obs = torch.where(mask[:, None], fresh_obs, obs)
            reward[mask], done[mask] = 0.0, False
        self._state = state
        cut = done & self.task.time_limit_reached(state)
        ended = done.cpu().numpy()
        self._needs_reset = ended.copy()
        truncated = cut.cpu().numpy()
        return obs.cpu().numpy(), reward.cpu().numpy(), ended & ~truncated, truncated, {}
