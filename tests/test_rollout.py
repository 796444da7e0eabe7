"""The batched rollout: population-batched equals one-individual-at-a-time, masking, early stop, NaN handling."""

import pytest
import torch

from metods_evo.config import ModelConfig
from metods_evo.models.metods import MetODS
from metods_evo.optimizers.es import score
from metods_evo.rollout import rollout
from metods_evo.tasks import TASKS, make_task


def population(model, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = model.init_params(g)
    return base + 0.3 * torch.randn(size, model.num_params, generator=g)


@pytest.mark.parametrize("task_id", sorted(TASKS))
@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_population_rollout_equals_individual_rollouts(task_id, mode):
    """One batched rollout of P individuals = P rollouts of one individual on the same episodes (common random
    numbers: the task noise and, in 'sample' mode, the action noise are shared across the population)."""
    if TASKS[task_id].load_class().num_actions == 0:  # imports no simulator
        pytest.skip("continuous tasks: tests/test_continuous.py (rollout) and their own task tests")
    task = make_task(task_id)
    model = MetODS(ModelConfig(n=8, depth=2), task.obs_dim, task.num_actions)
    theta = population(model, 4)
    with torch.no_grad():
        batched = rollout(model, model.spec.unflatten(theta), task, 5, torch.Generator().manual_seed(3),
                          action_mode=mode)
        for i in range(4):
            single = rollout(model, model.spec.unflatten(theta[i]), task, 5, torch.Generator().manual_seed(3),
                             action_mode=mode)
            for name, value in single.metrics.items():
                torch.testing.assert_close(batched.metrics[name][i], value[0], rtol=1e-5, atol=1e-5)
    if mode == "sample":  # sampled actions are reproducible from the seed
        a = rollout(model, model.spec.unflatten(theta), task, 5, torch.Generator().manual_seed(3), action_mode=mode)
        b = rollout(model, model.spec.unflatten(theta), task, 5, torch.Generator().manual_seed(3), action_mode=mode)
        torch.testing.assert_close(a.rewards, b.rewards)


def test_rewards_after_episode_end_are_masked_and_loop_stops_early():
    task = make_task("harlow")
    model = MetODS(ModelConfig(n=8), task.obs_dim, task.num_actions)
    result = rollout(model, model.spec.unflatten(population(model, 3)), task, 6, torch.Generator().manual_seed(0))
    steps = result.rewards.shape[0]
    assert steps <= task.max_steps
    alive = torch.arange(steps).view(-1, 1, 1) < result.lengths.unsqueeze(0)
    assert (result.rewards[~alive] == 0).all()
    assert result.env_steps == int(result.lengths.sum())
    torch.testing.assert_close(result.returns, result.rewards.sum(0))
    assert steps == int(result.lengths.max())  # no step after the last episode ended


def test_non_finite_parameters_score_worst_without_crashing():
    task = make_task("harlow")
    model = MetODS(ModelConfig(n=8), task.obs_dim, task.num_actions)
    theta = population(model, 4)
    theta[1] = float("nan")
    theta[2, :10] = float("inf")
    result = rollout(model, model.spec.unflatten(theta), task, 4, torch.Generator().manual_seed(0))
    assert not result.finite[1].any()
    fitness = score(result, "return")
    assert torch.isfinite(fitness).all()
    assert fitness[1] < fitness[[0, 3]].min() and fitness[2] < fitness[[0, 3]].min()


def test_trace_and_record_shapes():
    task = make_task("maze")
    model = MetODS(ModelConfig(n=8), task.obs_dim, task.num_actions)
    params = model.spec.unflatten(population(model, 1).requires_grad_())
    result = rollout(model, params, task, 3, torch.Generator().manual_seed(0), action_mode="sample", record=True,
                     trace=True)
    assert result.log_probs.shape == result.values.shape == result.entropies.shape == (100, 1, 3)
    assert result.log_probs.requires_grad
    assert len(result.trace["W"]) == 100 and result.trace["W"][0].shape == (1, 3, 8, 8)
