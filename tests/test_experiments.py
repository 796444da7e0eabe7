"""`compare`: several optimizers x seeds at one budget -> table, plot; resume; threshold arithmetic; bad input."""

import copy
import json
import math
import shutil
import statistics

import pytest
import torch
from helpers import cli

import metods_evo.experiments
import metods_evo.train
from metods_evo.config import ConfigError, make_config
from metods_evo.experiments import ablate, compare, time_to_threshold
from metods_evo.optimizers.es import ESTrainer
from metods_evo.runs import RunDir

TINY = {"es.popsize": 8, "es.episodes": 2, "es.starts": 1, "model.n": 8, "eval_every": 1, "eval_episodes": 16,
        "final_eval_episodes": 16, "checkpoint_every": 1}
BUDGET = 2000


class NarrowES(ESTrainer):
    """A second registered optimizer for these tests (ES with a smaller sigma), so the rows of two optimizers that
    learn differently must not be mixed up, whichever gradient optimizers happen to be registered."""

    def __init__(self, cfg):
        cfg = copy.deepcopy(cfg)
        cfg.es.sigma_init = 0.05
        super().__init__(cfg)


@pytest.fixture(scope="module", autouse=True)
def _narrow_es_registered():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(metods_evo.train.OPTIMIZERS, "narrow-es", f"{__name__}:NarrowES")
        yield


@pytest.fixture(scope="module")
def compared(tmp_path_factory, _narrow_es_registered):
    """One finished comparison (2 optimizers x 2 seeds on Harlow), shared read-only by the tests below."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    summary = compare("harlow", ["es", "narrow-es"], 2, BUDGET, out, overrides=TINY, threshold=-100.0, progress=False)
    return out, summary


def read_csv(path):
    lines = path.read_text().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def eval_report(path):
    return json.loads((path / "eval.json").read_text())


def snapshot(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_table_and_plot_match_the_runs(compared):
    out, summary = compared
    rows = read_csv(out / "compare.csv")
    assert [r["optimizer"] for r in rows] == ["es", "narrow-es"]
    md = (out / "compare.md").read_text()
    for row in rows:
        runs = [out / row["optimizer"] / f"seed{s}" for s in (0, 1)]
        for seed, path in enumerate(runs):
            cfg = RunDir.open(path).config()
            assert (cfg.optimizer, cfg.seed, cfg.budget_steps, cfg.model.n) == (row["optimizer"], seed, BUDGET, 8)
        reports = [eval_report(path) for path in runs]
        finals = [r["metrics"]["return"]["mean"] for r in reports]
        # the all-metrics table: Harlow's trial-2 accuracy averaged over the seeds
        trial2 = statistics.fmean(r["metrics"]["trial2_correct"]["mean"] for r in reports)
        assert f"| {row['optimizer']} | " in md and f"{trial2:.3f} ± " in md
        assert row["seeds"] == "2"
        assert float(row["final_return_mean"]) == pytest.approx(statistics.fmean(finals), abs=1e-12)
        assert float(row["final_return_std"]) == pytest.approx(statistics.stdev(finals), abs=1e-12)
        metrics = [RunDir(path).read_metrics() for path in runs]
        for report, rows_of_run in zip(reports, metrics):
            assert report["env_steps"] == rows_of_run[-1]["env_steps"] >= BUDGET > rows_of_run[-2]["env_steps"]
        assert float(row["env_steps_mean"]) == statistics.fmean(r["env_steps"] for r in reports)
        assert float(row["wall_s_mean"]) == pytest.approx(statistics.fmean(r["wall_s"] for r in reports))
        # threshold -100: every seed reaches it at its first periodic evaluation (eval_every=1: generation 1)
        assert (row["threshold"], row["seeds_reached"]) == ("-100.0", "2/2")
        assert float(row["env_steps_to_threshold"]) == statistics.fmean(m[0]["env_steps"] for m in metrics)
        assert float(row["wall_s_to_threshold"]) == pytest.approx(statistics.fmean(m[0]["wall_s"] for m in metrics))
        final_cell = f"{statistics.fmean(finals):.3f} ± {statistics.stdev(finals):.3f}"
        assert f"| {row['optimizer']} | 2 | {final_cell} |" in md and "2/2 seeds" in md
    assert summary["table"] in md and [r["arm"] for r in summary["rows"]] == ["es", "narrow-es"]
    # the two optimizers really are different runs (not one run tabulated twice)
    assert (out / "es/seed0/metrics.csv").read_text() != (out / "narrow-es/seed0/metrics.csv").read_text()
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    command = (out / "COMMAND.md").read_text()
    assert "called from Python" in command and f"--optimizers es,narrow-es --seeds 2 --budget-steps {BUDGET}" in command


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_retabulates(compared, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    shutil.copytree(compared[0], out)
    runs_before = snapshot(out / "es") | snapshot(out / "narrow-es")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(metods_evo.experiments, "train", no_training)
    summary = compare("harlow", ["es", "narrow-es"], 2, BUDGET, out, overrides=TINY, threshold=1e9, progress=False)
    assert snapshot(out / "es") | snapshot(out / "narrow-es") == runs_before
    rows = read_csv(out / "compare.csv")
    assert [r["seeds_reached"] for r in rows] == ["0/2", "0/2"]
    assert [(r["env_steps_to_threshold"], r["wall_s_to_threshold"]) for r in rows] == [("", "")] * 2
    assert rows[0]["final_return_mean"] == read_csv(compared[0] / "compare.csv")[0]["final_return_mean"]
    assert "never" in summary["table"] and "0/2 seeds" in summary["table"]
    assert "run again" in (out / "COMMAND.md").read_text()

    default = compare("harlow", ["es"], 2, BUDGET, out, overrides=TINY, progress=False)  # harlow default: 3.8
    assert default["threshold"] == 3.8 and [r["optimizer"] for r in read_csv(out / "compare.csv")] == ["es"]


@pytest.mark.slow
def test_a_killed_run_is_resumed_to_the_uninterrupted_result(compared, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    cfg = make_config("harlow", "es", {k: str(v) for k, v in TINY.items()} | {"seed": "0", "budget_steps": str(BUDGET)})
    run = RunDir.create(cfg, str(out / "es" / "seed0"))

    def kill_after_two(row):
        if row["generation"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        metods_evo.train.train(cfg, run, progress=False, on_generation=kill_after_two)
    assert not run.file("eval.json").exists()

    calls, real_train = [], metods_evo.experiments.train
    monkeypatch.setattr(metods_evo.experiments, "train", lambda *a, **kw: calls.append(kw) or real_train(*a, **kw))
    compare("harlow", ["es"], 1, BUDGET, out, overrides=TINY, progress=False)
    assert [c["resume"] for c in calls] == [True]
    reference = compared[0] / "es" / "seed0"
    assert eval_report(out / "es" / "seed0")["metrics"] == eval_report(reference)["metrics"]
    theta = RunDir(out / "es" / "seed0").load_agent_state()["theta"]
    assert torch.equal(theta, RunDir(reference).load_agent_state()["theta"])


@pytest.mark.parametrize("change, message", [
    ({"model.n": 6}, "model.n: 8 there, 6 requested"),
    ({"es.sigma_init": 0.5}, "es.sigma_init"),
])
def test_another_config_in_the_same_directory_is_refused_untouched(compared, change, message):
    out = compared[0]
    before = snapshot(out)
    with pytest.raises(ConfigError, match=message) as refused:
        compare("harlow", ["es"], 2, BUDGET, out, overrides=TINY | change, progress=False)
    assert "\n" not in str(refused.value) and "new --out" in str(refused.value)
    with pytest.raises(ConfigError, match="budget_steps: 2000 there, 3000 requested"):
        compare("harlow", ["es"], 2, 3000, out, overrides=TINY, progress=False)
    assert snapshot(out) == before


@pytest.mark.slow
def test_parallel_jobs_give_the_same_runs(compared, tmp_path):
    out = tmp_path / "cmp"
    compare("harlow", ["es"], 2, BUDGET, out, overrides=TINY, jobs=2, progress=False)
    for seed in (0, 1):
        assert eval_report(out / "es" / f"seed{seed}")["metrics"] == \
            eval_report(compared[0] / "es" / f"seed{seed}")["metrics"]
    assert "contention" in (out / "compare.md").read_text() and "contention" in (out / "COMMAND.md").read_text()


def test_time_to_threshold():
    nan = math.nan
    rows = [{"env_steps": 100, "wall_s": 1.0, "eval/return": 1.0},
            {"env_steps": 200, "wall_s": 2.0, "eval/return": nan},   # no evaluation at this generation
            {"env_steps": 300, "wall_s": 3.5, "eval/return": 3.9},
            {"env_steps": 400, "wall_s": 4.0, "eval/return": 2.0},
            {"env_steps": 500, "wall_s": 5.0, "eval/return": 4.0}]
    assert time_to_threshold(rows, 3.8) == (300, 3.5)
    assert time_to_threshold(rows, 1.0) == (100, 1.0)  # reaching means >=
    assert time_to_threshold(rows, 4.0) == (500, 5.0)
    assert time_to_threshold(rows, 4.01) is None
    assert time_to_threshold(rows, None) is None
    assert time_to_threshold([{"env_steps": 9, "wall_s": 0.1, "eval/success": 0.9}], 0.5, "eval/success") == (9, 0.1)
    assert time_to_threshold([], 0.0) is None


# ---------------------------------------------------------------------------------------------- command line
@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path



@pytest.mark.slow
def test_cli_compare_end_to_end(in_tmp, monkeypatch):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    args = ["compare", "--task", "harlow", "--optimizers", "es", "--seeds", "1", "--budget-steps", "1000",
            "--out", "cmp", "--threshold", "0.5", *sets, "--no-progress"]
    monkeypatch.setattr("sys.argv", ["/usr/bin/metods-evo", *args])
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    report = eval_report(in_tmp / "cmp" / "es" / "seed0")
    assert f"| es | 1 | {report['metrics']['return']['mean']:.3f} |" in result.stdout
    command = (in_tmp / "cmp" / "COMMAND.md").read_text()
    assert "metods-evo compare --task harlow --optimizers es --seeds 1 --budget-steps 1000 --out cmp --threshold 0.5" \
        in command
    assert read_csv(in_tmp / "cmp" / "compare.csv")[0]["threshold"] == "0.5"


@pytest.mark.parametrize("args, message", [
    (["--optimizers", "es,nope", "--budget-steps", "100"], "unknown optimizer 'nope'"),
    (["--optimizers", "es", "--seeds", "0", "--budget-steps", "100"], "--seeds"),
    (["--optimizers", "es", "--seeds", "x", "--budget-steps", "100"], "--seeds"),
    (["--optimizers", "es"], "--budget-steps"),
    (["--optimizers", "es", "--budget-steps", "0"], "--budget-steps"),
    (["--optimizers", "es", "--budget-steps", "100", "--jobs", "0"], "--jobs"),
    (["--optimizers", "es,es", "--budget-steps", "100"], "twice"),
    (["--optimizers", ",", "--budget-steps", "100"], "at least one optimizer"),
    (["--task", "nope", "--optimizers", "es", "--budget-steps", "100"], "unknown task"),
    (["--optimizers", "es", "--budget-steps", "100", "--set", "seed=3"], "--seeds"),
    (["--optimizers", "es", "--budget-steps", "100", "--set", "model.nn=3"], "unknown key"),
    (["--optimizers", "es", "--budget-steps", "100", "--set", "oops"], "key=value"),
    (["--optimizers", "es", "--budget-steps", "100", "--threshold", "nan"], "threshold"),
])
@pytest.mark.parametrize("out", [None, "cmp"])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(in_tmp, args, message, out):
    result = cli("compare", *args, *(["--out", out] if out else []), "--no-progress")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert list(in_tmp.iterdir()) == [], "a refused compare must not leave a directory behind"


def test_sections_an_optimizer_does_not_read_are_not_compared():
    """A finished ES run stays valid when the defaults of PPO (which it never reads) change."""
    from metods_evo.config import RunConfig
    from metods_evo.experiments import _differences, _relevant

    es_a, es_b = RunConfig(optimizer="es"), RunConfig(optimizer="es")
    es_b.ppo.target_kl = 0.5
    assert _differences(_relevant(es_a), _relevant(es_b)) == []
    es_b.es.popsize = 2
    assert [k for k, _, _ in _differences(_relevant(es_a), _relevant(es_b))] == ["es.popsize"]
    ppo_a, ppo_b = RunConfig(optimizer="ppo"), RunConfig(optimizer="ppo")
    ppo_b.ppo.target_kl = 0.5
    assert [k for k, _, _ in _differences(_relevant(ppo_a), _relevant(ppo_b))] == ["ppo.target_kl"]


@pytest.mark.slow
def test_ablate_trains_each_variant_and_tabulates_it(tmp_path):
    """Each variant is one change from the task's defaults, in its own run directory, with its own row."""
    out = tmp_path / "abl"
    summary = ablate("harlow", ["metods", "depth-1", "scalar-alpha"], 1, BUDGET, out, optimizer="es",
                     overrides=TINY, progress=False)
    assert [r["arm"] for r in summary["rows"]] == ["metods", "depth-1", "scalar-alpha"]
    configs = {name: RunDir.open(out / name / "seed0").config() for name in ("metods", "depth-1", "scalar-alpha")}
    assert (configs["metods"].model.depth, configs["metods"].model.alpha) == (3, "matrix")
    assert (configs["depth-1"].model.depth, configs["depth-1"].model.alpha) == (1, "matrix")
    assert (configs["scalar-alpha"].model.depth, configs["scalar-alpha"].model.alpha) == (3, "scalar")
    assert all(c.model.write == "linear" and c.model.n == 8 for c in configs.values())  # preset and --set kept
    rows = read_csv(out / "ablate.csv")
    assert [r["variant"] for r in rows] == ["metods", "depth-1", "scalar-alpha"]
    for row in rows:
        final = eval_report(out / row["variant"] / "seed0")["metrics"]["return"]["mean"]
        assert float(row["final_return_mean"]) == final
    md = (out / "ablate.md").read_text()
    assert "| variant | seeds |" in md and "- depth-1: model.depth=1" in md
    assert (out / "ablate.png").read_bytes()[:4] == b"\x89PNG"
    command = (out / "COMMAND.md").read_text()
    assert "metods-evo ablate --task harlow --optimizer es --variants metods,depth-1,scalar-alpha" in command


def test_ablate_defaults_and_bad_variants():
    from metods_evo.experiments import ablation_arms

    maze = [arm.label for arm in ablation_arms("maze", "ppo", None)]
    assert maze[0] == "metods" and "write-linear" not in maze and "w0-learnt" not in maze  # maze's own defaults
    assert "depth-1" not in maze  # the maze preset has S = 1
    assert {"depth-2", "depth-3", "scalar-alpha", "write-hebbian", "write-mlp", "w0-zero", "w0-random"} <= set(maze)
    deep = [arm.label for arm in ablation_arms("maze", "ppo", None, {"model.depth": 3})]  # a base with S = 3
    assert "depth-3" not in deep and {"depth-1", "depth-2"} <= set(deep)
    with pytest.raises(ConfigError, match="unknown variant"):
        ablation_arms("maze", "ppo", ["depth-5"])
    with pytest.raises(ConfigError, match="default model"):
        ablation_arms("maze", "ppo", ["write-linear"])
    result = cli("ablate", "--task", "maze", "--variants", "nope", "--budget-steps", "10")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "unknown variant" in result.output
