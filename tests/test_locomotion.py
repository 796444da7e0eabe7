"""cheetah-dir and ant-dir (metods_evo/tasks/locomotion.py) against gymnasium's own HalfCheetah-v5 / Ant-v5."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.mujoco
mujoco = pytest.importorskip("mujoco")
gymnasium = pytest.importorskip("gymnasium")

from metods_evo.rollout import tile  # noqa: E402
from metods_evo.tasks import make_task, mujoco_batch  # noqa: E402
from metods_evo.tasks.locomotion import AntDirTask, CheetahDirTask  # noqa: E402

TASK_IDS = ["cheetah-dir", "ant-dir"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_actions(task, batch: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, task.action_dim, generator=g) * 2 - 1


def reset_to(env, qpos, qvel) -> None:
    """What gymnasium's ``reset`` does, with a given initial state: ``mj_resetData`` (which clears the solver's
    warm start), then ``set_state`` (whose ``mj_forward`` sets it, in MuJoCo 3.3.0)."""
    import mujoco

    mujoco.mj_resetData(env.model, env.data)
    env.set_state(qpos, qvel)


def gym_envs(task, state, **kwargs) -> list:
    """One gymnasium env per episode of ``state``, reset to that episode's initial qpos / qvel, with
    ``forward_reward_weight`` = its direction."""
    envs = []
    for i in range(state["qpos"].shape[0]):
        weight = kwargs.get("forward_reward_weight", float(state["direction"][i]))
        env = gymnasium.make(task.gym_env_id, **{**kwargs, "forward_reward_weight": weight}).unwrapped
        env.reset(seed=0)
        reset_to(env, state["qpos"][i].numpy(), state["qvel"][i].numpy())
        envs.append(env)
    return envs


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_spaces_dtypes_and_state(task_id):
    task = make_task(task_id)
    env = gymnasium.make(task.gym_env_id)
    assert (task.num_actions, task.discrete, task.max_steps) == (0, False, 200)
    assert task.obs_dim == env.observation_space.shape[0] == {"cheetah-dir": 17, "ant-dir": 105}[task_id]
    assert task.action_dim == env.action_space.shape[0] == {"cheetah-dir": 6, "ant-dir": 8}[task_id]
    assert (task.action_low, task.action_high) == (-1.0, 1.0)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    state, obs = task.reset(5, gen(0))
    assert obs.shape == (5, task.obs_dim) and obs.dtype == torch.float32
    assert all(v.shape[0] == 5 for v in state.values())
    assert state["qpos"].dtype == torch.float64 and state["direction"].dtype == torch.float32
    state, obs, reward, done = task.step(state, random_actions(task, 5, gen(1)), gen(2))
    assert obs.shape == (5, task.obs_dim) and obs.dtype == torch.float32
    assert reward.shape == (5,) and reward.dtype == torch.float32 and done.dtype == torch.bool


@pytest.mark.slow
@pytest.mark.parametrize(("task_id", "options"), [
    ("cheetah-dir", {}), ("cheetah-dir", {"sim_threads": 2}), ("cheetah-dir", {"frozen_actuator": 2}),
    ("ant-dir", {}), ("ant-dir", {"sim_threads": 2}), ("ant-dir", {"frozen_actuator": 5}),
])
def test_batched_equals_gymnasium_one_by_one(task_id, options):
    """The batched task against gymnasium's env stepped one episode at a time, for whole episodes: the same
    MuJoCo states, observations, rewards (with forward_reward_weight = d, both signs) and terminations."""
    task = make_task(task_id, **options)
    g = gen(3)
    state, obs = task.reset(4, g)
    state["direction"] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    envs = gym_envs(task, state)
    np.testing.assert_allclose(obs.numpy(), np.stack([e._get_obs() for e in envs]), rtol=0, atol=1e-5)
    if task_id == "ant-dir":
        state["qvel"][0, 2] = 4.0  # a jump: the torso rises above the healthy range, a sure termination
        state["warmstart"][0] = task._reset_warmstart(state["qpos"][:1], state["qvel"][:1])[0]
        reset_to(envs[0], state["qpos"][0].numpy(), state["qvel"][0].numpy())
    ended = np.zeros(4, dtype=bool)
    for t in range(task.max_steps):
        action = random_actions(task, 4, g)
        state, obs, reward, done = task.step(state, action, g)
        for i, env in enumerate(envs):
            if ended[i]:
                assert done[i] and reward[i] == 0  # stepping a finished episode is harmless
                continue
            applied = action[i].numpy().copy()
            if task.frozen_actuator >= 0:
                applied[task.frozen_actuator] = 0.0
            ref_obs, ref_reward, terminated, _, _ = env.step(applied)
            np.testing.assert_allclose(state["qpos"][i].numpy(), env.data.qpos, rtol=0, atol=1e-9)
            np.testing.assert_allclose(obs[i].numpy(), ref_obs, rtol=1e-6, atol=1e-5)
            assert abs(reward[i].item() - ref_reward) < 1e-5
            assert bool(state["terminated"][i]) == terminated and bool(done[i]) == (terminated or t == 199)
            ended[i] = bool(done[i])
        if ended.all():
            break
    if task_id == "ant-dir":
        assert ended[0] and state["terminated"][0] and not task.time_limit_reached(state)[0]
    else:
        assert ended.all() and (state["t"] == 200).all() and task.time_limit_reached(state).all()


def test_backward_direction_penalises_moving_forward():
    """d = -1 flips the forward term only: a cheetah that moves forward is paid -velocity, as gymnasium's
    HalfCheetah-v5 with forward_reward_weight=-1 pays."""
    task = CheetahDirTask()
    state, _ = task.reset(2, gen(4))
    state = {k: v[:1].repeat(2, *[1] * (v.dim() - 1)) for k, v in state.items()}  # one start state, twice
    state["direction"] = torch.tensor([1.0, -1.0])
    backward = gym_envs(task, state)[1]
    g = gen(5)
    forward_steps = 0
    for _ in range(30):
        action = random_actions(task, 1, g).repeat(2, 1)
        before = state["qpos"][:, 0].clone()
        state, _, reward, _ = task.step(state, action, g)
        _, ref_reward, _, _, info = backward.step(action[1].numpy())
        velocity = (state["qpos"][0, 0] - before[0]).item() / task.dt
        assert torch.equal(state["qpos"][0], state["qpos"][1])  # the direction changes the reward only
        assert reward[0].item() - reward[1].item() == pytest.approx(2 * velocity, abs=1e-4)
        assert reward[1].item() == pytest.approx(ref_reward, abs=1e-5)
        assert info["reward_forward"] == pytest.approx(-velocity)
        forward_steps += velocity > 0.1
        if velocity > 0.1:
            assert reward[1] < reward[0]
    assert forward_steps > 0
    assert state["progress"][0] == pytest.approx(-state["progress"][1].item())


def test_ant_plane_rewards_velocity_along_the_angle():
    task = AntDirTask(directions="plane")
    state, _ = task.reset(4000, gen(6))
    angle = state["direction"]
    assert ((angle >= 0) & (angle < 2 * math.pi)).all() and abs(angle.mean().item() - math.pi) < 0.1
    state = {k: v[:3] for k, v in state.items()}
    envs = gym_envs(task, state, forward_reward_weight=0.0)  # gymnasium's reward without its forward term
    g = gen(7)
    for _ in range(10):
        action = random_actions(task, 3, g)
        state, _, reward, done = task.step(state, action, g)
        for i, env in enumerate(envs):
            _, ref_reward, terminated, _, info = env.step(action[i].numpy())
            theta = float(angle[i])
            along = math.cos(theta) * info["x_velocity"] + math.sin(theta) * info["y_velocity"]
            assert reward[i].item() == pytest.approx(ref_reward + along, abs=1e-5)
            assert bool(done[i]) == terminated
    with pytest.raises(ValueError, match="directions"):
        AntDirTask(directions="circle")


@pytest.mark.parametrize(("task_id", "actuator"), [("cheetah-dir", 0), ("ant-dir", 3)])
def test_frozen_actuator_stays_at_zero_in_the_simulator(task_id, actuator):
    frozen, intact = make_task(task_id, frozen_actuator=actuator), make_task(task_id)
    state, _ = frozen.reset(1, gen(8))
    intact_state = dict(state)
    g = gen(9)
    data = frozen._data[0]  # the one simulator that stepped the single episode
    for _ in range(20):
        action = torch.ones(1, frozen.action_dim) - 2 * (torch.rand(1, frozen.action_dim, generator=g) < 0.5)
        state, *_ = frozen.step(state, action, g)
        intact_state, *_ = intact.step(intact_state, action, g)
        assert data.ctrl[actuator] == 0.0 and data.actuator_force[actuator] == 0.0
        others = np.delete(np.arange(frozen.action_dim), actuator)
        assert np.all(np.abs(data.ctrl[others]) == 1.0) and np.all(data.actuator_force[others] != 0.0)
    assert not torch.allclose(state["qpos"], intact_state["qpos"])
    for bad in (-2, frozen.action_dim):
        with pytest.raises(ValueError, match="frozen_actuator"):
            make_task(task_id, frozen_actuator=bad)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_seeding_reproduces_episodes(task_id):
    task = make_task(task_id)

    def run(seed: int):
        g, actions = gen(seed), gen(100)
        state, obs = task.reset(6, g)
        trace = [obs]
        for _ in range(15):
            state, obs, reward, done = task.step(state, random_actions(task, 6, actions), g)
            trace += [obs, reward, done]
        return state, trace

    (s1, t1), (s2, t2), (s3, _) = run(10), run(10), run(11)
    assert all(torch.equal(a, b) for a, b in zip(t1, t2)) and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["qpos"], s3["qpos"])
    state, _ = task.reset(4000, gen(12))
    assert set(state["direction"].tolist()) == {-1.0, 1.0} and abs(state["direction"].mean().item()) < 0.06
    noise = state["qpos"] - torch.as_tensor(task.env.init_qpos)
    assert noise.abs().max() <= 0.1 and abs(noise.std().item() - 0.1 / math.sqrt(3)) < 0.002  # U(-0.1, 0.1)
    assert abs(state["qvel"].std().item() - 0.1) < 0.002  # 0.1 * N(0, 1)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_common_random_numbers_under_tiling(task_id):
    """The rollout resets E episodes and tiles them over P individuals: every individual gets the same start
    states and directions, and equal actions give equal episodes whatever the individual's position."""
    task = make_task(task_id)
    episodes, individuals = 3, 4
    g = gen(13)
    base, base_obs = task.reset(episodes, g)
    state = tile(base, individuals)
    for k in base:
        assert torch.equal(state[k].view(individuals, episodes, *base[k].shape[1:])[2], base[k])
    for _ in range(10):
        action = random_actions(task, episodes, g)
        base, base_obs, base_reward, _ = task.step(base, action, g)
        state, obs, reward, _ = task.step(state, action.repeat(individuals, 1), g)
        assert "_episodes" in state
        assert torch.equal(obs.view(individuals, episodes, -1), base_obs.expand(individuals, -1, -1))
        assert torch.equal(reward.view(individuals, episodes), base_reward.expand(individuals, -1))


def extension_or_skip() -> None:
    if not mujoco_batch.available():
        pytest.skip(f"the batched MuJoCo stepper did not compile: {mujoco_batch._load()[1]}")


@pytest.mark.parametrize("task_id", TASK_IDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_extension_stepper_equals_the_python_loop(task_id, threads):
    """The C++ stepper makes the Python loop's MuJoCo calls: bitwise the same states, observations, rewards and
    ends, with finished episodes in the batch (the stepped rows are a subset)."""
    extension_or_skip()
    results = []
    for use_extension in (False, True):
        task = make_task(task_id, sim_threads=threads)
        task._use_extension = use_extension
        g = gen(21)
        state, obs = task.reset(6, g)
        state["done"][1] = True  # a finished episode: not stepped
        trace = [obs]
        for _ in range(30):
            state, obs, reward, done = task.step(state, random_actions(task, 6, g), g)
            trace += [obs, reward, done]
        results.append((trace, state))
    (trace_py, state_py), (trace_ext, state_ext) = results
    assert all(torch.equal(a, b) for a, b in zip(trace_py, trace_ext))
    assert all(torch.equal(state_py[k], state_ext[k]) for k in state_py)


@pytest.mark.parametrize("task_id", TASK_IDS)
@pytest.mark.parametrize("use_extension", [False, True])
def test_unstable_simulation_ends_the_episode(task_id, use_extension, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs its warnings to ./MUJOCO_LOG.TXT
    if use_extension:
        extension_or_skip()
    task = make_task(task_id)
    task._use_extension = use_extension
    state, _ = task.reset(3, gen(14))
    state["qvel"][0, 0] = 1e12  # MuJoCo's "huge value in QVEL" warning: it resets that simulation
    state["qpos"][1, 0] = float("nan")
    before = {k: v.clone() for k, v in state.items()}
    state, obs, reward, done = task.step(state, torch.zeros(3, task.action_dim), gen(15))
    assert done.tolist() == [True, True, False] and state["unstable"].tolist() == [True, True, False]
    assert reward[:2].tolist() == [0.0, 0.0] and torch.isfinite(obs).all() and torch.isfinite(reward).all()
    assert torch.equal(state["qvel"][0], before["qvel"][0])  # kept from before the failed step
    assert not task.time_limit_reached(state)[:2].any()
    state, obs, reward, done = task.step(state, torch.zeros(3, task.action_dim), gen(15))
    assert reward[:2].tolist() == [0.0, 0.0] and state["t"].tolist() == [1, 1, 2]


def test_episode_metrics_split_early_and_late_steps():
    task = CheetahDirTask(episode_steps=14)
    rewards = torch.zeros(14, 2)
    rewards[:10, 0], rewards[10:, 0] = 1.0, 3.0
    rewards[:5, 1] = 2.0  # a 5-step episode
    metrics = task.episode_metrics(rewards, torch.tensor([14, 5]))
    assert metrics["return"].tolist() == [22.0, 10.0]
    assert metrics["early_reward_per_step"].tolist() == [1.0, 2.0]
    assert metrics["late_reward_per_step"].tolist() == [3.0, 0.0]


def test_options_are_validated():
    with pytest.raises(ValueError, match="sim_threads"):
        CheetahDirTask(sim_threads=0)
    with pytest.raises(ValueError, match="episode_steps"):
        AntDirTask(episode_steps=0)
    task = make_task("ant-dir", episode_steps=7)
    state, _ = task.reset(2, gen(16))
    for _ in range(7):  # standing still keeps the ant healthy: the episode is cut by its step limit
        state, _, _, done = task.step(state, torch.zeros(2, task.action_dim), gen(17))
    assert done.all() and (state["t"] == 7).all() and task.time_limit_reached(state).all()


@pytest.mark.slow
def test_gymnasium_vector_env_truncates_at_200_steps():
    env = gymnasium.make_vec("metods_evo/CheetahDir-v0", num_envs=3, sim_threads=2)
    assert env.single_action_space.shape == (6,) and env.single_observation_space.shape == (17,)
    env.reset(seed=0)
    for step in range(200):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.dtype == np.float32 and not terminated.any() and truncated.all() == (step == 199)


def test_pickles_with_its_options():
    """ES checkpoints pickle the task (inside evotorch's problem); it comes back with the same options."""
    task = make_task("ant-dir", directions="plane", frozen_actuator=1, sim_threads=2)
    copy = pickle.loads(pickle.dumps(task))
    assert (copy.directions, copy.frozen_actuator, len(copy._data)) == ("plane", 1, 2)
    state, _ = task.reset(3, gen(18))
    action = random_actions(task, 3, gen(19))
    assert torch.equal(task.step(state, action, None)[1], copy.step(state, action, None)[1])


@pytest.mark.slow
def test_evaluation_reports_forward_and_backward_episodes_separately(tmp_path):
    """``evaluate`` splits the direction tasks' episodes by their hidden direction (does the agent earn in both?)."""
    from metods_evo.config import make_config
    from metods_evo.evaluate import evaluate_theta
    from metods_evo.models import build_model
    from metods_evo.plots import plot_evaluation
    from metods_evo.tasks import make_task

    cfg = make_config("cheetah-dir", "ppo", {"model.n": "6", "task.episode_steps": "15"})
    task = make_task("cheetah-dir", episode_steps=15)
    theta = build_model(cfg, task).init_params(torch.Generator().manual_seed(0))
    report = evaluate_theta(cfg, theta, 24, seed=5, chunk=10)
    groups = report["groups"]
    assert set(groups) == {"forward", "backward"} and groups["forward"]["episodes"] + groups["backward"][
        "episodes"] == 24 and min(g["episodes"] for g in groups.values()) > 0
    pooled = sum(g["episodes"] * g["metrics"]["return"]["mean"] for g in groups.values()) / 24
    assert pooled == pytest.approx(report["metrics"]["return"]["mean"], abs=1e-9)
    for part in groups.values():
        assert sum(part["reward_per_step"]) == pytest.approx(part["metrics"]["return"]["mean"], abs=1e-6)
    plot_evaluation(report, tmp_path / "eval.png", title="cheetah-dir")
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
