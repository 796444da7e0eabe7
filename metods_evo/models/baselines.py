"""Reference policies without memory or learning: the "random" rows of a comparison.

``RandomPolicy`` ignores its inputs. Discrete tasks: zero logits, i.e. a uniform choice among the actions at
every step. Continuous tasks: a Gaussian N(0, exp(log_std)^2) per action coordinate, which the rollout then
clips into the task's bounds [low, high]. After clipping this is *not* uniform on [low, high]: it is the
Gaussian's density inside the bounds plus point masses at the bounds, P(a = low) = Phi(low / std) and
P(a = high) = 1 - Phi(high / std) (with the initial std = exp(0) = 1 and bounds [-1, 1]: about 16 % of the
draws sit at each bound, and the other 68 % follow a bell centred on 0).

The model is ``stochastic``: the rollout and ``Agent.act`` always sample it, even when greedy actions are
asked for (the arg-max of zero logits would be a constant action). Its memory is empty (``{}``), and
theta holds a value bias (so the optimizers have something to hold and the critic a baseline) plus, for
continuous tasks, the ``log_std`` that the rollout reads. That log_std starts at ``LOG_STD`` but is part
of theta like MetODS's, so an optimizer that trains this model can change the noise scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metods_evo.models.params import ParamSpec

if TYPE_CHECKING:  # annotations only: config imports the model registry
    from metods_evo.config import ModelConfig

LOG_STD = 0.0
"""Initial log standard deviation of the continuous random policy (std 1, before clipping)."""


class RandomPolicy:
    stochastic = True
    config_fields = ()
    plasticity: tuple[str, ...] = ()  # no plastic weights: nothing of theta shapes within-episode plasticity

    def __init__(self, cfg: ModelConfig, obs_dim: int, num_actions: int, action_dim: int = 0):
        if (num_actions > 0) == (action_dim > 0):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        self.cfg, self.obs_dim, self.num_actions, self.action_dim = cfg, obs_dim, num_actions, action_dim
        shapes: dict[str, tuple[int, ...]] = {"value_b": (1,)}
        if action_dim:
            shapes["log_std"] = (action_dim,)
        self.spec = ParamSpec(tuple(shapes), tuple(shapes.values()))

    @property
    def num_params(self) -> int:
        return self.spec.num_params

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """Value bias 0 (and log_std ``LOG_STD``)."""
        return torch.cat([torch.zeros(1), torch.full((self.action_dim,), LOG_STD)])

    def initial_state(self, params: dict[str, Tensor], num_agents: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """No memory: an empty state."""
        return {}

    def step(self, params: dict[str, Tensor], state: dict[str, Tensor], obs: Tensor, prev_action: Tensor,
             prev_reward: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Zero logits (or zero Gaussian mean) ``[P, E, A]`` and the value bias ``[P, E]``, for all agents."""
        pop, agents = obs.shape[:2]
        bias = params["value_b"]
        out = bias.new_zeros(pop, agents, self.num_actions or self.action_dim)
        return out, bias.expand(pop, agents), state
