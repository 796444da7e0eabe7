"""Optimizer registry: ``register_optimizer(name, entry_point)`` and ``make_trainer(cfg)``.

An optimizer's trainer is built as ``entry_point(cfg)``: a class or function, or its ``"module:name"`` string,
imported on first use (so that evotorch or a user's module is only imported when its optimizer is chosen). The
trainer's interface: ``optimizers/base.py`` (``Trainer``) and docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metods_evo.optimizers.base import OptimizerDeclaration, Trainer, declared
from metods_evo.registry import Registry, is_entry_point

if TYPE_CHECKING:  # annotations only: config imports this registry to check the optimizer
    from metods_evo.config import RunConfig

TrainerFactory = Callable[["RunConfig"], Any]
OPTIMIZERS: Registry[TrainerFactory] = Registry("optimizer")


def register_optimizer(name: str, entry_point: str | TrainerFactory) -> None:
    """``entry_point`` builds the optimizer's trainer as ``entry_point(cfg)``: a class or factory function, or its
    ``"module:name"`` string (imported on first use). The trainer's interface: docs/architecture.md."""
    if isinstance(entry_point, str):
        if not is_entry_point(entry_point):
            raise TypeError(f"optimizer {name!r}: a string entry point is 'module:name', got {entry_point!r}")
    elif not callable(entry_point):
        raise TypeError(f"optimizer {name!r}: the entry point must be a class, a function or a 'module:name' "
                        f"string, got {entry_point!r}")
    OPTIMIZERS.register(name, entry_point)


def declaration(name: str) -> type[OptimizerDeclaration]:
    """What optimizer ``name`` declares (``OptimizerDeclaration``): its config sections, action mode, run tag ..."""
    return declared(OPTIMIZERS.load(name))


def make_trainer(cfg: RunConfig) -> Trainer:
    """The trainer of ``cfg.optimizer`` for ``cfg``."""
    return OPTIMIZERS.load(cfg.optimizer)(cfg)


register_optimizer("es", "metods_evo.optimizers.es:ES")
register_optimizer("a2c", "metods_evo.optimizers.a2c:A2CTrainer")
register_optimizer("ppo", "metods_evo.optimizers.ppo:PPOTrainer")
register_optimizer("hybrid", "metods_evo.optimizers.hybrid:HybridTrainer")
register_optimizer("pbt", "metods_evo.optimizers.pbt:PBTTrainer")
register_optimizer("pearl", "metods_evo.optimizers.pearl:PEARLTrainer")

__all__ = ["OPTIMIZERS", "OptimizerDeclaration", "Trainer", "TrainerFactory", "declaration", "make_trainer",
           "register_optimizer"]
