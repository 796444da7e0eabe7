"""Agent.predict: episode starts, the previous action and reward kept by the agent, and the loop of
docs/python-api.md run as written, scored against the project's own evaluation of the same agent."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

import metods_evo
from metods_evo.agent import Agent, AgentState
from metods_evo.config import make_config
from metods_evo.evaluate import evaluate_theta
from metods_evo.models import build_model
from metods_evo.runs import RunDir
from metods_evo.tasks import TASKS, make_task, register
from metods_evo.tasks.base import Task

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "runs" / "harlow-ppo-default"
RESTART_LINE = "episode_start, ended = ended, terminated | truncated"


def doc_blocks() -> list[str]:
    """The code blocks of docs/python-api.md marked to run here, in order."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    return re.findall(r"<!-- runs in tests/test_agent_api.py -->\n```python\n(.*?)```", text, flags=re.S)


def run_block(code: str, monkeypatch, namespace: dict | None = None) -> dict:
    monkeypatch.chdir(ROOT)  # the docs use paths relative to the repository root
    namespace = {} if namespace is None else namespace
    exec(compile(code, "docs/python-api.md", "exec"), namespace)
    return namespace


def mean_and_error(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


@pytest.fixture(scope="module")
def reference_score() -> tuple[float, float]:
    """What ``metods-evo evaluate`` computes for the reference agent (its action mode), on 1000 episodes."""
    run = RunDir.open(REFERENCE)
    report = evaluate_theta(run.config(), run.load_agent_state()["theta"], 1000, seed=12345)
    stats = report["metrics"]["return"]
    return stats["mean"], stats["std"] / math.sqrt(report["episodes"])


@pytest.mark.slow
def test_documented_loop_scores_as_the_evaluation(monkeypatch, capsys, reference_score):
    blocks = doc_blocks()
    assert len(blocks) == 3 and blocks[0].count(RESTART_LINE) == 1
    loop = run_block(blocks[0], monkeypatch)
    assert "mean return" in capsys.readouterr().out
    mean, error = mean_and_error(loop["finished"])
    expected, expected_error = reference_score
    assert len(loop["finished"]) >= 500 and expected > 3.5
    # same policy, same episode distribution: equal up to sampling noise (4 standard errors of the difference)
    assert abs(mean - expected) < 4 * math.hypot(error, expected_error), (mean, expected)
    single = run_block(blocks[1], monkeypatch, loop)  # the one-env loop goes on in the same session
    assert single["done"] and isinstance(single["state"], AgentState) and single["state"].batch_size == 1

    # the same loop with the restart line wrong scores far lower, so this test catches either mistake
    wrong = {"never restarts": "episode_start, ended = np.zeros_like(ended), terminated | truncated",
             "restarts a step early": "episode_start = ended = terminated | truncated"}
    for mistake, line in wrong.items():
        scores = run_block(blocks[0].replace(RESTART_LINE, line), monkeypatch)["finished"]
        wrong_mean, wrong_error = mean_and_error(scores)
        assert wrong_mean < expected - 5 * math.hypot(wrong_error, expected_error), (mistake, wrong_mean)


def test_documented_layer_block(monkeypatch):
    namespace = run_block(doc_blocks()[2], monkeypatch)
    assert namespace["logits"].shape == (8, 4) and namespace["state"]["W"].shape == (8, 20, 20)


def test_predict_matches_act_with_bookkeeping_by_hand():
    """predict's restarts, previous actions and rewards are what a careful caller of act would pass."""
    env = gymnasium.make_vec("metods_evo/Harlow-v0", num_envs=6)
    auto, manual = metods_evo.load_agent(REFERENCE, seed=3), metods_evo.load_agent(REFERENCE, seed=3)
    obs, _ = env.reset(seed=1)
    state, reward, start, ended = None, None, np.ones(6, dtype=bool), np.zeros(6, dtype=bool)
    memory, prev_action, prev_reward = manual.initial_state(6), torch.full((6,), -1), torch.zeros(6)
    restarts = 0
    for _ in range(40):  # several episodes per sub-env (the agent's take ~12 steps)
        action, state = auto.predict(obs, state, start, reward=reward)
        rows = torch.as_tensor(start)
        fresh = manual.initial_state(6)
        memory = {k: torch.where(rows.view(1, 6, 1, 1), fresh[k], v) for k, v in memory.items()}
        prev_action = torch.where(rows, -1, prev_action)
        prev_reward = torch.where(rows, 0.0, prev_reward)
        expected, memory = manual.act(torch.as_tensor(obs), prev_action, prev_reward, memory)
        np.testing.assert_array_equal(action, expected.numpy())
        assert torch.equal(state.memory["W"], memory["W"][0])
        obs, reward, terminated, truncated, _ = env.step(action)
        prev_action, prev_reward = expected, torch.as_tensor(reward, dtype=torch.float32)
        start, ended = ended, terminated | truncated
        restarts += int(start.sum())
    assert restarts >= 12


def random_agent(kind: str, **model: str) -> Agent:
    cfg = make_config("harlow", "ppo", {"model.kind": kind, **{f"model.{k}": v for k, v in model.items()}})
    theta = build_model(cfg, make_task("harlow")).init_params(torch.Generator().manual_seed(0))
    return Agent(cfg, theta)


@pytest.mark.parametrize("kind, model", [("metods", {"w0": "learnt"}), ("rl2", {})])
def test_predict_restarts_only_the_rows_that_start(kind, model):
    agent = random_agent(kind, **model)
    obs = torch.randn(3, 4, agent.obs_dim)
    _, state = agent.predict(obs[0], deterministic=True)
    _, state = agent.predict(obs[1], state, deterministic=True, reward=torch.ones(4))
    start = torch.tensor([False, True, False, True])
    _, restarted = agent.predict(obs[2], state, start, deterministic=True, reward=torch.full((4,), 5.0))
    _, fresh = agent.predict(obs[2], None, deterministic=True)
    _, going_on = agent.predict(obs[2], state, deterministic=True, reward=torch.full((4,), 5.0))
    for name, value in restarted.memory.items():
        assert value.shape[0] == 4  # no population axis
        assert torch.equal(value[start], fresh.memory[name][start])
        assert torch.equal(value[~start], going_on.memory[name][~start])
    assert not torch.equal(fresh.memory[next(iter(fresh.memory))], going_on.memory[next(iter(going_on.memory))])


def test_agent_state_and_predict_types():
    agent = random_agent("metods")
    obs = np.zeros((5, agent.obs_dim), dtype=np.float32)
    action, state = agent.predict(obs)
    assert isinstance(action, np.ndarray) and action.shape == (5,) and action.dtype == np.int64
    assert state.batch_size == 5 and state.memory["W"].shape == (5, 20, 20)
    assert "batch_size=5" in repr(state) and "W: [5, 20, 20]" in repr(state)
    action, state = agent.predict(torch.as_tensor(obs), state, reward=np.ones(5))
    assert isinstance(action, torch.Tensor) and action.shape == (5,)
    single, one = agent.predict(obs[0])  # one unbatched observation: an unbatched action
    assert single.shape == () and one.batch_size == 1
    single, one = agent.predict(obs[0], one, False, reward=1.0)
    assert gymnasium.spaces.Discrete(3).contains(single)


def test_predict_refuses_what_it_cannot_honour():
    agent = random_agent("metods")
    obs = np.zeros((4, agent.obs_dim), dtype=np.float32)
    _, state = agent.predict(obs)
    with pytest.raises(ValueError, match="needs reward="):
        agent.predict(obs, state, [True, False, False, False])
    with pytest.raises(ValueError, match="episode_start must be all True"):
        agent.predict(obs, None, [True, False, True, True])
    with pytest.raises(ValueError, match="state holds 4 episodes, obs 2"):
        agent.predict(obs[:2], state, reward=np.zeros(2))
    with pytest.raises(ValueError, match=r"episode_start must be \[4\]"):
        agent.predict(obs, state, [True, False], reward=np.zeros(4))
    agent.predict(obs, state, True)  # every row starting needs no reward
    maml = random_agent("maml")
    _, state = maml.predict(obs)
    _, state = maml.predict(obs, state, reward=np.ones(4))
    with pytest.raises(ValueError, match="can only start all at once"):
        maml.predict(obs, state, [True, False, False, False], reward=np.ones(4))
    _, state = maml.predict(obs, state, np.ones(4, dtype=bool))


class Push(Task):
    """A continuous test task: 4 steps, reward = the action, bounds [-0.5, 2]."""

    obs_dim, num_actions, action_dim, max_steps, action_low, action_high = 2, 0, 2, 4, -0.5, 2.0

    def reset(self, num_envs, generator):
        return {"t": torch.zeros(num_envs, dtype=torch.long)}, torch.ones(num_envs, 2)

    def step(self, state, action, generator):
        t = state["t"] + 1
        return {"t": t}, torch.ones(len(t), 2), action.sum(1), t >= self.max_steps


def test_predict_for_continuous_actions():
    register("push-test", f"{__name__}:Push")
    try:
        cfg = make_config("push-test", "ppo", {"model.n": "6"})
        theta = build_model(cfg, make_task("push-test")).init_params(torch.Generator().manual_seed(0))
        agent, twin = Agent(cfg, theta, seed=1), Agent(cfg, theta, seed=1)
        obs = np.ones((3, 2), dtype=np.float32)
        action, state = agent.predict(obs, deterministic=False)
        expected, _ = twin.act(torch.as_tensor(obs), torch.zeros(3, 2), torch.zeros(3), twin.initial_state(3),
                               deterministic=False)
        assert action.dtype == np.float32 and action.shape == (3, 2)
        np.testing.assert_array_equal(action, expected.numpy())
        assert (action >= -0.5).all() and (action <= 2.0).all()
        assert torch.equal(state.prev_action, expected)  # kept for the next step, as clipped
    finally:
        TASKS.pop("push-test")
