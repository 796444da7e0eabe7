"""Figures of a trained MetODS run: what the plastic weights W do within an episode.

``analyze(run_dir)`` plays a few hundred fresh episodes with the run's agent and writes, under
``RUN/analysis/`` (or ``out``):

* ``w_pca.png``: the trajectories of W_t (flattened) on the top-2 principal components. On Harlow they are
  coloured by the outcome of the first choice: the paper reports two modes (first guess right or wrong);
  on other tasks by the episode's return.
* ``energy.png``: the Hopfield energy E_W(v, v) = -v^T W_t v on the plane of the top-2 principal components
  of the layer's output v (= v_S), at several steps of one episode, with that episode's v trajectory.
* ``delta_w.png``: the synaptic change sum_ij |W_t - W_{t-1}| per step against the reward the agent takes in
  at that step. The model reads r_{t-1} in step t (``embed``), so that is the reward that can drive dW_t.
* ``reward_per_step.png``: the reward at each step, mean over episodes with a 95 % confidence band.
* ``saturation.png``: whether the plastic memory saturates within an episode, per step: mean |W_t| and the
  fraction of its entries clipped at ``model.plastic_bound``, and the fraction of the first read's
  pre-activations W_{t-1} v0 where sigma is flat (sigma' below a tenth of its value at 0; tanh and sigmoid only).
  A saturated read passes almost no gradient: this is how the S = 2 maze stall was found (docs/lab-notes.md).
* ``analysis.json``: the numbers behind the figures.

The rollout traces W but not v, so v is recomputed from the traced inputs with the model's own ``embed`` and
``plastic_step``; recomputing W the same way reproduces the traced W exactly (``tests/test_analysis.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metods_evo.agent import load_agent
from metods_evo.config import ConfigError, generation_seed, validate_task
from metods_evo.evaluate import USER_STREAM
from metods_evo.rollout import rollout

DEFAULT_EPISODES = 256
ENERGY_PANELS = 5
ENERGY_GRID = 60
FIRST_CHOICE = {1: ("first choice correct", "tab:green"), 0: ("first choice wrong", "tab:red"),
                -1: ("no choice made", "tab:gray")}


@dataclass
class Episodes:
    """One individual's traced episodes, time-major; steps at or after an episode's length are not valid."""

    W0: Tensor  # [E, N, N] plastic state before the first step
    W: Tensor  # [T, E, N, N] plastic state after each step
    v0: Tensor  # [T, E, N] the embedding f(s_t, a_{t-1}, r_{t-1}) at each step (recomputed)
    v: Tensor  # [T, E, N] output v_S of the plastic layer at each step (recomputed)
    actions: Tensor  # [T, E]
    rewards: Tensor  # [T, E] reward paid for the action of step t
    lengths: Tensor  # [E]
    metrics: dict[str, Tensor]  # task episode metrics {name: [E]}

    @property
    def valid(self) -> Tensor:
        return torch.arange(self.W.shape[0]).view(-1, 1) < self.lengths.view(1, -1)


def check_supported(model, task) -> None:
    """Only a plastic model on a discrete-action task has the W and v these figures are made of."""
    if not hasattr(model, "plastic_step"):
        raise ConfigError(f"analyze needs a MetODS model with plastic weights, not {type(model).__name__}")
    if not task.discrete:
        raise ConfigError(f"analyze supports discrete-action tasks; {type(task).__name__} has continuous actions")


@torch.no_grad()
def replay_plastic(model, params: dict[str, Tensor], w0: Tensor, obs: Tensor, actions: Tensor,
                   rewards: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Re-run the plastic layer on recorded inputs -> (v0 ``[T, P, E, N]``, v ``[T, P, E, N]``, W ``[T, P, E, N, N]``).

    The same calls as ``model.step`` with the inputs the rollout fed it (previous action, previous reward),
    so W comes out identical to the traced one and v is what the policy read at each step.
    """
    state = model.start_state(w0)
    prev_action = torch.full(actions.shape[1:], -1, dtype=torch.long)
    prev_reward = torch.zeros(rewards.shape[1:], dtype=rewards.dtype)
    v0s, vs, ws = [], [], []
    for t in range(actions.shape[0]):
        v0s.append(model.embed(params, obs[t], prev_action, prev_reward, state.get("out")))
        v, state = model.plastic_update(params, state, v0s[-1])
        vs.append(v)
        ws.append(state["W"])
        prev_action, prev_reward = actions[t], rewards[t]
    return torch.stack(v0s), torch.stack(vs), torch.stack(ws)


@torch.no_grad()
def collect(model, params: dict[str, Tensor], task, episodes: int, seed: int, action_mode: str) -> Episodes:
    """Play ``episodes`` episodes with one individual (``params`` with P = 1) and recompute v."""
    check_supported(model, task)
    result = rollout(model, params, task, episodes, torch.Generator().manual_seed(seed), action_mode=action_mode,
                     trace=True, record=True)
    w0 = result.inputs["state0"]["W"]  # the plastic state each episode started from (random W0 included)
    actions = torch.stack(result.trace["action"])
    v0, v, _ = replay_plastic(model, params, w0, torch.stack(result.trace["obs"]), actions, result.rewards)
    return Episodes(W0=w0[0], W=torch.stack(result.trace["W"])[:, 0], v0=v0[:, 0], v=v[:, 0], actions=actions[:, 0],
                    rewards=result.rewards[:, 0], lengths=result.lengths[0],
                    metrics={k: m[0] for k, m in result.metrics.items()})


def pca(x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Principal components of the rows of ``x [M, D]`` -> (mean ``[D]``, components ``[k, D]``, explained
    variance ratio ``[k]``), by an SVD of the centred data, in float64 so small trailing variances survive."""
    x = x.double()
    mean = x.mean(0)
    _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
    variance = singular.square()
    return mean, vh[:k], variance[:k] / variance.sum().clamp(min=1e-300)


def hopfield_energy(w: Tensor, v1: Tensor, v2: Tensor) -> Tensor:
    """E_W(v1, v2) = -v1^T W v2, batched over leading axes: ``w [..., N, N]``, ``v1, v2 [..., N]``."""
    return -(v1 * (w @ v2.unsqueeze(-1)).squeeze(-1)).sum(-1)


def weight_change(w: Tensor, w0: Tensor) -> Tensor:
    """sum_ij |W_t - W_{t-1}| per step ``[T, E]``, with W_{-1} the initial state ``w0 [E, N, N]``."""
    previous = torch.cat([w0.unsqueeze(0), w[:-1]])
    return (w - previous).abs().sum((-1, -2))


def read_preactivation(w: Tensor, w0: Tensor, v0: Tensor) -> Tensor:
    """``[T, E, N]``: W_{t-1} v0_t, what sigma receives in the first read of step t (s = 1: W^(0) = W_{t-1}).
    Two products rather than one over ``cat([w0, w[:-1]])``: no copy of the [T, E, N, N] trace."""
    first = (w0 @ v0[0].unsqueeze(-1)).squeeze(-1)
    return torch.cat([first.unsqueeze(0), (w[:-1] @ v0[1:].unsqueeze(-1)).squeeze(-1)])


# sigma'(x) < FLAT * sigma'(0) beyond these |x|: tanh' = 1 - tanh^2 = FLAT, sigmoid' = s (1 - s) = FLAT / 4
FLAT = 0.1
FLAT_FROM = {"tanh": math.atanh(math.sqrt(1 - FLAT)), "sigmoid": 2 * math.atanh(math.sqrt(1 - FLAT))}


def reward_inputs(rewards: Tensor) -> Tensor:
    """``[T, E]``: the reward the model reads at step t, r_{t-1} (0 at the first step)."""
    return torch.cat([torch.zeros_like(rewards[:1]), rewards[:-1]])


def first_choice_outcome(rewards: Tensor) -> Tensor:
    """Per episode ``[E]``: 1 if the first non-zero reward (Harlow's trial 1) was positive, 0 if negative,
    -1 if there was none. Computed from the rewards, independently of the task's metrics."""
    nonzero = rewards != 0
    first = nonzero.long().argmax(0)  # index of the first non-zero reward (0 when none)
    sign = rewards.gather(0, first.unsqueeze(0))[0]
    return torch.where(nonzero.any(0), (sign > 0).long(), torch.full_like(first, -1))


# ---------------------------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)  # then renamed: a kill mid-write never leaves a truncated figure
    _pyplot().close(fig)
    tmp.replace(path)


def plot_w_pca(data: Episodes, path: Path, title: str) -> dict:
    """W trajectories (initial state included) on PC1-PC2 and PC1 against time."""
    plt = _pyplot()
    flat = data.W.flatten(-2)  # [T, E, N*N]
    mean, components, ratio = pca(flat[data.valid], 3)
    project = lambda w: ((w.double() - mean) @ components[:2].T).numpy()  # noqa: E731
    start = project(data.W0.flatten(-2))
    points = project(flat)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    harlow = "trial1_correct" in data.metrics
    outcome = first_choice_outcome(data.rewards)
    returns = data.metrics["return"]
    cmap, norm = plt.get_cmap("viridis"), plt.Normalize(float(returns.min()), float(returns.max()) + 1e-9)
    for e in range(data.W.shape[1]):
        length = int(data.lengths[e])
        trajectory = [start[e], *points[:length, e]]
        color = FIRST_CHOICE[int(outcome[e])][1] if harlow else cmap(norm(float(returns[e])))
        xs, ys = zip(*trajectory)
        axes[0].plot(xs, ys, lw=0.6, alpha=0.35, color=color)
        axes[0].plot(xs[-1], ys[-1], "o", ms=2.5, color=color)
        axes[1].plot(range(-1, length), xs, lw=0.6, alpha=0.35, color=color)
    if harlow:
        for key, (label, color) in FIRST_CHOICE.items():
            count = int((outcome == key).sum())
            if count:
                axes[0].plot([], [], color=color, label=f"{label} ({count})")
        axes[0].legend(fontsize=8)
    else:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], label="episode return")
    axes[0].set(xlabel=f"PC1 of W ({ratio[0]:.0%})", ylabel=f"PC2 of W ({ratio[1]:.0%})")
    axes[1].set(xlabel="step t (-1: initial W)", ylabel="PC1 of W")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)
    final = points[(data.lengths - 1).numpy(), range(len(data.lengths))]  # [E, 2] end of each episode
    summary = {"explained_variance_ratio": ratio.tolist(), "points": int(data.valid.sum())}
    if harlow:
        summary["first_choice_counts"] = {FIRST_CHOICE[k][0]: int((outcome == k).sum()) for k in FIRST_CHOICE}
        summary["final_pc12_mean_by_first_choice"] = {
            FIRST_CHOICE[k][0]: final[(outcome == k).numpy()].mean(0).tolist() for k in (1, 0) if (outcome == k).any()}
    return summary


def plot_energy(data: Episodes, episode: int, path: Path, title: str) -> dict:
    """Contours of -v^T W_t v over the plane of the top-2 PCs of v, at evenly spaced steps of one episode."""
    plt = _pyplot()
    mean, components, ratio = pca(data.v[data.valid], 2)
    coords = ((data.v.double() - mean) @ components.T)[data.valid]  # [M, 2] every episode's v on the plane
    low, high = coords.min(0).values, coords.max(0).values
    margin = 0.15 * (high - low).clamp(min=1e-6)
    a = torch.linspace(float(low[0] - margin[0]), float(high[0] + margin[0]), ENERGY_GRID, dtype=torch.float64)
    b = torch.linspace(float(low[1] - margin[1]), float(high[1] + margin[1]), ENERGY_GRID, dtype=torch.float64)
    grid_a, grid_b = torch.meshgrid(a, b, indexing="xy")
    grid_v = mean + grid_a.unsqueeze(-1) * components[0] + grid_b.unsqueeze(-1) * components[1]  # [G, G, N]
    length = int(data.lengths[episode])
    steps = sorted({round(x) for x in torch.linspace(0, length - 1, ENERGY_PANELS).tolist()})
    trajectory = ((data.v[:length, episode].double() - mean) @ components.T).numpy()
    inputs = reward_inputs(data.rewards)[:, episode]
    fig, axes = plt.subplots(1, len(steps), figsize=(3.4 * len(steps), 3.6), constrained_layout=True, squeeze=False)
    summary = {"episode": episode, "steps": steps, "v_explained_variance_ratio": ratio.tolist(), "min": [], "max": []}
    for ax, t in zip(axes[0], steps):
        energy = hopfield_energy(data.W[t, episode].double(), grid_v, grid_v)
        summary["min"].append(float(energy.min()))
        summary["max"].append(float(energy.max()))
        contour = ax.contourf(grid_a.numpy(), grid_b.numpy(), energy.numpy(), levels=20, cmap="coolwarm")
        fig.colorbar(contour, ax=ax, shrink=0.8)
        ax.plot(*trajectory.T, "--", lw=0.7, color="black", alpha=0.4)
        ax.plot(*trajectory[: t + 1].T, "o-", ms=2.5, lw=1.0, color="black")
        ax.plot(*trajectory[t], "*", ms=12, color="yellow", markeredgecolor="black")
        ax.set_title(f"W at t = {t}, r(t-1) = {float(inputs[t]) + 0.0:+g}", fontsize=9)
        ax.set_xlabel(f"PC1 of v ({ratio[0]:.0%})")
    axes[0][0].set_ylabel(f"PC2 of v ({ratio[1]:.0%})")
    fig.suptitle(f"{title}: Hopfield energy -vᵀW_t v, episode {episode} (star: v_t)")
    _save(fig, path)
    return summary


def plot_delta_w(data: Episodes, episode: int, path: Path, title: str) -> dict:
    """|dW_t| against the reward taken in at step t, over all steps, and along one example episode."""
    plt = _pyplot()
    change, inputs, valid = weight_change(data.W, data.W0), reward_inputs(data.rewards), data.valid
    x, y = inputs[valid], change[valid]
    values = torch.unique(x)
    spread = float(x.max() - x.min()) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    jitter = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.15 * spread
    axes[0].scatter((x + jitter).numpy(), y.numpy(), s=3, alpha=0.25, color="tab:blue")
    by_reward = {f"{float(r) + 0.0:g}": float(y[x == r].mean()) for r in values} if len(values) <= 10 else {}
    if by_reward:
        axes[0].plot([float(r) for r in values], list(by_reward.values()), "D", color="black", ms=7, label="mean")
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="reward taken in at step t, r(t-1)", ylabel="Σ|W_t − W_{t−1}|")
    length = int(data.lengths[episode])
    axes[1].plot(range(length), change[:length, episode].numpy(), "o-", ms=3, color="tab:blue", label="Σ|ΔW_t|")
    for t in torch.nonzero(inputs[:length, episode]).flatten().tolist():
        color = "tab:green" if inputs[t, episode] > 0 else "tab:red"
        axes[1].axvline(t, color=color, alpha=0.5, lw=2)
    for present, color, label in ((x > 0).any(), "tab:green", "r(t-1) > 0"), ((x < 0).any(), "tab:red", "r(t-1) < 0"):
        if present:
            axes[1].plot([], [], color=color, lw=2, label=label)
    axes[1].set(xlabel=f"step t of episode {episode}", ylabel="Σ|W_t − W_{t−1}|")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: synaptic change per step against reward")
    _save(fig, path)
    rewarded = x != 0
    top = y >= torch.quantile(y.double(), 0.95).float()
    return {"reward": "r(t-1), the reward the model reads at step t", "mean_by_reward": by_reward,
            "mean_rewarded": float(y[rewarded].mean()) if rewarded.any() else None,
            "mean_unrewarded": float(y[~rewarded].mean()) if (~rewarded).any() else None,
            "rewarded_steps": int(rewarded.sum()), "unrewarded_steps": int((~rewarded).sum()),
            "rewarded_fraction_of_all_steps": float(rewarded.float().mean()),
            "rewarded_fraction_of_top5pct_changes": float(rewarded[top].float().mean())}


def plot_saturation(data: Episodes, bound: float, activation: str, path: Path, title: str) -> dict:
    """Per step: mean |W_t|, the fraction of W_t's entries at +-bound, and the fraction of flat reads."""
    plt = _pyplot()
    valid = data.valid
    count = valid.sum(1).clamp(min=1).double()

    def per_step(x: Tensor) -> Tensor:  # [T, E] -> mean over the episodes still running at t, [T]
        return (x.double() * valid).sum(1) / count

    size, w_abs_entries = data.W.shape[-1] ** 2, data.W.abs()  # one pass over the trace: it is [T, E, N, N]
    w_abs = per_step(w_abs_entries.sum((-1, -2)) / size)
    clipped = per_step((w_abs_entries >= bound).sum((-1, -2)) / size) if bound > 0 else None
    pre = read_preactivation(data.W, data.W0, data.v0).abs()
    pre_abs = per_step(pre.mean(-1))
    flat = per_step((pre > FLAT_FROM[activation]).double().mean(-1)) if activation in FLAT_FROM else None
    steps = range(len(w_abs))
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4), constrained_layout=True)
    panels = ((axes[0], w_abs, "mean |W_t|", clipped, f"fraction of W_t's entries at ±{bound:g} (plastic_bound)",
               "plastic weights W_t"),
              (axes[1], pre_abs, "mean |W_{t-1} v0_t|", flat,
               f"fraction where {activation}' < {FLAT:g} {activation}'(0)" if flat is not None else "",
               f"first read, {activation}(W_{{t-1}} v0_t)"))
    for ax, magnitude, magnitude_label, fraction, fraction_label, panel_title in panels:
        ax.plot(steps, magnitude.numpy(), color="tab:blue", label=magnitude_label)
        ax.set(xlabel="step t", ylabel=magnitude_label, title=panel_title)
        ax.tick_params(axis="y", labelcolor="tab:blue")
        ax.grid(alpha=0.3)
        if fraction is not None:  # fractions on their own 0-1 axis, so a small magnitude axis cannot flatten them
            twin = ax.twinx()
            twin.plot(steps, fraction.numpy(), color="tab:red", label=fraction_label)
            twin.set_ylim(-0.02, 1.02)
            twin.set_ylabel("fraction", color="tab:red")
            twin.tick_params(axis="y", labelcolor="tab:red")
            ax.plot([], [], color="tab:red", label=fraction_label)
        ax.legend(fontsize=8, loc="center right")
    fig.suptitle(f"{title}: saturation of the plastic memory (mean over {valid.shape[1]} episodes)")
    _save(fig, path)
    last = int(valid.any(1).nonzero().max())
    return {"plastic_bound": bound, "activation": activation, "mean_abs_w": w_abs.tolist(),
            "clipped_fraction": clipped.tolist() if clipped is not None else None,
            "mean_abs_read_preactivation": pre_abs.tolist(),
            "flat_read_fraction": flat.tolist() if flat is not None else None,
            "at_last_step": {"step": last, "mean_abs_w": float(w_abs[last]),
                             "clipped_fraction": float(clipped[last]) if clipped is not None else None,
                             "flat_read_fraction": float(flat[last]) if flat is not None else None}}


def plot_reward_per_step(data: Episodes, path: Path, title: str) -> dict:
    """Mean reward at each step over episodes (zero after an episode's end, as ``evaluate`` counts it)."""
    plt = _pyplot()
    rewards = data.rewards.double()
    mean, ci = rewards.mean(1), 1.96 * rewards.std(1) / max(rewards.shape[1], 1) ** 0.5
    steps = range(len(mean))
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.fill_between(steps, (mean - ci).numpy(), (mean + ci).numpy(), alpha=0.3, label="95 % CI of the mean")
    ax.plot(steps, mean.numpy(), "o-", ms=3, label=f"mean over {rewards.shape[1]} episodes")
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="step t", ylabel="reward", title=f"{title}: reward per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return {"mean": mean.tolist(), "ci95": ci.tolist()}


# ---------------------------------------------------------------------------------------------- entry point
def analyze(run_dir, out=None, episodes: int = DEFAULT_EPISODES, seed: int | None = None,
            agent: str = "best") -> list[Path]:
    """Write the figures and ``analysis.json`` of a run's best (or ``agent="last"``) agent; returns the paths."""
    player = load_agent(run_dir, agent=agent)  # a missing or corrupt run raises RunError, a one-line CLI error
    cfg = player.cfg
    task = validate_task(cfg.task, cfg.task_options)
    seed = seed if seed is not None else generation_seed(cfg.seed, 0, USER_STREAM)
    data = collect(player.model, player.params, task, episodes, seed, cfg.action_mode())
    if not (torch.isfinite(data.W).all() and torch.isfinite(data.v).all()):
        raise ConfigError(f"{run_dir}: the agent's plastic weights become non-finite; nothing to analyze")
    if int(data.valid.sum()) < 3:
        raise ConfigError(f"too few steps to analyze ({int(data.valid.sum())}); use more --episodes")
    out = Path(out) if out is not None else Path(run_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    title = f"{cfg.task} ({cfg.optimizer})"
    wrong_first = torch.nonzero(first_choice_outcome(data.rewards) == 0).flatten()
    # On Harlow, an episode whose first guess was wrong shows W overturning its first preference.
    example = int(wrong_first[0]) if "trial1_correct" in data.metrics and len(wrong_first) else 0
    paths = [out / name for name in ("w_pca.png", "energy.png", "delta_w.png", "reward_per_step.png",
                                     "saturation.png")]
    returns = data.metrics["return"].double()
    report = {"run": str(run_dir), "agent": agent, "task": cfg.task, "task_options": cfg.task_options,
              "episodes": episodes, "seed": seed, "action_mode": cfg.action_mode(),
              "return": {"mean": float(returns.mean()), "std": float(returns.std()) if episodes > 1 else 0.0},
              "w_pca": plot_w_pca(data, paths[0], title),
              "example_episode": example,
              "energy": plot_energy(data, example, paths[1], title),
              "delta_w": plot_delta_w(data, example, paths[2], title),
              "reward_per_step": plot_reward_per_step(data, paths[3], title),
              "saturation": plot_saturation(data, cfg.model.plastic_bound, cfg.model.activation, paths[4], title)}
    json_path = out / "analysis.json"
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(json_path)
    return [*paths, json_path]
