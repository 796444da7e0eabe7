"""Python API for trained agents: ``load_agent(run_dir)`` -> an ``Agent`` with ``initial_state`` / ``act``.

    agent = metods_evo.load_agent("runs/harlow__es-pgpe__s0__...")
    state = agent.initial_state(batch_size)
    action, state = agent.act(obs, prev_action, prev_reward, state)

obs is float32 ``[B, obs_dim]`` exactly as the task returns it; prev_reward float32 ``[B]``. Discrete
tasks: prev_action int64 ``[B]`` (-1 at episode start), action int64 ``[B]``. Continuous tasks:
prev_action float32 ``[B, act_dim]`` (zeros at episode start), action float32 ``[B, act_dim]`` inside
the task's bounds (the Gaussian policy's sample, or its mean with ``deterministic=True``, clipped).
The state is the model's memory (MetODS: the plastic weights), carried explicitly by the caller:
reset it with ``initial_state`` at episode start.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from metods_evo.config import RunConfig
from metods_evo.models import build_model
from metods_evo.rollout import env_action, sample_gaussian, select_actions
from metods_evo.runs import RunDir
from metods_evo.tasks import make_task


class Agent:
    def __init__(self, cfg: RunConfig, theta: Tensor, device: str = "cpu", seed: int = 0):
        self.cfg, self.device = cfg, torch.device(device)
        task = make_task(cfg.task, **cfg.task_options)
        self.task = task
        self.obs_dim, self.num_actions, self.action_dim = task.obs_dim, task.num_actions, task.action_dim
        self.model = build_model(cfg, task)
        self.theta = theta.to(self.device, torch.float32)
        self.params = self.model.spec.unflatten(self.theta)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def initial_state(self, batch_size: int) -> dict[str, Tensor]:
        """Plastic state for ``batch_size`` fresh episodes."""
        return self.model.initial_state(self.params, batch_size, self.generator)

    @torch.no_grad()
    def act(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, state: dict[str, Tensor],
            deterministic: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One step for B agents. ``deterministic=None`` uses the mode the agent was trained with."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must be [B, {self.obs_dim}], got {tuple(obs.shape)}")
        discrete = self.task.discrete
        prev_action = torch.as_tensor(prev_action, dtype=torch.long if discrete else torch.float32,
                                      device=self.device)
        expected = (obs.shape[0],) if discrete else (obs.shape[0], self.action_dim)
        if tuple(prev_action.shape) != expected:
            raise ValueError(f"prev_action must be {list(expected)}, got {list(prev_action.shape)}")
        prev_reward = torch.as_tensor(prev_reward, dtype=torch.float32, device=self.device)
        out, _, state = self.model.step(self.params, state, obs.unsqueeze(0), prev_action.unsqueeze(0),
                                        prev_reward.unsqueeze(0))
        greedy = self.cfg.action_mode() == "greedy" if deterministic is None else deterministic
        mode = "greedy" if greedy and not getattr(self.model, "stochastic", False) else "sample"
        if discrete:
            return select_actions(out[0], mode, self.generator), state
        action = sample_gaussian(out, self.params["log_std"], mode, self.generator)[0]
        return env_action(action, self.task), state


def load_agent(run_dir: str | os.PathLike, device: str = "cpu", seed: int = 0, agent: str = "best") -> Agent:
    """The run's best theta (``agent.pt``), or with ``agent="last"`` its latest checkpoint's, as an ``Agent``."""
    run = RunDir.open(run_dir)
    return Agent(run.config(), run.load_agent_state(agent)["theta"], device=device, seed=seed)
