"""The gradient and hybrid optimizers through the command line: train, evaluate, load_agent, resume."""

import json

import pytest
import torch
from helpers import cli, refused

import metods_evo
from metods_evo.runs import checkpoint_center

TINY = ["--set", "model.n=6", "--set", "model.depth=2", "--set", "eval_episodes=8", "--set", "final_eval_episodes=20",
        "--set", "eval_every=2", "--set", "a2c.episodes=8", "--set", "ppo.episodes=8", "--set", "ppo.minibatches=2",
        "--set", "ppo.epochs=2", "--set", "es.popsize=8", "--set", "es.episodes=2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("work_in_tmp")  # run directories land in tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,task", [("a2c", "harlow"), ("ppo", "maze"), ("hybrid", "harlow")])
def test_train_evaluate_load_agent(tmp_path, optimizer, task):
    out = tmp_path / "run"
    result = cli("train", "--task", task, "--optimizer", optimizer, "--generations", "4", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.stderr
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "eval.json", "curves.png"):
        assert (out / name).is_file(), name
    header, *rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and header.startswith("generation,env_steps,wall_s")
    assert "train/episode_return" in header and "perf/steps_per_s" in header  # keys shared with ES
    assert json.loads((out / "config.json").read_text())["optimizer"] == optimizer
    trainer = torch.load(out / "checkpoint.pt", weights_only=False)["trainer"]
    last = torch.load(out / "last.pt", weights_only=False)  # what `--agent last` reads once checkpoint.pt is gone
    assert last["generation"] == trainer["generation"] == 4
    assert torch.equal(last["theta"], checkpoint_center(trainer))  # the fallback for runs without last.pt
    evaluated = cli("evaluate", str(out), "--episodes", "20", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["episodes"] == 20 and -5.0 <= report["metrics"]["return"]["mean"] <= 1000.0
    agent = metods_evo.load_agent(out)
    state = agent.initial_state(3)
    action, state = agent.act(torch.zeros(3, agent.obs_dim), torch.full((3,), -1), torch.zeros(3), state)
    assert action.shape == (3,) and action.dtype == torch.long


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["a2c", "ppo"])
def test_resume_continues_exactly(tmp_path, optimizer):
    """A run stopped after 2 generations and extended to 4 ends exactly where a 4-generation run ends (with a
    constant learning rate: an annealed one depends on the planned length; hybrids are checked in
    test_gradient.py)."""
    args = ["--optimizer", optimizer, *TINY, "--set", "checkpoint_every=1", "--set", "eval_every=1",
            "--set", f"{optimizer}.lr_schedule=constant"]
    assert cli("train", "--generations", "4", "--out", str(tmp_path / "full"), *args).exit_code == 0
    assert cli("train", "--generations", "2", "--out", str(tmp_path / "part"), *args).exit_code == 0
    resumed = cli("train", "--resume", str(tmp_path / "part"), "--generations", "4")
    assert resumed.exit_code == 0, resumed.stderr
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert a["trainer"]["generation"] == b["trainer"]["generation"] == 4
    assert a["trainer"]["env_steps"] == b["trainer"]["env_steps"]
    theta = torch.load(tmp_path / "full" / "agent.pt", weights_only=False)["theta"]
    assert torch.equal(theta, torch.load(tmp_path / "part" / "agent.pt", weights_only=False)["theta"])


@pytest.mark.parametrize("sets,message", [
    (["--set", "ppo.minibatches=9"], "cannot exceed"),
    (["--set", "a2c.gamma=1.5"], "gamma"),
    (["--set", "hybrid.mode=both"], "hybrid.mode"),
    (["--set", "hybrid.es_fraction=1"], "es_fraction"),
    (["--set", "ppo.nope=1"], "unknown key"),
])
def test_bad_gradient_settings_fail_cleanly(tmp_path, sets, message):
    result = cli("train", "--optimizer", "ppo", "--out", str(tmp_path / "r"), *TINY, *sets)
    refused(result, message)
    assert not (tmp_path / "r").exists()
