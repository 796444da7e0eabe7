"""The interface of an optimizer: what the training loop, the run directory and the command line ask of it.

An optimizer is registered (``register_optimizer(name, entry_point)``) as a class or factory that builds its trainer
as ``entry_point(cfg)``. What the rest of the package asks *before* a trainer exists is declared on that entry point
(``OptimizerDeclaration``, every attribute optional: ``declared`` supplies the defaults); what the training loop asks
of the trainer is ``Trainer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:  # annotations only: config imports the optimizer registry
    from metods_evo.config import RunConfig


@runtime_checkable
class Trainer(Protocol):
    """One optimizer's state, stepped a generation (or update) at a time by ``train.train``; it never touches files.

    ``generation`` and ``env_steps`` count what it has done (the run's budget and evaluation schedule read them);
    ``task`` is the task it trains on (its ``main_metric`` names the evaluation score).
    """

    generation: int
    env_steps: int
    task: Any

    def step(self) -> dict[str, float]:
        """One generation; its metrics (``train/episode_return``, ``perf/generation_s``, ``perf/steps_per_s`` and
        the optimizer's own), a row of metrics.csv."""

    def center(self) -> Tensor:
        """The flat theta ``[D]`` (CPU) the run stands for now: what is evaluated and saved."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (``load_state_dict`` of a freshly built trainer)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Release what it holds outside this process (Ray actors)."""


class OptimizerDeclaration:
    """What an optimizer declares on its registered class, before any trainer is built (class attributes and class
    methods; a subclass overrides what differs)."""

    sections: ClassVar[tuple[str, ...] | None] = None
    """The ``RunConfig`` sections it reads (``es``, ``ppo`` ...): the others cannot change its result. None: not
    declared, so any of them may."""

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """``ConfigError`` for settings it cannot train with (``config.validate`` calls it)."""

    @classmethod
    def action_mode(cls, cfg: RunConfig) -> str:
        """How its agent picks actions in evaluation: 'sample' (a stochastic policy) or 'greedy'."""
        return "sample"

    @classmethod
    def run_tag(cls, cfg: RunConfig) -> str:
        """The optimizer's part of a default run directory name (``runs/<task>__<tag>__s<seed>__<time>``)."""
        return cfg.optimizer

    @classmethod
    def detail(cls, cfg: RunConfig) -> str:
        """A few words on its settings for figure titles ('' for none)."""
        return ""

    @classmethod
    def resume_problem(cls, cfg: RunConfig, state: dict[str, Any]) -> str:
        """Why a trainer built from ``cfg`` cannot load the checkpointed ``state`` ('' if it can)."""
        return ""

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> Tensor:
        """The theta a checkpointed ``state`` stands for (``center()`` of the trainer that wrote it), CPU."""
        raise NotImplementedError


def declared(entry_point: Any) -> type[OptimizerDeclaration]:
    """The declaration of a registered entry point: itself where it is an ``OptimizerDeclaration``, else the
    defaults (a plain factory function registered by a plugin)."""
    if isinstance(entry_point, type) and issubclass(entry_point, OptimizerDeclaration):
        return entry_point
    return OptimizerDeclaration


__all__ = ["OptimizerDeclaration", "Trainer", "declared"]
