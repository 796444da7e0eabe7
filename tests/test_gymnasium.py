"""gymnasium conformance of every registered task: gymnasium.make (one episode) passes gymnasium's env checker,
make_vec's seeds, reset options, episode lengths and action bounds. Tasks whose simulator is an optional extra
(MuJoCo, Meta-World) are skipped when it is not installed."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from helpers import EXTRA_OF_TASK as EXTRAS
from helpers import task_params

import metods_evo  # noqa: F401 - registers the gymnasium ids
from metods_evo.tasks import TASKS, register
from metods_evo.tasks.base import Task

# Meta-World episodes are 10 rollouts of 500 steps: shortened, so that the checks stay a few steps.
QUICK_OPTIONS = {task_id: {"rollouts": 2, "rollout_steps": 5} for task_id in EXTRAS if task_id.startswith("metaworld")}
# Our observations are unbounded vectors; the checker only suggests bounds.
ALLOWED_WARNINGS = ("observation space minimum value is -infinity", "observation space maximum value is infinity")
HARLOW = "metods_evo/Harlow-v0"
STAY = 1  # Harlow: staying at the centre in fixation shows the objects; staying forever never ends a trial


def registered(task_id: str) -> str:
    """The gymnasium id of ``task_id``, skipping the test when its optional simulator is not installed."""
    if task_id in EXTRAS:
        pytest.importorskip(EXTRAS[task_id])
    return TASKS[task_id].gym_id


@pytest.mark.slow
@pytest.mark.parametrize("task_id", task_params(sorted(TASKS)))
def test_env_checker_on_every_id(task_id):
    gym_id = registered(task_id)
    options = QUICK_OPTIONS.get(task_id, {})
    env = gymnasium.make(gym_id, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the close check builds one more env from env.spec: checked where that is cheap
        check_env(env.unwrapped, skip_close_check=task_id in EXTRAS)
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in ALLOWED_WARNINGS)]
    assert not unexpected, unexpected
    task = env.unwrapped.task
    assert env.spec.max_episode_steps == task.max_steps
    spaces = [env.action_space]
    if task_id not in EXTRAS:  # the same code for every task; a simulator's build costs seconds (ML10: ~20)
        vector = gymnasium.make_vec(gym_id, num_envs=2, **options)
        assert vector.spec.max_episode_steps == task.max_steps
        spaces.append(vector.single_action_space)
    for space in spaces:
        if task.discrete:
            assert space == gymnasium.spaces.Discrete(task.num_actions)
        else:
            assert space.shape == (task.action_dim,) and (space.low == task.action_low).all()
            assert (space.high == task.action_high).all()
    pickle.dumps(gymnasium.spec(gym_id))  # entry points survive pickling (AsyncVectorEnv)


def test_single_env_plays_the_vector_envs_episodes():
    single, vector = gymnasium.make(HARLOW), gymnasium.make_vec(HARLOW, num_envs=1)
    obs, _ = single.reset(seed=7)
    batch, _ = vector.reset(seed=7)
    np.testing.assert_array_equal(obs, batch[0])
    rng = np.random.default_rng(0)
    done = False
    while not done:
        action = int(rng.integers(3))
        obs, reward, terminated, truncated, _ = single.step(action)
        batch, rewards, terminateds, truncateds, _ = vector.step(np.array([action]))
        np.testing.assert_array_equal(obs, batch[0])
        assert (reward, terminated, truncated) == (rewards[0], terminateds[0], truncateds[0])
        done = terminated or truncated
    with pytest.raises(RuntimeError, match="call reset"):
        single.step(STAY)


def test_sync_vectorization_uses_the_single_env():
    env = gymnasium.make_vec(HARLOW, num_envs=2, vectorization_mode="sync")
    env.reset(seed=0)
    for step in range(30):
        _, _, terminated, truncated, _ = env.step(np.full(2, STAY))
        assert not terminated.any() and truncated.all() == (step == 29)


def test_episode_length_follows_the_options_and_max_episode_steps():
    env = gymnasium.make(HARLOW, max_steps=50)  # no registered TimeLimit cuts it at the default 30
    assert env.spec.max_episode_steps == 50
    env.reset(seed=0)
    truncated_at = [t for t in range(50) if env.step(STAY)[3]]
    assert truncated_at == [49]
    vector = gymnasium.make_vec(HARLOW, num_envs=2, max_steps=50)
    assert vector.spec.max_episode_steps == 50
    # max_episode_steps: gymnasium's time limit, in make (its TimeLimit) and in make_vec alike
    assert gymnasium.make(HARLOW, max_episode_steps=10).spec.max_episode_steps == 10
    vector = gymnasium.make_vec(HARLOW, num_envs=2, max_episode_steps=10)
    assert vector.spec.max_episode_steps == 10
    vector.reset(seed=0)
    for _ in range(2):  # the cut ends episodes, and the next step starts new ones
        for step in range(10):
            _, reward, terminated, truncated, _ = vector.step(np.full(2, STAY))
            assert not terminated.any() and truncated.all() == (step == 9)
        _, reward, terminated, truncated, _ = vector.step(np.full(2, STAY))  # the autoreset step
        assert not (terminated | truncated).any() and (reward == 0).all()


def objects_seen(env, num_envs: int) -> np.ndarray:
    """Harlow: the objects of each sub-env's episode, shown after one step staying at the centre."""
    return env.step(np.full(num_envs, STAY))[0]


def test_vector_seeds():
    env = gymnasium.make_vec(HARLOW, num_envs=3)
    env.reset(seed=5)
    seeded = objects_seen(env, 3)
    env.reset(seed=[5, 6, 7])  # gymnasium's expansion of seed=5: the same request
    np.testing.assert_array_equal(objects_seen(env, 3), seeded)
    env.reset(seed=5)
    env.reset()  # continues the stream: a new, reproducible episode
    continued = objects_seen(env, 3)
    env.reset(seed=5)
    env.reset(seed=[None, None, None])
    np.testing.assert_array_equal(objects_seen(env, 3), continued)
    assert not np.array_equal(continued, seeded)
    with pytest.raises(ValueError, match="cannot take independent seeds"):
        env.reset(seed=[1, 1, 1])
    with pytest.raises(ValueError, match="one seed per sub-environment"):
        env.reset(seed=[5, 6])


def test_reset_options():
    env = gymnasium.make_vec(HARLOW, num_envs=3)
    start, _ = env.reset(seed=0)
    shown = objects_seen(env, 3)
    mask = np.array([True, False, False])
    obs, _ = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[0], start[0])  # a new episode in fixation
    np.testing.assert_array_equal(obs[1:], shown[1:])  # the others go on
    after = objects_seen(env, 3)
    assert not np.array_equal(after[0], shown[0]) and np.array_equal(after[1:, :-3], shown[1:, :-3])
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"size": 10})
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": [True, False, False]})
    with pytest.raises(ValueError, match="at least one"):
        env.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
    single = gymnasium.make(HARLOW)
    single.reset(options={})
    with pytest.raises(ValueError, match="unknown reset option"):
        single.reset(options={"reset_mask": mask})


class Bounded(Task):
    """A continuous test task: reward = the action it received, bounds [-0.5, 2], 3 steps."""

    obs_dim, num_actions, action_dim, max_steps, action_low, action_high = 1, 0, 1, 3, -0.5, 2.0

    def reset(self, num_envs, generator):
        return {"t": torch.zeros(num_envs, dtype=torch.long)}, torch.zeros(num_envs, 1)

    def step(self, state, action, generator):
        t = state["t"] + 1
        return {"t": t}, torch.zeros(len(t), 1), action[:, 0], t >= self.max_steps


@pytest.fixture
def bounded_id():
    gym_id = "metods_evo_test/Bounded-v0"
    register("bounded-test", f"{__name__}:Bounded", gym_id=gym_id)
    yield gym_id
    TASKS.pop("bounded-test")
    del gymnasium.registry[gym_id]


def test_continuous_actions_take_the_tasks_bounds(bounded_id):
    env = gymnasium.make(bounded_id)
    assert env.action_space == gymnasium.spaces.Box(-0.5, 2.0, (1,), np.float32)
    env.reset(seed=0)
    assert env.step(np.array([5.0], dtype=np.float32))[1] == 2.0  # clipped into the bounds, as in training
    vector = gymnasium.make_vec(bounded_id, num_envs=2)
    assert vector.single_action_space == env.action_space
    vector.reset(seed=0)
    np.testing.assert_array_equal(vector.step(np.array([[-3.0], [1.0]], dtype=np.float32))[1], [-0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        vector.step(np.zeros(2, dtype=np.float32))
