"""``es.starts``: independent searchers side by side, the best kept at ``es.select_at``, resumed exactly."""

import pytest
import torch

from metods_evo.config import RunConfig, apply_overrides, generation_seed
from metods_evo.evaluate import EVAL_STREAM, evaluate_theta
from metods_evo.optimizers.es import ESTrainer, MultiStartES, make_es_trainer


def tiny_config(**overrides) -> RunConfig:
    cfg = RunConfig(task="harlow")
    base = {"model.n": "8", "model.depth": "2", "es.popsize": "16", "es.episodes": "4", "es.algorithm": "snes",
            "eval_episodes": "32", "es.starts": "4", "es.select_at": "2"}
    apply_overrides(cfg, base | {k: str(v) for k, v in overrides.items()}, {})
    return cfg


def test_one_start_is_the_plain_searcher():
    assert type(make_es_trainer(tiny_config(**{"es.starts": 1}))) is ESTrainer
    assert type(make_es_trainer(tiny_config())) is MultiStartES


def test_the_first_start_is_the_single_searcher_run_and_the_others_differ():
    multi, single = MultiStartES(tiny_config()), ESTrainer(tiny_config(**{"es.starts": 1}))
    assert torch.equal(multi.searchers[0].center(), single.center())
    multi.step()
    single.step()
    assert torch.equal(multi.searchers[0].center(), single.center())  # same initial theta, samples and episodes
    centers = [s.center() for s in multi.searchers.values()]
    assert all(not torch.equal(centers[0], c) for c in centers[1:])  # independent starts


def test_own_episodes_leave_the_first_start_as_it_is_and_give_the_others_their_own_stream():
    shared, own = MultiStartES(tiny_config()), MultiStartES(tiny_config(**{"es.start_episodes": "own"}))
    shared.step()
    own.step()
    assert torch.equal(shared.searchers[0].center(), own.searchers[0].center())
    for k in (1, 2, 3):  # the same initial theta and samples, other episodes: another update
        a, b = shared.searchers[k], own.searchers[k]
        assert torch.equal(a.searcher.population.values, b.searcher.population.values)
        assert not torch.equal(a.searcher.population.evals, b.searcher.population.evals)
        assert b.problem.episode_seed != own.searchers[0].problem.episode_seed == a.problem.episode_seed


@pytest.mark.slow
def test_the_selection_keeps_the_start_whose_center_scores_best():
    cfg = tiny_config()
    trainer = MultiStartES(cfg)
    trainer.step()
    assert len(trainer.searchers) == 4 and trainer.leader() == 0  # before the selection: the first start
    metrics = trainer.step()  # generation 2 = es.select_at, after this generation's updates
    assert len(trainer.searchers) == 1 and metrics["es/starts_running"] == 1
    everyone = trainer.last_scores
    assert sorted(everyone) == [0, 1, 2, 3] and len(set(everyone.values())) > 1
    (kept,) = trainer.searchers
    assert kept == min(everyone, key=lambda k: (-everyone[k], k)) == trainer.leader()
    seed = generation_seed(cfg.seed, 0, EVAL_STREAM)  # the score is the center's mean on the evaluation episodes
    report = evaluate_theta(cfg, trainer.searchers[kept].center(), cfg.eval_episodes, seed)
    assert report["metrics"]["return"]["mean"] == everyone[kept]
    assert torch.equal(trainer.center(), trainer.searchers[kept].center())
    trainer.step()
    assert len(trainer.searchers) == 1 and trainer.generation == 3


def test_env_steps_count_every_start():
    trainer = MultiStartES(tiny_config(**{"es.select_at": 0}))
    trainer.step()
    assert trainer.env_steps == sum(s.env_steps for s in trainer.searchers.values())


@pytest.mark.slow
def test_resume_mid_run_is_exact():
    a = MultiStartES(tiny_config())
    a.step()  # before the selection: every start's state is saved
    b = MultiStartES(tiny_config())
    b.load_state_dict(a.state_dict())
    assert sorted(b.searchers) == sorted(a.searchers) == [0, 1, 2, 3]
    for _ in range(3):
        ma, mb = a.step(), b.step()
        assert ma["es/fitness_mean"] == mb["es/fitness_mean"]
    assert torch.equal(a.center(), b.center()) and a.env_steps == b.env_steps and a.scores == b.scores
