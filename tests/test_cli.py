"""The command line end to end: tasks, train, evaluate, load_agent, resume after SIGKILL, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import cli, cli_process, refused

import metods_evo
from metods_evo.runs import checkpoint_center

TINY = ["--popsize", "8", "--set", "es.episodes=2", "--set", "model.n=6", "--set", "model.depth=2",
        "--set", "eval_episodes=8", "--set", "final_eval_episodes=20", "--set", "eval_every=2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("work_in_tmp")  # run directories land in tmp_path


@pytest.mark.slow
def test_tasks_lists_registry():
    result = cli("tasks")
    assert result.exit_code == 0
    assert "harlow" in result.stdout and "maze" in result.stdout and " 20 " in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("task", ["harlow", "maze"])
def test_train_evaluate_and_load_agent(tmp_path, task):
    out = tmp_path / "run"
    result = cli("train", "--task", task, "--generations", "3", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.stderr
    assert "return" in result.stdout and f"run directory: {out}" in result.stderr
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "last.pt", "eval.json", "curves.png"):
        assert (out / name).is_file(), name
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("generation,env_steps,wall_s")
    report = json.loads((out / "eval.json").read_text())
    assert report["episodes"] == 20 and "return" in report["metrics"]

    figure = tmp_path / "evaluate.png"
    evaluated = cli("evaluate", str(out), "--episodes", "30", "--json", "--plot", str(figure))
    assert evaluated.exit_code == 0, evaluated.stderr
    evaluation = json.loads(evaluated.stdout)
    assert evaluation["episodes"] == 30
    # the reward per time step sums to the mean return; its figure is written where --plot says
    assert sum(evaluation["reward_per_step"]) == pytest.approx(evaluation["metrics"]["return"]["mean"], abs=1e-6)
    assert figure.read_bytes()[:4] == b"\x89PNG" and f"figure: {figure}" in evaluated.stderr

    agent = metods_evo.load_agent(out)
    state = agent.initial_state(5)
    obs = torch.zeros(5, agent.obs_dim)
    action, state = agent.act(obs, torch.full((5,), -1), torch.zeros(5), state)
    assert action.dtype == torch.int64 and action.shape == (5,) and ((0 <= action) & (action < agent.num_actions)).all()


@pytest.mark.slow
def test_evaluate_maze_on_a_larger_size(tmp_path):
    out = tmp_path / "maze"
    assert cli("train", "--task", "maze", "--generations", "1", "--out", str(out), *TINY).exit_code == 0
    result = cli("evaluate", str(out), "--set", "task.size=10", "--episodes", "20", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task_options"]["size"] == 10 and "steps_to_first_reward" in report["metrics"]


@pytest.mark.slow
def test_agent_api_reproduces_rollout_returns(tmp_path):
    """Stepping a task by hand through Agent.act gives the same returns as the batched evaluation."""
    out = tmp_path / "run"
    assert cli("train", "--generations", "2", "--out", str(out), *TINY).exit_code == 0
    agent = metods_evo.load_agent(out)
    task = metods_evo.make_task("harlow")
    g = torch.Generator().manual_seed(5)
    state_env, obs = task.reset(32, g)
    state = agent.initial_state(32)
    prev_action, prev_reward = torch.full((32,), -1), torch.zeros(32)
    total, alive = torch.zeros(32), torch.ones(32, dtype=torch.bool)
    for _ in range(task.max_steps):
        action, state = agent.act(obs, prev_action, prev_reward, state)
        state_env, obs, reward, done = task.step(state_env, action, g)
        total += reward * alive
        alive &= ~done
        prev_action, prev_reward = action, reward
    from metods_evo.rollout import rollout

    result = rollout(agent.model, agent.params, task, 32, torch.Generator().manual_seed(5))
    torch.testing.assert_close(result.returns[0], total)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    args = ["train", "--generations", "8", *TINY, "--set", "checkpoint_every=1"]
    full = cli(*args, "--out", str(tmp_path / "full"))
    assert full.exit_code == 0, full.stderr

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "metods_evo.cli", *args, "--out", str(killed_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a few generations are checkpointed, mid-run
        metrics = killed_dir / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len((killed_dir / "metrics.csv").read_text().splitlines()) < 9, "the run finished before the kill"

    resumed = cli("train", "--resume", str(killed_dir))
    assert resumed.exit_code == 0, resumed.stderr
    a = torch.load(tmp_path / "full" / "agent.pt", weights_only=False)
    b = torch.load(killed_dir / "agent.pt", weights_only=False)
    assert torch.equal(a["theta"], b["theta"]) and a["generation"] == b["generation"]
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    cb = torch.load(killed_dir / "checkpoint.pt", weights_only=False)
    assert ca["trainer"]["generation"] == cb["trainer"]["generation"] == 8
    assert ca["trainer"]["env_steps"] == cb["trainer"]["env_steps"]
    def timeless(path):  # every column but the wall-clock ones (wall_s, perf/...)
        rows = list(csv.DictReader(path.open()))
        return [{k: v for k, v in row.items() if k != "wall_s" and not k.startswith("perf/")} for row in rows]

    assert timeless(tmp_path / "full" / "metrics.csv") == timeless(killed_dir / "metrics.csv")
    assert json.loads((tmp_path / "full" / "eval.json").read_text())["metrics"] == \
        json.loads((killed_dir / "eval.json").read_text())["metrics"]


@pytest.mark.slow
def test_extending_a_finished_run_equals_a_longer_run(tmp_path):
    assert cli("train", "--generations", "4", "--out", str(tmp_path / "long"), *TINY).exit_code == 0
    assert cli("train", "--generations", "2", "--out", str(tmp_path / "short"), *TINY).exit_code == 0
    extended = cli("train", "--resume", str(tmp_path / "short"), "--generations", "4")
    assert extended.exit_code == 0, extended.stderr
    a = torch.load(tmp_path / "long" / "checkpoint.pt", weights_only=False)["trainer"]
    b = torch.load(tmp_path / "short" / "checkpoint.pt", weights_only=False)["trainer"]
    assert a["generation"] == b["generation"] == 4 and a["env_steps"] == b["env_steps"]
    last_long, last_short = (torch.load(tmp_path / name / "last.pt", weights_only=False) for name in ("long", "short"))
    assert last_short["generation"] == 4 and torch.equal(last_short["theta"], last_long["theta"])
    assert json.loads((tmp_path / "short" / "config.json").read_text())["generations"] == 4
    refused(cli("train", "--resume", str(tmp_path / "short"), "--popsize", "4"), "only --generations")


@pytest.mark.slow
def test_extending_a_budgeted_run_and_evaluating_on_an_incompatible_task(tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--budget-steps", "500", "--out", str(out), *TINY).exit_code == 0
    steps = torch.load(out / "checkpoint.pt", weights_only=False)["trainer"]["generation"]
    assert cli("train", "--resume", str(out), "--generations", str(steps + 2)).exit_code == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["trainer"]["generation"] == steps + 2
    bad = cli("evaluate", str(out), "--task", "maze")
    refused(bad, "observation / action sizes")


@pytest.mark.slow
def test_last_theta_evaluates_and_pairs_against_the_best(tmp_path):
    """`--agent last` plays the latest checkpoint's theta: from last.pt, or checkpoint.pt in runs without one."""
    out = tmp_path / "run"
    assert cli("train", "--generations", "3", "--out", str(out), *TINY, "--set", "eval_every=1").exit_code == 0
    trainer = torch.load(out / "checkpoint.pt", weights_only=False)["trainer"]
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["generation"] == trainer["generation"] == 3
    assert torch.equal(last["theta"], checkpoint_center(trainer))  # the ES searcher's center
    args = ["--episodes", "30", "--seed", "5", "--json"]
    scores = {which: json.loads(cli("evaluate", str(out), "--agent", which, *args).stdout)["metrics"]["return"]["mean"]
              for which in ("best", "last")}
    same = json.loads(cli("paired", str(out), str(out), "--episodes", "30", "--seed", "5", "--json").stdout)
    assert same["pooled"]["return"]["diff"] == 0.0 and same["agents"] == ["best", "best"]
    pair = cli("paired", str(out), str(out), "--agent-a", "last", "--episodes", "30", "--seed", "5", "--json")
    report = json.loads(pair.stdout)["pooled"]["return"]
    assert report["a"] == pytest.approx(scores["last"]) and report["b"] == pytest.approx(scores["best"])
    assert "(last)" in cli("paired", str(out), str(out), "--agent-a", "last", "--episodes", "30").stdout
    (out / "last.pt").unlink()  # a run trained before last.pt existed: the checkpoint's center stands in
    fallback = json.loads(cli("evaluate", str(out), "--agent", "last", *args).stdout)["metrics"]["return"]["mean"]
    assert fallback == pytest.approx(scores["last"])
    (out / "checkpoint.pt").unlink()
    refused(cli_process("evaluate", str(out), "--agent", "last"), "no last theta")
    assert cli("evaluate", str(out), "--episodes", "5").exit_code == 0  # the best theta is still there


@pytest.mark.slow
def test_time_budget_stops_the_run(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--generations", "1000", "--out", str(out), *TINY, "--set", "max_minutes=0.0001")
    assert result.exit_code == 0, result.stderr
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # header + the one generation that ran


@pytest.mark.slow
def test_console_entry_point_exit_code_and_single_line():
    result = cli_process("train", "--set", "model.n=x")
    assert result.returncode == 2 and result.stderr.strip() == "error: --set model.n=x: expected int"


@pytest.mark.parametrize("args, message", [
    (["train", "--task", "nope"], "unknown task"),
    (["train", "--optimizer", "nope"], "unknown optimizer"),
    (["train", "--algorithm", "nope"], "es.algorithm"),
    (["train", "--popsize", "abc"], "popsize"),
    (["train", "--popsize", "-4"], "popsize"),
    (["train", "--algorithm", "pgpe", "--popsize", "7"], "even"),
    (["train", "--set", "model.nn=3"], "unknown key"),
    (["train", "--set", "task.size=3", "--task", "harlow"], "unknown key"),
    (["train", "--set", "model.n=x"], "expected int"),
    (["train", "--set", "oops"], "key=value"),
    (["train", "--device", "tpu"], "device"),
    (["evaluate", "/definitely/not/here"], "no run directory"),
    (["train", "--task", "maze", "--set", "task.size=3"], "size"),
    (["train", "--set", "task.num_trials=0"], "num_trials"),
    (["train", "--set", "task=maze"], "--task"),
    (["train", "--set", "model.embed_hidden=-1"], "embed_hidden"),
    (["train", "--algorithm", "cem", "--set", "es.parenthood_ratio=0"], "parenthood_ratio"),
    (["train", "--device", "cuda:x"], "device"),
    (["train", "--resume", "/definitely/not/here"], "no run directory"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = cli(*args)
    assert not (tmp_path / "runs").exists(), "a refused command must not leave a run directory behind"
    refused(result, message)


@pytest.mark.slow
def test_existing_out_and_corrupt_runs_are_refused_without_damage(tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--generations", "2", "--out", str(out), *TINY).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = cli("train", "--generations", "2", "--out", str(out), *TINY)
    refused(again, "already exists")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    (out / "agent.pt").write_bytes(b"garbage")
    bad = cli("evaluate", str(out))
    refused(bad, "corrupt")
    (out / "config.json").write_text("{not json")
    bad = cli("evaluate", str(out))
    refused(bad, "corrupt")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = cli("train", "--resume", str(empty))
    refused(bad, "not a run directory")
