"""PBT's members over Ray actors (``pbt.num_actors``): each actor holds a contiguous share of the members as a
``MemberGroup`` and runs their updates with the same code as one process; the driver (``PBTTrainer``) keeps every
member's state and does exploit / explore, sending an actor its members again after each exploit step.

Ray starts as evotorch starts it: ``ray.init()`` when none is running, which joins the cluster that RAY_ADDRESS names
(``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the others) or else starts a local one.
An actor that dies (its process or machine gone: ``RayActorError``), or whose call raises, costs the members it holds:
its group answers None from then on and the driver marks them dead; the other actors go on.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
import torch
from ray.exceptions import RayError
from torch import Tensor

from metods_evo.config import RunConfig
from metods_evo.optimizers.pbt import MemberGroup

log = logging.getLogger(__name__)


class GroupActor:
    """A ``MemberGroup`` in a Ray worker; what it sends back is on the CPU, whatever device it trains on."""

    def __init__(self, cfg: RunConfig, threads: int):
        torch.set_num_threads(threads)  # no oversubscription: actors x threads
        self.group = MemberGroup(cfg)

    def load(self, members: dict[str, Tensor]) -> None:
        self.group.load(members)

    def update(self, generation: int, lr_factor: float) -> tuple[int, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        steps, returns, stats, members = self.group.update(generation, lr_factor)
        return steps, returns.cpu(), {k: v.cpu() for k, v in stats.items()}, {k: v.cpu() for k, v in members.items()}


class RayPool:
    """``pbt.num_actors`` actors (at most one per member), actor i holding the members ``rows[i]``; the interface of
    ``pbt.LocalPool``. ``actors[i]`` is None once that actor is lost; ``failure`` says why the last one was."""

    def __init__(self, cfg: RunConfig):
        if not ray.is_initialized():
            ray.init()
        k, threads = cfg.pbt.members, cfg.pbt.threads_per_actor
        shares = torch.arange(k).tensor_split(min(cfg.pbt.num_actors, k))
        self.rows = [slice(int(share[0]), int(share[-1]) + 1) for share in shares]
        remote = ray.remote(num_cpus=threads)(GroupActor)
        self.actors: list[Any] = [remote.remote(cfg, threads) for _ in self.rows]
        self.failure = ""

    def load(self, members: dict[str, Tensor], alive: Tensor) -> None:
        """Send each actor with a live member its rows of ``members`` (copies: a slice would ship the whole
        storage)."""
        self._gather({i: actor.load.remote({name: value[rows].cpu().clone() for name, value in members.items()})
                      for i, (rows, actor) in enumerate(zip(self.rows, self.actors))
                      if actor is not None and bool(alive[rows].any())})

    def update(self, generation: int, lr_factor: float, alive: Tensor) -> list[tuple[slice, tuple | None]]:
        """Every actor with a live member updates its members, all at once -> each group's rows and result (None:
        lost, or nothing alive to update)."""
        done = self._gather({i: actor.update.remote(generation, lr_factor)
                             for i, (rows, actor) in enumerate(zip(self.rows, self.actors))
                             if actor is not None and bool(alive[rows].any())})
        return [(rows, done.get(i)) for i, rows in enumerate(self.rows)]

    def close(self) -> None:
        for i in range(len(self.actors)):
            self._release(i)

    def _gather(self, calls: dict[int, Any]) -> dict[int, Any]:
        """The results of the calls (actor index -> object ref) that succeeded; an actor whose call failed is lost."""
        done = {}
        for i, ref in calls.items():
            try:
                done[i] = ray.get(ref)
            except RayError as error:
                rows = self.rows[i]
                reason = (str(error).strip().splitlines() or [""])[0]
                self.failure = f"the actor of members {rows.start}-{rows.stop - 1}: {type(error).__name__}: {reason}"
                log.warning("PBT: lost %s; its members train no more, the others go on", self.failure)
                self._release(i)
        return done

    def _release(self, i: int) -> None:
        actor, self.actors[i] = self.actors[i], None
        if actor is not None:
            try:
                ray.kill(actor)
            except RayError:  # already gone
                pass
