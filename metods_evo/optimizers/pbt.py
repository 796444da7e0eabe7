"""Population-Based Training (Jaderberg et al. 2017): K PPO learners on one model, trained side by side.

The members' thetas are one ``[K, D]`` tensor, the population axis P = K of the model and the rollout: each update
plays ``ppo.episodes`` episodes per member in one batched rollout (every member the same episodes and action noise,
the rollout's common random numbers, so member k plays exactly what a lone PPO run with its theta would), then runs
PPO's epochs over whole episodes (``ppo.py``) with the members side by side, in a minibatch order drawn from a stream
of its own (the same for every member). The loss is the sum of the members'
independent losses, so one backward pass gives every member its own gradient; gradients are clipped per member and
stepped by an Adam over ``[K, D]`` with a learning rate per member. Each member has its own lr, entropy_coef and
value_coef (``[K]`` each) and its own KL early stop (a member that stopped adds no loss for the rest of the update).

Every ``pbt.interval`` updates the members are ranked by their mean training return over the interval; the bottom
``pbt.fraction`` copy theta, Adam state and hyperparameters of a random member of the top fraction (exploit), and
each copied hyperparameter is multiplied by ``pbt.perturb`` or its inverse at random (explore). All draws come from
``generation_seed``: a run, and its resume, are deterministic.

The updates run in ``MemberGroup``s: one over every member in this process, or one per Ray actor, each over a
contiguous share (``pbt.num_actors``, ``pbt_ray.py``). No draw depends on the group, so the split changes no float.
The trainer (the driver) keeps every member's state, ranks, copies and perturbs; a group whose actor is lost costs its
members (``alive``), not the run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from metods_evo.config import RunConfig, generation_seed
from metods_evo.models import build_model
from metods_evo.optimizers.base import OptimizerDeclaration
from metods_evo.optimizers.pg import actor_critic_loss, clip_gradient, gae, lr_factor
from metods_evo.rollout import episodes_of, replay, rollout
from metods_evo.runs import RunError
from metods_evo.tasks import make_task

INIT_STREAM = 7  # seed stream of the members' initial theta (members 1, 2, ...) and hyperparameters
EXPLOIT_STREAM = 8  # seed stream of each exploit step's draws
ORDER_STREAM = 9  # seed stream of each update's minibatch order
HYPERPARAMETERS = ("lr", "entropy_coef", "value_coef")
ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")  # a member's Adam state: members["adam.step"] ...
SPAN = 10.0  # explore keeps a hyperparameter within this factor of the ppo section's value
STATS = ("pg/policy_loss", "pg/value_loss", "pg/entropy", "pg/approx_kl", "pg/clip_fraction", "pg/grad_norm")


def adam(theta: Tensor, grad: Tensor, state: dict[str, Tensor], lr: Tensor, active: Tensor | None = None, *,
         eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)) -> tuple[Tensor, dict[str, Tensor]]:
    """One Adam step of every member: ``theta``, ``grad`` ``[K, D]``, ``lr`` ``[K, 1]``; ``state`` holds ``step``
    ``[K]`` and the moments ``exp_avg``, ``exp_avg_sq`` ``[K, D]`` (``adam_state`` makes the first). Members where
    ``active`` (bool ``[K]``) is False keep theta and state. torch.optim.Adam's arithmetic, bias terms in float64."""
    beta1, beta2 = betas
    step = state["step"] + 1
    exp_avg = torch.lerp(state["exp_avg"], grad, 1 - beta1)
    exp_avg_sq = torch.addcmul(state["exp_avg_sq"] * beta2, grad, grad, value=1 - beta2)
    bias1 = 1 - beta1 ** step.double()
    bias2_sqrt = (1 - beta2 ** step.double()).sqrt()
    step_size = (lr.double().view(-1) / bias1).to(theta.dtype).view(-1, 1)
    denom = exp_avg_sq.sqrt() / bias2_sqrt.to(theta.dtype).view(-1, 1) + eps
    new_theta = theta + -step_size * exp_avg / denom
    if active is None:
        return new_theta, {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    rows = active.view(-1, 1)
    return torch.where(rows, new_theta, theta), {"step": torch.where(active, step, state["step"]),
                                                  "exp_avg": torch.where(rows, exp_avg, state["exp_avg"]),
                                                  "exp_avg_sq": torch.where(rows, exp_avg_sq, state["exp_avg_sq"])}


def adam_state(theta: Tensor) -> dict[str, Tensor]:
    return {"step": theta.new_zeros(theta.shape[0]), "exp_avg": torch.zeros_like(theta),
            "exp_avg_sq": torch.zeros_like(theta)}


def exploit(members: dict[str, Tensor], score: Tensor, fraction: float, perturb: float,
            bounds: dict[str, tuple[float, float]], generator: torch.Generator) -> tuple[dict[str, Tensor], Tensor]:
    """PBT's exploit and explore over ``members`` (every per-member tensor, leading axis K: theta, Adam state,
    hyperparameters), ranked by ``score`` ``[K]`` (ties: the lower index ranks higher). The bottom
    ``max(1, floor(K * fraction))`` take everything of a random member of as many at the top; then each of their
    hyperparameters (the keys of ``bounds``) is multiplied by ``perturb`` or ``1 / perturb`` and clipped to its
    bounds. Returns the new members and ``source`` ``[K]``, the member each row was copied from (itself if kept)."""
    k = score.shape[0]
    n = max(1, int(k * fraction))
    order = torch.sort(-score, stable=True).indices  # best first
    top, bottom = order[:n], order[k - n:]
    source = torch.arange(k, device=score.device)
    source[bottom] = top[torch.randint(n, (n,), generator=generator, device=generator.device).to(score.device)]
    out = {name: value.index_select(0, source) for name, value in members.items()}
    up = torch.rand(n, len(bounds), generator=generator, device=generator.device).to(score.device) < 0.5
    options = torch.tensor([1 / perturb, perturb], dtype=torch.float64, device=score.device)
    factors = options[up.long()]
    for i, (name, (low, high)) in enumerate(bounds.items()):
        value = out[name]
        out[name] = value.index_copy(0, bottom, (value[bottom] * factors[:, i].to(value.dtype)).clamp(low, high))
    return out, source


def member_memory_stats(model, model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``memory_stats`` of each member on its own (``[k]`` per key), to be averaged over the live members. They read
    the state at the rollout's last step, so they still depend on how long the group's longest episode ran."""
    state_stats = getattr(model, "state_stats", None)
    if state_stats is None or not model_state:
        return {}
    k = next(iter(model_state.values())).shape[0]
    rows = [state_stats({name: value[i:i + 1] for name, value in model_state.items()}) for i in range(k)]
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


class MemberGroup:
    """Some members of the population (all of them in one process, a contiguous share in each Ray actor,
    ``pbt_ray.py``): their theta, Adam state and hyperparameters (``members``: ``theta``, ``adam.step``,
    ``adam.exp_avg``, ``adam.exp_avg_sq`` and ``HYPERPARAMETERS``, leading axis k) and PPO's update of them as one
    batch. Each update draws its episodes and action noise (the rollout's common random numbers) and its minibatch
    order from seeds of ``(seed, generation)``, the same for every member whatever its group, so a member's update
    does not depend on how the population is split."""

    def __init__(self, cfg: RunConfig, task=None, model=None):
        self.pg, self.seed = cfg.ppo, cfg.seed
        self.task = task if task is not None else make_task(cfg.task, device=cfg.device, **cfg.task_options)
        self.model = model if model is not None else build_model(cfg, self.task)
        self.members: dict[str, Tensor] = {}

    def load(self, members: dict[str, Tensor]) -> None:
        self.members = {name: value.to(self.task.device) for name, value in members.items()}

    def update(self, generation: int, lr_factor: float) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``batch_update``; a group of one member trains beside a copy of itself: torch sums a batch of one in
        another order (it merges the size-1 member axis into the reduced ones), which would change the member's floats
        with its group."""
        if self.members["theta"].shape[0] > 1:
            return self.batch_update(generation, lr_factor)
        self.members = {name: torch.cat([value, value]) for name, value in self.members.items()}
        steps, returns, stats, members = self.batch_update(generation, lr_factor)
        self.members = {name: value[:1] for name, value in members.items()}
        return steps[:1], returns[:1], {key: value[:1] for key, value in stats.items()}, self.members

    def batch_update(self, generation: int, lr_factor: float) -> tuple[Tensor, Tensor, dict[str, Tensor],
                                                                          dict[str, Tensor]]:
        """PPO's update (``ppo.py``) of the group's members at once, learning rates ``lr * lr_factor`` -> (env
        steps ``[k]``, each member's mean return ``[k]``, each member's stats ``[k]`` averaged over its minibatch
        steps, the members after the update)."""
        pg, members, model, task = self.pg, self.members, self.model, self.task
        theta, adam_moments = members["theta"], {key: members[f"adam.{key}"] for key in ADAM_KEYS}
        k = theta.shape[0]
        lr = members["lr"] * lr_factor
        generator = torch.Generator(device=task.device).manual_seed(generation_seed(self.seed, generation))
        # the minibatch order from a stream of its own: the rollout's generator ends in a state that depends on the
        # longest episode of the group's members
        order_generator = torch.Generator(device=task.device).manual_seed(
            generation_seed(self.seed, generation, ORDER_STREAM))
        with torch.no_grad():
            result = rollout(model, model.spec.unflatten(theta), task, pg.episodes, generator, action_mode="sample",
                             record=True)
            valid = result.valid  # [T, k, E]
            advantages, returns = gae(result.rewards, result.values, valid, pg.gamma, pg.gae_lambda)
        coefs = {name: members[name].to(torch.float32).view(1, k, 1) for name in ("entropy_coef", "value_coef")}
        per_batch = -(-pg.episodes // pg.minibatches)
        active = torch.ones(k, dtype=torch.bool, device=theta.device)
        sums = {key: theta.new_zeros(k) for key in STATS}
        updates = theta.new_zeros(k)
        for _ in range(pg.epochs):
            order = torch.randperm(pg.episodes, generator=order_generator, device=order_generator.device)
            kl = []
            for batch in order.split(per_batch):
                episodes = episodes_of(result.inputs, batch)
                leaf = theta.detach().requires_grad_()
                log_probs, values, entropies = replay(
                    model, model.spec.unflatten(leaf), task, episodes["state0"], episodes["obs"],
                    episodes["actions"], result.rewards[:, :, batch], truncate=pg.bptt_truncate)
                losses, stats = actor_critic_loss(
                    pg, log_probs, values, entropies, advantages[:, :, batch], returns[:, :, batch],
                    valid[:, :, batch].float(), old_log_probs=result.log_probs[:, :, batch], clip=pg.clip, dims=(0, 2),
                    **coefs)
                (grad,) = torch.autograd.grad((losses.view(k) * active).sum(), leaf)  # a stopped member adds none
                stats = {key: value.view(k) for key, value in stats.items()}
                stats["pg/grad_norm"] = clip_gradient(grad, pg.max_grad_norm, rows=True)  # each member on its own
                with torch.no_grad():
                    theta, adam_moments = adam(theta, grad, adam_moments, lr.view(k, 1), active, eps=pg.adam_eps)
                kl.append(stats["pg/approx_kl"])
                for key in STATS:
                    sums[key] += stats[key] * active
                updates += active
            if pg.target_kl > 0:
                active &= torch.stack(kl).mean(0) <= pg.target_kl
            if not active.any():
                break
        stats = {key: value / updates for key, value in sums.items()} | {"pg/updates": updates}
        stats |= member_memory_stats(model, result.model_state)  # of the batch that was played (before this update)
        self.members = members | {"theta": theta} | {f"adam.{key}": value for key, value in adam_moments.items()}
        return result.lengths.sum(1), result.returns.double().mean(1), stats, self.members


class LocalPool:
    """Every member in one ``MemberGroup`` of this process (``pbt.num_actors = 0``); ``pbt_ray.RayPool`` is the
    same interface over Ray actors."""

    def __init__(self, cfg: RunConfig, task, model):
        self.group = MemberGroup(cfg, task, model)
        self.rows = [slice(0, cfg.pbt.members)]

    def load(self, members: dict[str, Tensor], alive: Tensor) -> None:
        self.group.load(members)

    def update(self, generation: int, lr_factor: float, alive: Tensor) -> list[tuple[slice, tuple | None]]:
        return [(self.rows[0], self.group.update(generation, lr_factor))]

    def close(self) -> None:
        pass


class PBTTrainer(OptimizerDeclaration):
    """K PPO learners stepped as one population; exploit / explore every ``pbt.interval`` updates (module doc).

    The driver holds every member's state (``members``) and does exploit / explore; the updates run in a pool of
    ``MemberGroup``s: one in this process, or one per Ray actor (``pbt.num_actors``). A group whose actor dies
    loses its members for the rest of the run (``alive``); the others go on."""

    sections = ("ppo", "pbt")

    @classmethod
    def detail(cls, cfg: RunConfig) -> str:
        return f"{cfg.pbt.members} members"

    @classmethod
    def resume_problem(cls, cfg: RunConfig, state: dict[str, Any]) -> str:
        held = state["theta"].shape[0]
        return "" if held == cfg.pbt.members else (f"it says pbt.members={cfg.pbt.members}, checkpoint.pt holds "
                                                   f"{held} members")

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> Tensor:
        return state["theta"][int(state["score"].argmax())].detach().clone().cpu()  # argmax: the first of ties

    def __init__(self, cfg: RunConfig):
        self.cfg, self.pg, self.pbt = cfg, cfg.ppo, cfg.pbt
        self.task = make_task(cfg.task, device=cfg.device, **cfg.task_options)
        self.model = build_model(cfg, self.task)
        k, device = cfg.pbt.members, self.task.device
        # member 0 starts where a PPO run of this seed starts; the others from their own streams
        seeds = [cfg.seed] + [generation_seed(cfg.seed, m, INIT_STREAM) for m in range(1, k)]
        theta = torch.stack([self.model.init_params(torch.Generator().manual_seed(s)) for s in seeds]).to(
            device, torch.float32)
        generator = torch.Generator().manual_seed(generation_seed(cfg.seed, 0, INIT_STREAM))
        spread = torch.empty(k, len(HYPERPARAMETERS), dtype=torch.float64).uniform_(
            math.log(0.5), math.log(2.0), generator=generator).exp()
        spread[0] = 1.0  # member 0: exactly the ppo section's values
        base = {name: getattr(self.pg, name) for name in HYPERPARAMETERS}
        hypers = {name: (base[name] * spread[:, i]).to(device) for i, name in enumerate(HYPERPARAMETERS)}
        self.members = {"theta": theta, **{f"adam.{key}": value for key, value in adam_state(theta).items()}, **hypers}
        self.bounds = {name: (value / SPAN, value * SPAN) for name, value in base.items()}
        self.alive = torch.ones(k, dtype=torch.bool, device=device)  # False: its actor died, it trains no more
        self.interval_sum = torch.zeros(k, dtype=torch.float64, device=device)  # members' mean returns, summed
        self.interval_count = 0
        self.score = torch.zeros(k, dtype=torch.float64, device=device)  # what center() ranks by
        self.generation = 0
        self.env_steps = 0
        if cfg.pbt.num_actors > 0:
            from metods_evo.optimizers.pbt_ray import RayPool  # Ray is imported only when actors are asked for

            self.pool = RayPool(cfg)
        else:
            self.pool = LocalPool(cfg, self.task, self.model)
        self.pool_current = False  # whether the pool's groups hold ``members`` as they are now

    @property
    def theta(self) -> Tensor:
        return self.members["theta"]

    @property
    def adam(self) -> dict[str, Tensor]:
        return {key: self.members[f"adam.{key}"] for key in ADAM_KEYS}

    @property
    def hypers(self) -> dict[str, Tensor]:
        return {name: self.members[name] for name in HYPERPARAMETERS}

    # ------------------------------------------------------------------ trainer interface
    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        by_steps = self.cfg.budget_steps > 0
        factor = lr_factor(self.pg.lr_schedule, self.env_steps if by_steps else self.generation,
                           self.cfg.budget_steps if by_steps else self.cfg.generations)
        steps, returns, stats = self._update(factor)
        live = self.alive
        lr = self.members["lr"][live] * factor  # the rates of this update, before exploit changes them
        self.generation += 1
        self.env_steps += steps
        self.interval_sum += torch.where(live, returns, 0.0)
        self.interval_count += 1
        exploiting = self.generation % self.pbt.interval == 0
        if exploiting or self.generation < self.pbt.interval:  # before the first interval ends: its mean so far
            self.score = torch.where(live, self.interval_sum / self.interval_count, -math.inf)
        if exploiting:
            self._exploit()
        returns = returns[live]
        elapsed = time.perf_counter() - start
        return {"train/episode_return": float(returns.mean()), **{k: float(v[live].mean()) for k, v in stats.items()},
                "pg/lr": float(lr.mean()), "pbt/best_return": float(returns.max()), "pbt/lr_min": float(lr.min()),
                "pbt/lr_max": float(lr.max()), "pbt/exploit": float(exploiting),
                "pbt/members_alive": float(live.sum()), "perf/generation_s": elapsed,
                "perf/steps_per_s": steps / max(elapsed, 1e-9)}

    def center(self) -> Tensor:
        return self.theta[int(self.score.argmax())].clone().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.cpu().clone(), "adam": {k: v.cpu().clone() for k, v in self.adam.items()},
                "hypers": {k: v.cpu().clone() for k, v in self.hypers.items()}, "score": self.score.cpu().clone(),
                "interval_sum": self.interval_sum.cpu().clone(), "interval_count": self.interval_count,
                "alive": self.alive.cpu().clone(), "generation": self.generation, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.task.device
        self.members = {"theta": state["theta"].to(device), **{f"adam.{k}": v.to(device) for k, v in
                                                                 state["adam"].items()},
                        **{k: v.to(device) for k, v in state["hypers"].items()}}
        self.score, self.interval_sum = state["score"].to(device), state["interval_sum"].to(device)
        self.alive = state.get("alive", torch.ones(self.theta.shape[0], dtype=torch.bool)).to(device).clone()
        self.interval_count = state["interval_count"]
        self.generation, self.env_steps = state["generation"], state["env_steps"]
        self.pool_current = False

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ the pool's update, the driver's exploit
    def _update(self, factor: float) -> tuple[int, Tensor, dict[str, Tensor]]:
        """Every live member's update in the pool -> (env steps, mean returns ``[K]``, stats ``[K]``; NaN where a
        member is dead). The groups' new members replace the driver's live rows; a group lost is marked dead."""
        if not self.pool_current:
            self.pool.load(self.members, self.alive)
            self.pool_current = True
        k, device = self.theta.shape[0], self.theta.device
        steps = torch.zeros(k, dtype=torch.long, device=device)
        returns, stats = torch.full((k,), math.nan, dtype=torch.float64, device=device), {}
        members = {name: value.clone() for name, value in self.members.items()}
        for rows, result in self.pool.update(self.generation, factor, self.alive):
            if result is None:  # its actor died or its call raised (pbt_ray.py logs why), or nothing alive in it
                self.alive[rows] = False
                continue
            group_steps, group_returns, group_stats, group_members = result
            steps[rows], returns[rows] = group_steps.to(device), group_returns.to(device)
            for key, value in group_stats.items():
                stats.setdefault(key, torch.full((k,), math.nan, dtype=value.dtype, device=device))[rows] = value.to(
                    device)
            for name, value in group_members.items():
                members[name][rows] = value.to(device)
        if not self.alive.any():
            raise RunError(f"generation {self.generation + 1}: every PBT member's Ray actor is lost (the last: "
                           f"{getattr(self.pool, 'failure', '')}); the run stops at its last checkpoint; resume it "
                           f"once the workers are back")
        # a dead member keeps its last state (a group may still train it after a resume that regrouped the members)
        self.members = {name: torch.where(self.alive.view(-1, *[1] * (value.dim() - 1)), members[name], value)
                        for name, value in self.members.items()}
        return int(steps[self.alive].sum()), returns, stats

    def _exploit(self) -> None:
        """Exploit / explore among the live members (a dead member neither gives nor takes a copy: its group is
        gone); with fewer than two alive there is no one to copy."""
        live = self.alive.nonzero().view(-1)
        if live.numel() >= 2:
            generator = torch.Generator(device=self.task.device).manual_seed(
                generation_seed(self.cfg.seed, self.generation, EXPLOIT_STREAM))
            everyone = live.numel() == self.alive.numel()
            members = self.members if everyone else {name: value[live] for name, value in self.members.items()}
            score = self.score if everyone else self.score[live]
            members, _ = exploit(members, score, self.pbt.fraction, self.pbt.perturb, self.bounds, generator)
            self.members = members if everyone else {name: self.members[name].index_copy(0, live, members[name])
                                                     for name in members}
            self.pool_current = False
        self.interval_sum = torch.zeros_like(self.interval_sum)
        self.interval_count = 0
