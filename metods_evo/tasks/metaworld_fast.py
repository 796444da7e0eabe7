"""Meta-World's ``step`` of reach-v3 and push-v3 for a whole batch at once, with the same float operations.

:class:`~metods_evo.tasks.metaworld.MetaWorldTask` steps a row by loading its MuJoCo state into a Meta-World env and
calling the env's ``step``: ~0.25 ms of MuJoCo and 0.6 ms (reach) to 1.7 ms (push) of Python around it. For the
classes here, :class:`FastStepper` does what that ``step`` does, for all rows of a class together:

1. ``set_xyz_action``: the clipped, scaled action moves the mocap target (the first one clipped to the mocap box),
   the mocap quaternion is reset and the gripper action goes to ``ctrl``; written into each row's MuJoCo state
   (which ``mj_setState`` loads), in NumPy over the batch.
2. The simulation: ``frame_skip`` ``mj_step``, ``mj_rnePostConstraint`` (gymnasium's ``do_simulation``) and
   ``mj_forward``, in C++ without the GIL (:func:`~metods_evo.tasks.mujoco_batch.step_forward_rows`), which also
   reads the body, site and geom poses the observation and reward need. (Meta-World also writes the goal site's
   ``xpos``, which ``mj_forward`` overwrites, and ``push``'s ``evaluate_state`` reads the contacts for
   ``info["grasp_success"]``, which the task does not use.)
3. The observation (``_get_curr_obs_combined_no_goal``, frame stacking, the goal masked, the clip to the
   observation space) and ``compute_reward`` / ``evaluate_state``'s success, in NumPy over the batch.

Bitwise equal to Meta-World's own ``step``: elementwise NumPy operations round as the scalar ones do, and the
float64 3-vector norms (``np.linalg.norm``: ``sqrt(x.dot(x))``) equal the sum of squares taken left to right. Two
places differ between Meta-World's scalars and NumPy's arrays and are reproduced as Meta-World computes them:
``(x * scale) ** 2`` on a NumPy float64 scalar calls libm's ``pow``, which differs from the array's ``x * x`` in the
last bit for about one input in a thousand (``math.pow`` per element here); and push's caging reward runs in
float32 when the gripper action is in (0, 1] (the float32 action promotes Meta-World's Python floats), so those
rows are computed in float32. ``tests/test_metaworld_fast.py`` checks every output against Meta-World's envs.

A task goes this way only when its recorded reset left what these functions assume (``reward_function_version``
``"v2"``, the goal masked, the class's action scale, frame skip and mocap box, a model that differs from the
stepper's at most in the poses of sites that nothing here reads); any other task goes through Meta-World's ``step``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from metods_evo.tasks import mujoco_batch

OBS_FRAME = 18
TARGET_RADIUS = 0.05
"""Both classes' success radius (reach: hand to goal; push: puck to goal) and the ``in_place`` tolerance bound."""
BODIES = ("hand", "rightclaw", "leftclaw", "obj", "leftpad", "rightpad")
SITES = ("rightEndEffector", "leftEndEffector")
GEOMS = ("objGeom",)
PARAMS = ("_target_pos", "hand_init_pos", "obj_init_pos", "init_tcp", "mocap_low", "mocap_high")
"""The per-task env attributes (3 floats each) that the step reads."""
_LONG_TAIL_SCALE = np.sqrt(1 / 0.1 - 1)
"""``reward_utils._sigmoids(..., "long_tail")``'s scale for ``value_at_margin`` 0.1, computed as it does."""
_pow = np.frompyfunc(math.pow, 2, 1)


def _scalar_square(x: np.ndarray) -> np.ndarray:
    """``np.float64(v) ** 2`` of each element: libm's ``pow(v, 2.0)``, as Meta-World's scalar code computes it."""
    return _pow(x, 2.0).astype(np.float64)


def _norm(v: np.ndarray) -> np.ndarray:
    """``np.linalg.norm`` of each row of a [B, 2 or 3] float64 array, summing the squares in the same order."""
    total = v[:, 0] * v[:, 0]
    for k in range(1, v.shape[1]):
        total = total + v[:, k] * v[:, k]
    return np.sqrt(total)


def tolerance(x: np.ndarray, lower: float, upper: float, margin: np.ndarray) -> np.ndarray:
    """``reward_utils.tolerance(x, bounds=(lower, upper), margin=margin, sigmoid="long_tail")`` of each row."""
    in_bounds = (lower <= x) & (x <= upper)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.where(x < lower, lower - x, x - upper) / margin
        outside = 1 / (_scalar_square(d * _LONG_TAIL_SCALE) + 1)
    return np.where(in_bounds, 1.0, np.where(margin == 0, 0.0, outside))


def hamacher_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``reward_utils.hamacher_product`` of each row (in the dtype of ``a`` and ``b``)."""
    denominator = a + b - (a * b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (a * b) / denominator, np.zeros((), a.dtype))


@dataclass
class Poses:
    """What the step reads of the simulation after it, per row ([B, 3], ``obj_xmat`` [B, 3, 3])."""

    hand: np.ndarray
    right_claw: np.ndarray
    left_claw: np.ndarray
    obj: np.ndarray
    left_pad: np.ndarray
    right_pad: np.ndarray
    right_finger: np.ndarray
    left_finger: np.ndarray
    obj_xmat: np.ndarray

    @classmethod
    def from_reads(cls, reads: np.ndarray) -> Poses:
        vectors = [reads[:, 3 * k:3 * k + 3] for k in range(len(BODIES) + len(SITES))]
        return cls(*vectors, reads[:, -9:].reshape(-1, 3, 3))

    @property
    def tcp_center(self) -> np.ndarray:
        return (self.right_finger + self.left_finger) / 2.0


def reach_reward(poses: Poses, obs: np.ndarray, action: np.ndarray,
                 params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerReachEnvV3.compute_reward`` (v2) and ``evaluate_state``'s success: (reward, success) [B]."""
    target = params["_target_pos"]
    tcp_to_target = _norm(poses.tcp_center - target)
    in_place_margin = _norm(params["hand_init_pos"] - target)
    in_place = tolerance(tcp_to_target, 0, TARGET_RADIUS, in_place_margin)
    return 10 * in_place, tcp_to_target <= TARGET_RADIUS


def push_reward(poses: Poses, obs: np.ndarray, action: np.ndarray,
                params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerPushEnvV3.compute_reward`` (v2, with ``_gripper_caging_reward``'s high-density caging) and
    ``evaluate_state``'s success: (reward, success) [B]."""
    obj, tcp_opened, tcp = obs[:, 4:7], obs[:, 3], poses.tcp_center
    target, obj_init = params["_target_pos"], params["obj_init_pos"]
    tcp_to_obj = _norm(obj - tcp)
    target_to_obj = _norm(obj - target)
    in_place = tolerance(target_to_obj, 0, TARGET_RADIUS, _norm(obj_init - target))
    # _gripper_caging_reward(obj_radius=0.015, pad_success_thresh=0.05, xz_thresh=0.005, high_density=True)
    pad_y = np.stack([poses.left_pad[:, 1], poses.right_pad[:, 1]], 1)
    pad_to_obj = np.abs(pad_y - obj[:, 1:2])
    caging_margin = np.abs(np.abs(pad_y - obj_init[:, 1:2]) - 0.05)
    caging_y = hamacher_product(tolerance(pad_to_obj[:, 0], 0.015, 0.05, caging_margin[:, 0]),
                                tolerance(pad_to_obj[:, 1], 0.015, 0.05, caging_margin[:, 1]))
    xz = [0, 2]
    xz_margin = _norm(obj_init[:, xz] - params["init_tcp"][:, xz]) - 0.005
    caging_xz = tolerance(_norm(tcp[:, xz] - obj[:, xz]), 0, 0.005, xz_margin)
    caging = hamacher_product(caging_y, caging_xz)
    # min(max(0, a), 1.0) / 1.0 of the float32 gripper action a: a itself (float32) when 0 < a <= 1, else 0.0 or 1.0
    grip = action[:, 3]
    grip32 = (grip > 0) & (grip <= 1)
    gripping = np.where(caging > 0.97, np.where(grip > 1, 1.0, 0.0), 0.0)
    caged = (hamacher_product(caging, gripping) + caging) / 2
    reward = 2 * caged
    near = (tcp_to_obj < 0.02) & (tcp_opened > 0)
    reward = np.where(near, reward + (1.0 + reward + 5.0 * in_place), reward)
    # Rows that grip with a float32 action: the same from there on in float32.
    rows32 = grip32 & (caging > 0.97)
    if rows32.any():
        caging32 = caging[rows32].astype(np.float32)
        caged32 = (hamacher_product(caging32, grip[rows32]) + caging32) / np.float32(2)
        reward32 = np.float32(2) * caged32
        boost = (np.float32(1.0) + reward32) + (5.0 * in_place[rows32]).astype(np.float32)
        reward[rows32] = np.where(near[rows32], reward32 + boost, reward32)
    reward = np.where(target_to_obj < TARGET_RADIUS, 10.0, reward)
    return reward, target_to_obj <= TARGET_RADIUS


REWARDS = {"reach-v3": reach_reward, "push-v3": push_reward}
"""The classes with a batched step."""


class FastStepper:
    """The batched step of one Meta-World class (a key of :data:`REWARDS`), on its own copy of an env's model."""

    def __init__(self, env, class_name: str, spec: int, threads: int):
        import mujoco

        self.reward = REWARDS[class_name]
        self.spec = spec
        self.model = copy.deepcopy(env.model)
        self.datas = [mujoco.MjData(self.model) for _ in range(threads)]
        self.state_size = mujoco.mj_stateSize(self.model, spec)
        self.frame_skip, self.action_scale = int(env.frame_skip), float(env.action_scale)
        self.nmocap = int(self.model.nmocap)
        offset = {bit: mujoco.mj_stateSize(self.model, spec & (int(bit) - 1))
                  for bit in (mujoco.mjtState.mjSTATE_CTRL, mujoco.mjtState.mjSTATE_MOCAP_POS,
                              mujoco.mjtState.mjSTATE_MOCAP_QUAT)}
        self._ctrl = offset[mujoco.mjtState.mjSTATE_CTRL]
        self._mocap_pos = offset[mujoco.mjtState.mjSTATE_MOCAP_POS]
        self._mocap_quat = offset[mujoco.mjtState.mjSTATE_MOCAP_QUAT]
        space = env.sawyer_observation_space
        self.obs_low, self.obs_high = space.low, space.high
        self.ids = {kind: [getattr(self.model, kind)(name).id for name in names]
                    for kind, names in (("body", BODIES), ("site", SITES), ("geom", GEOMS))}
        self._free_sites = np.ones(self.model.nsite, dtype=bool)
        self._free_sites[self.ids["site"]] = False
        self.usable = self.model.nu == 2 and self.nmocap >= 1

    def accepts(self, attrs: dict[str, Any], model: dict[str, np.ndarray]) -> bool:
        """Whether a task recorded with these env attributes and model arrays can be stepped here."""
        if not (self.usable and attrs.get("reward_function_version") == "v2" and attrs.get("_partially_observable")
                and attrs.get("frame_skip") == self.frame_skip and attrs.get("action_scale") == self.action_scale):
            return False
        params = [attrs.get(name) for name in PARAMS]
        if not all(isinstance(p, np.ndarray) and p.shape == (3,) for p in params):
            return False
        for name, value in model.items():
            mine = getattr(self.model, name)
            differs = (value != mine).reshape(len(value), -1).any(1)
            if name.startswith("site_"):
                differs &= ~self._free_sites  # sites only mark points; the step reads none of these
            if differs.any():
                return False
        if self.reward is push_reward:  # Meta-World raises for a negative caging margin: leave that to it
            return bool(np.linalg.norm(attrs["obj_init_pos"][[0, 2]] - attrs["init_tcp"][[0, 2]]) - 0.005 >= 0)
        return True

    def step(self, physics: np.ndarray, frame: np.ndarray, action: np.ndarray,
             params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step of each row: ``physics`` [B, state_size] and ``frame`` [B, 18] are updated in place; ``action``
        float32 [B, 4]; ``params``: each name of :data:`PARAMS` [B, 3]. Returns obs [B, 39] (float64), reward,
        success and warned [B]."""
        batch = len(physics)
        delta = np.clip(action[:, :3], -1, 1) * self.action_scale  # float32, as set_xyz_action computes it
        mocap = physics[:, self._mocap_pos:self._mocap_pos + 3 * self.nmocap].reshape(batch, self.nmocap, 3)
        mocap = mocap + delta[:, None]
        mocap[:, 0] = np.clip(mocap[:, 0], params["mocap_low"], params["mocap_high"])
        physics[:, self._mocap_pos:self._mocap_pos + 3 * self.nmocap] = mocap.reshape(batch, -1)
        physics[:, self._mocap_quat:self._mocap_quat + 4 * self.nmocap] = np.tile([1.0, 0.0, 1.0, 0.0], self.nmocap)
        physics[:, self._ctrl] = action[:, 3]
        physics[:, self._ctrl + 1] = -action[:, 3]
        reads = np.zeros((batch, 3 * len(BODIES) + 3 * len(SITES) + 9 * len(GEOMS)))
        warned = np.zeros(batch, dtype=bool)
        mujoco_batch.step_forward_rows(self.model, self.datas, physics, np.arange(batch), self.spec, self.frame_skip,
                                       bodies=self.ids["body"], sites=self.ids["site"], geoms=self.ids["geom"],
                                       reads=reads, warned=warned)
        poses = Poses.from_reads(reads)
        current = np.zeros((batch, OBS_FRAME))
        current[:, :3] = poses.hand
        current[:, 3] = np.clip(_norm(poses.right_claw - poses.left_claw) / 0.1, 0.0, 1.0)
        current[:, 4:7] = poses.obj
        current[:, 7:11] = _quaternions(poses.obj_xmat)
        obs = np.clip(np.concatenate([current, frame, np.zeros((batch, 3))], 1), self.obs_low, self.obs_high)
        frame[...] = current
        reward, success = self.reward(poses, obs, action, params)
        return {"obs": obs, "reward": reward, "success": success, "warned": warned}


def _quaternions(xmat: np.ndarray) -> np.ndarray:
    """``Rotation.from_matrix(m).as_quat()`` of each [3, 3] matrix (scipy's batched call computes each one as the
    single call does); NaN for a non-finite matrix (its row is unstable)."""
    quat = np.full((len(xmat), 4), np.nan)
    finite = np.isfinite(xmat).all((1, 2))
    if finite.any():
        quat[finite] = Rotation.from_matrix(xmat[finite]).as_quat()
    return quat
