"""The one batched rollout where a model meets a task. ES and gradient training both call it.

``rollout`` steps P individuals x E episodes in lock-step: one model call and one task call per
time step, for all P x E agents at once. All individuals see the same E sampled tasks (the task
state is drawn once for E episodes and tiled P times), which makes their fitnesses comparable.
Agents whose episode has ended are masked out, and the loop stops as soon as every episode has
ended. When fewer than ``COMPACT_BELOW`` of the stepped agents are still alive (early terminations,
e.g. Ant falling over), a scoring rollout (no record / trace, greedy actions) drops the finished ones:
from then on it steps only the live agents, each with its individual's parameters, so no model or
task compute goes to episodes that have ended. The result is the same as stepping everyone (tested).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metods_evo import fused_rollout
from metods_evo.episodes import RolloutResult, reset_episodes
from metods_evo.tasks.base import Task

COMPACT_BELOW = 0.5
"""Compact the batch once the live agents are fewer than this fraction of the agents stepped."""


def tile(state: dict[str, Tensor], copies: int, noise_episodes: int | None = None) -> dict[str, Tensor]:
    """Repeat a batched state ``[E, ...]`` -> ``[copies * E, ...]``, individual-major (index p * E + e).

    ``_episodes`` marks the tiling so the task draws its step noise once per episode (``Task.uniform``); with
    ``noise_episodes`` = E / 2 (antithetic episodes), once per pair of twins.
    """
    first = next(iter(state.values()))
    tiled = {k: v.repeat(copies, *([1] * (v.dim() - 1))) for k, v in state.items()}
    tiled["_episodes"] = first.new_empty(noise_episodes or first.shape[0], 0)
    return tiled


def select_actions(logits: Tensor, mode: str, generator: torch.Generator | None, shared_axes: int = 0) -> Tensor:
    """Greedy (argmax) or sampled (Gumbel-max, seeded by ``generator``) categorical actions.

    The sampling noise is drawn for ``logits.shape[shared_axes:]`` and broadcast over the leading
    ``shared_axes`` axes: the rollout shares it across the population (common random numbers), so an
    individual's sampled actions do not depend on the population size or its place in it.
    """
    if mode == "greedy":
        return logits.argmax(-1)
    uniform = torch.rand(logits.shape[shared_axes:], generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(uniform.clamp_(1e-10, 1.0)))
    return (logits + gumbel).argmax(-1)


def sample_gaussian(mean: Tensor, log_std: Tensor, mode: str, generator: torch.Generator | None,
                    shared_axes: int = 0) -> Tensor:
    """Continuous actions: the mean (greedy) or mean + std * N(0, 1) noise shared over ``shared_axes``.

    ``log_std`` ``[P, A]`` is state-independent (learnt per individual) and broadcast over the agents. The
    returned action is unbounded; ``env_action`` clips it into the task's bounds.
    """
    if mode == "greedy":
        return mean
    noise = torch.randn(mean.shape[shared_axes:], generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + _agent_axes(log_std, mean).exp() * noise


def env_action(action: Tensor, task: Task) -> Tensor:
    """What the environment receives (and the model sees as its previous action): continuous actions clipped
    into ``[task.action_low, task.action_high]`` (as CleanRL's ``ClipAction``); discrete ones unchanged."""
    return action if task.discrete else action.clamp(task.action_low, task.action_high)


def _agent_axes(log_std: Tensor, like: Tensor) -> Tensor:
    """``[P, A]`` -> ``[P, 1, ..., A]`` broadcasting against ``like`` ``[P, E, ..., A]``."""
    return log_std.view(log_std.shape[0], *([1] * (like.dim() - 2)), log_std.shape[-1])


def policy_terms(out: Tensor, action: Tensor, log_std: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Log-probability of ``action`` and entropy of the policy: categorical with logits ``out``, or (when
    ``log_std`` is given) a diagonal Gaussian with mean ``out``, evaluated on the unclipped action."""
    if log_std is not None:
        log_std = _agent_axes(log_std, out).expand_as(out)
        z = (action - out) / log_std.exp()
        log_prob = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_prob, (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
    logp_all = torch.log_softmax(out, -1)
    return logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def first_action(task: Task, batch: tuple[int, ...], device: torch.device) -> Tensor:
    """The "previous action" at an episode's start: -1 (none) for discrete tasks, zeros for continuous ones."""
    if task.discrete:
        return torch.full(batch, -1, dtype=torch.long, device=device)
    return torch.zeros(*batch, task.action_dim, device=device)


def rollout(model, params: dict[str, Tensor], task: Task, num_episodes: int, generator: torch.Generator, *,
            action_mode: str = "greedy", record: bool = False, trace: bool = False,
            truncate: int = 0, compact: bool = True, fuse: bool = True, antithetic: bool = False) -> RolloutResult:
    """Run ``num_episodes`` episodes for each of the P individuals in ``params``.

    ``record=True`` keeps log-probs, values and entropies (with autograd when enabled) and the model's
    inputs for policy-gradient training; ``truncate=K`` cuts the gradient through the model state
    every K steps (truncated BPTT). ``trace=True`` keeps per-step model states and actions for analysis.
    The model state is a dict of ``[P, E, ...]`` tensors (MetODS: the plastic weights ``W``).
    ``compact`` lets a greedy scoring rollout drop finished agents (module docstring; needs no record/trace).
    ``fuse`` lets a greedy scoring rollout of MetODS on Harlow run as one C++ pass per block of episodes
    (``metods_evo/fused_rollout.py``: the same result, where ``model.fused`` allows it); False: always this loop.
    ``antithetic`` plays E / 2 sampled episodes and their twins (``Task.mirror``): episode e + E / 2 is episode e
    with the hidden task parameter reversed and the same per-step noise.
    """
    if fuse and not (record or trace) and action_mode == "greedy" and not getattr(model, "stochastic", False):
        if fused_rollout.should_use(model, params, task, num_episodes):
            return fused_rollout.harlow_rollout(model, params, task, num_episodes, generator, antithetic=antithetic)
    pop = params[model.spec.names[0]].shape[0]
    task_state, obs = reset_episodes(task, num_episodes, generator, antithetic)
    noise_episodes = num_episodes // 2 if antithetic else num_episodes  # twins share their original's step noise
    task_state, obs = tile(task_state, pop, noise_episodes), obs.repeat(pop, 1)
    device, batch = obs.device, (pop, num_episodes)
    log_std = None if task.discrete else params["log_std"]
    if getattr(model, "stochastic", False):  # e.g. the random baseline: its policy is its noise
        action_mode = "sample"
    model_state = model.initial_state(params, num_episodes, generator)
    inputs = {"state0": {k: v.detach().clone() for k, v in model_state.items()}} if record else {}
    observations, actions = [], []
    prev_action = first_action(task, batch, device)
    prev_reward = torch.zeros(batch, device=device)
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    finite = torch.ones(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    rewards, log_probs, values, entropies = [], [], [], []
    traces: dict[str, list[Tensor]] = {k: [] for k in (*model_state, "action", "obs")} if trace else {}
    # On an accelerator, checking "all done?" every step would sync with the host; check rarely there.
    check_every = 1 if device.type == "cpu" else 8
    compact = compact and not (record or trace) and action_mode == "greedy" and getattr(model, "compactable", True)
    full = (pop, num_episodes)  # the batch of the result; ``batch`` is what is stepped ((live agents, 1) once compact)
    rows = None  # flat indices p * E + e of the stepped agents once compact, else None (all of them, as a grid)
    all_lengths, all_finite, final_state = lengths, finite, {}  # the whole grid's, kept up to date at compactions
    model_steps = 0
    for t in range(task.max_steps):
        model_steps += math.prod(batch)
        out, value, model_state = model.step(params, model_state, obs.view(*batch, -1), prev_action, prev_reward)
        finite &= torch.isfinite(out).all(-1)
        out = torch.nan_to_num(out, nan=0.0, posinf=1e6, neginf=-1e6)
        if task.discrete:
            action = select_actions(out, action_mode, generator, shared_axes=1)
        else:
            action = sample_gaussian(out, log_std, action_mode, generator, shared_axes=1)
        if record:
            log_prob, entropy = policy_terms(out, action, log_std)
            log_probs.append(log_prob)
            entropies.append(entropy)
            values.append(value)
            observations.append(obs.view(*batch, -1))
            actions.append(action.detach())
        if truncate and (t + 1) % truncate == 0:
            model_state = {k: v.detach() for k, v in model_state.items()}
        if trace:
            for k, v in model_state.items():
                traces[k].append(v.detach())
            traces["action"].append(action.detach())
            traces["obs"].append(obs.view(*batch, -1))
        applied = env_action(action.detach(), task)
        task_state, obs, reward, done = task.step(task_state, applied.reshape(math.prod(batch), *applied.shape[2:]),
                                                  generator)
        reward = reward.view(batch) * alive
        lengths += alive
        alive = alive & ~done.view(batch)
        prev_action, prev_reward = applied, reward
        rewards.append(reward if rows is None else _merge(reward.new_zeros(full), reward, rows, full))
        if (t + 1) % check_every == 0:
            live = int(alive.sum()) if compact else int(bool(alive.any()))
            if live == 0:
                break
            if compact and live < COMPACT_BELOW * math.prod(batch):
                keep = alive.view(-1).nonzero().squeeze(1)
                all_lengths = _merge(all_lengths, lengths, rows, full)
                all_finite = _merge(all_finite, finite, rows, full)
                _save_rows(final_state, task_state, rows)
                # parameters: per individual on the grid, per agent once compact
                params = {k: v[keep // num_episodes if rows is None else keep] for k, v in params.items()}
                rows = keep if rows is None else rows[keep]
                model_state, task_state, obs, prev_action, prev_reward = _take(
                    keep, rows, noise_episodes, model_state, task_state, obs, prev_action, prev_reward, batch)
                batch = (len(rows), 1)
                lengths, finite = all_lengths.view(-1)[rows].view(batch), all_finite.view(-1)[rows].view(batch)
                alive = torch.ones(batch, dtype=torch.bool, device=device)
    final_model_state = {k: v.detach() for k, v in model_state.items()} if record else {}  # record: never compact
    if rows is not None:  # back to the [P, E] grid of the result
        lengths, finite = _merge(all_lengths, lengths, rows, full), _merge(all_finite, finite, rows, full)
        _save_rows(final_state, task_state, rows)
        task_state = final_state
    batch = full
    reward_trace = torch.stack(rewards)
    flat = reward_trace.reshape(reward_trace.shape[0], -1)
    metrics = {k: v.view(batch) for k, v in task.episode_metrics(flat, lengths.view(-1)).items()}
    metrics |= {k: v.view(batch) for k, v in task.state_metrics(task_state).items()}  # e.g. Meta-World's success
    stack = (lambda xs: torch.stack(xs)) if record else (lambda xs: None)
    if record:
        inputs |= {"obs": torch.stack(observations).detach(), "actions": torch.stack(actions)}
    return RolloutResult(reward_trace, lengths, metrics, finite, int(lengths.sum()), model_steps, stack(log_probs),
                         stack(values), stack(entropies), traces, inputs, task_state, final_model_state)


def _merge(whole: Tensor, x: Tensor, rows: Tensor | None, full: tuple[int, int]) -> Tensor:
    """Per-agent values of the stepped agents written into the whole ``[P, E]`` grid ``whole`` (a new tensor;
    ``rows=None``: ``x`` already is the whole grid)."""
    if rows is None:
        return x.view(full)
    return whole.reshape(-1).index_copy(0, rows, x.reshape(-1)).view(full)


def _save_rows(final: dict[str, Tensor], state: dict[str, Tensor], rows: Tensor | None) -> None:
    """Write the stepped agents' task state into ``final`` (the whole batch, individual-major), so that agents
    dropped by compaction keep their last state for ``task.state_metrics`` and ``episode_groups``."""
    for k, v in state.items():
        if k.startswith("_"):
            continue
        if rows is None:
            final[k] = v.clone()
        else:
            final[k][rows] = v


def _take(keep: Tensor, rows: Tensor, episodes: int, model_state: dict[str, Tensor], task_state: dict[str, Tensor],
          obs: Tensor, prev_action: Tensor, prev_reward: Tensor, batch: tuple[int, ...]) -> tuple:
    """Keep the agents ``keep`` (indices into the current flat batch) of the model and task state and the step's
    inputs. ``rows`` are their flat grid indices p * E + e: the task's per-episode noise follows ``rows % E``
    (``Task.uniform``), so every draw stays the same."""
    flat = math.prod(batch)

    def agents(x: Tensor) -> Tensor:  # [*batch, ...] -> the kept agents, [kept, 1, ...]
        return x.reshape(flat, *x.shape[2:])[keep].unsqueeze(1)

    model_state = {k: agents(v) for k, v in model_state.items()}
    task_state = {k: v if k == "_episodes" else v[keep] for k, v in task_state.items()}
    task_state["_episode_of"] = rows % episodes
    return model_state, task_state, obs[keep], agents(prev_action), agents(prev_reward)


def episodes_of(inputs: dict, index: Tensor) -> dict:
    """The recorded inputs of a subset of episodes (``index`` along the E axis)."""
    return {"state0": {k: v[:, index] for k, v in inputs["state0"].items()},
            "obs": inputs["obs"][:, :, index], "actions": inputs["actions"][:, :, index]}


def replay(model, params: dict[str, Tensor], task: Task, state0: dict[str, Tensor], obs: Tensor, actions: Tensor,
           rewards: Tensor, *, truncate: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Re-run recorded episodes through the model (with autograd) -> log-probs, values, entropies ``[T, P, E]``.

    The inputs are a recorded rollout's initial model state (``state0``, tensors ``[P, E, ...]``), ``obs [T, P,
    E, obs]``, ``actions`` (``[T, P, E]``, or ``[T, P, E, A]`` unclipped for continuous tasks) and ``rewards [T,
    P, E]`` (any subset of its episodes): the model sees exactly what it saw while acting, its state re-computed
    from each episode's start. PPO scores its updated policy with this.
    """
    # a model whose start state depends on theta (MetODS's learnt W0) re-derives it, or it would get no gradient
    state = model.replay_state(params, state0) if hasattr(model, "replay_state") else dict(state0)
    log_std = None if task.discrete else params["log_std"]
    prev_action = first_action(task, tuple(rewards.shape[1:]), rewards.device)
    prev_reward = torch.zeros(rewards.shape[1:], dtype=rewards.dtype, device=rewards.device)
    log_probs, values, entropies = [], [], []
    for t in range(actions.shape[0]):
        out, value, state = model.step(params, state, obs[t], prev_action, prev_reward)
        out = torch.nan_to_num(out, nan=0.0, posinf=1e6, neginf=-1e6)
        log_prob, entropy = policy_terms(out, actions[t], log_std)
        log_probs.append(log_prob)
        entropies.append(entropy)
        values.append(value)
        if truncate and (t + 1) % truncate == 0:
            state = {k: v.detach() for k, v in state.items()}
        prev_action, prev_reward = env_action(actions[t], task), rewards[t]
    return torch.stack(log_probs), torch.stack(values), torch.stack(entropies)
