"""Hybrids of evolution strategies and policy gradient, both over the same theta.

``hybrid.mode = sequential`` (the default): ES for the first ``hybrid.es_fraction`` of the budget, then
policy-gradient fine-tuning (PPO or A2C, ``hybrid.gradient``) from the ES center, with its learning rate
annealed over the rest. ES explores the space of learning rules with a whole population and is not
fooled by the noisy, zero-mean early returns of a task like Harlow; the gradient then spends the
remaining steps where it is most step-efficient: polishing a policy that already works.

``hybrid.mode = split``: every generation, one ES generation over the plasticity meta-parameters only
(alpha, kappa, beta, W0 and the write rule: a few hundred numbers that set *how* the network learns),
with f and g held at their current values, then one gradient update of f and g (the embedding and the
read-out: most of theta, and smooth functions of the inputs) with the plasticity at the ES center.
Each half searches the part of theta it suits: the gradient through hundreds of plastic updates is
least reliable for the plasticity coefficients themselves, and ES scales worst with dimension.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from metods_evo.config import ConfigError, RunConfig
from metods_evo.optimizers.a2c import A2CTrainer
from metods_evo.optimizers.base import OptimizerDeclaration
from metods_evo.optimizers.es import ESDeclaration, ESTrainer
from metods_evo.optimizers.pg import PolicyGradientTrainer
from metods_evo.optimizers.ppo import PPOTrainer

ES_KEYS = ("es/fitness_mean", "es/fitness_best", "es/fitness_std", "es/sigma_mean")
PG_KEYS = ("pg/policy_loss", "pg/value_loss", "pg/entropy", "pg/grad_norm", "pg/lr", "pg/approx_kl",
           "pg/clip_fraction", "pg/updates", "plastic/mean_abs_w", "plastic/w_at_bound")
GRADIENT = {"ppo": PPOTrainer, "a2c": A2CTrainer}


def plasticity_mask(model) -> Tensor:
    """Bool ``[D]``: True on the entries of theta that are plasticity meta-parameters (``model.plasticity``)."""
    mask = torch.zeros(model.num_params, dtype=torch.bool)
    for name, where in model.spec.offsets().items():
        mask[where] = name in getattr(model, "plasticity", ())  # a plugin model may declare none
    return mask


class HybridTrainer(OptimizerDeclaration):
    sections = ("es", "a2c", "ppo", "hybrid")

    @classmethod
    def detail(cls, cfg: RunConfig) -> str:
        return f"{cfg.hybrid.mode}, {cfg.hybrid.gradient}"

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cfg.hybrid.mode == "split" and cfg.model.kind != "metods":
            raise ConfigError(f"hybrid.mode=split searches MetODS's plasticity parameters by ES; model.kind="
                              f"{cfg.model.kind} has none (use hybrid.mode=sequential)")

    @classmethod
    def resume_problem(cls, cfg: RunConfig, state: dict[str, Any]) -> str:
        if state["mode"] == cfg.hybrid.mode:
            return ""
        return (f"it says optimizer hybrid (hybrid.mode={cfg.hybrid.mode}), checkpoint.pt holds the state of a "
                f"hybrid (hybrid.mode={state['mode']}) trainer")

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> Tensor:
        """Its gradient learner's theta once it has one, else its ES searcher's center."""
        if state["pg"] is not None:
            return PolicyGradientTrainer.center_of(state["pg"])
        return ESDeclaration.center_of(state["es"])

    def __init__(self, cfg: RunConfig):
        self.cfg, self.mode = cfg, cfg.hybrid.mode
        self.by_steps = cfg.budget_steps > 0
        total = cfg.budget_steps if self.by_steps else cfg.generations
        self.switch = max(1, round(cfg.hybrid.es_fraction * total))  # sequential: ES until here
        self.gradient_cls = GRADIENT[cfg.hybrid.gradient]
        if self.mode == "split":
            self.pg = self.gradient_cls(cfg)
            self.mask = plasticity_mask(self.pg.model)
            if not self.mask.any():  # validate() rejects non-MetODS kinds; this guards a model built otherwise
                raise ConfigError("hybrid.mode=split needs plasticity parameters (alpha, kappa, beta, ...); "
                                  f"model.kind={cfg.model.kind} has none")
            self.pg.restrict_to(~self.mask)
            subset = self.mask.nonzero().squeeze(1)
            self.es: ESTrainer | None = ESTrainer(cfg, subset=subset, theta=self.pg.center())
        else:
            self.es, self.pg = ESTrainer(cfg), None
        self.task, self.model = (self.es or self.pg).task, (self.es or self.pg).model
        self.generation = 0
        self.env_steps = 0

    @property
    def phase(self) -> str:
        return "es" if self.pg is None else "pg" if self.es is None else "split"

    def step(self) -> dict[str, float]:
        if self.mode == "split":
            metrics = self._split_step()
        elif self.pg is None:
            metrics = self.es.step()
            self.generation, self.env_steps = self.es.generation, self.es.env_steps
            if (self.env_steps if self.by_steps else self.generation) >= self.switch:
                self._start_gradient(self.es.center())
        else:
            metrics = self.pg.step()
            self.generation, self.env_steps = self.pg.generation, self.pg.env_steps
        row = {"hybrid/phase": {"es": 0.0, "pg": 1.0, "split": 2.0}[self.phase]}
        for key in ("train/episode_return", *ES_KEYS, *PG_KEYS, "perf/generation_s", "perf/steps_per_s"):
            row[key] = metrics.get(key, math.nan)
        return row

    def _split_step(self) -> dict[str, float]:
        self.es.set_base(self.pg.center())  # the ES population varies the plasticity of the current f, g
        run_before, es_before = self.env_steps, self.es.env_steps
        es_metrics = self.es.step()
        theta = self.pg.center()
        theta[self.mask] = self.es.center()
        self.pg.set_center(theta)
        self.pg.count_env_steps(self.es.env_steps - es_before)  # the gradient's counter is the run's
        pg_metrics = self.pg.step()
        self.generation += 1
        self.env_steps = self.pg.env_steps
        seconds = es_metrics["perf/generation_s"] + pg_metrics["perf/generation_s"]
        steps = self.env_steps - run_before
        return es_metrics | pg_metrics | {"perf/generation_s": seconds, "perf/steps_per_s": steps / max(seconds, 1e-9)}

    def _start_gradient(self, theta: Tensor) -> None:
        self.pg = self.gradient_cls(self.cfg, theta=theta)
        self.pg.take_over(self.generation, self.env_steps, anneal_from=self.switch)  # anneal over its phase only
        self.es.close()
        self.es = None

    def center(self) -> Tensor:
        return self.es.center() if self.pg is None else self.pg.center()

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "es": self.es.state_dict() if self.es else None,
                "pg": self.pg.state_dict() if self.pg else None, "generation": self.generation,
                "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation, self.env_steps = state["generation"], state["env_steps"]
        if self.mode == "sequential" and state["es"] is None:
            self._start_gradient(self.gradient_cls.center_of(state["pg"]))
        if state["es"] is not None:
            self.es.load_state_dict(state["es"])
        if state["pg"] is not None:
            self.pg.load_state_dict(state["pg"])

    def close(self) -> None:
        if self.es is not None:
            self.es.close()
