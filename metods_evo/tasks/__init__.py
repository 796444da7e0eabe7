"""Task registry: ``register(id, entry_point, **defaults)`` and ``make_task(id, **options)``.

An entry point is a ``Task`` subclass or a ``"module:Class"`` string imported on first use (as in gymnasium's
registry), so heavy simulators are only imported when their task is chosen. A task registered with a ``gym_id``
(every built-in one: ``metods_evo/<Name>-v0``) is also a gymnasium environment under that id:
``gymnasium.make_vec`` gives the batched task as one vector env, ``gymnasium.make`` one episode at a time
(``tasks/gym_vector.py``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from metods_evo.registry import Registry, import_entry_point, is_entry_point
from metods_evo.tasks.base import Task, TaskState
from metods_evo.tasks.gym_single import register_gymnasium


@dataclass(frozen=True)
class TaskSpec:
    id: str
    entry_point: str | type[Task]
    defaults: dict[str, Any] = field(default_factory=dict)
    gym_id: str = ""
    description: str = ""

    def load_class(self) -> type[Task]:
        return self.entry_point if isinstance(self.entry_point, type) else import_entry_point(self.entry_point)

    def options(self) -> dict[str, Any]:
        """Constructor options of the task (name -> default), registry defaults applied."""
        params = inspect.signature(self.load_class().__init__).parameters
        found = {n: p.default for n, p in params.items() if n not in ("self", "device") and p.default is not p.empty}
        found.update(self.defaults)
        return found

    def make(self, device: str = "cpu", **options: Any) -> Task:
        """The task built with ``options`` over the registry defaults; an unknown option is a ``ValueError``
        naming the valid ones."""
        known = self.options()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"task {self.id!r} has no option {unknown[0]!r}; options: "
                             f"{', '.join(sorted(known)) or 'none'}")
        return self.load_class()(device=device, **{**self.defaults, **options})

    def describe(self) -> tuple[int, int, int, int]:
        """``(obs_dim, num_actions, action_dim, max_steps)`` with the default options (``Task.describe``)."""
        return self.load_class().describe(**self.options())


TASKS: Registry[TaskSpec] = Registry("task")


def register(id: str, entry_point: str | type[Task], *, gym_id: str = "", description: str = "",
             **defaults: Any) -> None:
    """Register a task under ``id``: ``entry_point`` is a ``Task`` subclass or its ``"module:Class"``; ``defaults``
    override the class's constructor defaults. Registering the same spec again is a no-op (a plugin module imported
    both by ``--import`` and its entry point); another spec under a taken id is a ``ValueError``."""
    if isinstance(entry_point, type):
        if not issubclass(entry_point, Task):
            raise TypeError(f"task {id!r}: {entry_point.__qualname__} is not a subclass of metods_evo.tasks.Task")
    elif not is_entry_point(entry_point):
        raise TypeError(f"task {id!r}: the entry point must be a Task subclass or a 'module:Class' string, "
                        f"got {entry_point!r}")
    spec = TaskSpec(id, entry_point, dict(defaults), gym_id, description)
    if id in TASKS:
        if TASKS[id] == spec:
            return
        raise ValueError(f"task {id!r} is already registered")
    TASKS.register(id, spec)
    if gym_id:
        register_gymnasium(spec)


def make_task(id: str, device: str = "cpu", **options: Any) -> Task:
    """Build a registered task; an unknown id is a ``ConfigError``, an unknown option a ``ValueError``, both with
    the valid choices."""
    return TASKS.lookup(id).make(device, **options)


register("harlow", "metods_evo.tasks.harlow:HarlowTask", gym_id="metods_evo/Harlow-v0",
         description="1-D Harlow one-shot learning (5 trials, two objects)")
register("maze", "metods_evo.tasks.maze:MazeTask", gym_id="metods_evo/Maze-v0",
         description="partially observable Prim's maze with an invisible target")
register("cheetah-dir", "metods_evo.tasks.locomotion:CheetahDirTask", gym_id="metods_evo/CheetahDir-v0",
         description="MuJoCo HalfCheetah-v5, hidden direction +-x (needs the mujoco extra)")
register("ant-dir", "metods_evo.tasks.locomotion:AntDirTask", gym_id="metods_evo/AntDir-v0",
         description="MuJoCo Ant-v5, hidden direction +-x or any angle (needs the mujoco extra)")
register("metaworld-reach", "metods_evo.tasks.metaworld:MetaWorldML1Task", gym_id="metods_evo/MetaWorldReach-v0",
         description="Meta-World ML1 reach-v3: 10 rollouts of one hidden goal (needs the metaworld extra)",
         env_name="reach-v3")
register("metaworld-push", "metods_evo.tasks.metaworld:MetaWorldML1Task", gym_id="metods_evo/MetaWorldPush-v0",
         description="Meta-World ML1 push-v3: 10 rollouts of one hidden goal (needs the metaworld extra)",
         env_name="push-v3")
register("metaworld-ml10", "metods_evo.tasks.metaworld:MetaWorldML10Task", gym_id="metods_evo/MetaWorldML10-v0",
         description="Meta-World ML10: 10 training / 5 held-out classes, 10 rollouts each (needs the metaworld extra)")

__all__ = ["TASKS", "Task", "TaskSpec", "TaskState", "make_task", "register"]
