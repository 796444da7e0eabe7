"""The committed reference agents still load and still perform: guards the model code and file formats."""

from pathlib import Path

import pytest

import metods_evo
from metods_evo.evaluate import evaluate_theta
from metods_evo.runs import RunDir

RUNS = Path(__file__).resolve().parent.parent / "runs"


@pytest.mark.parametrize("name, metric, floor", [
    ("harlow-es-default", "return", 3.5),        # the Harlow defaults; see its COMMAND.md; random play is 0
    ("harlow-es-reference", "return", 3.4),      # 3.71 on 1000 episodes when committed
    ("maze-es-reference", "return", 55.0),       # 73.0 on 1000 episodes when committed; random walk 8.5
    ("harlow-a2c-default", "return", 3.5),       # 3.893 on 1000 episodes (sampled actions) when committed
    ("harlow-ppo-default", "return", 3.5),       # 3.860 on 1000 episodes (sampled actions) when committed
    ("harlow-es-pgpe-20min", "trials", 2.0),     # the PGPE plateau: stops choosing after a loss (2.97 trials)
    ("maze-compare/ppo/seed0", "return", 60.0),  # 75.65 on 1000 episodes (sampled actions) when committed
])
def test_reference_agent_performance(name, metric, floor):
    run = RunDir.open(RUNS / name)
    report = evaluate_theta(run.config(), run.load_agent_state()["theta"], 200, seed=12345)
    assert report["metrics"][metric]["mean"] >= floor, report["metrics"]
    agent = metods_evo.load_agent(RUNS / name)  # the public API reads the same files
    assert agent.model.num_params == run.load_agent_state()["theta"].numel()


def test_cheetah_dir_reference_earns_in_both_directions():
    """runs/cheetah-dir-snes: 456.6 forward / 629.5 backward on 100 episodes when committed; standing still is 0."""
    pytest.importorskip("mujoco")
    run = RunDir.open(RUNS / "cheetah-dir-snes")
    report = evaluate_theta(run.config(), run.load_agent_state()["theta"], 16, seed=12345)
    for direction in ("forward", "backward"):
        assert report["groups"][direction]["metrics"]["return"]["mean"] >= 200, report["groups"][direction]
