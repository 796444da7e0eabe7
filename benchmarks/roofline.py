"""Roofline of the MetODS plastic step and of full rollouts against the memory bandwidth of the same machine.

What is measured (under ``torch.no_grad()`` as ES scores a population; on the CPU with ``--threads`` torch threads
for everything, the copy included; with ``--device cuda`` everything runs on the GPU, timed with a
``torch.cuda.synchronize()`` at the end of each block, and the limit is a device-to-device copy):

* **memory-bandwidth limit**: ``dst.copy_(src)`` of a ``--copy-mib`` (256) MiB float32 tensor, far beyond the
  last-level cache, best of ``--copy-repeats`` copies, counting read + write = 2 x its size per copy. It is
  measured at the start, after every N of the plastic-step sweep, after every task of the rollout sweep and
  at the end; the largest value is the limit, and all of them are printed (load from other jobs shows as spread).
  Copies of 1 MiB and 16 MiB are timed once as well, to show what cache-resident data achieves.
* **plastic layer step**: ``model.plastic_step(params, W, v0)`` for N in (20, 64, 128), S in (1, 3) and P x E
  from 1 to 100000, hebbian write, matrix alpha, W carried from call to call (so the clip keeps it bounded).
  P = max(1, PxE // ``--episodes``) individuals (init_params + 0.1 randn noise), E = PxE // P agents each.
  Next to it, a whole ``model.step`` (embedding f + plastic step + heads g, Harlow-sized inputs) on the same point.
* **full rollout**: ``metods_evo.rollout.rollout`` of harlow and maze (env included, greedy actions, the same
  seeded episodes every call), N = 20, S = 3, the linear write of the task presets and the hebbian write,
  P x E in (256, 1024, 4096, 16384, 65536), twice: as ES calls it (on Harlow from 2^20 elements of W, P x E >=
  2622 at N = 20, that is the fused rollout of ``metods_evo/fused_rollout.py``, whose W stays in cache for the
  whole episode) and as the step-by-step loop (``fuse=False``), timed blocks interleaved. Agent-steps are
  ``RolloutResult.env_steps``, the steps actually taken by live agents; the loop also steps finished agents until
  the last episode ends ("live %"), the fused rollout until the last episode of each block of 16 ends.

Accounting (the "roofline"). One agent-step must at least read that agent's plastic state W (N x N float32) once
and write it once: **2 x N^2 x 4 bytes per agent-step**. "GB/s" is agent-steps/s x that minimum (1 GB = 1e9 B),
and "frac" is that divided by the copy bandwidth: the fraction of the memory-bandwidth limit a step would reach
if W were the only traffic and were streamed once. 1.0 is what a fused kernel moving W exactly once at copy speed
would reach; everything else the step reads (v, alpha, theta) is per-agent O(N) or shared by E agents.
Today's unfused ``plastic_step`` moves more (column "frac@impl"): its S mat-vecs each read W, then the write's
batched matmul writes the outer products (1 pass), ``* alpha`` reads and writes them (2), ``+ c * W`` reads them and
W and writes (3), and the clip reads and writes (2): about (S + 8) x N^2 x 4 bytes per agent-step (alpha, read
once per individual, left out). "frac@impl" is the achieved rate times that estimate over the copy bandwidth:
near 1 means the unfused code is bandwidth-bound and only fusing can speed it up; far below 1 means per-call
overhead or small-matrix compute dominates. Where all of W fits in cache (e.g. N = 20, P x E = 4096: 6.25 MiB
against a 32 MiB L3), the step runs from cache and a fraction above 1 is possible; see the "W MiB" column and the
cache-sized copies.

Each point: warm-up calls, then ``--repeats`` timed blocks of at least ``--min-seconds`` each; the median block
rate is shown. Configurations whose W [P, E, N, N] plus three temporaries of its size exceed ``--max-gib`` are
skipped (listed). The script only reports, it never asserts, and exits 0.

Run::

    python benchmarks/roofline.py                    # full sweep, 1 thread (as training); minutes
    python benchmarks/roofline.py --threads 2        # both cores (only on an otherwise idle machine)
    python benchmarks/roofline.py --quick --json     # small sweep + machine-readable dump
    python benchmarks/roofline.py --device cuda --max-gib 40 --copy-mib 2048   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from metods_evo import fused_rollout
from metods_evo.config import ModelConfig
from metods_evo.models.metods import MetODS
from metods_evo.rollout import rollout
from metods_evo.tasks import TASKS, make_task

FLOAT32 = 4
GB = 1e9
MIB = 2**20
TEMPORARIES = 3  # margin of [P, E, N, N] tensors besides W: a no_grad step needs one (the next W), autograd more
CACHE_PROBE_MIB = (1, 16)
FULL = {"ns": [20, 64, 128], "depths": [1, 3], "pe": [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 100000],
        "rollout_pe": [256, 1024, 4096, 16384, 65536], "writes": ["linear", "hebbian"]}
QUICK = {"ns": [20, 64], "depths": [1, 3], "pe": [1, 64, 1024], "rollout_pe": [64, 256], "writes": ["linear"]}
WRITES = ("hebbian", "linear", "mlp")
TARGET = {"task": "harlow", "n": 20, "depth": 3, "min_pe": 4096, "fraction": 0.5}


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def sweep_help(what: str, key: str) -> str:
    return f"{what}, comma-separated (None: {','.join(map(str, FULL[key]))}; --quick: {','.join(map(str, QUICK[key]))})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every measurement")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N: where states, model and tasks live")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile(plastic_step) at each plastic-step point (compiles once per point)")
    p.add_argument("--quick", action="store_true", help="the small sweep (see the other options)")
    p.add_argument("--ns", type=int_list, help=sweep_help("plastic-layer sizes N", "ns"))
    p.add_argument("--depths", type=int_list, help=sweep_help("recursion depths S", "depths"))
    p.add_argument("--pe", type=int_list, help=sweep_help("P x E of the plastic-step sweep", "pe"))
    p.add_argument("--rollout-pe", type=int_list, help=sweep_help("P x E of the rollouts", "rollout_pe"))
    p.add_argument("--tasks", default="harlow,maze", help="tasks of the rollout sweep")
    p.add_argument("--writes", help=sweep_help("write rules of the rollouts", "writes"))
    p.add_argument("--rollout-n", type=int, default=20, help="N of the rollouts")
    p.add_argument("--rollout-depth", type=int, default=3, help="S of the rollouts")
    p.add_argument("--episodes", type=int, default=16, help="E per individual: P = max(1, PxE // E)")
    p.add_argument("--min-seconds", type=float, default=0.2, help="minimum duration of one timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per point (median shown)")
    p.add_argument("--max-gib", type=float, default=4.0, help="skip points whose W + temporaries exceed this")
    p.add_argument("--copy-mib", type=int, default=256, help="size of the bandwidth-limit copy")
    p.add_argument("--copy-repeats", type=int, default=5, help="timed copies per bandwidth measurement (best)")
    p.add_argument("--seed", type=int, default=0, help="seed of theta, states and episodes")
    p.add_argument("--json", action="store_true", help="also print a machine-readable JSON dict")
    args = p.parse_args(argv)
    sweep = QUICK if args.quick else FULL
    for key in ("ns", "depths", "pe", "rollout_pe"):
        if getattr(args, key) is None:
            setattr(args, key, list(sweep[key]))
    args.writes = args.writes.split(",") if args.writes else list(sweep["writes"])
    args.tasks = [t for t in args.tasks.split(",") if t]
    for name in ("threads", "episodes", "repeats", "copy_mib", "copy_repeats", "rollout_n", "rollout_depth"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.ns + args.depths + args.pe + args.rollout_pe, default=1) < 1:
        p.error("sizes must be >= 1")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device must be cpu, cuda or cuda:N (got {args.device!r})")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu, cuda or cuda:N (got {args.device})")
    for task_id in args.tasks:
        if task_id not in TASKS:
            p.error(f"unknown task {task_id!r}; choose from {', '.join(sorted(TASKS))}")
    for write in args.writes:
        if write not in WRITES:
            p.error(f"unknown write rule {write!r}; choose from {', '.join(WRITES)}")
    return args


# ---------------------------------------------------------------------------------------------- accounting
def min_bytes_per_agent_step(n: int) -> int:
    """The roofline minimum: read W (N x N float32) once and write it once."""
    return 2 * n * n * FLOAT32


def impl_bytes_per_agent_step(n: int, depth: int) -> int:
    """Estimated traffic of today's unfused ``plastic_step`` under no_grad: S reads of W + 8 passes of the write."""
    return (depth + 8) * n * n * FLOAT32


def population_shape(pe: int, episodes: int) -> tuple[int, int]:
    """(P, E) with P x E <= pe: a population batch of E = ``episodes`` agents per individual where pe allows."""
    pop = max(1, pe // episodes)
    return pop, pe // pop


def state_bytes(agents: int, n: int) -> int:
    return agents * n * n * FLOAT32


def fits(agents: int, n: int, max_gib: float) -> bool:
    return (1 + TEMPORARIES) * state_bytes(agents, n) <= max_gib * 2**30


# ---------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read after it covers the work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(mib: float, repeats: int, device: torch.device) -> float:
    """Read + write bytes/s of ``dst.copy_(src)`` for a float32 tensor of ``mib`` MiB (best timed sample).

    Small sizes repeat the copy inside a sample so each sample moves at least 64 MiB (timer resolution)."""
    numel = max(1, int(mib * MIB) // FLOAT32)
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch of dst's pages, outside the timing
    inner = max(1, (64 * MIB) // (numel * FLOAT32))
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(inner):
            dst.copy_(src)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * numel * FLOAT32 / best


CPU = torch.device("cpu")


def measure(call: Callable[[], int], min_seconds: float, repeats: int, warmup: int,
            device: torch.device = CPU) -> list[float]:
    """Rates (agent-steps/s) of ``repeats`` timed blocks of >= ``min_seconds``; ``call`` returns its agent-steps.

    On a GPU the calls only queue work: each block ends with a synchronize, so its time covers all its work."""
    for _ in range(warmup):
        call()
    rates = []
    for _ in range(repeats):
        synchronize(device)
        steps, start = 0, time.perf_counter()
        while True:
            steps += call()
            if time.perf_counter() - start >= min_seconds:
                synchronize(device)
                elapsed = time.perf_counter() - start
                break
        rates.append(steps / elapsed)
    return rates


def population_params(model: MetODS, pop: int, generator: torch.Generator,
                      device: torch.device) -> dict[str, torch.Tensor]:
    base = model.init_params(generator)
    return model.spec.unflatten((base + 0.1 * torch.randn(pop, base.numel(), generator=generator)).to(device))


# ---------------------------------------------------------------------------------------------- sections
def plastic_point(n: int, depth: int, pe: int, args: argparse.Namespace) -> dict:
    """Rates of ``plastic_step`` and of a whole ``model.step`` at one (N, S, P x E), W carried between calls."""
    gen = torch.Generator().manual_seed(args.seed)
    probe = make_task("harlow")  # only its input sizes: the step section needs no environment
    model = MetODS(ModelConfig(n=n, depth=depth, write="hebbian"), probe.obs_dim, probe.num_actions)
    pop, episodes = population_shape(pe, args.episodes)
    agents = pop * episodes
    dev = args.device
    params = population_params(model, pop, gen, dev)
    v0 = (torch.rand(pop, episodes, n, generator=gen) * 2 - 1).to(dev)
    carry = {"W": torch.empty(pop, episodes, n, n).uniform_(-0.1, 0.1, generator=gen).to(dev)}
    obs = torch.rand(pop, episodes, probe.obs_dim, generator=gen).to(dev)
    prev_action = torch.randint(-1, probe.num_actions, (pop, episodes), generator=gen).to(dev)
    prev_reward = torch.randn(pop, episodes, generator=gen).to(dev)

    def plastic() -> int:
        _, carry["W"] = model.plastic_step(params, carry["W"], v0)
        return agents

    def whole_step() -> int:
        carry.update(model.step(params, carry, obs, prev_action, prev_reward)[2])
        return agents

    plastic_rates = measure(plastic, args.min_seconds, args.repeats, warmup=2, device=dev)
    step_rates = measure(whole_step, args.min_seconds, args.repeats, warmup=2, device=dev)
    extra = {}
    if args.compile:  # the same step through torch.compile (Inductor fuses the S recursions' elementwise work)
        compiled_step = torch.compile(model.plastic_step, dynamic=False)

        def compiled() -> int:
            _, carry["W"] = compiled_step(params, carry["W"], v0)
            return agents

        start = time.perf_counter()
        compiled()
        synchronize(dev)
        extra["compile_s"] = time.perf_counter() - start
        compiled_rates = measure(compiled, args.min_seconds, args.repeats, warmup=2, device=dev)
        extra |= {"compiled_rate": statistics.median(compiled_rates), "compiled_rates": compiled_rates}
    return extra | {"n": n, "depth": depth, "pop": pop, "episodes": episodes, "agents": agents,
            "w_mib": state_bytes(agents, n) / MIB,
            "plastic_rate": statistics.median(plastic_rates), "plastic_rates": plastic_rates,
            "step_rate": statistics.median(step_rates), "step_rates": step_rates}


def rollout_point(task_id: str, write: str, pe: int, args: argparse.Namespace) -> dict:
    """Live agent-steps/s of one full batched rollout (env included), the same seeded episodes every call: as ES
    calls it (``rollout``'s default: the fused rollout where it applies) and the step-by-step loop (``fuse=False``),
    their timed blocks interleaved so that load from other jobs hits both alike."""
    n, depth = args.rollout_n, args.rollout_depth
    dev = args.device
    task = make_task(task_id, device=dev)
    model = MetODS(ModelConfig(n=n, depth=depth, write=write), task.obs_dim, task.num_actions, task.action_dim)
    pop, episodes = population_shape(pe, args.episodes)
    agents = pop * episodes
    params = population_params(model, pop, torch.Generator().manual_seed(args.seed), dev)

    def call(fuse: bool):
        return rollout(model, params, task, episodes, torch.Generator(dev).manual_seed(args.seed), fuse=fuse)

    def env_steps(fuse: bool) -> Callable[[], int]:
        return lambda: call(fuse).env_steps

    first, looped = call(True), call(False)
    fused = fused_rollout.should_use(model, params, task, episodes)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for fuse in (True, False):
            rates[fuse] += measure(env_steps(fuse), args.min_seconds, 1, warmup=0, device=dev)
    return {"task": task_id, "write": write, "n": n, "depth": depth, "pop": pop, "episodes": episodes,
            "agents": agents, "w_mib": state_bytes(agents, n) / MIB, "loop_steps": looped.rewards.shape[0],
            "env_steps": first.env_steps, "live_fraction": looped.env_steps / (looped.rewards.shape[0] * agents),
            "fused": fused, "same_returns": float((first.returns == looped.returns).float().mean()),
            "rate": statistics.median(rates[True]), "rates": rates[True],
            "loop_rate": statistics.median(rates[False]), "loop_rates": rates[False]}


def progress(line: str) -> None:
    """One line per measured point on stderr, so a long sweep shows where it is (the tables come at the end)."""
    print(line, file=sys.stderr, flush=True)


def add_fractions(row: dict, rate_key: str, prefix: str, bandwidth: float, impl: bool) -> None:
    """GB/s of plastic state at the roofline minimum and the fraction of the copy bandwidth (and at impl traffic)."""
    minimum = min_bytes_per_agent_step(row["n"]) * row[rate_key]
    row[f"{prefix}gb_per_s"] = minimum / GB
    row[f"{prefix}fraction"] = minimum / bandwidth
    if impl:
        row[f"{prefix}impl_fraction"] = impl_bytes_per_agent_step(row["n"], row["depth"]) * row[rate_key] / bandwidth


def run(args: argparse.Namespace) -> dict:
    """Every measurement; rows carry rates, and fractions of the largest copy bandwidth seen in the run."""
    torch.set_num_threads(args.threads)
    copies: list[dict] = []

    def limit(where: str) -> None:
        rate = copy_bandwidth(args.copy_mib, args.copy_repeats, args.device)
        copies.append({"where": where, "bytes_per_s": rate})

    load_start = os.getloadavg()
    wall_start = time.perf_counter()
    with torch.no_grad():
        limit("start")
        cache = {f"{mib} MiB": copy_bandwidth(mib, args.copy_repeats, args.device) for mib in CACHE_PROBE_MIB}
        plastic_rows, rollout_rows, skipped = [], [], []
        for n in args.ns:
            for depth in args.depths:
                for pe in args.pe:
                    agents = math.prod(population_shape(pe, args.episodes))
                    if fits(agents, n, args.max_gib):
                        plastic_rows.append(plastic_point(n, depth, pe, args))
                        rate = plastic_rows[-1]["plastic_rate"]
                        progress(f"plastic_step N={n} S={depth} PxE={pe}: {rate:,.0f} agent-steps/s")
                    else:
                        skipped.append({"section": "plastic_step", "n": n, "depth": depth, "pe": pe})
            limit(f"after plastic N={n}")
        for task_id in args.tasks:
            for write in args.writes:
                for pe in args.rollout_pe:
                    agents = math.prod(population_shape(pe, args.episodes))
                    if fits(agents, args.rollout_n, args.max_gib):
                        rollout_rows.append(rollout_point(task_id, write, pe, args))
                        progress(f"rollout {task_id} {write} PxE={pe}: {rollout_rows[-1]['rate']:,.0f} agent-steps/s")
                    else:
                        skipped.append({"section": "rollout", "task": task_id, "write": write, "pe": pe})
            limit(f"after rollout {task_id}")
    bandwidth = max(c["bytes_per_s"] for c in copies)
    for row in plastic_rows:
        add_fractions(row, "plastic_rate", "plastic_", bandwidth, impl=True)
        add_fractions(row, "step_rate", "step_", bandwidth, impl=False)
        if "compiled_rate" in row:
            add_fractions(row, "compiled_rate", "compiled_", bandwidth, impl=False)
    for row in rollout_rows:
        add_fractions(row, "rate", "", bandwidth, impl=False)
        add_fractions(row, "loop_rate", "loop_", bandwidth, impl=False)
    config = vars(args) | {"device": str(args.device)}
    return {"config": config, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device_name(args.device), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
            "bandwidth": {"limit_bytes_per_s": bandwidth, "copy_mib": args.copy_mib, "measurements": copies,
                          "cache_sized_copies_bytes_per_s": cache},
            "plastic_step": plastic_rows, "rollout": rollout_rows, "skipped": skipped,
            "wall_seconds": time.perf_counter() - wall_start}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)"
    return "cpu"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------------------------- report
def print_report(res: dict) -> None:
    bw = res["bandwidth"]
    gbs = [c["bytes_per_s"] / GB for c in bw["measurements"]]
    print(f"roofline on {res['device']}: torch {res['torch']}, threads={res['threads']}, "
          f"cpu={res['cpu']} ({res['cpu_count']} cores), "
          f"load avg {res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f}, no_grad, "
          f"median of {res['config']['repeats']} blocks >= {res['config']['min_seconds']} s per point")
    print(f"memory-bandwidth limit: {bw['limit_bytes_per_s'] / GB:.2f} GB/s = best of dst.copy_(src) of "
          f"{bw['copy_mib']} MiB float32, read + write counted; measured {len(gbs)} times in this run: "
          + ", ".join(f"{g:.2f}" for g in gbs) + " GB/s")
    print("cache-sized copies (for points whose W fits in cache): "
          + ", ".join(f"{k}: {v / GB:.2f} GB/s" for k, v in bw["cache_sized_copies_bytes_per_s"].items()))
    print("bytes per agent-step = 2 x N^2 x 4 (read W once + write it once, the roofline minimum); "
          "frac = agent-steps/s x those bytes / copy bandwidth")
    print("frac@impl uses the unfused plastic_step's estimated traffic, (S + 8) x N^2 x 4 bytes per agent-step")

    print("\nplastic layer step (plastic_step, hebbian write; model.step = f + plastic_step + g)")
    head = (f"{'N':>4} {'S':>2} {'P x E':>7} {'P':>5} {'E':>3} {'W MiB':>9} | {'agent-steps/s':>13} "
            f"{'GB/s':>7} {'frac':>6} {'frac@impl':>9} | {'model.step/s':>13} {'frac':>6}")
    print(head)
    print("-" * len(head))
    for r in res["plastic_step"]:
        print(f"{r['n']:>4} {r['depth']:>2} {r['agents']:>7} {r['pop']:>5} {r['episodes']:>3} {r['w_mib']:>9.3f} | "
              f"{r['plastic_rate']:>13.4g} {r['plastic_gb_per_s']:>7.3f} {r['plastic_fraction']:>6.3f} "
              f"{r['plastic_impl_fraction']:>9.3f} | {r['step_rate']:>13.4g} {r['step_fraction']:>6.3f}")
    compiled = [r for r in res["plastic_step"] if "compiled_rate" in r]
    if compiled:
        print("\ntorch.compile(plastic_step) at the same points (compile time excluded from the rates)")
        head = (f"{'N':>4} {'S':>2} {'P x E':>7} | {'eager/s':>11} {'compiled/s':>11} {'ratio':>6} {'frac':>6} "
                f"{'compile s':>9}")
        print(head)
        print("-" * len(head))
        for r in compiled:
            ratio = r["compiled_rate"] / r["plastic_rate"]
            print(f"{r['n']:>4} {r['depth']:>2} {r['agents']:>7} | {r['plastic_rate']:>11.4g} "
                  f"{r['compiled_rate']:>11.4g} {ratio:>6.2f} {r['compiled_fraction']:>6.3f} {r['compile_s']:>9.1f}")

    print("\nfull rollout (env included; agent-steps = env steps of live agents; live % = of the agents the loop "
          "steps). 'rollout' = what ES runs (the fused Harlow rollout where it applies: fused = yes), 'loop' = the "
          "step-by-step loop (fuse=False), timed interleaved; same = % of episodes with equal returns on both paths "
          "(below 100 where float32 rounding tips a greedy choice, as between the fused and eager steps)")
    head = (f"{'task':<7} {'write':<8} {'N':>3} {'S':>2} {'P x E':>7} {'P':>5} {'E':>3} {'W MiB':>8} {'T':>4} "
            f"{'live %':>6} {'fused':>5} {'same':>6} | {'rollout/s':>10} {'GB/s':>6} {'frac':>6} | {'loop/s':>10} "
            f"{'frac':>6} | {'ratio':>5}")
    print(head)
    print("-" * len(head))
    for r in res["rollout"]:
        print(f"{r['task']:<7} {r['write']:<8} {r['n']:>3} {r['depth']:>2} {r['agents']:>7} {r['pop']:>5} "
              f"{r['episodes']:>3} {r['w_mib']:>8.3f} {r['loop_steps']:>4} {100 * r['live_fraction']:>6.1f} "
              f"{'yes' if r['fused'] else 'no':>5} {100 * r['same_returns']:>6.2f} | {r['rate']:>10.4g} "
              f"{r['gb_per_s']:>6.2f} {r['fraction']:>6.3f} | {r['loop_rate']:>10.4g} {r['loop_fraction']:>6.3f} | "
              f"{r['rate'] / r['loop_rate']:>5.2f}")

    for s in res["skipped"]:
        what = " ".join(f"{k}={v}" for k, v in s.items() if k != "section")
        print(f"skipped ({s['section']}, W + {TEMPORARIES} temporaries > --max-gib): {what}")
    target = [r for r in res["rollout"] if r["task"] == TARGET["task"] and r["n"] == TARGET["n"]
              and r["depth"] == TARGET["depth"] and r["agents"] >= TARGET["min_pe"]]
    if target:
        worst = min(target, key=lambda r: r["fraction"])
        print(f"\nissue target ({TARGET['task']}, N={TARGET['n']}, S={TARGET['depth']}, P x E >= {TARGET['min_pe']}: "
              f">= {TARGET['fraction']:.0%} of the copy bandwidth): lowest here {worst['fraction']:.1%} "
              f"({worst['write']}, P x E = {worst['agents']}), report only")
    print(f"total wall time: {res['wall_seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print_report(results)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
