"""The MetODS plastic step side by side: eager ``plastic_step``, ``torch.compile`` of it, and the fused C++ kernel
(``metods_evo.models.fused``) as dispatched ("fused": the lanes kernel where E is a multiple of the vector width,
as at the default E = 16) and forced to its per-agent kernel ("per-agent"), against the memory bandwidth of the same
machine measured in the same run.

What is measured (CPU, ``torch.no_grad()``, matrix alpha, tanh, plastic_bound 5; ``--writes``: the hebbian and the
linear write, u = v and u = L v, both by default):

* **a point** is (write, N, S, P x E, threads) with N in (20, 64, 128), S in (1, 3), P x E in (256, 4096, 16384) and
  1 and 2 torch threads (``--quick``: N in (20, 64), S = 3, P x E in (256, 4096), 1 thread). P = P x E //
  ``--episodes`` individuals (roofline.py's ``population_params``: init_params + 0.1 randn), W carried from call
  to call as a rollout does (so each path allocates its next W its own way: eager a fresh tensor, fused from its
  buffer pool).
* **rates**: each path's agent-steps/s, the median of ``--repeats`` timed blocks of at least ``--min-seconds``,
  the paths interleaved block by block so that load from other jobs hits all of them alike.
* **GB/s** = agent-steps/s x 2 N^2 x 4 bytes (read W once + write it once: roofline.py's minimum, which is
  exactly the fused kernel's DRAM traffic when W does not fit in cache), and **frac** = that over the
  bandwidth limit: the best ``dst.copy_(src)`` of a ``--copy-mib`` MiB float32 tensor (roofline.py's
  ``copy_bandwidth``), measured at the start, after each N and at the end, at the point's thread count.
* **torch.compile** (``--compile``) compiles ``model.plastic_step`` once per (write, N, S); its first call per shape
  takes 20-120 s here, which is not timed (it is printed).

Points whose W plus three temporaries exceed ``--max-gib`` are skipped. The script only reports and exits 0.

Run::

    python benchmarks/fused_step.py                  # full sweep, eager vs fused
    python benchmarks/fused_step.py --compile        # + torch.compile (slow to compile)
    python benchmarks/fused_step.py --quick          # a few points
    python benchmarks/fused_step.py --writes linear  # only the linear write
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import (  # noqa: E402  (a sibling script, not a package)
    GB,
    MIB,
    copy_bandwidth,
    cpu_name,
    fits,
    int_list,
    min_bytes_per_agent_step,
    population_params,
    population_shape,
    state_bytes,
)

from metods_evo.config import ModelConfig  # noqa: E402
from metods_evo.models import fused  # noqa: E402
from metods_evo.models.metods import MetODS  # noqa: E402

FULL = {"ns": [20, 64, 128], "depths": [1, 3], "pe": [256, 4096, 16384], "threads": [1, 2]}
QUICK = {"ns": [20, 64], "depths": [3], "pe": [256, 4096], "threads": [1]}
PATHS = ("eager", "compile", "per-agent", "fused")
WRITES = ("hebbian", "linear")  # the write rules the fused kernel computes
OBS_DIM, NUM_ACTIONS = 4, 3  # only the plastic step runs: the embedding sizes do not matter
CPU = torch.device("cpu")  # the fused kernel is CPU-only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few points (see the module docstring)")
    p.add_argument("--ns", type=int_list, help="plastic-layer sizes N, comma-separated")
    p.add_argument("--depths", type=int_list, help="recursion depths S")
    p.add_argument("--pe", type=int_list, help="P x E values")
    p.add_argument("--threads", type=int_list, help="torch thread counts")
    p.add_argument("--writes", type=lambda text: [w for w in text.split(",") if w], default=list(WRITES),
                   help=f"write rules, comma-separated, of {', '.join(WRITES)}")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model.plastic_step)")
    p.add_argument("--episodes", type=int, default=16, help="E per individual: P = max(1, PxE // E)")
    p.add_argument("--min-seconds", type=float, default=0.3, help="minimum duration of one timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per path and point (median shown)")
    p.add_argument("--max-gib", type=float, default=4.0, help="skip points whose W + temporaries exceed this")
    p.add_argument("--copy-mib", type=int, default=256, help="size of the bandwidth-limit copy")
    p.add_argument("--copy-repeats", type=int, default=5, help="timed copies per bandwidth measurement (best)")
    p.add_argument("--seed", type=int, default=0, help="seed of theta, W and v0")
    args = p.parse_args(argv)
    if unknown := set(args.writes) - set(WRITES):
        p.error(f"--writes: {', '.join(sorted(unknown))} not one of {', '.join(WRITES)}")
    sweep = QUICK if args.quick else FULL
    for key in sweep:
        if getattr(args, key) is None:
            setattr(args, key, list(sweep[key]))
    return args


def timed_block(step, min_seconds: float) -> float:
    """Calls of ``step`` (each returns its agent-steps) for at least ``min_seconds`` -> agent-steps/s."""
    steps, start = 0, time.perf_counter()
    while True:
        steps += step()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps / elapsed


def point(write: str, n: int, depth: int, pe: int, threads: int, compiled: dict, args: argparse.Namespace) -> dict:
    """Median rates of every path at one (write, N, S, P x E, threads), timed blocks interleaved across the paths."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(args.seed)
    # fused="off": "eager" must be the eager step at every size ('auto' would hand large steps to the kernel)
    model = MetODS(ModelConfig(n=n, depth=depth, write=write, fused="off"), OBS_DIM, NUM_ACTIONS)
    pop, episodes = population_shape(pe, args.episodes)
    params = population_params(model, pop, gen, CPU)
    v0 = torch.rand(pop, episodes, n, generator=gen) * 2 - 1
    w0 = torch.empty(pop, episodes, n, n).uniform_(-0.1, 0.1, generator=gen)
    paths = {"eager": model.plastic_step,
             "per-agent": lambda p, w, v: fused.fused_plastic_step(model, p, w, v, lanes=False),
             "fused": lambda p, w, v: fused.fused_plastic_step(model, p, w, v)}
    compile_seconds = None
    if args.compile:
        if (write, n, depth) not in compiled:
            compiled[(write, n, depth)] = torch.compile(model.plastic_step)
        paths["compile"] = compiled[(write, n, depth)]
        start = time.perf_counter()
        paths["compile"](params, w0, v0)  # compiles (or recompiles for this shape) outside the timing
        compile_seconds = time.perf_counter() - start
    carry = {name: w0.clone() for name in paths}

    def stepper(name):
        def step() -> int:
            carry[name] = paths[name](params, carry[name], v0)[1]
            return pop * episodes
        return step

    steppers = {name: stepper(name) for name in paths}
    for step in steppers.values():  # warm-up: first-touch pages, the fused pool, caches
        step()
        step()
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, step in steppers.items():
            rates[name].append(timed_block(step, args.min_seconds))
    row = {"write": write, "n": n, "depth": depth, "pop": pop, "episodes": episodes, "agents": pop * episodes,
           "threads": threads,
           "w_mib": state_bytes(pop * episodes, n) / MIB, "compile_seconds": compile_seconds}
    for name, values in rates.items():
        row[name] = statistics.median(values)
    return row


def run(args: argparse.Namespace) -> dict:
    if not fused.fused_available():
        raise SystemExit(f"the fused kernel is unavailable: {fused.unavailable_reason()}")
    copies: dict[int, list[float]] = {t: [] for t in args.threads}

    def limit() -> None:
        for t in args.threads:
            torch.set_num_threads(t)
            copies[t].append(copy_bandwidth(args.copy_mib, args.copy_repeats, CPU))

    load_start, wall_start = os.getloadavg(), time.perf_counter()
    rows, skipped, compiled = [], [], {}
    with torch.no_grad():
        limit()
        for n in args.ns:
            for depth in args.depths:
                for pe in args.pe:
                    if not fits(math.prod(population_shape(pe, args.episodes)), n, args.max_gib):
                        skipped.append((n, depth, pe))
                        continue
                    for threads, write in itertools.product(args.threads, args.writes):
                        rows.append(point(write, n, depth, pe, threads, compiled, args))
                        r = rows[-1]
                        print(f"{write} N={n} S={depth} PxE={pe} threads={threads}: "
                              + ", ".join(f"{k} {r[k]:,.0f}" for k in PATHS if k in r)
                              + " agent-steps/s", file=sys.stderr, flush=True)
            limit()
    bandwidth = {t: max(v) for t, v in copies.items()}
    for r in rows:
        for name in PATHS:
            if name in r:
                r[f"{name}_gb_per_s"] = r[name] * min_bytes_per_agent_step(r["n"]) / GB
        r["fused_fraction"] = r["fused"] * min_bytes_per_agent_step(r["n"]) / bandwidth[r["threads"]]
    return {"rows": rows, "skipped": skipped, "bandwidth": bandwidth, "copies": copies, "cpu": cpu_name(),
            "torch": torch.__version__, "load": (load_start, os.getloadavg()),
            "wall_seconds": time.perf_counter() - wall_start}


def print_report(res: dict, args: argparse.Namespace) -> None:
    (load0, _, _), (load1, _, _) = res["load"]
    print(f"fused_step: torch {res['torch']}, cpu={res['cpu']} ({os.cpu_count()} cores), load avg {load0:.2f} -> "
          f"{load1:.2f}, no_grad, {'/'.join(args.writes)} write, matrix alpha, tanh; median of {args.repeats} "
          "interleaved blocks "
          f">= {args.min_seconds} s")
    if max(load0, load1) > 0.5 * (os.cpu_count() or 1):
        print("NOTE: the machine is loaded (other jobs); absolute rates are pessimistic, compare the ratios")
    for t, values in res["copies"].items():
        print(f"memory-bandwidth limit, {t} thread(s): {res['bandwidth'][t] / GB:.2f} GB/s (best dst.copy_(src) of "
              f"{args.copy_mib} MiB, read + write; measured " + ", ".join(f"{v / GB:.2f}" for v in values) + ")")
    print("GB/s = agent-steps/s x 2 N^2 x 4 B (W read once + written once); frac = fused GB/s / the limit")
    paths = [name for name in PATHS if name != "compile" or args.compile]
    head = (f"{'write':>7} {'N':>4} {'S':>2} {'P x E':>6} {'thr':>3} {'W MiB':>8} | "
            + " | ".join(f"{name + '/s':>12} {'GB/s':>6}" for name in paths)
            + f" {'frac':>5} | {'fused/eager':>11} {'fused/per-agent':>15}"
            + (f" {'fused/compile':>13} {'compile s':>9}" if args.compile else ""))
    print(head)
    print("-" * len(head))
    for r in res["rows"]:
        line = (f"{r['write']:>7} {r['n']:>4} {r['depth']:>2} {r['agents']:>6} {r['threads']:>3} {r['w_mib']:>8.2f} | "
                + " | ".join(f"{r[name]:>12.4g} {r[name + '_gb_per_s']:>6.2f}" for name in paths)
                + f" {r['fused_fraction']:>5.2f} | {r['fused'] / r['eager']:>11.2f}"
                + f" {r['fused'] / r['per-agent']:>15.2f}")
        if args.compile:
            line += f" {r['fused'] / r['compile']:>13.2f} {r['compile_seconds']:>9.1f}"
        print(line)
    for n, depth, pe in res["skipped"]:
        print(f"skipped (W + temporaries > --max-gib): N={n} S={depth} PxE={pe}")
    print(f"total wall time: {res['wall_seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        print_report(run(args), args)
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
