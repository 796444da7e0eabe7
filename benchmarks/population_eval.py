"""Population evaluation throughput: one batched rollout versus one individual at a time.

What is measured (all on CPU, under ``torch.no_grad()``, greedy actions, the same MetODS model code):

* **batched**: the whole population, P = ``--popsize`` (256) individuals x E = ``--episodes`` (16) Harlow
  episodes, in ONE call of ``metods_evo.rollout.rollout`` (theta ``[P, D]``) -- how ES scores a generation.
* **one-at-a-time**: the per-individual path a user would otherwise write: loop over the individuals and,
  for each, loop over its episodes one by one (``rollout`` with P = 1, E = 1, i.e. ``P x E`` calls).
* **per-individual, episodes batched** (reference): loop over the individuals, one ``rollout`` each with
  P = 1, E = 16.

Every variant evaluates the same population theta = ``model.init_params`` + 0.1 * randn (seeded). Work is
counted as environment steps actually taken (the sum of ``RolloutResult.env_steps``) and compared as
env-steps/s, which does not depend on how many individuals were run. Looping over all 256 x 16 single
episodes is slow, so the two per-individual variants run only the first ``--loop-individuals`` (16)
individuals; the batched variant always runs the full P x E. After one warm-up of each variant, the
measurements are repeated ``--repeats`` times, interleaved (batched, one-at-a-time, per-individual, batched,
...) so that load from other jobs on a shared machine hits all variants alike; the table shows the median
of each and the ratio of the medians. The issue's target is batched / one-at-a-time >= 50x on 2 CPU cores.
The final verdict line is a report, not an assert: the script exits 0 either way.

A same-work check compares the per-individual E = 16 returns with the corresponding rows of the batched
rollout (same seed, and tasks use common random numbers, so they should agree).

Run::

    python benchmarks/population_eval.py                 # defaults: P=256, E=16, 1 thread (as training), 3 repeats
    python benchmarks/population_eval.py --json          # also print a machine-readable dict
    python benchmarks/population_eval.py --popsize 64 --loop-individuals 4 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from metods_evo.config import ModelConfig
from metods_evo.models.metods import MetODS
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task

TARGET = 50.0
ACTION_MODE = "greedy"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--popsize", type=int, default=256, help="population size P of the batched rollout")
    p.add_argument("--episodes", type=int, default=16, help="episodes E per individual")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (training defaults to 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions of each variant (interleaved)")
    p.add_argument("--loop-individuals", type=int, default=16,
                   help="individuals run by the per-individual variants (rate is scaled by env steps)")
    p.add_argument("--task", default="harlow", help="registered task id")
    p.add_argument("--n", type=int, default=20, help="neurons of the plastic layer")
    p.add_argument("--depth", type=int, default=3, help="read / write recursion depth S")
    p.add_argument("--seed", type=int, default=0, help="seed of theta and of the episodes")
    p.add_argument("--json", action="store_true", help="also print a machine-readable JSON dict")
    args = p.parse_args(argv)
    for name in ("popsize", "episodes", "threads", "repeats", "loop_individuals", "n", "depth"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.loop_individuals = min(args.loop_individuals, args.popsize)
    return args


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    """Run ``fn`` (which returns env steps) and return (env steps, wall seconds)."""
    start = time.perf_counter()
    steps = fn()
    return steps, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task = make_task(args.task)
    model = MetODS(ModelConfig(n=args.n, depth=args.depth), task.obs_dim, task.num_actions, task.action_dim)
    gen = torch.Generator().manual_seed(args.seed)
    base = model.init_params(gen)
    theta = base + 0.1 * torch.randn(args.popsize, base.numel(), generator=gen)  # [P, D]
    pop_params = model.spec.unflatten(theta)
    loop_n, episodes = args.loop_individuals, args.episodes
    one_params = [model.spec.unflatten(theta[i]) for i in range(loop_n)]  # P = 1 views, built outside the timing

    def batched() -> int:
        g = torch.Generator().manual_seed(args.seed)
        return rollout(model, pop_params, task, episodes, g, action_mode=ACTION_MODE).env_steps

    def one_at_a_time() -> int:
        steps = 0
        for params in one_params:
            g = torch.Generator().manual_seed(args.seed)
            for _ in range(episodes):
                steps += rollout(model, params, task, 1, g, action_mode=ACTION_MODE).env_steps
        return steps

    def per_individual() -> int:
        steps = 0
        for params in one_params:
            g = torch.Generator().manual_seed(args.seed)
            steps += rollout(model, params, task, episodes, g, action_mode=ACTION_MODE).env_steps
        return steps

    variants = {
        "batched": (batched, args.popsize * episodes, 1,
                    f"batched: P={args.popsize} x E={episodes} in 1 rollout call"),
        "one_at_a_time": (one_at_a_time, 1, loop_n * episodes,
                          f"one-at-a-time: P=1 x E=1, {loop_n} indiv x {episodes} ep = {loop_n * episodes} calls"),
        "per_individual": (per_individual, episodes, loop_n,
                           f"per-individual: P=1 x E={episodes}, {loop_n} calls (reference)"),
    }
    samples: dict[str, list[tuple[int, float]]] = {k: [] for k in variants}
    wall_start = time.perf_counter()
    with torch.no_grad():
        # Warm-up: one untimed run of every variant; the batched and per-individual warm-ups double as the
        # same-work check (same seed, so individual i's E episodes are the same tasks in both).
        g = torch.Generator().manual_seed(args.seed)
        pop_returns = rollout(model, pop_params, task, episodes, g, action_mode=ACTION_MODE).returns[:loop_n]
        one_returns = []
        for params in one_params:
            g = torch.Generator().manual_seed(args.seed)
            one_returns.append(rollout(model, params, task, episodes, g, action_mode=ACTION_MODE).returns[0])
        max_diff = float((pop_returns - torch.stack(one_returns)).abs().max())
        one_at_a_time()
        for _ in range(args.repeats):
            for name, (fn, *_) in variants.items():
                samples[name].append(timed(fn))
    wall = time.perf_counter() - wall_start

    rows = {}
    for name, (_, agents, calls, label) in variants.items():
        rates = [steps / secs for steps, secs in samples[name]]
        median_rate = statistics.median(rates)
        steps, secs = min(samples[name], key=lambda s: abs(s[0] / s[1] - median_rate))  # the median run
        rows[name] = {"label": label, "agents_per_call": agents, "calls": calls, "env_steps": steps,
                      "seconds": secs, "env_steps_per_s": median_rate, "all_env_steps_per_s": rates}
    batched_rate = rows["batched"]["env_steps_per_s"]
    for row in rows.values():
        row["ratio_batched_over_this"] = batched_rate / row["env_steps_per_s"]
    ratio = rows["one_at_a_time"]["ratio_batched_over_this"]
    verdict = "PASS" if ratio >= TARGET else "FAIL"

    print(f"population eval benchmark: task={args.task} model n={args.n} depth={args.depth} "
          f"({model.num_params} params/individual), actions={ACTION_MODE}, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, no_grad, repeats={args.repeats} (interleaved, median shown)")
    print(f"batched runs all {args.popsize} x {episodes}; per-individual variants run the first {loop_n} "
          f"individuals x {episodes} episodes and are compared by env-steps/s (size-independent)")
    header = f"{'variant':<62} {'agents/call':>11} {'env steps':>10} {'seconds':>9} {'env-steps/s':>12} {'ratio':>9}"
    print(header)
    print("-" * len(header))
    for row in rows.values():
        print(f"{row['label']:<62} {row['agents_per_call']:>11} {row['env_steps']:>10} {row['seconds']:>9.3f} "
              f"{row['env_steps_per_s']:>12.0f} {row['ratio_batched_over_this']:>8.1f}x")
    print("ratio = batched env-steps/s / this variant's env-steps/s; env steps and seconds are of the median run")
    print(f"same-work check: per-individual E={episodes} returns vs batched rows 0..{loop_n - 1}: "
          f"max |diff| = {max_diff:.3g}")
    print(f"total wall time (incl. check and warm-up): {wall:.1f} s")
    print(f"batched / one-at-a-time: {ratio:.1f}x (target >= {TARGET:.0f}x): {verdict}")
    if args.json:
        print(json.dumps({"config": vars(args), "num_params": model.num_params, "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "variants": rows, "same_work_max_abs_diff": max_diff,
                          "ratio_batched_over_one_at_a_time": ratio,
                          "ratio_batched_over_per_individual": rows["per_individual"]["ratio_batched_over_this"],
                          "target": TARGET, "pass": ratio >= TARGET, "wall_seconds": wall}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
