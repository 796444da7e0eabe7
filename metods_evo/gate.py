"""The reproduction gate: each headline result of the README as a check that today's code must pass.

A headline is a training command (task, optimizer, overrides: the documented defaults unless it says otherwise), a
threshold on the final evaluation (``eval.json``: the run's best theta on 1000 fresh episodes, or on each named
episode group, e.g. cheetah-dir's forward and backward runs) and a wall-time target per run. ``metods-evo
reproduce HEADLINE --seeds N`` trains it from scratch on seeds 0..N-1 and prints a pass/fail table:

    <out_dir>/<headline>/seed<s>/   ordinary run directories (resumable: a killed gate continues where it stopped)
    gate.md                         the table, the command and the commit it ran at

A seed passes when its final evaluation reaches the threshold (in every group); the headline passes when every
seed does. Wall times are reported beside their target, not gated on: they depend on the machine.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metods_evo.config import ConfigError, make_config
from metods_evo.experiments import PlannedRun, _duration, _execute, _status, _write_command, time_to_threshold
from metods_evo.runs import EVAL, RunDir, RunError, atomic_write_bytes
from metods_evo.tasks import TASKS


@dataclass(frozen=True)
class Headline:
    task: str
    optimizer: str
    threshold: float
    """The final evaluation's main metric must reach this (in each of ``groups`` when given)."""
    minutes: float
    """Wall-time target of one run (reported beside each run's time)."""
    seeds: int
    """Seeds the README's claim covers (0..seeds-1); ``--seeds`` may ask for fewer or more."""
    overrides: tuple[tuple[str, str], ...] = ()
    groups: tuple[str, ...] = ()
    """Episode groups (``Task.episode_groups``) that must each reach the threshold, e.g. both directions."""
    claim: str = ""

    def command(self, seed: int | str = "S") -> str:
        sets = [arg for key, value in self.overrides for arg in ("--set", f"{key}={value}")]
        return shlex.join(["metods-evo", "train", "--task", self.task, "--optimizer", self.optimizer,
                           "--seed", str(seed), *sets])


HEADLINES: dict[str, Headline] = {
    "harlow-es": Headline("harlow", "es", 3.8, minutes=10, seeds=10,
                          claim="`metods-evo train` (ES on Harlow, the defaults) solves Harlow on every seed"),
    "harlow-es-eager": Headline("harlow", "es", 3.8, minutes=10, seeds=10, overrides=(("model.fused", "off"),),
                                claim="the same without the fused C++ kernels (other float rounding)"),
    "harlow-es-random-ties": Headline("harlow", "es", 3.8, minutes=10, seeds=10, overrides=(("es.ties", "random"),),
                                      claim="the same with fitness ties broken at random"),
    "harlow-ppo": Headline("harlow", "ppo", 3.8, minutes=10, seeds=3,
                           claim="PPO (BPTT through the plastic dynamics) solves Harlow"),
}

QUICK = (("generations", "2"), ("es.popsize", "8"), ("es.episodes", "2"), ("es.late_episodes", "0"),
         ("ppo.episodes", "8"), ("eval_every", "1"), ("eval_episodes", "8"), ("final_eval_episodes", "16"))
"""``--quick``: a seconds-long smoke run of the gate's machinery (its numbers mean nothing)."""


def plan(name: str, seeds: int, out: Path, quick: bool = False) -> list[PlannedRun]:
    """The runs of headline ``name`` (validated, their state on disk found); writes nothing."""
    if name not in HEADLINES:
        raise ConfigError(f"unknown headline {name!r}; choose from {', '.join(HEADLINES)}")
    headline = HEADLINES[name]
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1 (got {seeds})")
    overrides = dict(headline.overrides) | (dict(QUICK) if quick else {})
    runs = []
    for seed in range(seeds):
        cfg = make_config(headline.task, headline.optimizer, overrides | {"seed": str(seed)})
        path = out / name / f"seed{seed}"
        runs.append(PlannedRun(name, seed, cfg, path, _status(cfg, path)))
    return runs


def check(name: str, runs: list[PlannedRun]) -> list[dict[str, Any]]:
    """Each finished run's verdict: its final score(s), pass / fail, wall time, time to the threshold."""
    headline = HEADLINES[name]
    metric = TASKS[headline.task].load_class().main_metric
    rows = []
    for r in runs:
        run = RunDir(r.path)
        try:
            report = json.loads(run.file(EVAL).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunError(f"{run.file(EVAL)} is missing or corrupt: {err}") from None
        scores = {"all": report["metrics"][metric]["mean"]}
        for group in headline.groups:
            part = report.get("groups", {}).get(group)
            scores[group] = part["metrics"][metric]["mean"] if part else math.nan
        gated = [scores[g] for g in headline.groups] if headline.groups else [scores["all"]]
        reached = time_to_threshold(run.read_metrics(), headline.threshold, f"eval/{metric}")
        rows.append({"seed": r.seed, "scores": scores, "passed": all(s >= headline.threshold for s in gated),
                     "wall_s": report["wall_s"], "env_steps": report["env_steps"],
                     "threshold_env_steps": reached[0] if reached else None,
                     "threshold_wall_s": reached[1] if reached else None, "path": str(r.path)})
    return rows


def gate(names: list[str], out_dir: str | os.PathLike, *, seeds: int | None = None, quick: bool = False,
         jobs: int = 1, progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train (or resume) every headline's seeds, then write and return the pass/fail table."""
    out = Path(out_dir)
    commit = _commit()  # the code that trains, read before anything can change it
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1 (got {jobs})")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    for name in names:
        if name not in HEADLINES:
            raise ConfigError(f"unknown headline {name!r}; choose from {', '.join(HEADLINES)}")
    planned = {name: plan(name, seeds or HEADLINES[name].seeds, out, quick) for name in names}
    out.mkdir(parents=True, exist_ok=True)
    again = shlex.join(["metods-evo", "reproduce", ",".join(names), "--out", str(out),
                        *(["--seeds", str(seeds)] if seeds else []), *(["--quick"] if quick else []),
                        *(["--jobs", str(jobs)] if jobs > 1 else [])])
    _write_command(out, command, again, f"reproduction gate: {', '.join(names)}", "gate", jobs)
    every = [r for runs in planned.values() for r in runs]
    _execute([r for r in every if r.status != "finished"], len(every), progress, jobs)
    results = {name: check(name, runs) for name, runs in planned.items()}
    table = format_gate(results, jobs, quick, commit)
    atomic_write_bytes(out / "gate.md", table.encode())
    return {"table": table, "results": results, "passed": all(r["passed"] for rows in results.values() for r in rows)}


def format_gate(results: dict[str, list[dict[str, Any]]], jobs: int, quick: bool, commit: str) -> str:
    lines = ["# Reproduction gate" + (" (--quick: a smoke run, the numbers mean nothing)" if quick else ""), "",
             f"Commit {commit}; each run trained from scratch; final score: the run's best theta on its final "
             "evaluation's fresh episodes (`eval.json`)." + (f" {jobs} runs at once (wall times under contention)."
                                                              if jobs > 1 else ""), "",
             "| headline | passed | final score per seed | threshold | wall time per run (max) | target | "
             "env steps to threshold (median) | wall time to threshold (median) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        headline = HEADLINES[name]
        passed = sum(r["passed"] for r in rows)
        scores = ", ".join(_scores(r, headline) for r in rows)
        reached = [r for r in rows if r["threshold_env_steps"] is not None]
        steps = _median([r["threshold_env_steps"] for r in reached])
        wall = _median([r["threshold_wall_s"] for r in reached])
        steps_text = "never" if steps is None else f"{steps:,.0f}"
        wall_text = "never" if wall is None else _duration(wall)
        lines.append(f"| {name} | **{passed}/{len(rows)}** | {scores} | ≥ {headline.threshold:g} | "
                     f"{_duration(max(r['wall_s'] for r in rows))} | {headline.minutes:g} min | {steps_text} | "
                     f"{wall_text} |")
    lines += ["", "Commands (S = the seed):", ""]
    lines += [f"- {name}: `{HEADLINES[name].command()}` — {HEADLINES[name].claim}" for name in results]
    return "\n".join(lines) + "\n"


def _scores(row: dict[str, Any], headline: Headline) -> str:
    if not headline.groups:
        return f"{row['scores']['all']:.3f}" + ("" if row["passed"] else " ✗")
    parts = "/".join(f"{row['scores'][g]:.1f}" for g in headline.groups)
    return parts + ("" if row["passed"] else " ✗")


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _commit() -> str:
    """The commit of the code that ran (``+dirty`` with uncommitted changes), or "unknown" outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "metods_evo"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


__all__ = ["HEADLINES", "Headline", "gate"]
