"""Robot impairment (Chalvidal et al., 2022): a trained agent evaluated with one actuator held at zero, a damage
never seen in training, scored as the fraction of the same agent's intact return.

Every setting (intact, then each frozen actuator) is evaluated on the same seeded episodes, so directions and
initial states are shared and the scores differ only through the damage. The score of actuator K is
``return(K frozen) / return(intact)``, for all episodes and for each of the task's episode groups (forward /
backward); it is only meaningful where the intact return is positive, and is left out (None) where it is not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from metods_evo.config import RunConfig
from metods_evo.evaluate import evaluate_theta

TASK_OPTION = "frozen_actuator"


def impairment_report(cfg: RunConfig, theta: torch.Tensor, actuators: list[int], episodes: int,
                      seed: int) -> dict[str, Any]:
    """Evaluate intact and with each of ``actuators`` frozen -> ``{"intact": report, "frozen": {K: report},
    "scores": {K: {"all": fraction, group: fraction, ...}}}`` (fractions of the intact mean return)."""
    intact = evaluate_theta(cfg, theta, episodes, seed, task_options={TASK_OPTION: -1})
    frozen = {k: evaluate_theta(cfg, theta, episodes, seed, task_options={TASK_OPTION: k}) for k in actuators}
    scores = {k: _fractions(report, intact) for k, report in frozen.items()}
    return {"task": cfg.task, "episodes": episodes, "seed": seed, "action_mode": intact["action_mode"],
            "intact": intact, "frozen": frozen, "scores": scores}


def _mean_return(report: dict, group: str | None) -> float:
    part = report if group is None else report["groups"][group]
    return part["metrics"]["return"]["mean"]


def _fractions(report: dict, intact: dict) -> dict[str, float | None]:
    out = {}
    for group in (None, *intact.get("groups", {})):
        base = _mean_return(intact, group)
        out["all" if group is None else group] = _mean_return(report, group) / base if base > 0 else None
    return out


def format_markdown(result: dict[str, Any]) -> str:
    groups = list(result["intact"].get("groups", {}))
    head = ["setting", "return (all)", *(f"return ({g})" for g in groups), "score (all)", *(f"score ({g})" for g in
                                                                                           groups)]

    def row(name: str, report: dict, score: dict | None) -> str:
        returns = [f"{_mean_return(report, g):.2f}" for g in (None, *groups)]
        fractions = ["—" if score is None else ("n/a" if score[k] is None else f"{score[k]:.2f}")
                     for k in ("all", *groups)]
        return "| " + " | ".join([name, *returns, *fractions]) + " |"

    lines = [f"Impairment on {result['task']}: {result['episodes']} episodes per setting, seed {result['seed']}, "
             f"{result['action_mode']} actions. Score = mean return with the actuator frozen / intact mean return "
             "(n/a where the intact return is not positive).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             row("intact", result["intact"], None)]
    lines += [row(f"actuator {k} frozen", report, result["scores"][k]) for k, report in result["frozen"].items()]
    scores = [s["all"] for s in result["scores"].values() if s["all"] is not None]
    if scores:
        lines += ["", f"Mean score over the {len(scores)} actuators: {sum(scores) / len(scores):.2f}"]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], folder: Path, figure: bool = True) -> list[Path]:
    """impairment.json, impairment.md and (``figure``) impairment.png in ``folder`` (each written to a temp file,
    then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("impairment.json", json.dumps(result, indent=2)), ("impairment.md", format_markdown(result))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)
        paths.append(folder / name)
    if figure:
        paths.append(plot(result, folder / "impairment.png"))
    return paths


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(result["intact"].get("groups", {})) or [None]
    settings = [("intact", result["intact"])] + [(f"{k} frozen", r) for k, r in result["frozen"].items()]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(settings) * len(groups), 4), constrained_layout=True)
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        values = [_mean_return(report, group) for _, report in settings]
        ax.bar([x + i * width for x in range(len(settings))], values, width, label=group or "all episodes")
    ax.set_xticks([x + width * (len(groups) - 1) / 2 for x in range(len(settings))], [s for s, _ in settings],
                  rotation=30, ha="right")
    ax.axhline(0.0, color="gray", lw=0.6)
    ax.set_ylabel("mean return")
    ax.set_title(f"{result['task']}: return with one actuator frozen ({result['episodes']} episodes each)")
    ax.legend(fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
