"""Population evaluation on MuJoCo (ant-dir): env-steps/s of the ways one could score a population.

Every row scores the same population -- P = ``--popsize`` (16) MetODS individuals x E = ``--episodes`` (4)
episodes of at most T = ``--steps`` (200) steps, greedy (mean) actions clipped into [-1, 1] -- with the same
model code and the same theta ``[P, D]`` (``model.init_params`` + 0.1 randn, seeded):

* **one-by-one** (the reference of the ratios): P x E gymnasium ``Ant-v5`` envs (``gymnasium.make``, with its
  TimeLimit at T) stepped one at a time in a Python loop; the model still makes ONE batched forward per step
  for all P x E agents. Only the simulator side is one by one, so the ratio isolates the simulator batching.
* **one-by-one, model too** (context): the same loop with the model also called per agent (P = 1, E = 1).
* **batched, k sim threads**: ``metods_evo.rollout.rollout`` on ``make_task("ant-dir", sim_threads=k)``:
  the P x E MuJoCo states stepped as one batch per step, split over k threads (``mj_step`` drops the GIL).
  Once fewer than half the agents are alive the rollout steps only the live ones (compaction); the row
  "finished agents still stepped" (``compact=False``) shows what that saves.
* **Ray, 2 actors**: ``MetODSProblem`` with ``es.num_actors=2`` (one torch thread and one sim thread each):
  evotorch hands each actor half the population, each scores its half with the batched rollout.
* **evotorch VecGymNE** (the anchor a user would otherwise pick): ``VecGymNE`` scoring the same theta with
  ``num_episodes=E``, on ``gymnasium.make_vec("Ant-v5", num_envs=P, vectorization_mode="sync")`` and on
  evotorch's own ``SyncVectorEnv`` of ``gymnasium.make("Ant-v5")`` envs (what ``VecGymNE("Ant-v5", ...)``
  builds; unlike gymnasium's, it stops simulating an env once its E episodes are done). The model is wrapped
  as its policy (``MetODSPolicy``): the module's parameters are theta's tensors in the same order (so a flat
  vector means the same weights), and W is the recurrent state that evotorch's ``Policy`` carries per env
  (vmapped over the envs) and zeroes when that env's episode ends (``Policy.reset(done)``; W0 = 0 is the
  model's default). MetODS also reads the previous action and reward, which a policy only gets through the
  observation: a gymnasium wrapper (``PreviousActionReward``) appends them. gymnasium's vector env resets a
  finished episode in the same step (``AutoresetMode.SAME_STEP``, what VecGymNE's episode counting assumes).
  VecGymNE runs one env per individual and its E episodes one after the other, as it does for any policy.

The gymnasium rows run plain ``Ant-v5`` (its forward reward, no hidden direction): that is not ant-dir's
reward, which does not matter for speed -- the physics, termination and observation are the same.
``tests/test_locomotion.py`` proves the batched ant-dir equals gymnasium's Ant-v5 stepped one by one. A
same-model check (printed) runs the policy wrapper and ``model.step`` on the same inputs.

Work is counted as env steps actually taken by live episodes, compared as env-steps/s. Ant-v5 ends an
episode when the ant is unhealthy (torso height out of [0.2, 1.0]), and a near-initial theta flails enough to
end many episodes early; the gymnasium rows draw their initial states from gymnasium's seeding, the ant-dir
rows from the torch generator, so the rows' step counts differ somewhat. All rows use one torch thread per
process. After an untimed warm-up of every row (which also starts Ray's actors), ``--repeats`` rounds run the
rows interleaved, so that load from other jobs on a shared machine hits all rows alike; the table shows each
row's median. The target of issue #6: batched on 2 cores >= 2x the one-by-one loop, and ahead of VecGymNE.
The verdict lines report, never assert; the script exits 0 either way.

Run::

    python benchmarks/mujoco_eval.py                      # P=16 x E=4 x 200 steps, 3 repeats: a few minutes
    python benchmarks/mujoco_eval.py --steps 100 --repeats 5 --json
    python benchmarks/mujoco_eval.py --no-ray             # without the Ray row (and its ~30 s start-up)
    python benchmarks/mujoco_eval.py --vecgymne evotorch  # one VecGymNE row only (the slowest rows)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from metods_evo.config import make_config
from metods_evo.models import build_model
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task

GYM_ID = "Ant-v5"
TASK = "ant-dir"
TARGET_OVER_ONE_BY_ONE = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--popsize", type=int, default=16, help="individuals P")
    p.add_argument("--episodes", type=int, default=4, help="episodes E per individual")
    p.add_argument("--steps", type=int, default=200, help="episode length T (ant-dir's is 200)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of all rows (interleaved; median shown)")
    p.add_argument("--n", type=int, default=20, help="neurons of the plastic layer")
    p.add_argument("--depth", type=int, default=3, help="read / write recursion depth S")
    p.add_argument("--seed", type=int, default=0, help="seed of theta and of the episodes")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    p.add_argument("--vecgymne", choices=["both", "make_vec", "evotorch", "none"], default="both",
                   help="VecGymNE rows: on gymnasium.make_vec, on evotorch's own SyncVectorEnv, both or none")
    p.add_argument("--no-model-loop", action="store_true", help="skip the 'one-by-one, model too' row")
    p.add_argument("--json", action="store_true", help="also print a machine-readable JSON dict")
    args = p.parse_args(argv)
    for name in ("popsize", "episodes", "steps", "repeats", "n", "depth"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------- gymnasium rows

def one_by_one(model, params: dict, envs: list, args, seed: int, *, model_per_agent: bool) -> int:
    """P x E gymnasium envs stepped one at a time; the model batched over all agents (or, with
    ``model_per_agent``, called once per agent). Returns the env steps taken."""
    pop, episodes = args.popsize, args.episodes
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    state = model.initial_state(params, episodes)
    prev_action = torch.zeros(pop, episodes, model.action_dim)
    prev_reward = torch.zeros(pop, episodes)
    alive = np.ones(len(envs), dtype=bool)
    agents = [(p, e) for p in range(pop) for e in range(episodes)]
    steps = 0
    for _ in range(args.steps):
        obs_t = torch.as_tensor(obs, dtype=torch.float32).view(pop, episodes, -1)
        if model_per_agent:
            mean = torch.zeros(pop, episodes, model.action_dim)
            for p, e in agents:
                if alive[p * episodes + e]:
                    one = {k: v[p:p + 1] for k, v in params.items()}
                    out, _, new = model.step(one, {"W": state["W"][p:p + 1, e:e + 1]}, obs_t[p:p + 1, e:e + 1],
                                             prev_action[p:p + 1, e:e + 1], prev_reward[p:p + 1, e:e + 1])
                    state["W"][p, e] = new["W"][0, 0]
                    mean[p, e] = out[0, 0]
        else:
            mean, _, state = model.step(params, state, obs_t, prev_action, prev_reward)
        action = mean.clamp(-1.0, 1.0)
        flat_action = action.view(len(envs), -1).numpy()
        reward = np.zeros(len(envs))
        for i, env in enumerate(envs):
            if alive[i]:
                obs[i], reward[i], terminated, truncated, _ = env.step(flat_action[i])
                steps += 1
                alive[i] = not (terminated or truncated)
        prev_action, prev_reward = action, torch.as_tensor(reward, dtype=torch.float32).view(pop, episodes)
        if not alive.any():
            break
    return steps


# ---------------------------------------------------------------------------------------------- VecGymNE row

def make_wrappers():
    """``PreviousActionReward`` (gymnasium wrapper) and ``MetODSPolicy`` (torch module), built on first use."""
    import gymnasium

    class PreviousActionReward(gymnasium.Wrapper):
        """Appends the previous action (clipped, as applied) and reward to the observation, zeros at reset:
        the inputs MetODS's f reads besides the observation, which a VecGymNE policy only sees through it."""

        def __init__(self, env):
            super().__init__(env)
            obs_space, act_space = env.observation_space, env.action_space
            self.low, self.high = act_space.low, act_space.high
            self.observation_space = gymnasium.spaces.Box(
                np.concatenate([obs_space.low, self.low, [-np.inf]]),
                np.concatenate([obs_space.high, self.high, [np.inf]]), dtype=np.float64)
            self.none = np.zeros(act_space.shape[0] + 1)

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return np.concatenate([obs, self.none]), info

        def step(self, action):
            action = np.clip(action, self.low, self.high)
            obs, reward, terminated, truncated, info = self.env.step(action)
            return np.concatenate([obs, action, [reward]]), reward, terminated, truncated, info

    class MetODSPolicy(torch.nn.Module):
        """The MetODS model as one evotorch policy: ``forward(x, W=None) -> (mean action, W)`` for ONE agent
        (evotorch vmaps it over the envs), x = [obs, previous action, previous reward]."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            for name, shape in zip(model.spec.names, model.spec.shapes):  # theta's order: same flat layout
                self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))

        def forward(self, x: torch.Tensor, w: torch.Tensor | None = None):
            model, n = self.model, self.model.cfg.n
            params = {name: getattr(self, name).unsqueeze(0) for name in model.spec.names}  # P = 1
            obs, prev_action, prev_reward = x.split([model.obs_dim, model.action_dim, 1], -1)
            if w is None:  # the first step; evotorch zeroes W itself when an episode ends
                w = x.new_zeros(n, n)
            # Grad mode picks the model's out-of-place kernels: vmap has batching rules for them, while the
            # in-place ones of the no-grad path (addcmul_, clamp_) fall back to a slow per-env loop. No input
            # requires grad, so autograd records nothing.
            with torch.enable_grad():
                mean, _, state = model.step(params, {"W": w.view(1, 1, n, n)}, obs.view(1, 1, -1),
                                            prev_action.view(1, 1, -1), prev_reward.view(1, 1))
            return mean.view(-1), state["W"].view(n, n)

    return PreviousActionReward, MetODSPolicy


def make_vecgymne(model, args, vector_env: str):
    """VecGymNE on ``gymnasium.make_vec`` (``vector_env="make_vec"``) or on evotorch's own ``SyncVectorEnv``
    (``"evotorch"``: what ``VecGymNE("Ant-v5", ...)`` builds, which stops stepping an env after its E-th
    episode; gymnasium's steps every env until the last one is done, and VecGymNE discards those steps)."""
    import gymnasium
    from evotorch.neuroevolution import VecGymNE
    from evotorch.neuroevolution.net.vecrl import SyncVectorEnv

    wrapper, policy_class = make_wrappers()

    def make_env(num_envs: int):
        if vector_env == "make_vec":
            return gymnasium.make_vec(GYM_ID, num_envs=num_envs, vectorization_mode="sync", wrappers=[wrapper],
                                      vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
                                      max_episode_steps=args.steps)
        return SyncVectorEnv([lambda: wrapper(gymnasium.make(GYM_ID, max_episode_steps=args.steps))] * num_envs,
                             empty_info=True, num_episodes=args.episodes)

    problem = VecGymNE(make_env, policy_class(model), num_episodes=args.episodes, device="cpu", num_actors=0)
    return problem, policy_class


def same_model_check(model, policy_class, theta: torch.Tensor, generator: torch.Generator) -> float:
    """Max |difference| of the mean actions of the VecGymNE wrapper (through evotorch's functional module,
    vmapped over individuals as VecGymNE calls it) and ``model.step``, over 5 steps of random inputs. Both run the
    eager step: the preset's ``model.fused`` hands ``model.step`` to the fused kernel, which agrees to rounding."""
    from evotorch.neuroevolution.net.functional import make_functional_module

    model = type(model)(dataclasses.replace(model.cfg, fused="off"), model.obs_dim, model.num_actions,
                        model.action_dim)
    fmodule = make_functional_module(policy_class(model))
    pop = theta.shape[0]
    params = model.spec.unflatten(theta)
    state, w, worst = model.initial_state(params, 1), None, 0.0
    for _ in range(5):
        x = torch.randn(pop, model.obs_dim + model.action_dim + 1, generator=generator)
        obs, prev_action, prev_reward = x.split([model.obs_dim, model.action_dim, 1], -1)
        ref, _, state = model.step(params, state, obs[:, None], prev_action[:, None], prev_reward[:, None, 0])
        args = (theta, x) if w is None else (theta, x, w)
        out, w = torch.func.vmap(fmodule)(*args)
        worst = max(worst, float((out - ref[:, 0]).abs().max()), float((w - state["W"][:, 0]).abs().max()))
    return worst


# ---------------------------------------------------------------------------------------------- the run

def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """(env steps, wall seconds, CPU seconds of this process: all its threads, not Ray's actor processes)."""
    start, cpu = time.perf_counter(), time.process_time()
    steps = fn()
    return steps, time.perf_counter() - start, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import gymnasium
    from evotorch import SolutionBatch

    logging.getLogger("evotorch").setLevel(logging.WARNING)  # its INFO lines about every problem it builds

    overrides = {"model.n": args.n, "model.depth": args.depth, "es.popsize": args.popsize,
                 "es.episodes": args.episodes, "task.episode_steps": args.steps, "seed": args.seed}
    cfg = make_config(TASK, "es", {k: str(v) for k, v in overrides.items()})
    tasks = {k: make_task(TASK, sim_threads=k, episode_steps=args.steps) for k in (1, 2)}
    model = build_model(cfg, tasks[1])
    gen = torch.Generator().manual_seed(args.seed)
    base = model.init_params(gen)
    theta = base + 0.1 * torch.randn(args.popsize, base.numel(), generator=gen)  # [P, D]
    params = model.spec.unflatten(theta)
    envs = [gymnasium.make(GYM_ID, max_episode_steps=args.steps) for _ in range(args.popsize * args.episodes)]
    pe = f"P={args.popsize} x E={args.episodes}"

    # name -> (function returning env steps, label, processes x torch threads, simulator threads)
    rows: dict[str, tuple[Callable[[], int], str, str, str]] = {}
    rows["one_by_one"] = (lambda: one_by_one(model, params, envs, args, args.seed, model_per_agent=False),
                          f"one-by-one: {args.popsize * args.episodes} gymnasium {GYM_ID} envs looped, "
                          "model batched", "1 x 1", "1")
    if not args.no_model_loop:
        rows["one_by_one_model_too"] = (
            lambda: one_by_one(model, params, envs, args, args.seed, model_per_agent=True),
            "one-by-one, model too: envs and agents looped", "1 x 1", "1")
    for k, task in tasks.items():
        rows[f"batched_{k}"] = (
            lambda task=task: rollout(model, params, task, args.episodes,
                                      torch.Generator().manual_seed(args.seed)).env_steps,
            f"batched rollout, {pe} in one call, {k} sim thread{'s' * (k > 1)}", "1 x 1", str(k))
    rows["batched_2_full"] = (
        lambda: rollout(model, params, tasks[2], args.episodes, torch.Generator().manual_seed(args.seed),
                        compact=False).env_steps,
        f"batched rollout, {pe}, 2 sim threads, finished agents still stepped", "1 x 1", "2")

    ray_started, problems = False, []
    if not args.no_ray:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_started = True
        from metods_evo.optimizers.es import MetODSProblem

        ray_cfg = make_config(TASK, "es", {**{k: str(v) for k, v in overrides.items()}, "es.num_actors": "2",
                                           "es.threads_per_actor": "1"})
        ray_problem = MetODSProblem(ray_cfg)
        problems.append(ray_problem)
        ray_batch = SolutionBatch(ray_problem, popsize=args.popsize, empty=True)
        ray_batch.set_values(theta)

        def ray_row() -> int:
            ray_problem.round = 0  # the same generation seed as the in-process rows
            ray_problem.evaluate(ray_batch)
            steps, ray_problem.pending_env_steps = ray_problem.pending_env_steps, 0
            return steps

        rows["ray_2"] = (ray_row, "Ray: MetODSProblem, 2 actors x half the population", "2 x 1", "1 per actor")

    vector_envs = {"both": ["make_vec", "evotorch"], "none": []}.get(args.vecgymne, [args.vecgymne])
    for vector_env in vector_envs:
        vec_problem, policy_class = make_vecgymne(model, args, vector_env)
        vec_batch = SolutionBatch(vec_problem, popsize=args.popsize, empty=True)
        vec_batch.set_values(theta)

        def vecgymne_row(problem=vec_problem, batch=vec_batch) -> int:
            before = problem.interaction_count
            problem.evaluate(batch)
            return problem.interaction_count - before

        where = f"gymnasium.make_vec({GYM_ID})" if vector_env == "make_vec" else "evotorch's SyncVectorEnv"
        rows[f"vecgymne_{vector_env}"] = (vecgymne_row, f"evotorch VecGymNE on {where}, {args.popsize} envs x "
                                                        f"{args.episodes} episodes", "1 x 1", "1")

    samples: dict[str, list[tuple[int, float, float]]] = {k: [] for k in rows}
    wall_start = time.perf_counter()
    model_check = None
    try:
        with torch.no_grad():
            if vector_envs:
                model_check = same_model_check(model, policy_class, theta, torch.Generator().manual_seed(1))
            for fn, *_ in rows.values():  # warm-up: builds the vector env, starts Ray's actors
                fn()
            for _ in range(args.repeats):
                for name, (fn, *_) in rows.items():
                    samples[name].append(timed(fn))
    finally:
        for problem in problems:
            problem.kill_actors()
        if ray_started:
            import ray

            ray.shutdown()
    wall = time.perf_counter() - wall_start

    results = {}
    for name, (_, label, procs, sim) in rows.items():
        rates = [steps / secs for steps, secs, _ in samples[name]]
        median = statistics.median(rates)
        steps, secs, _ = min(samples[name], key=lambda s: abs(s[0] / s[1] - median))  # the median run
        # Per CPU second of this process: what load from other jobs changes least (not meaningful for Ray).
        per_cpu = None if name.startswith("ray") else statistics.median(s[0] / s[2] for s in samples[name])
        results[name] = {"label": label, "processes_x_torch_threads": procs, "sim_threads": sim, "env_steps": steps,
                         "seconds": secs, "env_steps_per_s": median, "all_env_steps_per_s": rates,
                         "env_steps_per_cpu_s": per_cpu}
    reference = results["one_by_one"]["env_steps_per_s"]
    for row in results.values():
        row["ratio_over_one_by_one"] = row["env_steps_per_s"] / reference

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"MuJoCo population eval benchmark: {TASK} / {GYM_ID}, {pe} episodes of <= {args.steps} steps, MetODS "
          f"n={args.n} depth={args.depth} ({model.num_params} params), greedy actions, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end, {args.repeats} interleaved repeats (median)")
    header = (f"{'row':<72} {'procs x thr':>11} {'sim thr':>11} {'env steps':>9} {'seconds':>8} "
              f"{'env-steps/s':>11} {'ratio':>7} {'per CPU-s':>9}")
    print(header)
    print("-" * len(header))
    for row in results.values():
        per_cpu = "-" if row["env_steps_per_cpu_s"] is None else f"{row['env_steps_per_cpu_s']:.0f}"
        print(f"{row['label']:<72} {row['processes_x_torch_threads']:>11} {row['sim_threads']:>11} "
              f"{row['env_steps']:>9} {row['seconds']:>8.2f} {row['env_steps_per_s']:>11.0f} "
              f"{row['ratio_over_one_by_one']:>6.2f}x {per_cpu:>9}")
    print("ratio = env-steps/s over the one-by-one row's; env steps and seconds are those of the median run; "
          "per CPU-s = env steps per CPU second of this process (all its threads; '-': work done in Ray's actors)")
    print(f"note: the gymnasium rows (one-by-one, VecGymNE) run plain {GYM_ID}, whose reward is not ant-dir's "
          "(no hidden direction); for speed that does not matter: same physics, observation and termination")
    if model_check is not None:
        print(f"same-model check: VecGymNE policy wrapper vs model.step, max |diff| of actions and W = "
              f"{model_check:.3g}")
    two_core = max(results[k]["env_steps_per_s"] for k in ("batched_2", "ray_2") if k in results)
    verdict = two_core / reference
    print(f"best on 2 cores (batched 2 sim threads or Ray) / one-by-one: {verdict:.2f}x "
          f"(target >= {TARGET_OVER_ONE_BY_ONE:.0f}x): {'PASS' if verdict >= TARGET_OVER_ONE_BY_ONE else 'FAIL'}")
    vec_rows = [k for k in results if k.startswith("vecgymne")]
    if vec_rows:
        fastest = max(vec_rows, key=lambda k: results[k]["env_steps_per_s"])
        vec = results[fastest]["env_steps_per_s"]
        print(f"against the faster VecGymNE row ({fastest}): batched 1 sim thread / VecGymNE (both one core) "
              f"{results['batched_1']['env_steps_per_s'] / vec:.2f}x; best on 2 cores / VecGymNE {two_core / vec:.2f}x "
              f"(target > 1): {'PASS' if two_core > vec else 'FAIL'}")
    print(f"total wall time (warm-up and Ray start included): {wall:.0f} s")
    if args.json:
        print(json.dumps({"config": vars(args), "num_params": model.num_params, "torch": torch.__version__,
                          "cpus": os.cpu_count(), "load_average_end": load, "rows": results,
                          "same_model_max_abs_diff": model_check, "best_two_core_over_one_by_one": verdict,
                          "wall_seconds": wall}, indent=2))
    for env in envs:
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
