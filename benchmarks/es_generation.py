"""Time of one whole ES generation (sample, batched rollout, fitness, searcher update) at population scale.

What is measured, for each ``--devices`` entry (e.g. ``cpu,cuda``), on ``--task`` (harlow) with that task's
ES preset (``metods_evo.config.make_config``) and ``--popsize`` x ``--episodes`` (10,000 x 16) agents:

* **generation**: ``ESTrainer.step()`` -- evotorch samples the population, ``MetODSProblem`` scores it in one
  batched rollout, the searcher updates -- timed from the call to the returned metrics (which read the
  fitnesses back, so all queued GPU work is inside the time). One warm-up generation, then ``--generations``
  timed ones; median and min shown.
* **rollout only**: the same population's ``rollout`` call alone (under no_grad, as the problem runs it),
  to split the generation into scoring and everything else (sampling, ranking, update).
* **host syncs** (CUDA only): ``torch.cuda.set_sync_debug_mode("warn")`` counts the operations that make the
  host wait for the GPU during one rollout and during one generation. The rollout checks "all episodes
  done?" every 8 steps on an accelerator, so a T-step rollout should show about T / 8 of them, not T.

Env-steps/s counts the steps of live agents (``RolloutResult.env_steps``). Peak GPU memory is
``torch.cuda.max_memory_allocated``. The script reports; it never asserts.

Run::

    python benchmarks/es_generation.py --devices cpu --popsize 1000          # a CPU-sized check
    python benchmarks/es_generation.py --devices cuda,cpu                    # on a GPU machine: both, side by side
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from metods_evo.config import generation_seed, make_config
from metods_evo.optimizers.es import ESTrainer
from metods_evo.rollout import rollout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda, cuda:N")
    p.add_argument("--task", default="harlow")
    p.add_argument("--popsize", type=int, default=10_000)
    p.add_argument("--episodes", type=int, default=16, help="episodes per individual")
    p.add_argument("--generations", type=int, default=3, help="timed generations after one warm-up")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.devices = [d for d in args.devices.split(",") if d]
    for d in args.devices:
        if torch.device(d).type == "cuda" and not torch.cuda.is_available():
            p.error(f"--devices {d}: no CUDA device is visible")
    if min(args.popsize, args.episodes, args.generations) < 1:
        p.error("--popsize, --episodes and --generations must be >= 1")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(device: torch.device, fn) -> int | None:
    """Host-GPU synchronizations ``fn`` causes (CUDA's sync debug mode), None on the CPU."""
    if device.type != "cuda":
        fn()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def measure(device_text: str, args: argparse.Namespace) -> dict:
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides |= {"es.popsize": str(args.popsize), "es.episodes": str(args.episodes), "device": device_text}
    cfg = make_config(args.task, "es", overrides)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = ESTrainer(cfg)
    problem = trainer.problem

    def one_rollout() -> int:
        values = trainer.searcher.population.values.as_subclass(torch.Tensor)
        params = problem.model.spec.unflatten(values)
        gen = torch.Generator(device=problem.task.device).manual_seed(generation_seed(cfg.seed, 0))
        with torch.no_grad():
            result = rollout(problem.model, params, problem.task, cfg.es.episodes, gen, action_mode=cfg.es.action_mode)
        synchronize(device)
        return result.env_steps

    start = time.perf_counter()
    trainer.step()  # warm-up: first CUDA kernels, allocator growth
    warmup_s = time.perf_counter() - start
    gen_s, steps = [], []
    for _ in range(args.generations):
        before = trainer.env_steps
        synchronize(device)
        start = time.perf_counter()
        trainer.step()
        gen_s.append(time.perf_counter() - start)
        steps.append(trainer.env_steps - before)
    rollout_s = []
    for _ in range(args.generations):
        synchronize(device)
        start = time.perf_counter()
        one_rollout()
        rollout_s.append(time.perf_counter() - start)
    syncs_rollout = count_syncs(device, one_rollout)
    syncs_generation = count_syncs(device, trainer.step)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    trainer.close()
    median_gen = statistics.median(gen_s)
    return {"device": str(device), "device_name": device_name(device), "task": args.task,
            "algorithm": cfg.es.algorithm, "n": cfg.model.n, "depth": cfg.model.depth, "write": cfg.model.write,
            "popsize": args.popsize, "episodes": args.episodes, "params": problem.model.num_params,
            "warmup_s": warmup_s, "generation_s": gen_s, "generation_median_s": median_gen,
            "rollout_s": rollout_s, "rollout_median_s": statistics.median(rollout_s),
            "env_steps_per_generation": statistics.median(steps),
            "env_steps_per_s": statistics.median(steps) / median_gen, "max_steps": problem.task.max_steps,
            "host_syncs_rollout": syncs_rollout, "host_syncs_generation": syncs_generation, "peak_gib": peak}


def print_report(rows: list[dict]) -> None:
    r0 = rows[0]
    print(f"ES generation: task {r0['task']} ({r0['algorithm']}, N={r0['n']}, S={r0['depth']}, write {r0['write']}, "
          f"{r0['params']} parameters), popsize {r0['popsize']} x {r0['episodes']} episodes "
          f"= {r0['popsize'] * r0['episodes']:,} agents; torch {torch.__version__}")
    head = (f"{'device':<28} {'gen s (med)':>11} {'gen s (min)':>11} {'rollout s':>9} {'rollout %':>9} "
            f"{'env-steps/s':>12} {'syncs roll/gen':>14} {'peak GiB':>8} {'warm-up s':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        syncs = "-" if r["host_syncs_rollout"] is None else f"{r['host_syncs_rollout']}/{r['host_syncs_generation']}"
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"{r['device_name'][:28]:<28} {r['generation_median_s']:>11.3f} {min(r['generation_s']):>11.3f} "
              f"{r['rollout_median_s']:>9.3f} {100 * r['rollout_median_s'] / r['generation_median_s']:>9.1f} "
              f"{r['env_steps_per_s']:>12.4g} {syncs:>14} {peak:>8} {r['warmup_s']:>9.2f}")
    print(f"(rollout: up to {r0['max_steps']} steps; env steps per generation: "
          + ", ".join(f"{r['device']}: {r['env_steps_per_generation']:,.0f}" for r in rows) + ")")
    if len(rows) > 1:
        base = rows[-1]
        for r in rows[:-1]:
            gen_ratio = base["generation_median_s"] / r["generation_median_s"]
            print(f"{r['device']} / {base['device']}: generation {gen_ratio:.2f}x faster, "
                  f"rollout {base['rollout_median_s'] / r['rollout_median_s']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(d, args) for d in args.devices]
    print_report(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
