"""`reproduce EXPERIMENT --quick`: trains MetODS and the baselines, evaluates every setting, writes the paper table."""

import json
import math

import pytest
from helpers import cli

from metods_evo.reproduce import EXPERIMENTS
from metods_evo.runs import RunDir


@pytest.fixture(scope="module")
def maze_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "maze-table"
    result = cli("reproduce", "maze-table", "--quick", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_quick_maze_table_trains_every_agent_and_tabulates_both_maze_sizes(maze_table):
    out, printed = maze_table
    exp = EXPERIMENTS["maze-table"]
    table = (out / "table.md").read_text()
    # stdout is the table as written to table.md, then where the files are (progress and run lines go to stderr)
    assert printed == f"{table}\nfiles in {out}: table.md, table.csv, training.md, training.png\n"
    rows = {line.split(",")[0]: [float(v) for v in line.split(",")[1:]]
            for line in (out / "table.csv").read_text().splitlines()[1:]}
    assert list(rows) == [arm.label for arm in exp.arms]
    for agent, values in rows.items():
        cfg = RunDir.open(out / agent / "seed0").config()
        assert cfg.model.kind == agent.split("-")[0]
        assert cfg.ppo.gamma == (0.8 if "-g0.8" in agent else 0.9), agent
        assert cfg.ppo.minibatches == {"-mb4": 4, "-mb8": 8}.get(agent[-4:], 2), agent
        reports = {s: json.loads((out / agent / "seed0" / f"eval-{s}.json").read_text()) for s in ("8x8", "10x10")}
        assert reports["10x10"]["task_options"]["size"] == 10 and "size" not in reports["8x8"]["task_options"]
        for i, column in enumerate(exp.columns):  # one seed: the pooled mean and std are that run's
            stats = reports[column.setting]["metrics"][column.metric]
            assert values[2 * i] == pytest.approx(stats["mean"]) and values[2 * i + 1] == pytest.approx(stats["std"])
        paper = exp.paper.get(agent, ("–",) * len(exp.columns))  # metods-s1-n24 is not a row of the paper's
        assert f"| {agent} | " in table and f" / {paper[2]} |" in table  # the paper's cumulative reward beside ours
    assert RunDir.open(out / "maml" / "seed0").config().model.maml_adapt_steps == 50
    # every MetODS arm is what its label says, whatever the maze preset (quick runs shrink only the preset's N)
    pinned = {"metods": (1, 8, 64, "learnt"), "metods-s1-n96-w0-pre-g0.8-mb8": (1, 96, 64, "learnt"),
              "metods-s1-n96-w0-pre-fb-g0.8-mb8": (1, 96, 64, "learnt")}
    for agent, expected in pinned.items():  # (S, N, f's hidden units, W0)
        model = RunDir.open(out / agent / "seed0").config().model
        assert (model.depth, model.n, model.embed_hidden, model.w0) == expected, agent
        assert model.plastic_bound == (0.3 if agent.endswith("-pb0.3") else 5.0), agent
        assert model.write_pre == ("previous" if "-pre-" in agent else "current"), agent
        assert model.feedback == ("diagonal" if "-fb-" in agent else "none"), agent
    assert RunDir.open(out / "random" / "seed0").config().budget_steps == 1  # nothing to train
    for name in ("training.md", "training.csv", "COMMAND.md"):
        assert (out / name).is_file()
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert math.isfinite(rows["metods"][4])


def test_reproduce_resumes_without_retraining_or_reevaluating(maze_table):
    out, _ = maze_table
    files = sorted(p for p in out.rglob("*") if p.name in ("eval.json", "eval-8x8.json", "agent.pt"))
    before = {p: p.stat().st_mtime_ns for p in files}
    result = cli("reproduce", "maze-table", "--quick", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_reproduce_bad_input_is_one_line():
    result = cli("reproduce", "maze-tabel", "--quick")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "unknown experiment" in result.output


def test_paired_plays_both_arms_on_the_table_episodes(maze_table):
    """`paired` on two arms: each agent's mean is its table evaluation's (the same episodes), A − B is per episode."""
    from metods_evo.paired import paired

    out, _ = maze_table
    for setting, options in (("8x8", {}), ("10x10", {"size": "10"})):
        report = paired(out / "metods", out / "rl2", episodes=32, task_options=options)
        assert [p["seed"] for p in report["pairs"]] == [0]
        assert report["task_options"] == ({"size": 10} if options else {})
        for side, arm in (("a", "metods"), ("b", "rl2")):
            table = json.loads((out / arm / "seed0" / f"eval-{setting}.json").read_text())["metrics"]
            for name, stats in report["pooled"].items():
                assert stats[side] == pytest.approx(table[name]["mean"]), (setting, arm, name)
        for stats in report["pooled"].values():
            assert stats["diff"] == pytest.approx(stats["a"] - stats["b"]) and stats["pairs"] == 32
    itself = paired(out / "metods" / "seed0", out / "metods" / "seed0", episodes=16)["pooled"]
    assert all(s["diff"] == 0 and s["se"] == 0 for s in itself.values())


def test_paired_cli_prints_the_table_and_rejects_bad_input_in_one_line(maze_table, tmp_path):
    out, _ = maze_table
    result = cli("paired", out / "metods", out / "random", "--episodes", "8")
    assert result.exit_code == 0, result.output
    assert "A − B" in result.output and "return" in result.output
    for args, message in (([str(out / "metods"), str(tmp_path)], "neither a run"),
                          ([str(out / "metods"), str(out / "rl2"), "--set", "model.n=4"], "only takes task options"),
                          ([str(out / "metods"), str(out / "rl2"), "--set", "task.sise=4"], "unknown key")):
        result = cli("paired", *args, "--episodes", "8")
        assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output
