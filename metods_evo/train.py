"""The training driver shared by every optimizer: step, evaluate, record, checkpoint, resume.

An optimizer ("trainer") only computes: ``step() -> metrics``, ``center() -> theta``,
``state_dict()`` / ``load_state_dict()``. This loop records its metrics (CSV, progress bar),
evaluates the current theta every ``eval_every`` generations on fixed held-out episodes, keeps
the best one as the run's agent, and writes an atomic checkpoint (and the last theta, last.pt) every
``checkpoint_every``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metods_evo.config import ConfigError, RunConfig, generation_seed, validate
from metods_evo.evaluate import EVAL_STREAM, evaluate_theta, final_seed
from metods_evo.optimizers import OPTIMIZERS, declaration, make_trainer, register_optimizer
from metods_evo.runs import CURVES, EVAL, RunDir, RunError
from metods_evo.tasks import TASKS

LOGGERS = ("csv", "tensorboard")  # RunConfig.logger: metrics.csv always; tensorboard adds RUN/tensorboard/
TENSORBOARD = "tensorboard"  # the run's subfolder of TensorBoard event files


class DivergedError(RunError):
    """Training produced a non-finite theta (one-line CLI error, exit code 2); the run keeps its last good files."""


def check_logger(cfg: RunConfig) -> None:
    """``ConfigError`` for an unknown ``logger`` or one whose package is not installed: checked before a run
    directory is created."""
    if cfg.logger not in LOGGERS:
        raise ConfigError(f"logger={cfg.logger!r} is not one of {', '.join(LOGGERS)}")
    if cfg.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger=tensorboard needs the tensorboard package: pip install tensorboard")


class TensorBoardLog:
    """Writes each metrics.csv row as scalars (step: the generation) into RUN/tensorboard/. The writer is made at the
    first row, so a run that fails before its first generation leaves no folder; a resumed run purges the events
    past its checkpoint, which it recomputes, as metrics.csv is cut back."""

    def __init__(self, path: Path, resume: bool):
        self.path, self.resume, self.writer = path, resume, None

    def __call__(self, row: dict[str, Any]) -> None:
        step = int(row["generation"])
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package

            self.writer = SummaryWriter(str(self.path), purge_step=step if self.resume else None)
        for key, value in row.items():
            if key != "generation" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a live TensorBoard shows each generation as it ends

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(cfg: RunConfig, run: RunDir, *, resume: bool = False, progress: bool = True,
          on_generation: Callable[[dict[str, Any]], None] | None = None,
          on_start: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train (or continue) the run in ``run`` and return its final evaluation report. ``on_generation`` is called
    with each generation's row of metrics.csv once it is written; ``on_start`` with the trainer, once built (and
    restored from its checkpoint), before its first step: e.g. to attach evotorch loggers to its searcher."""
    validate(cfg)
    check_logger(cfg)
    if resume:
        run.check_resumable(cfg)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    trainer = make_trainer(cfg)
    best = {"score": -math.inf, "generation": -1}
    wall_before = 0.0
    if resume:
        state = run.load_checkpoint()
        if state is not None:
            trainer.load_state_dict(state["trainer"])
            best, wall_before = state["best"], state["wall_s"]
            torch.set_rng_state(state["torch_rng"])
            run.truncate_metrics(trainer.generation)
        else:
            run.truncate_metrics(0)  # killed before its first checkpoint: start over
    if on_start is not None:
        on_start(trainer)
    saved = trainer.generation  # the generation of the files on disk, for the message if theta diverges
    eval_seed = generation_seed(cfg.seed, 0, EVAL_STREAM)
    metric = trainer.task.main_metric
    bar = _progress_bar(cfg, trainer, progress)
    log = TensorBoardLog(run.file(TENSORBOARD), resume) if cfg.logger == "tensorboard" else None
    start = time.perf_counter()
    try:
        done = _finished(cfg, trainer, wall_before)
        while not done:
            steps_before = trainer.env_steps
            row: dict[str, Any] = {"generation": trainer.generation + 1}
            metrics = trainer.step()
            theta = trainer.center()
            if not torch.isfinite(theta).all():  # never saved: agent.pt, last.pt and the checkpoint stay as they were
                kept = f"at its last checkpoint (generation {saved})" if saved else "before its first checkpoint"
                raise DivergedError(f"generation {trainer.generation}: theta became non-finite (NaN or inf); the run "
                                    f"stops {kept}; lower the learning rates or sigma and start a new run")
            wall = wall_before + time.perf_counter() - start
            last = _finished(cfg, trainer, wall)
            evaluated = last or (trainer.env_steps // cfg.eval_every_steps > steps_before // cfg.eval_every_steps
                                 if cfg.eval_every_steps > 0 else trainer.generation % cfg.eval_every == 0)
            eval_score = math.nan
            if evaluated:
                report = evaluate_theta(cfg, theta, cfg.eval_episodes, eval_seed)
                eval_score = report["metrics"][metric]["mean"]
                if eval_score > best["score"]:
                    best = {"score": eval_score, "generation": trainer.generation}
                    run.save_agent(theta, {"generation": trainer.generation, "eval_score": eval_score})
            wall = wall_before + time.perf_counter() - start
            row |= {"env_steps": trainer.env_steps, "wall_s": round(wall, 3), **metrics, f"eval/{metric}": eval_score}
            run.append_metrics(row)
            if log is not None:
                log(row)
            if on_generation is not None:
                on_generation(row)
            if trainer.generation % cfg.checkpoint_every == 0 or last:
                # last.pt holds no optimizer state: small enough to keep when a finished run drops checkpoint.pt.
                # Written first: a kill in between leaves it ahead of the checkpoint, which an exact resume reaches.
                run.save_agent(theta, {"generation": trainer.generation, "env_steps": trainer.env_steps}, last=True)
                run.save_checkpoint({"optimizer": cfg.optimizer, "trainer": trainer.state_dict(), "best": best,
                                     "wall_s": wall, "torch_rng": torch.get_rng_state()})
                saved = trainer.generation
            done = last
            if bar is not None:
                bar.update(1 if cfg.budget_steps <= 0 else trainer.env_steps - steps_before)
                bar.set_postfix_str(f"gen {trainer.generation} return {metrics['train/episode_return']:.2f} "
                                    f"best-eval {best['score']:.2f} {metrics['perf/steps_per_s']:,.0f} steps/s")
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        trainer.close()
    return finish(cfg, run)


def finish(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """Final evaluation of the best theta on fresh episodes, written to eval.json, and the curves."""
    agent = run.load_agent_state()
    report = evaluate_theta(cfg, agent["theta"], cfg.final_eval_episodes, final_seed(cfg))
    rows = run.read_metrics()
    report |= {"generation": agent["generation"], "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
               "wall_s": rows[-1]["wall_s"] if rows else 0.0}
    run.write_json(EVAL, report)
    try:
        from metods_evo.plots import plot_curves  # optional at run time: matplotlib

        detail = declaration(cfg.optimizer).detail(cfg)
        title = f"{cfg.task} — {cfg.optimizer}" + (f" ({detail})" if detail else "")
        plot_curves(rows, run.file(CURVES), title=title, eval_key=f"eval/{_main_metric(cfg)}")
    except ImportError:  # matplotlib is a dependency, but a broken install must not lose a finished run
        pass
    return report


def _main_metric(cfg: RunConfig) -> str:
    return TASKS.lookup(cfg.task).load_class().main_metric


def _finished(cfg: RunConfig, trainer, wall_s: float = 0.0) -> bool:
    if cfg.max_minutes > 0 and wall_s >= 60 * cfg.max_minutes:
        return True
    if cfg.budget_steps > 0:
        return trainer.env_steps >= cfg.budget_steps
    return trainer.generation >= cfg.generations


def _progress_bar(cfg: RunConfig, trainer, enabled: bool):
    if not enabled or not sys.stderr.isatty():  # a log file would fill with \r-separated redraws
        return None
    from tqdm.auto import tqdm

    if cfg.budget_steps > 0:
        return tqdm(total=cfg.budget_steps, initial=min(trainer.env_steps, cfg.budget_steps), unit="step",
                    unit_scale=True, desc=cfg.task, dynamic_ncols=True)
    return tqdm(total=cfg.generations, initial=trainer.generation, unit="gen", desc=cfg.task, dynamic_ncols=True)


__all__ = ["LOGGERS", "OPTIMIZERS", "DivergedError", "RunError", "TensorBoardLog", "check_logger", "finish",
           "make_trainer", "register_optimizer", "train"]
