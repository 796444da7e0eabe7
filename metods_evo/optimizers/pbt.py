"""Population-Based Training (Jaderberg et al. 2017): K PPO learners on one model, trained side by side.

The members' thetas are one ``[K, D]`` tensor, the population axis P = K of the model and the rollout: each update
plays ``ppo.episodes`` episodes per member in one batched rollout (every member the same episodes and action noise,
the rollout's common random numbers, so member k plays exactly what a lone PPO run with its theta would), then runs
PPO's epochs over whole episodes (``ppo.py``) with the members side by side. The loss is the sum of the members'
independent losses, so one backward pass gives every member its own gradient; gradients are clipped per member and
stepped by an Adam over ``[K, D]`` with a learning rate per member. Each member has its own lr, entropy_coef and
value_coef (``[K]`` each) and its own KL early stop (a member that stopped adds no loss for the rest of the update).

Every ``pbt.interval`` updates the members are ranked by their mean training return over the interval; the bottom
``pbt.fraction`` copy theta, Adam state and hyperparameters of a random member of the top fraction (exploit), and
each copied hyperparameter is multiplied by ``pbt.perturb`` or its inverse at random (explore). All draws come from
``generation_seed``: a run, and its resume, are deterministic.
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
from metods_evo.optimizers.pg import actor_critic_loss, clip_gradient, gae, lr_factor, memory_stats
from metods_evo.rollout import episodes_of, replay, rollout
from metods_evo.tasks import make_task

INIT_STREAM = 7  # seed stream of the members' initial theta (members 1, 2, ...) and hyperparameters
EXPLOIT_STREAM = 8  # seed stream of each exploit step's draws
HYPERPARAMETERS = ("lr", "entropy_coef", "value_coef")
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


class PBTTrainer(OptimizerDeclaration):
    """K PPO learners stepped as one population; exploit / explore every ``pbt.interval`` updates (module doc)."""

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
        self.theta = torch.stack([self.model.init_params(torch.Generator().manual_seed(s)) for s in seeds]).to(
            device, torch.float32)
        self.adam = adam_state(self.theta)
        generator = torch.Generator().manual_seed(generation_seed(cfg.seed, 0, INIT_STREAM))
        spread = torch.empty(k, len(HYPERPARAMETERS), dtype=torch.float64).uniform_(
            math.log(0.5), math.log(2.0), generator=generator).exp()
        spread[0] = 1.0  # member 0: exactly the ppo section's values
        base = {name: getattr(self.pg, name) for name in HYPERPARAMETERS}
        self.hypers = {name: (base[name] * spread[:, i]).to(device) for i, name in enumerate(HYPERPARAMETERS)}
        self.bounds = {name: (value / SPAN, value * SPAN) for name, value in base.items()}
        self.interval_sum = torch.zeros(k, dtype=torch.float64, device=device)  # members' mean returns, summed
        self.interval_count = 0
        self.score = torch.zeros(k, dtype=torch.float64, device=device)  # what center() ranks by
        self.generation = 0
        self.env_steps = 0

    # ------------------------------------------------------------------ trainer interface
    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        by_steps = self.cfg.budget_steps > 0
        factor = lr_factor(self.pg.lr_schedule, self.env_steps if by_steps else self.generation,
                           self.cfg.budget_steps if by_steps else self.cfg.generations)
        lr = self.hypers["lr"] * factor
        generator = torch.Generator(device=self.task.device).manual_seed(generation_seed(self.cfg.seed,
                                                                                         self.generation))
        steps, returns, stats = self.update(generator, lr)
        self.generation += 1
        self.env_steps += steps
        self.interval_sum += returns
        self.interval_count += 1
        exploiting = self.generation % self.pbt.interval == 0
        if exploiting or self.generation < self.pbt.interval:  # before the first interval ends: its mean so far
            self.score = self.interval_sum / self.interval_count
        if exploiting:
            self._exploit()
        elapsed = time.perf_counter() - start
        return {"train/episode_return": float(returns.mean()), **{k: float(v.mean()) for k, v in stats.items()},
                "pg/lr": float(lr.mean()), "pbt/best_return": float(returns.max()), "pbt/lr_min": float(lr.min()),
                "pbt/lr_max": float(lr.max()), "pbt/exploit": float(exploiting), "perf/generation_s": elapsed,
                "perf/steps_per_s": steps / max(elapsed, 1e-9)}

    def center(self) -> Tensor:
        return self.theta[int(self.score.argmax())].clone().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.cpu().clone(), "adam": {k: v.cpu().clone() for k, v in self.adam.items()},
                "hypers": {k: v.cpu().clone() for k, v in self.hypers.items()}, "score": self.score.cpu().clone(),
                "interval_sum": self.interval_sum.cpu().clone(), "interval_count": self.interval_count,
                "generation": self.generation, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.task.device
        self.theta = state["theta"].to(device)
        self.adam = {k: v.to(device) for k, v in state["adam"].items()}
        self.hypers = {k: v.to(device) for k, v in state["hypers"].items()}
        self.score, self.interval_sum = state["score"].to(device), state["interval_sum"].to(device)
        self.interval_count = state["interval_count"]
        self.generation, self.env_steps = state["generation"], state["env_steps"]

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ one update, every member
    def update(self, generator: torch.Generator, lr: Tensor) -> tuple[int, Tensor, dict[str, Tensor]]:
        """PPO's update (``ppo.py``) of the K members at once -> (env steps, each member's mean return ``[K]``, each
        member's stats ``[K]`` averaged over its minibatch steps)."""
        pg, k = self.pg, self.theta.shape[0]
        with torch.no_grad():
            result = rollout(self.model, self.model.spec.unflatten(self.theta), self.task, pg.episodes, generator,
                             action_mode="sample", record=True)
            valid = result.valid  # [T, K, E]
            advantages, returns = gae(result.rewards, result.values, valid, pg.gamma, pg.gae_lambda)
        coefs = {name: self.hypers[name].to(torch.float32).view(1, k, 1) for name in ("entropy_coef", "value_coef")}
        per_batch = -(-pg.episodes // pg.minibatches)
        active = torch.ones(k, dtype=torch.bool, device=self.theta.device)
        sums = {key: self.theta.new_zeros(k) for key in STATS}
        updates = self.theta.new_zeros(k)
        for _ in range(pg.epochs):
            order = torch.randperm(pg.episodes, generator=generator, device=generator.device)
            kl = []
            for batch in order.split(per_batch):
                episodes = episodes_of(result.inputs, batch)
                theta = self.theta.detach().requires_grad_()
                log_probs, values, entropies = replay(
                    self.model, self.model.spec.unflatten(theta), self.task, episodes["state0"], episodes["obs"],
                    episodes["actions"], result.rewards[:, :, batch], truncate=pg.bptt_truncate)
                losses, stats = actor_critic_loss(
                    pg, log_probs, values, entropies, advantages[:, :, batch], returns[:, :, batch],
                    valid[:, :, batch].float(), old_log_probs=result.log_probs[:, :, batch], clip=pg.clip, dims=(0, 2),
                    **coefs)
                (grad,) = torch.autograd.grad((losses.view(k) * active).sum(), theta)  # a stopped member adds none
                stats = {key: value.view(k) for key, value in stats.items()}
                stats["pg/grad_norm"] = clip_gradient(grad, pg.max_grad_norm, rows=True)  # each member on its own
                with torch.no_grad():
                    self.theta, self.adam = adam(self.theta, grad, self.adam, lr.view(k, 1), active, eps=pg.adam_eps)
                kl.append(stats["pg/approx_kl"])
                for key in STATS:
                    sums[key] += stats[key] * active
                updates += active
            if pg.target_kl > 0:
                active &= torch.stack(kl).mean(0) <= pg.target_kl
            if not active.any():
                break
        stats = {key: value / updates for key, value in sums.items()} | {"pg/updates": updates}
        stats |= memory_stats(self.model, result)  # of the batch that was played (before this update)
        return result.env_steps, result.returns.double().mean(1), stats

    def _exploit(self) -> None:
        generator = torch.Generator(device=self.task.device).manual_seed(
            generation_seed(self.cfg.seed, self.generation, EXPLOIT_STREAM))
        members = {"theta": self.theta, **{f"adam.{k}": v for k, v in self.adam.items()}, **self.hypers}
        members, _ = exploit(members, self.score, self.pbt.fraction, self.pbt.perturb, self.bounds, generator)
        self.theta = members["theta"]
        self.adam = {k: members[f"adam.{k}"] for k in self.adam}
        self.hypers = {k: members[k] for k in HYPERPARAMETERS}
        self.interval_sum = torch.zeros_like(self.interval_sum)
        self.interval_count = 0
