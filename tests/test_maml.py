"""The MAML baseline: shapes, episode reset, batching, the inner step against a hand-written REINFORCE gradient,
the outer (second-order) gradient against finite differences, ES's no-grad path, and the CLI end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from helpers import cli

import metods_evo
from metods_evo.config import ConfigError, MAMLConfig, ModelConfig, make_config
from metods_evo.models.maml import ADAPTED, MAML
from metods_evo.rollout import replay, rollout
from metods_evo.tasks import TASKS, make_task, register
from metods_evo.tasks.base import Task
from metods_evo.train import make_trainer


def make(obs_dim=3, num_actions=2, action_dim=0, **cfg) -> MAML:
    """A MAML with ``model.maml`` settings ``cfg`` over small defaults."""
    cfg = {"hidden": 4, "adapt_steps": 3, "inner_lr": 0.5} | cfg
    return MAML(ModelConfig(kind="maml", maml=MAMLConfig(**cfg)), obs_dim, num_actions, action_dim)


def random_theta(model: MAML, pop: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Initial thetas plus noise, so that biases and log_std are not at their (special) initial values."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([model.init_params(g).to(dtype) + 0.3 * torch.randn(model.num_params, generator=g, dtype=dtype)
                        for _ in range(pop)])


def random_inputs(model: MAML, steps: int, pop: int, agents: int, seed: int = 1, dtype=torch.float64):
    """Observations ``[T, P, E, obs]``, actions (``[T, P, E]`` or ``[T, P, E, A]``) and rewards ``[T, P, E]``."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(steps, pop, agents, model.obs_dim, generator=g, dtype=dtype)
    if model.num_actions:
        actions = torch.randint(0, model.num_actions, (steps, pop, agents), generator=g)
    else:
        actions = torch.randn(steps, pop, agents, model.action_dim, generator=g, dtype=dtype).clamp(-1, 1)
    return obs, actions, torch.randn(steps, pop, agents, generator=g, dtype=dtype)


def drive(model: MAML, params: dict, obs, actions, rewards):
    """Step the model through given inputs as the rollout does: at step t it sees obs_t, a_{t-1}, r_{t-1}."""
    pop, agents = obs.shape[1:3]
    state = model.initial_state(params, agents)
    if model.num_actions:
        prev_action = torch.full((pop, agents), -1)
    else:
        prev_action = torch.zeros(pop, agents, model.action_dim, dtype=obs.dtype)
    prev_reward = torch.zeros(pop, agents, dtype=obs.dtype)
    outs, values, states = [], [], []
    for t in range(obs.shape[0]):
        out, value, state = model.step(params, state, obs[t], prev_action, prev_reward)
        outs.append(out)
        values.append(value)
        states.append(state)
        prev_action, prev_reward = actions[t], rewards[t]
    return torch.stack(outs), torch.stack(values), states


# ---------------------------------------------------------------------------------------------- a direct reference
def forward_one(p: dict, x: torch.Tensor):
    """One agent's MLP on one observation: (hidden1, hidden2, policy output)."""
    h1 = torch.tanh(p["hidden1_w"] @ x + p["hidden1_b"])
    h2 = torch.tanh(p["hidden2_w"] @ h1 + p["hidden2_b"])
    return h1, h2, p["policy_w"] @ h2 + p["policy_b"]


def hand_gradient(p: dict, obs, actions, rewards, num_actions: int, log_std=None) -> dict:
    """grad_theta (1/K) sum_t log pi(a_t|s_t) G_t for one agent, back-propagated by hand through the MLP.

    d log pi / d z is onehot(a) - softmax(z) for logits z, or (a - mu) / sigma^2 for a Gaussian mean mu."""
    k = len(rewards)
    grads = {n: torch.zeros_like(p[n]) for n in ADAPTED}
    for t in range(k):
        x = obs[t]
        h1, h2, z = forward_one(p, x)
        if num_actions:
            dz = torch.nn.functional.one_hot(actions[t], num_actions).to(z.dtype) - torch.softmax(z, -1)
        else:
            dz = (actions[t] - z) / torch.exp(2 * log_std)
        dz = dz * sum(float(r) for r in rewards[t:]) / k
        grads["policy_w"] += torch.outer(dz, h2)
        grads["policy_b"] += dz
        d2 = (p["policy_w"].T @ dz) * (1 - h2**2)
        grads["hidden2_w"] += torch.outer(d2, h1)
        grads["hidden2_b"] += d2
        d1 = (p["hidden2_w"].T @ d2) * (1 - h1**2)
        grads["hidden1_w"] += torch.outer(d1, x)
        grads["hidden1_b"] += d1
    return grads


# ---------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_shapes_and_state_through_an_episode(continuous):
    model = make(num_actions=0 if continuous else 3, action_dim=2 if continuous else 0)
    assert ("log_std" in model.spec.names) == continuous
    pop, agents, k = 2, 5, model.adapt_steps
    params = model.spec.unflatten(random_theta(model, pop))
    outs, values, states = drive(model, params, *random_inputs(model, k + 3, pop, agents))
    assert outs.shape == (k + 3, pop, agents, 2 if continuous else 3) and values.shape == (k + 3, pop, agents)
    for t, state in enumerate(states):
        assert state["inner_obs"].shape == (pop, agents, min(t + 1, k), 3)
        assert state["inner_rewards"].shape == (pop, agents, min(t, k))
        assert state["inner_actions"].shape == (pop, agents, min(t, k), *((2,) if continuous else ()))
        for name, shape in zip(model.spec.names, model.spec.shapes):
            if name in ADAPTED:
                assert state[f"fast_{name}"].shape == ((pop, agents, *shape) if t >= k else (pop, agents, 0))
    assert torch.isfinite(outs).all() and torch.isfinite(values).all()


def test_state_resets_at_episode_start():
    """A fresh episode starts from empty buffers and theta_0's policy, whatever the previous episode did."""
    model = make()
    params = model.spec.unflatten(random_theta(model, 2))
    obs, actions, rewards = random_inputs(model, 6, 2, 3)
    first, _, states = drive(model, params, obs, actions, rewards)
    fresh = model.initial_state(params, 3)
    assert all(v.numel() == 0 and v.shape[:2] == (2, 3) for v in fresh.values())
    assert set(fresh) == set(states[-1])  # the same keys throughout (the rollout's trace relies on it)
    assert states[-1]["fast_policy_w"].numel() > 0
    again, _, _ = drive(model, params, obs, actions, rewards)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_population_batch_equals_each_agent_alone(continuous):
    model = make(num_actions=0 if continuous else 3, action_dim=1 if continuous else 0, inner_steps=2)
    pop, agents = 3, 4
    theta = random_theta(model, pop)
    inputs = random_inputs(model, 6, pop, agents)
    with torch.no_grad():
        outs, values, _ = drive(model, model.spec.unflatten(theta), *inputs)
        for i in range(pop):
            for j in range(agents):
                one = [x[:, i:i + 1, j:j + 1] for x in inputs]
                o, v, _ = drive(model, model.spec.unflatten(theta[i]), *one)
                torch.testing.assert_close(o, outs[:, i:i + 1, j:j + 1], rtol=1e-10, atol=1e-12)
                torch.testing.assert_close(v, values[:, i:i + 1, j:j + 1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_inner_steps_are_hand_computed_reinforce_steps(continuous, inner_steps):
    """theta_{i+1} = theta_i + lr * (1/K) sum_{t<K} grad log pi(a_t|s_t) G_t with G_t the reward-to-go in the window,
    per agent; before step K the policy is theta_0's, from step K on the adapted weights'."""
    model = make(num_actions=0 if continuous else 2, action_dim=2 if continuous else 0, inner_steps=inner_steps)
    k, lr, pop, agents = model.adapt_steps, model.cfg.maml.inner_lr, 2, 3
    params = model.spec.unflatten(random_theta(model, pop))
    obs, actions, rewards = random_inputs(model, k + 2, pop, agents)
    with torch.no_grad():
        outs, values, states = drive(model, params, obs, actions, rewards)
    for i in range(pop):
        theta_0 = {n: params[n][i] for n in ADAPTED}
        log_std = params["log_std"][i] if continuous else None
        for j in range(agents):
            fast = dict(theta_0)
            for _ in range(inner_steps):
                grads = hand_gradient(fast, obs[:k, i, j], actions[:k, i, j], rewards[:k, i, j], model.num_actions,
                                      log_std)
                fast = {n: fast[n] + lr * grads[n] for n in ADAPTED}
            for n in ADAPTED:
                torch.testing.assert_close(states[-1][f"fast_{n}"][i, j], fast[n], rtol=1e-10, atol=1e-12)
            for t in range(k + 2):
                expected = forward_one(theta_0 if t < k else fast, obs[t, i, j])[2]
                torch.testing.assert_close(outs[t, i, j], expected, rtol=1e-10, atol=1e-12)
                # the critic reads theta_0's last hidden layer (never adapted) and whether adaptation happened
                features = torch.cat([forward_one(theta_0, obs[t, i, j])[1], obs.new_tensor([float(t >= k)])])
                value = params["value_w"][i, 0] @ features + params["value_b"][i, 0]
                torch.testing.assert_close(values[t, i, j], value, rtol=1e-10, atol=1e-12)
            assert not torch.allclose(outs[k, i, j], forward_one(theta_0, obs[k, i, j])[2])  # it did adapt


def test_zero_rewards_leave_the_policy_unadapted():
    """No reward in the window, no signal: REINFORCE without a baseline keeps theta_0."""
    model = make()
    params = model.spec.unflatten(random_theta(model, 1))
    obs, actions, rewards = random_inputs(model, 5, 1, 2)
    with torch.no_grad():
        _, _, states = drive(model, params, obs, actions, rewards * 0)
    torch.testing.assert_close(states[-1]["fast_hidden1_w"][0, 1], params["hidden1_w"][0])


# ---------------------------------------------------------------------------------------------- outer gradients
def recorded(model: MAML, seed: int = 0, episodes: int = 2):
    """Episodes of Harlow played by a noisy theta (float32, as training records them), converted to float64."""
    task = make_task("harlow")
    theta = random_theta(model, 1, seed, torch.float32)[0]
    with torch.no_grad():
        result = rollout(model, model.spec.unflatten(theta), task, episodes, torch.Generator().manual_seed(seed),
                         action_mode="sample", record=True)
    state0 = {k: v.double() if v.is_floating_point() else v for k, v in result.inputs["state0"].items()}
    return task, theta.double(), result, state0


@pytest.mark.slow
def test_second_order_outer_gradient_matches_finite_differences():
    """d(loss)/d(theta_0) through the inner step (full MAML) against central differences in float64; the first-order
    variant drops exactly the terms through the inner step: equal on the pre-adaptation steps, different after."""
    harlow = make_task("harlow")
    model = make(obs_dim=harlow.obs_dim, num_actions=harlow.num_actions, adapt_steps=4)
    task, theta, result, state0 = recorded(model)
    obs, actions, rewards = result.inputs["obs"].double(), result.inputs["actions"], result.rewards.double()
    assert (result.lengths > model.adapt_steps + 2).all() and rewards[:model.adapt_steps].abs().sum() > 0
    weights = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = weights * result.valid

    def loss_of(th, m=model, steps=slice(None)):
        log_probs, values, _ = replay(m, m.spec.unflatten(th), task, state0, obs, actions, rewards)
        return (weights * (log_probs + 0.1 * values))[steps].sum()

    th = theta.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss_of(th), th)
    h = 1e-6
    for i in torch.randperm(len(theta), generator=torch.Generator().manual_seed(1))[:40].tolist():
        e = torch.zeros_like(theta)
        e[i] = h
        with torch.no_grad():
            fd = (loss_of(theta + e) - loss_of(theta - e)) / (2 * h)
        assert math.isclose(float(grad[i]), float(fd), rel_tol=1e-5, abs_tol=1e-8), (i, float(grad[i]), float(fd))
    first = MAML(replace(model.cfg, maml=replace(model.cfg.maml, first_order=True)), model.obs_dim, model.num_actions)
    k = model.adapt_steps
    for steps, same in ((slice(0, k), True), (slice(k, None), False)):
        (second_order,) = torch.autograd.grad(loss_of(th, model, steps), th)
        (first_order,) = torch.autograd.grad(loss_of(th, first, steps), th)
        assert torch.allclose(first_order, second_order, rtol=1e-12, atol=1e-14) == same


class HiddenPush(Task):
    """Six 1-D pushes whose paying direction d = +-1 is drawn per episode: reward d * a, actions clipped to [-1, 1]."""

    obs_dim, num_actions, action_dim, max_steps = 1, 0, 1, 6

    def reset(self, num_envs, generator):
        d = torch.randint(0, 2, (num_envs,), generator=generator).float() * 2 - 1
        return {"d": d, "t": torch.zeros(num_envs, dtype=torch.long)}, torch.ones(num_envs, 1)

    def step(self, state, action, generator):
        t = state["t"] + 1
        return {**state, "t": t}, torch.ones(len(t), 1), state["d"] * action[:, 0], t >= self.max_steps


@pytest.fixture
def hidden_push():
    register("maml-push-test", f"{__name__}:HiddenPush")
    yield "maml-push-test"
    TASKS.pop("maml-push-test")


@pytest.mark.parametrize("continuous", [False, True], ids=["harlow", "continuous"])
def test_no_grad_rollout_equals_autograd_rollout_and_keeps_no_graph(continuous, request):
    """ES acts under no_grad (the inner loop still needs a gradient), A2C with autograd and PPO re-scores with
    replay: the same episodes and log-probs, and the no-grad path keeps no graph in its state."""
    task = make_task(request.getfixturevalue("hidden_push") if continuous else "harlow")
    model = make(obs_dim=task.obs_dim, num_actions=task.num_actions, action_dim=task.action_dim, hidden=8,
                 adapt_steps=2)
    theta = random_theta(model, 1, 3, torch.float32)[0]
    if continuous:  # wide exploration noise, so that some actions are clipped
        theta[model.spec.offsets()["log_std"]] = 0.5
    with torch.no_grad():
        plain = rollout(model, model.spec.unflatten(theta), task, 16, torch.Generator().manual_seed(3),
                        action_mode="sample", record=True, trace=True)
    assert not any(v.requires_grad for vs in plain.trace.values() for v in vs)
    assert all(len(vs) == plain.rewards.shape[0] for vs in plain.trace.values())  # no key shared with the rollout's
    assert plain.trace["fast_policy_w"][-1].shape == (1, 16, task.num_actions or 1, 8)
    if continuous:  # the inner loop sees the clipped actions the environment got (the documented approximation)
        recorded = plain.inputs["actions"][:2].movedim(0, 2)
        assert recorded.abs().max() > 1
        torch.testing.assert_close(plain.trace["inner_actions"][-1], recorded.clamp(-1, 1))
    live = theta.clone().requires_grad_()
    graded = rollout(model, model.spec.unflatten(live), task, 16, torch.Generator().manual_seed(3),
                     action_mode="sample", record=True)
    assert torch.equal(graded.inputs["actions"], plain.inputs["actions"])
    torch.testing.assert_close(graded.log_probs.detach(), plain.log_probs)
    again, _, _ = replay(model, model.spec.unflatten(live), task, plain.inputs["state0"], plain.inputs["obs"],
                         plain.inputs["actions"], plain.rewards)
    assert again.requires_grad
    torch.testing.assert_close(again.detach(), plain.log_probs)


# ---------------------------------------------------------------------------------------------- learning
@pytest.fixture
def hidden_arm():
    register("maml-arm-test", "test_gradient:TwoArmedBandit")  # the hidden bandit of test_gradient.py
    yield "maml-arm-test"
    TASKS.pop("maml-arm-test")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, updates, floor", [("ppo", 40, 6.0), ("es", 60, 4.0)])
def test_meta_training_learns_an_initialization_that_adapts(hidden_arm, optimizer, updates, floor):
    """Second-order MAML by PPO, and ES, meta-train an initialization whose one inner step finds the paying arm
    (observed: ~7.5 for PPO and 5.7-7.7 for ES over seeds 0-2; chance 0, best 8)."""
    sets = {"model.kind": "maml", "model.maml.hidden": "16", "generations": str(updates), "ppo.episodes": "64",
            "es.algorithm": "snes", "es.popsize": "64", "es.episodes": "16"}
    trainer = make_trainer(make_config(hidden_arm, optimizer, sets))
    for _ in range(updates):
        trainer.step()
    with torch.no_grad():
        result = rollout(trainer.model, trainer.model.spec.unflatten(trainer.center()), trainer.task, 500,
                         torch.Generator().manual_seed(99), action_mode="sample")
    trainer.close()
    assert float(result.returns.mean()) > floor


# ---------------------------------------------------------------------------------------------- config and CLI
def test_bad_maml_settings_are_config_errors():
    for key, value in (("adapt_steps", "0"), ("inner_steps", "0"), ("inner_lr", "-1")):
        with pytest.raises(ConfigError, match=f"model.maml.{key}"):
            make_config("harlow", "es", {"model.kind": "maml", f"model.maml.{key}": value})
    with pytest.raises(ConfigError, match="model.maml_adapt_steps: it is now model.maml.adapt_steps"):
        make_config("harlow", "es", {"model.kind": "maml", "model.maml_adapt_steps": "3"})


TINY = ["--set", "model.kind=maml", "--set", "model.maml.hidden=8", "--set", "eval_episodes=8",
        "--set", "final_eval_episodes=20", "--set", "eval_every=2", "--set", "es.popsize=8", "--set", "es.episodes=2",
        "--set", "ppo.episodes=8", "--set", "ppo.minibatches=2", "--set", "ppo.epochs=2", "--no-progress"]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["es", "ppo"])
def test_cli_train_evaluate_load_agent(tmp_path, monkeypatch, optimizer):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"

    trained = cli("train", "--task", "harlow", "--optimizer", optimizer, "--generations", "3", "--out", str(out), *TINY)
    assert trained.exit_code == 0, trained.stderr
    assert json.loads((out / "config.json").read_text())["model"]["kind"] == "maml"
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 4
    evaluated = cli("evaluate", str(out), "--episodes", "20", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert -5.0 <= json.loads(evaluated.stdout)["metrics"]["return"]["mean"] <= 5.0
    agent = metods_evo.load_agent(out)
    state = agent.initial_state(3)
    for _ in range(agent.model.adapt_steps + 2):
        action, state = agent.act(torch.zeros(3, agent.obs_dim), torch.zeros(3, dtype=torch.long), torch.ones(3),
                                  state)
    assert action.shape == (3,) and state["fast_policy_w"].shape == (1, 3, 3, 8)
