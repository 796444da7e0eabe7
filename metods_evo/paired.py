"""Two agents on the same episodes: A − B per metric, episode by episode.

Two agents' means over 1000 episodes each differ by chance as much as by skill (a maze return has a std of ~60);
played on the same episodes (the same mazes, objects or targets), most of that chance cancels in the per-episode
difference. By default the episodes are the ones `reproduce` and the final evaluation score each run on (the run's
final-evaluation seed), so each agent's mean here is the one in its ``eval*.json``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from metods_evo.config import ConfigError
from metods_evo.evaluate import final_seed, open_agent, play_episodes
from metods_evo.runs import RunDir


def seed_runs(path: str | Path) -> dict[int, Path]:
    """A run directory as {its seed: it}; an arm directory (``seed0``, ``seed1``, ... inside) as one per seed."""
    path = Path(path)
    if (path / "config.json").is_file():
        return {RunDir.open(path).config().seed: path}
    runs = {int(m.group(1)): p for p in sorted(path.glob("seed*")) if (m := re.fullmatch(r"seed(\d+)", p.name))}
    if not runs:
        raise ConfigError(f"{path} is neither a run (config.json) nor an arm of runs (seed0, seed1, ...)")
    return runs


def paired(run_a: str | Path, run_b: str | Path, *, episodes: int = 1000, task_options: dict | None = None,
           seed: int | None = None, agents: tuple[str, str] = ("best", "best")) -> dict[str, Any]:
    """Play A and B on the same episodes, seed by seed (runs or arms of runs with the same seeds); ``task_options``
    (e.g. ``{"size": "10"}``) change the task of both; ``agents`` picks A's and B's theta ("best" or "last"), so
    one run's best and last thetas can be paired too.

    Two single runs are paired whatever their seeds. Returns ``{"pairs": [{"seed", "episodes_seed", "metrics": {name:
    stats}}], "pooled": {name: stats}}``, stats being A's and B's means, the mean per-episode difference A − B and its
    standard error, and the number of pairs (pooled: over all seeds' episodes).
    """
    task_options = task_options or {}
    runs_a, runs_b = seed_runs(run_a), seed_runs(run_b)
    if len(runs_a) == len(runs_b) == 1:  # two single runs: paired whatever their seeds, on A's episodes
        runs_b = {next(iter(runs_a)): next(iter(runs_b.values()))}
    if set(runs_a) != set(runs_b):
        raise ConfigError(f"{run_a} has seeds {sorted(runs_a)} and {run_b} has {sorted(runs_b)}: pair the same seeds")
    pairs, played = [], {}  # played: metric -> (A's per-episode values, B's) over all seeds
    for run_seed in sorted(runs_a):
        _, cfg_a, theta_a, _ = open_agent(runs_a[run_seed], task_options=task_options, agent=agents[0])
        _, cfg_b, theta_b, _ = open_agent(runs_b[run_seed], task_options=task_options, agent=agents[1])
        if (cfg_a.task, cfg_a.task_options) != (cfg_b.task, cfg_b.task_options):
            raise ConfigError(f"seed {run_seed}: A plays {cfg_a.task} {cfg_a.task_options} and B "
                              f"{cfg_b.task} {cfg_b.task_options}; pair agents of one task")
        episodes_seed = final_seed(cfg_a) if seed is None else seed
        a = play_episodes(cfg_a, theta_a, episodes, episodes_seed)[0]
        b = play_episodes(cfg_b, theta_b, episodes, episodes_seed)[0]
        for name in a.keys() & b.keys():
            played.setdefault(name, ([], []))
            played[name][0].append(a[name])
            played[name][1].append(b[name])
        pairs.append({"seed": run_seed, "episodes_seed": episodes_seed,
                      "metrics": {name: _stats(a[name], b[name]) for name in sorted(a.keys() & b.keys())}})
    pooled = {name: _stats(torch.cat(a), torch.cat(b)) for name, (a, b) in sorted(played.items())}
    return {"a": str(run_a), "b": str(run_b), "agents": list(agents), "task": cfg_a.task,
            "task_options": cfg_a.task_options, "episodes": episodes, "pairs": pairs, "pooled": pooled}


def _stats(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    diff = a - b  # episode by episode
    se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return {"a": float(a.mean()), "b": float(b.mean()), "diff": float(diff.mean()), "se": se, "pairs": len(diff)}


def format_paired(report: dict[str, Any]) -> str:
    """A plain-text table: per metric, A's and B's means, A − B ± its standard error, and A − B per seed."""
    seeds = [p["seed"] for p in report["pairs"]]
    task = f"{report['task']} {report['task_options']}" if report["task_options"] else report["task"]
    a, b = ((f"{path} ({which})" if which != "best" else path)
            for path, which in zip((report["a"], report["b"]), report["agents"]))
    header = (f"{task} — A: {a}, B: {b}; "
              f"{report['episodes']} episodes per seed ({', '.join(map(str, seeds))}), the same for A and B")
    names = list(report["pooled"])
    width = max(len(n) for n in names + ["metric"])
    lines = [header, f"  {'metric':<{width}}  {'A':>9}  {'B':>9}  {'A − B ± s.e.':>19}  A − B per seed"]
    for name in names:
        stats = report["pooled"][name]
        per_seed = ", ".join(f"{p['metrics'][name]['diff']:+.3f}" for p in report["pairs"])
        lines.append(f"  {name:<{width}}  {stats['a']:9.3f}  {stats['b']:9.3f}  "
                     f"{stats['diff']:+9.3f} ± {stats['se']:7.3f}  {per_seed}")
    return "\n".join(lines)


__all__ = ["format_paired", "paired", "seed_runs"]
