"""Meta-training from Python: ``metods_evo.train_agent(...)`` is ``metods-evo train`` as a function.

The same presets, overrides, checks and run directory as the command line (which calls ``new_run`` /
``resume_run`` / ``run_training`` here), returning a ``TrainResult``: the run directory, the final evaluation and
the trained agent, ready to play. docs/python-api.md has a complete example.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import metods_evo.train as training
from metods_evo.agent import Agent, load_agent
from metods_evo.config import ConfigError, RunConfig, make_config, validate
from metods_evo.runs import RunDir


@dataclass(frozen=True)
class TrainResult:
    """What ``train_agent`` returns."""

    run_dir: Path
    """The run directory: config.json, metrics.csv, agent.pt, eval.json ... (docs/run-directories.md)."""
    config: RunConfig
    """The run's full configuration (its config.json)."""
    report: dict[str, Any]
    """The final evaluation of the best theta (eval.json): ``report["metrics"][name]["mean"]`` per task metric,
    ``report["generation"]`` the generation of that theta, ``report["env_steps"]`` and ``report["wall_s"]``."""
    agent: Agent
    """The run's best theta as an ``Agent`` (``load_agent(run_dir)``), ready to play."""

    @property
    def score(self) -> float:
        """The mean of the task's main metric (Harlow, maze: the return) in the final evaluation."""
        return self.report["metrics"][self.agent.task.main_metric]["mean"]


def train_agent(task: str | None = None, optimizer: str | None = None, *, out: str | os.PathLike | None = None,
                seed: int | None = None, generations: int | None = None, budget_steps: int | None = None,
                device: str | None = None, overrides: Mapping[str, Any] | None = None,
                resume: str | os.PathLike | None = None, progress: bool = True,
                on_generation: Callable[[dict[str, Any]], None] | None = None,
                on_start: Callable[[Any], None] | None = None) -> TrainResult:
    """Meta-train an agent, as ``metods-evo train`` does, and return its ``TrainResult``.

    The config is the dataclass defaults, then the presets of ``task`` (default ``"harlow"``) and (task,
    ``optimizer``) (default ``"es"``), then ``seed`` (default 0), ``generations``, ``budget_steps``, ``device``
    (default ``"cpu"``), then ``overrides``: ``--set`` keys to values, e.g. ``{"model.n": 32, "es.popsize": 64,
    "task.num_trials": 5, "logger": "tensorboard"}`` (docs/configuration.md). Every mistake is a ``ConfigError``
    (one line, raised before any file is written); ``out`` must not exist (default:
    ``runs/<task>__<optimizer>__s<seed>__<time>`` under the working directory).

    ``resume``: continue that run from its checkpoint with its saved config; only ``generations`` /
    ``budget_steps`` may be given with it, to extend the run. ``progress``: the live progress bar (on a terminal
    only). ``on_generation``: called after each generation with its row of metrics.csv (``generation``,
    ``env_steps``, ``wall_s``, ``train/episode_return``, the optimizer's metrics, ``eval/<metric>``: NaN where
    the generation was not evaluated). ``on_start``: called with the trainer before its first step, e.g. to attach
    evotorch's loggers to an ES run's searcher: ``on_start=lambda trainer: PandasLogger(trainer.searcher)`` with
    ``es.starts=1`` (with several starts, each start's ``trainer.searchers[k].searcher``).
    """
    if resume is not None:
        given = {"task": task, "optimizer": optimizer, "out": out, "seed": seed, "device": device,
                 "overrides": overrides}
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise ConfigError(f"resume continues a run with its saved config; only generations / budget_steps may "
                              f"be given, to extend it (got {', '.join(extra)})")
        cfg, run = resume_run(resume, generations, budget_steps)
    else:
        flags = {"seed": seed, "generations": generations, "budget_steps": budget_steps, "device": device}
        cfg, run = new_run(task or "harlow", optimizer or "es",
                           {**{k: v for k, v in flags.items() if v is not None}, **(overrides or {})}, out)
    report = run_training(cfg, run, resume=resume is not None, progress=progress, on_generation=on_generation,
                          on_start=on_start)
    return TrainResult(run.path, cfg, report, load_agent(run.path))


def new_run(task: str, optimizer: str, overrides: Mapping[str, Any], out: str | os.PathLike | None = None
            ) -> tuple[RunConfig, RunDir]:
    """The config of a new run (defaults, presets, ``overrides``), every check passed, and its new directory."""
    cfg = make_config(task, optimizer, {key: _text(value) for key, value in overrides.items()})
    training.check_logger(cfg)
    return cfg, RunDir.create(cfg, out)


def resume_run(path: str | os.PathLike, generations: int | None = None, budget_steps: int | None = None
               ) -> tuple[RunConfig, RunDir]:
    """The saved config and directory of the run at ``path``, checked for a resume; with ``generations`` or
    ``budget_steps``, the run is extended: the new limit replaces the old ones (saved before training starts)."""
    run = RunDir.open(path)
    cfg = run.config()
    extended = generations is not None or budget_steps is not None
    if extended:
        # Extending a run: the same search continued under the new limit, which replaces the old ones.
        cfg.generations = generations if generations is not None else cfg.generations
        cfg.budget_steps = budget_steps if budget_steps is not None else 0
        cfg.max_minutes = 0.0
    validate(cfg)
    training.check_logger(cfg)
    run.check_resumable(cfg)  # everything checked before the first write
    if extended:
        run.save_config(cfg)
    return cfg, run


def run_training(cfg: RunConfig, run: RunDir, *, resume: bool = False, progress: bool = True,
                 on_generation: Callable[[dict[str, Any]], None] | None = None,
                 on_start: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """``train.train``; a new run that fails before its first generation leaves no directory behind."""
    try:
        return training.train(cfg, run, resume=resume, progress=progress, on_generation=on_generation,
                              on_start=on_start)
    except Exception:
        if not resume:
            run.discard_if_untrained()
        raise


def _text(value: Any) -> str:
    """An override as ``--set`` takes it: ``True`` -> ``"true"``, ``0.05`` -> ``"0.05"``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


__all__ = ["TrainResult", "new_run", "resume_run", "run_training", "train_agent"]
