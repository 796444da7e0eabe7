"""ES through evotorch: every algorithm runs, resumes bit-exactly from its state, and learns."""

import pytest
import torch

from metods_evo.config import RunConfig, apply_overrides
from metods_evo.optimizers.es import ESTrainer


def tiny_config(task: str = "harlow", **overrides) -> RunConfig:
    cfg = RunConfig(task=task)
    base = {"model.n": "8", "model.depth": "2", "es.popsize": "16", "es.episodes": "4"}
    apply_overrides(cfg, base | {k: str(v) for k, v in overrides.items()}, {})
    return cfg


@pytest.mark.parametrize("algorithm", ["pgpe", "snes", "cem", "cmaes", "cmaes-full", "xnes"])
def test_each_algorithm_runs_a_few_generations(algorithm):
    trainer = ESTrainer(tiny_config(**{"es.algorithm": algorithm}))
    start = trainer.center().clone()
    for _ in range(3):
        metrics = trainer.step()
    assert trainer.generation == 3 and trainer.env_steps > 3 * 16 * 4 * 5
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert not torch.equal(trainer.center(), start)


def test_state_dict_resume_is_exact():
    a = ESTrainer(tiny_config())
    for _ in range(2):
        a.step()
    saved = a.state_dict()
    b = ESTrainer(tiny_config())
    b.load_state_dict(saved)
    for _ in range(3):
        ma, mb = a.step(), b.step()
        assert ma["es/fitness_mean"] == mb["es/fitness_mean"]
    assert torch.equal(a.center(), b.center()) and a.env_steps == b.env_steps


def test_same_seed_same_run_different_seed_different_run():
    runs = []
    for seed in (0, 0, 1):
        trainer = ESTrainer(tiny_config(seed=seed))
        for _ in range(2):
            trainer.step()
        runs.append(trainer.center())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.slow
def test_es_learns_maze_exploration():
    """Threshold test: a short PGPE run turns a near-random walker into a maze explorer (return x2 or more)."""
    torch.set_num_threads(1)
    cfg = tiny_config(task="maze", **{"model.n": 16, "model.depth": 1, "es.popsize": 64, "es.episodes": 8,
                                      "es.center_lr": 0.1, "es.sigma_init": 0.2, "es.action_mode": "sample"})
    trainer = ESTrainer(cfg)
    from metods_evo.evaluate import evaluate_theta

    before = evaluate_theta(cfg, trainer.center(), 64, seed=99)["metrics"]["return"]["mean"]
    for _ in range(15):
        trainer.step()
    after = evaluate_theta(cfg, trainer.center(), 64, seed=99)["metrics"]["return"]["mean"]
    assert after >= 2 * before and after >= before + 4, (before, after)


def test_searcher_tensors_evaluate_directly():
    """evotorch hands out read-only tensors; the model must not trip over them (it writes W in place)."""
    from evotorch.tools.readonlytensor import ReadOnlyTensor

    from metods_evo.evaluate import evaluate_theta

    cfg = tiny_config()
    trainer = ESTrainer(cfg)
    trainer.step()
    center = trainer.searcher.status["center"]
    assert isinstance(center, ReadOnlyTensor)  # what this test is about
    before = center.clone()
    report = evaluate_theta(cfg, center, 8, seed=0)
    # the same numbers as an ordinary (writable) copy of the center gives, and the searcher's tensor left as it was
    assert report == evaluate_theta(cfg, before.clone(), 8, seed=0)
    assert torch.equal(center, before)


def test_late_episodes_switch_at_the_given_generation():
    """Maze episodes last exactly 100 steps, so the step count shows how many episodes each generation played."""
    trainer = ESTrainer(tiny_config("maze", **{"es.late_episodes": 6, "es.late_from": 1}))
    trainer.step()
    assert trainer.env_steps == 16 * 4 * 100
    trainer.step()
    assert trainer.env_steps == 16 * 4 * 100 + 16 * 6 * 100


def test_late_sigma_bounds_the_step_size_from_late_from_and_resumes_exactly():
    cfg = tiny_config(**{"es.algorithm": "snes", "es.sigma_init": 0.2, "es.late_from": 2, "es.late_sigma": 0.05})
    a = ESTrainer(cfg)
    sigmas = [a.step()["es/sigma_mean"] for _ in range(2)]
    assert all(s > 0.1 for s in sigmas)  # generations 0 and 1 sample at the initial sigma (as updated)
    saved = a.state_dict()
    after = [a.step()["es/sigma_mean"] for _ in range(2)]
    assert max(after) <= 0.05 + 1e-7 and float(a.stdev().max()) <= 0.05 + 1e-7
    b = ESTrainer(cfg)
    b.load_state_dict(saved)  # resumed just before late_from: the bound is applied there, as in the first run
    assert [b.step()["es/sigma_mean"] for _ in range(2)] == after
    assert torch.equal(a.center(), b.center())


def test_a_searcher_stepped_by_hand_scores_new_episodes_each_generation():
    """The problem advances its own generation counter: a user's loop over ``searcher.step()`` needs no bookkeeping."""
    trainer = ESTrainer(tiny_config(**{"es.algorithm": "snes"}))
    fitness = []
    for _ in range(3):
        trainer.searcher.step()  # not trainer.step()
        fitness.append(trainer.searcher.population.evals[:, 0].clone())
    assert trainer.problem.round == 3
    reference = ESTrainer(tiny_config(**{"es.algorithm": "snes"}))
    for expected in fitness:
        reference.step()
        assert torch.equal(reference.searcher.population.evals[:, 0], expected)
