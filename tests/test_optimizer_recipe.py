"""Adding an optimizer is one class and one ``register_optimizer`` line (docs/architecture.md, "Add an optimizer"):
a random search defined here is trained, resumed and evaluated through the command line like a built-in one."""

from __future__ import annotations

import csv
import json
from typing import Any

import pytest
import torch
from helpers import cli

from metods_evo.config import RunConfig, generation_seed
from metods_evo.models import build_model
from metods_evo.optimizers import OPTIMIZERS, OptimizerDeclaration, Trainer, register_optimizer
from metods_evo.rollout import rollout
from metods_evo.runs import default_run_name
from metods_evo.tasks import make_task


class RandomSearch(OptimizerDeclaration):
    """Keep the best of theta and ``es.popsize - 1`` Gaussian perturbations of it (``es.sigma_init``), all scored on
    the same ``es.episodes`` episodes."""

    sections = ("es",)

    @classmethod
    def action_mode(cls, cfg: RunConfig) -> str:
        return "greedy"

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> torch.Tensor:
        return state["theta"].clone()

    def __init__(self, cfg: RunConfig):
        self.cfg, self.task = cfg, make_task(cfg.task, device=cfg.device, **cfg.task_options)
        self.model = build_model(cfg, self.task)
        self.theta = self.model.init_params(torch.Generator().manual_seed(cfg.seed))
        self.generation = self.env_steps = 0

    def step(self) -> dict[str, float]:
        generator = torch.Generator().manual_seed(generation_seed(self.cfg.seed, self.generation))
        noise = torch.randn(self.cfg.es.popsize - 1, self.theta.numel(), generator=generator)
        population = torch.cat([self.theta[None], self.theta + self.cfg.es.sigma_init * noise])
        with torch.no_grad():
            result = rollout(self.model, self.model.spec.unflatten(population), self.task, self.cfg.es.episodes,
                             generator, action_mode="greedy")
        fitness = result.returns.mean(dim=1)
        self.theta = population[int(fitness.argmax())]
        self.generation, self.env_steps = self.generation + 1, self.env_steps + result.env_steps
        return {"train/episode_return": float(fitness.mean()), "search/best": float(fitness.max()),
                "perf/generation_s": 0.0, "perf/steps_per_s": 0.0}

    def center(self) -> torch.Tensor:
        return self.theta.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.center(), "generation": self.generation, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta = state["theta"].clone()
        self.generation, self.env_steps = state["generation"], state["env_steps"]

    def close(self) -> None:
        pass


@pytest.fixture
def random_search():
    saved = dict(OPTIMIZERS)
    register_optimizer("random-search", RandomSearch)  # the one line that adds it
    yield
    OPTIMIZERS.clear()
    OPTIMIZERS.update(saved)


def metrics(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "wall_s" and not k.startswith("perf/")}
                for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_a_registered_class_trains_resumes_and_evaluates(random_search, tmp_path):
    options = ["--task", "harlow", "--optimizer", "random-search", "--popsize", "6", "--set", "es.episodes=4",
               "--set", "eval_every=1", "--set", "checkpoint_every=1", "--set", "eval_episodes=8",
               "--set", "final_eval_episodes=8", "--no-progress"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert cli("train", *options, "--generations", "3", "--out", whole).exit_code == 0
    assert cli("train", *options, "--generations", "2", "--out", part).exit_code == 0
    assert cli("train", "--resume", part, "--generations", "3", "--no-progress").exit_code == 0

    rows = metrics(whole)
    assert [row["generation"] for row in rows] == ["1", "2", "3"] and "search/best" in rows[0]
    assert metrics(part) == rows  # the resumed run continued exactly
    assert torch.load(part / "checkpoint.pt", weights_only=False)["optimizer"] == "random-search"
    trainer = RandomSearch(RunConfig(optimizer="random-search"))
    assert isinstance(trainer, Trainer)

    reports = [json.loads(cli("evaluate", run, "--episodes", "8", "--agent", "last", "--json").output)
               for run in (whole, part)]
    assert reports[0]["action_mode"] == "greedy"  # as the class declares: not the default for others, 'sample'
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert default_run_name(RunConfig(optimizer="random-search")).startswith("harlow__random-search__s0__")
