"""Models: functional, population-batched policies. ``build_model(cfg, task)`` picks the one a run uses."""

from __future__ import annotations

from metods_evo.config import RunConfig
from metods_evo.models.metods import MetODS


def build_model(cfg: RunConfig, task) -> MetODS:
    """The MetODS model sized for ``task`` (observation, discrete actions or continuous action size)."""
    return MetODS(cfg.model, task.obs_dim, task.num_actions, task.action_dim)


__all__ = ["MetODS", "build_model"]
