"""Meta-World ML1 (reach, push) and ML10 as batched adaptation tasks, on Meta-World's own environments.

One episode here is one *adaptation episode*: ``rollouts`` (10) consecutive rollouts of ``rollout_steps`` (500,
Meta-World's ``max_path_length``) steps of ONE task (an environment class and one of its goal / object
variations). The environment is reset between rollouts; the agent is not: the rollout carries its state (the
plastic weights) across the whole episode, which ends (``done``) only after the last rollout, so ``max_steps =
rollouts * rollout_steps``. The agent sees Meta-World's 39-float observation unchanged (goal position masked,
as in ML benchmarks), and nothing else marks a rollout boundary: the observation jumps back to the task's
reset observation (hand at its start position, the frame-stacked halves ``obs[:18]`` and ``obs[18:36]``
equal), and the previous action / reward the rollout feeds the model are those of the previous rollout's last
step. Nothing terminates early (Meta-World's envs never do; no terminate-on-success), so every episode runs
its full length unless its simulation goes unstable.

Task sets. The benchmark is built from ``metaworld.ML1(env_name, seed)`` / ``metaworld.ML10(seed)`` with
``benchmark_seed`` (its goals are drawn from NumPy's global RNG: without a seed every construction differs),
once per process. ``split="train"`` draws episodes from the benchmark's ``train_tasks``, ``split="test"``
from its ``test_tasks``: for ML1 50 training and 50 held-out goals of the one class; for ML10 the 10 training
classes and the 5 held-out ones (50 goals each). Meta-World's gymnasium ids are not used: ``Meta-World/ML1-
train`` binds its split argument late (a lambda in a loop) and hands out the test goals, with terminate-on-
success switched on. Each episode's task is drawn uniformly from the split with the generator passed to
``reset``; Meta-World's reset is deterministic once a task is set (its random vector is frozen), so the
episode is reproducible from that seed, and the rollout's tiling over a population shares it (common random
numbers) without any per-step noise.

Success is Meta-World's: a rollout succeeds when its env reports ``info["success"]`` at any of its steps (what
``metaworld.evaluation`` counts with terminate-on-success). The state keeps one flag per rollout, and
:meth:`MetaWorldTask.state_metrics` turns the final state into per-episode metrics: ``success`` (some rollout
succeeded), ``success_fraction`` (the fraction of the episode's rollouts that did: Meta-World's per-rollout
success rate) and ``success_rollout_1`` ... ``success_rollout_R`` (success against the rollout index, which
shows adaptation). ES maximizes the return: Meta-World's shaped reward (0 to 10 per step) ranks individuals
long before any of them succeeds, where a success rate over a few episodes is mostly zero and ties.

Stepping. The state holds every episode's MuJoCo state (``mjSTATE_INTEGRATION``: qpos, qvel, warm start,
mocap, ctrl, ...) and Meta-World's frame-stacking buffer, so it is a plain value: the rollout tiles it, several
batches can be in flight, and gymnasium's vector wrapper works. The env objects are scratch simulators on the
task: per class, one per worker thread to step episodes and one to record tasks. The first time a task is
needed, Meta-World's ``set_task`` + ``reset`` runs on the recording env, and what it leaves is recorded: the
env's plain attributes (goal, object start, reward scales), the model's body / site / geom poses (resets move
the goal marker and fixtures) and the reset state. A stepping env is set to a task by restoring its record
(~0.2 ms, against ~50 ms for a reset); a step then loads each episode's state into it, calls Meta-World's own
``env.step`` (reward, observation and success code unchanged) and reads the state back, and a rollout boundary
hands the episode the recorded reset state. That nothing else in a Meta-World env carries from step to step or
task to task is checked against its envs stepped one by one, bit for bit, for every ML10 class (Meta-World keeps
a few live views of its simulation as attributes; see ``_plain``).

Meta-World's ``env.step`` costs ~1 ms (reach) to ~2 ms (push) of CPU, nearly all of it Python around ~0.25 ms of
MuJoCo. The classes of ``metaworld_fast`` (reach-v3 and push-v3, in ML1 and in ML10) therefore take a batched step:
the action written into every row's MuJoCo state, the MuJoCo calls of ``env.step`` made for the whole batch in C++
(``mujoco_batch.step_forward_rows``), the observation, reward and success computed in NumPy with Meta-World's own
float operations, on a copy of the class's model; it is tested bit for bit against Meta-World's envs
(``tests/test_metaworld_fast.py``). Other classes, tasks whose recorded reset the batched step does not model, and
every row where the C++ stepper cannot compile (or with ``_use_fast_path = False``) go through ``env.step`` row by
row. ``python benchmarks/metaworld_speed.py`` (8 episodes x 8 individuals, one thread; two runs on a 2-core AMD EPYC
VM shared with other jobs) measured reach at 1076-1137 env steps per CPU second through ``env.step`` and 4381-4394
batched (3.9-4.1x), push at 424-602 and 4024-4391 (7.3-9.5x), the batched step then mostly MuJoCo; ML10's training
split, where 2 of 10 classes are batched, at 1357 and 1686 (1.2x; ``--tasks metaworld-ml10 --steps 100``).
``sim_threads`` threads step parts of the batch: the C++ stepper's, without the GIL, and worker threads with their
own envs for the rest, which hold the GIL in Meta-World's Python and gained nothing on a busy 2-core machine; hence
the default 1: parallelize across processes (Ray) instead. Each env holds ~20 MB.

A simulation that goes unstable (a MuJoCo warning, or a non-finite observation or reward) ends its episode:
``done`` with reward 0, ``state["unstable"]`` set, the state kept from before that step.

Meta-World and MuJoCo are imported when a task is built, never by ``import metods_evo``.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metods_evo.tasks import mujoco_batch
from metods_evo.tasks.base import TaskState
from metods_evo.tasks.metaworld_fast import PARAMS, REWARDS, FastStepper
from metods_evo.tasks.mujoco_pool import MujocoPoolTask

SPLITS = ("train", "test")
OBS_FRAME = 18
"""Floats of one observation frame; Meta-World stacks the current and the previous one (then 3 goal floats)."""
TASK_MODEL_FIELDS = ("body_pos", "body_quat", "site_pos", "site_quat", "geom_pos", "geom_quat")
"""Model arrays a task record keeps: Meta-World's resets move bodies and sites (``model.body(name).pos``,
``model.site(name).pos``: the goal marker, the object's fixture); geometry poses are kept too, for safety."""


def _import_metaworld():
    try:
        import metaworld
        import mujoco
    except ImportError as error:
        raise ImportError("the Meta-World tasks need the metaworld extra: pip install -e '.[metaworld]'") from error
    return metaworld, mujoco


@functools.lru_cache(maxsize=8)
def build_benchmark(name: str, seed: int):
    """``metaworld.ML1(env_name, seed=seed)`` for ``name="ML1:<env_name>"``, or ``metaworld.ML10(seed=seed)``.

    Built once per process (ML1 takes seconds, ML10 tens of seconds: Meta-World compiles a model per class and
    resets it 50 times) and shared: nothing here modifies it."""
    metaworld, _ = _import_metaworld()
    if name == "ML10":
        return metaworld.ML10(seed=seed)
    return metaworld.ML1(name.split(":", 1)[1], seed=seed)


@dataclass
class _TaskRecord:
    """What ``set_task`` + ``reset`` leave in a Meta-World env for one task."""

    attrs: dict[str, Any]
    """The env's plain attributes (goal, object start, reward scales, ...)."""
    model: dict[str, np.ndarray]
    """The model arrays named in ``TASK_MODEL_FIELDS``."""
    physics: np.ndarray
    """The MuJoCo integration state after the reset."""
    frame: np.ndarray
    """Meta-World's frame-stacking buffer after the reset."""
    obs: np.ndarray
    """The reset observation."""


class MetaWorldTask(MujocoPoolTask):
    """Batched Meta-World adaptation episodes; see the module docstring. Subclasses name the benchmark.

    State (leading batch axis B): ``task`` int64 [B] (index into :attr:`tasks`); ``physics`` float64 [B, S]
    (the MuJoCo integration state, zero-padded to the widest class); ``prev_frame`` float64 [B, 18]
    (Meta-World's frame-stacking buffer); ``obs`` float32 [B, 39] (the last observation); ``t`` int64 [B]
    (steps taken in the episode; the rollout in progress is ``t // rollout_steps``); ``success`` bool [B, R]
    (``info["success"]`` seen in rollout r); ``done`` and ``unstable`` bool [B].
    """

    num_actions = 0
    obs_dim = 39
    action_dim = 4
    action_low = -1.0
    action_high = 1.0

    def __init__(self, device: str | torch.device, benchmark: str, options: dict[str, Any]):
        super().__init__(device, options)
        split, rollouts, rollout_steps = options["split"], options["rollouts"], options["rollout_steps"]
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if rollouts < 1:
            raise ValueError(f"rollouts must be >= 1, got {rollouts}")
        _, self._mujoco = _import_metaworld()
        self.benchmark = build_benchmark(benchmark, int(options["benchmark_seed"]))
        self.split = split
        classes = self.benchmark.train_classes if split == "train" else self.benchmark.test_classes
        self.tasks = list(self.benchmark.train_tasks if split == "train" else self.benchmark.test_tasks)
        """The split's Meta-World tasks; ``state["task"]`` indexes this list."""
        self.class_names = list(classes)
        """The split's environment classes (Meta-World names such as ``"reach-v3"``), in the benchmark's order."""
        self._classes = [classes[name] for name in self.class_names]
        self._task_class = [self.class_names.index(task.env_name) for task in self.tasks]
        path_length = min(cls.max_path_length for cls in self._classes)
        if not 1 <= rollout_steps <= path_length:
            raise ValueError(f"rollout_steps must be in 1..{path_length} (Meta-World's max_path_length), "
                             f"got {rollout_steps}")
        self.rollouts, self.rollout_steps = int(rollouts), int(rollout_steps)
        self.max_steps = self.rollouts * self.rollout_steps
        self._spec = self._mujoco.mjtState.mjSTATE_INTEGRATION
        self._envs: list[dict[int, Any]] = [{} for _ in range(self.sim_threads)]
        """Per worker thread, per class: the env it steps episodes with."""
        self._current: list[dict[int, int]] = [{} for _ in range(self.sim_threads)]
        """Per worker thread, per class: the task its env is set to (-1: none)."""
        self._records: dict[int, _TaskRecord] = {}
        self._recorders = [cls() for cls in self._classes]
        """Per class: the env that Meta-World's ``set_task`` + ``reset`` run on to record a task."""
        self._state_size = [self._mujoco.mj_stateSize(env.model, self._spec) for env in self._recorders]
        self._state_width = max(self._state_size)
        self._use_fast_path: bool | None = None
        """Step the classes of ``metaworld_fast`` batched (None: decided on the first step, True where the C++
        stepper compiles); False steps every row through Meta-World's ``env.step``."""
        self._steppers: dict[int, FastStepper] = {}
        self._fast_params: dict[int, np.ndarray | None] = {}
        """Per task: its ``metaworld_fast.PARAMS`` [6, 3] when the batched step takes it, else None."""

    @classmethod
    def describe(cls, **options: Any) -> tuple[int, int, int, int]:
        """Without building the benchmark (ML10's takes tens of seconds)."""
        _import_metaworld()
        return cls.obs_dim, cls.num_actions, cls.action_dim, options["rollouts"] * options["rollout_steps"]

    # ------------------------------------------------------------------ episodes

    def reset(self, num_envs: int, generator: torch.Generator) -> tuple[TaskState, Tensor]:
        """``num_envs`` episodes, each of a task drawn uniformly from the split."""
        return self.reset_to(torch.randint(len(self.tasks), (num_envs,), generator=generator, device=self.device))

    def reset_to(self, task: Tensor) -> tuple[TaskState, Tensor]:
        """One episode of each task in ``task`` (int64 [B], indices into :attr:`tasks`), e.g. to evaluate every
        test task in turn."""
        task = task.to(self.device, torch.long)
        num_envs = task.shape[0]
        physics, frame, obs = self._reset_rows(task.tolist())
        flag = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        state = {
            "task": task,
            "physics": physics,
            "prev_frame": frame,
            "obs": obs,
            "t": torch.zeros(num_envs, dtype=torch.long, device=self.device),
            "success": torch.zeros(num_envs, self.rollouts, dtype=torch.bool, device=self.device),
            "done": flag,
            "unstable": flag.clone(),
        }
        return state, obs.clone()

    def step(self, state: TaskState, action: Tensor,
             generator: torch.Generator) -> tuple[TaskState, Tensor, Tensor, Tensor]:
        active = ~state["done"]
        tasks = state["task"].tolist()
        physics = state["physics"].cpu().numpy().copy()
        frame = state["prev_frame"].cpu().numpy().copy()
        path_length = (state["t"] % self.rollout_steps).cpu().numpy()
        sim = self._simulate(np.flatnonzero(active.cpu().numpy()), tasks, action.detach().cpu().numpy(),
                             physics, frame, path_length)
        dev = self.device
        obs = torch.from_numpy(sim["obs"]).to(dev)
        reward = torch.from_numpy(sim["reward"]).to(dev)
        finite = torch.isfinite(obs).all(1) & torch.isfinite(reward)
        unstable = active & (torch.from_numpy(sim["warned"]).to(dev) | ~finite)
        moved = active & ~unstable
        # Finished and unstable episodes keep their state from before this step.
        keep = (~moved)[:, None]
        physics = torch.where(keep, state["physics"], torch.from_numpy(physics).to(dev))
        frame = torch.where(keep, state["prev_frame"], torch.from_numpy(frame).to(dev))
        obs = torch.where(keep, state["obs"], obs.float())
        reward = torch.where(moved, reward, 0.0).float()
        in_rollout = torch.arange(self.rollouts, device=dev) == (state["t"] // self.rollout_steps)[:, None]
        success = state["success"] | (in_rollout & (moved & torch.from_numpy(sim["success"]).to(dev))[:, None])
        t = state["t"] + moved
        unstable = state["unstable"] | unstable
        done = state["done"] | unstable | (t >= self.max_steps)
        # A rollout ended and another follows: Meta-World resets the env (the agent keeps its state).
        boundary = moved & ~done & (t % self.rollout_steps == 0)
        if bool(boundary.any()):
            rows = boundary.nonzero().flatten()
            physics[rows], frame[rows], obs[rows] = self._reset_rows([tasks[i] for i in rows.tolist()])
        new = dict(state, physics=physics, prev_frame=frame, obs=obs, t=t, success=success, done=done,
                   unstable=unstable)
        return new, obs.clone(), reward, done

    def time_limit_reached(self, state: TaskState) -> Tensor:
        return state["done"] & ~state["unstable"]

    def state_metrics(self, state: TaskState) -> dict[str, Tensor]:
        """Per-episode success from the final state, float32 [B]: ``success`` (1 if ``info["success"]`` was
        reached in any rollout), ``success_fraction`` (the fraction of the episode's rollouts that reached it)
        and ``success_rollout_1`` ... ``success_rollout_R``. Rollouts an unstable episode never ran count as
        failures."""
        success = state["success"].float()
        per_rollout = {f"success_rollout_{r + 1}": success[:, r] for r in range(success.shape[1])}
        return {"success": success.amax(1), "success_fraction": success.mean(1), **per_rollout}

    def episode_groups(self, state: TaskState) -> dict[str, Tensor]:
        """With several classes in the split (ML10): the episodes of each class, by Meta-World name."""
        if len(self.class_names) == 1:
            return {}
        task_class = torch.tensor(self._task_class, device=state["task"].device)[state["task"]]
        return {name: task_class == c for c, name in enumerate(self.class_names)}

    def task_names(self, state: TaskState) -> list[str]:
        """The Meta-World class name of each episode's task."""
        return [self.tasks[i].env_name for i in state["task"].tolist()]

    # ------------------------------------------------------------------ simulation

    def _simulate(self, rows: np.ndarray, tasks: list[int], action: np.ndarray, physics: np.ndarray,
                  frame: np.ndarray, path_length: np.ndarray) -> dict[str, np.ndarray]:
        """One Meta-World step of each row in ``rows``; ``physics`` and ``frame`` are updated in place."""
        batch = len(physics)
        out = {"obs": np.zeros((batch, self.obs_dim)), "reward": np.zeros(batch), "success": np.zeros(batch, bool),
               "warned": np.zeros(batch, bool)}
        action = action.astype(np.float32)
        if self._use_fast_path is None:
            self._use_fast_path = mujoco_batch.available()
        if self._use_fast_path:
            rows = self._simulate_fast(rows, tasks, action, physics, frame, out)
        # Rows of one task stay together: a worker's env switches task once per task and step.
        rows = rows[np.argsort(np.asarray(tasks)[rows], kind="stable")]
        chunks = np.array_split(rows, len(self._envs))
        for worker, chunk in enumerate(chunks):  # envs and task records are made here, not in the threads
            for task in {tasks[i] for i in chunk}:
                self._record(task)
                self._env(worker, self._task_class[task])

        def work(worker: int) -> None:
            mujoco, spec = self._mujoco, self._spec
            for i in chunks[worker]:
                env = self._switch(worker, tasks[i])
                size = self._state_size[self._task_class[tasks[i]]]
                mujoco.mj_setState(env.model, env.data, physics[i, :size], spec)
                env._prev_obs = frame[i].copy()
                env.curr_path_length = int(path_length[i])
                warnings = env.data.warning.number  # a live view of MuJoCo's warning counters
                warnings[:] = 0
                obs, reward, _, _, info = env.step(action[i])
                out["obs"][i], out["reward"][i], out["success"][i] = obs, reward, info["success"] > 0
                out["warned"][i] = np.count_nonzero(warnings) > 0
                mujoco.mj_getState(env.model, env.data, physics[i, :size], spec)
                frame[i] = env._prev_obs

        self._run_workers(work)
        return out

    def _simulate_fast(self, rows: np.ndarray, tasks: list[int], action: np.ndarray, physics: np.ndarray,
                       frame: np.ndarray, out: dict[str, np.ndarray]) -> np.ndarray:
        """The rows whose task the batched step (``metaworld_fast``) takes, one class at a time, into ``out``;
        returns the other rows."""
        task = np.asarray(tasks, dtype=np.int64)[rows]
        fast = np.array([self._fast_task(t) is not None for t in task.tolist()], dtype=bool)
        classes = np.asarray(self._task_class)[task]
        for class_index in np.unique(classes[fast]).tolist():
            chosen = fast & (classes == class_index)
            picked, stepper = rows[chosen], self._steppers[class_index]
            table = np.stack([self._fast_params[t] for t in task[chosen].tolist()])
            size = stepper.state_size
            state, frames = physics[picked, :size], frame[picked]
            result = stepper.step(state, frames, action[picked], {name: table[:, k] for k, name in enumerate(PARAMS)})
            physics[picked, :size], frame[picked] = state, frames
            for name, value in result.items():
                out[name][picked] = value
        return rows[~fast]

    def _fast_task(self, task: int) -> np.ndarray | None:
        """``task``'s row of step parameters when the batched step takes it (decided once per task), else None."""
        if task not in self._fast_params:
            class_index = self._task_class[task]
            params = None
            if self.class_names[class_index] in REWARDS:
                if class_index not in self._steppers:
                    self._steppers[class_index] = FastStepper(self._env(0, class_index), self.class_names[class_index],
                                                              self._spec, self.sim_threads)
                record = self._record(task)
                if self._steppers[class_index].accepts(record.attrs, record.model):
                    params = np.stack([np.asarray(record.attrs[name], dtype=np.float64) for name in PARAMS])
            self._fast_params[task] = params
        return self._fast_params[task]

    def _env(self, worker: int, class_index: int):
        """The env of ``worker`` for a class, built on first use. One real ``set_task`` + ``reset`` gives it the
        attributes Meta-World's reset makes views of the env's own simulation (see ``_plain``); from then on it
        is set to a task only by restoring that task's record."""
        envs = self._envs[worker]
        if class_index not in envs:
            env = self._classes[class_index]()
            env.set_task(self.tasks[self._task_class.index(class_index)])
            env.reset()
            envs[class_index] = env
            self._current[worker][class_index] = -1
        return envs[class_index]

    def _record(self, task: int) -> _TaskRecord:
        """What Meta-World's ``set_task`` + ``reset`` leave in an env for ``task``, recorded the first time."""
        if task not in self._records:
            class_index = self._task_class[task]
            env = self._recorders[class_index]
            env.set_task(self.tasks[task])
            obs, _ = env.reset()
            model = {name: getattr(env.model, name).copy() for name in TASK_MODEL_FIELDS}
            attrs = {name: value for name, value in vars(env).items() if _plain(value)}
            physics = np.zeros(self._state_size[class_index])
            self._mujoco.mj_getState(env.model, env.data, physics, self._spec)
            self._records[task] = _TaskRecord(copy.deepcopy(attrs), model, physics, env._prev_obs.copy(),
                                              obs.astype(np.float32))
        return self._records[task]

    def _switch(self, worker: int, task: int):
        """The env of ``worker`` for ``task``'s class, set to ``task``: as if by ``set_task`` + ``reset`` (the
        recorded attributes and model arrays restored; the MuJoCo state is loaded per episode)."""
        class_index = self._task_class[task]
        env = self._envs[worker][class_index]
        current = self._current[worker][class_index]
        if current != task:
            record = self._records[task]
            for name, value in record.model.items():
                getattr(env.model, name)[...] = value
            env.__dict__.update(copy.deepcopy(record.attrs))
            self._current[worker][class_index] = task
        return env

    def _reset_rows(self, tasks: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """(physics, frame buffer, observation) of Meta-World's reset for each task in ``tasks``."""
        records = [self._record(task) for task in tasks]
        physics = np.zeros((len(tasks), self._state_width))
        for row, record in enumerate(records):
            physics[row, :len(record.physics)] = record.physics
        frame = np.stack([r.frame for r in records]) if records else np.zeros((0, OBS_FRAME))
        obs = np.stack([r.obs for r in records]) if records else np.zeros((0, self.obs_dim))
        dev = self.device
        return (torch.from_numpy(physics).to(dev), torch.from_numpy(frame).to(dev),
                torch.from_numpy(obs).to(dev, torch.float32))


def _plain(value) -> bool:
    """Plain data (numbers, strings, arrays and containers of them): the env attributes a task record keeps.

    The rest (model, data, renderer, spaces, RNG) is the same for every task of a class. So are arrays that view
    MuJoCo's memory: Meta-World keeps some live views of its simulation (``init_left_pad`` / ``init_right_pad``
    are ``data.body(...).xpos``, so they follow the pads; basketball's ``_target_pos`` is the goal site's
    ``xpos``); each env keeps its own, which follow the episode loaded into it, as they would in Meta-World."""
    if isinstance(value, np.ndarray):
        base = value
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        return base is value or isinstance(base, np.ndarray)  # owns its data, or views another array
    if isinstance(value, (np.generic, bool, int, float, str, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class MetaWorldML1Task(MetaWorldTask):
    """ML1: one Meta-World class (``env_name``), 50 training and 50 held-out goals."""

    def __init__(self, device: str | torch.device = "cpu", *, env_name: str = "reach-v3", split: str = "train",
                 rollouts: int = 10, rollout_steps: int = 500, benchmark_seed: int = 0, sim_threads: int = 1):
        metaworld, _ = _import_metaworld()
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"env_name must be a Meta-World v3 environment (e.g. 'reach-v3'), got {env_name!r}")
        options = {"env_name": env_name, "split": split, "rollouts": rollouts, "rollout_steps": rollout_steps,
                   "benchmark_seed": benchmark_seed, "sim_threads": sim_threads}
        super().__init__(device, f"ML1:{env_name}", options)


class MetaWorldML10Task(MetaWorldTask):
    """ML10: 10 training classes, 5 held-out test classes, 50 goals each."""

    def __init__(self, device: str | torch.device = "cpu", *, split: str = "train", rollouts: int = 10,
                 rollout_steps: int = 500, benchmark_seed: int = 0, sim_threads: int = 1):
        options = {"split": split, "rollouts": rollouts, "rollout_steps": rollout_steps,
                   "benchmark_seed": benchmark_seed, "sim_threads": sim_threads}
        super().__init__(device, "ML10", options)
