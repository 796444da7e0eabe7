"""`reproduce HEADLINE`: the reproduction gate trains each seed from scratch, checks the threshold, resumes."""

import json

import pytest
from click.testing import CliRunner

from metods_evo.cli import main
from metods_evo.gate import HEADLINES, gate
from metods_evo.runs import RunDir


@pytest.mark.slow
def test_quick_gate_trains_every_seed_checks_the_threshold_and_exits_1_on_a_miss(tmp_path):
    out = tmp_path / "gate"
    result = CliRunner().invoke(main, ["reproduce", "harlow-es,harlow-es-eager", "--quick", "--seeds", "2", "--out",
                                       str(out), "--no-progress"])
    assert result.exit_code == 1, result.output  # two-generation runs cannot reach 3.8: the gate says so
    table = (out / "gate.md").read_text()
    assert table in result.output + "\n" or table.splitlines()[-1] in result.output
    for name in ("harlow-es", "harlow-es-eager"):
        cells = []
        for seed in (0, 1):
            run = RunDir.open(out / name / f"seed{seed}")
            cfg = run.config()
            assert cfg.seed == seed and cfg.task == "harlow" and cfg.optimizer == "es"
            assert cfg.model.fused == ("off" if name.endswith("eager") else "auto")
            final, check = (json.loads((run.path / f).read_text()) for f in ("eval.json", "eval-gate.json"))
            assert check["episodes"] == 32 and check["seed"] != final["seed"]  # fresh episodes of their own
            cells.append(f"{check['metrics']['return']['mean']:.3f} ({final['metrics']['return']['mean']:.3f}) ✗")
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert "**0/2**" in row and all(cell in row for cell in cells)  # each seed's own scores, failed
    assert HEADLINES["harlow-es"].command() in table


@pytest.mark.slow
def test_gate_passes_when_every_seed_reaches_the_threshold(tmp_path, monkeypatch):
    import dataclasses

    from metods_evo import gate as gate_module

    easy = dataclasses.replace(HEADLINES["harlow-es"], threshold=-5.0)  # any return of a 5-trial episode is >= -5
    monkeypatch.setitem(gate_module.HEADLINES, "harlow-es", easy)
    result = gate(["harlow-es"], tmp_path, seeds=2, quick=True, progress=False)
    assert result["passed"] and all(r["passed"] for r in result["results"]["harlow-es"])


@pytest.mark.slow
@pytest.mark.mujoco
def test_a_headline_with_groups_is_checked_in_each_group(tmp_path, monkeypatch):
    """cheetah-dir-es passes only when forward AND backward reach the threshold; the table shows both."""
    pytest.importorskip("mujoco")
    import dataclasses

    from metods_evo import gate as gate_module

    monkeypatch.chdir(tmp_path)  # MuJoCo may log warnings to ./MUJOCO_LOG.TXT
    headline = HEADLINES["cheetah-dir-es"]
    assert headline.groups == ("forward", "backward") and ("budget_steps", "40000000") in headline.overrides
    result = gate(["cheetah-dir-es"], tmp_path / "gate", seeds=1, quick=True, progress=False)
    [row] = result["results"]["cheetah-dir-es"]
    cfg = RunDir.open(tmp_path / "gate" / "cheetah-dir-es" / "seed0").config()
    assert cfg.budget_steps == 0 and cfg.generations == 2  # --quick: two generations, not the 40 M-step budget
    forward, backward = row["scores"]["forward"], row["scores"]["backward"]
    assert row["passed"] == (min(forward, backward) >= headline.threshold)
    assert f"{forward:.1f}/{backward:.1f}" in result["table"]
    # a threshold between the two directions' scores: one group fails, so the seed fails
    split = dataclasses.replace(headline, threshold=(forward + backward) / 2)
    monkeypatch.setitem(gate_module.HEADLINES, "cheetah-dir-es", split)
    again = gate(["cheetah-dir-es"], tmp_path / "gate", seeds=1, quick=True, progress=False)
    [row] = again["results"]["cheetah-dir-es"]
    assert forward != backward and not row["passed"]


@pytest.mark.slow
def test_gate_resumes_without_retraining(tmp_path):
    runner, args = CliRunner(), ["reproduce", "harlow-es", "--quick", "--seeds", "1", "--out", str(tmp_path)]
    runner.invoke(main, args + ["--no-progress"])
    agent = tmp_path / "harlow-es" / "seed0" / "agent.pt"
    before = agent.stat().st_mtime_ns
    checked = (tmp_path / "harlow-es" / "seed0" / "eval-gate.json").stat().st_mtime_ns
    result = runner.invoke(main, args + ["--no-progress"])
    assert result.exit_code == 1 and agent.stat().st_mtime_ns == before
    assert (tmp_path / "harlow-es" / "seed0" / "eval-gate.json").stat().st_mtime_ns == checked  # not re-evaluated


def test_unknown_headline_is_one_line():
    result = CliRunner().invoke(main, ["reproduce", "harlow-es,nope", "--quick"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "unknown experiment" in result.output
