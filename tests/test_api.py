"""metods_evo.train_agent: the example of docs/python-api.md run as written (with tiny settings), resume and
extension, and mistakes refused before any file is written."""

import json
import math
import re
from pathlib import Path

import pytest

import metods_evo
from metods_evo.config import ConfigError
from metods_evo.runs import RunDir, RunError

ROOT = Path(__file__).resolve().parent.parent
TINY = {"generations": 2, "es.popsize": 8, "es.episodes": 2, "es.starts": 1, "model.n": 6, "model.depth": 2,
        "eval_every": 1, "eval_episodes": 8, "final_eval_episodes": 8}


pytestmark = pytest.mark.usefixtures("work_in_tmp")  # run directories land in tmp_path


def doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "python-api.md").read_text()
    return re.findall(r"<!-- runs in tests/test_api.py -->\n```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_documented_example_runs_as_written(monkeypatch, capsys, tmp_path):
    """The example with TINY merged into its overrides (so it trains for seconds): its printed lines, and its
    TrainResult and callback rows agree with the run's files."""
    blocks = doc_blocks()
    assert len(blocks) == 1
    real = metods_evo.train_agent

    def tiny(*args, overrides=None, **kwargs):
        return real(*args, overrides={**(overrides or {}), **TINY}, **kwargs)

    monkeypatch.setattr(metods_evo, "train_agent", tiny)
    namespace: dict = {}
    exec(compile(blocks[0], "docs/python-api.md", "exec"), namespace)
    result, rows = namespace["result"], namespace["rows"]
    printed = capsys.readouterr().out
    assert "runs/my-harlow: return" in printed and "2 generations" in printed and "one episode: return" in printed

    run = RunDir.open(tmp_path / "runs" / "my-harlow")
    assert result.run_dir == Path("runs/my-harlow") and result.config == run.config()
    assert result.report == json.loads(run.file("eval.json").read_text())
    assert result.score == result.report["metrics"]["return"]["mean"]
    assert result.agent.cfg == result.config and result.agent.obs_dim == 20
    written = run.read_metrics()
    assert [row["generation"] for row in rows] == [row["generation"] for row in written] == [1, 2]
    for given, saved in zip(rows, written):
        assert set(given) == set(saved)
        for key, value in given.items():
            assert math.isclose(value, saved[key], rel_tol=1e-5) or math.isnan(value) and math.isnan(saved[key]), key


@pytest.mark.slow
def test_resume_extends_a_run_and_refuses_new_settings(tmp_path):
    first = metods_evo.train_agent(out="run", overrides=TINY, progress=False)
    assert first.report["generation"] >= 1
    with pytest.raises(ConfigError, match=r"only generations / budget_steps .*\(got task, overrides\)"):
        metods_evo.train_agent("maze", resume="run", overrides={"model.n": 8})
    extended = metods_evo.train_agent(resume="run", generations=3, progress=False)
    assert extended.run_dir == Path("run") and extended.config.generations == 3
    assert [row["generation"] for row in RunDir.open("run").read_metrics()] == [1, 2, 3]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"task": "nope"}, ConfigError, "unknown task 'nope'"),
    ({"optimizer": "nope"}, ConfigError, "unknown optimizer 'nope'"),
    ({"overrides": {"model.nn": 3}}, ConfigError, "unknown key --set model.nn"),
    ({"overrides": {"model.n": 2.5}}, ConfigError, "expected int"),
    ({"seed": -1}, ConfigError, "seed"),
    ({"overrides": {"logger": "wandb"}}, ConfigError, "logger='wandb' is not one of csv, tensorboard"),
    ({"resume": "missing"}, RunError, "no run directory"),
])
def test_mistakes_raise_before_any_file_is_written(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        metods_evo.train_agent(**kwargs)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_out_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunError, match="already exists"):
        metods_evo.train_agent(out="taken", overrides=TINY)
    assert list((tmp_path / "taken").iterdir()) == []
