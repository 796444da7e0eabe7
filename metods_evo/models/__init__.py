"""Model registry: ``register_model(kind, factory)`` and ``build_model(cfg, task)``.

A model is stateless and population-batched: its weights come in as ``params`` (``spec.unflatten`` of a
flat theta ``[P, D]``) and its memory as an explicit ``state`` dict of ``[P, E, ...]`` tensors. It provides
``spec`` (a ``ParamSpec``), ``num_params``, ``init_params(generator) -> [D]``,
``initial_state(params, num_agents, generator) -> state`` and
``step(params, state, obs, prev_action, prev_reward) -> (policy output, value, state)``, where the policy
output is logits ``[P, E, A]`` (discrete) or a Gaussian mean ``[P, E, A]`` with a ``log_std`` parameter
``[P, A]`` (continuous). Models with ``stochastic = True`` are always sampled, never argmax'ed.
Factories are ``"module:Class"`` strings, imported on first use, called as
``Class(model_cfg, obs_dim, num_actions, action_dim)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metods_evo.models.metods import MetODS
from metods_evo.registry import Registry

if TYPE_CHECKING:  # annotations only: config imports this registry to check model.kind
    from metods_evo.config import RunConfig

MODELS: Registry[type] = Registry("model.kind")


def register_model(kind: str, entry_point: str) -> None:
    """Register a model class under ``kind`` (the value of ``model.kind``)."""
    if kind in MODELS:
        raise ValueError(f"model {kind!r} is already registered")
    MODELS.register(kind, entry_point)


def model_class(kind: str) -> type:
    """The class registered as ``kind`` (imported on first use)."""
    return MODELS.load(kind)


def config_fields(kind: str) -> tuple[str, ...] | None:
    """The ``ModelConfig`` fields model ``kind`` reads besides ``kind`` (None: it does not say, so all of them)."""
    return getattr(model_class(kind), "config_fields", None)


def build_model(cfg: RunConfig, task):
    """The model ``cfg.model.kind`` sized for ``task`` (observation, discrete actions or continuous action size)."""
    return model_class(cfg.model.kind)(cfg.model, task.obs_dim, task.num_actions, task.action_dim)


register_model("metods", "metods_evo.models.metods:MetODS")
register_model("rl2", "metods_evo.models.rl2:RL2")
register_model("maml", "metods_evo.models.maml:MAML")
register_model("pearl", "metods_evo.models.pearl:PEARL")
register_model("random", "metods_evo.models.baselines:RandomPolicy")

__all__ = ["MODELS", "MetODS", "build_model", "config_fields", "model_class", "register_model"]
