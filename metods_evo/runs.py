"""Run directories: one self-describing folder per training run.

    runs/<task>__<optimizer>__s<seed>__<time>/
        config.json     the full RunConfig (enough to resume or re-evaluate)
        metrics.csv     one row per generation / iteration
        checkpoint.pt   resumable state, written atomically every K generations and at the end
        agent.pt        the run's best theta so far (what ``load_agent`` returns)
        last.pt         the theta at the latest checkpoint: the final theta once the run has ended
        eval.json       final evaluation of the best theta
        curves.png      training curves

Every file except metrics.csv is written to a temporary name and renamed into place, so a run
killed at any moment (even SIGKILL) leaves the previous complete version of it. metrics.csv is
appended a row per generation; resuming cuts it back to the checkpoint's generation.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from metods_evo.config import ConfigError, RunConfig, check_values, validate_task
from metods_evo.models import build_model
from metods_evo.optimizers import declaration

CONFIG, METRICS, CHECKPOINT, AGENT, LAST, EVAL, CURVES = (
    "config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "last.pt", "eval.json", "curves.png")
AGENT_CHOICES = ("best", "last")  # which theta of a run to load: agent.pt's, or last.pt's


class RunError(ConfigError):
    """A missing, incomplete or corrupt run directory (one-line CLI error, exit code 2)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def default_run_name(cfg: RunConfig) -> str:
    return f"{cfg.task}__{declaration(cfg.optimizer).run_tag(cfg)}__s{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, cfg: RunConfig, out: str | None = None, base: str = "runs") -> RunDir:
        """A new run directory; an existing ``out`` is refused so no run is ever overwritten."""
        if out is not None:
            if not str(out).strip():
                raise RunError("--out is empty; give the new run directory's path")
            path = Path(out)
            if path.exists():
                raise RunError(f"--out {out} already exists; pick a new directory or --resume it")
        else:
            path = Path(base) / default_run_name(cfg)
            suffix = 1
            while path.exists():
                path = Path(base) / f"{default_run_name(cfg)}-{suffix}"
                suffix += 1
        try:
            path.mkdir(parents=True)
        except OSError as err:  # a parent that is a file, no permission, a read-only disk
            raise RunError(f"cannot create the run directory {path}: {err.strerror or err}") from None
        run = cls(path)
        atomic_write_bytes(run.file(CONFIG), cfg.to_json().encode())
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"no run directory at {path}")
        if not run.file(CONFIG).is_file():
            raise RunError(f"{path} is not a run directory (no {CONFIG})")
        run.config()  # fail early on a corrupt config
        return run

    def save_config(self, cfg: RunConfig) -> None:
        atomic_write_bytes(self.file(CONFIG), cfg.to_json().encode())

    def config(self) -> RunConfig:
        """The run's config, its shape, types and values checked (``check_values``; the device, the task and the
        memory are the caller's to check, e.g. a GPU run evaluated on a CPU machine)."""
        path = self.file(CONFIG)
        try:
            data = json.loads(path.read_text())
        except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RunError(f"corrupt {path}: {err}") from None
        except OSError as err:
            raise RunError(f"cannot read {path}: {err.strerror or err}") from None
        try:
            cfg = RunConfig.from_dict(data)
            check_values(cfg)
        except ConfigError as err:
            raise RunError(f"{path}: {err}") from None
        return cfg

    def check_size(self, cfg: RunConfig, size: int, source: str) -> None:
        """``RunError`` unless the model ``cfg`` describes has ``size`` parameters, as ``source`` (a theta of this
        run) has: a config.json edited or replaced after training."""
        expected = build_model(cfg, validate_task(cfg.task, cfg.task_options)).num_params
        if expected != size:
            raise RunError(f"{self.file(CONFIG)} does not describe this run: its model has {expected:,} parameters, "
                           f"{source} has {size:,}")

    def check_resumable(self, cfg: RunConfig) -> None:
        """``RunError`` unless ``cfg`` continues this run's training state: the checkpoint's trainer kind and the
        size of its theta. Only reads: a resume calls it before it changes anything."""
        checkpoint = self.load_checkpoint()
        if checkpoint is not None:
            written_by = checkpoint_optimizer(checkpoint, cfg.optimizer)
            if written_by != cfg.optimizer:
                article = "an" if written_by[:1] in "aeiou" else "a"
                problem = (f"it says optimizer {cfg.optimizer}, {CHECKPOINT} holds the state of {article} {written_by} "
                           "trainer")
            else:
                problem = declaration(cfg.optimizer).resume_problem(cfg, checkpoint["trainer"])
            if problem:
                raise RunError(f"{self.file(CONFIG)} does not describe this run: {problem}")
        for name in (LAST, AGENT):  # small files with the whole theta; the checkpoint's may be a pickled searcher
            if self.file(name).is_file():
                self.check_size(cfg, self.load_agent_state("last" if name == LAST else "best")["theta"].numel(), name)
                return
        if checkpoint is not None:
            self.check_size(cfg, checkpoint_center(checkpoint["trainer"], written_by).numel(), CHECKPOINT)

    def discard_if_untrained(self) -> None:
        """Remove a run directory that holds nothing but its config.json: a new run that failed before its first
        generation leaves nothing behind."""
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} <= {CONFIG}:
            self.file(CONFIG).unlink(missing_ok=True)
            self.path.rmdir()

    # ------------------------------------------------------------------ checkpoints and agent
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(self.file(CHECKPOINT), state)

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.file(CHECKPOINT)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise RunError(f"corrupt checkpoint {path}: {type(err).__name__}") from None
        if not (isinstance(state, dict) and {"trainer", "best", "wall_s", "torch_rng"} <= set(state)
                and isinstance(state["trainer"], dict) and {"generation", "env_steps"} <= set(state["trainer"])):
            raise RunError(f"corrupt checkpoint {path}: not a training state")
        return state

    def save_agent(self, theta: torch.Tensor, info: dict[str, Any], *, last: bool = False) -> None:
        """Write the best theta (agent.pt) or, with ``last``, the theta of the latest checkpoint (last.pt)."""
        atomic_torch_save(self.file(LAST if last else AGENT), {"theta": theta.detach().cpu(), **info})

    def load_agent_state(self, which: str = "best") -> dict[str, Any]:
        """``{"theta", "generation", ...}`` of the run's best theta (agent.pt) or its last one (last.pt).

        Runs trained before last.pt existed still have a last theta where they kept checkpoint.pt: the center of
        the checkpoint's trainer state.
        """
        if which not in AGENT_CHOICES:
            raise ConfigError(f"agent must be one of {', '.join(AGENT_CHOICES)}, got {which!r}")
        path = self.file(AGENT if which == "best" else LAST)
        if which == "last" and not path.is_file():
            checkpoint = self.load_checkpoint()
            if checkpoint is None:
                raise RunError(f"{self.path} has no last theta ({LAST} and {CHECKPOINT} missing)")
            trainer = checkpoint["trainer"]
            written_by = checkpoint_optimizer(checkpoint, self.config().optimizer)
            return {"theta": checkpoint_center(trainer, written_by), "generation": trainer["generation"],
                    "env_steps": trainer["env_steps"]}
        if not path.is_file():
            raise RunError(f"{self.path} has no trained agent yet ({path.name} missing)")
        try:  # tensors and plain values only: an agent file, unlike a checkpoint, never runs code when loaded
            state = torch.load(path, map_location="cpu", weights_only=True)
            state["theta"]
        except Exception as err:  # noqa: BLE001
            raise RunError(f"corrupt agent file {path}: {type(err).__name__}") from None
        return state

    def read_eval(self) -> dict[str, Any]:
        """The run's final evaluation report (eval.json); a one-line RunError when it is missing or corrupt."""
        try:
            return json.loads(self.file(EVAL).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunError(f"{self.file(EVAL)} is missing or corrupt: {err}") from None

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_bytes(self.file(name), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, row: dict[str, Any]) -> None:
        path = self.file(METRICS)
        header = self._metrics_header()
        if header is not None and not set(row) <= set(header):
            header = self._widen_metrics(header, [k for k in row if k not in header])
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header or list(row), restval="", lineterminator="\n")
            if header is None:
                writer.writeheader()
            writer.writerow({k: _fmt(v) for k, v in row.items()})

    def _metrics_header(self) -> list[str] | None:
        path = self.file(METRICS)
        if not path.exists():
            return None
        with open(path, newline="") as handle:
            return next(csv.reader(handle), None)

    def _widen_metrics(self, header: list[str], new_columns: list[str]) -> list[str]:
        """A resumed run whose trainer now logs more columns (a newer metods-evo): the file is rewritten with the
        new columns appended, empty on the old rows, so that no row ever lands under the wrong header."""
        path = self.file(METRICS)
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        wide = header + new_columns
        self._rewrite_metrics([wide, *(row + [""] * len(new_columns) for row in rows if len(row) == len(header))])
        return wide

    def _rewrite_metrics(self, rows: list[list[str]]) -> None:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        atomic_write_bytes(self.file(METRICS), out.getvalue().encode())

    def read_metrics(self) -> list[dict[str, float]]:
        path = self.file(METRICS)
        if not path.exists():
            return []
        with open(path, newline="") as handle:
            rows = []
            for row in csv.DictReader(handle):
                if None in row or any(v is None for v in row.values()):
                    break  # a line cut short by a kill
                rows.append({k: float(v) if v not in ("", None) else math.nan for k, v in row.items()})
            return rows

    def truncate_metrics(self, generation: int) -> None:
        """Keep the rows up to ``generation`` (the last checkpoint), byte for byte; later ones (and a line cut
        short by a kill) are dropped and recomputed on resume."""
        path = self.file(METRICS)
        if not path.exists():
            return
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            path.unlink()
            return
        header, kept = rows[0], [rows[0]]
        for row in rows[1:]:
            if len(row) != len(header) or int(row[0]) > generation:
                break
            kept.append(row)
        if len(kept) == 1:
            path.unlink()
            return
        self._rewrite_metrics(kept)


def checkpoint_optimizer(checkpoint: dict[str, Any], configured: str) -> str:
    """The optimizer that wrote ``checkpoint``: recorded in it (``train.train`` writes ``"optimizer"``); in a
    checkpoint of an earlier version, told by the keys of its trainer state (``configured`` where they fit it)."""
    if "optimizer" in checkpoint:
        return checkpoint["optimizer"]
    trainer = checkpoint["trainer"]
    kinds = ("hybrid",) if "mode" in trainer else ("a2c", "ppo") if "theta" in trainer else ("es",)
    return configured if configured in kinds else " / ".join(kinds)


def checkpoint_center(trainer: dict[str, Any], optimizer: str | None = None) -> torch.Tensor:
    """The theta a trainer's checkpointed state stands for (what its ``center()`` returned): asked of ``optimizer``'s
    declaration (``center_of``), or told by the state's keys where it declares none (a plugin's factory)."""
    if optimizer is not None:
        try:
            return declaration(optimizer).center_of(trainer)
        except NotImplementedError:
            pass
    if "theta" in trainer:  # policy gradient (A2C, PPO)
        return trainer["theta"].detach().clone().cpu()
    if "mode" in trainer:  # hybrid: its gradient learner once it has one, else its ES searcher
        return checkpoint_center(trainer["pg"] if trainer["pg"] is not None else trainer["es"])
    if "starts" in trainer:  # es.starts > 1: the leading searcher (MultiStartES.leader)
        scores, starts = trainer["scores"], trainer["starts"]
        leader = min(scores, key=lambda k: (-scores[k], k)) if scores else min(starts)
        return checkpoint_center(starts[leader])
    searcher = pickle.loads(trainer["searcher"])  # ES: the evotorch searcher, pickled whole
    return searcher.status["center"].detach().clone().cpu()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)
