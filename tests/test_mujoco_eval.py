"""Smoke test of ``benchmarks/mujoco_eval.py`` at a tiny size, without Ray: every row scores the whole population
(the same env-step count), reports its run's rate, and the VecGymNE policy wrapper computes exactly what
``model.step`` does (no timing claims)."""

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.mujoco
pytest.importorskip("mujoco", reason="the MuJoCo tasks need the mujoco extra")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mujoco_eval.py"


@pytest.mark.slow
def test_tiny_run_reports_every_row():
    spec = importlib.util.spec_from_file_location("mujoco_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads, out = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = module.main(["--popsize", "2", "--episodes", "2", "--steps", "5", "--repeats", "1", "--n", "8",
                                "--depth", "2", "--no-ray", "--json"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    text = out.getvalue()
    report = json.loads(text[text.index("\n{") + 1:])
    rows = report["rows"]
    assert set(rows) == {"one_by_one", "one_by_one_model_too", "batched_1", "batched_2", "batched_2_full",
                         "vecgymne_make_vec", "vecgymne_evotorch"}
    for name, row in rows.items():
        # P x E = 4 episodes of 5 steps, too short for the ant to fall: every way of scoring takes all 20 steps
        assert row["env_steps"] == 2 * 2 * 5, name
        # one repeat: the rate shown is that run's steps over that run's seconds
        assert row["all_env_steps_per_s"] == [row["env_steps_per_s"]] and math.isfinite(row["env_steps_per_s"])
        assert row["env_steps_per_s"] == pytest.approx(row["env_steps"] / row["seconds"]), name
    assert report["same_model_max_abs_diff"] == 0.0
