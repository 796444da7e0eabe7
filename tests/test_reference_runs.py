"""The committed reference runs (runs/, indexed in runs/README.md): complete, still loading, still scoring what their
files say, and their tables agreeing with their runs. Guards the model code and the file formats."""

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

import metods_evo
from metods_evo.evaluate import evaluate_theta
from metods_evo.results_pages import REFERENCE_RUNS, paired_log
from metods_evo.runs import RunDir

RUNS = Path(__file__).resolve().parent.parent / "runs"
REFERENCE = [RUNS / ref.directory for ref in REFERENCE_RUNS]  # not the local, uncommitted runs beside them
EPISODES = 200


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _run_dirs() -> list[Path]:
    """Every run directory of the reference runs (those with a config.json), experiment arms included."""
    return sorted(p.parent for folder in REFERENCE for p in folder.rglob("config.json"))


@pytest.mark.slow
@pytest.mark.parametrize("name, metric, floor", [
    ("harlow-es-default", "return", 3.5),             # the Harlow defaults (`metods-evo train`); random play is 0
    ("harlow-a2c-default", "return", 3.5),
    ("harlow-ppo-default", "return", 3.5),
    ("maze-table/metods/seed0", "return", 90.0),      # PPO's maze preset
    ("maze-table/metods-s1-n96-w0-pre-fb-g0.8-mb8/seed0", "return", 110.0),  # the output leak
    ("maze-table/rl2-g0.8-mb8/seed0", "return", 110.0),
])
def test_reference_agent_scores_what_its_eval_json_says(name, metric, floor):
    """The committed agent on fresh episodes: above the floor, and within 4 standard errors of the committed final
    evaluation (other episodes: the error of a difference of two means, over EPISODES and the committed episodes)."""
    run = RunDir.open(RUNS / name)
    committed = _json(RUNS / name / "eval.json")
    report = evaluate_theta(run.config(), run.load_agent_state()["theta"], EPISODES, seed=12345)
    mean, reference = report["metrics"][metric]["mean"], committed["metrics"][metric]
    assert mean >= floor, report["metrics"]
    se = math.sqrt(reference["std"] ** 2 * (1 / EPISODES + 1 / committed["episodes"]))
    assert abs(mean - reference["mean"]) <= 4 * se + 1e-6, (mean, reference)
    agent = metods_evo.load_agent(RUNS / name)  # the public API reads the same files
    assert agent.model.num_params == run.load_agent_state()["theta"].numel()


@pytest.mark.slow
@pytest.mark.mujoco
def test_cheetah_dir_reference_earns_in_both_directions():
    """runs/cheetah-dir-snes: ~450 forward / ~630 backward on its final evaluation; standing still is 0."""
    pytest.importorskip("mujoco")
    run = RunDir.open(RUNS / "cheetah-dir-snes")
    report = evaluate_theta(run.config(), run.load_agent_state()["theta"], 16, seed=12345)
    for direction in ("forward", "backward"):
        assert report["groups"][direction]["metrics"]["return"]["mean"] >= 200, report["groups"][direction]


@pytest.mark.mujoco
@pytest.mark.metaworld
def test_metaworld_reference_loads():
    pytest.importorskip("metaworld")
    run = RunDir.open(RUNS / "metaworld-reach-es")
    agent = metods_evo.load_agent(RUNS / "metaworld-reach-es")
    assert agent.model.num_params == run.load_agent_state()["theta"].numel()


def test_reference_runs_are_complete_and_finished():
    """Each run has its files; nothing resumable is committed (a reference run is finished)."""
    for folder in REFERENCE:
        assert (folder / "COMMAND.md").is_file(), folder
        assert not list(folder.rglob("checkpoint.pt")) and not list(folder.rglob("last.pt")), folder
    runs = _run_dirs()
    assert len(runs) > len(REFERENCE)
    for run in runs:
        names = {p.name for p in run.iterdir()}
        assert {"agent.pt", "config.json", "metrics.csv"} <= names, run
        assert "eval.json" in names or any(n.startswith("eval-") for n in names), run
        if run.parent == RUNS:
            assert "curves.png" in names, run
        RunDir.open(run).config()  # every config.json still loads


def test_maze_table_matches_its_runs():
    """table.csv: each arm's mean over its seeds' eval-<setting>.json; the paired logs: the same means, on the same
    episodes, for A and B."""
    out = RUNS / "maze-table"
    rows = {r["agent"]: r for r in _csv(out / "table.csv")}
    assert sorted(rows) == sorted(p.name for p in out.iterdir() if p.is_dir())
    for agent, row in rows.items():
        for setting in ("8x8", "10x10"):
            means = [_json(s / f"eval-{setting}.json")["metrics"]["return"]["mean"] for s in sorted(
                (out / agent).glob("seed*"))]
            assert len(means) == 3
            assert statistics.fmean(means) == pytest.approx(float(row[f"{setting}:return:mean"]), abs=1e-9)
    for path in sorted(out.glob("paired-*.txt")):
        log = paired_log(path)
        setting = "10x10" if path.stem.endswith("10x10") else "8x8"
        for side in ("a", "b"):
            table_mean = float(rows[log[side]][f"{setting}:return:mean"])
            assert log["metrics"]["return"][side] == pytest.approx(table_mean, abs=1e-3), (path.name, side)


def _replayed(ref) -> list[Path]:
    """The runs of a reference whose first generation today's code must replay: the run, or each arm's seed 0."""
    folder = RUNS / ref.directory
    if (folder / "config.json").is_file():
        return [folder]
    return sorted(p.parent for p in folder.glob("*/seed0/config.json"))


REPLAYED = [run for ref in REFERENCE_RUNS if ref.directory != "gate" for run in _replayed(ref)]
REPLAYED += [RUNS / "gate" / "harlow-es-random-ties" / "seed0"]  # the gate's other ES headline (its harlow-es seed 0
# is harlow-es-default)


@pytest.mark.slow
@pytest.mark.parametrize("run", REPLAYED, ids=lambda p: str(p.relative_to(RUNS)))
def test_first_generation_replays_exactly(run):
    """A reference run's figures are today's code's only if today's code still trains it the same way: its first
    generation, re-computed from the run's own config, gives the metrics.csv row it recorded (the training columns;
    wall-clock and evaluation columns aside)."""
    import torch

    from metods_evo.train import make_trainer

    cfg = RunDir.open(run).config()
    if cfg.task.startswith(("cheetah", "ant")):
        pytest.importorskip("mujoco")
    if cfg.task.startswith("metaworld"):
        pytest.importorskip("metaworld")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    recorded = _csv(run / "metrics.csv")[0]
    trainer = make_trainer(cfg)
    metrics = trainer.step()
    assert trainer.env_steps == int(recorded["env_steps"])
    compared = {k: v for k, v in metrics.items() if not k.startswith("perf/") and recorded.get(k, "") != ""}
    assert compared, "no training column to compare"
    for key, value in compared.items():  # metrics.csv keeps 6 significant digits: half a unit of the 6th is 5e-6
        assert float(recorded[key]) == pytest.approx(value, rel=6e-6, abs=1e-9), key
