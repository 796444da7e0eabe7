"""The fused Harlow rollout (``metods_evo/fused_rollout.py``) against the step-by-step ``rollout`` loop.

The loop is the reference (``rollout(..., fuse=False)``, itself checked against the task's and the model's
definitions elsewhere). Both runs start from the same generator seed and must agree on everything a scoring rollout
returns: every reward of every step (so every action that earned one), the lengths, all metrics, the finite flags,
the final task state, and the generator's state afterwards. The plastic arithmetic is the fused step's (checked in
``test_fused.py``); f and g sum in another order than the eager matmuls and f's tanh is the fused step's, which
the greedy actions do not notice on these cases. Where float32 rounding can tip a greedy choice (``both`` checks
that the loop's own fused and eager plastic steps agree), no result is the reference and the case is skipped.
"""

import dataclasses

import pytest
import torch

from metods_evo import fused_rollout
from metods_evo.config import ModelConfig
from metods_evo.models.metods import MetODS
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task
from metods_evo.tasks.harlow import HarlowTask


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not fused_rollout.available():
        pytest.skip(f"rollout kernel did not compile: {fused_rollout._load()[1]}")


def population(cfg: ModelConfig, task, pop: int, seed: int, noise: float = 0.5):
    model = MetODS(dataclasses.replace(cfg, fused="any-size"), task.obs_dim, task.num_actions)
    g = torch.Generator().manual_seed(seed)
    theta = model.init_params(g) + noise * torch.randn(pop, model.num_params, generator=g)
    return model, model.spec.unflatten(theta)


def both(model, params, task, episodes: int, seed: int = 7, guard: bool = True):
    """(fused result, loop result, fused generator, loop generator). Skips the case where the loop with the fused
    step and the loop with the eager step disagree: its greedy choices then turn on float32 rounding on this
    machine (near-ties, or rounding amplified by the plastic dynamics), and no result is "the" reference there."""
    gens = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    eager = MetODS(dataclasses.replace(model.cfg, fused="off"), task.obs_dim, task.num_actions)
    with torch.no_grad():
        assert fused_rollout.should_use(model, params, task, episodes)  # the comparison is not the loop with itself
        fast = rollout(model, params, task, episodes, gens[0])
        slow = rollout(model, params, task, episodes, gens[1], fuse=False)
        other = rollout(eager, params, task, episodes, torch.Generator().manual_seed(seed), fuse=False)
    if guard and not (torch.equal(slow.rewards, other.rewards) and torch.equal(slow.lengths, other.lengths)):
        pytest.skip("the loop's own two plastic steps (fused and eager) disagree on this case here")
    return fast, slow, *gens


def assert_same(fast, slow, gen_fast, gen_slow):
    assert fast.rewards.shape == slow.rewards.shape
    assert torch.equal(fast.rewards, slow.rewards)
    assert torch.equal(fast.lengths, slow.lengths)
    assert torch.equal(fast.finite, slow.finite)
    assert fast.metrics.keys() == slow.metrics.keys()
    for name in slow.metrics:
        assert torch.equal(fast.metrics[name], slow.metrics[name]), name
    assert fast.env_steps == slow.env_steps
    for key, value in slow.task_state.items():
        if not key.startswith("_"):
            assert torch.equal(fast.task_state[key], value), key
    assert torch.equal(gen_fast.get_state(), gen_slow.get_state())  # the next draw is the same on both paths


CASES = {
    "preset": (ModelConfig(n=20, depth=3), {}, 4, 16),
    "s1-linear-scalar-relu-random-w0": (
        ModelConfig(n=12, depth=1, write="linear", alpha="scalar", activation="relu", w0="random",
                    action_reward_inputs=True), {}, 3, 8),
    "s2-sigmoid-learnt-w0-hidden-f": (
        ModelConfig(n=9, depth=2, activation="sigmoid", w0="learnt", embed_hidden=6), {}, 3, 24),
    "s4-linear-identity-no-clip": (
        ModelConfig(n=20, depth=4, write="linear", activation="identity", plastic_bound=0.0), {}, 2, 16),
    "smaller-objects-fewer-trials": (
        ModelConfig(n=16, depth=3, plastic_bound=1.5), {"object_dim": 4, "num_trials": 3, "max_steps": 20}, 3, 32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_step_by_step_rollout(case):
    cfg, task_kwargs, pop, episodes = CASES[case]
    task = HarlowTask(**task_kwargs)
    model, params = population(cfg, task, pop, seed=len(case))
    fast, slow, gen_fast, gen_slow = both(model, params, task, episodes)
    assert_same(fast, slow, gen_fast, gen_slow)
    # the comparison means something: choices were made and paid both ways
    assert (slow.rewards > 0).any() and (slow.rewards < 0).any()


def test_early_ends_match_and_finished_blocks_stop():
    """An individual that solves the task ends its episodes early: the lengths match the loop's, and the kernel
    computes a block of 16 episodes only until its longest episode ends (``model_steps``)."""
    task = make_task("harlow")
    model, params = population(ModelConfig(n=20, depth=3), task, pop=16, seed=3)
    fast, slow, gen_fast, gen_slow = both(model, params, task, 32)
    assert_same(fast, slow, gen_fast, gen_slow)
    width = 2 * fused_rollout._load()[0].lanes()  # 32 episodes: blocks of two vectors (16 on AVX2)
    blocks = fast.lengths.view(16, 32 // width, width).amax(-1)  # the longest episode of each block
    assert (blocks < task.max_steps).any()  # some blocks did end early
    assert fast.model_steps == int(blocks.sum()) * width < 16 * 32 * task.max_steps


def test_non_finite_outputs_are_flagged_as_in_the_loop():
    task = make_task("harlow")
    model, params = population(ModelConfig(n=20, depth=3), task, pop=3, seed=2)
    params = {k: v.clone() for k, v in params.items()}
    params["policy_b"][1, 0] = float("nan")  # individual 1: every logit of action 0 is NaN (nan_to_num -> 0)
    params["alpha"][2, 3, 4] = float("nan")  # individual 2: NaN reads from its second sweep on, NaN logits
    # no guard: the eager step carries NaN through the clip where the fused step (ours too) clips it
    fast, slow, gen_fast, gen_slow = both(model, params, task, 16, guard=False)
    assert_same(fast, slow, gen_fast, gen_slow)
    assert fast.finite[0].all() and not fast.finite[1:].any()


def test_dispatch():
    task = make_task("harlow")
    model, params = population(ModelConfig(n=20, depth=3), task, pop=2, seed=0)
    assert not fused_rollout.should_use(model, params, task, 16)  # autograd on: the loop (and the eager step)
    with_mode = lambda mode: MetODS(dataclasses.replace(model.cfg, fused=mode), task.obs_dim, task.num_actions)  # noqa: E731
    mlp = MetODS(dataclasses.replace(model.cfg, write="mlp"), task.obs_dim, task.num_actions)
    deep_g = MetODS(dataclasses.replace(model.cfg, readout_hidden=8), task.obs_dim, task.num_actions)
    pre = MetODS(dataclasses.replace(model.cfg, write_pre="previous"), task.obs_dim, task.num_actions)
    with torch.no_grad():
        assert fused_rollout.should_use(model, params, task, 16)  # 'any-size'
        assert not fused_rollout.should_use(with_mode("off"), params, task, 16)
        assert not fused_rollout.should_use(with_mode("auto"), params, task, 16)  # small: the loop, as the fused step
        big = {k: v[:1].expand(256, *v.shape[1:]) for k, v in params.items()}  # P x E x N^2 = 2^20 elements of W
        assert fused_rollout.should_use(with_mode("auto"), big, task, 16)
        assert not fused_rollout.should_use(model, params, task, 12)  # E not a multiple of 8
        assert not fused_rollout.should_use(model, params, make_task("maze"), 16)
        assert not fused_rollout.should_use(mlp, mlp.spec.unflatten(mlp.init_params().unsqueeze(0)), task, 16)
        assert not fused_rollout.should_use(deep_g, deep_g.spec.unflatten(deep_g.init_params().unsqueeze(0)), task, 16)
        assert not fused_rollout.should_use(pre, params, task, 16)  # the kernel has no "pre" state
        assert not fused_rollout.should_use(model, {k: v.double() for k, v in params.items()}, task, 16)


@pytest.mark.parametrize("options", [{"action_mode": "sample"}, {"record": True}, {"trace": True}])
def test_rollouts_the_kernel_does_not_compute_take_the_loop(monkeypatch, options):
    task = make_task("harlow")
    model, params = population(ModelConfig(n=20, depth=3), task, pop=2, seed=0)

    def refuse(*args, **kwargs):
        raise AssertionError("the fused rollout was taken")

    monkeypatch.setattr(fused_rollout, "harlow_rollout", refuse)
    with torch.no_grad():
        result = rollout(model, params, task, 16, torch.Generator().manual_seed(0), **options)
    assert result.rewards.shape[1:] == (2, 16)


@pytest.mark.parametrize("pop", [8, 70])  # 8 blocks: claimed one at a time; 70: four at a time, a partial last claim
def test_threads_do_not_change_the_result(pop):
    task = make_task("harlow")
    model, params = population(ModelConfig(n=20, depth=3), task, pop=pop, seed=4)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            with torch.no_grad():
                results.append(rollout(model, params, task, 16, torch.Generator().manual_seed(1)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert torch.equal(results[0].rewards, other.rewards) and results[0].model_steps == other.model_steps
        assert torch.equal(results[0].lengths, other.lengths)
