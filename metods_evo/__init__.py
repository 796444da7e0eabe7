"""metods-evo: meta-reinforcement learning with self-modifying (MetODS) networks, meta-trained by
evolution strategies, policy gradient, or both. ``import metods_evo`` stays light: simulators, Ray,
evotorch, the training loop and plotting are imported only where they are used."""

import importlib

from metods_evo.tasks import TASKS, make_task, register

__version__ = "0.1.0"
__all__ = ["TASKS", "Agent", "AgentState", "MetODSLayer", "TrainResult", "load_agent", "make_task", "register",
           "register_model", "register_optimizer", "train_agent", "__version__"]

# name -> its module, imported on first access
_LAZY = {"Agent": "metods_evo.agent", "AgentState": "metods_evo.agent", "load_agent": "metods_evo.agent",
         "MetODSLayer": "metods_evo.models.layer", "TrainResult": "metods_evo.api", "train_agent": "metods_evo.api",
         "register_model": "metods_evo.models", "register_optimizer": "metods_evo.optimizers"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metods_evo' has no attribute {name!r}")
