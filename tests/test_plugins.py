"""Tasks and optimizers of one's own: registered as classes or factories, loaded by the CLI with --import or as an
installed entry point, trained and evaluated through the CLI and the Python API; a run of a plugin's task opened
without the plugin is one error line."""

import json
import sys
import textwrap

import pytest
from helpers import cli, cli_process, refused

import metods_evo
from metods_evo import plugins
from metods_evo.config import RunConfig
from metods_evo.tasks import TASKS, make_task, register
from metods_evo.tasks.harlow import HarlowTask
from metods_evo.train import OPTIMIZERS, make_trainer, register_optimizer

TINY = ["--generations", "2", "--popsize", "8", "--set", "es.episodes=2", "--set", "es.starts=1", "--set", "model.n=6",
        "--set", "eval_episodes=8", "--set", "final_eval_episodes=8", "--no-progress"]
PLUGIN = textwrap.dedent('''
    import metods_evo
    from metods_evo.optimizers.es import make_es_trainer
    from metods_evo.tasks.harlow import HarlowTask

    BUILT = []  # the configs the optimizer's factory was called with


    class ShortHarlow(HarlowTask):
        """Harlow with three trials of 4-bit objects."""

        def __init__(self, device="cpu", *, num_trials: int = 3, max_steps: int = 20, object_dim: int = 4):
            super().__init__(device, num_trials=num_trials, max_steps=max_steps, object_dim=object_dim)


    def my_es(cfg):
        BUILT.append(cfg)
        return make_es_trainer(cfg)


    def register_shorter():
        metods_evo.register("shorter-harlow", ShortHarlow, num_trials=2)


    metods_evo.register("short-harlow", ShortHarlow, description="Harlow, 3 trials")
    metods_evo.register_optimizer("my-es", my_es)
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """my_tasks.py in the working directory; the registries, sys.path and sys.modules as they were afterwards."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_tasks.py").write_text(PLUGIN)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(plugins, "_loaded", set())
    tasks, optimizers = dict(TASKS), dict(OPTIMIZERS)
    yield tmp_path
    TASKS.clear()
    TASKS.update(tasks)
    OPTIMIZERS.clear()
    OPTIMIZERS.update(optimizers)
    sys.modules.pop("my_tasks", None)


def forget_plugin() -> None:
    """As a fresh process would be: the plugin's module and registrations gone."""
    TASKS.pop("short-harlow", None)
    OPTIMIZERS.pop("my-es", None)
    sys.modules.pop("my_tasks", None)


@pytest.mark.slow
def test_cli_trains_and_evaluates_a_plugin_task_with_import(plugin):
    trained = cli("--import", "my_tasks", "train", "--task", "short-harlow", "--out", "run", *TINY)
    assert trained.exit_code == 0, trained.stderr
    assert json.loads((plugin / "run" / "config.json").read_text())["task"] == "short-harlow"
    evaluated = cli("--import", "my_tasks", "evaluate", "run", "--episodes", "10", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["task"] == "short-harlow" and report["episodes"] == 10 and "trial3_correct" in report["metrics"]

    forget_plugin()
    for command in (["evaluate", "run"], ["analyze", "run"], ["impairment", "run"], ["paired", "run", "run"],
                    ["train", "--resume", "run"]):
        refused(cli(*command), "unknown task 'short-harlow'", "--import MODULE")
    assert not (plugin / "run" / "analysis").exists()
    # the console entry point in a fresh process, exactly as a user sees it
    refused(cli_process("evaluate", "run", cwd=plugin), "run/config.json: unknown task 'short-harlow'",
            "pass the module that registers it")


def test_python_api_trains_a_plugin_task_with_a_factory_optimizer(plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin))
    import my_tasks

    result = metods_evo.train_agent("short-harlow", "my-es", out="run", progress=False,
                                    overrides={"es.popsize": 8, "es.episodes": 2, "es.starts": 1, "model.n": 6,
                                               "generations": 2, "eval_episodes": 8, "final_eval_episodes": 8})
    assert [cfg.optimizer for cfg in my_tasks.BUILT] == ["my-es"]
    assert result.report["task"] == "short-harlow" and "trial3_correct" in result.report["metrics"]
    assert result.agent.obs_dim == 12 and result.agent.task.num_trials == 3
    assert metods_evo.load_agent("run").task.max_steps == 20


def test_import_errors(plugin):
    refused(cli("--import", "nope", "tasks"), "--import nope: no module named 'nope'")
    refused(cli("--import", "my_tasks.py", "tasks"), "module name")
    (plugin / "broken_tasks.py").write_text("import not_installed_dependency\n")
    broken = cli("--import", "broken_tasks", "tasks", catch=True)  # a plugin's own bug keeps its traceback
    assert isinstance(broken.exception, ModuleNotFoundError) and broken.exception.name == "not_installed_dependency"
    sys.modules.pop("broken_tasks", None)


def test_installed_entry_points_load_at_cli_start(plugin, monkeypatch):
    """A distribution on sys.path declaring entry points of the group metods_evo.plugins: a module is imported, a
    function called; one that fails is a warning and the command goes on."""
    info = plugin / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[metods_evo.plugins]\ntasks = my_tasks\nshorter = my_tasks:register_shorter\nbroken = no_such_module\n")
    monkeypatch.syspath_prepend(str(plugin))
    for slow in [task_id for task_id in TASKS if task_id != "harlow"]:  # `tasks` builds each (MuJoCo: seconds)
        del TASKS[slow]
    listed = cli("tasks")
    assert listed.exit_code == 0, listed.stderr
    assert [line.split()[:4] for line in listed.stdout.splitlines()[1:]] == [
        ["harlow", "20", "3", "30"], ["short-harlow", "12", "3", "20"], ["shorter-harlow", "12", "3", "20"]]
    assert listed.stderr.strip() == ("warning: plugin 'broken' (metods_evo.plugins: no_such_module) failed to load: "
                                     "ModuleNotFoundError: No module named 'no_such_module'")
    again = cli("tasks")  # once per process: the function is not called twice (which would re-register)
    assert again.exit_code == 0 and again.stderr == ""
    assert TASKS["shorter-harlow"].defaults == {"num_trials": 2}


def test_register_takes_classes_and_factories(plugin):
    class Harlow4(HarlowTask):
        pass

    register("harlow-4", Harlow4, num_trials=4)
    register("harlow-4", Harlow4, num_trials=4)  # the same spec again (a module imported twice): a no-op
    assert type(make_task("harlow-4")) is Harlow4 and make_task("harlow-4").num_trials == 4
    with pytest.raises(ValueError, match="already registered"):
        register("harlow-4", Harlow4, num_trials=5)
    with pytest.raises(TypeError, match="not a subclass"):
        register("not-a-task", dict)
    with pytest.raises(TypeError, match="'module:Class'"):
        register("no-colon", "metods_evo.tasks.harlow.HarlowTask")

    built = []
    register_optimizer("factory", lambda cfg: built.append(cfg) or "trainer")
    register_optimizer("by-name", "metods_evo.optimizers.es:make_es_trainer")
    assert make_trainer(RunConfig(optimizer="factory")) == "trainer" and len(built) == 1
    with pytest.raises(TypeError, match="'module:name'"):
        register_optimizer("bad", "metods_evo.optimizers.es")
    with pytest.raises(TypeError, match="class, a function"):
        register_optimizer("bad", 3)
