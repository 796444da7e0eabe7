"""The batched Meta-World step (metods_evo/tasks/metaworld_fast.py) against Meta-World's envs stepped one by one.

Every output of every step is compared bit for bit: the observation, reward, success, done, the MuJoCo state and
the frame-stacking buffer, across rollout boundaries, under random actions and under Meta-World's scripted push
policy (which reaches the branches of push's reward that random actions do not: the gripper closing around the
puck, the float32 caging reward, success)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.mujoco, pytest.mark.metaworld]
metaworld = pytest.importorskip("metaworld")

from metaworld.policies import SawyerPushV3Policy, SawyerReachV3Policy  # noqa: E402
from metaworld.utils import reward_utils  # noqa: E402

from metods_evo.tasks import make_task, mujoco_batch  # noqa: E402
from metods_evo.tasks import metaworld_fast as fast  # noqa: E402

needs_stepper = pytest.mark.skipif(not mujoco_batch.available(), reason="the batched MuJoCo stepper did not compile")


@functools.cache
def cached_task(task_id: str, **options):
    return make_task(task_id, **options)


def metaworld_reference(task, tasks: list[int], policy, steps: int, seed: int):
    """Meta-World's envs one episode at a time (reset between rollouts), acting with ``policy(obs with the goal,
    generator)``. Returns the actions [T, B, 4] (float32) and per step obs, reward, success, MuJoCo state and
    frame buffer (after a rollout's last step: those of the reset that follows), plus whether the reward came back
    as float32 [T, B]."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    rng = np.random.default_rng(seed)
    batch = len(tasks)
    env = task.benchmark.train_classes[task.class_names[0]]()
    width = task._state_width
    out = {"action": np.zeros((steps, batch, 4), np.float32), "obs": np.zeros((steps, batch, 39)),
           "reward": np.zeros((steps, batch)), "success": np.zeros((steps, batch), bool),
           "physics": np.zeros((steps, batch, width)), "frame": np.zeros((steps, batch, 18)),
           "float32": np.zeros((steps, batch), bool)}
    for i, index in enumerate(tasks):
        env.set_task(task.tasks[index])
        obs, _ = env.reset()
        for t in range(steps):
            seen = obs.copy()
            seen[-3:] = env._target_pos  # the scripted policies need the goal the agent does not see
            action = np.asarray(policy(seen, rng), dtype=np.float32)
            out["action"][t, i] = action
            obs, reward, _, _, info = env.step(action)
            out["reward"][t, i], out["success"][t, i] = reward, info["success"] > 0
            out["float32"][t, i] = isinstance(reward, np.float32)
            if (t + 1) % task.rollout_steps == 0 and t + 1 < task.max_steps:
                obs, _ = env.reset()  # the next rollout starts from Meta-World's reset
            out["obs"][t, i] = obs
            mujoco.mj_getState(env.model, env.data, out["physics"][t, i, :task._state_size[0]], spec)
            out["frame"][t, i] = env._prev_obs
    return out


def check_against_reference(task, tasks: list[int], ref) -> None:
    assert task._use_fast_path is not False
    state, _ = task.reset_to(torch.tensor(tasks))
    steps = ref["action"].shape[0]
    for t in range(steps):
        state, obs, reward, done = task.step(state, torch.from_numpy(ref["action"][t]), None)
        assert torch.equal(obs, torch.from_numpy(ref["obs"][t]).float()), f"step {t}"
        assert torch.equal(state["physics"], torch.from_numpy(ref["physics"][t])), f"step {t}"
        assert torch.equal(state["prev_frame"], torch.from_numpy(ref["frame"][t])), f"step {t}"
        assert torch.equal(reward, torch.from_numpy(ref["reward"][t]).float()), f"step {t}"
        assert bool(done.all()) == (t == task.max_steps - 1) and bool(done.any()) == bool(done.all())
        rollout = t // task.rollout_steps
        seen = ref["success"][rollout * task.rollout_steps:t + 1].any(0)
        assert torch.equal(state["success"][:, rollout], torch.from_numpy(seen)), f"step {t}"
    assert len(task._steppers) == 1 and all(task._fast_params[i] is not None for i in tasks)


def random_policy(obs, rng):
    return rng.uniform(-1.2, 1.2, 4)  # beyond the action box too: Meta-World clips it, the reward does not


@needs_stepper
@pytest.mark.parametrize("task_id", ["metaworld-reach", "metaworld-push"])
def test_fast_step_equals_metaworld_under_random_actions(task_id):
    task = cached_task(task_id, rollouts=3, rollout_steps=12)
    tasks = [3, 3, 17, 40]
    check_against_reference(task, tasks, metaworld_reference(task, tasks, random_policy, task.max_steps, 0))


@needs_stepper
@pytest.mark.slow
@pytest.mark.parametrize(("task_id", "expert", "rollout_steps"), [("metaworld-push", SawyerPushV3Policy, 150),
                                                                  ("metaworld-reach", SawyerReachV3Policy, 60)])
def test_fast_step_equals_metaworld_under_the_scripted_policy(task_id, expert, rollout_steps):
    """Meta-World's scripted policy with noise on its actions (and now and then another gripper action): it grips,
    pushes the puck or reaches to the goal, succeeds."""
    policy = expert()

    def noisy(obs, rng):
        action = policy.get_action(obs) + rng.normal(0, 0.1, 4)
        if rng.random() < 0.3:
            action[3] = rng.choice([rng.uniform(0, 1), 1.0, -0.5])
        return action

    task = cached_task(task_id, rollouts=2, rollout_steps=rollout_steps)
    tasks = [0, 5, 5, 21]
    ref = metaworld_reference(task, tasks, noisy, task.max_steps, 1)
    assert ref["success"][:rollout_steps].any(0).all()  # every episode reached the goal in its first rollout
    if task_id == "metaworld-push":
        assert ref["float32"].sum() > 100  # the float32 caging reward, as Meta-World computes it
    check_against_reference(task, tasks, ref)


def test_tolerance_and_hamacher_equal_reward_utils():
    """Meta-World's scalar reward functions against the batched ones on random inputs, bitwise (the squares there
    go through libm's pow, which the array square does not match for ~1 input in 1000)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 0.5, 3000) * rng.choice([1, 1e-3, 10], 3000)
    margin = np.where(rng.random(3000) < 0.05, 0.0, rng.uniform(0, 0.3, 3000))
    for lower, upper in ((0, 0.05), (0.015, 0.05), (0, 0.005)):
        ref = np.array([reward_utils.tolerance(float(v), bounds=(lower, upper), margin=float(m), sigmoid="long_tail")
                        for v, m in zip(x, margin)])
        np.testing.assert_array_equal(fast.tolerance(x, lower, upper, margin), ref)
    a, b = rng.random(3000), rng.random(3000)
    b[:100] = 0.0
    ref = np.array([reward_utils.hamacher_product(float(p), float(q)) for p, q in zip(a, b)])
    np.testing.assert_array_equal(fast.hamacher_product(a, b), ref)
    b32 = b.astype(np.float32)
    ref32 = np.array([reward_utils.hamacher_product(float(p), q) for p, q in zip(a, b32)], dtype=np.float32)
    np.testing.assert_array_equal(fast.hamacher_product(a.astype(np.float32), b32), ref32)


@needs_stepper
def test_tasks_outside_the_fast_step_go_through_metaworld():
    """A task whose recorded reset the batched step does not model is left to Meta-World's step."""
    task = cached_task("metaworld-reach", rollouts=3, rollout_steps=12)
    task._fast_task(0)
    stepper, record = task._steppers[0], task._record(0)
    assert stepper.accepts(record.attrs, record.model)
    moved_sites = dict(record.model, site_pos=record.model["site_pos"] + 1)  # every site moved, the fingers too
    assert not stepper.accepts(record.attrs, moved_sites)
    goal_only = record.model["site_pos"].copy()
    goal_only[task._recorders[0].model.site("goal").id] += 1
    assert stepper.accepts(record.attrs, dict(record.model, site_pos=goal_only))
    assert not stepper.accepts(dict(record.attrs, reward_function_version="v1"), record.model)
    assert not stepper.accepts(dict(record.attrs, _partially_observable=False), record.model)
