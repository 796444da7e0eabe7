"""metods-evo: meta-reinforcement learning with self-modifying (MetODS) networks, meta-trained by
evolution strategies, policy gradient, or both. ``import metods_evo`` stays light: simulators, Ray,
evotorch and plotting are imported only where they are used."""

from metods_evo.tasks import TASKS, make_task, register

__version__ = "0.1.0"
__all__ = ["TASKS", "Agent", "AgentState", "MetODSLayer", "load_agent", "make_task", "register", "__version__"]


def __getattr__(name: str):
    if name in ("Agent", "AgentState", "load_agent"):
        from metods_evo import agent

        return getattr(agent, name)
    if name == "MetODSLayer":
        from metods_evo.models.layer import MetODSLayer

        return MetODSLayer
    raise AttributeError(f"module 'metods_evo' has no attribute {name!r}")
