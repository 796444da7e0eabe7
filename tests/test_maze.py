"""Tests of the maze task against its spec (see the docstring of ``metods_evo.tasks.maze``)."""

from __future__ import annotations

import time
from collections import deque

import pytest
import torch

from metods_evo.tasks.maze import MazeTask

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run single-threaded: the tensors here are small, and on a busy machine intra-op threads only wait on each
    other (which made the generation timing flaky)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def open_set(walls: torch.Tensor) -> set[tuple[int, int]]:
    return {(r, c) for r, c in (~walls).nonzero().tolist()}


def bfs_distances(walls: torch.Tensor, source: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Shortest path lengths from ``source`` to every reachable open cell (4-connectivity)."""
    cells = open_set(walls)
    dist = {source: 0}
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            nxt = (r + dr, c + dc)
            if nxt in cells and nxt not in dist:
                dist[nxt] = dist[(r, c)] + 1
                queue.append(nxt)
    return dist


def neighbourhood(walls: torch.Tensor, r: int, c: int) -> list[float]:
    return [float(walls[r + dr, c + dc]) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]


def rollout(task: MazeTask, policy, num_envs: int, seed: int):
    """Run one full episode; ``policy(state, obs, t) -> int64 [B]``. Returns the list of step records."""
    g = gen(seed)
    state, obs = task.reset(num_envs, g)
    records = []
    for t in range(task.max_steps):
        action = policy(state, obs, t)
        new_state, obs, reward, done = task.step(state, action, g)
        records.append((state, action, new_state, obs, reward, done))
        state = new_state
    return records


def random_policy(seed: int):
    g = gen(seed)
    return lambda state, obs, t: torch.randint(4, (obs.shape[0],), generator=g)


# ------------------------------------------------------------------ construction


def test_constructor_validation_and_attributes():
    task = MazeTask()
    assert (task.obs_dim, task.num_actions, task.max_steps, task.size) == (9, 4, 100, 8)
    assert task.discrete and task.pool is None
    assert MazeTask(episode_steps=30).max_steps == 30
    for bad in ({"size": 4}, {"size": 0}, {"episode_steps": 0}, {"extra_openings": 1.5}, {"pool_size": -1}):
        with pytest.raises(ValueError):
            MazeTask(**bad)


def test_shapes_and_dtypes():
    task = MazeTask()
    g = gen(0)
    state, obs = task.reset(5, g)
    assert obs.shape == (5, 9) and obs.dtype == torch.float32
    assert state["walls"].shape == (5, 8, 8) and state["walls"].dtype == torch.bool
    for key in ("pos", "target"):
        assert state[key].shape == (5, 2) and state[key].dtype == torch.int64
    assert state["t"].shape == (5,) and state["t"].dtype == torch.int64
    state, obs, reward, done = task.step(state, torch.zeros(5, dtype=torch.long), g)
    assert obs.shape == (5, 9) and obs.dtype == torch.float32
    assert reward.shape == (5,) and reward.dtype == torch.float32
    assert done.shape == (5,) and done.dtype == torch.bool


@pytest.mark.parametrize("size", [5, 6, 7, 8, 9, 10, 13])
@pytest.mark.parametrize("extra_openings", [0.0, 0.3])
def test_mazes_have_wall_border_and_connected_open_cells(size, extra_openings):
    task = MazeTask(size=size, extra_openings=extra_openings)
    walls = task.generate(60 if size in (8, 10) else 20, gen(size))
    assert walls.shape[1:] == (size, size)
    for maze in walls:
        assert maze[0].all() and maze[-1].all() and maze[:, 0].all() and maze[:, -1].all()
        cells = open_set(maze)
        start = next(iter(cells))
        assert set(bfs_distances(maze, start)) == cells


@pytest.mark.parametrize("size", [8, 9, 10])
def test_mazes_are_maze_like(size):
    task = MazeTask(size=size)
    walls = task.generate(200, gen(1))
    interior = walls[:, 1:-1, 1:-1].float()
    wall_fraction = interior.mean((1, 2))
    assert (wall_fraction > 0.25).all() and (wall_fraction < 0.65).all()
    # Corridors are one cell wide: no 2x2 block is fully open.
    open_ = ~walls
    assert not (open_[:, :-1, :-1] & open_[:, 1:, :-1] & open_[:, :-1, 1:] & open_[:, 1:, 1:]).any()
    # Without extra openings the open cells form a tree (connected with one edge fewer than cells): no loops.
    for maze in walls[:30]:
        cells = open_set(maze)
        edges = sum((r, c + 1) in cells for r, c in cells) + sum((r + 1, c) in cells for r, c in cells)
        assert edges == len(cells) - 1
    # Yet the maze fills the grid: a good share of the interior is open.
    assert all(len(open_set(maze)) >= (size - 2) ** 2 // 3 for maze in walls)


def test_extra_openings_add_loops_to_the_same_tree():
    tree = MazeTask(size=9).generate(20, gen(3))
    loopy = MazeTask(size=9, extra_openings=0.5).generate(20, gen(3))
    # The same seed gives the same tree; extra openings only remove walls.
    assert (loopy <= tree).all() and (loopy != tree).any()


def test_mazes_differ_across_episodes_and_seeds():
    task = MazeTask()
    walls = task.generate(100, gen(0))
    assert len({tuple(m.flatten().tolist()) for m in walls}) > 90
    assert not torch.equal(task.generate(10, gen(0)), task.generate(10, gen(1)))
    # Both placements of the spare row and column of an even size occur.
    assert walls[:, 1, 1:-1].all(1).any() and walls[:, -2, 1:-1].all(1).any()
    assert walls[:, 1:-1, 1].all(1).any() and walls[:, 1:-1, -2].all(1).any()
    # Fresh mazes at every reset, different across the batch and between consecutive resets.
    g = gen(0)
    first, _ = task.reset(8, g)
    second, _ = task.reset(8, g)
    assert len({tuple(m.flatten().tolist()) for m in first["walls"]}) == 8
    assert (first["walls"] != second["walls"]).flatten(1).any(1).all()


def test_pool_is_deterministic_and_sampled():
    task = MazeTask(pool_size=50, pool_seed=7)
    assert task.pool.shape == (50, 8, 8)
    assert torch.equal(task.pool, MazeTask(pool_size=50, pool_seed=7).pool)
    assert not torch.equal(task.pool, MazeTask(pool_size=50, pool_seed=8).pool)
    pool = {tuple(m.flatten().tolist()) for m in task.pool}
    state, _ = task.reset(64, gen(0))
    drawn = [tuple(m.flatten().tolist()) for m in state["walls"]]
    assert all(m in pool for m in drawn) and len(set(drawn)) > 20


def test_generation_is_fast():
    task = MazeTask()
    start = time.perf_counter()
    task.generate(4096, gen(0))
    assert time.perf_counter() - start < 2.0
    start = time.perf_counter()
    MazeTask(size=10, pool_size=4096)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------ episodes


def test_start_and_target_are_distinct_open_cells():
    task = MazeTask()
    state, _ = task.reset(2000, gen(4))
    assert (state["pos"] != state["target"]).any(1).all()
    rows = torch.arange(2000)
    assert not state["walls"][rows, state["pos"][:, 0], state["pos"][:, 1]].any()
    assert not state["walls"][rows, state["target"][:, 0], state["target"][:, 1]].any()
    # Both are spread over the maze rather than fixed.
    assert len({tuple(p) for p in state["pos"].tolist()}) > 15
    assert len({tuple(p) for p in state["target"].tolist()}) > 15


def test_observation_is_the_3x3_neighbourhood():
    task = MazeTask(size=10)
    for _, _, new_state, obs, _, _ in rollout(task, random_policy(1), 16, seed=2)[:30]:
        for b in range(16):
            r, c = new_state["pos"][b].tolist()
            assert obs[b].tolist() == neighbourhood(new_state["walls"][b], r, c)
            assert obs[b, 4] == 0


def test_each_action_moves_in_its_direction_and_walls_block():
    task = MazeTask()
    g = gen(5)
    state, _ = task.reset(256, g)
    # Put the target out of reach (on the border) so that moves are never teleports.
    state = {**state, "target": torch.zeros_like(state["target"])}
    rows = torch.arange(256)
    for action, (dr, dc) in enumerate(MOVES):
        new_state, _, reward, _ = task.step(state, torch.full((256,), action), g)
        dest = state["pos"] + torch.tensor([dr, dc])
        blocked = state["walls"][rows, dest[:, 0], dest[:, 1]]
        assert blocked.any() and not blocked.all()
        expected = torch.where(blocked[:, None], state["pos"], dest)
        assert torch.equal(new_state["pos"], expected)
        assert (reward == 0).all()


def test_reaching_the_target_pays_and_teleports():
    task = MazeTask()
    g = gen(6)
    state, _ = task.reset(512, g)
    rows = torch.arange(512)
    # Place the target on an open neighbour of the agent (one always exists) and step onto it.
    walls, pos = state["walls"], state["pos"]
    open_dirs = torch.stack([~walls[rows, pos[:, 0] + dr, pos[:, 1] + dc] for dr, dc in MOVES], 1)
    action = open_dirs.float().argmax(1)
    target = pos + torch.tensor(MOVES)[action]
    state = {**state, "target": target}
    new_state, obs, reward, done = task.step(state, action, g)
    assert (reward == 10.0).all() and not done.any()
    new_pos = new_state["pos"]
    assert (new_pos != target).any(1).all()
    assert not walls[rows, new_pos[:, 0], new_pos[:, 1]].any()
    assert torch.equal(new_state["target"], target)
    for b in range(512):
        assert obs[b].tolist() == neighbourhood(walls[b], *new_pos[b].tolist())
    # The teleport destination is random: many different cells.
    assert len({tuple(p) for p in new_pos.tolist()}) > 15
    assert MazeTask(reward=2.5).step(state, action, g)[2].eq(2.5).all()


def test_episode_lasts_exactly_episode_steps_and_steps_after_done_work():
    task = MazeTask()
    records = rollout(task, random_policy(0), 8, seed=0)
    dones = torch.stack([r[5] for r in records])
    assert not dones[:-1].any() and dones[-1].all()
    state = records[-1][2]
    for _ in range(3):
        state, obs, _, done = task.step(state, torch.randint(4, (8,)), gen(1))
        assert obs.shape == (8, 9) and done.all()
    short = MazeTask(episode_steps=7)
    dones = torch.stack([r[5] for r in rollout(short, random_policy(0), 4, seed=0)])
    assert dones.shape == (7, 4) and not dones[:-1].any() and dones[-1].all()


def test_seeding_is_reproducible():
    def trace(task: MazeTask, seed: int):
        records = rollout(task, random_policy(3), 16, seed)
        return torch.stack([r[3] for r in records]), torch.stack([r[4] for r in records]), records[0][0]["walls"]

    for task in (MazeTask(), MazeTask(pool_size=32)):
        obs1, reward1, walls1 = trace(task, 11)
        obs2, reward2, walls2 = trace(task, 11)
        assert torch.equal(obs1, obs2) and torch.equal(reward1, reward2) and torch.equal(walls1, walls2)
        obs3, _, walls3 = trace(task, 12)
        assert not torch.equal(obs1, obs3) and not torch.equal(walls1, walls3)


ORACLE_CACHE: dict = {}


def oracle_policy(state, obs, t):
    """Greedy descent of the BFS distance to the true target (distance maps cached per maze and target)."""
    cache = ORACLE_CACHE
    actions = []
    for b in range(state["walls"].shape[0]):
        walls, target = state["walls"][b], tuple(state["target"][b].tolist())
        key = (walls.numpy().tobytes(), target)
        if key not in cache:
            cache[key] = bfs_distances(walls, target)
        dist = cache[key]
        r, c = state["pos"][b].tolist()
        actions.append(min(range(4), key=lambda a: dist.get((r + MOVES[a][0], c + MOVES[a][1]), 1 << 30)))
    return torch.tensor(actions)


@pytest.mark.parametrize("size", [8, 10])
def test_oracle_agent_collects_many_rewards_random_agent_few(size):
    task = MazeTask(size=size)
    oracle = torch.stack([r[4] for r in rollout(task, oracle_policy, 32, seed=8)])
    random = torch.stack([r[4] for r in rollout(task, random_policy(9), 32, seed=8)])
    oracle_hits, random_hits = (oracle / 10).sum(0), (random / 10).sum(0)
    assert (oracle_hits >= 5).all() and oracle_hits.mean() > 10
    assert random_hits.mean() < oracle_hits.mean() / 4
    assert set(oracle.unique().tolist()) <= {0.0, 10.0}


def test_batched_run_matches_single_maze_reference():
    task = MazeTask(size=10, extra_openings=0.2)
    g = gen(21)
    action_gen = gen(22)
    state, obs = task.reset(24, g)
    walls = [m for m in state["walls"]]
    targets = [tuple(p) for p in state["target"].tolist()]
    positions = [tuple(p) for p in state["pos"].tolist()]
    for b in range(24):
        assert obs[b].tolist() == neighbourhood(walls[b], *positions[b])
    for t in range(1, task.max_steps + 1):
        action = torch.randint(4, (24,), generator=action_gen)
        state, obs, reward, done = task.step(state, action, g)
        for b in range(24):
            # Pure-Python single-maze step.
            r, c = positions[b]
            dr, dc = MOVES[int(action[b])]
            if not walls[b][r + dr, c + dc]:
                r, c = r + dr, c + dc
            expected_reward = 0.0
            if (r, c) == targets[b]:
                expected_reward = 10.0
                r, c = tuple(state["pos"][b].tolist())  # the random teleport destination
                assert (r, c) != targets[b] and not walls[b][r, c]
            positions[b] = (r, c)
            assert tuple(state["pos"][b].tolist()) == (r, c)
            assert float(reward[b]) == expected_reward
            assert bool(done[b]) == (t == task.max_steps)
            assert obs[b].tolist() == neighbourhood(walls[b], r, c)
        assert torch.equal(state["walls"], torch.stack(walls))


def test_episode_metrics_on_a_hand_made_trace():
    task = MazeTask()
    rewards = torch.zeros(100, 3)
    rewards[4, 0] = 10.0  # first reward at step 5
    rewards[40, 0] = 10.0
    rewards[99, 2] = 10.0  # only on the last step
    metrics = task.episode_metrics(rewards, torch.full((3,), 100))
    assert set(metrics) == {"return", "steps_to_first_reward", "success"}
    for value in metrics.values():
        assert value.dtype == torch.float32 and value.shape == (3,)
    assert metrics["return"].tolist() == [20.0, 0.0, 10.0]
    assert metrics["steps_to_first_reward"].tolist() == [5.0, 100.0, 100.0]
    assert metrics["success"].tolist() == [1.0, 0.0, 1.0]


def test_render():
    task = MazeTask()
    state, _ = task.reset(2, gen(0))
    picture = task.render(state, index=1).splitlines()
    assert len(picture) == 8 and all(len(line) == 8 for line in picture)
    assert sum(line.count("A") for line in picture) == 1 and sum(line.count("T") for line in picture) == 1
    r, c = state["pos"][1].tolist()
    assert picture[r][c] == "A" and picture[0] == "#" * 8
    assert set("".join(picture)) <= set("#.AT")


@pytest.mark.gpu
def test_runs_on_cuda():
    task = MazeTask(device="cuda", pool_size=64)
    g = torch.Generator(device="cuda").manual_seed(0)
    state, obs = task.reset(32, g)
    assert obs.device.type == "cuda"
    state, obs, reward, done = task.step(state, torch.randint(4, (32,), device="cuda", generator=g), g)
    assert reward.device.type == "cuda" and done.device.type == "cuda"
    assert torch.equal(task.pool.cpu(), MazeTask(pool_size=64).pool)
