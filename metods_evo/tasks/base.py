"""The batched task interface shared by every environment in metods-evo.

A task steps B independent episodes as one tensor computation on any torch device. It is
functional: the episode state is a plain ``dict`` of tensors whose leading axis is the batch,
passed in and returned explicitly, so the rollout can tile it across a population, move it
between devices, or checkpoint it. All randomness comes from the ``torch.Generator`` the caller
passes, which makes every episode reproducible from a seed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

TaskState = dict[str, Tensor]


class Task:
    """Base class: subclasses set the class attributes and implement ``reset`` / ``step`` / ``episode_metrics``."""

    obs_dim: int
    """Length of one observation vector."""
    num_actions: int
    """Number of discrete actions (0 for continuous tasks)."""
    action_dim: int = 0
    """Length of a continuous action vector (0 for discrete tasks)."""
    action_low: float = -1.0
    action_high: float = 1.0
    """Bounds of every continuous action coordinate; the rollout clips the policy's actions into them."""
    max_steps: int
    """Upper bound on an episode's length; the rollout never runs longer."""
    main_metric: ClassVar[str] = "return"
    """The episode metric that ES maximizes and that summaries lead with."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    @classmethod
    def describe(cls, **options: Any) -> tuple[int, int, int, int]:
        """``(obs_dim, num_actions, action_dim, max_steps)`` of the task built with ``options``, for listings
        (``metods-evo tasks``). This builds it; a task whose construction is slow overrides it with what it knows
        without building (an ``ImportError`` where its simulator is missing, as building would raise)."""
        task = cls(**options)
        return task.obs_dim, task.num_actions, task.action_dim, task.max_steps

    @property
    def discrete(self) -> bool:
        return self.num_actions > 0

    def reset(self, num_envs: int, generator: torch.Generator) -> tuple[TaskState, Tensor]:
        """Start ``num_envs`` fresh episodes. Returns (state, obs ``float32 [B, obs_dim]``)."""
        raise NotImplementedError

    def mirror(self, state: TaskState, obs: Tensor) -> tuple[TaskState, Tensor]:
        """Antithetic episodes (optional): the ``B`` freshly reset episodes followed by their ``B`` twins, in which the
        hidden task parameter takes its opposite value and everything else is the same (Harlow: the other object pays;
        the direction tasks: the other direction). A twin's expected return equals the original's, so scoring both
        is unbiased, and what an episode's luck adds to one (e.g. Harlow's first guess) it takes from the other: the
        rollout gives twins the same per-step noise (``uniform``), and ES scores individuals on such pairs
        (``es.antithetic``). Tasks without a natural opposite do not implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no antithetic episodes")

    @classmethod
    def can_mirror(cls) -> bool:
        return cls.mirror is not Task.mirror

    def step(self, state: TaskState, action: Tensor,
             generator: torch.Generator) -> tuple[TaskState, Tensor, Tensor, Tensor]:
        """Advance every episode by one step.

        ``action`` is ``int64 [B]`` for discrete tasks. Returns (state, obs ``float32 [B, obs_dim]``,
        reward ``float32 [B]``, done ``bool [B]``). ``done`` is True on the step that ends the episode.
        Stepping an episode after it is done must not fail and must leave its state as it was: the rollout
        ignores what it returns, and may stop stepping it (compaction), so the final state it reports for
        ``state_metrics`` is the state at the episode's end. The rows of ``state`` carry no identity beyond
        their values and ``_``-prefixed keys: the rollout may drop and reorder rows between steps.
        """
        raise NotImplementedError

    def time_limit_reached(self, state: TaskState) -> Tensor:
        """``bool [B]``: the episode ended (or will) by its step limit rather than by reaching a terminal
        state; gymnasium reports these ends as ``truncated``. Default: never."""
        batch = next(v.shape[0] for k, v in state.items() if not k.startswith("_"))
        return torch.zeros(batch, dtype=torch.bool, device=self.device)

    def uniform(self, state: TaskState, generator: torch.Generator, *shape: int) -> Tensor:
        """U[0, 1) noise ``[B, *shape]`` for the per-step randomness of ``step``.

        When the rollout tiles E sampled episodes over P individuals it adds ``state["_episodes"]``
        (an empty ``[E, 0]`` tensor: its shape is the count, so reading it never syncs a GPU). The
        draws are then made for the E episodes and shared by every individual (common random
        numbers): an individual's score does not depend on the population size or its position in
        the population, and differences between individuals come from their behaviour alone.
        Once the rollout drops finished agents it adds ``state["_episode_of"]`` (each row's episode index):
        the same E draws are made and each row takes its episode's. With antithetic episodes (``mirror``) the
        draws are made for the E / 2 originals, and episode e + E / 2 takes episode e's. Tasks must keep
        ``_``-prefixed keys in the state they return.
        """
        batch = next(v.shape[0] for k, v in state.items() if not k.startswith("_"))
        base = state["_episodes"].shape[0] if "_episodes" in state else batch
        noise = torch.rand((base, *shape), generator=generator, device=self.device)
        if "_episode_of" in state:
            return noise[state["_episode_of"]]
        return noise if base == batch else noise.repeat(batch // base, *([1] * len(shape)))

    def episode_groups(self, state: TaskState) -> dict[str, Tensor]:
        """Named subsets of episodes that evaluations report separately, from the final task state: ``{name:
        bool [B]}`` (e.g. the MuJoCo direction tasks: "forward" and "backward" episodes). Default: none."""
        return {}

    def state_metrics(self, state: TaskState) -> dict[str, Tensor]:
        """Per-episode metrics read off the final task state (``RolloutResult.task_state``, batch ``P * E``
        individual-major), for what the reward trace cannot tell: ``{name: float32 [B]}`` (e.g. Meta-World's
        success per rollout). ``rollout`` adds them to its metrics, so evaluations and tables report them beside
        ``episode_metrics``; ES optimizes ``main_metric`` only. Default: none."""
        return {}

    def episode_metrics(self, rewards: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Per-episode metrics from the reward trace.

        ``rewards``: ``float32 [T, B]`` with zeros after each episode's end; ``lengths``: ``int64 [B]``.
        Returns ``{name: float32 [B]}`` and always contains ``"return"``.
        """
        return {"return": rewards.sum(0)}
