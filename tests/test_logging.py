"""logger=tensorboard: refused up front without the tensorboard package; with it, RUN/tensorboard/ holds the
scalars of metrics.csv per generation, also across a resume."""

import math
import sys

import pytest
from helpers import cli, refused

import metods_evo
from metods_evo.config import ConfigError
from metods_evo.runs import RunDir

TINY = {"es.popsize": 8, "es.episodes": 2, "es.starts": 1, "model.n": 6, "eval_every": 2, "eval_episodes": 8,
        "final_eval_episodes": 8, "checkpoint_every": 2}


class Killed(Exception):
    pass


pytestmark = pytest.mark.usefixtures("work_in_tmp")  # run directories land in tmp_path


@pytest.mark.slow
def test_tensorboard_without_its_package_is_refused_before_any_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed, whether it is or not
    result = cli("train", "--generations", "2", "--set", "logger=tensorboard", "--no-progress")
    assert result.exit_code == 2
    assert result.stderr == "error: logger=tensorboard needs the tensorboard package: pip install tensorboard\n"
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        metods_evo.train_agent(overrides={**TINY, "logger": "tensorboard"})
    assert list(tmp_path.iterdir()) == []

    monkeypatch.delitem(sys.modules, "tensorboard")
    metods_evo.train_agent(out="run", generations=1, overrides=TINY, progress=False)
    config = (tmp_path / "run" / "config.json").read_text()
    (tmp_path / "run" / "config.json").write_text(config.replace('"logger": "csv"', '"logger": "tensorboard"'))
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()}
    refused(cli("train", "--resume", "run", "--generations", "2"), "pip install tensorboard")
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()} == before


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_the_scalars_of_metrics_csv(tmp_path):
    """Killed after generation 3 (written, not checkpointed), resumed from generation 2: generation 3 is
    recomputed, and TensorBoard, like metrics.csv, holds it once."""
    pytest.importorskip("tensorboard")

    def kill_at_3(row):
        if row["generation"] == 3:
            raise Killed

    with pytest.raises(Killed):
        metods_evo.train_agent(out="run", generations=4, overrides={**TINY, "logger": "tensorboard"},
                               progress=False, on_generation=kill_at_3)
    metods_evo.train_agent(resume="run", progress=False)
    rows = RunDir.open("run").read_metrics()
    logged = scalars(tmp_path / "run" / "tensorboard")
    assert set(logged) == set(rows[0]) - {"generation"}
    for tag, points in logged.items():
        expected = [(int(row["generation"]), row[tag]) for row in rows if not math.isnan(row[tag])]
        assert [step for step, _ in points] == [step for step, _ in expected], tag
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for (_, a), (_, b) in zip(points, expected)), tag
    assert [step for step, _ in logged["env_steps"]] == [1, 2, 3, 4]
    assert [step for step, _ in logged["eval/return"]] == [2, 4]
