"""`reproduce EXPERIMENT --quick`: trains every arm, evaluates every setting, writes the paper table. The machinery
is run on a two-arm experiment defined here, so that its cost does not grow with the lab's tables; the real tables
are checked for consistency only."""

import json
import math

import pytest
from helpers import cli

from metods_evo.config import make_config
from metods_evo.experiments import Arm
from metods_evo.reproduce import EXPERIMENTS, NO_TRAINING, QUICK_BUDGET, RANDOM, Column, Experiment
from metods_evo.runs import RunDir

TWO_ARMS = Experiment(
    task="maze",
    arms=(Arm("metods-g0.8", "ppo", (("ppo.gamma", "0.8"),)), RANDOM),
    budget_steps=10_000_000,
    settings={"8x8": {}, "10x10": {"size": 10}},
    columns=(Column("success", "8x8", "success", percent=True),
             Column("cum. reward", "8x8", "return"),
             Column("cum. reward 10×10", "10x10", "return")),
    paper={"metods-g0.8": ("96.6 %", "86.5 ± 46.8", "34.9 ± 34.9")},
    budgets={"random": NO_TRAINING},
    quick={"ppo.episodes": "8", "model.n": "8", "model.rl2.hidden": "8", "model.maml.hidden": "8"},
)


@pytest.fixture(scope="module")
def two_arms(tmp_path_factory):
    """``reproduce two-arms --quick`` run once; the experiment stays registered for the module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(EXPERIMENTS, "two-arms", TWO_ARMS)
        out = tmp_path_factory.mktemp("reproduce") / "two-arms"
        result = cli("reproduce", "two-arms", "--quick", "--out", out, "--no-progress")
        assert result.exit_code == 0, result.output
        yield out, result.stdout


@pytest.mark.parametrize("name", sorted(name for name, exp in EXPERIMENTS.items() if isinstance(exp, Experiment)))
def test_experiment_definitions_are_well_formed(name):
    """Every arm is a valid config (full size and --quick) on every evaluation setting, and the table's columns,
    paper cells and budgets refer to settings and arms that exist."""
    exp = EXPERIMENTS[name]
    labels = [arm.label for arm in exp.arms]
    assert len(set(labels)) == len(labels), labels
    assert {c.setting for c in exp.columns} <= set(exp.settings)
    assert set(exp.paper) <= set(labels) and set(exp.budgets) <= set(labels)
    assert all(len(cells) == len(exp.columns) for cells in exp.paper.values())
    for arm in exp.arms:
        for options in exp.settings.values():
            task_options = {f"task.{k}": str(v) for k, v in options.items()}
            for base in ({}, exp.quick):
                make_config(exp.task, arm.optimizer, base | dict(arm.overrides) | task_options)


@pytest.mark.slow
def test_quick_run_trains_every_arm_and_tabulates_every_setting(two_arms):
    out, printed = two_arms
    exp = TWO_ARMS
    table = (out / "table.md").read_text()
    # stdout is the table as written to table.md, then where the files are (progress and run lines go to stderr)
    assert printed == f"{table}\nfiles in {out}: table.md, table.csv, training.md, training.png\n"
    rows = {line.split(",")[0]: [float(v) for v in line.split(",")[1:]]
            for line in (out / "table.csv").read_text().splitlines()[1:]}
    assert list(rows) == [arm.label for arm in exp.arms]
    for agent, values in rows.items():
        cfg = RunDir.open(out / agent / "seed0").config()
        reports = {s: json.loads((out / agent / "seed0" / f"eval-{s}.json").read_text()) for s in exp.settings}
        assert reports["10x10"]["task_options"]["size"] == 10 and "size" not in reports["8x8"]["task_options"]
        for i, column in enumerate(exp.columns):  # one seed: the pooled mean and std are that run's
            stats = reports[column.setting]["metrics"][column.metric]
            assert values[2 * i] == pytest.approx(stats["mean"]) and values[2 * i + 1] == pytest.approx(stats["std"])
        paper = exp.paper.get(agent, ("–",) * len(exp.columns))  # the random agent has no paper cells here
        assert f"| {agent} | " in table and f" / {paper[1]} |" in table  # the paper's cumulative reward beside ours
        assert cfg.model.n == 8 and cfg.ppo.episodes == 8  # the --quick overrides, on every arm
    metods = RunDir.open(out / "metods-g0.8" / "seed0").config()
    assert (metods.model.kind, metods.optimizer, metods.ppo.gamma) == ("metods", "ppo", 0.8)  # the arm's overrides
    assert RunDir.open(out / "random" / "seed0").config().budget_steps == NO_TRAINING  # a per-arm budget
    assert metods.budget_steps == QUICK_BUDGET
    assert "| metods-g0.8 | " in table and "(--quick: a smoke run" in table
    for name in ("training.md", "training.csv", "COMMAND.md"):
        assert (out / name).is_file()
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert math.isfinite(rows["metods-g0.8"][2])


@pytest.mark.slow
def test_reproduce_resumes_without_retraining_or_reevaluating(two_arms):
    out, _ = two_arms
    files = sorted(p for p in out.rglob("*") if p.name in ("eval.json", "eval-8x8.json", "agent.pt"))
    before = {p: p.stat().st_mtime_ns for p in files}
    result = cli("reproduce", "two-arms", "--quick", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_reproduce_bad_input_is_one_line():
    result = cli("reproduce", "maze-tabel", "--quick")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "unknown experiment" in result.output


@pytest.mark.slow
def test_paired_plays_both_arms_on_the_table_episodes(two_arms):
    """`paired` on two arms: each agent's mean is its table evaluation's (the same episodes), A − B is per episode."""
    from metods_evo.paired import paired

    out, _ = two_arms
    for setting, options in (("8x8", {}), ("10x10", {"size": "10"})):
        report = paired(out / "metods-g0.8", out / "random", episodes=32, task_options=options)
        assert [p["seed"] for p in report["pairs"]] == [0]
        assert report["task_options"] == ({"size": 10} if options else {})
        for side, arm in (("a", "metods-g0.8"), ("b", "random")):
            table = json.loads((out / arm / "seed0" / f"eval-{setting}.json").read_text())["metrics"]
            for name, stats in report["pooled"].items():
                assert stats[side] == pytest.approx(table[name]["mean"]), (setting, arm, name)
        for stats in report["pooled"].values():
            assert stats["diff"] == pytest.approx(stats["a"] - stats["b"]) and stats["pairs"] == 32
    itself = paired(out / "metods-g0.8" / "seed0", out / "metods-g0.8" / "seed0", episodes=16)["pooled"]
    assert all(s["diff"] == 0 and s["se"] == 0 for s in itself.values())


@pytest.mark.slow
def test_paired_cli_prints_the_table_and_rejects_bad_input_in_one_line(two_arms, tmp_path):
    out, _ = two_arms
    a, b = str(out / "metods-g0.8"), str(out / "random")
    result = cli("paired", a, b, "--episodes", "8")
    assert result.exit_code == 0, result.output
    assert "A − B" in result.output and "return" in result.output
    for args, message in (([a, str(tmp_path)], "neither a run"),
                          ([a, b, "--set", "model.n=4"], "only takes task options"),
                          ([a, b, "--set", "task.sise=4"], "unknown key")):
        result = cli("paired", *args, "--episodes", "8")
        assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output
