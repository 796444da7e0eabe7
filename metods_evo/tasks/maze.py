"""Partially observable maze with an invisible target; B episodes stepped as one tensor computation.

Task (in the spirit of the "Backpropamine" maze of Miconi et al.):

* An ``n x n`` grid (``n = size``, default 8, including the wall border) holds a maze; each episode
  gets a fresh random maze, or one drawn from a fixed pool when ``pool_size > 0``.
* A target sits at a uniformly random open cell and is never observed. The agent starts at a
  uniformly random open cell other than the target.
* Actions: 0 up (row - 1), 1 down (row + 1), 2 left (col - 1), 3 right (col + 1). A move into a wall
  leaves the agent in place.
* Stepping onto the target pays ``reward`` (10) and at once moves the agent to a uniformly random
  open cell other than the target; the observation returned is the one at the new cell. Every other
  step pays 0. An episode lasts exactly ``episode_steps`` (100) steps; ``done`` is True on the last.
* Observation (9 floats): the 3 x 3 neighbourhood centred on the agent, row-major, 1 = wall,
  0 = open (the centre is always 0).
* Metrics: ``return``; ``steps_to_first_reward``, the 1-based step of the first reward
  (``episode_steps`` if none); ``success``, 1 if any reward was received.

Maze construction (batched in torch; the only Python loop runs over Prim's iterations):

1. Lattice. ``m = (n - 1) // 2`` cells per axis on a canvas of side ``N = 2m + 1``: lattice cell
   ``(i, j)`` sits at canvas ``(2i + 1, 2j + 1)`` and is always open; the canvas cell between two
   neighbouring lattice cells is an "edge" wall that may be carved; canvas cells with both
   coordinates even ("pillars") and the canvas border are always walls.
2. Randomized Prim's. Start from a uniformly random lattice cell, then ``m * m - 1`` times pick,
   for every maze at once, a uniformly random frontier edge (exactly one endpoint in the maze; the
   argmax of uniform scores masked to the frontier), carve it and add its far cell. The carved
   edges form a spanning tree of the lattice: a perfect maze.
3. Extra openings. Every uncarved edge is then carved independently with probability
   ``extra_openings`` (default 0, i.e. perfect mazes), which adds loops.
4. Even sizes. For even ``n`` the canvas (side ``n - 1``) leaves one interior row and one interior
   column uncovered. The canvas is shifted by a random 0 or 1 cell per axis, so the spare row is at
   the top or the bottom (the spare column at the left or the right), and every spare cell next to a
   lattice cell is opened with probability 1/2 as a one-cell dead end.

Every open cell is a lattice cell, an edge between two lattice cells, or a dead end next to a lattice
cell, and the tree connects all lattice cells, so all open cells are connected (4-connectivity).
Pillars stay walls, so no 2 x 2 block is ever fully open. Generating a batch costs ``m * m - 1``
small tensor steps whatever its size, so fresh mazes per reset are cheap (``pool_size = 0``, the
default). A pool is built once at construction from ``pool_seed`` (on the CPU, so it is the same on
every device) and each episode draws one of its mazes uniformly with the caller's generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metods_evo.tasks.base import Task, TaskState

# Row / column displacement of each action: up, down, left, right.
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


class MazeTask(Task):
    """Batched partially observable maze; see the module docstring for the rules and the construction."""

    obs_dim = 9
    num_actions = 4
    max_steps = 100

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        size: int = 8,
        episode_steps: int = 100,
        reward: float = 10.0,
        extra_openings: float = 0.0,
        pool_size: int = 0,
        pool_seed: int = 0,
    ):
        super().__init__(device)
        if size < 5:
            raise ValueError(f"maze size must be >= 5 (it includes the wall border), got {size}")
        if episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        if not 0.0 <= extra_openings <= 1.0:
            raise ValueError(f"extra_openings is a probability in [0, 1], got {extra_openings}")
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0 (0 = fresh mazes every reset), got {pool_size}")
        self.size = int(size)
        self.max_steps = int(episode_steps)
        self.reward = float(reward)
        self.extra_openings = float(extra_openings)
        n = self.size
        # Flat offsets of the 3x3 neighbourhood in row-major order: obs = walls.flatten()[pos + offset].
        self._window = torch.tensor([dr * n + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)], device=self.device)
        self._moves = torch.tensor(_MOVES, device=self.device)
        self._cells = torch.arange(n * n, device=self.device)
        self.pool: Tensor | None = None
        if pool_size > 0:
            pool_generator = torch.Generator().manual_seed(int(pool_seed))
            self.pool = self.generate(int(pool_size), pool_generator, device="cpu").to(self.device)

    # ------------------------------------------------------------------ maze generation

    def generate(self, num: int, generator: torch.Generator, device: str | torch.device | None = None) -> Tensor:
        """``num`` random mazes as ``bool [num, n, n]`` (True = wall), built as the module docstring describes."""
        device = self.device if device is None else torch.device(device)
        n = self.size
        m = (n - 1) // 2
        side = 2 * m + 1
        rows = torch.arange(num, device=device)

        # Lattice geometry: flat cell ids, and the canvas positions of cells and edges.
        i, j = torch.meshgrid(torch.arange(m, device=device), torch.arange(m, device=device), indexing="ij")
        cell = i * m + j
        cell_pos = ((2 * i + 1) * side + 2 * j + 1).flatten()
        h_pos = ((2 * i + 1) * side + 2 * j + 2)[:, :-1].flatten()  # between (i, j) and (i, j + 1)
        v_pos = ((2 * i + 2) * side + 2 * j + 1)[:-1, :].flatten()  # between (i, j) and (i + 1, j)
        end_a = torch.cat([cell[:, :-1].flatten(), cell[:-1, :].flatten()])
        end_b = torch.cat([cell[:, 1:].flatten(), cell[1:, :].flatten()])
        edge_pos = torch.cat([h_pos, v_pos])
        num_edges = edge_pos.numel()

        # Randomized Prim's: each iteration adds one cell to every maze, so m*m - 1 iterations span the lattice.
        in_maze = torch.zeros(num, m * m, dtype=torch.bool, device=device)
        in_maze[rows, torch.randint(m * m, (num,), generator=generator, device=device)] = True
        carved = torch.zeros(num, num_edges, dtype=torch.bool, device=device)
        for _ in range(m * m - 1):
            frontier = in_maze[:, end_a] ^ in_maze[:, end_b]
            score = torch.rand(num, num_edges, generator=generator, device=device)
            edge = score.masked_fill_(~frontier, -1.0).argmax(1)
            carved[rows, edge] = True
            in_maze[rows, end_a[edge]] = True
            in_maze[rows, end_b[edge]] = True
        # Drawn even when extra_openings == 0 so that a seed gives the same tree whatever extra_openings is.
        carved |= torch.rand(num, num_edges, generator=generator, device=device) < self.extra_openings

        open_ = torch.zeros(num, side * side, dtype=torch.bool, device=device)
        open_[:, cell_pos] = True
        open_[:, edge_pos] = carved
        walls = ~open_.view(num, side, side)
        if side == n:
            return walls

        # Even n: place the canvas at a random offset of 0 or 1 per axis, then open dead ends in the spare cells.
        shift = torch.randint(2, (num, 2), generator=generator, device=device).bool()
        lattice = torch.zeros(side * side, dtype=torch.bool, device=device)
        lattice[cell_pos] = True
        lattice = _embed(lattice.view(1, side, side).expand(num, -1, -1), shift, fill=False)
        # The spare row and column are interior cells outside the canvas's own interior (its border becomes them).
        inside = torch.zeros(side, side, dtype=torch.bool, device=device)
        inside[1:-1, 1:-1] = True
        inside = _embed(inside.expand(num, -1, -1), shift, fill=False)
        walls = _embed(walls, shift, fill=True)
        interior = torch.zeros(n, n, dtype=torch.bool, device=device)
        interior[1:-1, 1:-1] = True
        # Lattice cells never touch the grid border, so the wrap-around of roll only brings in False.
        near_lattice = lattice.roll(1, 1) | lattice.roll(-1, 1) | lattice.roll(1, 2) | lattice.roll(-1, 2)
        coin = torch.rand(num, n, n, generator=generator, device=device) < 0.5
        return walls & ~(interior & ~inside & near_lattice & coin)

    # ------------------------------------------------------------------ episodes

    def reset(self, num_envs: int, generator: torch.Generator) -> tuple[TaskState, Tensor]:
        if self.pool is None:
            walls = self.generate(num_envs, generator)
        else:
            pick = torch.randint(self.pool.shape[0], (num_envs,), generator=generator, device=self.device)
            walls = self.pool[pick]
        open_ = ~walls.flatten(1)
        target = self._random_cell(open_, generator)
        start = self._random_cell(open_ & (self._cells != target[:, None]), generator)
        state = {
            "walls": walls,
            "pos": self._coords(start),
            "target": self._coords(target),
            "t": torch.zeros(num_envs, dtype=torch.long, device=self.device),
        }
        return state, self.observe(walls, state["pos"])

    def time_limit_reached(self, state: TaskState) -> Tensor:
        return state["t"] >= self.max_steps  # the maze has no terminal state: every episode is cut at its horizon

    def step(
        self, state: TaskState, action: Tensor, generator: torch.Generator
    ) -> tuple[TaskState, Tensor, Tensor, Tensor]:
        n = self.size
        walls, pos, target = state["walls"], state["pos"], state["target"]
        flat_walls = walls.flatten(1)
        # The agent is always inside the border, so a one-cell move never leaves the grid.
        moved = pos + self._moves[action.long()]
        blocked = flat_walls.gather(1, (moved[:, 0] * n + moved[:, 1])[:, None]).squeeze(1)
        pos = torch.where(blocked[:, None], pos, moved)
        hit = (pos == target).all(1)
        # Drawn for every episode (and used where it hit) to keep step free of data-dependent shapes.
        target_flat = target[:, 0] * n + target[:, 1]
        allowed = ~flat_walls & (self._cells != target_flat[:, None])
        elsewhere = self.uniform(state, generator, n * n).masked_fill_(~allowed, -1.0).argmax(1)
        pos = torch.where(hit[:, None], self._coords(elsewhere), pos)
        t = state["t"] + 1
        reward = hit.float() * self.reward
        done = t >= self.max_steps
        new_state = dict(state, pos=pos, t=t)
        return new_state, self.observe(walls, pos), reward, done

    def episode_metrics(self, rewards: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        got = rewards != 0
        steps = torch.arange(1, rewards.shape[0] + 1, device=rewards.device)[:, None]
        # The first rewarded step, or episode_steps where no step was rewarded.
        first = torch.where(got, steps, self.max_steps).min(0).values
        return {
            "return": rewards.sum(0).float(),
            "steps_to_first_reward": first.float(),
            "success": got.any(0).float(),
        }

    # ------------------------------------------------------------------ helpers

    def observe(self, walls: Tensor, pos: Tensor) -> Tensor:
        """The 3x3 wall neighbourhood of ``pos`` (``[B, 2]``), row-major, as ``float32 [B, 9]``."""
        flat = pos[:, 0] * self.size + pos[:, 1]
        return walls.flatten(1).gather(1, flat[:, None] + self._window).float()

    @staticmethod
    def open_cells(walls: Tensor) -> Tensor:
        """Coordinates ``int64 [K, 2]`` of the open cells of one maze ``bool [n, n]``."""
        return (~walls).nonzero()

    def render(self, state: TaskState, index: int = 0) -> str:
        """ASCII picture of one episode: ``#`` wall, ``.`` open, ``A`` agent, ``T`` target."""
        grid = [["#" if wall else "." for wall in row] for row in state["walls"][index].tolist()]
        target_row, target_col = state["target"][index].tolist()
        grid[target_row][target_col] = "T"
        agent_row, agent_col = state["pos"][index].tolist()
        grid[agent_row][agent_col] = "A"
        return "\n".join("".join(row) for row in grid)

    def _random_cell(self, allowed: Tensor, generator: torch.Generator) -> Tensor:
        """A uniformly random allowed cell per row of ``allowed`` (``bool [B, n*n]``), as a flat index."""
        score = torch.rand(allowed.shape, generator=generator, device=self.device)
        return score.masked_fill_(~allowed, -1.0).argmax(1)

    def _coords(self, flat: Tensor) -> Tensor:
        return torch.stack([flat // self.size, flat % self.size], 1)


def _embed(canvas: Tensor, shift: Tensor, fill: bool) -> Tensor:
    """Pad ``[B, N, N]`` to ``[B, N + 1, N + 1]`` with ``fill``, putting the pad row first where ``shift[:, 0]``
    (else last) and the pad column first where ``shift[:, 1]`` (else last)."""
    num, side, _ = canvas.shape
    pad_row = canvas.new_full((num, 1, side), fill)
    grid = torch.where(shift[:, 0, None, None], torch.cat([pad_row, canvas], 1), torch.cat([canvas, pad_row], 1))
    pad_col = canvas.new_full((num, side + 1, 1), fill)
    return torch.where(shift[:, 1, None, None], torch.cat([pad_col, grid], 2), torch.cat([grid, pad_col], 2))
