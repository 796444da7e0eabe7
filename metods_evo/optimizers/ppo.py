"""PPO over whole episodes of a plastic agent.

The plastic state makes a time step meaningless on its own, so the unit of PPO's minibatches is the
episode: each update plays ``ppo.episodes`` episodes with sampled actions (no autograd), computes GAE
advantages once, then for ``ppo.epochs`` epochs splits the episodes into ``ppo.minibatches`` random
sets and re-runs each set from its episodes' start with ``replay`` (the plastic state re-computed under
the current theta), taking one Adam step on the clipped surrogate + value loss - entropy bonus.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metods_evo.optimizers.pg import PolicyGradientTrainer, actor_critic_loss, gae, memory_stats
from metods_evo.rollout import episodes_of, replay, rollout


class PPOTrainer(PolicyGradientTrainer):
    section = "ppo"
    sections = ("ppo",)

    def update(self, generator: torch.Generator) -> tuple[int, float, dict[str, Tensor]]:
        pg = self.pg
        with torch.no_grad():
            result = rollout(self.model, self.params(), self.task, pg.episodes, generator, action_mode="sample",
                             record=True)
            valid = result.valid[:, 0]
            advantages, returns = gae(result.rewards[:, 0], result.values[:, 0], valid, pg.gamma, pg.gae_lambda)
        inputs = result.inputs
        old_log_probs = result.log_probs[:, 0]
        per_batch = -(-pg.episodes // pg.minibatches)
        sums: dict[str, Tensor] = {}
        updates = 0
        for _ in range(pg.epochs):
            order = torch.randperm(pg.episodes, generator=generator, device=generator.device)
            kl = []
            for batch in order.split(per_batch):
                episodes = episodes_of(inputs, batch)
                log_probs, values, entropies = replay(
                    self.model, self.params(), self.task, episodes["state0"], episodes["obs"], episodes["actions"],
                    result.rewards[:, :, batch], truncate=pg.bptt_truncate)
                mask = valid[:, batch].float()
                loss, stats = actor_critic_loss(pg, log_probs[:, 0], values[:, 0], entropies[:, 0],
                                                advantages[:, batch], returns[:, batch], mask,
                                                old_log_probs=old_log_probs[:, batch], clip=pg.clip)
                stats["pg/grad_norm"] = self.apply_gradient(loss)
                kl.append(stats["pg/approx_kl"])
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
            if pg.target_kl > 0 and float(torch.stack(kl).mean()) > pg.target_kl:
                break
        stats = {key: value / updates for key, value in sums.items()} | {"pg/updates": torch.tensor(float(updates))}
        stats |= memory_stats(self.model, result)  # of the batch that was played (before this update)
        return result.env_steps, float(result.returns.mean()), stats
