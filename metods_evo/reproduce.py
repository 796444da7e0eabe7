"""``metods-evo reproduce EXPERIMENT``: the paper's comparative tables, one command each.

An experiment trains MetODS and the baselines (RL², MAML, random) at the budgets it states, through the same
machinery as ``compare`` (one run directory per agent and seed, resumable), scores every final agent on fresh
episodes (1000 by default, on each evaluation setting: e.g. maze 8×8 and 10×10), and writes the table in the
paper's format beside the paper's numbers (Chalvidal et al., NeurIPS 2022, Table 1 and Figure 3):

    <out_dir>/<agent>/seed<s>/     ordinary run directories (+ eval-<setting>.json per evaluation setting)
    training.md / .csv / .png      the compare-style training table and curves
    table.md / table.csv           the paper-format table: ours (mean ± std over episodes, pooled over seeds)
                                   next to the paper's
    COMMAND.md                     the command line, date and machine

``--quick`` shrinks everything (budgets, models, episodes) to a smoke run for tests; its numbers mean nothing.

An experiment trains its arms here and tabulates itself (``tabulate``): the paper tables above, or the robot-impairment
comparison (``reproduce_impairment.py``: impairment.md / .csv / .png), registered in ``EXPERIMENTS`` with one line.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metods_evo.config import ConfigError, generation_seed
from metods_evo.evaluate import FINAL_STREAM, evaluate_theta, to_json
from metods_evo.experiments import Arm, run_arms
from metods_evo.reproduce_impairment import IMPAIRMENT_EXPERIMENTS, ImpairmentExperiment
from metods_evo.runs import RunDir, atomic_write_bytes


@dataclass(frozen=True)
class Column:
    title: str
    setting: str
    """Which evaluation setting (a key of ``Experiment.settings``) the value comes from."""
    metric: str
    percent: bool = False


@dataclass(frozen=True)
class Experiment:
    task: str
    arms: tuple[Arm, ...]
    budget_steps: int
    settings: dict[str, dict[str, Any]]
    """Evaluation settings: name -> task options (e.g. ``{"8x8": {}, "10x10": {"size": 10}}``)."""
    columns: tuple[Column, ...]
    paper: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The paper's cells per agent, in column order (as printed there)."""
    budgets: dict[str, int] = field(default_factory=dict)
    """Per-agent budgets that differ from ``budget_steps`` (the random agent trains for nothing)."""
    quick: dict[str, str] = field(default_factory=dict)
    """Extra overrides of ``--quick``."""

    def tabulate(self, out: Path, seeds: int, budget: int, episodes: int, quick: bool) -> dict[str, Any]:
        """Each run's evaluation on every setting (cached in the run), then table.md and table.csv."""
        reports = {arm.label: [_evaluations(self, out / arm.label / f"seed{s}", episodes) for s in range(seeds)]
                   for arm in self.arms}
        rows = [_row(self, label, runs) for label, runs in reports.items()]
        table = format_paper_table(self, rows, seeds, budget, episodes, quick)
        atomic_write_bytes(out / "table.md", table.encode())
        atomic_write_bytes(out / "table.csv", _csv(self, rows).encode())
        return {"table": table, "rows": rows, "files": ["table.md", "table.csv", "training.md", "training.png"]}


NO_TRAINING = 1  # env steps: one tiny generation, so that the random agent has a run directory like the others
RANDOM = Arm("random", "es", (("model.kind", "random"), ("es.popsize", "2"), ("es.episodes", "1")))

EXPERIMENTS: dict[str, Experiment | ImpairmentExperiment] = {
    "maze-table": Experiment(
        task="maze",
        # metods: PPO's maze preset. metods-s1-n96-w0-pre-g0.8-mb8: MetODS as the paper defines it at the settings
        # where it learnt best (N = 96, the pre-before-post write, discount 0.8, 8 PPO minibatches); -fb- adds the
        # per-neuron leak of the layer's output into f (model.feedback=diagonal, beyond the paper). rl2 and
        # rl2-g0.8-mb8 are RL2 at the same two PPO settings (docs/lab-notes.md tells how these arms were chosen).
        arms=(Arm("metods", "ppo"),
              Arm("metods-s1-n96-w0-pre-g0.8-mb8", "ppo",
                  (("model.n", "96"), ("model.write_pre", "previous"), ("ppo.gamma", "0.8"), ("ppo.minibatches", "8"))),
              Arm("metods-s1-n96-w0-pre-fb-g0.8-mb8", "ppo",
                  (("model.n", "96"), ("model.write_pre", "previous"), ("model.feedback", "diagonal"),
                   ("ppo.gamma", "0.8"), ("ppo.minibatches", "8"))),
              Arm("rl2", "ppo", (("model.kind", "rl2"),)),
              Arm("rl2-g0.8-mb8", "ppo", (("model.kind", "rl2"), ("ppo.gamma", "0.8"), ("ppo.minibatches", "8"))),
              Arm("maml", "ppo", (("model.kind", "maml"), ("model.maml.adapt_steps", "50"))), RANDOM),
        budget_steps=10_000_000,
        settings={"8x8": {}, "10x10": {"size": 10}},
        columns=(Column("steps to 1st reward", "8x8", "steps_to_first_reward"),
                 Column("success", "8x8", "success", percent=True),
                 Column("cum. reward", "8x8", "return"),
                 Column("cum. reward 10×10", "10x10", "return")),
        paper={"random": ("96.8 ± 0.5", "5 %", "3.8 ± 8.9", "3.7 ± 6.4"),
               "maml": ("64.3 ± 39.3", "45.2 %", "14.95 ± 4.5", "5.8 ± 10.3"),
               "rl2": ("16.2 ± 1.1", "96.2 %", "77.7 ± 46.5", "28.1 ± 29.7"),
               "metods": ("14.7 ± 1.4", "96.6 %", "86.5 ± 46.8", "34.9 ± 34.9")},
        budgets={"random": NO_TRAINING},
        quick={"ppo.episodes": "8", "model.n": "8", "model.rl2.hidden": "8", "model.maml.hidden": "8"},
    ),
    "harlow": Experiment(
        task="harlow",
        arms=(Arm("metods", "ppo"), Arm("rl2", "ppo", (("model.kind", "rl2"),)),
              Arm("maml", "ppo", (("model.kind", "maml"), ("model.maml.adapt_steps", "2"))), RANDOM),
        budget_steps=3_000_000,
        settings={"harlow": {}},
        columns=(Column("return (max 4)", "harlow", "return"),
                 *(Column(f"trial {k} correct", "harlow", f"trial{k}_correct", percent=True) for k in range(1, 6))),
        paper={"metods": ("≈ 4 (solved)", "50 %", "≈ 100 %", "≈ 100 %", "≈ 100 %", "≈ 100 %")},
        budgets={"random": NO_TRAINING},
        quick={"ppo.episodes": "8", "model.n": "8", "model.rl2.hidden": "8", "model.maml.hidden": "8"},
    ),
    **IMPAIRMENT_EXPERIMENTS,  # robot impairment on cheetah-dir and ant-dir (reproduce_impairment.py)
}
QUICK_BUDGET, QUICK_EPISODES = 600, 32


def reproduce(name: str, out_dir: str | os.PathLike, *, seeds: int = 1, quick: bool = False,
              episodes: int = 1000, jobs: int = 1, progress: bool = True, command: str | None = None) -> dict:
    """Train, evaluate and tabulate experiment ``name``; returns ``{"table": markdown, "rows": [...], "files":
    [names written in out_dir]}``."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    if seeds < 1 or episodes < 1:
        raise ConfigError(f"seeds and episodes must be >= 1 (got {seeds}, {episodes})")
    exp = EXPERIMENTS[name]
    budget = QUICK_BUDGET if quick else exp.budget_steps
    played = min(episodes, QUICK_EPISODES) if quick else episodes
    overrides = dict(exp.quick) if quick else {}
    if quick:
        overrides |= {"eval_episodes": "8", "final_eval_episodes": "8"}
    arms = [Arm(a.label, a.optimizer, a.overrides + ((("budget_steps", str(min(budget, exp.budgets[a.label]))),)
                                                     if a.label in exp.budgets else ()))
            for a in exp.arms]
    again = shlex.join(["metods-evo", "reproduce", name, "--seeds", str(seeds), "--out", str(out_dir),
                        *(["--episodes", str(episodes)] if episodes != 1000 else []),
                        *(["--quick"] if quick else []), *(["--jobs", str(jobs)] if jobs > 1 else [])])
    run_arms("training", exp.task, arms, seeds, budget, out_dir, overrides, None, progress, jobs, command, again)
    return exp.tabulate(Path(out_dir), seeds, budget, played, quick)


def _evaluations(exp: Experiment, path: Path, episodes: int) -> dict[str, dict]:
    """Each setting's evaluation of the run's best theta, cached as ``eval-<setting>.json`` in the run."""
    run = RunDir.open(path)
    cfg = run.config()
    out = {}
    for setting, options in exp.settings.items():
        file = path / f"eval-{setting}.json"
        if file.is_file():
            report = json.loads(file.read_text())
            if report["episodes"] == episodes:
                out[setting] = report
                continue
        theta = run.load_agent_state()["theta"]
        seed = exp_seed(cfg.seed)
        report = evaluate_theta(cfg, theta, episodes, seed, task_options=options)
        atomic_write_bytes(file, to_json(report).encode())
        out[setting] = report
    return out


def exp_seed(run_seed: int) -> int:
    """The final-evaluation seed stream (the same episodes for every agent of a seed)."""
    return generation_seed(run_seed, 0, FINAL_STREAM)


def _row(exp: Experiment, label: str, runs: list[dict[str, dict]]) -> dict[str, Any]:
    """Mean ± std over all episodes of all seeds (the pooled moments of the per-seed evaluations)."""
    cells = []
    for column in exp.columns:
        stats = [run[column.setting]["metrics"][column.metric] for run in runs]
        mean = statistics.fmean(s["mean"] for s in stats)
        second = statistics.fmean(s["std"] ** 2 + s["mean"] ** 2 for s in stats)
        cells.append((mean, math.sqrt(max(second - mean**2, 0.0))))
    return {"agent": label, "cells": cells, "seed_means": [[run[c.setting]["metrics"][c.metric]["mean"]
                                                            for c in exp.columns] for run in runs]}


def _cell(column: Column, mean: float, std: float) -> str:
    return f"{100 * mean:.1f} %" if column.percent else f"{mean:.2f} ± {std:.2f}"


def format_paper_table(exp: Experiment, rows: list[dict], seeds: int, budget: int, episodes: int, quick: bool) -> str:
    header = "| agent | " + " | ".join(f"{c.title} (ours)" + (" / paper" if exp.paper else "") for c in exp.columns)
    lines = [f"# {exp.task}: MetODS and baselines, {budget:,} env steps each, {seeds} seed{'s' * (seeds > 1)}"
             + (" (--quick: a smoke run, the numbers mean nothing)" if quick else ""), "",
             header + " |", "|---|" + "---|" * len(exp.columns)]
    for row in rows:
        paper = exp.paper.get(row["agent"], ("–",) * len(exp.columns))
        cells = [_cell(c, m, s) + (f" / {p}" if exp.paper else "") for c, (m, s), p in zip(exp.columns, row["cells"],
                                                                                            paper)]
        lines.append(f"| {row['agent']} | " + " | ".join(cells) + " |")
    lines += ["", f"- ours: the best theta of each run (chosen by its periodic evaluations) on {episodes} fresh "
              "episodes per setting and seed; mean ± std over all those episodes; percentages are means.",
              "- paper: Chalvidal et al. (2022), NeurIPS; the random agent is not trained."]
    if len(rows[0]["seed_means"]) > 1:
        lines += ["", "Per-seed means:", ""]
        for row in rows:
            per_seed = ["(" + ", ".join(f"{v:.2f}" for v in seed) + ")" for seed in row["seed_means"]]
            lines.append(f"- {row['agent']}: " + "; ".join(per_seed))
    return "\n".join(lines) + "\n"


def _csv(exp: Experiment, rows: list[dict]) -> str:
    header = ["agent"] + [f"{c.setting}:{c.metric}:{stat}" for c in exp.columns for stat in ("mean", "std")]
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join([row["agent"], *(repr(v) for cell in row["cells"] for v in cell)]))
    return "\n".join(lines) + "\n"


__all__ = ["EXPERIMENTS", "reproduce"]
