"""A2C: one policy-gradient step per batch of whole episodes, back-propagated through the plastic dynamics.

Each update plays ``a2c.episodes`` episodes with sampled actions in one batched rollout (P = 1) with
autograd on, computes GAE advantages from the critic's values, and takes one Adam step on
policy loss + value_coef * value loss - entropy_coef * entropy. The gradient of every step's loss
reaches theta through all earlier plastic updates of its episode (``a2c.bptt_truncate`` cuts it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metods_evo.optimizers.pg import PolicyGradientTrainer, actor_critic_loss, gae, memory_stats
from metods_evo.rollout import rollout


class A2CTrainer(PolicyGradientTrainer):
    section = "a2c"
    sections = ("a2c",)

    def update(self, generator: torch.Generator) -> tuple[int, float, dict[str, Tensor]]:
        pg = self.pg
        result = rollout(self.model, self.params(), self.task, pg.episodes, generator, action_mode="sample",
                         record=True, truncate=pg.bptt_truncate)
        valid = result.valid[:, 0]
        mask = valid.float()
        advantages, returns = gae(result.rewards[:, 0], result.values[:, 0].detach(), valid, pg.gamma, pg.gae_lambda)
        loss, stats = actor_critic_loss(pg, result.log_probs[:, 0], result.values[:, 0], result.entropies[:, 0],
                                        advantages, returns, mask)
        stats["pg/grad_norm"] = self.apply_gradient(loss)
        return result.env_steps, float(result.returns.mean()), stats | memory_stats(self.model, result)
