"""``es.starts``: independent searchers side by side, halved by their centers' scores, resumed exactly."""

import torch

from metods_evo.config import RunConfig, apply_overrides, generation_seed
from metods_evo.evaluate import EVAL_STREAM, evaluate_theta
from metods_evo.optimizers.es import ESTrainer, MultiStartES, make_es_trainer


def tiny_config(**overrides) -> RunConfig:
    cfg = RunConfig(task="harlow")
    base = {"model.n": "8", "model.depth": "2", "es.popsize": "16", "es.episodes": "4", "es.algorithm": "snes",
            "eval_episodes": "32", "es.starts": "4", "es.halving": "2"}
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


def test_halving_keeps_the_better_half_by_the_centers_scores():
    cfg = tiny_config()
    trainer = MultiStartES(cfg)
    trainer.step()
    metrics = trainer.step()  # generation 2: the first halving, after this generation's updates
    assert len(trainer.searchers) == 2 and metrics["es/starts_running"] == 2
    everyone = trainer.last_scores
    assert sorted(everyone) == [0, 1, 2, 3]
    kept = set(trainer.searchers)
    assert min(everyone[k] for k in kept) >= max(everyone[k] for k in everyone if k not in kept)
    seed = generation_seed(cfg.seed, 0, EVAL_STREAM)  # the score is the center's mean on the evaluation episodes
    for k in kept:
        report = evaluate_theta(cfg, trainer.searchers[k].center(), cfg.eval_episodes, seed)
        assert report["metrics"]["return"]["mean"] == everyone[k]
    assert trainer.leader() == min(kept, key=lambda k: (-everyone[k], k))
    assert torch.equal(trainer.center(), trainer.searchers[trainer.leader()].center())
    for _ in range(2):
        trainer.step()
    assert len(trainer.searchers) == 1  # 4 -> 2 -> 1, then one searcher to the end
    assert trainer.generation == 4


def test_env_steps_count_every_start():
    trainer = MultiStartES(tiny_config(**{"es.halving": 0}))
    trainer.step()
    assert trainer.env_steps == sum(s.env_steps for s in trainer.searchers.values())


def test_resume_mid_run_is_exact():
    a = MultiStartES(tiny_config())
    for _ in range(3):  # past the first halving
        a.step()
    b = MultiStartES(tiny_config())
    b.load_state_dict(a.state_dict())
    assert sorted(b.searchers) == sorted(a.searchers)
    for _ in range(3):
        ma, mb = a.step(), b.step()
        assert ma["es/fitness_mean"] == mb["es/fitness_mean"]
    assert torch.equal(a.center(), b.center()) and a.env_steps == b.env_steps and a.scores == b.scores
