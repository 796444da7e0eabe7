"""metaworld-reach, metaworld-push and metaworld-ml10 (metods_evo/tasks/metaworld.py) against Meta-World's own envs.

Short rollouts (a few steps each) keep these fast; building the benchmarks is the main cost (ML10 takes tens of
seconds: Meta-World compiles and resets every class), paid once per process and shared by every test."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.mujoco, pytest.mark.metaworld]
metaworld = pytest.importorskip("metaworld")
gymnasium = pytest.importorskip("gymnasium")

from metods_evo.config import ModelConfig  # noqa: E402
from metods_evo.models import MetODS  # noqa: E402
from metods_evo.rollout import rollout, tile  # noqa: E402
from metods_evo.tasks import make_task  # noqa: E402
from metods_evo.tasks.metaworld import MetaWorldML1Task  # noqa: E402

ML10_TRAIN = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "button-press-topdown-v3",
              "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3"]
ML10_TEST = ["drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"]
QUICK = {"rollouts": 3, "rollout_steps": 8}


@functools.cache
def cached_task(task_id: str, **options):
    """One task per (id, options) for the whole module: each builds a Meta-World env per class."""
    return make_task(task_id, **{**QUICK, **options})


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_actions(batch: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, 4, generator=g) * 2 - 1


def rand_vec(task) -> np.ndarray:
    """The goal / object-position vector Meta-World freezes into a task."""
    return pickle.loads(task.data)["rand_vec"]


def meta_world_one_by_one(task, tasks: list[int], actions: torch.Tensor):
    """Meta-World's envs, one episode at a time: set_task + reset, the same actions, reset between rollouts.
    Returns the first observation [B, 39], then per step obs [T, B, 39], reward [T, B] and info["success"] [T, B]."""
    classes = {**task.benchmark.train_classes, **task.benchmark.test_classes}
    envs, steps, batch = {}, actions.shape[0], len(tasks)
    first, obs = np.zeros((batch, 39)), np.zeros((steps, batch, 39))
    rewards, success = np.zeros((steps, batch)), np.zeros((steps, batch), dtype=bool)
    for i, index in enumerate(tasks):
        mw_task = task.tasks[index]
        env = envs.setdefault(mw_task.env_name, classes[mw_task.env_name]())
        env.set_task(mw_task)
        first[i], _ = env.reset()
        for t in range(steps):
            obs[t, i], rewards[t, i], _, _, info = env.step(actions[t, i].numpy())
            success[t, i] = info["success"] > 0
            if (t + 1) % task.rollout_steps == 0 and t + 1 < task.max_steps:
                obs[t, i], _ = env.reset()  # the next rollout starts from Meta-World's reset
    return first, obs, rewards, success


@pytest.mark.slow
def test_spaces_dtypes_and_state():
    task = cached_task("metaworld-reach")
    env = task.benchmark.train_classes["reach-v3"]()
    assert (task.obs_dim, task.action_dim, task.num_actions, task.discrete) == (39, 4, 0, False)
    assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
    assert (task.action_low, task.action_high) == (-1.0, 1.0)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert task.max_steps == 3 * 8 and make_task("metaworld-reach").max_steps == 10 * 500
    state, obs = task.reset(5, gen(0))
    assert obs.shape == (5, 39) and obs.dtype == torch.float32
    assert all(v.shape[0] == 5 for v in state.values()) and state["success"].shape == (5, 3)
    assert state["physics"].dtype == torch.float64 and state["task"].dtype == torch.int64
    state, obs, reward, done = task.step(state, random_actions(5, gen(1)), gen(2))
    assert obs.shape == (5, 39) and obs.dtype == torch.float32
    assert reward.shape == (5,) and reward.dtype == torch.float32 and done.dtype == torch.bool


@pytest.mark.slow
@pytest.mark.parametrize(("task_id", "options"), [
    ("metaworld-reach", {}), ("metaworld-reach", {"split": "test"}), ("metaworld-push", {"sim_threads": 2}),
    ("metaworld-ml10", {}), ("metaworld-ml10", {"split": "test", "sim_threads": 2}),
])
def test_batched_equals_metaworld_one_by_one(task_id, options):
    """The batched task against Meta-World's envs stepped one episode at a time, across two rollout boundaries:
    the same observations, rewards and info["success"], for every class of the split, with rows sharing a task
    (as the population's copies do) and rows of different tasks of one class."""
    task = cached_task(task_id, **options)
    # Not a class's first task: the stepping envs were really reset for that one; these they reach by restoring.
    second = [next(i for i, t in enumerate(task.tasks) if t.env_name == name) + 1 for name in task.class_names]
    tasks = second + [second[0] + 1, second[0], second[-1] + 2]
    g = gen(3)
    actions = torch.stack([random_actions(len(tasks), g) for _ in range(task.max_steps)])
    first, ref_obs, ref_reward, ref_success = meta_world_one_by_one(task, tasks, actions)
    state, obs = task.reset_to(torch.tensor(tasks))
    assert torch.equal(obs, torch.from_numpy(first).float())
    success = np.zeros((len(tasks), task.rollouts), dtype=bool)
    for t in range(task.max_steps):
        state, obs, reward, done = task.step(state, actions[t], g)
        assert torch.equal(obs, torch.from_numpy(ref_obs[t]).float()), f"step {t}"
        assert torch.equal(reward, torch.from_numpy(ref_reward[t]).float()), f"step {t}"
        assert bool(done.any()) == bool(done.all()) == (t == task.max_steps - 1)  # done only at the very end
        success[:, t // task.rollout_steps] |= ref_success[t]
    assert torch.equal(state["success"], torch.from_numpy(success))
    assert (state["t"] == task.max_steps).all() and task.time_limit_reached(state).all()
    assert sorted({task.tasks[i].env_name for i in tasks}) == sorted(task.class_names)


def test_rollout_boundaries_reset_the_env_but_not_the_agent():
    """Through the real rollout: one episode spans every rollout; at each boundary the observation is the task's
    reset observation again, while the plastic weights go on from where the last rollout left them."""
    task = cached_task("metaworld-reach")
    model = MetODS(ModelConfig(n=6, depth=1), task.obs_dim, 0, task.action_dim)
    params = model.spec.unflatten(model.init_params(gen(4)).unsqueeze(0))
    result = rollout(model, params, task, 2, gen(5), action_mode="sample", trace=True)
    assert (result.lengths == task.max_steps).all()
    # the rollout reports the success flags read off the final state beside the reward metrics
    for name, value in task.state_metrics(result.task_state).items():
        torch.testing.assert_close(result.metrics[name], value.view(1, 2))
    obs, weights, steps = torch.stack(result.trace["obs"]), torch.stack(result.trace["W"]), task.rollout_steps
    for boundary in range(steps, task.max_steps, steps):
        assert torch.equal(obs[boundary], obs[0])  # Meta-World reset: hand back home, same goal
        assert not torch.equal(obs[boundary - 1], obs[0])
        # W after the boundary step follows from W before it, not from a fresh W0
        prev_action = result.trace["action"][boundary - 1].clamp(-1, 1)
        _, _, carried = model.step(params, {"W": weights[boundary - 1]}, obs[boundary], prev_action,
                                   result.rewards[boundary - 1])
        torch.testing.assert_close(carried["W"], weights[boundary])
        fresh = model.initial_state(params, 2, gen(5))
        assert not torch.allclose(weights[boundary], fresh["W"])


@pytest.mark.slow
def test_ml1_splits_are_metaworld_train_and_test_tasks():
    """Pinned to metaworld.ML1(name, seed): 50 training goals, 50 distinct held-out goals, one class."""
    for split in ("train", "test"):
        task = cached_task("metaworld-reach", split=split)
        reference = metaworld.ML1("reach-v3", seed=0)
        expected = reference.train_tasks if split == "train" else reference.test_tasks
        assert [t.data for t in task.tasks] == [t.data for t in expected] and len(task.tasks) == 50
        assert task.class_names == ["reach-v3"]
    train = {rand_vec(t).tobytes() for t in cached_task("metaworld-reach").tasks}
    test = {rand_vec(t).tobytes() for t in cached_task("metaworld-reach", split="test").tasks}
    assert len(train) == len(test) == 50 and not train & test
    push = cached_task("metaworld-push")
    assert push.class_names == ["push-v3"] and {t.env_name for t in push.tasks} == {"push-v3"}


@pytest.mark.slow
def test_ml10_splits_are_the_ten_training_and_five_held_out_classes():
    train, test = cached_task("metaworld-ml10"), cached_task("metaworld-ml10", split="test")
    assert train.class_names == ML10_TRAIN and test.class_names == ML10_TEST
    assert isinstance(train.benchmark, metaworld.ML10) and test.benchmark is train.benchmark
    assert [t.data for t in train.tasks] == [t.data for t in train.benchmark.train_tasks]
    assert [t.data for t in test.tasks] == [t.data for t in train.benchmark.test_tasks]
    for task, names in ((train, ML10_TRAIN), (test, ML10_TEST)):
        counts = {name: sum(t.env_name == name for t in task.tasks) for name in names}
        assert counts == dict.fromkeys(names, 50)
        episodes = 12 * len(names)
        state, _ = task.reset(episodes, gen(6))  # every episode's task comes from the requested split
        drawn = task.task_names(state)
        assert set(drawn) == set(names)
        groups = task.episode_groups(state)
        assert list(groups) == names and sum(int(m.sum()) for m in groups.values()) == episodes
        assert all(drawn[i] == name for name, mask in groups.items() for i in mask.nonzero().flatten().tolist())


@pytest.mark.slow
def test_success_flags_follow_info_success():
    """A scripted reacher (moves the hand to the goal, which the agent itself never sees) succeeds in every rollout
    and a motionless one in none: per-rollout flags and the metrics built from them."""
    task = make_task("metaworld-reach", rollouts=2, rollout_steps=60)
    state, obs = task.reset(2, gen(7))
    goal = torch.tensor(rand_vec(task.tasks[int(state["task"][0])])[-3:], dtype=torch.float32)
    actions = []
    for _ in range(task.max_steps):
        action = torch.zeros(2, 4)
        action[0, :3] = ((goal - obs[0, :3]) * 20).clamp(-1, 1)  # obs[:3] is the hand's position
        actions.append(action)
        state, obs, _, _ = task.step(state, action, None)
    _, _, _, ref_success = meta_world_one_by_one(task, state["task"].tolist(), torch.stack(actions))
    seen = torch.from_numpy(ref_success.reshape(2, 60, 2).any(1).T)  # [episode, rollout]
    assert seen.tolist() == [[True, True], [False, False]]
    assert torch.equal(state["success"], seen)
    metrics = task.state_metrics(state)
    assert metrics["success"].tolist() == [1.0, 0.0] and metrics["success_fraction"].tolist() == [1.0, 0.0]
    assert metrics["success_rollout_1"].tolist() == metrics["success_rollout_2"].tolist() == [1.0, 0.0]
    assert all(v.dtype == torch.float32 and v.shape == (2,) for v in metrics.values())


def test_state_metrics_per_rollout():
    task = cached_task("metaworld-reach")
    state, _ = task.reset(3, gen(8))
    state["success"] = torch.tensor([[False, True, True], [False, False, False], [True, False, False]])
    metrics = task.state_metrics(state)
    assert list(metrics) == ["success", "success_fraction", "success_rollout_1", "success_rollout_2",
                             "success_rollout_3"]
    assert metrics["success"].tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(metrics["success_fraction"], torch.tensor([2 / 3, 0.0, 1 / 3]))
    assert metrics["success_rollout_1"].tolist() == [0.0, 0.0, 1.0]
    assert metrics["success_rollout_3"].tolist() == [1.0, 0.0, 0.0]
    assert task.episode_groups(state) == {}  # one class: nothing to split by


@pytest.mark.slow
def test_seeding_reproduces_episodes_and_draws_every_task():
    task = cached_task("metaworld-reach")

    def run(seed: int):
        g, actions = gen(seed), gen(100)
        state, obs = task.reset(4, g)
        trace = [obs]
        for _ in range(12):
            state, obs, reward, done = task.step(state, random_actions(4, actions), g)
            trace += [obs, reward, done]
        return state, trace

    (s1, t1), (s2, t2), (s3, _) = run(10), run(10), run(11)
    assert all(torch.equal(a, b) for a, b in zip(t1, t2)) and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["task"], s3["task"])
    state, _ = task.reset(1000, gen(12))
    assert set(state["task"].tolist()) == set(range(50))


@pytest.mark.slow
def test_common_random_numbers_under_tiling():
    task = cached_task("metaworld-push")
    episodes, individuals = 3, 4
    g = gen(13)
    base, base_obs = task.reset(episodes, g)
    state = tile(base, individuals)
    for _ in range(10):
        action = random_actions(episodes, g)
        base, base_obs, base_reward, _ = task.step(base, action, g)
        state, obs, reward, _ = task.step(state, action.repeat(individuals, 1), g)
        assert "_episodes" in state
        assert torch.equal(obs.view(individuals, episodes, -1), base_obs.expand(individuals, -1, -1))
        assert torch.equal(reward.view(individuals, episodes), base_reward.expand(individuals, -1))


def test_unstable_simulation_ends_the_episode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs its warnings to ./MUJOCO_LOG.TXT
    task = cached_task("metaworld-reach")
    nq = task._recorders[0].model.nq
    state, _ = task.reset(3, gen(14))
    state["physics"][0, 1 + nq] = 1e12  # integration state = time, qpos, qvel, ...: MuJoCo's "huge QVEL" warning
    state["physics"][1, 1] = float("nan")
    before = {k: v.clone() for k, v in state.items()}
    state, obs, reward, done = task.step(state, torch.zeros(3, 4), None)
    assert done.tolist() == [True, True, False] and state["unstable"].tolist() == [True, True, False]
    assert reward[:2].tolist() == [0.0, 0.0] and torch.isfinite(reward).all()
    assert torch.equal(state["physics"][0], before["physics"][0]) and torch.equal(obs[0], before["obs"][0])
    assert not task.time_limit_reached(state)[:2].any()
    state, obs, reward, done = task.step(state, torch.zeros(3, 4), None)
    assert reward[:2].tolist() == [0.0, 0.0] and state["t"].tolist() == [0, 0, 2]


def test_options_are_validated():
    with pytest.raises(ValueError, match="split"):
        make_task("metaworld-reach", split="val")
    with pytest.raises(ValueError, match="rollout_steps"):
        make_task("metaworld-reach", rollout_steps=501)
    with pytest.raises(ValueError, match="rollouts"):
        make_task("metaworld-reach", rollouts=0)
    with pytest.raises(ValueError, match="sim_threads"):
        make_task("metaworld-reach", sim_threads=0)
    with pytest.raises(ValueError, match="env_name"):
        MetaWorldML1Task(env_name="reach-v2")


@pytest.mark.slow
def test_gymnasium_vector_env_truncates_after_every_rollout():
    env = gymnasium.make_vec("metods_evo/MetaWorldReach-v0", num_envs=2, rollouts=2, rollout_steps=5)
    assert env.single_action_space.shape == (4,) and env.single_observation_space.shape == (39,)
    first, _ = env.reset(seed=0)
    for step in range(11):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.dtype == np.float32 and not terminated.any() and truncated.all() == (step == 9)
        if step == 4:  # the env was reset for the second rollout; the episode goes on
            np.testing.assert_array_equal(obs, first)


@pytest.mark.slow
def test_pickles_with_its_options():
    """ES checkpoints pickle the task (inside evotorch's problem); it comes back with the same options."""
    task = cached_task("metaworld-push", split="test", sim_threads=2)
    copy = pickle.loads(pickle.dumps(task))
    assert (copy.split, copy.rollouts, copy.rollout_steps, len(copy._envs)) == ("test", 3, 8, 2)
    state, _ = task.reset(3, gen(18))
    action = random_actions(3, gen(19))
    assert torch.equal(task.step(state, action, None)[1], copy.step(state, action, None)[1])
