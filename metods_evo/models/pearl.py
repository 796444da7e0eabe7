"""PEARL's agent (Rakelly et al., 2019): a permutation-invariant context encoder and a latent-conditioned SAC policy.

The networks, functional and population-batched (parameters ``[P, ...]``, ReLU MLPs of ``cfg.pearl.layers`` hidden
layers of ``cfg.pearl.hidden`` units):

* **Encoder.** Each context transition c_i = (s, a, r, s') maps to a Gaussian factor over the latent z (``latent_dim``
  dims): ``(mu_i, sigma_i^2) = (out[:L], softplus(out[L:]))``, sigma_i^2 >= 1e-7. The posterior is their product,

      sigma^2 = 1 / sum_i 1 / sigma_i^2,    mu = sigma^2 * sum_i mu_i / sigma_i^2,

  which does not depend on the transitions' order; with no transition it is the prior N(0, I).
* **Policy.** A tanh-Gaussian on [s, z]: ``(mean, log_std) = MLP([s, z])``, log_std clamped to [-20, 2], the action
  ``tanh(u)``, u ~ N(mean, std^2), in (-1, 1): the optimizer trains on tasks whose action bounds are [-1, 1].

As a model of the package (``model.kind=pearl``, what ``metods-evo evaluate`` and ``load_agent`` play), each episode
infers z online from its own past transitions: the state keeps the running sums of 1 / sigma_i^2 and mu_i / sigma_i^2,
one factor is added per completed transition (the previous observation, action and reward with the current
observation), and z = mu + sigma * eps is a posterior sample with eps ~ N(0, I) drawn once per episode at its start
(so the first step plays a sample of the prior). The action is the policy's deterministic one, tanh(mean): the
optimizer declares greedy evaluation. ``log_std`` of theta exists because the rollout and ``Agent`` read a continuous
model's ``params["log_std"]``: it is ``UNUSED_LOG_STD`` and never trained, so a sampled action is the deterministic
one. The value output is zero (the critics are the trainer's, not part of the agent). The trainer
(``optimizers/pearl.py``) calls ``encode``, ``posterior`` and ``sample_action`` directly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from metods_evo.errors import ConfigError
from metods_evo.models.params import ParamSpec, linear

if TYPE_CHECKING:  # annotations only: config imports the model registry
    from metods_evo.config import ModelConfig

MIN_VARIANCE = 1e-7
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
UNUSED_LOG_STD = -20.0
"""theta's ``log_std``: std e^-20, so that ``Agent.predict(deterministic=False)`` plays the deterministic action too."""
LAST_LAYER_INIT = 3e-3
"""Output layers start uniform in +-3e-3 (SAC's and PEARL's init), so z and the actions start near 0."""


def mlp_shapes(prefix: str, sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """Weights ``{prefix}{i}_w [out, in]`` and biases ``{prefix}{i}_b [out]`` of an MLP with layer sizes ``sizes``."""
    shapes = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{prefix}{i}_w"], shapes[f"{prefix}{i}_b"] = (fan_out, fan_in), (fan_out,)
    return shapes


def mlp(params: dict[str, Tensor], prefix: str, layers: int, x: Tensor) -> Tensor:
    """ReLU MLP of ``layers`` + 1 linear maps, per individual: x ``[P, N, in]`` -> ``[P, N, out]``."""
    for i in range(layers):
        x = torch.relu(linear(x, params[f"{prefix}{i}_w"], params[f"{prefix}{i}_b"]))
    return linear(x, params[f"{prefix}{layers}_w"], params[f"{prefix}{layers}_b"])


def init_mlp(shapes: dict[str, tuple[int, ...]], generator: torch.Generator | None) -> dict[str, Tensor]:
    """Hidden weights uniform in +-1/sqrt(fan_in), the output layer (the last of ``shapes``) in +-``LAST_LAYER_INIT``,
    biases zero."""
    last = list(shapes)[-2]
    values = {}
    for name, shape in shapes.items():
        if name.endswith("_b"):
            values[name] = torch.zeros(shape)
            continue
        bound = LAST_LAYER_INIT if name == last else 1 / math.sqrt(shape[1])
        values[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return values


def posterior(mu: Tensor, variance: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The product of the Gaussian factors ``mu``, ``variance`` ``[..., N, L]`` over N (each factor weighted by
    ``weight`` ``[..., N]``, 0 or 1, when given) -> (mean, variance) ``[..., L]``; the prior N(0, I) where no factor
    counts."""
    precision = 1 / variance if weight is None else weight.unsqueeze(-1) / variance
    return combine(precision.sum(-2), (precision * mu).sum(-2))


def combine(precision: Tensor, weighted_mean: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, variance) from the sums of 1 / sigma_i^2 and mu_i / sigma_i^2; the prior N(0, I) where the first is 0."""
    empty = precision == 0
    variance = torch.where(empty, 1.0, 1 / precision.masked_fill(empty, 1.0))
    return torch.where(empty, 0.0, weighted_mean * variance), variance


def squash_log_prob(u: Tensor, log_prob_u: Tensor) -> Tensor:
    """log pi(tanh(u)) from log N(u): the change of variables, log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    return log_prob_u - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


class PEARL:
    """Stateless PEARL agent: encoder and policy weights in ``params``, the episode's posterior sums in ``state``."""

    config_fields = ("pearl",)
    plasticity: tuple[str, ...] = ()
    optimizers = ("pearl",)  # its policy's noise is not theta's log_std: the rollout-based optimizers cannot train it

    def __init__(self, cfg: ModelConfig, obs_dim: int, num_actions: int, action_dim: int = 0):
        if num_actions or not action_dim:
            raise ConfigError("model.kind=pearl needs a task with continuous actions (SAC's tanh-Gaussian policy)")
        self.cfg, self.obs_dim, self.num_actions, self.action_dim = cfg, obs_dim, 0, action_dim
        self.layers, self.latent_dim = cfg.pearl.layers, cfg.pearl.latent_dim
        hidden = [cfg.pearl.hidden] * self.layers
        self.context_dim = 2 * obs_dim + action_dim + 1
        self.encoder_shapes = mlp_shapes("enc", [self.context_dim, *hidden, 2 * self.latent_dim])
        self.policy_shapes = mlp_shapes("pi", [obs_dim + self.latent_dim, *hidden, 2 * action_dim])
        shapes = {**self.encoder_shapes, **self.policy_shapes, "log_std": (action_dim,)}
        self.spec = ParamSpec(tuple(shapes), tuple(shapes.values()))
        self.state_floats = 3 * self.latent_dim + obs_dim + 1

    @property
    def num_params(self) -> int:
        return self.spec.num_params

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        values = init_mlp(self.encoder_shapes, generator) | init_mlp(self.policy_shapes, generator)
        values["log_std"] = torch.full((self.action_dim,), UNUSED_LOG_STD)
        return self.spec.flatten({k: v.unsqueeze(0) for k, v in values.items()})[0]

    # ------------------------------------------------------------------ the networks
    def encode(self, params: dict[str, Tensor], context: Tensor) -> tuple[Tensor, Tensor]:
        """Each transition's factor: context ``[P, N, context_dim]`` -> (mu_i, sigma_i^2) ``[P, N, L]``."""
        out = mlp(params, "enc", self.layers, context)
        return out[..., :self.latent_dim], F.softplus(out[..., self.latent_dim:]).clamp(min=MIN_VARIANCE)

    def policy(self, params: dict[str, Tensor], obs: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std) of the pre-tanh Gaussian: obs ``[P, N, obs]``, z ``[P, N, L]`` -> ``[P, N, A]`` each."""
        out = mlp(params, "pi", self.layers, torch.cat([obs, z], -1))
        return out[..., :self.action_dim], out[..., self.action_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample_action(self, params: dict[str, Tensor], obs: Tensor, z: Tensor,
                      noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """(action in (-1, 1), log pi(action)) with u = mean + std * noise (reparameterized);
        ``noise=None``: the deterministic action tanh(mean), log-prob 0."""
        mean, log_std = self.policy(params, obs, z)
        if noise is None:
            return torch.tanh(mean), mean.new_zeros(mean.shape[:-1])
        u = mean + log_std.exp() * noise
        log_prob_u = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.tanh(u), squash_log_prob(u, log_prob_u)

    def context(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor) -> Tensor:
        """The encoder's input c = (s, a, r, s') ``[..., context_dim]``."""
        return torch.cat([obs, action.to(obs.dtype), reward.unsqueeze(-1).to(obs.dtype), next_obs], -1)

    # ------------------------------------------------------------------ as a model of the package
    def initial_state(self, params: dict[str, Tensor], num_agents: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Episode start: no factor yet, one posterior-sampling noise eps per agent, no previous observation."""
        ref = params["log_std"]
        batch = (ref.shape[0], num_agents)
        eps = torch.randn(*batch, self.latent_dim, generator=generator, device=ref.device, dtype=ref.dtype)
        return {"precision": ref.new_zeros(*batch, self.latent_dim), "weighted_mean": ref.new_zeros(
            *batch, self.latent_dim), "eps": eps, "prev_obs": ref.new_zeros(*batch, self.obs_dim),
            "started": ref.new_zeros(*batch, 1)}

    def step(self, params: dict[str, Tensor], state: dict[str, Tensor], obs: Tensor, prev_action: Tensor,
             prev_reward: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Add the transition that ``obs`` completes (none at the first step) to the posterior, sample z, act."""
        mu_i, variance_i = self.encode(params, self.context(state["prev_obs"], prev_action, prev_reward, obs))
        precision_i = state["started"] / variance_i  # 0 at the first step: no transition yet
        precision = state["precision"] + precision_i
        weighted_mean = state["weighted_mean"] + precision_i * mu_i
        mean, variance = combine(precision, weighted_mean)
        z = mean + variance.sqrt() * state["eps"]
        action, _ = self.sample_action(params, obs, z, None)
        state = {"precision": precision, "weighted_mean": weighted_mean, "eps": state["eps"], "prev_obs": obs,
                 "started": torch.ones_like(state["started"])}
        return action, action.new_zeros(action.shape[:-1]), state
