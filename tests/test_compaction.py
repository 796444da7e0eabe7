"""Compaction: a scoring rollout that stops stepping finished agents gives the same result as one that steps all."""

import pytest
import torch

from metods_evo.config import make_config
from metods_evo.models import build_model
from metods_evo.rollout import COMPACT_BELOW, rollout
from metods_evo.tasks import TASKS, register
from metods_evo.tasks.base import Task


class Dwindling(Task):
    """Episodes of random length (1..20, drawn at reset, so most agents finish long before the slowest), with a
    noisy observation drawn each step through ``Task.uniform`` and a reward for matching its sign: the batch
    thins out steadily, and the per-episode noise must follow each agent through every compaction."""

    obs_dim, num_actions, max_steps = 2, 3, 20

    def reset(self, num_envs, generator):
        length = torch.randint(1, self.max_steps + 1, (num_envs,), generator=generator, device=self.device)
        state = {"length": length, "t": torch.zeros(num_envs, dtype=torch.long, device=self.device),
                 "score": torch.zeros(num_envs, device=self.device)}
        return state, torch.zeros(num_envs, self.obs_dim, device=self.device)

    def step(self, state, action, generator):
        noise = self.uniform(state, generator, self.obs_dim)
        active = state["t"] < state["length"]  # a finished episode's state stays as it was (Task.step's contract)
        t = state["t"] + active
        reward = torch.where(action == (noise[:, 0] > 0.5).long() + 1, 1.0, -0.5) * active
        new = {**state, "t": t, "score": state["score"] + reward}
        return new, noise, reward, t >= state["length"]

    def state_metrics(self, state):
        return {"final_t": state["t"].float(), "score": state["score"]}


@pytest.fixture
def dwindling():
    register("dwindling-test", f"{__name__}:Dwindling")
    yield "dwindling-test"
    TASKS.pop("dwindling-test")


@pytest.mark.parametrize("kind", ["metods", "rl2"])
def test_compacted_rollout_equals_stepping_everyone(dwindling, kind):
    cfg = make_config(dwindling, "es", {"model.kind": kind, "model.n": "8"})
    task = TASKS[dwindling].load_class()()
    model = build_model(cfg, task)
    gen = torch.Generator().manual_seed(0)
    params = model.spec.unflatten(model.init_params(gen) + 0.5 * torch.randn(5, model.num_params, generator=gen))
    with torch.no_grad():
        full = rollout(model, params, task, 16, torch.Generator().manual_seed(7), compact=False)
        compact = rollout(model, params, task, 16, torch.Generator().manual_seed(7))
    assert full.model_steps == 20 * 5 * 16 and compact.model_steps < 0.75 * full.model_steps  # it did compact
    assert compact.env_steps == full.env_steps
    for name in ("rewards", "lengths", "finite"):
        assert torch.equal(getattr(compact, name), getattr(full, name)), name
    for name in full.metrics:  # including the state metrics read off the final state of dropped agents
        assert torch.equal(compact.metrics[name], full.metrics[name]), name
    for key in ("length", "t", "score"):
        assert torch.equal(compact.task_state[key], full.task_state[key]), key


def test_compaction_only_where_results_cannot_change(dwindling):
    """Sampled actions, record (PPO) and trace (analysis) keep the whole grid: they need every agent's step."""
    cfg = make_config(dwindling, "es", {"model.n": "8"})
    task = TASKS[dwindling].load_class()()
    model = build_model(cfg, task)
    params = model.spec.unflatten(model.init_params(torch.Generator().manual_seed(0)).expand(3, -1))
    grid = 20 * 3 * 16
    with torch.no_grad():
        assert rollout(model, params, task, 16, torch.Generator().manual_seed(1), action_mode="sample").model_steps \
            == grid
        assert rollout(model, params, task, 16, torch.Generator().manual_seed(1), trace=True).model_steps == grid
    assert rollout(model, params, task, 16, torch.Generator().manual_seed(1), record=True).model_steps == grid
    assert 0 < COMPACT_BELOW < 1
