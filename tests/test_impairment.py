"""``metods-evo impairment``: the same episodes with each actuator frozen, scored against the intact agent."""

import json

import pytest
import torch
from helpers import cli, refused

pytestmark = pytest.mark.mujoco
pytest.importorskip("mujoco")

from metods_evo import impairment as imp  # noqa: E402
from metods_evo.config import make_config  # noqa: E402
from metods_evo.evaluate import evaluate_theta  # noqa: E402
from metods_evo.models import build_model  # noqa: E402
from metods_evo.tasks import make_task  # noqa: E402


def test_report_uses_the_same_episodes_and_scores_against_intact():
    cfg = make_config("cheetah-dir", "es", {"model.n": "6", "task.episode_steps": "12"})
    theta = build_model(cfg, make_task("cheetah-dir", episode_steps=12)).init_params(torch.Generator().manual_seed(0))
    result = imp.impairment_report(cfg, theta, [0, 3], episodes=8, seed=4)
    intact = evaluate_theta(cfg, theta, 8, seed=4)
    assert result["intact"]["metrics"] == intact["metrics"]  # intact = a plain evaluation of the same seed
    for k in (0, 3):
        frozen = result["frozen"][k]
        assert frozen["task_options"]["frozen_actuator"] == k and frozen["metrics"] != intact["metrics"]
        assert set(result["scores"][k]) == {"all", "forward", "backward"}
        # the same directions in every setting: the groups hold the same episode counts
        assert {g: p["episodes"] for g, p in frozen["groups"].items()} == \
            {g: p["episodes"] for g, p in intact["groups"].items()}


def test_fractions_are_relative_to_a_positive_intact_return():
    def report(all_, fwd, bwd):
        return {"metrics": {"return": {"mean": all_}},
                "groups": {"forward": {"metrics": {"return": {"mean": fwd}}},
                           "backward": {"metrics": {"return": {"mean": bwd}}}}}

    scores = imp._fractions(report(30.0, 5.0, -4.0), report(60.0, 20.0, -2.0))
    assert scores == {"all": 0.5, "forward": 0.25, "backward": None}


@pytest.mark.slow
def test_cli_writes_table_json_and_figure_and_refuses_bad_input(tmp_path):
    run = tmp_path / "run"
    trained = cli("train", "--task", "cheetah-dir", "--generations", "1", "--popsize", "4", "--out", run,
                  "--no-progress", "--set", "es.episodes=1", "--set", "task.episode_steps=10", "--set", "model.n=4",
                  "--set", "eval_episodes=2")
    assert trained.exit_code == 0, trained.stderr
    done = cli("impairment", run, "--actuators", "1,4", "--episodes", "4")
    assert done.exit_code == 0, done.stderr
    assert "| actuator 1 frozen |" in done.stdout and "| actuator 4 frozen |" in done.stdout
    saved = json.loads((run / "impairment.json").read_text())
    assert list(saved["frozen"]) == ["1", "4"] and saved["episodes"] == 4
    assert (run / "impairment.png").read_bytes()[:4] == b"\x89PNG"
    last = cli("impairment", run, "--actuators", "1", "--episodes", "4", "--agent", "last", "--out", tmp_path / "last")
    assert last.exit_code == 0 and (tmp_path / "last" / "impairment.json").is_file(), last.stderr
    for args, message in ((["--actuators", "6"], "actuators 0..5"), (["--actuators", "a"], "comma-separated")):
        refused(cli("impairment", run, *args), message)
