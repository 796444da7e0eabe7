"""The fused Harlow rollout kernel of a git revision against the working tree's, side by side in one process.

What is measured: ``metods_evo.rollout.rollout`` of Harlow (N = 20, S = 3 by default, greedy, as ES scores a
population) with the rollout kernel built from ``--base``'s ``metods_evo/csrc/`` ("base"; a revision that has that
folder) and from the files on disk ("tree"), everything else the working tree's.
Both libraries are loaded in one process and their timed blocks interleaved, so that load from other jobs hits
both alike; each point prints the median env-steps/s of each (live agents' steps, as ``roofline.py``), their
ratio and the per-block ratios. Before timing, every point checks that both give bitwise the same rewards and
episode lengths (a kernel change that only reorders work must not change a single bit).

Run (each build is compiled once, about a minute of one core, then cached as torch caches extensions)::

    python benchmarks/kernel_ab.py                      # HEAD against the working tree, 1 and 2 threads
    python benchmarks/kernel_ab.py --base HEAD~3 --threads 2 --pe 4096,65536

The script only reports and exits 0 (1 if the two builds disagree).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_name, int_list, population_params, population_shape  # noqa: E402  (a sibling script)

from metods_evo import fused_rollout, kernels  # noqa: E402
from metods_evo.config import ModelConfig  # noqa: E402
from metods_evo.models.metods import MetODS  # noqa: E402
from metods_evo.rollout import rollout  # noqa: E402
from metods_evo.tasks import make_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="HEAD", help="git revision of the base kernel sources")
    p.add_argument("--threads", type=int_list, default=[1, 2], help="torch thread counts, comma-separated")
    p.add_argument("--pe", type=int_list, default=[4096, 65536], help="P x E of the rollouts, comma-separated")
    p.add_argument("--writes", default="linear,hebbian", help="write rules, comma-separated")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--episodes", type=int, default=16, help="E per individual")
    p.add_argument("--repeats", type=int, default=7, help="timed blocks per build and point (median shown)")
    p.add_argument("--min-seconds", type=float, default=0.3, help="minimum duration of one timed block")
    return p.parse_args(argv)


def sources_at(revision: str, into: Path) -> Path:
    """``metods_evo/csrc/`` as it is at ``revision``, extracted under ``into``."""
    archive = subprocess.run(["git", "archive", revision, "metods_evo/csrc"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "metods_evo" / "csrc"


def build(tag: str, source_dir: Path) -> object:
    """The rollout extension of these sources, named ``kernel_ab_{tag}_...`` so that it never shadows the real one."""
    module, reason = fused_rollout.build(source_dir, prefix=f"kernel_ab_{tag}")
    if module is None:
        raise SystemExit(f"the {tag} kernel did not compile: {reason}")
    return module


def rate(call, min_seconds: float) -> float:
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        steps += call().env_steps
    return steps / (time.perf_counter() - start)


def point(args: argparse.Namespace, builds: dict, task, write: str, pe: int, threads: int) -> bool:
    """Check and time both builds at one (write, P x E, threads); prints a line, returns whether they agree."""
    model = MetODS(ModelConfig(n=args.n, depth=args.depth, write=write, fused="any-size"), task.obs_dim,
                   task.num_actions, task.action_dim)
    pop, episodes = population_shape(pe, args.episodes)
    params = population_params(model, pop, torch.Generator().manual_seed(0), torch.device("cpu"))

    def call(name: str):
        fused_rollout._load = lambda: (builds[name], "")
        with torch.no_grad():
            return rollout(model, params, task, episodes, torch.Generator().manual_seed(0))

    first = {name: call(name) for name in builds}
    same = (torch.equal(first["base"].rewards, first["tree"].rewards)
            and torch.equal(first["base"].lengths, first["tree"].lengths))
    rates: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(args.repeats):
        for name in builds:
            rates[name].append(rate(functools.partial(call, name), args.min_seconds))
    med = {name: statistics.median(values) for name, values in rates.items()}
    blocks = ", ".join(f"{t / b:.2f}" for t, b in zip(rates["tree"], rates["base"]))
    print(f"{write:8s} P x E = {pe:6d} threads = {threads}: base {med['base'] / 1e6:.2f} M/s, tree "
          f"{med['tree'] / 1e6:.2f} M/s, tree / base = {med['tree'] / med['base']:.2f} (per block: {blocks}); "
          f"bitwise same: {same}", flush=True)
    return same


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_sources = sources_at(args.base, Path(tmp))
        base_hash = kernels.source_hash(base_sources)
        builds = {"base": build("base", base_sources), "tree": build("tree", kernels.SOURCE_DIR)}
    task = make_task("harlow")
    print(f"kernel A/B on {cpu_name()} ({os.cpu_count()} CPUs), torch {torch.__version__}: base = {args.base} "
          f"(sources {base_hash}), tree = working tree (sources {kernels.source_hash(kernels.SOURCE_DIR)}); "
          f"Harlow N = {args.n}, S = {args.depth}, E = {args.episodes}; median of {args.repeats} interleaved blocks "
          f">= {args.min_seconds} s")
    original = fused_rollout._load
    agree = True
    try:
        for threads, write, pe in itertools.product(args.threads, args.writes.split(","), args.pe):
            torch.set_num_threads(threads)
            agree &= point(args, builds, task, write, pe, threads)
    finally:
        fused_rollout._load = original
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
