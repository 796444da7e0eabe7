"""The reproduction gate: each headline result of the README as a check that today's code must pass.

A headline is a training command (task, optimizer, overrides: the documented defaults unless it says otherwise), a
threshold on the run's agent (its best theta) and a wall-time target per run. ``metods-evo reproduce HEADLINE
--seeds N`` trains it from scratch on seeds 0..N-1 and prints a pass/fail table:

    <out_dir>/<headline>/seed<s>/   ordinary run directories (resumable: a killed gate continues where it stopped),
                                    each with eval-gate.json, the check below
    gate.md                         the table, the command and the commit it ran at

The check scores the agent on ``check_episodes`` fresh episodes (4000: on Harlow the mean of 1000 has a standard
error of ~0.04, and the first trial's coin toss alone moves it by +-0.06 between sets of 1000, so a 1000-episode
mean cannot tell an agent at 3.85 from one at 3.75), in every named episode group where the headline has them (e.g.
cheetah-dir's forward and backward runs). A seed passes when the check reaches the threshold; the headline passes
when every seed does. The run's own final evaluation (``eval.json``, 1000 episodes) is shown beside it. Wall times
are reported beside their target, not gated on: they depend on the machine.
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

from metods_evo.config import ConfigError, generation_seed, make_config
from metods_evo.evaluate import evaluate_theta, to_json
from metods_evo.experiments import PlannedRun, _duration, _execute, _status, _write_command, time_to_threshold
from metods_evo.runs import RunDir, atomic_write_bytes
from metods_evo.tasks import TASKS

GATE_STREAM = 6
"""Seed stream of the check's episodes (disjoint from training, evaluation and the ES streams)."""
CHECK_FILE = "eval-gate.json"


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
    check_episodes: int = 4000
    """Fresh episodes of the check (module docstring)."""
    claim: str = ""

    def command(self, seed: int | str = "S") -> str:
        sets = [arg for key, value in self.overrides for arg in ("--set", f"{key}={value}")]
        return shlex.join(["metods-evo", "train", "--task", self.task, "--optimizer", self.optimizer,
                           "--seed", str(seed), *sets])


HEADLINES: dict[str, Headline] = {
    "harlow-es": Headline("harlow", "es", 3.8, minutes=10, seeds=10,
                          claim="`metods-evo train` (ES on Harlow, the defaults) solves Harlow on every seed"),
    "harlow-es-eager": Headline("harlow", "es", 3.8, minutes=10, seeds=2, overrides=(("model.fused", "off"),),
                                claim="the same without the fused C++ kernels (other float rounding; a run takes "
                                      "about 13x the fused path's time, so 2 seeds)"),
    "harlow-es-random-ties": Headline("harlow", "es", 3.8, minutes=10, seeds=10, overrides=(("es.ties", "random"),),
                                      claim="the same with fitness ties broken at random"),
    "harlow-ppo": Headline("harlow", "ppo", 3.8, minutes=20, seeds=3,
                           claim="PPO (BPTT through the plastic dynamics) solves Harlow"),
    # 1000 check episodes: a cheetah-dir return's spread (~100) leaves a standard error of ~3 per direction.
    "cheetah-dir-es": Headline("cheetah-dir", "es", 100.0, minutes=60, seeds=3,
                               overrides=(("budget_steps", "40000000"),), groups=("forward", "backward"),
                               check_episodes=1000,
                               claim="ES (SNES, the cheetah-dir preset, 40 M env steps) infers the hidden direction: "
                                     "a return above 100 running forward and running backward"),
}

QUICK = (("generations", "2"), ("budget_steps", "0"), ("es.popsize", "8"), ("es.episodes", "2"),
         ("es.late_episodes", "0"), ("ppo.episodes", "8"), ("eval_every", "1"), ("eval_episodes", "8"),
         ("final_eval_episodes", "16"))
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


def _scores_of(report: dict[str, Any], metric: str, groups: tuple[str, ...]) -> dict[str, float]:
    scores = {"all": report["metrics"][metric]["mean"]}
    for group in groups:
        part = report.get("groups", {}).get(group)
        scores[group] = part["metrics"][metric]["mean"] if part else math.nan
    return scores


def _check_report(run: RunDir, cfg, episodes: int) -> dict[str, Any]:
    """The agent on ``episodes`` fresh episodes of the gate's stream, cached in the run as ``eval-gate.json``."""
    path = run.file(CHECK_FILE)
    if path.is_file():
        report = json.loads(path.read_text())
        if report.get("episodes") == episodes:
            return report
    seed = generation_seed(cfg.seed, 0, GATE_STREAM)
    report = evaluate_theta(cfg, run.load_agent_state()["theta"], episodes, seed)
    atomic_write_bytes(path, to_json(report).encode())
    return report


def check(name: str, runs: list[PlannedRun], quick: bool = False) -> list[dict[str, Any]]:
    """Each finished run's verdict: its final score(s), pass / fail, wall time, time to the threshold."""
    headline = HEADLINES[name]
    metric = TASKS[headline.task].load_class().main_metric
    rows = []
    for r in runs:
        run = RunDir(r.path)
        report = run.read_eval()
        checked = _check_report(run, r.cfg, 32 if quick else headline.check_episodes)
        scores = _scores_of(checked, metric, headline.groups)
        final = _scores_of(report, metric, headline.groups)
        gated = [scores[g] for g in headline.groups] if headline.groups else [scores["all"]]
        reached = time_to_threshold(run.read_metrics(), headline.threshold, f"eval/{metric}")
        rows.append({"seed": r.seed, "scores": scores, "final": final, "check_episodes": checked["episodes"],
                     "passed": all(s >= headline.threshold for s in gated),
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
    results = {name: check(name, runs, quick) for name, runs in planned.items()}
    table = format_gate(results, jobs, quick, commit)
    atomic_write_bytes(out / "gate.md", table.encode())
    return {"table": table, "results": results, "passed": all(r["passed"] for rows in results.values() for r in rows)}


def format_gate(results: dict[str, list[dict[str, Any]]], jobs: int, quick: bool, commit: str) -> str:
    lines = ["# Reproduction gate" + (" (--quick: a smoke run, the numbers mean nothing)" if quick else ""), "",
             f"Commit {commit}; each run trained from scratch. Check: the run's agent (its best theta) on "
             f"{_check_count(results)} fresh episodes per seed; in brackets, the run's own final evaluation "
             "(`eval.json`, 1000 fresh episodes)." + (f" {jobs} runs at once (wall times under contention)."
                                                     if jobs > 1 else ""), "",
             "| headline | passed | check per seed (final evaluation) | threshold | wall time per run (max) | "
             "target | env steps to threshold (median) | wall time to threshold (median) |",
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
    mark = "" if row["passed"] else " ✗"
    if not headline.groups:
        return f"{row['scores']['all']:.3f} ({row['final']['all']:.3f}){mark}"
    check = "/".join(f"{row['scores'][g]:.1f}" for g in headline.groups)
    final = "/".join(f"{row['final'][g]:.1f}" for g in headline.groups)
    return f"{check} ({final}){mark}"


def _check_count(results: dict[str, list[dict[str, Any]]]) -> str:
    counts = sorted({r["check_episodes"] for rows in results.values() for r in rows})
    return " / ".join(f"{c:,}" for c in counts)


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
