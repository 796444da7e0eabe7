"""Does MetODS's maze agent forget too fast? Replay a run's table episodes with its memory decay set by hand.

    python runs/maze-pilots/decay_probe.py RUN BETA0 [BETA0 ...]

For an S = 1 MetODS run, W_t = beta_0 W_{t-1} + beta_1 (alpha * v (x) u) (then clipped): beta_0 is the memory's
decay per step. This replaces the learnt beta_0 by each BETA0 and plays the 1000 episodes of the run's final
evaluation (`final_seed`, the run's action mode), printing the table's metrics for the learnt value and each BETA0.
"""

import sys

from metods_evo.evaluate import final_seed, open_agent, play_episodes
from metods_evo.models import build_model
from metods_evo.tasks import make_task


def main(run: str, decays: list[float]) -> None:
    _, cfg, theta, _ = open_agent(run)
    if cfg.model.kind != "metods" or cfg.model.depth != 1:
        sys.exit(f"error: {run} is not an S = 1 MetODS run (model {cfg.model.kind}, depth {cfg.model.depth})")
    model = build_model(cfg, make_task(cfg.task, device="cpu", **cfg.task_options))
    params = model.spec.unflatten(theta.float())
    print(f"{run}: learnt beta = {[round(b, 4) for b in params['beta'][0].tolist()]}")
    for beta0 in [None, *decays]:
        changed = {name: value.clone() for name, value in params.items()}
        if beta0 is not None:
            changed["beta"][:, 0] = beta0
        values, _, _ = play_episodes(cfg, model.spec.flatten(changed).reshape(theta.shape), 1000, final_seed(cfg))
        label = "learnt" if beta0 is None else f"{beta0:.3f}"
        print(f"  beta_0 {label:>6}: " + ", ".join(f"{k} {float(v.mean()):.3f}" for k, v in values.items()))


if __name__ == "__main__":
    main(sys.argv[1], [float(x) for x in sys.argv[2:]])
