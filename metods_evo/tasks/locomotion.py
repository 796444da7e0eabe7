"""Cheetah-dir and ant-dir: gymnasium's MuJoCo ``HalfCheetah-v5`` and ``Ant-v5`` with a hidden direction per episode.

Each episode draws a direction that the agent never observes: it has to infer it from its rewards, within
the episode (the paper's "adapts within a few steps").

* ``cheetah-dir`` (:class:`CheetahDirTask`): ``HalfCheetah-v5`` with ``forward_reward_weight = d``, d in
  {-1, +1} uniform. Reward ``d * x_velocity - 0.1 * |a|^2``; 200 steps, no termination. This is the
  cheetah-dir of MAML, ProMP and PEARL (frame skip 5, 200 steps, observation ``qpos[1:] + qvel``) up to the
  control cost, which they weigh 0.05 and gymnasium weighs 0.1.
* ``ant-dir`` (:class:`AntDirTask`): ``Ant-v5`` with ``forward_reward_weight = d``, d in {-1, +1}; gymnasium's
  healthy reward, control and contact costs, 105-float observation (with the clipped external contact forces)
  and termination when unhealthy; at most 200 steps. ``directions="plane"`` draws an angle theta in
  [0, 2 pi) instead and rewards the torso velocity along ``(cos theta, sin theta)`` (PEARL's ant-dir).

Everything else is gymnasium's: the model, frame skip, reset noise, observation and the reward weights are
read from a gymnasium env built at construction, and the tests check observations, rewards and terminations
against gymnasium's own ``step``. ``frozen_actuator=K`` holds actuator K at zero (a damaged robot, for
evaluation only): the simulator, and the control cost, get the action with ``a[K] = 0``. Actions must already
lie in ``[action_low, action_high]`` (the rollout clips them).

Stepping. The episode state holds the MuJoCo state of every episode: ``qpos``, ``qvel`` and the constraint
solver's warm start (``qacc_warmstart``). Gymnasium carries the warm start from step to step; restarting the
solver cold changes the result at rounding level, and the contact dynamics amplify that into a visibly
different trajectory within ~100 steps, so the warm start is part of the state here: episodes then match
gymnasium's for their whole length. Each step loads a state (and the action) into an ``MjData``, runs
``mj_step`` for the frame skip (and, for the Ant, ``mj_rnePostConstraint`` as gymnasium does, for the
contact forces) and reads it back. ``mujoco.rollout`` steps a batch in C but returns neither the warm start
nor the contact forces and torso position the Ant needs, and it would buy little: the Python around each
``mj_step`` costs ~4 us against ~30 us (cheetah) to ~300 us (ant) of simulation per env step (per CPU
second: cheetah 21k env steps here, 29k for mujoco.rollout's bare physics, 10k for gymnasium one env at a
time; ant 3.2k, 3.7k and 2.4k). ``sim_threads`` threads, each with its own ``MjData``, step the batch's rows in
parallel: in C++ without the GIL (``mujoco_batch``, the same MuJoCo calls, compiled on first use), or, where
that does not compile, in Python threads (``mj_step`` releases the GIL, but each row takes it back several
times: 2 Python threads scaled 1.2-1.3x here, the C++ threads about 1.6x, as MuJoCo itself).

A simulation that goes unstable (a MuJoCo warning, e.g. a diverging acceleration that makes MuJoCo reset
the data, or a non-finite state) ends its episode: ``done`` with reward 0, ``state["unstable"]`` set, and
the state kept from before that step.

MuJoCo and gymnasium's MuJoCo envs are imported when a task is built, never by ``import metods_evo``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from metods_evo.tasks import mujoco_batch
from metods_evo.tasks.base import TaskState
from metods_evo.tasks.mujoco_pool import MujocoPoolTask

# Early steps of an episode, for the adaptation metrics.
EARLY_STEPS = 10


def _import_mujoco():
    try:
        import mujoco
    except ImportError as error:
        raise ImportError("the MuJoCo tasks need the mujoco extra: pip install -e '.[mujoco]'") from error
    return mujoco


class MujocoDirectionTask(MujocoPoolTask):
    """Batched gymnasium MuJoCo env with a hidden direction per episode; subclasses define the reward.

    State (leading batch axis B): ``qpos`` float64 [B, nq], ``qvel`` float64 [B, nv], ``warmstart`` float64
    [B, nv] (MuJoCo's ``qacc_warmstart``); ``direction`` float32 [B] (the sign d, or the angle theta of
    ``ant-dir`` with ``directions="plane"``); ``progress`` float64 [B] (displacement along the direction so
    far); ``t`` int64 [B]; ``done``, ``terminated`` (ended in a terminal state) and ``unstable`` bool [B].
    """

    num_actions = 0
    max_steps = 200
    action_low = -1.0
    action_high = 1.0
    """gymnasium's action bounds for both envs (checked against the env at construction)."""
    gym_env_id: ClassVar[str]
    """The gymnasium env this task batches."""

    def __init__(
        self, device: str | torch.device = "cpu", *, episode_steps: int = 200, frozen_actuator: int = -1,
        sim_threads: int = 1,
    ):
        super().__init__(device, {"episode_steps": episode_steps, "frozen_actuator": frozen_actuator,
                                  "sim_threads": sim_threads})
        self._mujoco = _import_mujoco()
        import gymnasium

        # The reference env: model, reward weights, reset noise and observation layout all come from it.
        self.env = gymnasium.make(self.gym_env_id).unwrapped
        self.model = self.env.model
        nu = self.model.nu
        space = self.env.action_space
        if not (np.all(space.low == self.action_low) and np.all(space.high == self.action_high)):
            raise RuntimeError(f"{self.gym_env_id}'s action space is {space}, not [{self.action_low}, "
                               f"{self.action_high}]: update action_low / action_high")
        if episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        if not -1 <= frozen_actuator < nu:
            raise ValueError(f"frozen_actuator must be -1 (none) or an actuator index in 0..{nu - 1}, "
                             f"got {frozen_actuator}")
        self.max_steps = int(episode_steps)
        self.frozen_actuator = int(frozen_actuator)
        self.action_dim = nu
        self.obs_dim = int(self.env.observation_space.shape[0])
        self.dt = float(self.env.dt)
        self.nq, self.nv = self.model.nq, self.model.nv
        self._skip_qpos = int(self.env.observation_structure["skipped_qpos"])
        # What one episode's simulator is loaded with and read back from, in MuJoCo's order: qpos, qvel,
        # qacc_warmstart, ctrl (the models have no actuator activations).
        state_bits = self._mujoco.mjtState
        self._state_spec = state_bits.mjSTATE_QPOS | state_bits.mjSTATE_QVEL | state_bits.mjSTATE_WARMSTART | \
            state_bits.mjSTATE_CTRL
        self._state_split = [self.nq, self.nv, self.nv, nu]
        if self.model.na or self._mujoco.mj_stateSize(self.model, self._state_spec) != sum(self._state_split):
            raise RuntimeError(f"{self.gym_env_id}: unexpected MuJoCo state layout")
        # One MjData per worker thread; the episodes' states live in the task state, not here.
        self._data = [self._mujoco.MjData(self.model) for _ in range(self.sim_threads)]
        # Step with the C++ extension (``mujoco_batch``: the same calls without the GIL) where it compiles; None:
        # not decided yet. False keeps the Python loop (the tests compare the two).
        self._use_extension: bool | None = None

    # ------------------------------------------------------------------ episodes

    def reset(self, num_envs: int, generator: torch.Generator) -> tuple[TaskState, Tensor]:
        dev, f64 = self.device, torch.float64
        direction = self._draw_directions(num_envs, generator)
        # gymnasium's reset_model: qpos + U(-s, s), qvel + s * N(0, 1), with s = reset_noise_scale.
        scale = self.env._reset_noise_scale
        init_qpos = torch.as_tensor(self.env.init_qpos, dtype=f64, device=dev)
        init_qvel = torch.as_tensor(self.env.init_qvel, dtype=f64, device=dev)
        qpos = init_qpos + scale * (2 * torch.rand(num_envs, self.nq, generator=generator, dtype=f64, device=dev) - 1)
        qvel = init_qvel + scale * torch.randn(num_envs, self.nv, generator=generator, dtype=f64, device=dev)
        flag = torch.zeros(num_envs, dtype=torch.bool, device=dev)
        state = {
            "qpos": qpos,
            "qvel": qvel,
            "warmstart": self._reset_warmstart(qpos, qvel),
            "direction": direction,
            "progress": torch.zeros(num_envs, dtype=f64, device=dev),
            "t": torch.zeros(num_envs, dtype=torch.long, device=dev),
            "done": flag,
            "terminated": flag.clone(),
            "unstable": flag.clone(),
            **self._reset_extra(qpos),
        }
        return state, self._observe(qpos, qvel, None)

    def _reset_warmstart(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        """The solver warm start that gymnasium's reset leaves (``mj_resetData``, then ``set_state`` runs
        ``mj_forward``): zero with some MuJoCo versions, the forward acceleration with others (3.3.0)."""
        mujoco, data = self._mujoco, self._data[0]
        out = torch.empty(len(qpos), self.nv, dtype=torch.float64)
        for i, (pos, vel) in enumerate(zip(qpos.cpu().numpy(), qvel.cpu().numpy())):
            mujoco.mj_resetData(self.model, data)
            data.qpos[:], data.qvel[:] = pos, vel
            mujoco.mj_forward(self.model, data)
            out[i] = torch.from_numpy(data.qacc_warmstart.copy())
        return out.to(qpos.device)

    def time_limit_reached(self, state: TaskState) -> Tensor:
        return state["done"] & ~state["terminated"] & ~state["unstable"]

    def step(
        self, state: TaskState, action: Tensor, generator: torch.Generator
    ) -> tuple[TaskState, Tensor, Tensor, Tensor]:
        active = ~state["done"]
        ctrl = action.detach().to(self.device, torch.float64)
        if self.frozen_actuator >= 0:
            ctrl = ctrl.clone()
            ctrl[:, self.frozen_actuator] = 0.0
        before = torch.cat([state["qpos"], state["qvel"], state["warmstart"], ctrl], 1)
        physics = before.cpu().numpy().copy()
        sim = self._simulate(active.cpu().numpy(), physics)
        after = torch.from_numpy(physics).to(self.device)
        unstable = active & (torch.from_numpy(sim["warned"]).to(self.device) | ~torch.isfinite(after).all(1))
        moved = active & ~unstable
        idle = (~moved).cpu().numpy()
        for name, values in sim.items():  # what was read off unstable (or idle) simulators is meaningless
            if name != "warned":
                values[idle] = 0.0
        # Finished and unstable episodes keep their state from before this step.
        after = torch.where(moved[:, None], after, before)
        qpos, qvel, warmstart, _ = after.split(self._state_split, 1)
        progress, reward, healthy, extra = self._reward(state, qpos, qvel, ctrl, sim)
        reward = torch.where(moved, reward, 0.0)
        terminated = state["terminated"] | (moved & ~healthy)
        unstable = state["unstable"] | unstable
        t = state["t"] + active
        done = state["done"] | terminated | unstable | (t >= self.max_steps)
        extra = {k: torch.where(moved.view(-1, *[1] * (v.dim() - 1)), v, state[k]) for k, v in extra.items()}
        new = dict(state, qpos=qpos, qvel=qvel, warmstart=warmstart, t=t, done=done, terminated=terminated,
                   unstable=unstable, progress=state["progress"] + torch.where(moved, progress, 0.0), **extra)
        # A state that was already non-finite stays so; keep the observation finite for the model all the same.
        obs = torch.nan_to_num(self._observe(qpos, qvel, sim.get("contact_forces")), nan=0.0)
        return new, obs, reward.float(), done

    def episode_metrics(self, rewards: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """``return``, and the mean reward per step over the first ``EARLY_STEPS`` steps and over the rest
        (0 where an episode has no such step): how fast the agent finds the direction within an episode.
        The displacement along the direction is in the state (``progress``), which metrics cannot see."""
        steps = torch.arange(rewards.shape[0], device=rewards.device)[:, None]
        early = (steps < EARLY_STEPS).float()
        late_steps = (lengths - EARLY_STEPS).clamp(min=0).float()
        return {
            "return": rewards.sum(0).float(),
            "early_reward_per_step": (rewards * early).sum(0) / lengths.clamp(1, EARLY_STEPS).float(),
            "late_reward_per_step": (rewards * (1 - early)).sum(0) / late_steps.clamp(min=1),
        }

    def mirror(self, state: TaskState, obs: Tensor) -> tuple[TaskState, Tensor]:
        """Each episode's twin starts from the same state and is rewarded for running the other way."""
        plane = getattr(self, "directions", "forward_backward") == "plane"
        opposite = torch.remainder(state["direction"] + math.pi, 2 * math.pi) if plane else -state["direction"]
        twin = dict(state, direction=opposite)
        return {k: torch.cat([v, twin[k]]) for k, v in state.items()}, torch.cat([obs, obs])

    def episode_groups(self, state: TaskState) -> dict[str, Tensor]:
        """Episodes rewarded for running forward (d = +1) and backward (d = -1): an agent that infers the
        direction from reward earns a positive return in both (none for ``directions="plane"``)."""
        if getattr(self, "directions", "forward_backward") == "plane":
            return {}
        return {"forward": state["direction"] > 0, "backward": state["direction"] < 0}

    # ------------------------------------------------------------------ simulation

    def _simulate(self, active: np.ndarray, physics: np.ndarray) -> dict[str, np.ndarray]:
        """Advance the active rows of ``physics`` ([B, nq + 2 nv + nu]: qpos, qvel, warm start, ctrl) in place
        by one env step. Returns ``warned`` bool [B] and what the subclass reads off the MjData."""
        out = {"warned": np.zeros(len(physics), dtype=bool), **self._sim_outputs(len(physics))}
        if self._use_extension is None:  # decided on the first step: compiling is not needed to build a task
            self._use_extension = mujoco_batch.available()
        if self._use_extension:
            rne, body = self._extension_reads()
            mujoco_batch.step_rows(self.model, self._data, physics, np.flatnonzero(active), self._state_spec,
                                   self.env.frame_skip, rne=rne, body=body, body_xy=out.get("torso_xy"),
                                   cfrc=out.get("contact_forces"), warned=out["warned"])
            return out
        # Rows are handed out one at a time from a shared iterator (atomic under the GIL) rather than in fixed
        # chunks: an Ant row costs 0.1-1 ms depending on its contacts, and fixed halves left one thread idle.
        # A row's result does not depend on which worker's MjData steps it (mj_setState loads its whole state).
        rows = iter(np.flatnonzero(active).tolist())

        def work(worker: int) -> None:
            mujoco, model, data = self._mujoco, self.model, self._data[worker]
            warnings = data.warning.number  # a live view of MuJoCo's warning counters
            for i in rows:
                mujoco.mj_setState(model, data, physics[i], self._state_spec)
                mujoco.mj_step(model, data, nstep=self.env.frame_skip)
                self._read_data(data, i, out)
                mujoco.mj_getState(model, data, physics[i], self._state_spec)
                if np.count_nonzero(warnings):
                    out["warned"][i] = True
                    warnings[:] = 0

        self._run_workers(work)
        return out

    def _sim_outputs(self, batch: int) -> dict[str, np.ndarray]:
        """Arrays that ``_read_data`` fills, one row per episode."""
        return {}

    def _read_data(self, data, row: int, out: dict[str, np.ndarray]) -> None:
        """Read what the reward needs from ``data`` right after ``mj_step`` (called inside the worker loop)."""

    def _extension_reads(self) -> tuple[bool, int]:
        """``_read_data`` for the C++ stepper: (run ``mj_rnePostConstraint``, body whose xpos[:2] goes to
        ``torso_xy`` or -1); ``contact_forces`` (cfrc_ext) is filled where ``_sim_outputs`` has it."""
        return False, -1

    # ------------------------------------------------------------------ per task

    def _draw_directions(self, num_envs: int, generator: torch.Generator) -> Tensor:
        """d in {-1, +1}, uniform."""
        return torch.randint(0, 2, (num_envs,), generator=generator, device=self.device).float() * 2 - 1

    def _reset_extra(self, qpos: Tensor) -> TaskState:
        return {}

    def _reward(self, state: TaskState, qpos: Tensor, qvel: Tensor, ctrl: Tensor, sim: dict[str, np.ndarray]
                ) -> tuple[Tensor, Tensor, Tensor, TaskState]:
        """(displacement along the direction, reward, healthy, extra state) for this step, float64 [B]."""
        raise NotImplementedError

    def _control_cost(self, ctrl: Tensor) -> Tensor:
        return self.env._ctrl_cost_weight * ctrl.square().sum(1)

    def _observe(self, qpos: Tensor, qvel: Tensor, contact_forces: np.ndarray | None) -> Tensor:
        """gymnasium's ``_get_obs``: qpos without the skipped coordinates, qvel, then (Ant) contact forces."""
        return torch.cat([qpos[:, self._skip_qpos:], qvel], 1).float()


class CheetahDirTask(MujocoDirectionTask):
    """``HalfCheetah-v5`` with a hidden forward / backward direction; see the module docstring."""

    gym_env_id = "HalfCheetah-v5"
    obs_dim = 17
    action_dim = 6

    def _reward(self, state, qpos, qvel, ctrl, sim):
        # gymnasium: forward_reward_weight * (x after - x before) / dt - ctrl_cost_weight * |a|^2.
        progress = state["direction"].double() * (qpos[:, 0] - state["qpos"][:, 0])
        reward = progress / self.dt - self._control_cost(ctrl)
        return progress, reward, torch.ones_like(reward, dtype=torch.bool), {}


class AntDirTask(MujocoDirectionTask):
    """``Ant-v5`` with a hidden direction: forward / backward, or any angle with ``directions="plane"``.

    Extra state: ``torso_xy`` float64 [B, 2], the torso position that gymnasium measures the velocity from
    (``data.body(main_body).xpos`` as ``mj_step`` leaves it: computed at the Runge-Kutta integrator's last
    intermediate stage, so close to but not equal to ``qpos[:2]``).
    """

    gym_env_id = "Ant-v5"
    obs_dim = 105
    action_dim = 8

    def __init__(
        self, device: str | torch.device = "cpu", *, episode_steps: int = 200, frozen_actuator: int = -1,
        sim_threads: int = 1, directions: str = "forward_backward",
    ):
        if directions not in ("forward_backward", "plane"):
            raise ValueError(f"directions must be 'forward_backward' or 'plane', got {directions!r}")
        super().__init__(device, episode_steps=episode_steps, frozen_actuator=frozen_actuator,
                         sim_threads=sim_threads)
        self.directions = directions
        self._options["directions"] = directions
        self._torso = self.model.body(self.env._main_body).id
        self._force_range = self.env._contact_force_range

    def _draw_directions(self, num_envs, generator):
        if self.directions == "plane":
            return 2 * math.pi * torch.rand(num_envs, generator=generator, device=self.device)
        return super()._draw_directions(num_envs, generator)

    def _reset_extra(self, qpos):
        # After gymnasium's reset, mj_forward has placed the free-floating torso at qpos[:3].
        return {"torso_xy": qpos[:, :2].clone()}

    def _sim_outputs(self, batch):
        return {"torso_xy": np.zeros((batch, 2)), "contact_forces": np.zeros((batch, self.model.nbody, 6))}

    def _read_data(self, data, row, out):
        self._mujoco.mj_rnePostConstraint(self.model, data)  # as gymnasium: fills cfrc_ext
        out["torso_xy"][row] = data.xpos[self._torso, :2]
        out["contact_forces"][row] = data.cfrc_ext

    def _extension_reads(self):
        return True, self._torso

    def _reward(self, state, qpos, qvel, ctrl, sim):
        env = self.env
        torso_xy = torch.from_numpy(sim["torso_xy"]).to(self.device)
        displacement = torso_xy - state["torso_xy"]
        direction = state["direction"].double()
        if self.directions == "plane":  # direction is the angle theta
            progress = direction.cos() * displacement[:, 0] + direction.sin() * displacement[:, 1]
        else:  # direction is the sign d: exactly gymnasium's forward_reward_weight * x_velocity
            progress = direction * displacement[:, 0]
        # gymnasium's is_healthy, healthy_reward, contact_cost (over every body, world included).
        low, high = env._healthy_z_range
        healthy = torch.isfinite(qpos).all(1) & torch.isfinite(qvel).all(1) & (qpos[:, 2] >= low) & (qpos[:, 2] <= high)
        forces = self._clipped_forces(sim["contact_forces"])
        contact_cost = env._contact_cost_weight * forces.square().sum((1, 2))
        reward = progress / self.dt + healthy.double() * env._healthy_reward - self._control_cost(ctrl) - contact_cost
        if not env._terminate_when_unhealthy:
            healthy = torch.ones_like(healthy)
        return progress, reward, healthy, {"torso_xy": torso_xy}

    def _clipped_forces(self, contact_forces: np.ndarray) -> Tensor:
        low, high = self._force_range
        return torch.from_numpy(contact_forces).to(self.device).clamp(low, high)

    def _observe(self, qpos, qvel, contact_forces):
        base = super()._observe(qpos, qvel, None)
        if contact_forces is None:  # at reset gymnasium's data has no contact forces yet: zeros
            forces = base.new_zeros(qpos.shape[0], (self.model.nbody - 1) * 6)
        else:
            forces = self._clipped_forces(contact_forces)[:, 1:].flatten(1).float()
        return torch.cat([base, forces], 1)
