"""What A2C and PPO share: GAE, the masked actor-critic loss, and a trainer over one flat theta.

Gradient meta-training uses the same model and rollout as ES, with a population of one (P = 1):
theta is a single ``[D]`` parameter vector, the E episodes of a batch are the agents, and the
gradient flows back through every plastic update of each episode (BPTT). Episodes are drawn from
``generation_seed(seed, iteration)``, as ES draws its generations', so a resumed run needs no RNG
state beyond theta and Adam's moments.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from metods_evo.config import PGConfig, RunConfig, generation_seed
from metods_evo.models import build_model
from metods_evo.optimizers.base import OptimizerDeclaration
from metods_evo.rollout import RolloutResult
from metods_evo.tasks import make_task


def gae(rewards: Tensor, values: Tensor, valid: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimates and lambda-returns ``[T, B]`` for episodes that end at their last
    valid step (nothing to bootstrap from: a meta-RL episode is the agent's whole lifetime)."""
    mask = valid.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[0])
    running = torch.zeros_like(values[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        next_mask = mask[t + 1] if t + 1 < rewards.shape[0] else torch.zeros_like(mask[0])
        delta = rewards[t] + gamma * next_value * next_mask - values[t]
        running = delta + gamma * lam * next_mask * running
        advantages[t] = running * mask[t]
        next_value = values[t]
    return advantages, (advantages + values) * mask


def memory_stats(model, result: RolloutResult) -> dict[str, Tensor]:
    """The model's own statistics of its state at the batch's last step (MetODS: saturation of W; {} for models
    without ``state_stats``), logged beside the losses."""
    state_stats = getattr(model, "state_stats", None)
    return state_stats(result.model_state) if state_stats is not None and result.model_state else {}


def masked_mean(x: Tensor, mask: Tensor, dims: tuple[int, ...] | None = None) -> Tensor:
    """The mean of ``x`` over the valid steps: of everything, or (``dims``) over those axes only, kept for
    broadcasting (one mean per member of a population)."""
    if dims is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dims, keepdim=True) / mask.sum(dims, keepdim=True).clamp(min=1)


def normalize(advantages: Tensor, mask: Tensor, dims: tuple[int, ...] | None = None) -> Tensor:
    mean = masked_mean(advantages, mask, dims)
    std = masked_mean((advantages - mean) ** 2, mask, dims).sqrt()
    return (advantages - mean) / (std + 1e-8) * mask


def actor_critic_loss(pg: PGConfig, log_probs: Tensor, values: Tensor, entropies: Tensor, advantages: Tensor,
                      returns: Tensor, mask: Tensor, old_log_probs: Tensor | None = None,
                      clip: float = 0.0, *, dims: tuple[int, ...] | None = None,
                      entropy_coef: float | Tensor | None = None,
                      value_coef: float | Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of one batch of episodes. With ``old_log_probs`` and ``clip`` it is PPO's clipped surrogate;
    without, the vanilla policy gradient of A2C. All terms are means over valid steps.

    A population's losses, one per member (optimizers/pbt.py): ``dims`` are the axes each member's means reduce
    (the loss and stats keep the others, size 1 where reduced), ``entropy_coef`` / ``value_coef`` per-member
    coefficients that broadcast against them (None: ``pg``'s)."""
    entropy_coef = pg.entropy_coef if entropy_coef is None else entropy_coef
    value_coef = pg.value_coef if value_coef is None else value_coef
    if pg.normalize_advantages:
        advantages = normalize(advantages, mask, dims)
    stats: dict[str, Tensor] = {}
    if old_log_probs is None:
        policy_loss = -masked_mean(advantages * log_probs, mask, dims)
    else:
        log_ratio = log_probs - old_log_probs
        ratio = log_ratio.exp()
        unclipped, clipped = advantages * ratio, advantages * ratio.clamp(1 - clip, 1 + clip)
        policy_loss = -masked_mean(torch.minimum(unclipped, clipped), mask, dims)
        with torch.no_grad():
            stats["pg/approx_kl"] = masked_mean((ratio - 1) - log_ratio, mask, dims)
            stats["pg/clip_fraction"] = masked_mean(((ratio - 1).abs() > clip).float(), mask, dims)
    value_loss = 0.5 * masked_mean((values - returns) ** 2, mask, dims)
    entropy = masked_mean(entropies, mask, dims)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    stats |= {"pg/policy_loss": policy_loss.detach(), "pg/value_loss": value_loss.detach(),
              "pg/entropy": entropy.detach()}
    return loss, stats


class PolicyGradientTrainer(OptimizerDeclaration):
    """Adam on a flat theta. Subclasses implement ``update(generator) -> (env_steps, mean return, stats)``.

    ``trainable`` (a bool mask ``[D]``) restricts the gradient to part of theta (the hybrids use it);
    ``span`` is the (start, end) of this trainer's share of the run in the unit of its budget, over which
    the learning rate is annealed.
    """

    section = "a2c"
    sections = ("a2c",)

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> Tensor:
        return state["theta"].detach().clone().cpu()

    def __init__(self, cfg: RunConfig, theta: Tensor | None = None, trainable: Tensor | None = None):
        self.cfg, self.pg = cfg, getattr(cfg, self.section)
        self.task = make_task(cfg.task, device=cfg.device, **cfg.task_options)
        self.model = build_model(cfg, self.task)
        if theta is None:
            theta = self.model.init_params(torch.Generator().manual_seed(cfg.seed))
        self.theta = torch.nn.Parameter(theta.detach().clone().to(cfg.device, torch.float32))
        self.trainable = None if trainable is None else trainable.to(cfg.device)
        self.optimizer = torch.optim.Adam([self.theta], lr=self.pg.lr, eps=self.pg.adam_eps)
        self.generation = 0
        self.env_steps = 0
        by_steps = cfg.budget_steps > 0
        self.span = (0, cfg.budget_steps if by_steps else cfg.generations)

    # ------------------------------------------------------------------ trainer interface
    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        lr = self.pg.lr * self._lr_factor()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seed = generation_seed(self.cfg.seed, self.generation)
        generator = torch.Generator(device=self.task.device).manual_seed(seed)
        steps, mean_return, stats = self.update(generator)
        self.generation += 1
        self.env_steps += steps
        elapsed = time.perf_counter() - start
        return {"train/episode_return": mean_return, **{k: float(v) for k, v in stats.items()}, "pg/lr": lr,
                "perf/generation_s": elapsed, "perf/steps_per_s": steps / max(elapsed, 1e-9)}

    def center(self) -> Tensor:
        return self.theta.detach().clone().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.center(), "adam": self.optimizer.state_dict(), "generation": self.generation,
                "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"].to(self.theta.device))
        self.optimizer.load_state_dict(state["adam"])
        self.generation, self.env_steps = state["generation"], state["env_steps"]

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ composition (optimizers/hybrid.py)
    def set_center(self, theta: Tensor) -> None:
        """Replace theta in place, keeping Adam's moments: another optimizer moved part of it."""
        with torch.no_grad():
            self.theta.copy_(theta.to(self.theta.device))

    def restrict_to(self, trainable: Tensor) -> None:
        """Take gradient steps only on the entries where ``trainable`` (bool ``[D]``) is True."""
        self.trainable = trainable.float().to(self.cfg.device)

    def take_over(self, generation: int, env_steps: int, anneal_from: int) -> None:
        """Continue a run that another optimizer began: its counters, and the learning rate annealed from
        ``anneal_from`` (in the unit of the run's budget) to the run's end instead of over the whole run."""
        self.generation, self.env_steps = generation, env_steps
        self.span = (anneal_from, self.span[1])

    def count_env_steps(self, steps: int) -> None:
        """Steps another optimizer spent: they count in this one's budget (and its learning-rate schedule)."""
        self.env_steps += steps

    # ------------------------------------------------------------------ shared pieces
    def update(self, generator: torch.Generator) -> tuple[int, float, dict[str, Tensor]]:
        raise NotImplementedError

    def params(self) -> dict[str, Tensor]:
        return self.model.spec.unflatten(self.theta)

    def apply_gradient(self, loss: Tensor) -> Tensor:
        """One Adam step on ``loss`` (masked to the trainable part, clipped); returns the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad = self.theta.grad
        if self.trainable is not None:
            grad.mul_(self.trainable)
        norm = clip_gradient(grad, self.pg.max_grad_norm)
        self.optimizer.step()
        return norm.detach()

    def _lr_factor(self) -> float:
        start, end = self.span
        done = (self.env_steps if self.cfg.budget_steps > 0 else self.generation) - start
        return lr_factor(self.pg.lr_schedule, done, end - start)


def clip_gradient(grad: Tensor, max_norm: float, rows: bool = False) -> Tensor:
    """Clip ``grad`` in place to norm ``max_norm`` (0: no clipping), each row on its own where ``rows`` (one member of
    a population per row); returns the norm(s) before."""
    grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # one exploding episode must not poison theta
    norm = grad.double().norm(dim=1) if rows else grad.double().norm()  # float64: a BPTT blow-up must not reach inf
    if max_norm > 0:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0).to(grad.dtype)
        grad.mul_(scale.view(-1, 1) if rows else scale)
    return norm


def lr_factor(schedule: str, done: int, total: int) -> float:
    """The learning rate's multiplier ``done`` of ``total`` (env steps or updates) into its span: 1 ('constant'), or
    annealed linearly ('linear') but never quite to 0, so that a resumed / extended run keeps moving."""
    if schedule == "constant":
        return 1.0
    return max(1.0 - done / max(total, 1), 0.05)
