"""Tiny-budget training smoke runs on every continuous task, ES and PPO through the command line (issue #6):
the run directory is complete, the metrics are finite, and the trained agent loads and acts inside the bounds."""

import json
import math

import pytest
import torch
from helpers import cli, task_params

import metods_evo

# Short episodes: 10 steps of the locomotion tasks, 2 Meta-World rollouts of 10 steps (the full shapes are tested
# in test_locomotion.py / test_metaworld.py).
TASKS = {
    "cheetah-dir": ["--set", "task.episode_steps=10"],
    "ant-dir": ["--set", "task.episode_steps=10"],
    "metaworld-reach": ["--set", "task.rollouts=2", "--set", "task.rollout_steps=10"],
    "metaworld-push": ["--set", "task.rollouts=2", "--set", "task.rollout_steps=10"],
    "metaworld-ml10": ["--set", "task.rollouts=2", "--set", "task.rollout_steps=10"],
}
TINY = ["--generations", "2", "--set", "es.popsize=4", "--set", "es.episodes=2", "--set", "model.n=6",
        "--set", "eval_episodes=2", "--set", "final_eval_episodes=2", "--set", "eval_every=1",
        "--set", "ppo.episodes=4", "--set", "ppo.minibatches=2", "--set", "ppo.epochs=1", "--no-progress"]


pytestmark = pytest.mark.slow  # training runs through the CLI; test_locomotion.py / test_metaworld.py check the tasks


@pytest.mark.parametrize("optimizer", ["es", "ppo"])
@pytest.mark.parametrize("task", task_params(sorted(TASKS)))
def test_tiny_training_run(tmp_path, monkeypatch, task, optimizer):
    pytest.importorskip("mujoco")
    if task.startswith("metaworld"):
        pytest.importorskip("metaworld")
    monkeypatch.chdir(tmp_path)  # MuJoCo may log warnings to ./MUJOCO_LOG.TXT
    out = tmp_path / "run"
    result = cli("train", "--task", task, "--optimizer", optimizer, "--out", out, *TASKS[task], *TINY)
    assert result.exit_code == 0, result.output
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "eval.json"):
        assert (out / name).is_file(), name
    header, *rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2
    returns = [float(row.split(",")[header.split(",").index("train/episode_return")]) for row in rows]
    assert all(math.isfinite(r) for r in returns)
    report = json.loads((out / "eval.json").read_text())
    assert math.isfinite(report["metrics"]["return"]["mean"])
    agent = metods_evo.load_agent(out)
    state = agent.initial_state(2)
    obs = torch.zeros(2, agent.obs_dim)
    action, state = agent.act(obs, torch.zeros(2, agent.action_dim), torch.zeros(2), state, deterministic=True)
    assert action.shape == (2, agent.action_dim) and action.dtype == torch.float32
    low, high = agent.task.action_low, agent.task.action_high
    assert bool(((action >= low) & (action <= high)).all())
