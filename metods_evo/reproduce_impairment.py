"""``metods-evo reproduce impairment-cheetah | impairment-ant``: the paper's robot-impairment comparison.

MetODS and the baselines are trained on the intact robot through ``reproduce``'s machinery (one run directory per
agent and seed, resumable, ``--jobs``, ``--quick``); then every final agent is played intact and with each actuator
held at zero in turn, a damage never seen in training, on the same seeded episodes (``impairment_report``: the final
evaluation's episodes of the run's seed, so every agent of a seed plays the same directions and starts). The table
gives the fraction of its own intact return each agent keeps, mean ± std over seeds, for all episodes and per
direction (Chalvidal et al. 2022 claim that MetODS keeps more than RL² and MAML):

    <out_dir>/<agent>/seed<s>/     run directories, each with impairment.json / .md (as `metods-evo impairment`)
    impairment.md / .csv / .png    rows: agents; columns: actuator k frozen; the figure: bars per actuator
    training.md / .csv / .png      the compare-style training table and curves
    COMMAND.md                     the command line, date and machine

The arms, and why:

* **metods, rl2, maml: ES, the task's preset** (SNES, popsize 64, 8 episodes per individual), 40 M env steps each
  (the budget at which SNES learnt cheetah-dir). ES is the optimizer that learnt cheetah-dir here, PPO is unstable
  through MetODS's plastic dynamics and through MAML's inner step on it (RL² under PPO is stable, not yet shown to learn
  it: docs/lab-notes.md), and one optimizer, population and budget for the three makes the table compare the
  agents, not their optimizers. MAML adapts after K = 100 of its 200 steps, and acts (and is scored) with sampled
  actions: at the greedy action the log-likelihood's gradient with respect to the mean is zero, so its inner
  REINFORCE step would not move the policy.
* **pearl: its own optimizer, 2 M env steps.** Off-policy, PEARL is bound by its gradient steps, not by samples:
  at its defaults (100 updates per 3,200 env steps) 2 M steps take about as long as 40 M of ES on cheetah-dir (45
  min against 33-41 min per arm on a 2-core machine: docs/getting-started.md). Its budget keeps the wall time, not
  the env steps, comparable.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metods_evo import impairment as imp
from metods_evo.config import validate_task
from metods_evo.evaluate import final_seed, open_agent
from metods_evo.experiments import Arm
from metods_evo.runs import atomic_write_bytes

ES_BUDGET, PEARL_BUDGET = 40_000_000, 2_000_000


@dataclass(frozen=True)
class ImpairmentExperiment:
    task: str
    arms: tuple[Arm, ...]
    budget_steps: int
    """Env steps of every arm but those in ``budgets``."""
    budgets: dict[str, int] = field(default_factory=dict)
    """Per-agent budgets that differ from ``budget_steps``."""
    quick: dict[str, str] = field(default_factory=dict)
    """Extra overrides of ``--quick`` (every arm)."""

    def tabulate(self, out: Path, seeds: int, budget: int, episodes: int, quick: bool) -> dict[str, Any]:
        """Each run's impairment report (cached in the run), then impairment.md / .csv / .png."""
        reports = {arm.label: [_report(out / arm.label / f"seed{s}", episodes) for s in range(seeds)]
                   for arm in self.arms}
        rows = [impairment_row(label, runs) for label, runs in reports.items()]
        budgets = {arm.label: min(budget, self.budgets.get(arm.label, budget)) for arm in self.arms}
        table = format_table(self.task, rows, seeds, budgets, episodes, quick)
        atomic_write_bytes(out / "impairment.md", table.encode())
        atomic_write_bytes(out / "impairment.csv", format_csv(rows).encode())
        plot(rows, out / "impairment.png", title=f"{self.task}: return kept with one actuator frozen "
                                                 f"({episodes} episodes per setting, {seeds} seed{'s' * (seeds > 1)})")
        return {"table": table, "rows": rows,
                "files": ["impairment.md", "impairment.csv", "impairment.png", "training.md", "training.png"]}


def _direction_arms() -> tuple[Arm, ...]:
    return (Arm("metods", "es"),
            Arm("rl2", "es", (("model.kind", "rl2"),)),
            Arm("maml", "es", (("model.kind", "maml"), ("model.maml.adapt_steps", "100"),
                               ("es.action_mode", "sample"))),
            Arm("pearl", "pearl"))  # model.kind=pearl: the (task, pearl) preset


# --quick: tiny models and populations; 120-step episodes, so that MAML (K = 100) still adapts.
QUICK = {"task.episode_steps": "120", "es.popsize": "4", "es.episodes": "1", "model.n": "4", "model.rl2.hidden": "4",
         "model.maml.hidden": "4", "model.pearl.hidden": "8", "model.pearl.layers": "2", "pearl.trials": "2",
         "pearl.initial_trials": "2", "pearl.updates": "2", "pearl.batch_tasks": "2", "pearl.batch_size": "8",
         "pearl.context_size": "5", "pearl.buffer_trials": "4"}

IMPAIRMENT_EXPERIMENTS = {
    f"impairment-{name}": ImpairmentExperiment(task=task, arms=_direction_arms(), budget_steps=ES_BUDGET,
                                               budgets={"pearl": PEARL_BUDGET}, quick=QUICK)
    for name, task in (("cheetah", "cheetah-dir"), ("ant", "ant-dir"))}


def _report(path: Path, episodes: int) -> dict[str, Any]:
    """The run's impairment report (every actuator, the final evaluation's seed), as saved in impairment.json; a
    saved report with other episodes, seed or actuators (e.g. from `metods-evo impairment`) is made again."""
    _, cfg, theta, _ = open_agent(path)
    actuators = list(range(validate_task(cfg.task, cfg.task_options).action_dim))
    seed = final_seed(cfg)
    saved = path / "impairment.json"
    if saved.is_file():
        report = json.loads(saved.read_text())
        if (report["episodes"], report["seed"], list(report["frozen"])) == (episodes, seed, list(map(str, actuators))):
            return report
    imp.write(imp.impairment_report(cfg, theta, actuators, episodes, seed), path, figure=False)
    (path / "impairment.png").unlink(missing_ok=True)  # an earlier `metods-evo impairment`'s figure, now stale
    return json.loads(saved.read_text())


def impairment_row(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per episode group ("all", then the task's: forward / backward): the per-seed intact returns, fractions kept
    per actuator and their mean over actuators (None where the seed's intact return is not positive)."""
    groups = ["all", *dict.fromkeys(g for run in runs for g in run["intact"].get("groups", {}))]
    actuators = list(runs[0]["frozen"])
    out = {}
    for group in groups:
        intact = [_intact_return(run, group) for run in runs]
        kept = {k: [run["scores"][k].get(group) for run in runs] for k in actuators}
        means = [None if None in seed else statistics.fmean(seed) for seed in zip(*kept.values())]
        out[group] = {"intact": intact, "kept": kept, "mean": means}
    return {"agent": label, "actuators": actuators, "groups": out}


def _intact_return(run: dict, group: str) -> float | None:
    part = run["intact"] if group == "all" else run["intact"].get("groups", {}).get(group)
    return None if part is None else part["metrics"]["return"]["mean"]


def moments(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std over seeds (None for one seed), seeds counted), leaving out the seeds without a value."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None, 0
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else None, len(known)


def _cell(values: list[float | None], digits: int) -> str:
    mean, std, count = moments(values)
    if mean is None:
        return "n/a"
    text = f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")
    return text + (f" ({count}/{len(values)} seeds)" if count < len(values) else "")


def _columns(row: dict, group: str) -> list[tuple[str, list[float | None]]]:
    part = row["groups"].get(group)
    if part is None:
        return []
    return [("intact_return", part["intact"]), *((f"actuator_{k}", v) for k, v in part["kept"].items()),
            ("mean_over_actuators", part["mean"])]


def format_table(task: str, rows: list[dict], seeds: int, budgets: dict[str, int], episodes: int,
                 quick: bool) -> str:
    actuators = rows[0]["actuators"]
    groups = list(dict.fromkeys(g for row in rows for g in row["groups"]))
    spent = ", ".join(f"{label} {steps:,}" for label, steps in budgets.items())
    lines = [f"# {task}: robot impairment, {' vs '.join(budgets)}, {seeds} seed{'s' * (seeds > 1)}"
             + (" (--quick: a smoke run, the numbers mean nothing)" if quick else ""), "",
             "Fraction of its own intact return each agent keeps with one actuator held at zero (a damage never seen "
             "in training); mean ± std over seeds.", ""]
    for group in groups:
        lines += [f"## {'All episodes' if group == 'all' else f'{group.capitalize()} episodes'}", "",
                  "| agent | intact return | " + " | ".join(f"actuator {k} frozen" for k in actuators)
                  + " | mean over actuators |", "|---|" + "---|" * (len(actuators) + 2)]
        for row in rows:
            cells = [_cell(values, 1 if name == "intact_return" else 2) for name, values in _columns(row, group)]
            lines.append(f"| {row['agent']} | " + " | ".join(cells or ["n/a"] * (len(actuators) + 2)) + " |")
        lines.append("")
    lines += [f"- each run's best theta (chosen by its periodic evaluations) on {episodes} episodes per setting "
              "(intact, then each actuator frozen): the same seeded episodes for every setting and for every agent of "
              "a seed; a cell is return(actuator frozen) / return(intact) of the same agent, n/a where the intact "
              "return is not positive; ± is the standard deviation over seeds (n - 1).",
              f"- training budgets (env steps): {spent}.",
              "- paper: Chalvidal et al. (2022) report that MetODS keeps more of its performance than MAML and RL²."]
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict]) -> str:
    """One line per agent, episode group and column (intact_return, actuator_<k>, mean_over_actuators)."""
    lines = ["agent,group,column,seeds,mean,std"]
    for row in rows:
        for group in row["groups"]:
            for name, values in _columns(row, group):
                mean, std, count = moments(values)
                lines.append(",".join([row["agent"], group, name, str(count), "" if mean is None else repr(mean),
                                       "" if std is None else repr(std)]))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, *, title: str) -> Path:
    """Bars per actuator, one colour per agent, error bars over seeds; a panel per episode group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(g for row in rows for g in row["groups"]))
    actuators = rows[0]["actuators"]
    fig, axes = plt.subplots(len(groups), 1, figsize=(2.5 + 0.3 * len(rows) * len(actuators), 1 + 2.6 * len(groups)),
                             constrained_layout=True, squeeze=False, sharex=True)
    width = 0.8 / len(rows)
    nan = float("nan")  # no bar (n/a: intact return not positive), no error bar (one seed)
    for ax, group in zip(axes[:, 0], groups):
        for i, row in enumerate(rows):
            kept = row["groups"].get(group, {}).get("kept", {})
            stats = [moments(kept.get(k, [])) for k in actuators]
            ax.bar([x + i * width for x in range(len(actuators))], [nan if m is None else m for m, _, _ in stats],
                   width, yerr=[nan if s is None else s for _, s, _ in stats], capsize=2, label=row["agent"])
        ax.axhline(0.0, color="gray", lw=0.6)
        ax.axhline(1.0, color="gray", lw=0.6, ls="--")
        ax.set_ylabel("fraction of intact return")
        ax.set_title("all episodes" if group == "all" else f"{group} episodes", fontsize=10)
    axes[-1, 0].set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(actuators))], actuators)
    axes[-1, 0].set_xlabel("actuator frozen")
    axes[0, 0].legend(fontsize=8, ncols=len(rows))
    fig.suptitle(title)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)  # then renamed: a kill mid-write never leaves a truncated figure
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["IMPAIRMENT_EXPERIMENTS", "ImpairmentExperiment", "format_csv", "format_table", "impairment_row"]
