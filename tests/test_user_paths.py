"""What a user who extends or audits the toolkit relies on: evotorch's own loggers on a run's searcher, a subclassed
fitness problem stepped by hand, agent files that load without running code, and the licence and version in one
place each."""

import importlib.metadata
from pathlib import Path

import pytest
import tomllib
import torch
from evotorch.algorithms import SNES
from evotorch.logging import PandasLogger

import metods_evo
from metods_evo.config import RunConfig, apply_overrides
from metods_evo.optimizers.es import MetODSProblem

ROOT = Path(__file__).resolve().parent.parent


def tiny(**overrides) -> RunConfig:
    cfg = RunConfig(task="harlow")
    apply_overrides(cfg, {"model.n": "8", "model.depth": "2", "es.popsize": "16", "es.episodes": "4",
                          **{k: str(v) for k, v in overrides.items()}}, {})
    return cfg


@pytest.mark.slow
def test_evotorch_logger_attached_through_on_start(tmp_path):
    """``train_agent(on_start=...)`` hands over the trainer before its first step: a PandasLogger on its searcher sees
    every generation, with the same mean fitness that metrics.csv records."""
    loggers = []
    result = metods_evo.train_agent("harlow", "es", out=tmp_path / "run", generations=3, progress=False,
                                    overrides={"model.n": 8, "model.depth": 2, "es.popsize": 16, "es.episodes": 4,
                                               "es.starts": 1, "es.algorithm": "snes", "eval_episodes": 8,
                                               "final_eval_episodes": 8},
                                    on_start=lambda trainer: loggers.append(PandasLogger(trainer.searcher)))
    frame = loggers[0].to_dataframe()
    assert len(frame) == 3
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    recorded = [float(r.split(",")[header.index("es/fitness_mean")]) for r in rows[1:]]
    assert list(frame["mean_eval"]) == pytest.approx(recorded, rel=1e-5)
    assert result.agent.model.num_params > 0


class ShiftedProblem(MetODSProblem):
    """A user's problem: the task's fitness plus a constant, nothing else overridden."""

    def _evaluate_batch(self, batch) -> None:
        super()._evaluate_batch(batch)
        batch.set_evals(batch.evals[:, 0] + 10.0)


def test_a_subclassed_problem_stepped_by_hand_moves_to_new_episodes():
    """No bookkeeping of ``problem.round`` is left to a subclass or a hand-written loop: each evaluation is one
    generation, and its episodes are those a plain problem scores at that generation."""
    cfg = tiny()
    mine, plain = ShiftedProblem(cfg), MetODSProblem(cfg)
    searcher, reference = SNES(mine, stdev_init=0.1), SNES(plain, stdev_init=0.1)
    for generation in range(3):
        searcher.step()
        reference.step()
        assert mine.round == plain.round == generation + 1
        assert torch.equal(searcher.population.evals[:, 0], reference.population.evals[:, 0] + 10.0)
    again = searcher.population.clone()
    mine.evaluate(again)  # the same solutions, scored once more: the next generation's episodes, not a replay
    assert mine.round == 4 and not torch.equal(again.evals[:, 0], searcher.population.evals[:, 0])


@pytest.mark.parametrize("agent", sorted((ROOT / "runs").glob("*/agent.pt")), ids=lambda p: p.parent.name)
def test_reference_agents_load_without_pickled_code(agent):
    """agent.pt holds tensors and plain numbers only: torch's safe loader (no code run) reads every reference agent."""
    state = torch.load(agent, map_location="cpu", weights_only=True)
    assert torch.isfinite(state["theta"]).all()


def test_licence_and_version_are_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "version" in project["dynamic"] and "version" not in project
    assert importlib.metadata.version("metods-evo") == metods_evo.__version__
