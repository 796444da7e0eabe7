"""Bad input anywhere (flags, --set, a config.json, a resume) ends with one `error:` line and exit code 2 and
changes nothing on disk; a run whose theta turns non-finite stops and keeps its last good files."""

import dataclasses
import io
import json
import math
import shutil
import sys
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import cli, refused

import metods_evo
import metods_evo.train
from metods_evo import config
from metods_evo.config import RANGES, ConfigError, RunConfig, all_sections, in_range, make_config, numeric_fields

TINY = ["--set", "es.popsize=8", "--set", "es.episodes=2", "--set", "model.n=6", "--set", "eval_episodes=8",
        "--set", "final_eval_episodes=8", "--no-progress"]


def files(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: a refused command must leave them identical."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


pytestmark = pytest.mark.usefixtures("work_in_tmp")  # run directories land in tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    result = cli("train", "--generations", "2", "--out", out, *TINY, "--set", "checkpoint_every=1")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, to damage."""
    return Path(shutil.copytree(trained, tmp_path / "copy"))


def edited(run: Path, **changes) -> str:
    """The run's config.json with ``changes`` (``model={"n": 3}`` merges into the section)."""
    data = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        data[key] = data[key] | value if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return json.dumps(data)


# ---------------------------------------------------------------------------------------------- config.json
# (config.json text from the run's, message of train --resume, whether evaluate refuses it too)
BROKEN_CONFIGS = {
    "array": (lambda run: "[]", "expected a JSON object, got an array", True),
    "empty object": (lambda run: "{}", "missing task and optimizer", True),
    "defaults": (lambda run: '{"task": "harlow", "optimizer": "es"}', "does not describe this run", True),
    "not json": (lambda run: "{not json", "corrupt", True),
    "string for int": (lambda run: edited(run, model={"n": "abc"}), "model.n must be an integer, got a string", True),
    "bool for int": (lambda run: edited(run, es={"popsize": True}), "es.popsize must be an integer", True),
    "array section": (lambda run: edited(run, model=[]), "model must be a JSON object", True),
    "typo": (lambda run: edited(run, model={"nn": 3}), "unknown key model.nn; did you mean model.n?", True),
    "task options": (lambda run: edited(run, task_options=[1]), "task_options must be an object", True),
    "seed": (lambda run: edited(run, seed=2**70), "seed must be in [0, 9223372036854775807]", True),
    "nan": (lambda run: edited(run, max_minutes=math.nan), "max_minutes=nan is not a finite number", True),
    "model size": (lambda run: edited(run, model={"n": 7}), "its model has", True),
    "optimizer": (lambda run: edited(run, optimizer="ppo"), "holds the state of an es trainer", False),
    "hybrid": (lambda run: edited(run, optimizer="hybrid"), "holds the state of an es trainer", False),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BROKEN_CONFIGS)
@pytest.mark.parametrize("extend", [[], ["--generations", "5"]], ids=["resume", "extend"])
def test_resume_checks_the_config_against_the_run_before_writing(run, case, extend):
    text, message, _ = BROKEN_CONFIGS[case]
    (run / "config.json").write_text(text(run))
    before = files(run)
    refused(cli("train", "--resume", run, *extend), message)
    assert files(run) == before  # no appended metrics row, no rewritten config.json


@pytest.mark.parametrize("case", [case for case, (_, _, by_evaluate) in BROKEN_CONFIGS.items() if by_evaluate])
def test_evaluate_refuses_a_config_that_does_not_describe_the_run(run, case):
    text, message, _ = BROKEN_CONFIGS[case]
    (run / "config.json").write_text(text(run))
    before = files(run)
    result = cli("evaluate", run, "--episodes", "2")
    refused(result, "does not describe this run" if case in ("defaults", "model size") else message)
    assert result.stdout == "" and files(run) == before


# ---------------------------------------------------------------------------------------------- flags and --set
@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**70)], "'--seed': 1180591620717411303424 is not in the range 0<=x<=9223372036854775807"),
    (["--seed", "-1"], "'--seed'"),
    (["--set", f"seed={2**63}"], "seed must be in [0, 9223372036854775807]"),
    (["--set", "model.n=1000000"], "needs ~"),
    (["--popsize", str(10**12)], "needs ~"),
    (["--optimizer", "ppo", "--set", "ppo.episodes=100000000", "--set", "ppo.minibatches=1"], "needs ~"),
    (["--set", "es.center_lr=nan"], "es.center_lr=nan is not a finite number"),
    (["--optimizer", "ppo", "--set", "ppo.lr=nan"], "ppo.lr=nan is not a finite number"),
    (["--optimizer", "ppo", "--set", "ppo.lr=inf"], "ppo.lr=inf is not a finite number"),
    (["--set", "es.sigma_init=nan"], "es.sigma_init=nan is not a finite number"),
    (["--set", "es.sigma_init=inf"], "es.sigma_init=inf is not a finite number"),
    (["--set", "model.w0_std=nan"], "model.w0_std=nan is not a finite number"),
    (["--set", "model.plastic_bound=nan"], "model.plastic_bound=nan is not a finite number"),
    (["--set", "max_minutes=nan"], "max_minutes=nan is not a finite number"),
    (["--algorithm", "snes", "--set", "es.popsize=1"], "es.popsize must be >= 2 (got 1)"),
    (["--algorithm", "cem", "--popsize", "4"], "CEM needs >= 2 parents"),
    (["--set", "model.nn=3"], "unknown key --set model.nn; did you mean model.n?"),
    (["--set", "task.num_trial=3"], "did you mean task.num_trials?"),
    (["--optimizer", "ppo", "--algorithm", "cem", "--popsize", "8"], "--algorithm, --popsize: ES settings, which"),
    (["--optimizer", "a2c", "--num-actors", "2"], "--num-actors: ES settings, which --optimizer a2c does not use"),
    (["--set", "threads=100000"], "threads must be in [1, 1024]"),
    (["--task", "maze", "--set", f"task.pool_size={10**12}"], "task 'maze' cannot be built"),
    (["--out", ""], "--out is empty"),
])
def test_bad_train_input_is_refused_before_anything_is_created(tmp_path, args, message):
    result = cli("train", *(["--out", "r"] if "--out" not in args else []), *args)
    refused(result, message)
    assert list(tmp_path.iterdir()) == []


def test_the_memory_refusal_gives_both_figures(monkeypatch):
    monkeypatch.setattr(config, "machine_memory", lambda device: 2**30)
    assert make_config("harlow").es.popsize == 256  # ~20 MB: fits in 1 GiB
    with pytest.raises(ConfigError, match=r"needs ~2\.6 GiB \(es.popsize 8,192 x 64 episodes x 420 floats of model "
                                          r"state\); this machine has 1\.0 GiB of memory"):
        make_config("harlow", "es", {"es.popsize": "8192"})


@pytest.mark.slow
def test_the_largest_seed_trains(tmp_path):
    result = cli("train", "--generations", "1", "--seed", str(2**63 - 1), "--out", tmp_path / "r", *TINY)
    assert result.exit_code == 0, result.stderr


def test_out_must_be_a_new_creatable_directory(tmp_path):
    (tmp_path / "file").write_text("")
    refused(cli("train", "--out", tmp_path / "file" / "run", *TINY), "cannot create the run directory")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_new_run_that_fails_before_its_first_generation_leaves_no_directory(tmp_path, monkeypatch):
    def broken(cfg):
        raise RuntimeError("simulated failure while building the trainer")

    monkeypatch.setattr(metods_evo.train, "make_trainer", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        cli("train", "--out", tmp_path / "r", *TINY)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_seed_and_plot_are_checked_first_and_no_figure_is_written_unasked(run, tmp_path):
    before = files(run)
    assert cli("evaluate", run, "--episodes", "4").exit_code == 0
    assert files(run) == before  # no RUN/evaluate.png
    for args, message in ((["--seed", str(2**70)], "'--seed'"),
                          (["--plot", tmp_path / "missing" / "x.png"], "no directory"),
                          (["--plot", tmp_path / "x.nope"], "name a figure file ending in"),
                          (["--plot", tmp_path], "name a figure file")):
        result = cli("evaluate", run, "--episodes", "4", *args)
        refused(result, message)
        assert result.stdout == ""  # refused before any evaluation
    result = cli("evaluate", run, "--episodes", "4", "--plot", tmp_path / "fig.png")
    assert result.exit_code == 0 and (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert files(run) == before


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_a_diverging_theta_stops_the_run_with_its_last_good_files(tmp_path, monkeypatch):
    real = metods_evo.train.make_trainer

    def poisoned(cfg):  # generation 3 leaves theta NaN, as an exploding learning rate would
        trainer = real(cfg)
        step = trainer.step

        def step_then_poison():
            metrics = step()
            if trainer.generation == 3:
                with torch.no_grad():
                    trainer.theta.fill_(math.nan)
            return metrics

        trainer.step = step_then_poison
        return trainer

    monkeypatch.setattr(metods_evo.train, "make_trainer", poisoned)
    out = tmp_path / "r"
    result = cli("train", "--optimizer", "ppo", "--generations", "5", "--out", out, "--set", "ppo.episodes=4",
                 "--set", "ppo.epochs=1", "--set", "model.n=6", "--set", "eval_episodes=4",
                 "--set", "final_eval_episodes=4", "--set", "eval_every=1", "--set", "checkpoint_every=1",
                 "--no-progress")
    assert result.exit_code == 2 and result.stderr.splitlines()[0] == f"run directory: {out}"
    refused(SimpleNamespace(exit_code=2, stderr=result.stderr.split("\n", 1)[1]),
            "generation 3: theta became non-finite (NaN or inf); the run stops at its last checkpoint (generation 2)")
    for name in ("agent.pt", "last.pt"):
        state = torch.load(out / name, weights_only=False)
        assert state["generation"] <= 2 and torch.isfinite(state["theta"]).all()
    assert torch.load(out / "checkpoint.pt", weights_only=False)["trainer"]["generation"] == 2
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 2


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    result = cli("train", "--generations", "1", "--out", tmp_path / "r", *TINY[:-1])  # progress on, stderr no TTY
    assert result.exit_code == 0 and "\r" not in result.stderr

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = metods_evo.train._progress_bar(RunConfig(), SimpleNamespace(generation=0, env_steps=0), True)
    assert bar is not None
    bar.close()


# ---------------------------------------------------------------------------------------------- fuzz
def _numeric_keys() -> list[tuple[str, type]]:
    keys = []
    for prefix, kind in [("", RunConfig), *((f"{name}.", kind) for name, kind in all_sections().items())]:
        types = typing.get_type_hints(kind)
        keys += [(prefix + f.name, types[f.name]) for f in dataclasses.fields(kind) if types[f.name] in (int, float)]
    return keys


FIELDS = _numeric_keys()
HARLOW_OPTIONS = [("task.num_trials", int), ("task.max_steps", int), ("task.object_dim", int)]


def fuzz_values(kind: type) -> list[tuple[str, typing.Any]]:
    """(text for --set, value for config.json): non-finite, zero, negative, huge and the wrong type."""
    huge = 10**12 if kind is int else 1e300
    return [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("0", 0), ("-1", -1), (str(huge), huge),
            ("abc", "abc")]


def optimizer_for(key: str) -> str:
    return {"a2c": "a2c", "ppo": "ppo", "hybrid": "hybrid", "pbt": "pbt"}.get(key.partition(".")[0], "es")


def test_every_numeric_field_has_a_range():
    assert sorted(key for key, _ in FIELDS) == sorted(RANGES)


@pytest.mark.parametrize("key, kind", FIELDS + HARLOW_OPTIONS, ids=[key for key, _ in FIELDS + HARLOW_OPTIONS])
def test_fuzz_set(key, kind):
    """Through --set (make_config): each value is either a valid config or one ConfigError line."""
    for text, _ in fuzz_values(kind):
        try:
            cfg = make_config("harlow", optimizer_for(key), {key: text})
        except ConfigError as err:
            assert "\n" not in str(err)
            continue
        values = numeric_fields(cfg)
        assert all(math.isfinite(v) for v in values.values())
        assert all(in_range(values[k], spec) for k, spec in RANGES.items())
        assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.slow
@pytest.mark.parametrize("key, kind", FIELDS, ids=[key for key, _ in FIELDS])
def test_fuzz_config_json(run, monkeypatch, key, kind):
    """Through a run's config.json, for evaluate and for train --resume: exit 0 or one error line, and the run's
    files unchanged either way."""

    def stop_before_training(cfg, run_dir, **kwargs):
        raise SystemExit(0)  # every check of the resume passed: training would start here

    monkeypatch.setattr(metods_evo.train, "train", stop_before_training)
    original = json.loads((run / "config.json").read_text())
    section, _, name = key.rpartition(".")
    for _, value in fuzz_values(kind):
        data = json.loads(json.dumps(original))
        target = data
        for part in section.split(".") if section else ():  # model.maml.hidden: data["model"]["maml"]["hidden"]
            target = target[part]
        target[name] = value
        (run / "config.json").write_text(json.dumps(data))
        before = files(run)
        for args in (["evaluate", run, "--episodes", "1", "--seed", "0"], ["train", "--resume", run]):
            result = cli(*args)
            if result.exit_code != 0:
                refused(result)
            assert files(run) == before


def test_the_version_has_one_source():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "metods_evo.__version__"}
