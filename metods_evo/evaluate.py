"""Evaluate a theta on N fresh episodes: the task's metrics as mean ± std, and reward per time step."""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from metods_evo.config import EVAL_CHUNK, ConfigError, RunConfig, apply_overrides, generation_seed, validate_task
from metods_evo.models import build_model
from metods_evo.rollout import rollout
from metods_evo.runs import RunDir
from metods_evo.tasks import TASKS, make_task

EVAL_STREAM, FINAL_STREAM, USER_STREAM = 1, 2, 3  # seed streams, disjoint from the training episodes (0)


def open_agent(path, *, task: str | None = None, task_options: dict[str, Any] | None = None,
               agent: str = "best") -> tuple[RunDir, RunConfig, torch.Tensor, dict[str, Any]]:
    """A run's agent, ready to play: (run, config, theta, ``task_options`` as coerced).

    ``agent`` picks the theta: "best" (agent.pt, the best periodic evaluation) or "last" (the latest checkpoint's).

    The config is the run's, on the CPU where there is no GPU (torch threads set to the run's), with ``task``
    (default: the run's own) and ``task_options`` (e.g. ``{"size": "10"}``) applied and checked. A task whose
    observation / action sizes do not fit the agent is a ConfigError.
    """
    run = RunDir.open(path)
    cfg = run.config()
    torch.set_num_threads(cfg.threads)
    if cfg.device != "cpu" and not torch.cuda.is_available():
        cfg.device = "cpu"
    trained_on = cfg.task if not cfg.task_options else f"{cfg.task} {cfg.task_options}"
    own_task = task in (None, cfg.task) and not task_options
    if task is not None and task != cfg.task:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choose from {', '.join(sorted(TASKS))}")
        cfg.task, cfg.task_options = task, {}
    task_options = task_options or {}
    apply_overrides(cfg, {f"task.{key}": str(value) for key, value in task_options.items()}, TASKS[cfg.task].options())
    options = {key: cfg.task_options[key] for key in task_options}
    theta = run.load_agent_state(agent)["theta"]
    if own_task:  # a mismatch is config.json's, not the task's
        run.check_size(cfg, theta.numel(), f"its {agent} theta")
    elif build_model(cfg, validate_task(cfg.task, cfg.task_options)).num_params != theta.numel():
        raise ConfigError(f"{path}: task {cfg.task!r} {options or ''} has other observation / action sizes than "
                          f"{trained_on!r}, which this agent was trained on")
    return run, cfg, theta, options


@torch.no_grad()
def play_episodes(cfg: RunConfig, theta: torch.Tensor, episodes: int, seed: int, *, task_options=None,
                  chunk: int = EVAL_CHUNK) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Play ``theta`` on ``episodes`` episodes (in chunks of ``chunk``) with the run's action mode.

    Returns (each metric per episode [episodes], reward per step [max_steps, episodes] (zero after each episode's
    end), each episode group's mask [episodes]). The same seed gives every agent of a task the same episodes.
    """
    task = make_task(cfg.task, device=cfg.device, **{**cfg.task_options, **(task_options or {})})
    model = build_model(cfg, task)
    params = model.spec.unflatten(theta.to(cfg.device, torch.float32))
    generator = torch.Generator(device=task.device).manual_seed(seed)
    per_episode: dict[str, list[torch.Tensor]] = {}
    step_rewards: list[torch.Tensor] = []
    group_masks: dict[str, list[torch.Tensor]] = {}
    done = 0
    while done < episodes:
        count = min(chunk, episodes - done)
        result = rollout(model, params, task, count, generator, action_mode=cfg.action_mode())
        for name, values in result.metrics.items():
            per_episode.setdefault(name, []).append(values[0].double().cpu())
        rewards = result.rewards[:, 0].double().cpu()  # [T, count]
        step_rewards.append(torch.nn.functional.pad(rewards, (0, 0, 0, task.max_steps - rewards.shape[0])))
        for name, mask in task.episode_groups(result.task_state).items():
            group_masks.setdefault(name, []).append(mask.reshape(-1)[:count].cpu())
        done += count
    return ({name: torch.cat(chunks) for name, chunks in per_episode.items()}, torch.cat(step_rewards, 1),
            {name: torch.cat(chunks) for name, chunks in group_masks.items()})


def evaluate_theta(cfg: RunConfig, theta: torch.Tensor, episodes: int, seed: int, *, task_options=None,
                   chunk: int = EVAL_CHUNK) -> dict[str, Any]:
    """Score ``theta`` on ``episodes`` episodes (in chunks of ``chunk``) with the run's action mode.

    Returns ``{"episodes", "metrics": {name: {"mean", "std"}}, "reward_per_step": [T floats], "groups": {...}}``;
    ``groups`` holds, per subset of episodes the task names (``Task.episode_groups``, e.g. forward / backward
    runs), its episode count, metrics and reward per step.
    """
    values, rewards, masks = play_episodes(cfg, theta, episodes, seed, task_options=task_options, chunk=chunk)
    groups = {}
    for name, mask in masks.items():
        if mask.any():
            groups[name] = {"episodes": int(mask.sum()), "metrics": _moments({k: v[mask] for k, v in values.items()}),
                            "reward_per_step": rewards[:, mask].mean(1).tolist()}
    return {"task": cfg.task, "task_options": {**cfg.task_options, **(task_options or {})}, "episodes": episodes,
            "action_mode": cfg.action_mode(), "seed": seed, "metrics": _moments(values),
            "reward_per_step": rewards.mean(1).tolist(), "groups": groups}


def _moments(values: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    return {name: {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0} for name, v in values.items()}


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of mean ± std per metric."""
    rows = [(name, f"{m['mean']:.3f} ± {m['std']:.3f}") for name, m in report["metrics"].items()]
    for group, part in report.get("groups", {}).items():
        main = next(iter(part["metrics"]))
        stats = part["metrics"][main]
        rows.append((f"{main} [{group}, {part['episodes']} episodes]", f"{stats['mean']:.3f} ± {stats['std']:.3f}"))
    width = max(len(r[0]) for r in rows)
    header = (f"{report['task']} {report['task_options'] or ''} — {report['episodes']} episodes, "
              f"{report.get('action_mode', 'greedy')} actions (seed {report['seed']})")
    return "\n".join([header.strip(), *(f"  {name:<{width}}  {value}" for name, value in rows)])


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)


def final_seed(cfg: RunConfig) -> int:
    return generation_seed(cfg.seed, 0, FINAL_STREAM)
