"""Training-curve figures (matplotlib, headless)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path


def _smooth(values: list[float]) -> list[float]:
    """Trailing moving average over ~2% of the run, so long noisy ES curves stay readable."""
    window = max(1, len(values) // 50)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(rows: list[dict[str, float]], path: Path, *, title: str, eval_key: str) -> None:
    """Fitness / return against generation and against env steps, with the periodic evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, xkey, xlabel in ((axes[0], "generation", "generation"), (axes[1], "env_steps", "environment steps")):
        x = [r[xkey] for r in rows]
        for key, label in (("es/fitness_mean", "population mean"), ("es/fitness_best", "population best"),
                           ("train/episode_return", "training return")):
            if key in rows[0] and not (key == "train/episode_return" and "es/fitness_mean" in rows[0]):
                line, = ax.plot(x, _smooth([r[key] for r in rows]), label=label, lw=1.2)
                if len(rows) > 50:  # long runs: raw per-generation values faintly behind the moving average
                    ax.plot(x, [r[key] for r in rows], lw=0.5, alpha=0.25, color=line.get_color())
        evals = [(xv, r[eval_key]) for xv, r in zip(x, rows) if eval_key in r and not math.isnan(r[eval_key])]
        if evals:
            ax.plot(*zip(*evals), "o-", ms=3, label=f"{eval_key} (center)", color="black")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].set_xscale("linear")
    axes[1].ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    fig.suptitle(title)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=110)  # then renamed: a kill mid-write never leaves a truncated figure
    plt.close(fig)
    tmp.replace(path)


def plot_compare(curves: dict[str, list[list[dict[str, float]]]], path: Path, *, title: str, eval_key: str,
                 threshold: float | None = None) -> None:
    """Periodic evaluation against env steps and against wall time, several optimizers x seeds.

    ``curves`` maps an optimizer to its runs' metrics rows (one list per seed). Each seed is a thin line;
    the bold line is the mean over seeds, interpolated on the range of x that every seed covers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, xkey, xlabel in ((axes[0], "env_steps", "environment steps"), (axes[1], "wall_s", "wall time (s)")):
        for i, (name, runs) in enumerate(curves.items()):
            color = colors[i % len(colors)]
            series = []
            for rows in runs:
                points = [(r[xkey], r[eval_key]) for r in rows if eval_key in r and not math.isnan(r[eval_key])]
                if points:
                    series.append(np.array(points))
                    ax.plot(*series[-1].T, lw=0.8, alpha=0.4 if len(runs) > 1 else 1.0, color=color)
            label = f"{name} ({len(series)} seed{'s' if len(series) != 1 else ''})"
            lo, hi = (max(s[0, 0] for s in series), min(s[-1, 0] for s in series)) if series else (0.0, 0.0)
            if len(series) > 1 and hi > lo:
                grid = np.linspace(lo, hi, 200)
                mean = np.mean([np.interp(grid, s[:, 0], s[:, 1]) for s in series], axis=0)
                ax.plot(grid, mean, lw=2.0, color=color, label=f"{label}, mean")
            else:
                ax.plot([], [], lw=2.0, color=color, label=label)
        if threshold is not None:
            ax.axhline(threshold, color="black", ls="--", lw=1.0, label=f"threshold {threshold:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{eval_key} (periodic evaluation)")
        ax.grid(alpha=0.3)
    axes[0].ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(textwrap.fill(title, 110))  # many arms: wrapped, not cut at the figure's edge
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=110)  # then renamed: a kill mid-write never leaves a truncated figure
    plt.close(fig)
    tmp.replace(path)


def plot_evaluation(report: dict, path: Path, *, title: str) -> None:
    """Reward per time step within an episode (all episodes, and each group the task names, e.g. forward /
    backward), and, where the task reports ``success_rollout_<k>`` (Meta-World), success against rollout k."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rollouts = sorted((int(m.group(1)), stats["mean"]) for name, stats in report["metrics"].items()
                      if (m := re.fullmatch(r"success_rollout_(\d+)", name)))
    fig, axes = plt.subplots(1, 2 if rollouts else 1, figsize=(11 if rollouts else 6, 4), constrained_layout=True,
                             squeeze=False)
    ax = axes[0][0]
    curves = [("all episodes", report["reward_per_step"], report["episodes"])]
    curves += [(name, part["reward_per_step"], part["episodes"]) for name, part in report.get("groups", {}).items()]
    for label, values, count in curves:
        ax.plot(range(1, len(values) + 1), values, lw=1.2, label=f"{label} ({count})")
    ax.axhline(0.0, color="gray", lw=0.6)
    ax.set_xlabel("time step within the episode")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if rollouts:
        ax = axes[0][1]
        ax.plot([k for k, _ in rollouts], [100 * v for _, v in rollouts], "o-")
        ax.set_xlabel("rollout within the adaptation episode")
        ax.set_ylabel("success (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
