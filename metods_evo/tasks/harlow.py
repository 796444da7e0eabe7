"""1-D Harlow task: learn within an episode which of two new objects pays, then keep picking it.

Each episode draws two distinct objects, vectors in {-1, +1}^D (D = ``object_dim``, 8 by default),
uniformly at random; one pays +1 and the other -1 for the whole episode (which one is random).

* Position p in {0 left, 1 centre, 2 right}, starting at the centre. Actions {0 left, 1 stay, 2 right}:
  p <- clip(p + a - 1, 0, 2).
* Phases: *fixation* (cue shown, no objects) and *choice* (objects shown); episodes start in fixation.
  In fixation, a step that ends at the centre switches to choice and places the two objects left and
  right in an order drawn afresh for that trial. In choice, a step that ends off-centre selects the
  object under p: reward +1 or -1, the trial counts, and the phase returns to fixation. Every other
  step pays 0.
* The episode ends (done=True on that step) after ``num_trials`` (5) trials or ``max_steps`` (30) steps.
* Observation (2*D + 4 floats): ``[fixation cue (1 in fixation, else 0), left object (D),
  right object (D), one-hot position (3)]``; objects are zeros in fixation. ``step`` returns the
  observation after the transition.
* The optimal expected return is num_trials - 1 = 4.0: the first trial is a guess.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metods_evo.tasks.base import Task, TaskState

CENTRE = 1


class HarlowTask(Task):
    """Batched 1-D Harlow task; see the module docstring for the rules.

    State (leading batch axis B): ``objects`` float32 [B, 2, D]; ``good`` int64 [B] (index of the paying
    object); ``left`` int64 [B] (index of the object shown on the left in the current/last choice
    phase); ``pos`` int64 [B]; ``choice`` bool [B] (phase); ``trials`` int64 [B] (trials done);
    ``t`` int64 [B] (steps taken); ``done`` bool [B].
    """

    obs_dim = 20
    num_actions = 3
    max_steps = 30

    def __init__(
        self, device: str | torch.device = "cpu", *, num_trials: int = 5, max_steps: int = 30, object_dim: int = 8
    ):
        super().__init__(device)
        # The second object is drawn as the first with a random non-empty set of coordinates flipped,
        # encoded as the bits of an int64, hence the upper bound.
        if not 1 <= object_dim <= 62:
            raise ValueError(f"object_dim must be in 1..62, got {object_dim}")
        if num_trials < 1 or max_steps < 1:
            raise ValueError(f"num_trials and max_steps must be positive, got {num_trials} and {max_steps}")
        if num_trials > max_steps:  # a trial takes at least one step; more trials could never happen
            raise ValueError(f"num_trials ({num_trials}) cannot exceed max_steps ({max_steps})")
        self.num_trials = num_trials
        self.max_steps = max_steps
        self.object_dim = object_dim
        self.obs_dim = 2 * object_dim + 4

    def reset(self, num_envs: int, generator: torch.Generator) -> tuple[TaskState, Tensor]:
        dev, d = self.device, self.object_dim
        first = torch.randint(0, 2, (num_envs, d), generator=generator, device=dev) * 2 - 1
        # Flipping a uniformly random non-empty coordinate set makes the second object uniform over
        # all vectors other than the first: exact "draw until distinct" without a data-dependent loop.
        flips = torch.randint(1, 2**d, (num_envs, 1), generator=generator, device=dev)
        flip_bits = (flips >> torch.arange(d, device=dev)) & 1
        second = first * (1 - 2 * flip_bits)
        zeros = torch.zeros(num_envs, dtype=torch.long, device=dev)
        state = {
            "objects": torch.stack([first, second], 1).float(),
            "good": torch.randint(0, 2, (num_envs,), generator=generator, device=dev),
            "left": zeros.clone(),
            "pos": torch.full((num_envs,), CENTRE, dtype=torch.long, device=dev),
            "choice": torch.zeros(num_envs, dtype=torch.bool, device=dev),
            "trials": zeros.clone(),
            "t": zeros.clone(),
            "done": torch.zeros(num_envs, dtype=torch.bool, device=dev),
        }
        return state, self._observe(state)

    def mirror(self, state: TaskState, obs: Tensor) -> tuple[TaskState, Tensor]:
        """Each episode's twin pays the other object: the first guess wins in one and loses in the other."""
        twin = dict(state, good=1 - state["good"])
        return {k: torch.cat([v, twin[k]]) for k, v in state.items()}, torch.cat([obs, obs])

    def time_limit_reached(self, state: TaskState) -> Tensor:
        return (state["t"] >= self.max_steps) & (state["trials"] < self.num_trials)

    def step(
        self, state: TaskState, action: Tensor, generator: torch.Generator
    ) -> tuple[TaskState, Tensor, Tensor, Tensor]:
        active = ~state["done"]
        moved = (state["pos"] + action.to(self.device, torch.long) - 1).clamp(0, 2)
        pos = torch.where(active, moved, state["pos"])  # finished episodes stay frozen
        at_centre = pos == CENTRE
        enter = active & ~state["choice"] & at_centre
        pick = active & state["choice"] & ~at_centre
        # Draw an order for every env each step so the generator advances independently of the actions.
        order = (self.uniform(state, generator) < 0.5).long()
        left = torch.where(enter, order, state["left"])
        chosen = torch.where(pos == 0, left, 1 - left)
        reward = torch.where(chosen == state["good"], 1.0, -1.0) * pick
        trials = state["trials"] + pick
        t = state["t"] + active
        done = state["done"] | (trials >= self.num_trials) | (t >= self.max_steps)
        new = dict(state, left=left, pos=pos, choice=(state["choice"] | enter) & ~pick, trials=trials, t=t, done=done)
        return new, self._observe(new), reward, done

    def _observe(self, state: TaskState) -> Tensor:
        shown = state["choice"].float()[:, None]
        # "left" is the index of the object on the left. where() and a sum (exact: the objects are +-1 vectors)
        # instead of gather (10x slower here) and flip; one-hot by comparison skips one_hot's range check.
        first, second = state["objects"].unbind(1)
        on_left = torch.where(state["left"].bool()[:, None], second, first)
        on_right = first + second - on_left
        cue = 1.0 - shown
        position = (state["pos"][:, None] == torch.arange(3, device=self.device)).float()
        return torch.cat([cue, on_left * shown, on_right * shown, position], 1)

    def episode_metrics(self, rewards: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Return, trial count, per-trial correctness and the later-trial success rate.

        Trials are the non-zero rewards in order. ``trialK_correct`` is 1.0 if trial K paid +1, else 0.0
        (also 0.0 when trial K never happened, so no NaNs). ``solved_trials_2_5`` is the number of correct
        trials among 2..num_trials divided by num_trials - 1: missing trials count as wrong.
        """
        nonzero = rewards != 0
        # the k-th trial's step carries index k (past num_trials: one overflow row), every other step index 0;
        # one scatter then counts the wins per trial (a loop over k costs 3 passes over the trace per trial)
        index = (nonzero.long().cumsum(0) * nonzero).clamp_(max=self.num_trials + 1)
        wins = rewards.new_zeros(self.num_trials + 2, rewards.shape[1]).scatter_add_(0, index, (rewards > 0).float())
        metrics = {"return": rewards.sum(0).float(), "trials": nonzero.sum(0).float()}
        for k in range(1, self.num_trials + 1):
            metrics[f"trial{k}_correct"] = (wins[k] > 0).float()
        metrics["solved_trials_2_5"] = wins[2:self.num_trials + 1].sum(0) / max(self.num_trials - 1, 1)
        return metrics
