"""Ray actors through evotorch: 2 local actors score a population exactly as one process does.

The population is split over the actors (evotorch hands each a slice), and every slice is scored with the
generation's seed and the same common random numbers, so the fitnesses, and with them the searcher's next
center, must be identical to the in-process run's. Harlow is the task the issue names; its returns are
multiples of 0.5, so cheetah-dir (continuous returns, 20-step episodes; needs the mujoco extra) checks that
the split changes no float either. Starting a local Ray instance takes ~15 s here, each pair of actors ~20 s.
"""

import pytest
import torch
from helpers import local_ray_instance, task_params

from metods_evo.config import RunConfig, apply_overrides
from metods_evo.optimizers.es import ESTrainer
from metods_evo.tasks import TASKS

pytestmark = pytest.mark.slow  # a local Ray instance and its actors: tens of seconds
ray = pytest.importorskip("ray")


def tiny_config(task: str, **overrides) -> RunConfig:
    cfg = RunConfig(task=task)
    base = {"model.n": "8", "model.depth": "2", "es.popsize": "8", "es.episodes": "2"}
    if task == "cheetah-dir":
        base["task.episode_steps"] = "20"
    apply_overrides(cfg, base | {k: str(v) for k, v in overrides.items()}, TASKS[task].options())
    return cfg


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray instance (``helpers.local_ray_instance``)."""
    yield from local_ray_instance(2)


@pytest.mark.parametrize("task", task_params(["harlow", "cheetah-dir"]))
def test_two_actors_score_like_one_process(local_ray, task):
    if task == "cheetah-dir":
        pytest.importorskip("mujoco", reason="cheetah-dir needs the mujoco extra")
    torch.set_num_threads(1)
    in_process = ESTrainer(tiny_config(task))
    remote = ESTrainer(tiny_config(task, **{"es.num_actors": 2, "es.threads_per_actor": 1}))
    try:
        assert torch.equal(in_process.center(), remote.center())
        for _ in range(2):
            local_metrics, remote_metrics = in_process.step(), remote.step()
            assert len(remote.problem._actors) == 2  # really scored by the actors
            assert torch.equal(in_process.searcher.population.values, remote.searcher.population.values)
            assert torch.equal(in_process.searcher.population.evals, remote.searcher.population.evals)
            assert local_metrics["es/fitness_mean"] == remote_metrics["es/fitness_mean"]
        assert torch.equal(in_process.center(), remote.center())
        assert in_process.env_steps == remote.env_steps > 0  # the actors report their steps back

        def torch_threads() -> int:  # defined here so that Ray ships it by value to the actors
            return torch.get_num_threads()

        actors = remote.problem._actors
        ray.get([actor.set.remote("torch_threads_probe", torch_threads) for actor in actors])
        threads = ray.get([actor.call.remote("torch_threads_probe", [], {}) for actor in actors])
        assert threads == [1, 1]  # threads_per_actor: no oversubscription of the cores
    finally:
        remote.close()
