"""Typed run configuration and ``--set key=value`` overrides.

A run is fully described by one ``RunConfig`` (saved as ``config.json`` in its run directory).
Task options are the keyword arguments of the task's class, validated against the registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metods_evo.errors import ConfigError
from metods_evo.models import MODELS, build_model, model_class
from metods_evo.optimizers import OPTIMIZERS, declaration
from metods_evo.tasks import TASKS, make_task


def generation_seed(seed: int, generation: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, generation, stream): episode sampling needs no state to resume."""
    return (seed * 1_000_003 + generation * 7919 + stream * 104_729) % (2**63 - 1)


@dataclass
class RL2Config:
    """RL² (``model.kind=rl2``): a GRU over the same inputs as MetODS, its hidden state the memory."""

    hidden: int = 64
    """GRU units."""


@dataclass
class MAMLConfig:
    """MAML (``model.kind=maml``): an MLP policy adapted within each episode by REINFORCE steps on its first
    transitions."""

    hidden: int = 64
    """Width of each of the MLP policy's two hidden layers."""
    adapt_steps: int = 2
    """K. Steps 0..K-1 of each episode are played with the meta-learnt initialization, then every agent adapts on its
    own K transitions and plays the rest with its adapted weights. Task-specific: 2 is one Harlow trial played at full
    speed (its first reward lands at step 1); longer tasks want more (maze ~50). A K past the episode's end never
    adapts (a plain MLP policy)."""
    inner_steps: int = 1
    """REINFORCE steps of the inner loop, all on the same K transitions."""
    inner_lr: float = 0.1
    """Step size of the inner steps, on the per-step mean of log pi(a_t|s_t) * (reward-to-go within K)."""
    first_order: bool = False
    """Drop the second-order terms (FOMAML) when the outer loop differentiates through the inner step; ES never
    differentiates, so this only matters for a2c / ppo / hybrid."""


@dataclass
class PEARLModelConfig:
    """PEARL's networks (``model.kind=pearl``, trained by ``--optimizer pearl``): the context encoder, the policy and
    the trainer's critics are ReLU MLPs of this size. Published (Rakelly et al. 2019, oyster's configs/default.py):
    3 x 300 units (policy, critics), 3 x 200 (encoder); smaller here for a 2-core budget (docs/optimizers.md)."""

    hidden: int = 128
    """Units of each hidden layer."""
    layers: int = 3
    """Hidden layers of each network."""
    latent_dim: int = 5
    """Dimensions of the latent task variable z (published: 5)."""


@dataclass
class ModelConfig:
    kind: str = "metods"
    """Which registered model (``metods_evo.models.MODELS``): metods | rl2 | maml | pearl | random. ``model.rl2.*``,
    ``model.maml.*`` and ``model.pearl.*`` configure those baselines; the other fields configure MetODS."""
    n: int = 20
    """Number of neurons in the plastic layer (W is n x n)."""
    depth: int = 3
    """Recursion depth S of the read / write steps per environment step."""
    activation: str = "tanh"
    """Element-wise non-linearity sigma of the read: tanh | relu | sigmoid | identity."""
    alpha: str = "matrix"
    """Plasticity: 'matrix' (one learnt rate per synapse) or 'scalar' (the 'no alpha' ablation)."""
    write: str = "hebbian"
    """Write rule: 'hebbian' alpha*(v x v), 'linear' alpha*(v x Lv), 'mlp' alpha*(v x MLP(v))."""
    write_hidden: int = 16
    """Hidden units of the 'mlp' write rule."""
    write_pre: str = "current"
    """Which vector the write's right-hand (presynaptic) factor u(.) is taken of: 'current' (the paper: the write at
    level s stores v_{s-1} (x) u(v_{s-1}), an auto-association within one env step) or 'previous' (beyond the paper:
    v_{s-1} (x) u(v_{s-1} of the previous env step), a pre-before-post, heteroassociative write, so that reading W
    with the current input recalls what followed it before; the vectors of the previous step are carried in the
    state, zero at an episode's start)."""
    feedback: str = "none"
    """What the layer's output feeds back into the next step's input (beyond the paper): 'none' (the paper:
    v0 = f(s_t, a_{t-1}, r_{t-1})) or 'diagonal' (v0 = sigma(F x_t + b + c * v_S^(t-1)), one learnt leak c_i per
    neuron, zero at init, v_S^(t-1) carried in the state as ``out``, zero at an episode's start): the key that reads W
    then holds the previous step's output (its read of W) besides the current input, where a 3x3 maze view alone
    cannot tell look-alike corridors apart. No recurrent weight matrix: every mixing of neurons across time still goes
    through the plastic W (docs/results.md, the maze table)."""
    w0: str = "zero"
    """Initial plastic weights W0: 'zero', 'learnt' (part of theta) or 'random' (N(0, w0_std^2) per episode)."""
    w0_std: float = 0.1
    """Standard deviation of W0 when w0='random'."""
    plastic_bound: float = 5.0
    """|W| is clipped to this after every write, so plastic weights cannot blow up; 0 disables."""
    embed_hidden: int = 0
    """Hidden units of the input embedding f (0: one linear layer + sigma)."""
    readout_hidden: int = 0
    """Hidden units of the read-out g (0: policy and value linear in v_S; else both read sigma(G v_S + b))."""
    action_reward_inputs: bool = False
    """Also feed f the product prev_action * prev_reward (per action), so "which choice paid what" is a
    linear feature instead of an XOR that f would have to learn."""
    fused: str = "auto"
    """The fused C++ CPU kernel for the no-grad plastic step (ES, evaluation; ``metods_evo/models/fused.py``):
    'auto' where W has >= 2^20 elements (the default ES population) and the kernel compiles; 'any-size' at every
    size where it compiles (small batches too: MuJoCo tasks, whose runs are long enough to repay the first
    compile); 'on' wherever supported (an error if it cannot compile); 'off' always the eager step. The hebbian and
    linear writes (the mlp write always takes the eager step). It agrees with the eager step to float32 rounding,
    not bitwise; the choice depends on shapes only, so a run (and its resume) always takes the same path."""
    rl2: RL2Config = field(default_factory=RL2Config)
    """The RL² baseline's settings (``model.kind=rl2``)."""
    maml: MAMLConfig = field(default_factory=MAMLConfig)
    """The MAML baseline's settings (``model.kind=maml``)."""
    pearl: PEARLModelConfig = field(default_factory=PEARLModelConfig)
    """PEARL's network sizes (``model.kind=pearl``)."""


@dataclass
class ESConfig:
    algorithm: str = "pgpe"
    """evotorch search algorithm: pgpe (with ClipUp) | snes | cem | cmaes (diagonal covariance) | cmaes-full | xnes
    (full covariance: memory and time grow with the square of theta's length, and more)."""
    popsize: int = 256
    """Population size (PGPE samples symmetric pairs, so it must be even)."""
    episodes: int = 16
    """Episodes per individual per generation; all individuals see the same sampled tasks."""
    late_episodes: int = 0
    """Episodes per individual from generation ``late_from`` on (0: keep ``episodes``). Once a policy is
    nearly right, the remaining errors are rare events that 16 episodes seldom show; more episodes late
    make the fitness precise enough to remove them without paying for it from the start."""
    late_from: int = 0
    """First generation (0-based) that uses ``late_episodes`` and ``late_sigma``."""
    late_sigma: float = 0.0
    """Upper bound on the search distribution's standard deviation from generation ``late_from`` on (0: none; pgpe,
    snes, cem). The step sizes of a searcher in hundreds of dimensions hardly adapt on their own; near a sharp
    optimum a sigma that explored well averages the agent with far worse neighbours, and a smaller one finds its
    remaining errors."""
    sigma_init: float = 0.3
    """Initial standard deviation of the search distribution."""
    center_lr: float = 0.0
    """Learning rate of the center; 0 = the algorithm's default (PGPE: ClipUp step size 0.2; SNES: evotorch's)."""
    max_speed: float = 0.0
    """PGPE ClipUp maximum speed (0: twice center_lr, as recommended by ClipUp)."""
    stdev_lr: float = 0.0
    """Learning rate of the standard deviation; 0 = the algorithm's default (PGPE: 0.1; SNES: evotorch's)."""
    stdev_max_change: float = 0.2
    """PGPE: maximum relative change of sigma per generation."""
    parenthood_ratio: float = 0.25
    """CEM: fraction of the population used as parents."""
    action_mode: str = "greedy"
    """How actions are chosen while scoring: 'greedy' (argmax) or 'sample'."""
    ties: str = "index"
    """How equal fitnesses are ranked: 'index' (evotorch's ranking: by the sample's place in the population, a random
    order for independent samples), 'random' (explicitly at random, seeded per generation: a diagnostic) or 'average'
    (equal fitness, equal utility: tied samples give the center no direction)."""
    starts: int = 1
    """Independent searchers, each from its own initial theta, stepped side by side until generation
    ``es.select_at``; then the one whose center scores best on the evaluation episodes goes on alone. A run then
    fails only if every start does (or the selection picks a start that later stalls)."""
    select_at: int = 0
    """Generation at which the best of ``es.starts`` is kept and the others dropped (0: keep every start to the end,
    the run standing for the first)."""
    start_episodes: str = "shared"
    """Which episodes the ``es.starts`` searchers are scored on: 'shared' (every start the run's episodes of the
    generation) or 'own' (each start its own stream; the first start's is the run's). Shared episodes tie the starts'
    fates together: a run of unlucky episodes holds every start on the same plateau."""
    antithetic: str = "off"
    """Score every individual on antithetic pairs of episodes (``Task.mirror``: the same episode with the hidden task
    parameter reversed, e.g. Harlow's other object paying, the other direction): 'auto' where the task has such
    twins, 'on' (an error where it has none), 'late' (as 'auto', from generation ``late_from`` on) or 'off'.
    Unbiased, and the luck of an episode (Harlow's first guess) cancels within each pair, leaving the fitness to what
    the agent does with what it learnt."""
    num_actors: int = 0
    """Ray actors to spread the population over (0: evaluate in this process)."""
    threads_per_actor: int = 1
    """torch threads inside each Ray actor (keeps actors x threads <= cores)."""


@dataclass
class PGConfig:
    """Settings shared by the policy-gradient optimizers (BPTT through the plastic dynamics, P = 1)."""

    episodes: int = 256
    """Episodes per update (a batch of whole episodes, each from its own plastic-state reset)."""
    lr: float = 3e-3
    """Adam learning rate."""
    lr_schedule: str = "linear"
    """'linear' anneals the learning rate to 0 at the end of the run; 'constant' keeps it."""
    adam_eps: float = 1e-5
    gamma: float = 0.9
    """Discount of the within-episode return."""
    gae_lambda: float = 0.95
    """GAE lambda (1: Monte-Carlo advantages, 0: one-step TD)."""
    entropy_coef: float = 0.001
    value_coef: float = 0.05
    """Weight of the critic's loss. The critic shares f and the plastic layer with the policy; with the usual
    0.5, fitting the (at first unpredictable) returns dominated the shared layer and the policy stayed
    uniform on Harlow; 0.05 solved it."""
    max_grad_norm: float = 1.0
    """Gradient clipping of the whole theta (0: off)."""
    normalize_advantages: bool = True
    bptt_truncate: int = 0
    """Cut the gradient through the plastic state every K steps (0: full BPTT over the episode)."""


@dataclass
class A2CConfig(PGConfig):
    """Synchronous advantage actor-critic: one gradient step per batch of episodes, on-line autograd."""


@dataclass
class PPOConfig(PGConfig):
    """PPO over whole episodes: the plastic state of each episode is re-computed from its start in every
    epoch, so minibatches are sets of episodes, never slices of time."""

    epochs: int = 3
    """Passes over each batch. Every pass re-runs whole episodes (T steps of fwd + bwd per minibatch), so
    an update costs about 1 + 2 * epochs * minibatches rollouts: the defaults keep that near A2C's."""
    minibatches: int = 2
    clip: float = 0.2
    target_kl: float = 0.01
    """Stop an update's epochs early once the approximate KL exceeds this (0: never). Without it, PPO's
    several steps per batch collapsed the policy's entropy within ~1 M steps onto Harlow's return-2
    plateau (repeat a win, stop after a loss) in 5 of 6 runs; with 0.01 it solved Harlow in 1.4 M steps."""


@dataclass
class HybridConfig:
    mode: str = "sequential"
    """'sequential': ES first, then policy-gradient fine-tuning from the ES center. 'split': every
    generation, ES on the plasticity meta-parameters (alpha, kappa, beta, W0, write rule) and one gradient
    update of f and g."""
    gradient: str = "ppo"
    """The policy-gradient half: ppo | a2c (its settings come from the ppo. / a2c. sections)."""
    es_fraction: float = 0.5
    """sequential: the share of the budget (budget_steps, else generations) spent on ES."""


@dataclass
class PBTConfig:
    """Population-based training: K PPO learners (settings from the ppo section) trained side by side, the worst
    replaced by perturbed copies of the best every pbt.interval updates."""

    members: int = 8
    """Learners K, stepped together as one batched population: an update plays K times ppo.episodes episodes."""
    interval: int = 10
    """Updates between exploit / explore steps; members are ranked by their mean training return over them."""
    fraction: float = 0.25
    """Share of the members (at least one) that, at each exploit step, copy theta, Adam state and hyperparameters
    of a random member of the same share at the top."""
    perturb: float = 1.25
    """Explore: each copied hyperparameter (lr, entropy_coef, value_coef) is multiplied by this or its inverse at
    random, then kept within a factor of 10 of the ppo section's value."""
    num_actors: int = 0
    """Ray actors to spread the members over (0: every member in this process), each holding a contiguous share of
    them (at most pbt.members actors); training is the same float for float whatever the number. An actor that dies
    costs its members, not the run. Several machines: ray start on each, RAY_ADDRESS here (docs/optimizers.md)."""
    threads_per_actor: int = 1
    """torch threads (and Ray CPUs) of each actor (keeps actors x threads <= cores)."""


@dataclass
class PEARLConfig:
    """PEARL (``--optimizer pearl``, with ``model.kind=pearl``): off-policy SAC on a latent z inferred from context
    transitions. Each iteration plays ``trials`` trials (a trial: ``trial_episodes`` episodes of one hidden task, the
    first with z from the prior, each later one with z from the posterior of the trial's earlier transitions), then
    takes ``updates`` gradient steps. Published values (oyster, cheetah-dir): docs/optimizers.md."""

    trials: int = 8
    """Trials (tasks) played per iteration, stepped as one batch (published: 5 tasks per iteration)."""
    trial_episodes: int = 2
    """Episodes of each trial, all on the same task: the first with z ~ prior, then z ~ posterior of the trial's
    earlier episodes (published: 1000 prior + 1000 posterior steps per task, i.e. 5 + 5 episodes)."""
    initial_trials: int = 16
    """Trials of the first iteration, before any gradient step (published: 2000 steps on every training task)."""
    updates: int = 100
    """Gradient steps per iteration (published: 2000)."""
    batch_tasks: int = 8
    """Tasks (buffer trials) per gradient step, drawn with replacement (published meta_batch: 4 for cheetah-dir)."""
    batch_size: int = 64
    """RL transitions per task and gradient step (published: 256)."""
    context_size: int = 64
    """Context transitions per task and gradient step, from the same trial (published: 256 for cheetah-dir)."""
    buffer_trials: int = 256
    """Replay capacity in trials, first in first out (published: 10^6 transitions per task)."""
    lr: float = 3e-4
    """Adam learning rate of the policy, critics, encoder and entropy temperature."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Soft update rate of the target critics."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the critics' targets."""
    kl_lambda: float = 0.1
    """Weight of KL(q(z|c) || N(0, I)), summed over the batch's tasks, in the encoder's loss."""
    target_entropy: float = -1.0
    """The automatic temperature keeps the policy's entropy near this times the action dimension."""


@dataclass
class RunConfig:
    task: str = "harlow"
    """Registered task id."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Options of the task (``--set task.size=10``)."""
    optimizer: str = "es"
    """Meta-optimizer: es | a2c | ppo | hybrid | pbt | pearl."""
    model: ModelConfig = field(default_factory=ModelConfig)
    es: ESConfig = field(default_factory=ESConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    pbt: PBTConfig = field(default_factory=PBTConfig)
    pearl: PEARLConfig = field(default_factory=PEARLConfig)
    seed: int = 0
    """Seed of everything: searcher, task sampling, evaluation."""
    device: str = "cpu"
    """torch device of the rollout: cpu | cuda | cuda:N."""
    threads: int = 1
    """torch CPU threads in this process. 1 by default: population batches are many small matrices, which
    gain little from intra-op threads, and on a shared machine OpenMP workers stall waiting for a core.
    Use more cores through es.num_actors (one single-threaded Ray actor per core) or raise this."""
    generations: int = 300
    """Number of generations (ignored when budget_steps > 0)."""
    budget_steps: int = 0
    """Stop once this many environment steps were spent (0: use generations)."""
    max_minutes: float = 0.0
    """Also stop after this much training wall time (0: no limit). A time limit makes the stopping point
    depend on the machine's speed; use generations or budget_steps for reproducible runs."""
    checkpoint_every: int = 10
    """Write the resumable checkpoint every K generations (and at the end)."""
    eval_every: int = 10
    """Evaluate the search distribution's center every K generations on fresh episodes."""
    eval_every_steps: int = 0
    """Evaluate every time the run crosses a multiple of this many env steps instead (0: use eval_every).
    Optimizers take very different numbers of steps per generation; ``compare`` sets this so that all of
    them are evaluated at the same env-step marks."""
    eval_episodes: int = 256
    """Episodes of each periodic evaluation (also picks the run's best theta)."""
    final_eval_episodes: int = 1000
    """Episodes of the final evaluation of the best theta."""
    eval_action_mode: str = ""
    """How evaluation (and the run's agent) picks actions: greedy | sample. '' = as the optimizer trained
    it: es.action_mode (greedy by default) for ES; sampled for a2c, ppo, hybrid and pbt, whose policies are
    stochastic by construction (the arg-max of a still uncertain policy can be far worse than the policy)."""
    logger: str = "csv"
    """Where the training metrics go: 'csv' (metrics.csv, always written: the source of truth) or 'tensorboard'
    (also the same scalars per generation into RUN/tensorboard/; needs ``pip install tensorboard``)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """A config from its JSON form (``config.json``) with its shape and types checked (``ConfigError`` names the
        first bad key). Missing keys take their defaults, so configs written before a field existed still load;
        only ``task`` and ``optimizer`` are required, as every config.json has them."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a JSON object, got {_json_type(data)}")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ConfigError(f"missing {' and '.join(missing)}")
        values = {key: _section_from_dict(key, SECTIONS[key], value) if key in SECTIONS else _typed(key, value)
                  for key, value in data.items()}
        return cls(**values)

    def action_mode(self) -> str:
        """The action mode of evaluation and of the run's agent."""
        if self.eval_action_mode:
            return self.eval_action_mode
        return declaration(self.optimizer).action_mode(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)  # NaN is not JSON


SECTIONS = {"model": ModelConfig, "es": ESConfig, "a2c": A2CConfig, "ppo": PPOConfig, "hybrid": HybridConfig,
            "pbt": PBTConfig, "pearl": PEARLConfig}

# Documented per-task defaults (applied before command-line flags; docs/optimizers.md explains them). The linear
# write rule (alpha * v (x) Lv) is the paper's best variant and learnt faster here too.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    # Harlow, ES: SNES at sigma 0.1 (at 0.3 the Gaussian-smoothed fitness favours the "stop after a loss" plateau
    # over the solution), 12 starts, each scored on its own episodes, until generation 450, when the solvers are
    # clear of the plateau (a start's fate is set by where it starts, and only some starts solve; docs/optimizers.md),
    # and for the last 200 generations 64 episodes per individual, in antithetic pairs (the first guess's luck
    # cancels) and at sigma <= 0.03, which remove the solution's rare errors.
    "harlow": {"model.write": "linear", "es.algorithm": "snes", "es.sigma_init": 0.1, "es.starts": 12,
               "es.start_episodes": "own", "es.select_at": 450, "generations": 900, "es.late_episodes": 64,
               "es.late_from": 700, "es.late_sigma": 0.03, "es.antithetic": "late", "eval_episodes": 1000},
    "maze": {"model.write": "linear", "model.n": 24, "es.episodes": 8, "eval_episodes": 128},
    # Direction tasks: SNES (PGPE stood still on cheetah-dir); f also sees action x reward. MuJoCo batches are
    # small (P x E = 512 agents): the fused kernel at any size ('auto' waits for 2^20 elements of W) takes the
    # plastic step off the serial part of each step that the simulation threads wait on.
    "cheetah-dir": {"es.algorithm": "snes", "es.popsize": 64, "es.episodes": 8, "model.action_reward_inputs": True,
                    "model.fused": "any-size"},
    "ant-dir": {"es.algorithm": "snes", "es.popsize": 64, "es.episodes": 8, "model.action_reward_inputs": True,
                "model.fused": "any-size"},
    # A Meta-World episode is 5000 simulation steps (~1000-4000 steps/s per core, by class): the generic 256 /
    # 1000 evaluation episodes would take over an hour and 15 hours. 10 periodic and 50 final episodes instead.
    "metaworld-reach": {"eval_episodes": 10, "final_eval_episodes": 50, "model.fused": "any-size"},
    "metaworld-push": {"eval_episodes": 10, "final_eval_episodes": 50, "model.fused": "any-size"},
    "metaworld-ml10": {"eval_episodes": 10, "final_eval_episodes": 50, "model.fused": "any-size"},
}
# Per (task, optimizer) settings applied after TASK_PRESETS: the documented defaults of the gradient and hybrid
# optimizers (docs/lab-notes.md tells which runs chose them).
OPTIMIZER_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("harlow", "a2c"): {"generations": 3000},
    ("harlow", "ppo"): {"generations": 800},
    # On the maze, PPO's KL early stop (needed on Harlow) cut most epochs short and the run stalled. With PPO the
    # maze model is S = 1, N = 64, a 64-unit hidden layer in f and a learnt W0 (the maze ablations: S = 1 learns
    # faster, capacity and a learnt W0 each helped on every seed); ES keeps the task's smaller model, which it
    # trains faster.
    ("maze", "ppo"): {"ppo.target_kl": 0.0, "model.depth": 1, "model.n": 64, "model.embed_hidden": 64,
                      "model.w0": "learnt"},
    ("maze", "hybrid"): {"ppo.target_kl": 0.0},
    # PEARL trains its own networks (model.kind=pearl); 64 episodes per periodic evaluation keep it off the clock.
    ("cheetah-dir", "pearl"): {"model.kind": "pearl", "eval_episodes": 64},
    ("ant-dir", "pearl"): {"model.kind": "pearl", "eval_episodes": 64},
}


def presets(task: str, optimizer: str) -> dict[str, str]:
    """The documented defaults of ``train --task TASK --optimizer OPTIMIZER`` as ``--set`` pairs."""
    merged = TASK_PRESETS.get(task, {}) | OPTIMIZER_PRESETS.get((task, optimizer), {})
    return {k: str(v) for k, v in merged.items()}


def make_config(task: str, optimizer: str = "es", overrides: dict[str, str] | None = None) -> RunConfig:
    """A validated config: dataclass defaults, then the presets of (task, optimizer), then ``overrides``."""
    options = TASKS.lookup(task).options()
    cfg = RunConfig(task=task, optimizer=optimizer)  # validate() below rejects an unknown optimizer
    apply_overrides(cfg, presets(task, optimizer), options)
    apply_overrides(cfg, overrides or {}, options)
    validate(cfg)
    return cfg


REQUIRED_KEYS = ("task", "optimizer")
MAX_SEED = 2**63 - 1  # torch's generators take 64-bit seeds; generation_seed works modulo 2^63 - 1
FLOAT32_MAX = 3.4028234663852886e38
EVAL_CHUNK = 1024  # episodes an evaluation plays at once: its memory stays bounded at any episode count
MAX_THREADS = 1024  # threads, actors: past any machine's core count, and far below what overflows torch's int32


MOVED = {"model.hidden": "model.rl2.hidden (rl2) or model.maml.hidden (maml)",
         **{f"model.maml_{name}": f"model.maml.{name}" for name in ("adapt_steps", "inner_steps", "inner_lr",
                                                                     "first_order")}}
"""Keys that became others: named in the error, never silently read."""


@functools.cache
def _subsections(kind: type) -> dict[str, type]:
    """The fields of the dataclass ``kind`` that are configs of their own (``model.rl2``): name -> dataclass."""
    types = _field_types(kind)
    return {f.name: types[f.name] for f in dataclasses.fields(kind) if dataclasses.is_dataclass(types[f.name])}


@functools.cache
def all_sections() -> dict[str, type]:
    """Every section by its key prefix, nested ones included: ``model``, ``model.rl2``, ``model.maml``, ``es`` ..."""
    def walk(prefix: str, kind: type) -> dict[str, type]:
        out = {prefix: kind}
        for name, sub in _subsections(kind).items():
            out |= walk(f"{prefix}.{name}", sub)
        return out

    return {key: kind for section, kind in SECTIONS.items() for key, kind in walk(section, kind).items()}


def _section_from_dict(section: str, kind: type, data: Any) -> Any:
    """The dataclass ``kind`` of ``section`` from its JSON object, nested sections included, every value typed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{section} must be a JSON object, got {_json_type(data)}")
    subsections = _subsections(kind)
    return kind(**{name: _section_from_dict(f"{section}.{name}", subsections[name], value) if name in subsections
                   else _typed(f"{section}.{name}", value) for name, value in data.items()})


def section_of(cfg: RunConfig, section: str) -> Any:
    """The config object of ``section`` (``model.maml`` -> ``cfg.model.maml``)."""
    return functools.reduce(getattr, section.split("."), cfg)


def config_keys(task_options: dict[str, Any] | None = None) -> list[str]:
    """Every key of a config: ``section.field``, the run fields, and ``task.OPTION`` for ``task_options``."""
    keys = [f"{section}.{f.name}" for section, kind in all_sections().items() for f in dataclasses.fields(kind)
            if f.name not in _subsections(kind)]
    keys += [f.name for f in dataclasses.fields(RunConfig) if f.name not in (*SECTIONS, "task_options")]
    return keys + [f"task.{name}" for name in task_options or {}]


def _did_you_mean(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _coerce(value: str, default: Any, key: str) -> Any:
    """Parse ``value`` to the type of ``default`` (bool / int / float / str)."""
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"--set {key}={value}: expected {type(default).__name__}") from None
    if default is None:
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return value


def apply_overrides(cfg: RunConfig, overrides: dict[str, str], task_options: dict[str, Any]) -> RunConfig:
    """Apply ``{"model.n": "20", "task.size": "10", "seed": "3"}``; ``task_options`` maps valid option -> default."""
    sections = all_sections()
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if key in MOVED:
            raise ConfigError(f"unknown key --set {key}: it is now {MOVED[key]}")
        if section == "task":
            if name not in task_options:
                raise ConfigError(f"unknown key --set {key}: task {cfg.task!r} options are "
                                  f"{', '.join(sorted(task_options)) or 'none'}"
                                  f"{_did_you_mean(key, [f'task.{o}' for o in task_options])}")
            cfg.task_options[name] = _coerce(value, task_options[name], key)
            continue
        target = cfg if section == "" else section_of(cfg, section) if section in sections else None
        fields = {f.name for f in dataclasses.fields(target)} if target is not None else set()
        nested = (*SECTIONS, "task_options", "task", *(_subsections(type(target)) if target is not None else ()))
        if target is None or name not in fields or name in nested:
            hint = _did_you_mean(key, [k for k in config_keys(task_options) if k != "task"])
            if hint and key != "task":
                raise ConfigError(f"unknown key --set {key}{hint}")
            run_fields = [f.name for f in dataclasses.fields(RunConfig) if f.name not in nested]
            raise ConfigError(f"unknown key --set {key}; valid sections: task., {', '.join(s + '.' for s in SECTIONS)}"
                              f" and run fields ({', '.join(run_fields)}); the task itself is chosen with --task")
        setattr(target, name, _coerce(value, getattr(target, name), key))
    return cfg


# ---------------------------------------------------------------------------------------------- types
@functools.cache
def _field_types(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_type(key: str, value: Any, expected: Any) -> Any:
    """``value`` if it has the field's type, else ``ConfigError``; an integer stands for a float (JSON has one
    number type) and becomes one. A bool is no integer here, though Python says it is."""
    is_bool = isinstance(value, bool)
    if expected is float and isinstance(value, numbers.Real) and not is_bool:
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{key}={_shown(value)} is not a finite number") from None
    if typing.get_origin(expected) is dict:  # task_options: option -> scalar
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (bool, numbers.Real, str))
                                           for k, v in value.items()):
            return dict(value)
        raise ConfigError(f"{key} must be an object of options (numbers, strings, booleans), got {_shown(value)}")
    ok = {bool: is_bool, int: isinstance(value, numbers.Integral) and not is_bool, str: isinstance(value, str)}
    if not ok.get(expected, False):
        name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(expected, expected)
        raise ConfigError(f"{key} must be {name}, got {_json_type(value)} {_shown(value)}")
    return value


def _typed(key: str, value: Any) -> Any:
    """``value`` of ``key`` in a config.json (``section.name`` or a run field), its type checked."""
    section, _, name = key.rpartition(".")
    if key in MOVED:
        raise ConfigError(f"unknown key {key}: it is now {MOVED[key]}")
    sections = all_sections()
    types = _field_types(sections[section]) if section in sections else {} if section else _field_types(RunConfig)
    if name not in types or (not section and name in SECTIONS):
        raise ConfigError(f"unknown key {key}{_did_you_mean(key, config_keys())}")
    return _check_type(key, value, types[name])


def _sections(cfg: RunConfig):
    """(prefix, object, dataclass) of the run fields and of every section."""
    yield "", cfg, RunConfig
    for section, kind in all_sections().items():
        yield f"{section}.", section_of(cfg, section), kind


def _check_types(cfg: RunConfig) -> None:
    for prefix, obj, kind in _sections(cfg):
        if not isinstance(obj, kind):
            raise ConfigError(f"{prefix.rstrip('.')} must be a {kind.__name__}, got {_shown(obj)}")
        types = _field_types(kind)
        for f in dataclasses.fields(kind):
            if not (kind is RunConfig and f.name in SECTIONS) and f.name not in _subsections(kind):
                _check_type(prefix + f.name, getattr(obj, f.name), types[f.name])


def numeric_fields(cfg: RunConfig) -> dict[str, float | int]:
    """Every number of ``cfg`` by key (``model.n``, ``seed``, ``task.size`` ...); booleans are not numbers here."""
    out = {}
    for prefix, obj, kind in _sections(cfg):
        for f in dataclasses.fields(kind):
            value = getattr(obj, f.name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                out[prefix + f.name] = value
    out |= {f"task.{k}": v for k, v in cfg.task_options.items() if isinstance(v, numbers.Real)
            and not isinstance(v, bool)}
    return out


# ---------------------------------------------------------------------------------------------- values
CHOICES = {
    "model.activation": ("tanh", "relu", "sigmoid", "identity"),
    "model.alpha": ("matrix", "scalar"),
    "model.write": ("hebbian", "linear", "mlp"),
    "model.write_pre": ("current", "previous"),
    "model.feedback": ("none", "diagonal"),
    "model.w0": ("zero", "learnt", "random"),
    "es.algorithm": ("pgpe", "snes", "cem", "cmaes", "cmaes-full", "xnes"),
    "es.action_mode": ("greedy", "sample"),
    "es.ties": ("index", "random", "average"),
    "es.start_episodes": ("shared", "own"),
    "es.antithetic": ("auto", "on", "late", "off"),
    "model.fused": ("auto", "any-size", "on", "off"),
    "a2c.lr_schedule": ("linear", "constant"),
    "ppo.lr_schedule": ("linear", "constant"),
    "hybrid.mode": ("sequential", "split"),
    "hybrid.gradient": ("ppo", "a2c"),
}

# The allowed range of every numeric field: ">= x", "> x", or an interval "[a, b]" / "(a, b]" / "(a, b)".
# A new numeric field needs its entry (tests/test_validation.py checks that every one has one).
_PG_RANGES = {"episodes": ">= 1", "lr": "> 0", "adam_eps": "> 0", "gamma": "[0, 1]", "gae_lambda": "[0, 1]",
              "entropy_coef": ">= 0", "value_coef": ">= 0", "max_grad_norm": ">= 0", "bptt_truncate": ">= 0"}
RANGES = {
    "model.n": ">= 1", "model.depth": ">= 1", "model.write_hidden": ">= 1", "model.w0_std": ">= 0",
    "model.plastic_bound": ">= 0", "model.embed_hidden": ">= 0", "model.readout_hidden": ">= 0",
    "model.rl2.hidden": ">= 1", "model.maml.hidden": ">= 1", "model.maml.adapt_steps": ">= 1",
    "model.maml.inner_steps": ">= 1", "model.maml.inner_lr": ">= 0",
    "es.popsize": ">= 2", "es.episodes": ">= 1", "es.late_episodes": ">= 0", "es.late_from": ">= 0",
    "es.late_sigma": ">= 0",
    "es.sigma_init": "> 0", "es.center_lr": ">= 0", "es.max_speed": ">= 0", "es.stdev_lr": ">= 0",
    "es.stdev_max_change": "> 0", "es.parenthood_ratio": "(0, 1]", "es.num_actors": f"[0, {MAX_THREADS}]",
    "es.threads_per_actor": f"[1, {MAX_THREADS}]", "es.starts": "[1, 64]", "es.select_at": ">= 0",
    **{f"a2c.{k}": v for k, v in _PG_RANGES.items()}, **{f"ppo.{k}": v for k, v in _PG_RANGES.items()},
    "ppo.epochs": ">= 1", "ppo.minibatches": ">= 1", "ppo.clip": "> 0", "ppo.target_kl": ">= 0",
    "hybrid.es_fraction": "(0, 1)",
    "pbt.members": "[2, 256]", "pbt.interval": ">= 1", "pbt.fraction": "(0, 0.5]", "pbt.perturb": "> 1",
    "pbt.num_actors": f"[0, {MAX_THREADS}]", "pbt.threads_per_actor": f"[1, {MAX_THREADS}]",
    "model.pearl.hidden": ">= 1", "model.pearl.layers": ">= 1", "model.pearl.latent_dim": ">= 1",
    "pearl.trials": ">= 1", "pearl.trial_episodes": ">= 1", "pearl.initial_trials": ">= 1", "pearl.updates": ">= 0",
    "pearl.batch_tasks": ">= 1", "pearl.batch_size": ">= 1", "pearl.context_size": ">= 1",
    "pearl.buffer_trials": ">= 1", "pearl.lr": "> 0", "pearl.gamma": "[0, 1]", "pearl.tau": "(0, 1]",
    "pearl.reward_scale": "> 0", "pearl.kl_lambda": ">= 0", "pearl.target_entropy": "[-10, 10]",
    "seed": f"[0, {MAX_SEED}]", "threads": f"[1, {MAX_THREADS}]", "generations": ">= 0", "budget_steps": ">= 0",
    "max_minutes": ">= 0", "checkpoint_every": ">= 1", "eval_every": ">= 1", "eval_every_steps": ">= 0",
    "eval_episodes": ">= 1", "final_eval_episodes": ">= 1",
}


def _number(text: str) -> int | float:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else float(text)  # ints stay exact: 2^63 - 1 is no float


def in_range(value: float, spec: str) -> bool:
    """Whether ``value`` lies in ``spec`` (a ``RANGES`` entry)."""
    if spec.startswith(">="):
        return value >= _number(spec[2:])
    if spec.startswith(">"):
        return value > _number(spec[1:])
    low, high = (_number(x) for x in spec[1:-1].split(","))
    return (low <= value if spec[0] == "[" else low < value) and (value <= high if spec[-1] == "]" else value < high)


def check_values(cfg: RunConfig) -> None:
    """The checks of ``validate`` that need neither the task, the device nor the machine's memory: types, finite
    numbers, choices and ranges. ``RunDir.config`` runs them on every config.json it reads."""
    _check_types(cfg)
    for key, value in numeric_fields(cfg).items():
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a finite number")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:  # theta and the model state are float32
            raise ConfigError(f"{key}={value} is beyond float32's range (+-3.4e38)")
    for key, allowed in CHOICES.items():
        section, _, name = key.rpartition(".")
        value = getattr(section_of(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    values = numeric_fields(cfg)
    for key, spec in RANGES.items():
        if not in_range(values[key], spec):
            raise ConfigError(f"{key} must be {'in ' if spec[0] in '[(' else ''}{spec} (got {values[key]})")
    if cfg.generations < 1 and cfg.budget_steps < 1:
        raise ConfigError("give generations >= 1 or budget_steps >= 1")
    if cfg.es.late_sigma > 0 and cfg.es.algorithm not in ("pgpe", "snes", "cem"):
        raise ConfigError(f"es.late_sigma bounds a diagonal Gaussian's standard deviation: pgpe, snes or cem, not "
                          f"{cfg.es.algorithm}")
    if cfg.es.algorithm == "pgpe" and cfg.es.popsize % 2:
        raise ConfigError(f"PGPE samples symmetric pairs: es.popsize must be even (got {cfg.es.popsize})")
    parents = math.floor(cfg.es.popsize * cfg.es.parenthood_ratio)
    if cfg.es.algorithm == "cem" and parents < 2:  # evotorch's CEM takes the std of the parents: NaN for one
        raise ConfigError(f"CEM needs >= 2 parents: es.popsize x es.parenthood_ratio = {cfg.es.popsize} x "
                          f"{cfg.es.parenthood_ratio} keeps {parents}")
    if cfg.ppo.minibatches > cfg.ppo.episodes:
        raise ConfigError(f"ppo.minibatches ({cfg.ppo.minibatches}) cannot exceed ppo.episodes ({cfg.ppo.episodes})")
    if cfg.eval_action_mode not in ("", "greedy", "sample"):
        raise ConfigError(f"eval_action_mode must be greedy or sample (got {cfg.eval_action_mode!r})")
    for registry, name in ((OPTIMIZERS, cfg.optimizer), (MODELS, cfg.model.kind), (TASKS, cfg.task)):
        registry.lookup(name)  # an unknown name: one line listing the registered ones


def validate(cfg: RunConfig) -> None:
    """Raise ``ConfigError`` for values that would fail later or silently do nonsense, and for a run that cannot
    fit in the memory of this machine (or GPU)."""
    check_values(cfg)
    declaration(cfg.optimizer).check_config(cfg)
    trained_by = getattr(model_class(cfg.model.kind), "optimizers", None)  # a model only some optimizers can train
    if trained_by is not None and cfg.optimizer not in trained_by:
        raise ConfigError(f"model.kind={cfg.model.kind} is trained by --optimizer {' | '.join(trained_by)} only "
                          f"(got {cfg.optimizer})")
    validate_device(cfg.device)
    task = validate_task(cfg.task, cfg.task_options)
    check_antithetic(cfg, task)
    check_memory(cfg, task)


def check_antithetic(cfg: RunConfig, task) -> None:
    """``es.antithetic`` needs a task with twins ('on') and, where it applies, an even number of episodes."""
    if cfg.es.antithetic == "off" or not _reads(cfg, "es"):
        return
    if cfg.es.antithetic == "on" and not task.can_mirror():
        raise ConfigError(f"es.antithetic=on: task {cfg.task!r} has no antithetic episodes (use auto or off)")
    late = ("es.late_episodes", cfg.es.late_episodes) if cfg.es.late_episodes else ("es.episodes", cfg.es.episodes)
    counts = (late,) if cfg.es.antithetic == "late" else (("es.episodes", cfg.es.episodes), late)
    odd = [f"{k}={v}" for k, v in counts if v % 2]
    if task.can_mirror() and odd:
        raise ConfigError(f"antithetic episodes come in pairs: {' and '.join(odd)} must be even (or es.antithetic=off)")


def _reads(cfg: RunConfig, section: str) -> bool:
    """Whether the run's optimizer declares that it reads config ``section``."""
    return section in (declaration(cfg.optimizer).sections or ())


def validate_device(device: str) -> None:
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be cpu, cuda or cuda:N (got {device!r})") from None
    if parsed.type == "cpu":
        return
    if parsed.type != "cuda":
        raise ConfigError(f"device must be cpu, cuda or cuda:N (got {device!r})")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA device")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")


def validate_task(task_id: str, options: dict[str, Any]):
    """Build the task once on the CPU so that bad options fail here, before any file is written."""
    try:
        return make_task(task_id, **options)
    except ConfigError:
        raise  # an unknown task: the registry's one line
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(f"task {task_id!r}: {err}") from None
    except (RuntimeError, MemoryError) as err:  # e.g. an option sizing a table past the machine's memory
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"task {task_id!r} cannot be built with {options}: {first[:200]}") from None


# ---------------------------------------------------------------------------------------------- memory
def _state_floats(cfg: RunConfig, model) -> int:
    """Floats of model state per agent: MetODS's W (and its carried vectors), a GRU's gates; MAML's agents each
    adapt a copy of the weights, counted whole."""
    m = cfg.model
    if m.kind == "metods":
        return m.n * m.n + (m.depth * m.n if m.write_pre == "previous" else 0) + m.n
    if m.kind == "rl2":
        return 4 * m.rl2.hidden
    return getattr(model, "state_floats", model.num_params)


def memory_needed(cfg: RunConfig, task) -> tuple[int, str]:
    """Bytes of the run's largest working set, roughly, and what it holds. The model state dominates: a no-grad
    step holds ~3 copies of it per agent (old W, new W, a read's product; 2.6 measured for MetODS), a step recorded
    for backpropagation keeps ~4 + depth (4.7 measured at depth 1, 6.8 at depth 3)."""
    model = build_model(cfg, task)
    params, state = model.num_params, _state_floats(cfg, model)
    chunk = min(max(cfg.eval_episodes, cfg.final_eval_episodes), EVAL_CHUNK)
    needs = [(3 * chunk * state + params, f"evaluation: {chunk:,} episodes x {state:,} floats of model state")]
    if _reads(cfg, "es"):
        es = cfg.es
        episodes = max(es.episodes, es.late_episodes)
        needs.append((3 * es.popsize * (episodes * state + params),
                      f"es.popsize {es.popsize:,} x {episodes:,} episodes x {state:,} floats of model state"))
    gradient = cfg.hybrid.gradient if _reads(cfg, "hybrid") else next(
        (section for section in ("a2c", "ppo") if _reads(cfg, section)), None)
    if gradient is not None:
        pg, steps = getattr(cfg, gradient), task.max_steps
        members = cfg.pbt.members if _reads(cfg, "pbt") else 1  # PBT steps its learners as one population
        recorded = -(-pg.episodes // pg.minibatches) if gradient == "ppo" else pg.episodes  # PPO replays a minibatch
        recorded, episodes = members * recorded, members * pg.episodes
        depth = cfg.model.depth if cfg.model.kind == "metods" else 0
        needs.append(((4 + depth) * steps * recorded * state + 3 * episodes * state + 4 * members * params,
                      f"{steps:,} steps x {recorded:,} {gradient} episodes x {state:,} floats of model state "
                      "kept for backpropagation"))
    floats, what = max(needs)
    return 4 * floats, what


def machine_memory(device: str) -> int | None:
    """Bytes of memory of ``device``: the GPU's, or this machine's RAM (a container's limit if lower); None where
    the system does not say."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[1]
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(limit).read_text()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return total


def check_memory(cfg: RunConfig, task) -> None:
    """``ConfigError`` for a run that cannot fit in the memory of its device, before any file is written."""
    needed, what = memory_needed(cfg, task)
    total = machine_memory(cfg.device)
    if total is not None and needed > total:
        where = "of GPU memory" if cfg.device.startswith("cuda") else "of memory"
        raise ConfigError(f"this configuration needs ~{needed / 2**30:,.1f} GiB ({what}); this machine has "
                          f"{total / 2**30:,.1f} GiB {where}")
