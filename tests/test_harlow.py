"""Tests for the 1-D Harlow task against its spec (see metods_evo/tasks/harlow.py)."""

from __future__ import annotations

import pytest
import torch

from metods_evo.tasks.harlow import HarlowTask

D = 8
CUE, LEFT, RIGHT, POS = slice(0, 1), slice(1, 1 + D), slice(1 + D, 1 + 2 * D), slice(1 + 2 * D, 4 + 2 * D)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def act(*actions: int) -> torch.Tensor:
    return torch.tensor(actions, dtype=torch.long)


def oracle(state: dict) -> torch.Tensor:
    """Walk to the centre in fixation; in choice step to the side of the good object (read from the state)."""
    to_centre = 2 - state["pos"]
    good_side = torch.where(state["left"] == state["good"], 0, 2)
    return torch.where(state["choice"], good_side, to_centre)


def run(task: HarlowTask, policy, num_envs: int, seed: int, steps: int | None = None):
    """Roll out ``policy(state, obs)``; returns rewards [T, B], dones [T, B], final state."""
    g = gen(seed)
    state, obs = task.reset(num_envs, g)
    rewards, dones = [], []
    for _ in range(steps or task.max_steps):
        state, obs, reward, done = task.step(state, policy(state, obs), g)
        rewards.append(reward)
        dones.append(done)
    return torch.stack(rewards), torch.stack(dones), state


def test_attributes_and_options():
    assert (HarlowTask.obs_dim, HarlowTask.num_actions, HarlowTask.max_steps) == (20, 3, 30)
    task = HarlowTask(num_trials=3, max_steps=12, object_dim=4)
    assert (task.obs_dim, task.num_trials, task.max_steps, task.object_dim) == (12, 3, 12, 4)
    state, obs = task.reset(5, gen(0))
    assert obs.shape == (5, 12) and state["objects"].shape == (5, 2, 4)
    rewards, dones, state = run(task, lambda s, o: oracle(s), 5, seed=0)
    assert torch.equal(rewards.sum(0), torch.full((5,), 3.0)) and dones[5].all() and not dones[4].any()
    assert set(task.episode_metrics(rewards, state["t"])) >= {"trial3_correct", "solved_trials_2_5"}
    with pytest.raises(ValueError):
        HarlowTask(object_dim=0)


def test_reset_observation_layout():
    task = HarlowTask()
    state, obs = task.reset(7, gen(1))
    assert obs.shape == (7, 20) and obs.dtype == torch.float32
    assert torch.equal(obs[:, CUE], torch.ones(7, 1))
    assert torch.equal(obs[:, LEFT], torch.zeros(7, D)) and torch.equal(obs[:, RIGHT], torch.zeros(7, D))
    assert torch.equal(obs[:, POS], torch.tensor([[0.0, 1.0, 0.0]]).expand(7, 3))
    assert not state["choice"].any() and not state["done"].any()
    assert torch.equal(state["pos"], torch.ones(7, dtype=torch.long))
    _, obs, reward, done = task.step(state, act(*[1] * 7), gen(2))
    assert reward.shape == (7,) and reward.dtype == torch.float32 and done.dtype == torch.bool


def test_objects_distinct_binary_and_uniform():
    for dim in (1, 2, 8):
        task = HarlowTask(object_dim=dim)
        state, _ = task.reset(20000, gen(3))
        objects = state["objects"]
        assert objects.dtype == torch.float32 and ((objects == 1) | (objects == -1)).all()
        assert (objects[:, 0] != objects[:, 1]).any(1).all()
        assert objects.mean().abs() < 0.03 and (state["good"].float().mean() - 0.5).abs() < 0.02
    # With D=2 the second object is uniform over the 3 vectors that differ from the first.
    state, _ = HarlowTask(object_dim=2).reset(20000, gen(3))
    codes = (state["objects"][:, 1] == state["objects"][:, 0]).long() @ torch.tensor([1, 2])
    counts = torch.bincount(codes, minlength=4).float() / len(codes)
    assert counts[3] == 0 and (counts[:3] - 1 / 3).abs().max() < 0.02


def test_phase_transitions_step_by_step():
    task = HarlowTask()
    g = gen(4)
    state, obs = task.reset(1, g)
    objects, good = state["objects"][0], int(state["good"][0])

    state, obs, reward, done = task.step(state, act(0), g)  # left in fixation: stays in fixation, pays 0
    assert reward.item() == 0 and obs[0, 0] == 1 and not obs[0, 1:17].any() and obs[0, 17:].tolist() == [1, 0, 0]
    state, obs, reward, _ = task.step(state, act(0), g)  # clipped at the left wall
    assert reward.item() == 0 and obs[0, 17:].tolist() == [1, 0, 0] and not state["choice"].any()
    state, obs, reward, _ = task.step(state, act(2), g)  # ends at centre: choice, objects shown
    left = int(state["left"][0])
    assert reward.item() == 0 and obs[0, 0] == 0 and obs[0, 17:].tolist() == [0, 1, 0]
    assert torch.equal(obs[0, LEFT], objects[left]) and torch.equal(obs[0, RIGHT], objects[1 - left])
    shown = obs.clone()
    for _ in range(3):  # staying at the centre in choice pays 0, stays in choice, keeps the order
        state, obs, reward, _ = task.step(state, act(1), g)
        assert reward.item() == 0 and torch.equal(obs, shown)
    state, obs, reward, done = task.step(state, act(2), g)  # pick right
    assert reward.item() == (1.0 if 1 - left == good else -1.0) and not done.any()
    assert obs[0, 0] == 1 and not obs[0, 1:17].any() and obs[0, 17:].tolist() == [0, 0, 1]
    assert state["trials"].item() == 1
    state, obs, reward, _ = task.step(state, act(1), g)  # staying off-centre in fixation pays 0
    assert reward.item() == 0 and obs[0, 0] == 1
    state, obs, reward, _ = task.step(state, act(0), g)  # back to centre: next trial's choice
    assert reward.item() == 0 and obs[0, 0] == 0 and obs[0, 17:].tolist() == [0, 1, 0]


def test_oracle_wins_every_trial_and_ends_after_five():
    task = HarlowTask()
    rewards, dones, state = run(task, lambda s, o: oracle(s), 500, seed=5)
    assert torch.equal(rewards.sum(0), torch.full((500,), 5.0))
    assert ((rewards == 0) | (rewards == 1)).all()
    # Each trial takes two steps (to the centre, then to the side): done exactly on step 10.
    assert not dones[:9].any() and dones[9].all() and torch.equal(state["t"], torch.full((500,), 10))
    assert (rewards[10:] == 0).all() and dones[10:].all()
    metrics = task.episode_metrics(rewards, state["t"])
    assert (
        all(metrics[f"trial{k}_correct"].eq(1).all() for k in range(1, 6)) and metrics["solved_trials_2_5"].eq(1).all()
    )


def test_always_stay_ends_at_step_30_with_zero_return():
    task = HarlowTask()
    rewards, dones, state = run(task, lambda s, o: torch.ones_like(s["pos"]), 9, seed=6, steps=35)
    assert (rewards == 0).all() and not dones[:29].any() and dones[29:].all()
    assert torch.equal(state["t"], torch.full((9,), 30)) and state["choice"].all() and not state["trials"].any()


def test_always_left_pays_by_the_drawn_order():
    task = HarlowTask()
    g = gen(7)
    state, _ = task.reset(4000, g)
    total = torch.zeros(4000)
    for _ in range(task.max_steps):
        action = torch.where(state["choice"], 0, 2 - state["pos"])
        expected = torch.where(state["left"] == state["good"], 1.0, -1.0) * (state["choice"] & ~state["done"])
        state, _, reward, _ = task.step(state, action, g)
        assert torch.equal(reward, expected)
        total += reward
    assert state["done"].all() and abs(total.mean().item()) < 0.15


def test_learn_after_first_trial_averages_four():
    """A policy that only sees observations: guess left in trial 1, then always pick the object that paid."""
    task = HarlowTask()
    n = 4000
    g = gen(8)
    state, obs = task.reset(n, g)
    known = torch.zeros(n, dtype=torch.bool)
    good_obj = torch.zeros(n, D)
    rewards = []
    for _ in range(task.max_steps):
        in_choice = obs[:, 0] == 0
        left_obj, right_obj = obs[:, LEFT], obs[:, RIGHT]
        pick_left = ~known | (left_obj == good_obj).all(1)
        action = torch.where(in_choice, torch.where(pick_left, 0, 2), 2 - obs[:, POS].argmax(1))
        chosen, other = (
            torch.where(pick_left[:, None], left_obj, right_obj),
            torch.where(pick_left[:, None], right_obj, left_obj),
        )
        state, obs, reward, _ = task.step(state, action, g)
        learn = ~known & (reward != 0)
        good_obj = torch.where(learn[:, None], torch.where(reward[:, None] > 0, chosen, other), good_obj)
        known |= learn
        rewards.append(reward)
    rewards = torch.stack(rewards)
    returns = rewards.sum(0)
    assert ((returns == 3) | (returns == 5)).all()
    assert abs(returns.mean().item() - 4.0) < 0.1
    metrics = task.episode_metrics(rewards, state["t"])
    assert metrics["solved_trials_2_5"].eq(1).all() and abs(metrics["trial1_correct"].mean().item() - 0.5) < 0.05


def test_order_redrawn_every_trial():
    task = HarlowTask()
    n = 2000
    g = gen(9)
    state, _ = task.reset(n, g)
    orders = []
    for _ in range(10):
        state, _, _, _ = task.step(state, oracle(state), g)
        if state["choice"].all():  # just entered choice: record this trial's order
            orders.append(state["left"].clone())
    orders = torch.stack(orders)  # [5 trials, B]
    assert orders.shape == (5, n)
    both = (orders.min(0).values != orders.max(0).values).float().mean()
    assert abs(both.item() - 15 / 16) < 0.03  # independent fair draws: 1 - 2 / 2**5
    assert abs((orders[1:] != orders[:-1]).float().mean().item() - 0.5) < 0.03


def test_seeding():
    task = HarlowTask()

    def random_policy():
        pgen = gen(100)
        return lambda s, o: torch.randint(0, 3, s["pos"].shape, generator=pgen)

    r1, d1, s1 = run(task, random_policy(), 16, seed=10)
    r2, d2, s2 = run(task, random_policy(), 16, seed=10)
    assert torch.equal(r1, r2) and torch.equal(d1, d2) and all(torch.equal(s1[k], s2[k]) for k in s1)
    a, _ = task.reset(16, gen(10))
    b, _ = task.reset(16, gen(11))
    assert not torch.equal(a["objects"], b["objects"])


class ReferenceHarlow:
    """Pure-Python single episode, fed the objects, good index and per-trial orders drawn by the batched task."""

    def __init__(self, objects: list[list[float]], good: int, num_trials: int = 5, max_steps: int = 30):
        self.objects, self.good, self.num_trials, self.max_steps = objects, good, num_trials, max_steps
        self.pos, self.choice, self.left, self.trials, self.t, self.done = 1, False, 0, 0, 0, False

    def obs(self) -> list[float]:
        shown = self.choice
        left = self.objects[self.left] if shown else [0.0] * len(self.objects[0])
        right = self.objects[1 - self.left] if shown else [0.0] * len(self.objects[0])
        return [0.0 if shown else 1.0, *left, *right, *[float(i == self.pos) for i in range(3)]]

    def step(self, action: int, next_order: int) -> tuple[list[float], float, bool]:
        if self.done:
            return self.obs(), 0.0, True
        self.pos = min(max(self.pos + action - 1, 0), 2)
        self.t += 1
        reward = 0.0
        if not self.choice and self.pos == 1:
            self.choice, self.left = True, next_order
        elif self.choice and self.pos != 1:
            chosen = self.left if self.pos == 0 else 1 - self.left
            reward = 1.0 if chosen == self.good else -1.0
            self.trials += 1
            self.choice = False
        self.done = self.trials >= self.num_trials or self.t >= self.max_steps
        return self.obs(), reward, self.done


@pytest.mark.parametrize("bias", [(1, 1, 1), (1, 3, 1), (3, 1, 3)])
def test_batched_matches_reference(bias):
    task = HarlowTask()
    n = 64
    g, pgen = gen(12), gen(13)
    state, obs = task.reset(n, g)
    refs = [ReferenceHarlow(state["objects"][i].tolist(), int(state["good"][i])) for i in range(n)]
    assert obs.tolist() == [r.obs() for r in refs]
    probs = torch.tensor(bias, dtype=torch.float)
    seen_rewards = set()
    for _ in range(40):  # past max_steps: stepping finished episodes must not fail
        action = torch.multinomial(probs, n, replacement=True, generator=pgen)
        state, obs, reward, done = task.step(state, action, g)
        for i, ref in enumerate(refs):
            ref_obs, ref_reward, ref_done = ref.step(int(action[i]), int(state["left"][i]))
            assert obs[i].tolist() == ref_obs and reward[i].item() == ref_reward and bool(done[i]) == ref_done
            seen_rewards.add(ref_reward)
    assert state["done"].all() and seen_rewards == {-1.0, 0.0, 1.0}


def test_episode_metrics_hand_made_trace():
    task = HarlowTask()
    rewards = torch.tensor(
        [
            [-1, 0, 0, 0],
            [0, 1, 0, 0],
            [1, 0, 0, 0],
            [0, -1, 0, 1],
            [1, 0, 0, 0],
            [0, 0, 0, 0],
            [1, 0, 0, 0],
            [1, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    metrics = task.episode_metrics(rewards, torch.tensor([8, 4, 8, 8]))
    expected = {
        "return": [3, 0, 0, 1],
        "trials": [5, 2, 0, 1],
        "trial1_correct": [0, 1, 0, 1],
        "trial2_correct": [1, 0, 0, 0],
        "trial3_correct": [1, 0, 0, 0],
        "trial4_correct": [1, 0, 0, 0],
        "trial5_correct": [1, 0, 0, 0],
        "solved_trials_2_5": [1, 0, 0, 0],
    }
    assert set(metrics) == set(expected)
    for name, values in expected.items():
        assert metrics[name].dtype == torch.float32 and metrics[name].tolist() == values, name
    partial = task.episode_metrics(torch.tensor([[-1.0], [1.0], [-1.0], [1.0]]), torch.tensor([4]))
    assert partial["solved_trials_2_5"].item() == 0.5 and partial["trials"].item() == 4


@pytest.mark.gpu
def test_cuda_matches_shapes():
    task = HarlowTask("cuda")
    g = torch.Generator("cuda").manual_seed(0)
    state, obs = task.reset(32, g)
    for _ in range(task.max_steps):
        state, obs, _, done = task.step(state, oracle(state), g)
    assert obs.device.type == "cuda" and done.all() and state["trials"].eq(5).all()
