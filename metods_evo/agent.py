"""Python API for trained agents: ``load_agent(run_dir)`` -> an ``Agent``.

The episode loop (``docs/python-api.md`` has a complete one over ``gymnasium.make_vec``)::

    agent = metods_evo.load_agent("runs/harlow-ppo-default")
    action, state = agent.predict(obs, state, episode_start, reward=reward)

``predict`` keeps the model's memory, the previous action and where episodes start inside the returned
``AgentState``: the caller passes back the state, ``episode_start`` (True where ``obs`` is the first observation
of an episode) and the reward the environment returned with ``obs``.

The lower-level ``initial_state`` / ``act`` leave all of that to the caller::

    state = agent.initial_state(batch_size)
    action, state = agent.act(obs, prev_action, prev_reward, state)

obs is float32 ``[B, obs_dim]`` exactly as the task returns it; prev_reward float32 ``[B]``. Discrete
tasks: prev_action int64 ``[B]`` (-1 at episode start), action int64 ``[B]``. Continuous tasks:
prev_action float32 ``[B, act_dim]`` (zeros at episode start), action float32 ``[B, act_dim]`` inside
the task's bounds (the Gaussian policy's sample, or its mean with ``deterministic=True``, clipped).
There the state is the model's raw memory ``{name: [1, B, ...]}`` (the leading 1 is the population axis
of the batched model), reset by the caller with ``initial_state`` at episode start.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metods_evo.config import RunConfig
from metods_evo.models import build_model
from metods_evo.rollout import env_action, first_action, sample_gaussian, select_actions
from metods_evo.runs import RunDir
from metods_evo.tasks import make_task


class AgentState:
    """What ``Agent.predict`` carries from one call to the next for B episodes: pass back the one it returned.

    ``memory``: the model's memory per episode, ``{name: [B, ...]}`` (MetODS: the plastic weights ``"W"``
    ``[B, N, N]``; RL²: the GRU state ``"h"`` ``[B, H]``), views for inspection (writing into them changes the
    memory). ``prev_action``: the
    action each episode took last, which the model reads on the next step.
    """

    __slots__ = ("_memory", "prev_action")

    def __init__(self, memory: dict[str, Tensor], prev_action: Tensor):
        # The model is population-batched: its memory is [P = 1, B, ...]. Kept private so that nobody indexes
        # the wrong axis; ``memory`` shows it without the population axis.
        self._memory, self.prev_action = memory, prev_action

    @property
    def batch_size(self) -> int:
        return self.prev_action.shape[0]

    @property
    def memory(self) -> dict[str, Tensor]:
        return {name: value[0] for name, value in self._memory.items()}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {list(value.shape)}" for name, value in self.memory.items())
        return f"AgentState(batch_size={self.batch_size}, memory={{{shapes}}})"


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
        """Raw model memory for ``batch_size`` fresh episodes, for ``act``: ``{name: [1, batch_size, ...]}``."""
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

    @torch.no_grad()
    def predict(self, obs: Any, state: AgentState | None = None, episode_start: Any = None,
                deterministic: bool | None = None, *, reward: Any = None) -> tuple[Any, AgentState]:
        """One step for B episodes, as Stable-Baselines3's recurrent ``predict`` -> (action, state).

        ``obs``: ``[B, obs_dim]`` (or one ``[obs_dim]`` observation: then the action is unbatched too).
        ``state``: what the last call returned; None starts B fresh episodes. ``episode_start``: bool ``[B]``, True
        where ``obs`` is the first observation of an episode; those rows get fresh memory and no previous
        action or reward. After ``reset()`` that is every row (``state=None`` implies it). With gymnasium's
        NEXT_STEP autoreset (``make_vec`` here, and gymnasium's default) a sub-env whose step returned
        ``terminated | truncated`` starts its next episode one step *later*: the step in between ignores its
        action and returns the new episode's first observation, so pass the previous step's flags (the loop in
        ``docs/python-api.md``). With SAME_STEP autoreset (Stable-Baselines3's VecEnv) pass the flags of the step
        that returned ``obs``. ``reward``: ``[B]``, what the environment returned with ``obs`` (the model reads its
        previous reward); needed wherever an episode goes on. ``deterministic=None``: the agent's trained mode.

        The action is a numpy array when ``obs`` is one (a torch tensor when ``obs`` is), ready for ``env.step``.
        Models whose memory changes shape within an episode (MAML's transition buffers) can only restart every
        row at once.
        """
        as_numpy = not isinstance(obs, Tensor)
        obs = torch.as_tensor(np.asarray(obs) if as_numpy else obs, dtype=torch.float32, device=self.device)
        single = obs.dim() == 1
        if single:
            obs = obs.unsqueeze(0)
        batch = obs.shape[0]
        start = self._rows(episode_start, batch, torch.bool, "episode_start", default=state is None)
        if state is None:
            if not bool(start.all()):
                raise ValueError("state=None starts every episode: episode_start must be all True (or None)")
            memory, prev_action = self.initial_state(batch), first_action(self.task, (batch,), self.device)
        else:
            if state.batch_size != batch:
                raise ValueError(f"state holds {state.batch_size} episodes, obs {batch}")
            memory, prev_action = self._restart(state, start)
        if bool(start.all()):
            prev_reward = torch.zeros(batch, device=self.device)
        elif reward is None:
            raise ValueError("predict needs reward=: the reward the environment returned with obs (the model reads "
                             "its previous reward), wherever an episode goes on")
        else:
            prev_reward = self._rows(reward, batch, torch.float32, "reward").masked_fill(start, 0.0)
        action, memory = self.act(obs, prev_action, prev_reward, memory, deterministic)
        state = AgentState(memory, action)
        if single:
            action = action[0]
        return (action.cpu().numpy() if as_numpy else action), state

    def _restart(self, state: AgentState, start: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``state``'s memory and previous action, with fresh ones in the rows where ``start``."""
        if not bool(start.any()):
            return state._memory, state.prev_action
        fresh, batch = self.initial_state(state.batch_size), state.batch_size
        if bool(start.all()):
            return fresh, first_action(self.task, (batch,), self.device)
        memory = {}
        for name, value in state._memory.items():
            if name not in fresh or fresh[name].shape != value.shape:
                raise ValueError(f"model.kind={self.cfg.model.kind!r} keeps a memory that changes shape within an "
                                 f"episode ({name!r}): its episodes can only start all at once")
            memory[name] = torch.where(start.view(1, batch, *[1] * (value.dim() - 2)), fresh[name], value)
        first = first_action(self.task, (batch,), self.device)
        prev_action = torch.where(start.view(batch, *[1] * (first.dim() - 1)), first, state.prev_action)
        return memory, prev_action

    def _rows(self, value: Any, batch: int, dtype: torch.dtype, name: str, default: bool = False) -> Tensor:
        """``value`` as a ``[batch]`` tensor (None: ``default`` everywhere; a scalar: the same for every row)."""
        if value is None:
            return torch.full((batch,), default, dtype=dtype, device=self.device)
        rows = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value, device=self.device)
        if rows.dim() == 0:
            rows = rows.expand(batch)
        if tuple(rows.shape) != (batch,):
            raise ValueError(f"{name} must be [{batch}] (one per observation), got {list(rows.shape)}")
        return rows.to(dtype)


def load_agent(run_dir: str | os.PathLike, device: str = "cpu", seed: int = 0, agent: str = "best") -> Agent:
    """The run's best theta (``agent.pt``), or with ``agent="last"`` its latest checkpoint's, as an ``Agent``."""
    run = RunDir.open(run_dir)
    return Agent(run.config(), run.load_agent_state(agent)["theta"], device=device, seed=seed)
