"""Python API for trained agents: ``load_agent(run_dir)`` -> an ``Agent`` with ``initial_state`` / ``act``.

    agent = metods_evo.load_agent("runs/harlow__es-pgpe__s0__...")
    state = agent.initial_state(batch_size)
    action, state = agent.act(obs, prev_action, prev_reward, state)

obs is float32 ``[B, obs_dim]`` exactly as the task returns it; prev_action int64 ``[B]`` (-1 at
episode start); prev_reward float32 ``[B]``; action int64 ``[B]``. The state is the plastic
weights, carried explicitly by the caller: reset it with ``initial_state`` at episode start.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from metods_evo.config import RunConfig
from metods_evo.models import build_model
from metods_evo.rollout import select_actions
from metods_evo.runs import RunDir
from metods_evo.tasks import make_task


class Agent:
    def __init__(self, cfg: RunConfig, theta: Tensor, device: str = "cpu", seed: int = 0):
        self.cfg, self.device = cfg, torch.device(device)
        task = make_task(cfg.task, **cfg.task_options)
        self.obs_dim, self.num_actions = task.obs_dim, task.num_actions
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
        prev_action = torch.as_tensor(prev_action, dtype=torch.long, device=self.device)
        prev_reward = torch.as_tensor(prev_reward, dtype=torch.float32, device=self.device)
        logits, _, state = self.model.step(self.params, state, obs.unsqueeze(0), prev_action.unsqueeze(0),
                                           prev_reward.unsqueeze(0))
        greedy = self.cfg.action_mode() == "greedy" if deterministic is None else deterministic
        action = select_actions(logits[0], "greedy" if greedy else "sample", self.generator)
        return action, state


def load_agent(run_dir: str | os.PathLike, device: str = "cpu", seed: int = 0) -> Agent:
    """The run's best theta (``agent.pt``) wrapped as an ``Agent``."""
    run = RunDir.open(run_dir)
    return Agent(run.config(), run.load_agent_state()["theta"], device=device, seed=seed)
