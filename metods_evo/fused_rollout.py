"""A whole Harlow rollout of a MetODS population in one C++ pass per block of episodes (CPU, scoring only).

``rollout`` steps all P x E agents one environment step at a time: per step one model call (f, the plastic step,
g) and one task call, each a handful of torch ops over the whole batch, with W_t written out to memory and read
back every step. Here the same episodes run block by block instead: a block is 16 (or 8) episodes of one
individual in the vector lanes (the lanes layout of ``models/fused.py``), and each block plays its whole episode
before the next one starts: build the observation and the model input, f, the S read / write sweeps (the very
``lanes_sweep`` of the fused step, W updated in place), g, the greedy action, and the Harlow transition, step after
step, until all of its episodes have ended (no compute for a block whose episodes are over). The block's W
(25 KiB at N = 20) never leaves the core's L1/L2 cache: W0 is read once and W_t is never written to memory, so the
rollout is bound by arithmetic instead of by memory bandwidth.

It is a fast path of ``rollout``, never a second definition of the task or the model:

* ``rollout`` takes it only where it computes exactly what the step-by-step loop computes: a MetODS model whose
  step the fused kernel supports (hebbian or linear write, S <= 4; the allow-lists ``MODEL_OPTIONS`` and
  ``TASK_OPTIONS``), a ``HarlowTask`` on the CPU, float32, no
  autograd, greedy actions (ES scoring and evaluation), no record or trace, E a multiple of the vector width, and
  ``model.fused`` allowing it (the same size rule as the fused step: 'auto' from 2^20 elements of W);
* it consumes the generator exactly as the loop does (the reset, W0's draws, and one [E] draw of the Harlow
  order noise per loop step: the draws are made up front for ``max_steps`` and the generator is then rewound and
  advanced by the number of steps the loop would have run);
* ``tests/test_fused_rollout.py`` checks it against ``rollout(..., fuse=False)`` (with the fused step): the same
  rewards at every step, lengths, metrics, finite flags, final task state and generator state, over the
  variants (S = 1..4, both writes, matrix / scalar alpha, every activation, W0 zero / learnt / random, a hidden
  layer in f, action x reward inputs, other task sizes). The results are equal up to float32 rounding, not bit
  for bit: f and g sum in another order than the eager matmuls, and f's tanh is the fused step's (within 1.4 ulp)
  rather than torch's. A greedy choice that such rounding can tip may therefore differ; such choices exist in
  populations of any size (the loop's own fused and eager plastic steps disagree on them just as often), so the
  tests use seeds where those two agree, and skip a case, saying so, where they do not on a given machine.

Its speed against the step-by-step loop is measured side by side by ``benchmarks/roofline.py`` (docs/kernels.md).

One difference in bookkeeping: ``finite`` looks at the policy output of each episode's own steps, while the loop
also looks at steps taken after an episode's end until it drops the finished agents (only a model that turns
non-finite after its episode has ended tells the two apart).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
from torch import Tensor

from metods_evo import kernels
from metods_evo.episodes import RolloutResult, reset_episodes
from metods_evo.models import fused
from metods_evo.models.metods import MetODS
from metods_evo.tasks.harlow import CENTRE, HarlowTask

STATE_KEYS = ("left", "pos", "choice", "trials", "t", "done")
"""The Harlow state the kernel returns per agent (``HarlowTask``'s keys besides objects and good)."""
PARAMS = ("f_hidden_w", "f_hidden_b", "f_w", "f_b", "alpha", "kappa", "beta", "write_l", "policy_w", "policy_b")
"""The parameters the kernel reads, in the order it takes them (absent ones as empty tensors)."""

MODEL_OPTIONS: dict[str, tuple | None] = fused.STEP_OPTIONS | {
    "depth": tuple(range(1, fused.LANES_MAX_DEPTH + 1)),  # the lanes kernel's S
    "feedback": ("none",),
    "readout_hidden": (0,),
}
"""The allow-list of the ``ModelConfig`` the rollout kernel plays (field -> values, ``fused.ANY``: all): the fused
step's, on the lanes kernel, with f and g as the kernel computes them. A field missing here is taken only at its
default, so a new model option keeps the step-by-step loop until it is listed."""
TASK_OPTIONS: dict[str, tuple | None] = {"num_trials": fused.ANY, "max_steps": fused.ANY, "object_dim": fused.ANY}
"""The allow-list of ``HarlowTask``'s options (its keyword arguments besides ``device``), as ``MODEL_OPTIONS``."""


def build(source_dir: Path = kernels.SOURCE_DIR, prefix: str = "metods_evo") -> tuple[object | None, str]:
    """``kernels.load`` of ``harlow_rollout.cpp`` in ``source_dir`` (another revision's sources:
    ``benchmarks/kernel_ab.py``), with HarlowTask's centre position as a define."""
    tag, flags = kernels.isa_flags()
    return kernels.load("harlow_rollout.cpp", "fused rollout kernel", tag=tag, ldflags=["-fopenmp"],
                        cflags=[*flags, f"-DMETODS_HARLOW_CENTRE={CENTRE}"], prefix=prefix, source_dir=source_dir)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str]:
    """(the compiled module, "") or (None, why not). Compiles at most once per process; cached on disk."""
    return build()


@functools.lru_cache(maxsize=1)
def _task_defaults() -> dict[str, object]:
    """``HarlowTask``'s keyword arguments besides ``device`` -> their defaults."""
    parameters = inspect.signature(HarlowTask.__init__).parameters
    return {k: p.default for k, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def task_allowed(task: HarlowTask) -> bool:
    """Whether every option of ``task`` is allowed by ``TASK_OPTIONS`` (an unlisted one only at its default)."""
    missing = object()
    for name, default in _task_defaults().items():
        value = getattr(task, name, missing)
        allowed = TASK_OPTIONS.get(name, (default,))
        if value is missing or (allowed is not fused.ANY and value not in allowed):
            return False
    return True


def available() -> bool:
    """True when the rollout kernel compiled (or loaded from the cache)."""
    return _load()[0] is not None


def supported(model, params: dict[str, Tensor], task, num_episodes: int) -> bool:
    """Whether the kernel computes this rollout exactly as the step-by-step loop (module docstring); independent of
    ``model.fused`` and of whether the kernel compiled. The caller checks greedy actions and no record / trace."""
    if not (isinstance(model, MetODS) and type(task) is HarlowTask and task.device.type == "cpu"):
        return False
    if (torch.is_grad_enabled() or not fused.options_allowed(model.cfg, MODEL_OPTIONS) or not task_allowed(task)
            or num_episodes <= 0 or num_episodes % 8 != 0):
        return False
    pop = params[model.spec.names[0]].shape[0]
    return all(v.device.type == "cpu" and v.dtype == torch.float32 and v.shape[0] == pop for v in params.values())


def should_use(model, params: dict[str, Tensor], task, num_episodes: int) -> bool:
    """``rollout``'s dispatch, by ``model.cfg.fused`` as the fused step's: 'off' never; 'auto' where ``supported``
    and W (P x E x N x N) has at least ``fused.AUTO_MIN_ELEMENTS`` elements; 'any-size' wherever supported; all of
    them only where the kernel compiles ('on' raises where it does not)."""
    if not isinstance(model, MetODS):  # other kinds (a plugin's included) have no model.cfg.fused or n
        return False
    elements = params[model.spec.names[0]].shape[0] * num_episodes * model.cfg.n ** 2
    return fused.mode_allows(model, lambda: supported(model, params, task, num_episodes), elements, _load,
                             "rollout kernel")


def harlow_rollout(model: MetODS, params: dict[str, Tensor], task: HarlowTask, num_episodes: int,
                   generator: torch.Generator, antithetic: bool = False) -> RolloutResult:
    """``rollout(model, params, task, num_episodes, generator, antithetic=...)`` (greedy, no record / trace) by the
    kernel."""
    module, reason = _load()
    if module is None:
        raise RuntimeError(f"the rollout kernel is unavailable: {reason}")
    if not supported(model, params, task, num_episodes):
        raise ValueError("the rollout kernel needs MetODS on HarlowTask (CPU, float32, no autograd), a write and "
                         f"activation of the fused step, S <= {fused.LANES_MAX_DEPTH} and E a multiple of 8")
    pop, episodes, cfg = params[model.spec.names[0]].shape[0], num_episodes, model.cfg
    # the generator as the loop uses it: the reset, W0 (random W0 draws), then one [E] draw per step
    reset, _ = reset_episodes(task, episodes, generator, antithetic)
    w_init = model.initial_weights(params, episodes, generator)
    w_init = w_init.new_empty(0) if cfg.w0 == "zero" else w_init.contiguous()  # zero: not read at all
    before = generator.get_state()
    noise_episodes = episodes // 2 if antithetic else episodes  # twins share their original's step noise
    uniforms = torch.rand((task.max_steps, noise_episodes), generator=generator, dtype=torch.float32)
    uniforms = uniforms.repeat(1, episodes // noise_episodes)
    tensors = [params[k].contiguous() if k in params else torch.empty(0, dtype=torch.float32) for k in PARAMS]
    rewards = torch.zeros(task.max_steps, pop, episodes, dtype=torch.float32)
    state = torch.empty(len(STATE_KEYS), pop * episodes, dtype=torch.long)
    finite = torch.empty(pop, episodes, dtype=torch.bool)
    computed = module.harlow_rollout(tensors, w_init, reset["objects"].contiguous(), reset["good"].contiguous(),
                                     uniforms, cfg.depth, fused.ACTIVATION_CODES[cfg.activation],
                                     float(cfg.plastic_bound), bool(cfg.action_reward_inputs), task.num_trials,
                                     rewards, state, finite)
    lengths = state[STATE_KEYS.index("t")].view(pop, episodes).clone()
    steps = int(lengths.max())  # the loop stops once every episode has ended: it drew noise for this many steps
    generator.set_state(before)
    torch.rand((steps, noise_episodes), generator=generator, dtype=torch.float32)
    rewards = rewards[:steps]
    final = {"objects": reset["objects"].repeat(pop, 1, 1), "good": reset["good"].repeat(pop)}
    final |= {k: state[i].bool() if k in ("choice", "done") else state[i] for i, k in enumerate(STATE_KEYS)}
    flat = rewards.reshape(steps, -1)
    metrics = {k: v.view(pop, episodes) for k, v in task.episode_metrics(flat, lengths.view(-1)).items()}
    metrics |= {k: v.view(pop, episodes) for k, v in task.state_metrics(final).items()}
    return RolloutResult(rewards, lengths, metrics, finite, int(lengths.sum()), int(computed), task_state=final)
