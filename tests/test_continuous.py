"""Continuous actions: the Gaussian policy head, clipping into the task's bounds, replay, Agent.act, learning."""

from __future__ import annotations

import pytest
import torch

from metods_evo.agent import Agent
from metods_evo.config import ModelConfig, make_config
from metods_evo.models.metods import MetODS
from metods_evo.rollout import episodes_of, policy_terms, replay, rollout
from metods_evo.tasks import TASKS, make_task, register
from metods_evo.tasks.base import Task
from metods_evo.train import make_trainer


class HiddenDirection(Task):
    """Ten steps of a 1-D push whose paying direction d = +-1 is drawn per episode and hidden: reward d * a.

    Chance is 0; an agent that guesses on step 1 and then pushes along the sign of the reward it got earns
    up to 9 (less with exploration noise): it must infer d from reward and keep it in its plastic weights."""

    obs_dim, num_actions, action_dim, max_steps = 1, 0, 1, 10

    def reset(self, num_envs, generator):
        direction = torch.randint(0, 2, (num_envs,), generator=generator).float() * 2 - 1
        return {"d": direction, "t": torch.zeros(num_envs, dtype=torch.long)}, torch.ones(num_envs, 1)

    def step(self, state, action, generator):
        assert action.shape == (len(state["d"]), 1) and action.abs().max() <= 1.0, "the rollout clips actions"
        t = state["t"] + 1
        return {**state, "t": t}, torch.ones(len(t), 1), state["d"] * action[:, 0], t >= self.max_steps


@pytest.fixture
def direction_task():
    register("direction-test", f"{__name__}:HiddenDirection")
    yield "direction-test"
    TASKS.pop("direction-test")


def continuous_model(**model):
    return MetODS(ModelConfig(n=6, depth=2, **model), obs_dim=1, num_actions=0, action_dim=1)


def test_gaussian_policy_terms_match_torch_distributions():
    mean, log_std = torch.randn(2, 5, 3), torch.randn(2, 3) * 0.3
    action = mean + torch.randn(2, 5, 3)
    log_prob, entropy = policy_terms(mean, action, log_std)
    normal = torch.distributions.Normal(mean, log_std.exp().unsqueeze(1).expand_as(mean))
    torch.testing.assert_close(log_prob, normal.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, normal.entropy().sum(-1))


def test_continuous_rollout_clips_shares_noise_and_replays(direction_task):
    task, model = make_task(direction_task), continuous_model()
    theta = model.init_params(torch.Generator().manual_seed(0))
    params = model.spec.unflatten(theta.expand(3, -1).clone())  # 3 identical individuals
    params["log_std"] += 1.0  # wide noise, so that clipping happens
    result = rollout(model, params, task, 4, torch.Generator().manual_seed(1), action_mode="sample", record=True)
    actions = result.inputs["actions"]
    assert actions.shape == (10, 3, 4, 1) and actions.abs().max() > 1.0  # recorded before clipping
    # common random numbers: identical individuals take identical sampled actions
    torch.testing.assert_close(actions[:, 0], actions[:, 2])
    # the reward is d * clip(a): what the env got was clipped into its bounds
    direction = result.rewards[0, 0] / actions[0, 0, :, 0].clamp(-1, 1)
    assert torch.allclose(direction.abs(), torch.ones(4))
    with torch.no_grad():
        log_probs, values, _ = replay(model, params, task, result.inputs["state0"], result.inputs["obs"], actions,
                                      result.rewards)
        torch.testing.assert_close(log_probs, result.log_probs)
        torch.testing.assert_close(values, result.values)
        pick = torch.tensor([3, 1])
        part = episodes_of(result.inputs, pick)
        sub, _, _ = replay(model, params, task, part["state0"], part["obs"], part["actions"],
                           result.rewards[:, :, pick])
    torch.testing.assert_close(sub, result.log_probs[:, :, pick])
    # greedy rollouts act with the mean: no noise, so two seeds give the same episodes for the same directions
    greedy = rollout(model, params, task, 4, torch.Generator().manual_seed(1), action_mode="greedy", record=True)
    assert torch.equal(greedy.log_probs[:, 0], greedy.log_probs[:, 1])


def test_agent_act_for_continuous_tasks(direction_task):
    cfg = make_config(direction_task, "ppo", {"model.n": "6"})
    model = MetODS(cfg.model, 1, 0, 1)
    theta = model.init_params(torch.Generator().manual_seed(0))
    theta[model.spec.offsets()["policy_b"]] = 3.0  # a mean outside the bounds
    agent = Agent(cfg, theta)
    state = agent.initial_state(5)
    obs, prev_action, prev_reward = torch.ones(5, 1), torch.zeros(5, 1), torch.zeros(5)
    action, state = agent.act(obs, prev_action, prev_reward, state, deterministic=True)
    assert action.dtype == torch.float32 and action.shape == (5, 1)
    assert torch.equal(action, torch.ones(5, 1))  # the mean, clipped to the upper bound
    sampled, _ = agent.act(obs, action, prev_reward + 1, state, deterministic=False)
    assert sampled.shape == (5, 1) and sampled.abs().max() <= 1.0
    with pytest.raises(ValueError, match="prev_action"):
        agent.act(obs, torch.zeros(5), prev_reward, state)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, updates, floor", [("ppo", 25, 5.0)])
def test_policy_gradient_learns_a_hidden_direction(direction_task, optimizer, updates, floor):
    """The continuous counterpart of the bandit test: infer the rewarded direction from the first reward (chance
    0, about 7.7 after 25 updates when written). prev_action * prev_reward as an input makes the evidence linear."""
    overrides = {"model.n": "8", "model.depth": "2", "model.action_reward_inputs": "true",
                 f"{optimizer}.episodes": "64", "generations": str(updates)}
    cfg = make_config(direction_task, optimizer, overrides)
    trainer = make_trainer(cfg)
    for _ in range(updates):
        trainer.step()
    with torch.no_grad():
        result = rollout(trainer.model, trainer.params(), trainer.task, 500, torch.Generator().manual_seed(99),
                         action_mode="sample")
    assert float(result.returns.mean()) > floor
