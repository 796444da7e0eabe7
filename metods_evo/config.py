"""Typed run configuration and ``--set key=value`` overrides.

A run is fully described by one ``RunConfig`` (saved as ``config.json`` in its run directory).
Task options are the keyword arguments of the task's class, validated against the registry.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


def generation_seed(seed: int, generation: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, generation, stream): episode sampling needs no state to resume."""
    return (seed * 1_000_003 + generation * 7919 + stream * 104_729) % (2**63 - 1)


class ConfigError(ValueError):
    """A user-facing configuration error: the CLI prints it on one line and exits with code 2."""


@dataclass
class ModelConfig:
    kind: str = "metods"
    """Which registered model (``metods_evo.models.MODELS``): metods | rl2 | maml | random. The fields below
    marked with a model's name apply to that model only; the rest configure MetODS."""
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
    through the plastic W. On the 8x8 maze it lifted MetODS above RL2 (README, maze table)."""
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
    hidden: int = 64
    """rl2: GRU units; maml: width of each of the MLP policy's two hidden layers."""
    maml_adapt_steps: int = 2
    """maml: K. Steps 0..K-1 of each episode are played with the meta-learnt initialization, then every agent
    adapts on its own K transitions and plays the rest with its adapted weights. Task-specific: 2 is one Harlow
    trial played at full speed (its first reward lands at step 1); longer tasks want more (maze ~50). A K past
    the episode's end never adapts (a plain MLP policy)."""
    maml_inner_steps: int = 1
    """maml: REINFORCE steps of the inner loop, all on the same K transitions."""
    maml_inner_lr: float = 0.1
    """maml: step size of the inner steps, on the per-step mean of log pi(a_t|s_t) * (reward-to-go within K)."""
    maml_first_order: bool = False
    """maml: drop the second-order terms (FOMAML) when the outer loop differentiates through the inner step;
    ES never differentiates, so this only matters for a2c / ppo / hybrid."""


@dataclass
class ESConfig:
    algorithm: str = "pgpe"
    """evotorch search algorithm: pgpe (with ClipUp) | snes | cem | cmaes."""
    popsize: int = 256
    """Population size (PGPE samples symmetric pairs, so it must be even)."""
    episodes: int = 16
    """Episodes per individual per generation; all individuals see the same sampled tasks."""
    late_episodes: int = 0
    """Episodes per individual from generation ``late_from`` on (0: keep ``episodes``). Once a policy is
    nearly right, the remaining errors are rare events that 16 episodes seldom show; more episodes late
    make the fitness precise enough to remove them without paying for it from the start."""
    late_from: int = 0
    """First generation (0-based) that uses ``late_episodes``."""
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
    uniform on Harlow; 0.05 solved it (README, Results)."""
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
class RunConfig:
    task: str = "harlow"
    """Registered task id."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Options of the task (``--set task.size=10``)."""
    optimizer: str = "es"
    """Meta-optimizer: es | a2c | ppo | hybrid."""
    model: ModelConfig = field(default_factory=ModelConfig)
    es: ESConfig = field(default_factory=ESConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
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
    it: es.action_mode (greedy by default) for ES; sampled for a2c, ppo and hybrid, whose policies are
    stochastic by construction (the arg-max of a still uncertain policy can be far worse than the policy)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        sections = {name: kind(**data.pop(name, {})) for name, kind in SECTIONS.items()}
        return cls(**sections, **data)

    def action_mode(self) -> str:
        """The action mode of evaluation and of the run's agent."""
        if self.eval_action_mode:
            return self.eval_action_mode
        return self.es.action_mode if self.optimizer == "es" else "sample"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS = {"model": ModelConfig, "es": ESConfig, "a2c": A2CConfig, "ppo": PPOConfig, "hybrid": HybridConfig}

# Documented per-task defaults (applied before command-line flags). The linear write rule
# (alpha * v (x) Lv) is the paper's best variant and learnt faster here too. On Harlow, PGPE stalls
# at a "stop choosing after a loss" strategy (return ~1.9); SNES, with its per-parameter step sizes,
# crosses to the one-shot solution by generation ~500 (see runs/harlow-es-*); 100 last generations
# with 64 episodes per individual then remove most of the remaining rare errors.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "harlow": {"model.write": "linear", "es.algorithm": "snes", "generations": 900,
               "es.late_episodes": 64, "es.late_from": 800, "eval_episodes": 1000},
    "maze": {"model.write": "linear", "model.n": 24, "es.episodes": 8, "eval_episodes": 128},
    # Direction tasks: as on Harlow, PGPE stalled (cheetah-dir: standing still, return ~0 after 15 M steps) where
    # SNES learnt to run and turn with the hidden direction (runs/cheetah-dir-snes). f also sees action x reward.
    # MuJoCo batches are small (P x E = 512 agents): the fused kernel at any size ('auto' waits for 2^20 elements
    # of W) takes the plastic step off the serial part of each step that the simulation threads wait on.
    "cheetah-dir": {"es.algorithm": "snes", "es.popsize": 64, "es.episodes": 8, "model.action_reward_inputs": True,
                    "model.fused": "any-size"},
    "ant-dir": {"es.algorithm": "snes", "es.popsize": 64, "es.episodes": 8, "model.action_reward_inputs": True,
                "model.fused": "any-size"},
    # A Meta-World episode is 5000 steps of Python-bound simulation (~1000 steps/s per core): the generic 256 /
    # 1000 evaluation episodes would take over an hour and 15 hours. 10 periodic and 50 final episodes instead.
    "metaworld-reach": {"eval_episodes": 10, "final_eval_episodes": 50, "model.fused": "any-size"},
    "metaworld-push": {"eval_episodes": 10, "final_eval_episodes": 50, "model.fused": "any-size"},
    "metaworld-ml10": {"eval_episodes": 10, "final_eval_episodes": 50, "model.fused": "any-size"},
}
# Per (task, optimizer) settings applied after TASK_PRESETS: the documented defaults of the
# gradient and hybrid optimizers (see the README's results for the runs that chose them).
OPTIMIZER_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("harlow", "a2c"): {"generations": 3000},
    ("harlow", "ppo"): {"generations": 800},
    # On the maze, PPO's KL early stop (0.01, needed on Harlow) cut most epochs short and the run stalled at 17
    # after 10 M steps; without it PPO reached 75.7 (runs/maze-compare, runs/maze-ppo-target-kl-0.01).
    # With PPO, the maze model is the best MetODS of runs/maze-table (10 M steps): S = 1, N = 64, a 64-unit hidden
    # layer in f and a learnt W0: 115.4, where the task's model (S = 3, N = 24, W0 = 0) reached 77.9, below the
    # paper's 86.5 (the maze ablations found S = 1 learning faster; capacity and a learnt W0 each helped on every
    # seed). ES keeps the task's model: in 12 minutes of ES each, side by side, the task's model reached 72.8 and this
    # one 19.6 (at 51 M env steps: 37.7 against 4.7; runs/maze-es-model-check).
    ("maze", "ppo"): {"ppo.target_kl": 0.0, "model.depth": 1, "model.n": 64, "model.embed_hidden": 64,
                      "model.w0": "learnt"},
    ("maze", "hybrid"): {"ppo.target_kl": 0.0},
}


def presets(task: str, optimizer: str) -> dict[str, str]:
    """The documented defaults of ``train --task TASK --optimizer OPTIMIZER`` as ``--set`` pairs."""
    merged = TASK_PRESETS.get(task, {}) | OPTIMIZER_PRESETS.get((task, optimizer), {})
    return {k: str(v) for k, v in merged.items()}


def make_config(task: str, optimizer: str = "es", overrides: dict[str, str] | None = None) -> RunConfig:
    """A validated config: dataclass defaults, then the presets of (task, optimizer), then ``overrides``."""
    from metods_evo.tasks import TASKS

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(sorted(TASKS))}")
    cfg = RunConfig(task=task, optimizer=optimizer)  # validate() below rejects an unknown optimizer
    options = TASKS[task].options()
    apply_overrides(cfg, presets(task, optimizer), options)
    apply_overrides(cfg, overrides or {}, options)
    validate(cfg)
    return cfg


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
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if section == "task":
            if name not in task_options:
                raise ConfigError(f"unknown key --set {key}: task {cfg.task!r} options are "
                                  f"{', '.join(sorted(task_options)) or 'none'}")
            cfg.task_options[name] = _coerce(value, task_options[name], key)
            continue
        target = cfg if section == "" else getattr(cfg, section, None) if section in SECTIONS else None
        fields = {f.name for f in dataclasses.fields(target)} if target is not None else set()
        nested = (*SECTIONS, "task_options", "task")
        if target is None or name not in fields or name in nested:
            run_fields = [f.name for f in dataclasses.fields(RunConfig) if f.name not in nested]
            raise ConfigError(f"unknown key --set {key}; valid sections: task., {', '.join(s + '.' for s in SECTIONS)}"
                              f" and run fields ({', '.join(run_fields)}); the task itself is chosen with --task")
        setattr(target, name, _coerce(value, getattr(target, name), key))
    return cfg


CHOICES = {
    "model.activation": ("tanh", "relu", "sigmoid", "identity"),
    "model.alpha": ("matrix", "scalar"),
    "model.write": ("hebbian", "linear", "mlp"),
    "model.write_pre": ("current", "previous"),
    "model.feedback": ("none", "diagonal"),
    "model.w0": ("zero", "learnt", "random"),
    "es.algorithm": ("pgpe", "snes", "cem", "cmaes"),
    "es.action_mode": ("greedy", "sample"),
    "model.fused": ("auto", "any-size", "on", "off"),
    "a2c.lr_schedule": ("linear", "constant"),
    "ppo.lr_schedule": ("linear", "constant"),
    "hybrid.mode": ("sequential", "split"),
    "hybrid.gradient": ("ppo", "a2c"),
}


def validate(cfg: RunConfig) -> None:
    """Raise ``ConfigError`` for values that would fail later or silently do nonsense."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    positive = {"model.n": cfg.model.n, "model.depth": cfg.model.depth, "model.hidden": cfg.model.hidden,
                "es.popsize": cfg.es.popsize, "es.episodes": cfg.es.episodes, "checkpoint_every": cfg.checkpoint_every,
                "eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes,
                "final_eval_episodes": cfg.final_eval_episodes, "threads": cfg.threads,
                "es.threads_per_actor": cfg.es.threads_per_actor}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1 (got {value})")
    if cfg.generations < 1 and cfg.budget_steps < 1:
        raise ConfigError("give generations >= 1 or budget_steps >= 1")
    if cfg.es.sigma_init <= 0 or cfg.model.plastic_bound < 0 or cfg.model.w0_std < 0:
        raise ConfigError("es.sigma_init must be > 0, model.plastic_bound and model.w0_std >= 0")
    if min(cfg.es.center_lr, cfg.es.stdev_lr, cfg.es.max_speed, cfg.max_minutes, cfg.budget_steps, cfg.eval_every_steps,
           cfg.es.late_episodes, cfg.es.late_from) < 0:
        raise ConfigError("learning rates, es.max_speed, max_minutes, budget_steps and eval_every_steps must be >= 0")
    if cfg.es.algorithm == "pgpe" and cfg.es.popsize % 2:
        raise ConfigError(f"PGPE samples symmetric pairs: es.popsize must be even (got {cfg.es.popsize})")
    if cfg.es.num_actors < 0:
        raise ConfigError("es.num_actors must be >= 0")
    if cfg.model.embed_hidden < 0 or cfg.model.readout_hidden < 0 or cfg.model.write_hidden < 1:
        raise ConfigError("model.embed_hidden and model.readout_hidden must be >= 0, model.write_hidden >= 1")
    if cfg.model.maml_adapt_steps < 1 or cfg.model.maml_inner_steps < 1 or cfg.model.maml_inner_lr < 0:
        raise ConfigError("model.maml_adapt_steps and model.maml_inner_steps must be >= 1, model.maml_inner_lr >= 0")
    if not 0 < cfg.es.parenthood_ratio <= 1 or cfg.es.stdev_max_change <= 0:
        raise ConfigError("es.parenthood_ratio must be in (0, 1] and es.stdev_max_change > 0")
    _check_optimizer(cfg.optimizer)
    _check_model(cfg.model.kind)
    if cfg.optimizer == "hybrid" and cfg.hybrid.mode == "split" and cfg.model.kind != "metods":
        raise ConfigError(f"hybrid.mode=split searches MetODS's plasticity parameters by ES; model.kind="
                          f"{cfg.model.kind} has none (use hybrid.mode=sequential)")
    if cfg.eval_action_mode not in ("", "greedy", "sample"):
        raise ConfigError(f"eval_action_mode must be greedy or sample (got {cfg.eval_action_mode!r})")
    _validate_pg(cfg)
    validate_device(cfg.device)
    validate_task(cfg.task, cfg.task_options)


def _check_optimizer(name: str) -> None:
    from metods_evo.train import OPTIMIZERS  # the registry; imported here because train imports this module

    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose from {', '.join(sorted(OPTIMIZERS))}")


def _check_model(name: str) -> None:
    from metods_evo.models import MODELS  # the registry; models import this module

    if name not in MODELS:
        raise ConfigError(f"unknown model.kind {name!r}; choose from {', '.join(sorted(MODELS))}")


def _validate_pg(cfg: RunConfig) -> None:
    for name in ("a2c", "ppo"):
        pg = getattr(cfg, name)
        if pg.episodes < 1 or pg.lr <= 0 or pg.adam_eps <= 0:
            raise ConfigError(f"{name}.episodes must be >= 1, {name}.lr and {name}.adam_eps > 0")
        if not (0 <= pg.gamma <= 1 and 0 <= pg.gae_lambda <= 1):
            raise ConfigError(f"{name}.gamma and {name}.gae_lambda must be in [0, 1]")
        if min(pg.entropy_coef, pg.value_coef, pg.max_grad_norm, pg.bptt_truncate) < 0:
            raise ConfigError(f"{name}.entropy_coef, value_coef, max_grad_norm and bptt_truncate must be >= 0")
    ppo = cfg.ppo
    if ppo.epochs < 1 or ppo.minibatches < 1 or ppo.clip <= 0 or ppo.target_kl < 0:
        raise ConfigError("ppo.epochs and ppo.minibatches must be >= 1, ppo.clip > 0, ppo.target_kl >= 0")
    if ppo.minibatches > ppo.episodes:
        raise ConfigError(f"ppo.minibatches ({ppo.minibatches}) cannot exceed ppo.episodes ({ppo.episodes})")
    if not 0 < cfg.hybrid.es_fraction < 1:
        raise ConfigError(f"hybrid.es_fraction must be in (0, 1) (got {cfg.hybrid.es_fraction})")


def validate_device(device: str) -> None:
    import torch

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
    from metods_evo.tasks import TASKS, make_task

    if task_id not in TASKS:
        raise ConfigError(f"unknown task {task_id!r}; choose from {', '.join(sorted(TASKS))}")
    try:
        return make_task(task_id, **options)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"task {task_id!r}: {err}") from None
