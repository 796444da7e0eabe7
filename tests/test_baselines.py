"""The RL^2 and random baselines: shapes, episode resets, population batching, the GRU against torch's GRUCell,
replay and BPTT gradients, the random policy's action frequencies, the CLI end to end, and a learning check."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import cli, refused

import metods_evo
from metods_evo.agent import Agent
from metods_evo.config import ModelConfig, PGConfig, RL2Config, make_config
from metods_evo.models.baselines import LOG_STD, RandomPolicy
from metods_evo.models.rl2 import RL2, UPDATE_GATE_BIAS
from metods_evo.optimizers.pg import actor_critic_loss, gae
from metods_evo.rollout import episodes_of, replay, rollout
from metods_evo.tasks import TASKS, make_task, register
from metods_evo.tasks.base import Task
from metods_evo.train import make_trainer


class HiddenPush(Task):
    """As test_continuous.py's task: ten 2-D pushes, reward d . a for a hidden direction d in {-1, +1}^2."""

    obs_dim, num_actions, action_dim, max_steps = 1, 0, 2, 10

    def reset(self, num_envs, generator):
        d = torch.randint(0, 2, (num_envs, 2), generator=generator).float() * 2 - 1
        return {"d": d, "t": torch.zeros(num_envs, dtype=torch.long)}, torch.ones(num_envs, 1)

    def step(self, state, action, generator):
        t = state["t"] + 1
        return {**state, "t": t}, torch.ones(len(t), 1), (state["d"] * action).sum(-1), t >= self.max_steps


@pytest.fixture
def push_task():
    register("push-baselines-test", f"{__name__}:HiddenPush")
    yield "push-baselines-test"
    TASKS.pop("push-baselines-test")


def rl2(obs_dim=5, num_actions=3, action_dim=0, hidden=6):
    return RL2(ModelConfig(kind="rl2", rl2=RL2Config(hidden=hidden)), obs_dim, num_actions, action_dim)


def random_theta(model, pop: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """``[P, D]``: the model's initial theta per individual plus noise, so individuals differ."""
    g = torch.Generator().manual_seed(seed)
    thetas = [model.init_params(g) + 0.3 * torch.randn(model.num_params, generator=g) for _ in range(pop)]
    return torch.stack(thetas).to(dtype)


def random_inputs(model, pop, agents, g, t, dtype=torch.float32):
    """One step's (obs, prev_action, prev_reward); discrete prev actions include -1 (none) on step 0."""
    obs = torch.randn(pop, agents, model.obs_dim, generator=g, dtype=dtype)
    if model.num_actions:
        act = torch.randint(-1 if t == 0 else 0, model.num_actions, (pop, agents), generator=g)
    else:
        act = torch.randn(pop, agents, model.action_dim, generator=g, dtype=dtype)
    return obs, act, torch.randn(pop, agents, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------- RL^2 model
@pytest.mark.parametrize("num_actions,action_dim", [(3, 0), (0, 2)], ids=["discrete", "continuous"])
def test_rl2_shapes_and_initial_values(num_actions, action_dim):
    model = rl2(num_actions=num_actions, action_dim=action_dim, hidden=7)
    out_dim = num_actions or action_dim
    assert model.input_dim == 5 + out_dim + 1
    theta = model.init_params(torch.Generator().manual_seed(0))
    params = model.spec.unflatten(theta.expand(4, -1).clone())
    assert params["gru_ih_w"].shape == (4, 21, model.input_dim) and params["gru_hh_w"].shape == (4, 21, 7)
    assert torch.all(params["gru_ih_b"][:, 7:14] == UPDATE_GATE_BIAS) and torch.all(params["gru_hh_b"] == 0)
    assert ("log_std" in params) == bool(action_dim)
    if action_dim:
        assert torch.all(params["log_std"] == -0.5) and params["log_std"].shape == (4, action_dim)
    state = model.initial_state(params, 3)
    assert state["h"].shape == (4, 3, 7) and torch.all(state["h"] == 0)
    obs, act, rew = random_inputs(model, 4, 3, torch.Generator().manual_seed(1), 0)
    out, value, state = model.step(params, state, obs, act, rew)
    assert out.shape == (4, 3, out_dim) and value.shape == (4, 3) and state["h"].shape == (4, 3, 7)
    assert out.dtype == value.dtype == torch.float32
    with pytest.raises(ValueError, match="exactly one"):
        rl2(num_actions=3, action_dim=2)


def test_rl2_episode_start_is_a_fresh_zero_state():
    """h is zero at every episode start, the previous action is all zeros there, and an episode's first step does
    not depend on what the previous episode did (while later steps do depend on the episode's history)."""
    model = rl2()
    params = model.spec.unflatten(random_theta(model, 2))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.inputs(torch.zeros(2, 3, 5), torch.full((2, 3), -1), torch.zeros(2, 3)),
                       torch.zeros(2, 3, model.input_dim))
    ends = []
    for _ in range(2):  # two different previous episodes
        state = model.initial_state(params, 3)
        for t in range(5):
            _, _, state = model.step(params, state, *random_inputs(model, 2, 3, g, t))
        ends.append(state["h"])
    assert not torch.allclose(ends[0], ends[1])  # the histories really differ ...
    obs = torch.randn(2, 3, 5, generator=g)
    first = torch.full((2, 3), -1)
    outputs = []
    for _ in range(2):
        state = model.initial_state(params, 3)  # ... and a reset forgets them
        assert torch.all(state["h"] == 0)
        outputs.append(model.step(params, state, obs, first, torch.zeros(2, 3))[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    # the rollout's first step is exactly this fresh-state step
    task = make_task("harlow")
    model = rl2(task.obs_dim, task.num_actions)
    params = model.spec.unflatten(random_theta(model, 2))
    with torch.no_grad():
        result = rollout(model, params, task, 4, torch.Generator().manual_seed(2), record=True, trace=True)
        expected, _, _ = model.step(params, model.initial_state(params, 4), result.inputs["obs"][0],
                                    torch.full((2, 4), -1), torch.zeros(2, 4))
    assert torch.all(result.inputs["state0"]["h"] == 0)
    first_log_probs = torch.log_softmax(expected, -1).gather(-1, result.inputs["actions"][0, ..., None])[..., 0]
    torch.testing.assert_close(result.log_probs[0], first_log_probs)
    assert len(result.trace["h"]) == result.rewards.shape[0] and result.trace["h"][0].shape == (2, 4, 6)


@pytest.mark.parametrize("num_actions,action_dim", [(3, 0), (0, 2)], ids=["discrete", "continuous"])
def test_rl2_population_batch_equals_each_agent_alone(num_actions, action_dim):
    model = rl2(num_actions=num_actions, action_dim=action_dim)
    pop, agents = 3, 4
    theta = random_theta(model, pop)
    params = model.spec.unflatten(theta)
    singles = {(i, j): model.initial_state(model.spec.unflatten(theta[i]), 1) for i in range(pop)
               for j in range(agents)}
    state = model.initial_state(params, agents)
    g = torch.Generator().manual_seed(1)
    for t in range(5):
        obs, act, rew = random_inputs(model, pop, agents, g, t)
        out, value, state = model.step(params, state, obs, act, rew)
        for (i, j), single in singles.items():
            o, v, singles[(i, j)] = model.step(model.spec.unflatten(theta[i]), single, obs[i:i + 1, j:j + 1],
                                               act[i:i + 1, j:j + 1], rew[i:i + 1, j:j + 1])
            torch.testing.assert_close(out[i, j], o[0, 0], rtol=0, atol=1e-6)
            torch.testing.assert_close(value[i, j], v[0, 0], rtol=0, atol=1e-6)
            torch.testing.assert_close(state["h"][i, j], singles[(i, j)]["h"][0, 0], rtol=0, atol=1e-6)


def test_rl2_gru_equals_torch_gru_cell():
    model = rl2(hidden=8)
    params = model.spec.unflatten(random_theta(model, 1, dtype=torch.float64))
    cell = torch.nn.GRUCell(model.input_dim, 8).double()
    with torch.no_grad():
        cell.weight_ih.copy_(params["gru_ih_w"][0])
        cell.weight_hh.copy_(params["gru_hh_w"][0])
        cell.bias_ih.copy_(params["gru_ih_b"][0])
        cell.bias_hh.copy_(params["gru_hh_b"][0])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, model.input_dim, generator=g, dtype=torch.float64)
    h = torch.randn(6, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.gru(params, h.unsqueeze(0), x.unsqueeze(0))[0], cell(x, h),
                                   rtol=1e-12, atol=1e-12)
    # and a whole step: the heads read the cell's new state
    obs, act, rew = x[:, :5].unsqueeze(0), torch.arange(6).remainder(3).unsqueeze(0), x[:, -1].unsqueeze(0)
    out, value, state = model.step(params, {"h": h.unsqueeze(0)}, obs, act, rew)
    with torch.no_grad():
        new_h = cell(model.inputs(obs, act, rew)[0], h)
    torch.testing.assert_close(state["h"][0], new_h)
    torch.testing.assert_close(out[0], new_h @ params["policy_w"][0].T + params["policy_b"][0])
    torch.testing.assert_close(value[0], (new_h @ params["value_w"][0].T + params["value_b"][0])[:, 0])


def recorded(task, model, episodes=3, seed=0):
    theta = random_theta(model, 1, seed)[0]
    with torch.no_grad():
        result = rollout(model, model.spec.unflatten(theta), task, episodes, torch.Generator().manual_seed(seed),
                         action_mode="sample", record=True)
    return theta, result


@pytest.mark.parametrize("continuous", [False, True], ids=["harlow", "continuous"])
def test_rl2_replay_reproduces_recorded_rollout(continuous, push_task):
    task = make_task(push_task if continuous else "harlow")
    model = rl2(task.obs_dim, task.num_actions, task.action_dim)
    theta, result = recorded(task, model, episodes=4)
    inputs = result.inputs
    with torch.no_grad():
        log_probs, values, entropies = replay(model, model.spec.unflatten(theta), task, inputs["state0"],
                                              inputs["obs"], inputs["actions"], result.rewards)
    torch.testing.assert_close(log_probs, result.log_probs)
    torch.testing.assert_close(values, result.values)
    torch.testing.assert_close(entropies, result.entropies)
    pick = torch.tensor([3, 1])
    episodes = episodes_of(inputs, pick)
    sub, _, _ = replay(model, model.spec.unflatten(theta.clone().requires_grad_()), task, episodes["state0"],
                       episodes["obs"], episodes["actions"], result.rewards[:, :, pick])  # PPO's path, with autograd
    torch.testing.assert_close(sub.detach(), result.log_probs[:, :, pick])


def test_rl2_bptt_gradient_matches_finite_differences():
    """d(A2C loss of recorded episodes)/d(theta) by autograd through the GRU's recurrence vs central
    differences in float64, on a few coordinates of every parameter tensor."""
    task = make_task("harlow")
    model = rl2(task.obs_dim, task.num_actions, hidden=5)
    theta, result = recorded(task, model, episodes=2, seed=3)
    theta = theta.double()
    state0 = {k: v.double() for k, v in result.inputs["state0"].items()}
    obs, actions, rewards = result.inputs["obs"].double(), result.inputs["actions"], result.rewards.double()
    valid = result.valid[:, 0]
    pg = PGConfig(normalize_advantages=False)
    with torch.no_grad():
        _, values, _ = replay(model, model.spec.unflatten(theta), task, state0, obs, actions, rewards)
    adv, returns = gae(rewards[:, 0], values[:, 0], valid, 0.9, 0.95)

    def loss_of(th):
        lp, v, ent = replay(model, model.spec.unflatten(th), task, state0, obs, actions, rewards)
        return actor_critic_loss(pg, lp[:, 0], v[:, 0], ent[:, 0], adv, returns, valid.double())[0]

    th = theta.clone().requires_grad_()
    loss_of(th).backward()
    g = torch.Generator().manual_seed(0)
    checked = [where.start + int(torch.randint(where.stop - where.start, (1,), generator=g))
               for where in model.spec.offsets().values() for _ in range(2)]
    h = 1e-6
    for i in checked:
        e = torch.zeros_like(theta)
        e[i] = h
        with torch.no_grad():
            fd = (loss_of(theta + e) - loss_of(theta - e)) / (2 * h)
        assert math.isclose(float(th.grad[i]), float(fd), rel_tol=1e-5, abs_tol=1e-8), (i, float(th.grad[i]), float(fd))
    # the recurrent weights get a gradient only through time (BPTT)
    assert th.grad[model.spec.offsets()["gru_hh_w"]].abs().sum() > 0


# ---------------------------------------------------------------------------------------------- random policy
def test_random_policy_is_uniform_and_always_sampled():
    task = make_task("harlow")
    model = RandomPolicy(ModelConfig(kind="random"), task.obs_dim, task.num_actions)
    assert model.num_params == 1 and model.stochastic
    params = model.spec.unflatten(model.init_params().expand(2, -1).clone())
    assert model.initial_state(params, 5) == {}
    with torch.no_grad():  # greedy asked for: the rollout samples anyway
        result = rollout(model, params, task, 1000, torch.Generator().manual_seed(0), action_mode="greedy",
                         record=True, trace=True)
    actions = result.inputs["actions"][result.valid]
    counts = torch.bincount(actions, minlength=3).double()
    expected = len(actions) / 3
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert len(actions) > 20_000 and chi2 < 13.8, (counts, chi2)  # 2 dof: p = 0.001
    torch.testing.assert_close(result.log_probs, torch.full_like(result.log_probs, -math.log(3)))
    assert set(result.trace) == {"action", "obs"}  # nothing to trace: the empty state passes through
    # the population shares the sampling noise: both individuals played the same episodes
    assert torch.equal(result.returns[0], result.returns[1])
    # replay handles the empty state too
    lp, values, _ = replay(model, {k: v[:1] for k, v in params.items()}, task, result.inputs["state0"],
                           result.inputs["obs"][:, :1], result.inputs["actions"][:, :1], result.rewards[:, :1])
    torch.testing.assert_close(lp, result.log_probs[:, :1])
    assert torch.all(values == 0)
    # Agent.act samples even when asked for deterministic actions
    agent = Agent(make_config("harlow", "es", {"model.kind": "random"}), model.init_params())
    action, state = agent.act(torch.zeros(3000, task.obs_dim), torch.full((3000,), -1), torch.zeros(3000),
                              agent.initial_state(3000), deterministic=True)
    assert state == {}
    freq = torch.bincount(action, minlength=3).double() / 3000
    assert torch.all((freq - 1 / 3).abs() < 0.04), freq


def test_random_policy_continuous_is_a_clipped_gaussian(push_task):
    task = make_task(push_task)
    model = RandomPolicy(ModelConfig(kind="random"), task.obs_dim, 0, task.action_dim)
    theta = model.init_params()
    assert theta.tolist() == [0.0, LOG_STD, LOG_STD]
    with torch.no_grad():
        result = rollout(model, model.spec.unflatten(theta), task, 1000, torch.Generator().manual_seed(0),
                         action_mode="greedy", record=True)
    raw = result.inputs["actions"]  # unclipped draws, [T, 1, E, 2]
    assert abs(float(raw.mean())) < 0.03 and abs(float(raw.std()) - math.exp(LOG_STD)) < 0.03
    at_bounds = float((raw.abs() >= 1).double().mean())  # the clipped share: P(|N(0, 1)| >= 1) = 0.3173
    assert abs(at_bounds - math.erfc(1 / math.sqrt(2))) < 0.02, at_bounds


# ---------------------------------------------------------------------------------------------- command line
TINY = ["--set", "model.rl2.hidden=8", "--set", "eval_episodes=8", "--set", "final_eval_episodes=20",
        "--set", "eval_every=2", "--set", "a2c.episodes=8", "--set", "ppo.episodes=8", "--set", "ppo.minibatches=2",
        "--set", "ppo.epochs=2", "--set", "es.popsize=8", "--set", "es.episodes=2", "--no-progress"]



@pytest.mark.slow
@pytest.mark.parametrize("kind,optimizer", [("rl2", "es"), ("rl2", "ppo"), ("random", "es"), ("random", "ppo")])
def test_cli_train_evaluate_load_agent(tmp_path, monkeypatch, kind, optimizer):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    result = cli("train", "--task", "harlow", "--optimizer", optimizer, "--generations", "3", "--out", str(out),
                 "--set", f"model.kind={kind}", *TINY)
    assert result.exit_code == 0, result.stderr
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "eval.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["model"]["kind"] == kind
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 4
    evaluated = cli("evaluate", str(out), "--episodes", "20", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["episodes"] == 20 and -5.0 <= report["metrics"]["return"]["mean"] <= 5.0
    agent = metods_evo.load_agent(out)
    assert type(agent.model).__name__ == {"rl2": "RL2", "random": "RandomPolicy"}[kind]
    state = agent.initial_state(3)
    action, state = agent.act(torch.zeros(3, agent.obs_dim), torch.full((3,), -1), torch.zeros(3), state)
    assert action.shape == (3,) and action.dtype == torch.long and ((0 <= action) & (action < 3)).all()
    if kind == "rl2":
        assert state["h"].shape == (1, 3, 8)


@pytest.mark.parametrize("sets,message", [
    (["--optimizer", "hybrid", "--set", "hybrid.mode=split", "--set", "model.kind=rl2"], "hybrid.mode=split"),
    (["--set", "model.kind=rl2", "--set", "model.rl2.hidden=0"], "model.rl2.hidden must be >= 1"),
    (["--set", "model.kind=rl2", "--set", "model.hidden=8"], "model.hidden: it is now model.rl2.hidden"),
])
def test_cli_rejects_what_rl2_cannot_do(tmp_path, sets, message):
    result = cli("train", "--out", str(tmp_path / "r"), *TINY, *sets)
    refused(result, message)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_rl2_ppo_learns_to_remember_the_paying_arm(bandit_task):
    """Chance is 0 and a perfect agent earns 9 (the first pull is a guess): the GRU must keep which arm paid.
    40 PPO updates of 64 episodes take a few seconds; seeds 0-5 all reach a greedy return of ~9 (seed 0: 9.0
    greedy, 7.8 sampled)."""
    cfg = make_config(bandit_task, "ppo", {"model.kind": "rl2", "model.rl2.hidden": "16", "ppo.episodes": "64",
                                           "generations": "40"})
    trainer = make_trainer(cfg)
    for _ in range(40):
        trainer.step()
    with torch.no_grad():
        greedy = rollout(trainer.model, trainer.params(), trainer.task, 500, torch.Generator().manual_seed(99))
        sampled = rollout(trainer.model, trainer.params(), trainer.task, 500, torch.Generator().manual_seed(99),
                          action_mode="sample")
    assert float(greedy.returns.mean()) > 7.0 and float(sampled.returns.mean()) > 6.0
