"""`reproduce impairment-cheetah | impairment-ant`: every arm trained on the intact robot over seeds, then each agent's
impairment report (intact and each actuator frozen, the same episodes) tabulated as fractions of the intact return,
mean ± std over seeds. The training run uses the cheetah experiment with shorter episodes (and MAML's K shortened to
fit them), so that it takes seconds; the real experiments are checked for consistency only."""

import dataclasses
import json
import statistics

import pytest
from helpers import cli, refused

from metods_evo import impairment as imp
from metods_evo.experiments import Arm
from metods_evo.reproduce import EXPERIMENTS, QUICK_BUDGET
from metods_evo.reproduce_impairment import (
    IMPAIRMENT_EXPERIMENTS,
    PEARL_BUDGET,
    ImpairmentExperiment,
    format_csv,
    format_table,
    impairment_row,
)

GROUPS = ("all", "forward", "backward")
EPISODES = 8


def _saved_report(intact: dict[str, float], frozen: dict[int, dict[str, float]]) -> dict:
    """An impairment report as impairment.json holds it, with the given mean returns per episode group."""
    def report(returns):
        return {"metrics": {"return": {"mean": returns["all"]}},
                "groups": {g: {"metrics": {"return": {"mean": returns[g]}}} for g in ("forward", "backward")}}

    result = {"intact": report(intact), "frozen": {k: report(r) for k, r in frozen.items()}}
    result["scores"] = {k: imp._fractions(r, result["intact"]) for k, r in result["frozen"].items()}
    return json.loads(json.dumps(result))  # int keys become strings, as in the file


def test_rows_are_means_and_stds_over_seeds_of_the_fractions_kept():
    seeds = [_saved_report({"all": 100.0, "forward": 80.0, "backward": 120.0},
                           {0: {"all": 50.0, "forward": 40.0, "backward": 60.0},
                            1: {"all": 90.0, "forward": 80.0, "backward": 100.0}}),
             _saved_report({"all": 200.0, "forward": 300.0, "backward": 100.0},
                           {0: {"all": 20.0, "forward": 30.0, "backward": 10.0},
                            1: {"all": 150.0, "forward": 150.0, "backward": 150.0}}),
             _saved_report({"all": 10.0, "forward": -20.0, "backward": 40.0},  # forward: nothing to keep
                           {0: {"all": 5.0, "forward": -10.0, "backward": 20.0},
                            1: {"all": -5.0, "forward": -30.0, "backward": 20.0}})]
    row = impairment_row("metods", seeds)
    assert row["actuators"] == ["0", "1"] and list(row["groups"]) == list(GROUPS)
    lines = {tuple(line.split(",")[:3]): line.split(",")[3:] for line in format_csv([row]).splitlines()[1:]}
    kept_all_0 = [0.5, 0.1, 0.5]
    assert lines["metods", "all", "actuator_0"] == ["3", repr(statistics.fmean(kept_all_0)),
                                                   repr(statistics.stdev(kept_all_0))]
    forward_1 = [1.0, 0.5]  # the third seed's intact forward return is negative: left out
    assert lines["metods", "forward", "actuator_1"] == ["2", repr(statistics.fmean(forward_1)),
                                                       repr(statistics.stdev(forward_1))]
    means = [statistics.fmean(s) for s in ([0.5, 0.9], [0.1, 0.75], [0.5, -0.5])]
    assert lines["metods", "all", "mean_over_actuators"] == ["3", repr(statistics.fmean(means)),
                                                            repr(statistics.stdev(means))]
    assert lines["metods", "backward", "intact_return"] == ["3", repr(statistics.fmean([120.0, 100.0, 40.0])),
                                                           repr(statistics.stdev([120.0, 100.0, 40.0]))]
    one_seed = format_csv([impairment_row("rl2", seeds[:1])]).splitlines()
    assert "rl2,all,actuator_1,1,0.9," in one_seed  # no std over one seed
    table = format_table("cheetah-dir", [row], 3, {"metods": 600}, EPISODES, quick=False)
    assert "| metods | 103.3 ± 95.0 | 0.37 ± 0.23 | " in table  # all episodes: intact return, actuator 0
    assert "| 0.75 ± 0.35 (2/3 seeds) |" in table  # forward, actuator 1: two seeds counted


@pytest.mark.parametrize("name", sorted(IMPAIRMENT_EXPERIMENTS))
@pytest.mark.mujoco
def test_impairment_experiments_are_well_formed(name):
    """Every arm is a valid config at full size and under --quick; ES arms share one budget, PEARL has its own; MAML
    adapts inside its episodes; each experiment is registered with reproduce."""
    pytest.importorskip("mujoco")
    from metods_evo.config import make_config

    exp = IMPAIRMENT_EXPERIMENTS[name]
    assert EXPERIMENTS[name] is exp
    labels = [arm.label for arm in exp.arms]
    assert labels == ["metods", "rl2", "maml", "pearl"] and exp.budgets == {"pearl": PEARL_BUDGET}
    for arm in exp.arms:
        for base in ({}, exp.quick):
            cfg = make_config(exp.task, arm.optimizer, base | dict(arm.overrides))
            assert cfg.model.kind == arm.label and cfg.task == exp.task
            if arm.optimizer == "es":
                assert (cfg.es.algorithm, cfg.es.popsize) == ("snes", 64 if not base else 4)  # the task's preset
            if arm.label == "maml":
                assert cfg.model.maml.adapt_steps < cfg.task_options.get("episode_steps", 200)
                assert cfg.es.action_mode == "sample"


def _small() -> ImpairmentExperiment:
    """impairment-cheetah with 30-step episodes under --quick, and MAML adapting after 5 of them."""
    exp = IMPAIRMENT_EXPERIMENTS["impairment-cheetah"]
    arms = tuple(Arm(a.label, a.optimizer, tuple((k, "5" if k == "model.maml.adapt_steps" else v)
                                                 for k, v in a.overrides)) for a in exp.arms)
    return dataclasses.replace(exp, arms=arms, quick=exp.quick | {"task.episode_steps": "30"})


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """``reproduce impairment-small --quick --seeds 2`` run once; the experiment stays registered for the module."""
    pytest.importorskip("mujoco")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(EXPERIMENTS, "impairment-small", _small())
        out = tmp_path_factory.mktemp("reproduce") / "impairment"
        result = cli("reproduce", "impairment-small", "--quick", "--seeds", "2", "--episodes", EPISODES, "--out", out,
                     "--no-progress")
        assert result.exit_code == 0, result.output
        yield out, result.stdout


@pytest.mark.slow
@pytest.mark.mujoco
def test_quick_run_trains_every_arm_and_seed_and_writes_table_csv_figure(small_run):
    out, printed = small_run
    table = (out / "impairment.md").read_text()
    files = "impairment.md, impairment.csv, impairment.png, training.md, training.png"
    assert printed == f"{table}\nfiles in {out}: {files}\n"
    assert (out / "impairment.png").read_bytes()[:4] == b"\x89PNG" and (out / "training.png").is_file()
    from metods_evo.runs import RunDir

    for arm in _small().arms:
        for seed in (0, 1):
            run = out / arm.label / f"seed{seed}"
            cfg = RunDir.open(run).config()
            assert (cfg.model.kind, cfg.optimizer, cfg.seed) == (arm.label, arm.optimizer, seed)
            assert cfg.budget_steps == QUICK_BUDGET and cfg.task_options["episode_steps"] == 30
            assert (run / "eval.json").is_file()
            saved = json.loads((run / "impairment.json").read_text())
            assert saved["episodes"] == EPISODES and list(saved["frozen"]) == [str(k) for k in range(6)]
        assert f"| {arm.label} | " in table
    for group in ("All", "Forward", "Backward"):
        assert f"## {group} episodes" in table
    assert "(--quick: a smoke run" in table and "actuator 5 frozen" in table


@pytest.mark.slow
@pytest.mark.mujoco
def test_table_cells_equal_impairment_report_recomputed_on_the_agents(small_run):
    """The direct reference: an ES-trained and the PEARL agent's impairment reports made again from their run
    directories, and mean / std over seeds taken here."""
    from metods_evo.evaluate import final_seed, open_agent

    out, _ = small_run
    csv = {tuple(line.split(",")[:3]): line.split(",")[3:]
           for line in (out / "impairment.csv").read_text().splitlines()[1:]}
    table = (out / "impairment.md").read_text()
    for arm in ("metods", "pearl"):
        reports = []
        for seed in (0, 1):
            _, cfg, theta, _ = open_agent(out / arm / f"seed{seed}")
            reports.append(imp.impairment_report(cfg, theta, list(range(6)), EPISODES, final_seed(cfg)))
        for group in GROUPS:
            intact = [r["intact"] if group == "all" else r["intact"]["groups"][group] for r in reports]
            columns = {"intact_return": [part["metrics"]["return"]["mean"] for part in intact]}
            columns |= {f"actuator_{k}": [r["scores"][k][group] for r in reports] for k in range(6)}
            for name, values in columns.items():
                known = [v for v in values if v is not None]
                count, mean, std = csv[arm, group, name]
                assert int(count) == len(known), (arm, group, name)
                if len(known) == 2:
                    assert float(mean) == pytest.approx(statistics.fmean(known))
                    assert float(std) == pytest.approx(statistics.stdev(known))
            if group == "all":
                values = columns["intact_return"]
                cell = f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"
                assert f"| {arm} | {cell} | " in table


@pytest.mark.slow
@pytest.mark.mujoco
def test_a_second_call_neither_retrains_nor_reevaluates(small_run):
    out, printed = small_run
    trained = sorted(p for p in out.rglob("*") if p.name in ("agent.pt", "eval.json"))
    reports = sorted(out.rglob("impairment.json"))
    before = {p: p.stat().st_mtime_ns for p in trained + reports}
    again = cli("reproduce", "impairment-small", "--quick", "--seeds", "2", "--episodes", EPISODES, "--out", out,
                "--no-progress")
    assert again.exit_code == 0, again.output
    assert again.stdout == printed and {p: p.stat().st_mtime_ns for p in trained + reports} == before
    assert len(trained) == 2 * 2 * 4 and len(reports) == 2 * 4


@pytest.mark.parametrize(("args", "message"), [
    (["impairment-chetah", "--quick"], "unknown experiment"),
    (["impairment-cheetah", "--quick", "--seeds", "0"], "--seeds"),
    (["impairment-cheetah", "--quick", "--episodes", "0"], "--episodes"),
    (["impairment-cheetah", "--quick", "--task", "ant-dir"], "--task"),
])
def test_bad_input_is_one_error_line(args, message):
    refused(cli("reproduce", *args), message)
