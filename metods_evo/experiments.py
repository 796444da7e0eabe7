"""Experiments made of many runs: ``compare`` trains several optimizers over several seeds at one
env-step budget, then tabulates and plots what they reached and how fast; ``ablate`` does the same for
variants of the model (``ABLATIONS``). Both are lists of *arms* (a label, an optimizer, config overrides).

    <out_dir>/
        <arm>/seed<s>/         one ordinary run directory per (arm, seed); arm = optimizer or variant
        compare.csv            one row per arm (machine-readable); ablate writes ablate.csv / .md / .png
        compare.md             the same table, plus one row per run
        compare.png            periodic evaluation against env steps and against wall time
        COMMAND.md             the command line, the date, the machine

``compare`` resumes: finished runs (with ``eval.json``) are skipped, unfinished ones continue from
their checkpoint, so a killed compare is completed by re-running the same command (``--out`` the
same directory). Re-running a finished compare with another ``--threshold`` only re-tabulates.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metods_evo.config import SECTIONS, ConfigError, RunConfig, make_config
from metods_evo.models import MODELS, config_fields
from metods_evo.optimizers import OPTIMIZERS, declaration
from metods_evo.runs import CONFIG, EVAL, RunDir, atomic_write_bytes
from metods_evo.tasks import TASKS
from metods_evo.train import train

COMPARE_CSV, COMPARE_MD, COMPARE_PNG, COMMAND_MD = "compare.csv", "compare.md", "compare.png", "COMMAND.md"

# What "solved" means per task, on the task's main metric (the periodic evaluation of the current theta):
# Harlow's optimum is 4.0 ("solved": >= 3.8); maze 8x8 is cumulative reward in 100 steps.
DEFAULT_THRESHOLDS: dict[str, float | None] = {"harlow": 3.8, "maze": 60.0}

# Periodic evaluations per run: at the same env-step marks for every optimizer (unless --set eval_every...).
EVALUATIONS = 50

# Set per run by compare itself: an override of these would be silently replaced, so it is refused.
PER_RUN_KEYS = ("seed", "budget_steps")


# Model ablations (the paper's maze ablation plus W0), each one change from the task's documented defaults.
# A variant that equals the defaults for a task (e.g. write=linear is maze's default) is dropped there.
ABLATIONS: dict[str, dict[str, str]] = {
    "metods": {},
    "depth-1": {"model.depth": "1"},
    "depth-2": {"model.depth": "2"},
    "depth-3": {"model.depth": "3"},
    "scalar-alpha": {"model.alpha": "scalar"},
    "write-hebbian": {"model.write": "hebbian"},
    "write-linear": {"model.write": "linear"},
    "write-mlp": {"model.write": "mlp"},
    "w0-zero": {"model.w0": "zero"},
    "w0-learnt": {"model.w0": "learnt"},
    "w0-random": {"model.w0": "random"},
}


@dataclass(frozen=True)
class Arm:
    """One line of an experiment's table: ``label`` names its directory and row."""

    label: str
    optimizer: str
    overrides: tuple[tuple[str, str], ...] = ()


@dataclass
class PlannedRun:
    arm: str
    seed: int
    cfg: RunConfig
    path: Path
    status: str  # "new" | "unfinished" | "finished"


def compare(task: str, optimizers: Iterable[str], seeds: int, budget_steps: int, out_dir: str | os.PathLike,
            overrides: dict[str, Any] | None = None, threshold: float | None = None, progress: bool = True,
            jobs: int = 1, command: str | None = None) -> dict[str, Any]:
    """Train every optimizer over seeds 0..seeds-1 at ``budget_steps`` env steps; write the table and plot.

    ``overrides`` (``--set`` pairs) apply to every run. ``threshold`` defaults to ``DEFAULT_THRESHOLDS[task]``
    (None: no time-to-threshold columns). ``jobs > 1`` trains that many runs at once in separate processes,
    each single-threaded; their wall times are then measured under contention for the machine's cores.
    ``command`` is recorded in COMMAND.md (the CLI passes its command line).

    Every input is checked, and every existing run directory compared with the requested config,
    before anything is written. Returns the summary (also written to compare.csv / compare.md).
    """
    optimizers = list(optimizers)
    _check_optimizers(optimizers)
    arms = [Arm(name, name) for name in optimizers]
    return run_arms("compare", task, arms, seeds, budget_steps, out_dir, overrides, threshold, progress, jobs,
                    command, cli_command(task, optimizers, seeds, budget_steps, Path(out_dir), overrides, threshold,
                                         jobs))


def ablate(task: str, variants: Iterable[str] | None, seeds: int, budget_steps: int, out_dir: str | os.PathLike,
           optimizer: str = "ppo", overrides: dict[str, Any] | None = None, threshold: float | None = None,
           progress: bool = True, jobs: int = 1, command: str | None = None) -> dict[str, Any]:
    """Train each model variant (``ABLATIONS``; None = all that differ from the task's defaults) with
    ``optimizer`` over seeds 0..seeds-1 at ``budget_steps``; writes ablate.csv / ablate.md / ablate.png."""
    arms = ablation_arms(task, optimizer, variants, overrides)
    again = shlex.join(["metods-evo", "ablate", "--task", task, "--optimizer", optimizer, "--variants",
                        ",".join(a.label for a in arms), "--seeds", str(seeds), "--budget-steps", str(budget_steps),
                        "--out", str(out_dir), *[f"--set={k}={v}" for k, v in (overrides or {}).items()],
                        *(["--threshold", f"{threshold:g}"] if threshold is not None else []),
                        *(["--jobs", str(jobs)] if jobs > 1 else [])])
    return run_arms("ablate", task, arms, seeds, budget_steps, out_dir, overrides, threshold, progress, jobs,
                    command, again)


def ablation_arms(task: str, optimizer: str, variants: Iterable[str] | None,
                  overrides: dict[str, Any] | None = None) -> list[Arm]:
    """The ablation arms for ``task``; variants identical to the task's defaults are dropped (asked-for ones
    are refused, since their row would duplicate ``metods``)."""
    _check_optimizers([optimizer])
    asked = list(variants) if variants is not None else None
    for name in asked or []:
        if name not in ABLATIONS:
            raise ConfigError(f"unknown variant {name!r}; choose from {', '.join(ABLATIONS)}")
    if asked is not None and len(set(asked)) != len(asked):
        raise ConfigError(f"variants are listed twice: {','.join(asked)}")
    base = make_config(task, optimizer, {k: str(v) for k, v in (overrides or {}).items()})
    arms = []
    for name in asked if asked is not None else ABLATIONS:
        change = ABLATIONS[name]
        if change and make_config(task, optimizer, {**{k: str(v) for k, v in (overrides or {}).items()},
                                                    **change}).to_json() == base.to_json():
            if asked is not None:
                raise ConfigError(f"variant {name!r} is {task}'s default model (the 'metods' row)")
            continue
        arms.append(Arm(name, optimizer, tuple(change.items())))
    return arms


def _check_optimizers(optimizers: list[str]) -> None:
    if not optimizers:
        raise ConfigError("give at least one optimizer")
    for name in optimizers:
        OPTIMIZERS.lookup(name)
    if len(set(optimizers)) != len(optimizers):
        raise ConfigError(f"optimizers are listed twice: {','.join(optimizers)}")


def run_arms(kind: str, task: str, arms: list[Arm], seeds: int, budget_steps: int, out_dir: str | os.PathLike,
             overrides: dict[str, Any] | None, threshold: float | None, progress: bool, jobs: int,
             command: str | None, again: str) -> dict[str, Any]:
    """Train every arm over seeds, then write ``<kind>.csv / .md / .png`` and COMMAND.md (``again`` is the
    command that resumes or re-tabulates it)."""
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1 (got {jobs})")
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(task)
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number (got {threshold})")
    out = Path(out_dir)
    runs = plan_runs(task, arms, seeds, budget_steps, out, overrides)
    labels = [a.label for a in arms]

    out.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"{kind} directory: {out} (re-run the same command with --out {out} to resume it)", file=sys.stderr)
    _write_command(out, command, again, _title(task, labels, seeds, budget_steps), kind, jobs)
    _execute([r for r in runs if r.status != "finished"], len(runs), progress, jobs)
    summary = summarize(task, runs, threshold)
    summary |= {"out_dir": str(out), "budget_steps": budget_steps, "jobs": jobs,
                "label": {"compare": "optimizer", "ablate": "variant"}.get(kind, "agent")}
    if kind == "ablate":
        summary["changes"] = {a.label: ", ".join(f"{k}={v}" for k, v in a.overrides) or "defaults" for a in arms}
    atomic_write_bytes(out / f"{kind}.csv", format_csv(summary).encode())
    summary["table"] = format_table(summary)
    atomic_write_bytes(out / f"{kind}.md", format_markdown(summary).encode())
    try:
        from metods_evo.plots import plot_compare

        curves = {label: [RunDir(r.path).read_metrics() for r in runs if r.arm == label] for label in labels}
        plot_compare(curves, out / f"{kind}.png", title=_title(task, labels, seeds, budget_steps),
                     eval_key=f"eval/{summary['metric']}", threshold=threshold)
    except ImportError:  # matplotlib is a dependency, but a broken install must not lose the table
        pass
    return summary


# ---------------------------------------------------------------------------------------------- planning
def plan_runs(task: str, arms: list[Arm], seeds: int, budget_steps: int, out: Path,
              overrides: dict[str, Any] | None = None) -> list[PlannedRun]:
    """Validate everything and find each run's state on disk; writes nothing."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(sorted(TASKS))}")
    if not arms:
        raise ConfigError("nothing to run")
    if seeds < 1 or budget_steps < 1:
        raise ConfigError(f"seeds and budget_steps must be >= 1 (got {seeds}, {budget_steps})")
    overrides = {k: str(v) for k, v in (overrides or {}).items()}
    for key in PER_RUN_KEYS:
        if key in overrides:
            raise ConfigError(f"--set {key} is chosen per run by compare (--seeds / --budget-steps)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if (out / CONFIG).exists():
        raise ConfigError(f"--out {out} is a run directory, not a compare directory")

    runs = []
    for seed in range(seeds):  # seed-major: an experiment stopped half-way still has every arm's first seeds
        for arm in arms:
            per_run = {"seed": str(seed), "budget_steps": str(budget_steps)}
            if "eval_every" not in overrides and "eval_every_steps" not in overrides:
                per_run["eval_every_steps"] = str(max(1, budget_steps // EVALUATIONS))  # same marks for all
            # arm overrides come last: an arm may set its own budget (e.g. an untrained reference agent)
            cfg = make_config(task, arm.optimizer, overrides | per_run | dict(arm.overrides))
            path = out / arm.label / f"seed{seed}"
            runs.append(PlannedRun(arm.label, seed, cfg, path, _status(cfg, path)))
    return runs


def _status(cfg: RunConfig, path: Path) -> str:
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):  # empty: killed right after mkdir
        return "new"
    run = RunDir.open(path)  # RunError for anything that is not a run directory
    differences = _differences(_relevant(run.config()), _relevant(cfg))
    if differences:
        shown = "; ".join(f"{k}: {old!r} there, {new!r} requested" for k, old, new in differences[:3])
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise ConfigError(f"{path} was run with another config ({shown}{more}); use a new --out")
    if (path / EVAL).is_file():
        return "finished"
    run.check_resumable(cfg)  # a checkpoint it cannot continue is refused now, before any run is trained
    return "unfinished"


# The config sections each optimizer reads; the others (e.g. ``ppo`` for an ES run) cannot change its result,
# so a later change of their defaults must not make a finished run look different.
OPTIMIZER_SECTIONS = tuple(section for section in SECTIONS if section != "model")


def _relevant(cfg: RunConfig) -> dict[str, Any]:
    """The parts of ``cfg`` that can change the run: its optimizer's sections and its model kind's fields (so that
    a finished RL2 run stays valid when MetODS's defaults change)."""
    data = json.loads(cfg.to_json())
    used = declaration(cfg.optimizer).sections or OPTIMIZER_SECTIONS
    data = {k: v for k, v in data.items() if k not in OPTIMIZER_SECTIONS or k in used}
    fields = config_fields(cfg.model.kind) if cfg.model.kind in MODELS else None
    if fields is not None:
        data["model"] = {k: v for k, v in data["model"].items() if k == "kind" or k in fields}
    return data


def _differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


# ---------------------------------------------------------------------------------------------- training
def _train_one(cfg: RunConfig, path: str, resume: bool, progress: bool) -> str:
    """One run, new or continued; top-level so that worker processes can run it."""
    path = Path(path)
    if resume:
        run = RunDir.open(path)
    else:
        if path.is_dir():
            path.rmdir()  # the empty directory of a compare killed between mkdir and config.json
        run = RunDir.create(cfg, str(path))
    train(cfg, run, resume=resume, progress=progress)
    return str(path)


def _execute(pending: list[PlannedRun], total: int, progress: bool, jobs: int) -> None:
    done = total - len(pending)
    if progress and done:
        print(f"{done}/{total} runs already finished (skipped)", file=sys.stderr)
    if jobs == 1 or len(pending) <= 1:
        for i, r in enumerate(pending, start=done + 1):
            if progress:
                verb = "resuming" if r.status == "unfinished" else "training"
                print(f"[{i}/{total}] {verb} {r.arm} seed {r.seed} -> {r.path}", file=sys.stderr)
            _train_one(r.cfg, str(r.path), r.status == "unfinished", progress)
        return

    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    # spawn: a fresh interpreter per worker (no forked torch / OpenMP state); each run keeps cfg.threads.
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_train_one, r.cfg, str(r.path), r.status == "unfinished", False): r for r in pending}
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
            for future in finished:
                future.result()  # re-raises a worker's error here
                done += 1
                if progress:
                    r = futures[future]
                    print(f"[{done}/{total}] finished {r.arm} seed {r.seed} -> {r.path}", file=sys.stderr)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on error: runs in flight finish, the others are not started


# ---------------------------------------------------------------------------------------------- summary
def time_to_threshold(rows: list[dict[str, float]], threshold: float | None,
                      eval_key: str = "eval/return") -> tuple[float, float] | None:
    """(env_steps, wall_s) of the first periodic evaluation that reached ``threshold``; None if none did."""
    if threshold is None:
        return None
    for row in rows:
        value = row.get(eval_key, math.nan)
        if not math.isnan(value) and value >= threshold:
            return row["env_steps"], row["wall_s"]
    return None


def summarize(task: str, runs: list[PlannedRun], threshold: float | None) -> dict[str, Any]:
    """Per run and per arm: final evaluation (eval.json), steps and time used, time to threshold."""
    metric = TASKS[task].load_class().main_metric
    per_run = []
    for r in runs:
        run = RunDir(r.path)
        report = run.read_eval()
        reached = time_to_threshold(run.read_metrics(), threshold, f"eval/{metric}")
        final = report["metrics"][metric]
        per_run.append({"arm": r.arm, "seed": r.seed, "path": str(r.path),
                        "metrics": {name: value["mean"] for name, value in report["metrics"].items()},
                        "final": final["mean"], "final_std_episodes": final["std"], "episodes": report["episodes"],
                        "env_steps": report["env_steps"], "wall_s": report["wall_s"],
                        "threshold_env_steps": reached[0] if reached else None,
                        "threshold_wall_s": reached[1] if reached else None})
    rows = []
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = [p for p in per_run if p["arm"] == arm]
        finals = [p["final"] for p in mine]
        hits = [p for p in mine if p["threshold_env_steps"] is not None]
        rows.append({
            "arm": arm, "seeds": len(mine),
            "final_mean": statistics.fmean(finals),
            "final_std": statistics.stdev(finals) if len(finals) > 1 else math.nan,  # sample std (n - 1)
            "env_steps": statistics.fmean(p["env_steps"] for p in mine),
            "wall_s": statistics.fmean(p["wall_s"] for p in mine),
            "reached": None if threshold is None else len(hits),
            "threshold_env_steps": statistics.fmean(p["threshold_env_steps"] for p in hits) if hits else None,
            "threshold_wall_s": statistics.fmean(p["threshold_wall_s"] for p in hits) if hits else None,
        })
    return {"task": task, "metric": metric, "threshold": threshold, "seeds": max(r.seed for r in runs) + 1,
            "rows": rows, "runs": per_run}


# ---------------------------------------------------------------------------------------------- output
def format_csv(summary: dict[str, Any]) -> str:
    """One row per arm. Time-to-threshold cells: "n/a" without a threshold, empty if no seed reached it."""
    m = summary["metric"]
    header = [summary.get("label", "optimizer"), "seeds", f"final_{m}_mean", f"final_{m}_std", "env_steps_mean",
              "wall_s_mean", "threshold", "seeds_reached", "env_steps_to_threshold", "wall_s_to_threshold"]
    lines = [",".join(header)]
    for row in summary["rows"]:
        if summary["threshold"] is None:
            tail = ["n/a"] * 4
        else:
            tail = [repr(summary["threshold"]), f"{row['reached']}/{row['seeds']}",
                    *("" if row[k] is None else repr(row[k]) for k in ("threshold_env_steps", "threshold_wall_s"))]
        std = "" if math.isnan(row["final_std"]) else repr(row["final_std"])
        lines.append(",".join([row["arm"], str(row["seeds"]), repr(row["final_mean"]), std,
                               repr(row["env_steps"]), repr(row["wall_s"]), *tail]))
    return "\n".join(lines) + "\n"


def format_table(summary: dict[str, Any]) -> str:
    """The per-arm Markdown table."""
    t, m, label = summary["threshold"], summary["metric"], summary.get("label", "optimizer")
    bar = "n/a" if t is None else f"{t:g}"
    lines = [f"| {label} | seeds | final {m} (mean ± std over seeds) | env steps | wall time | "
             f"env steps to {m} ≥ {bar} | wall time to ≥ {bar} | seeds reaching {bar} |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        final = f"{row['final_mean']:.3f}" + ("" if math.isnan(row["final_std"]) else f" ± {row['final_std']:.3f}")
        if t is None:
            steps = wall = reached = "n/a"
        else:
            reached = f"{row['reached']}/{row['seeds']} seeds"
            steps = "never" if row["threshold_env_steps"] is None else f"{row['threshold_env_steps']:,.0f}"
            wall = "never" if row["threshold_wall_s"] is None else _duration(row["threshold_wall_s"])
        lines.append(f"| {row['arm']} | {row['seeds']} | {final} | {row['env_steps']:,.0f} | "
                     f"{_duration(row['wall_s'])} | {steps} | {wall} | {reached} |")
    return "\n".join(lines)


def format_markdown(summary: dict[str, Any]) -> str:
    m, t, label = summary["metric"], summary["threshold"], summary.get("label", "optimizer")
    arms = [row["arm"] for row in summary["rows"]]
    lines = [f"# {_title(summary['task'], arms, summary['seeds'], summary['budget_steps'])}", "",
             summary["table"], ""]
    if "changes" in summary:
        lines += [f"- {arm}: {change}" for arm, change in summary["changes"].items()] + [""]
    lines += [
             f"- final {m}: the run's best theta (chosen by the periodic evaluations) scored on "
             f"{summary['runs'][0]['episodes']} fresh episodes (`eval.json`); ± is the standard deviation across "
             "seeds (n - 1).",
             "- env steps, wall time: used by the whole run (training and periodic evaluations, start-up excluded).",
             f"- to threshold: the first periodic evaluation with {m} ≥ {'n/a' if t is None else f'{t:g}'}, averaged "
             "over the seeds that reached it. Its resolution is one evaluation interval (by default budget / "
             f"{EVALUATIONS} env steps, the same for every {label})."]
    if summary["jobs"] > 1:
        lines.append(f"- {summary['jobs']} runs trained at once (one process and one torch thread each): wall "
                     "times were measured under contention for the machine's cores.")
    names = list(summary["runs"][0].get("metrics", {}))
    if len(names) > 1:  # every task metric of the final evaluations (e.g. maze: steps to 1st reward, success)
        lines += ["", "## All task metrics (final evaluation; mean ± std over seeds)", "",
                  f"| {label} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for arm in arms:
            values = [[p["metrics"][n] for p in summary["runs"] if p["arm"] == arm] for n in names]
            cells = [f"{statistics.fmean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")
                     for v in values]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Runs", "", f"| {label} | seed | final {m} (± std over episodes) | env steps | wall time | "
              "env steps to threshold | wall time to threshold | directory |", "|---|---|---|---|---|---|---|---|"]
    for p in summary["runs"]:
        steps, wall = p["threshold_env_steps"], p["threshold_wall_s"]
        steps = "n/a" if t is None else "never" if steps is None else f"{steps:,.0f}"
        wall = "n/a" if t is None else "never" if wall is None else _duration(wall)
        lines.append(f"| {p['arm']} | {p['seed']} | {p['final']:.3f} ± {p['final_std_episodes']:.3f} | "
                     f"{p['env_steps']:,} | {_duration(p['wall_s'])} | {steps} | {wall} | `{p['path']}` |")
    return "\n".join(lines) + "\n"


def _title(task: str, arms: list[str], seeds: int, budget_steps: int) -> str:
    return f"{task}: {' vs '.join(arms)}, {seeds} seed{'s' if seeds > 1 else ''}, {budget_steps:,} env steps each"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def cli_command(task: str, optimizers: list[str], seeds: int, budget_steps: int, out: Path,
                overrides: dict[str, Any] | None, threshold: float | None, jobs: int) -> str:
    """The ``metods-evo compare`` command that (re)runs exactly this comparison into ``out``."""
    args = ["metods-evo", "compare", "--task", task, "--optimizers", ",".join(optimizers), "--seeds", str(seeds),
            "--budget-steps", str(budget_steps), "--out", str(out)]
    for key, value in (overrides or {}).items():
        args += ["--set", f"{key}={value}"]
    if threshold is not None and threshold != DEFAULT_THRESHOLDS.get(task):
        args += ["--threshold", f"{threshold:g}"]
    if jobs > 1:
        args += ["--jobs", str(jobs)]
    return shlex.join(args)


def _write_command(out: Path, command: str | None, again: str, title: str, kind: str, jobs: int) -> None:
    """COMMAND.md: the first invocation in full; each later one (a resume or re-tabulation) appends a line."""
    import torch

    path = out / COMMAND_MD
    now = time.strftime("%Y-%m-%d %H:%M:%S %z")
    command = command or f"(called from Python: metods_evo.experiments.{kind})"
    if path.exists():
        text = path.read_text() + f"- {now}: run again: `{command}`\n"
    else:
        parallel = ("one run at a time" if jobs == 1 else
                    f"{jobs} runs at once in separate processes: wall times are measured under contention")
        text = (f"# metods-evo {kind} — {title}\n\n"
                f"```bash\n{command}\n```\n\n"
                f"To resume it after a kill, or re-tabulate it (e.g. with another `--threshold`):\n\n"
                f"```bash\n{again}\n```\n\n"
                f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                f"torch {torch.__version__}; {parallel}.\n\n"
                f"- {now}: started\n")
    atomic_write_bytes(path, text.encode())


__all__ = ["ABLATIONS", "DEFAULT_THRESHOLDS", "ablate", "compare", "format_csv", "format_table", "plan_runs",
           "summarize", "time_to_threshold"]
