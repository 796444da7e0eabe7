"""What ES sees around two Harlow agents: ties, the Gaussian-smoothed fitness, and the line between them.

For each of two trained runs (e.g. one stuck on the "repeat a win, stop after a loss" plateau and one that solved
Harlow), on the same episodes:

* **neighbourhood**: ``--popsize`` Gaussian perturbations theta + sigma z of the run's agent, for each ``--sigmas``
  value, scored as an ES generation scores them (greedy, ``--episodes`` common episodes): their mean fitness (the
  Gaussian-smoothed fitness that ES with that sigma climbs), the share that ties the unperturbed agent exactly, the
  share that beats it, and the number of distinct fitness values;
* **line**: the return (greedy and sampled actions, ``--line-episodes`` episodes) of (1 - a) theta_A + a theta_B for
  ``--points`` values of a in [0, 1].

It prints; it never asserts. Run::

    metods-evo train --seed 0 --set es.sigma_init=0.3 --out /tmp/plateau     # SNES at sigma 0.3: the plateau
    metods-evo train --seed 0 --out /tmp/solved
    python benchmarks/es_landscape.py /tmp/plateau /tmp/solved
"""

from __future__ import annotations

import argparse

import torch

from metods_evo.evaluate import evaluate_theta
from metods_evo.models import build_model
from metods_evo.rollout import rollout
from metods_evo.runs import RunDir
from metods_evo.tasks import make_task


def neighbourhood(cfg, theta: torch.Tensor, sigma: float, popsize: int, episodes: int, seed: int) -> dict:
    task = make_task(cfg.task, **cfg.task_options)
    model = build_model(cfg, task)
    population = theta + sigma * torch.randn(popsize, theta.numel(), generator=torch.Generator().manual_seed(seed))
    population[0] = theta
    with torch.no_grad():
        result = rollout(model, model.spec.unflatten(population), task, episodes,
                         torch.Generator().manual_seed(seed + 1))
    fitness = result.metrics[task.main_metric].mean(1)
    centre, others = fitness[0], fitness[1:]
    return {"mean": float(others.mean()), "centre": float(centre), "tied": float((others == centre).float().mean()),
            "better": float((others > centre).float().mean()), "distinct": len(torch.unique(fitness))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--sigmas", default="0.03,0.1,0.3")
    p.add_argument("--popsize", type=int, default=256)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--points", type=int, default=21)
    p.add_argument("--line-episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    runs = {name: RunDir.open(path) for name, path in (("A", args.run_a), ("B", args.run_b))}
    cfg = runs["B"].config()
    thetas = {name: run.load_agent_state()["theta"] for name, run in runs.items()}
    print(f"neighbourhood: {args.popsize} perturbations, {args.episodes} common episodes, greedy")
    print(f"{'run':>3} {'sigma':>6} {'centre':>7} {'mean':>7} {'tied':>6} {'better':>7} {'distinct':>8}")
    for name, theta in thetas.items():
        for sigma in (float(s) for s in args.sigmas.split(",")):
            n = neighbourhood(cfg, theta, sigma, args.popsize, args.episodes, args.seed)
            print(f"{name:>3} {sigma:>6g} {n['centre']:>7.3f} {n['mean']:>7.3f} {n['tied']:>6.1%} {n['better']:>7.1%} "
                  f"{n['distinct']:>8}")
    print(f"\nline (1 - a) A + a B: return on {args.line_episodes} episodes")
    print(f"{'a':>5} {'greedy':>7} {'sampled':>8}")
    for i in range(args.points):
        a = i / (args.points - 1)
        theta = (1 - a) * thetas["A"] + a * thetas["B"]
        greedy = evaluate_theta(cfg, theta, args.line_episodes, args.seed)["metrics"]["return"]["mean"]
        cfg.eval_action_mode = "sample"
        sampled = evaluate_theta(cfg, theta, args.line_episodes, args.seed)["metrics"]["return"]["mean"]
        cfg.eval_action_mode = ""
        print(f"{a:>5.2f} {greedy:>7.3f} {sampled:>8.3f}")


if __name__ == "__main__":
    main()
