"""Meta-World env steps per CPU second: the batched step (``metods_evo/tasks/metaworld_fast.py``) against stepping
every row through Meta-World's own ``env.step`` (the task with ``_use_fast_path = False``).

Each task steps a batch laid out as ES scores a population: ``--episodes`` (8) episodes, tasks drawn from the training
split, tiled for ``--individuals`` (8) individuals (64 rows, every task on 8 of them), for ``--steps`` (150) steps of
uniform random actions in [-1, 1] (rollouts of 100 steps, so the batch also crosses a rollout boundary). Both paths
get the same states and actions; the script checks, every step, that they return the same observation, reward and
state, bit for bit. Time is process CPU time (``time.process_time``), one torch thread, one simulation thread. The two
paths run interleaved step by step (the batched step first on odd steps), so load from other jobs on a shared machine
hits both alike; with ``--repeats`` rounds, each path's best round is reported.

Run::

    python benchmarks/metaworld_speed.py                    # reach and push: 1-2 CPU minutes
    python benchmarks/metaworld_speed.py --tasks metaworld-ml10 --steps 100
"""

from __future__ import annotations

import argparse
import time

import torch

from metods_evo.rollout import tile
from metods_evo.tasks import make_task


def measure(task_id: str, episodes: int, individuals: int, steps: int, seed: int) -> tuple[float, float]:
    """(batched, one-by-one) env steps per CPU second over ``steps`` steps of ``episodes`` x ``individuals`` rows."""
    fast, slow = make_task(task_id, rollout_steps=100), make_task(task_id, rollout_steps=100)
    slow._use_fast_path = False
    generator = torch.Generator().manual_seed(seed)
    state = tile(fast.reset(episodes, generator)[0], individuals)
    batch = episodes * individuals
    actions = [torch.rand(batch, 4, generator=generator) * 2 - 1 for _ in range(steps + 1)]
    for task in (fast, slow):  # untimed: builds the envs and records every task of the batch
        task.step(state, actions[-1], None)
    seconds = {"fast": 0.0, "slow": 0.0}
    states = {"fast": state, "slow": state}
    for t in range(steps):
        order = ("fast", "slow") if t % 2 else ("slow", "fast")
        out = {}
        for name in order:
            task = fast if name == "fast" else slow
            start = time.process_time()
            out[name] = task.step(states[name], actions[t], None)
            seconds[name] += time.process_time() - start
            states[name] = out[name][0]
        same = all(torch.equal(a, b) for a, b in zip(out["fast"][1:], out["slow"][1:]))
        if not same or not all(torch.equal(states["fast"][k], states["slow"][k]) for k in states["slow"]):
            raise SystemExit(f"error: {task_id}: the batched step differs from Meta-World's at step {t}")
    return batch * steps / seconds["fast"], batch * steps / seconds["slow"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["metaworld-reach", "metaworld-push"])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'task':<18} {'Meta-World step':>16} {'batched step':>14} {'ratio':>7}   (env steps per CPU second)")
    for task_id in args.tasks:
        rounds = [measure(task_id, args.episodes, args.individuals, args.steps, seed) for seed in range(args.repeats)]
        fast, slow = max(r[0] for r in rounds), max(r[1] for r in rounds)
        print(f"{task_id:<18} {slow:>16.0f} {fast:>14.0f} {fast / slow:>6.2f}x")


if __name__ == "__main__":
    main()
