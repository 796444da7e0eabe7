"""Every registered task: the Task interface contract, and its gymnasium vector-env registration.

Tasks whose simulator is an optional extra (MuJoCo) are skipped when it is not installed."""

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from helpers import task_params

import metods_evo  # noqa: F401 - registers the gymnasium ids
from metods_evo.tasks import TASKS, make_task, register

# Meta-World episodes are 10 rollouts of 500 steps: shortened here (tests/test_metaworld.py checks the full shape).
QUICK_OPTIONS = {task_id: {"rollouts": 2, "rollout_steps": 10}
                 for task_id in ("metaworld-reach", "metaworld-push", "metaworld-ml10")}


def build(task_id: str):
    """``make_task(task_id)``, or skip the test when the task's optional simulator is not installed."""
    try:
        return make_task(task_id, **QUICK_OPTIONS.get(task_id, {}))
    except ImportError as error:
        pytest.skip(f"{task_id}: {error}")


def random_actions(task, batch: int, g: torch.Generator) -> torch.Tensor:
    if task.discrete:
        return torch.randint(0, task.num_actions, (batch,), generator=g)
    return task.action_low + (task.action_high - task.action_low) * torch.rand(batch, task.action_dim, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("task_id", task_params(sorted(TASKS)))
def test_task_contract(task_id):
    task = build(task_id)
    g = torch.Generator().manual_seed(0)
    state, obs = task.reset(7, g)
    assert obs.shape == (7, task.obs_dim) and obs.dtype == torch.float32
    done_at = torch.full((7,), -1)
    for t in range(task.max_steps):
        state, obs, reward, done = task.step(state, random_actions(task, 7, g), g)
        assert obs.shape == (7, task.obs_dim) and reward.shape == (7,) and done.dtype == torch.bool
        done_at[(done_at < 0) & done] = t
    assert (done_at >= 0).all(), "every episode ends within max_steps"
    metrics = task.episode_metrics(torch.zeros(task.max_steps, 7), torch.full((7,), task.max_steps))
    assert "return" in metrics and metrics["return"].shape == (7,)
    # what `metods-evo tasks` lists without building the task is what the built task has
    spec = TASKS[task_id]
    options = spec.options() | QUICK_OPTIONS.get(task_id, {})
    described = spec.load_class().describe(**options)
    assert described == (task.obs_dim, task.num_actions, task.action_dim, task.max_steps)


@pytest.mark.slow
@pytest.mark.parametrize("task_id", task_params(sorted(TASKS)))
def test_gymnasium_make_vec(task_id):
    spec = TASKS[task_id]
    task = build(task_id)
    env = gymnasium.make_vec(spec.gym_id, num_envs=4, **QUICK_OPTIONS.get(task_id, {}))
    obs, _ = env.reset(seed=3)
    assert obs.shape == (4, env.single_observation_space.shape[0])
    total_done = 0
    for _ in range(2 * task.max_steps + 2):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.shape[0] == 4 and np.isfinite(reward).all() and not (terminated & truncated).any()
        if task_id == "maze":  # no terminal state: the 100-step horizon is a truncation
            assert not terminated.any()
        total_done += (terminated | truncated).sum()
    assert total_done >= 4  # episodes end and auto-reset
    obs2, _ = env.reset(seed=3)
    np.testing.assert_array_equal(env.reset(seed=3)[0], obs2)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")
    with pytest.raises(ValueError, match="no option"):
        make_task("maze", sise=10)
    with pytest.raises(ValueError, match="already registered"):
        register("maze", "metods_evo.tasks.maze:MazeTask")
    assert make_task("maze", size=10).obs_dim == 9


def test_gymnasium_separates_time_limits_from_terminal_states():
    env = gymnasium.make_vec("metods_evo/Harlow-v0", num_envs=3)
    env.reset(seed=0)
    for step in range(30):  # always "stay": no trial is ever completed, so the 30-step limit cuts the episode
        _, _, terminated, truncated, _ = env.step(np.ones(3, dtype=np.int64))
        assert not terminated.any() and truncated.all() == (step == 29)


@pytest.mark.slow
def test_import_is_light():
    """Importing the package and reading every task's options must not import an optional simulator."""
    code = ("import sys, metods_evo; from metods_evo.tasks import TASKS; [s.options() for s in TASKS.values()]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mujoco', 'metaworld')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
