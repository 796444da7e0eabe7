"""RL^2 (Duan et al., 2016): a GRU policy whose hidden state is its only memory, functional and population-batched.

Per environment step, with x_t = [s_t, a_{t-1}, r_{t-1}] (a_{t-1} one-hot for discrete tasks, zeros at an
episode's start; the clipped action vector for continuous ones) and h_0 = 0 at every episode start, one GRU
cell in PyTorch's ``torch.nn.GRUCell`` convention (gates stacked r, z, n in the weights):

    r   = sigmoid(W_ir x + b_ir + W_hr h + b_hr)          (reset gate)
    z   = sigmoid(W_iz x + b_iz + W_hz h + b_hz)          (update gate)
    n   = tanh(W_in x + b_in + r * (W_hn h + b_hn))       (candidate)
    h_t = (1 - z) * n + z * h_{t-1}
    (logits or Gaussian mean, value) = linear heads of h_t

``gru_ih_w`` ``[3H, in]`` / ``gru_hh_w`` ``[3H, H]`` hold (W_ir | W_iz | W_in) / (W_hr | W_hz | W_hn), as
GRUCell's ``weight_ih`` / ``weight_hh``. Every parameter carries a leading population axis P and the state is
``{"h": [P, E, H]}``, so one call steps all P x E agents with batched matmuls; gradient training uses the
same code with P = 1 (BPTT through h).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metods_evo.models.params import ParamSpec, action_input, linear

if TYPE_CHECKING:  # annotations only: config imports the model registry
    from metods_evo.config import ModelConfig

UPDATE_GATE_BIAS = 1.0
"""Initial b_iz: z = sigmoid(1) ~ 0.73 at init, so h keeps most of its past by default (the GRU analogue of
an LSTM's forget-gate bias of 1) and gradients through the episode do not vanish at the first steps."""


class RL2:
    """Stateless GRU policy: all weights come in as ``params`` (from ``spec.unflatten``), state in and out."""

    config_fields = ("rl2",)  # the ModelConfig fields it reads (besides kind)
    plasticity: tuple[str, ...] = ()  # no plastic weights: nothing of theta shapes within-episode plasticity

    def __init__(self, cfg: ModelConfig, obs_dim: int, num_actions: int, action_dim: int = 0):
        if (num_actions > 0) == (action_dim > 0):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        self.cfg, self.obs_dim, self.num_actions, self.action_dim = cfg, obs_dim, num_actions, action_dim
        h = self.hidden = cfg.rl2.hidden
        self.input_dim = obs_dim + max(num_actions, action_dim) + 1
        out = num_actions or action_dim
        shapes: dict[str, tuple[int, ...]] = {
            "gru_ih_w": (3 * h, self.input_dim), "gru_ih_b": (3 * h,),
            "gru_hh_w": (3 * h, h), "gru_hh_b": (3 * h,),
            "policy_w": (out, h), "policy_b": (out,), "value_w": (1, h), "value_b": (1,),
        }
        if action_dim:
            shapes["log_std"] = (action_dim,)
        self.spec = ParamSpec(tuple(shapes), tuple(shapes.values()))

    @property
    def num_params(self) -> int:
        return self.spec.num_params

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A starting theta ``[D]``: fan-in scaled weights, zero biases except b_iz (``UPDATE_GATE_BIAS``),
        log_std -0.5 as MetODS."""
        values = {}
        for name, shape in zip(self.spec.names, self.spec.shapes):
            if name.endswith("_w"):
                values[name] = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
            else:
                values[name] = torch.zeros(shape)
        values["gru_ih_b"][self.hidden: 2 * self.hidden] = UPDATE_GATE_BIAS
        if "log_std" in values:
            values["log_std"] = torch.full_like(values["log_std"], -0.5)
        return self.spec.flatten({k: v.unsqueeze(0) for k, v in values.items()})[0]

    def initial_state(self, params: dict[str, Tensor], num_agents: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Hidden state at episode start: ``{"h": zeros [P, E, H]}``."""
        ref = params["gru_hh_b"]
        return {"h": ref.new_zeros(ref.shape[0], num_agents, self.hidden)}

    def inputs(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor) -> Tensor:
        """x = [obs, previous action (one-hot, zeros for -1; or the float vector), previous reward] ``[P, E, in]``."""
        action_in = action_input(prev_action, self.num_actions, obs.dtype)
        return torch.cat([obs, action_in, prev_reward.unsqueeze(-1).to(obs.dtype)], dim=-1)

    def gru(self, params: dict[str, Tensor], h: Tensor, x: Tensor) -> Tensor:
        """One GRU cell step (module docstring) for all agents: ``h [P, E, H]``, ``x [P, E, in]`` -> ``h_t``."""
        gi = linear(x, params["gru_ih_w"], params["gru_ih_b"])
        gh = linear(h, params["gru_hh_w"], params["gru_hh_b"])
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n)  # = (1 - z) * n + z * h

    def step(self, params: dict[str, Tensor], state: dict[str, Tensor], obs: Tensor, prev_action: Tensor,
             prev_reward: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One environment step for all P x E agents -> (policy output ``[P, E, A]``, value ``[P, E]``, state)."""
        h = self.gru(params, state["h"], self.inputs(obs, prev_action, prev_reward))
        value = linear(h, params["value_w"], params["value_b"])[..., 0]
        return linear(h, params["policy_w"], params["policy_b"]), value, {"h": h}
