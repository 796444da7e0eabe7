"""Where a maze agent's misses come from: exploration before the first reward, on a run's own table episodes.

    python runs/maze-table/misses.py RUN [RUN ...] [--reads]

Plays each run's agent on the 1000 episodes of its final evaluation (`final_seed`, the run's action mode: the
episodes of its eval.json / the table's 8x8 column) and prints, per run: the episodes that never reach the target
(misses), steps and distinct cells before the first reward where it is reached, and in the misses the distinct
cells of the whole episode and the step of the last new cell (exploration that stalls shows as an early last new
cell). `--reads` adds, for MetODS runs, the fraction of flat first reads (tanh' < 0.1 tanh'(0), as `analyze`'s
saturation.png) at a few steps, in hits and in misses, over 1000 fresh episodes (`analysis.collect`, 4 x 250).
"""

import sys

import torch

from metods_evo import analysis
from metods_evo.evaluate import final_seed, open_agent
from metods_evo.models import build_model
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task


def load(path):
    _, cfg, theta, _ = open_agent(path)
    task = make_task(cfg.task, device="cpu", **cfg.task_options)
    model = build_model(cfg, task)
    return cfg, task, model, model.spec.unflatten(theta.float())


def exploration(path, episodes=1000):
    cfg, task, model, params = load(path)
    cells, rewards, open_cells = [], [], []
    step = task.step

    def recording_step(state, action, generator):  # the cell each action is taken from, and what it paid
        new_state, obs, reward, done = step(state, action, generator)
        cells.append(state["pos"][:, 0] * task.size + state["pos"][:, 1])
        if not open_cells:
            open_cells.extend((~state["walls"]).flatten(1).sum(1).tolist())
        rewards.append(reward)
        return new_state, obs, reward, done

    task.step = recording_step
    generator = torch.Generator().manual_seed(final_seed(cfg))
    rollout(model, params, task, episodes, generator, action_mode=cfg.action_mode(), compact=False, fuse=False)
    cell, paid = torch.stack(cells).T.tolist(), (torch.stack(rewards) != 0).T  # [E][T], [E, T]
    steps = paid.shape[1]
    first = torch.where(paid.any(1), paid.float().argmax(1), torch.full((episodes,), steps)).tolist()
    hits_steps, hits_cells, miss_cells, miss_last_new, miss_open = [], [], [], [], []
    for path_cells, t_first, maze_open in zip(cell, first, open_cells):
        seen, last_new = set(), 0
        for t, c in enumerate(path_cells[: t_first + 1]):
            if c not in seen:
                seen.add(c)
                last_new = t
        if t_first < steps:
            hits_steps.append(t_first)
            hits_cells.append(len(seen))
        else:
            miss_cells.append(len(seen))
            miss_last_new.append(last_new)
            miss_open.append(maze_open)

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    print(f"{path}: misses {len(miss_cells)}/{episodes}; hits: first reward at step {mean(hits_steps):.1f} after "
          f"{mean(hits_cells):.1f} distinct cells; misses: {mean(miss_cells):.1f} distinct cells of "
          f"{mean(miss_open):.1f} open in {steps} steps, the last new one at step {mean(miss_last_new):.1f}")


def flat_reads(path, chunks=4, episodes=250):
    cfg, task, model, params = load(path)
    hits, misses = [], []
    for chunk in range(chunks):
        data = analysis.collect(model, params, task, episodes, 1000 + chunk, cfg.action_mode())
        pre = analysis.read_preactivation(data.W, data.W0, data.v0).abs()
        flat = (pre > analysis.FLAT_FROM[cfg.model.activation]).double().mean(-1)  # [T, E]
        missed = ~(data.rewards != 0).any(0)
        hits.append(flat[:, ~missed])
        misses.append(flat[:, missed])
    hits, misses = torch.cat(hits, 1), torch.cat(misses, 1)
    at = ", ".join(f"t={t}: {hits[t].mean():.3f} / {misses[t].mean():.3f}" for t in (0, 20, 40, 60, 99))
    print(f"{path}: flat first reads, hits / misses ({misses.shape[1]} misses in {chunks * episodes}): {at}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    runs = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    for run in runs:
        exploration(run)
    if "--reads" in sys.argv:
        for run in runs:
            if load(run)[0].model.kind == "metods":
                flat_reads(run)
