"""What a rollout returns (``RolloutResult``) and how its episodes start (``reset_episodes``): shared by the
batched rollout loop (``rollout.py``) and the fused Harlow rollout (``fused_rollout.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from metods_evo.tasks.base import Task


@dataclass
class RolloutResult:
    rewards: Tensor
    """Per-step rewards ``[T, P, E]`` (zero after each episode's end)."""
    lengths: Tensor
    """Episode lengths ``[P, E]``."""
    metrics: dict[str, Tensor]
    """Task episode metrics ``{name: [P, E]}`` (always ``"return"``)."""
    finite: Tensor
    """``[P, E]`` False where the model produced a non-finite output (those episodes score worst)."""
    env_steps: int
    """Environment steps actually taken by live agents."""
    model_steps: int = 0
    """Agent-steps the model and task computed: T x P x E, less what compaction dropped (module docstring)."""
    log_probs: Tensor | None = None
    values: Tensor | None = None
    entropies: Tensor | None = None
    trace: dict[str, list[Tensor]] = field(default_factory=dict)
    inputs: dict[str, Tensor] = field(default_factory=dict)
    """With ``record=True``: what the model saw, so ``replay`` can re-run the episodes with gradients:
    ``obs [T, P, E, obs]``, ``actions [T, P, E]`` (``[T, P, E, A]`` for continuous tasks, before clipping) and
    ``state0``, the initial model state (MetODS: ``{"W": [P, E, N, N]}``)."""
    task_state: dict[str, Tensor] = field(default_factory=dict)
    """The task's state after the last step, batch ``P * E`` individual-major (e.g. each episode's hidden
    direction in the MuJoCo tasks, for evaluations that split results by it)."""
    model_state: dict[str, Tensor] = field(default_factory=dict)
    """With ``record=True``: the model state after the last step, ``[P, E, ...]``, detached (MetODS: ``W_T``; an
    episode that ended earlier is stepped on to the batch's last step). Empty otherwise, so that a scoring rollout
    of a large population does not hold its ``[P, E, N, N]`` weights past its return."""

    @property
    def valid(self) -> Tensor:
        """``[T, P, E]`` True on the steps of each episode (before its end)."""
        steps = torch.arange(self.rewards.shape[0], device=self.lengths.device).view(-1, 1, 1)
        return steps < self.lengths.unsqueeze(0)

    @property
    def returns(self) -> Tensor:
        return self.metrics["return"]



def reset_episodes(task: Task, num_episodes: int, generator: torch.Generator,
                   antithetic: bool = False) -> tuple[dict[str, Tensor], Tensor]:
    """``task.reset(num_episodes)``, or with ``antithetic`` E / 2 fresh episodes followed by their twins."""
    if not antithetic:
        return task.reset(num_episodes, generator)
    if num_episodes % 2 or not task.can_mirror():
        raise ValueError(f"antithetic episodes need an even count (got {num_episodes}) and a task with mirror() "
                         f"({type(task).__name__} {'has' if task.can_mirror() else 'has none'})")
    return task.mirror(*task.reset(num_episodes // 2, generator))


__all__ = ["RolloutResult", "reset_episodes"]
