"""A fused CPU kernel for ``MetODS.plastic_step``: each agent's W is read from memory once and written once.

The eager step (``metods.py``) reads W^(0) S times (one batched mat-vec per read) and writes W_t through a few
[P, E, N, N] temporaries. This C++ kernel (``metods_evo/csrc/plastic_step.cpp``, compiled on first use by
``metods_evo.kernels``) walks the agents instead (OpenMP over agents, torch's thread count), and for each agent
runs the whole step while that agent's W (and its individual's alpha, and L for the linear write) sit in L1/L2:

* the same c / D formulation as ``plastic_step`` (W^(s) = c_s W^(0) + alpha * sum_k D[s,k] v_k (x) u_k), so no
  W^(s) is materialized: sweep s reads the rows of W^(0) and alpha and forms row i of W^(s-1) v_{s-1} on the fly;
* the S-th sweep also writes W_t = clip(c_S W^(0) + alpha * sum_k D[S,k] v_k (x) u_k) row by row, since the write
  only needs v_0..v_{S-1} and u_0..u_{S-1}: W crosses the memory bus once in (first sweep) and once out (last
  sweep); sweeps 2..S read it from cache;
* u_k = u(v_k) is v_k (hebbian: the same buffer) or L v_k (linear: one mat-vec with the individual's L per sweep,
  before it, L read from memory once per individual and from cache for its other agents); the alpha terms of the
  reads use (alpha * v_k (x) u_k) v = v_k * (alpha (u_k * v)).

Two kernels share that arithmetic. The per-agent kernel vectorizes along a row of W (N = 20 fills 20 of 24
lanes and needs a transpose-and-add per 8 rows). The lanes kernel, taken wherever E is a multiple of the vector
width (8 float32 on AVX2) and S <= 4, puts 8 episodes of one individual in the lanes instead: W is stored
[P, N, N, E] (episodes innermost; the W_t it returns is a [P, E, N, N] view of that, which the next step reads in
place), every operation is a vertical FMA across agents, and the individual's alpha, L, kappa and beta are
broadcast scalars. Where E is a multiple of 16 (the ES default), a block is 16 episodes in two vectors: element
(i, j) of the block is then one whole 64-byte line of W, touched once per sweep rather than as half a line by two
blocks (1.1-1.4x over 8-episode blocks, bitwise the same per lane). ``benchmarks/fused_step.py`` measures the
lanes and per-agent kernels side by side (2.0-2.8x for the lanes kernel at N = 20, S = 3, 1.05-1.6x at N = 64).

Scope: float32, no autograd (ES and evaluation run under ``torch.no_grad()``), the hebbian and linear writes (the
mlp write stays eager), alpha 'matrix' or 'scalar', any activation of ``ACTIVATIONS``, any S >= 1 and N.
``fused_supported`` says whether a call qualifies (``STEP_OPTIONS``: the model options it implements); the eager
``plastic_step`` stays the reference and is always correct.

Equality with the eager path: within float32 rounding, not bitwise. The eager step reduces with MKL (the batched
matmuls of the alpha terms and of the outer products, whose summation order and FMA use depend on MKL's kernel
for the CPU at hand) and with ATen's vectorized ``sum`` (a blocked reduction whose order depends on the vector
width and on where a row falls in the flattened tensor), and it evaluates tanh / sigmoid with SLEEF on whole
vectors but with libm on each tensor's tail. None of those orders is a stable contract, so no kernel can reproduce
them bit for bit on every machine. The kernel fixes its own order (lane-wise FMA accumulation over j, one
transpose-and-add per 8 rows, tanh inlined to within 1.4 ulp, sigmoid by SLEEF as in ATen), computes c and D
with the same float32 operations as the eager step, and ``tests/test_fused.py`` checks that it agrees with the
eager step as closely as the eager step agrees with a float64 evaluation of the same equations.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metods_evo import kernels

if TYPE_CHECKING:  # metods.py may import this module to dispatch to it
    from metods_evo.models.metods import MetODS

ACTIVATION_CODES = {"tanh": 0, "relu": 1, "sigmoid": 2, "identity": 3}
"""The kernel's codes for ``metods.ACTIVATIONS`` (the same keys)."""
MODES = ("auto", "any-size", "on", "off")
"""Values of the proposed ``model.fused`` option, read by ``should_fuse``."""
AUTO_MIN_ELEMENTS = 1 << 20
"""'auto' fuses steps whose W has at least this many elements (4 MiB; P x E >= 2622 at N = 20, >= 64 at
N = 128). Below it a run is small (tests, single-individual evaluation) and the first compile, about a minute
of one core once per machine, would cost more than the kernel saves. The choice depends only on the shapes, so
a given evaluation always takes the same path (as ``metods.MULSUM_MAX_ELEMENTS`` picks the mat-vec)."""
GRAIN_AGENTS = 16
"""Fewest agents per OpenMP task: below it, forking threads costs more than it saves."""
LANES_MAX_DEPTH = 4
"""The lanes kernel is instantiated for S = 1..4; deeper steps take the per-agent kernel."""
WRITES = ("hebbian", "linear")
"""The write rules the kernel computes."""
ANY = None
"""An option value of ``STEP_OPTIONS`` / ``fused_rollout.MODEL_OPTIONS``: every valid value is computed."""
STEP_OPTIONS: dict[str, tuple | None] = {
    "kind": ("metods",),
    "n": ANY,
    "depth": ANY,
    "activation": tuple(ACTIVATION_CODES),
    "alpha": ("matrix", "scalar"),
    "write": WRITES,
    "write_hidden": ANY,  # the mlp write's, which is not fused
    "write_pre": ("current",),  # 'previous' passes pre: the eager step
    "feedback": ANY,  # changes v0, not the step
    "w0": ANY,
    "w0_std": ANY,
    "plastic_bound": ANY,
    "embed_hidden": ANY,
    "readout_hidden": ANY,
    "action_reward_inputs": ANY,
    "fused": ANY,  # the dispatch mode itself (``should_fuse``)
    "rl2": ANY,  # the baselines' own settings
    "maml": ANY,
    "pearl": ANY,
}
"""The allow-list of the ``ModelConfig`` the fused step computes: field -> the values it implements (``ANY``: all).
A field missing here is taken only at its default, so a new model option keeps the eager step until it is listed."""


def options_allowed(config, options: dict[str, tuple | None]) -> bool:
    """Whether every field of the dataclass ``config`` is allowed by ``options`` (field -> values, ``ANY``: all):
    a listed field must hold one of its values, an unlisted one its default (any other config object: every
    attribute must be listed)."""
    if not dataclasses.is_dataclass(config):
        return all(name in options and (options[name] is ANY or value in options[name])
                   for name, value in vars(config).items())
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in options:
            if options[f.name] is not ANY and value not in options[f.name]:
                return False
        elif f.default is not dataclasses.MISSING and value != f.default:
            return False
        elif f.default is dataclasses.MISSING and value != f.default_factory():  # type: ignore[misc]
            return False
    return True


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str]:
    """(the compiled module, "") or (None, why not). Compiles at most once per process; cached on disk."""
    tag, flags = kernels.isa_flags()
    return kernels.load("plastic_step.cpp", "fused CPU kernel", cflags=flags, ldflags=["-fopenmp"], tag=tag)


def fused_available() -> bool:
    """True when the kernel compiled (or loaded from the cache). The first call in a fresh cache compiles it
    (1-2 minutes of one core); later processes load the cached library in about a second."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why ``fused_available()`` is False ("" when it is True)."""
    return _load()[1]


def fused_supported(model: MetODS, params: dict[str, Tensor], w: Tensor, v0: Tensor) -> bool:
    """Whether the kernel computes this step: no autograd, float32 CPU tensors, a model config of ``STEP_OPTIONS``
    (the hebbian or linear write; for linear, ``write_l`` [1 or P, N, N]); independent of whether the kernel
    compiled: ``fused_available``."""
    write = model.cfg.write
    if torch.is_grad_enabled() or not options_allowed(model.cfg, STEP_OPTIONS):
        return False
    tensors = (w, v0, params["kappa"], params["beta"], params["alpha"])
    if write == "linear":
        if params.get("write_l") is None:
            return False
        tensors += (params["write_l"],)
    if not (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and w.dim() == 4 and v0.shape == w.shape[:3] and w.shape[2] == w.shape[3]
            and all(t.shape[0] in (1, w.shape[0]) for t in tensors[2:])):
        return False
    return write != "linear" or (params["write_l"].dim() == 3 and params["write_l"].shape[1:] == w.shape[2:])


def should_fuse(model: MetODS, params: dict[str, Tensor], w: Tensor, v0: Tensor) -> bool:
    """The dispatch rule for ``MetODS.plastic_step``, by ``model.cfg.fused`` ('auto' when the config has no such
    field): 'off' never; 'auto' where ``fused_supported`` and W has >= ``AUTO_MIN_ELEMENTS`` elements and the
    kernel compiles; 'any-size' where ``fused_supported`` and the kernel compiles; 'on' wherever
    ``fused_supported``, raising if the kernel does not compile. Steps with autograd, other dtypes or devices and
    the mlp write always take the eager path."""
    return mode_allows(model, lambda: fused_supported(model, params, w, v0), w.numel(), _load, "fused kernel")


def mode_allows(model, supported: Callable[[], bool], elements: int,
                load: Callable[[], tuple[object | None, str]], what: str) -> bool:
    """The ``model.fused`` rule that the fused step and the fused rollout share: 'off' never; 'auto' where
    ``supported()`` and W has >= ``AUTO_MIN_ELEMENTS`` ``elements``; 'any-size' where ``supported()``; all of them
    only where ``load()`` gives a module, except 'on', which raises where it does not."""
    mode = getattr(model.cfg, "fused", "auto")
    if mode not in MODES:
        raise ValueError(f"model.fused must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off" or not supported():
        return False
    if mode == "auto" and elements < AUTO_MIN_ELEMENTS:
        return False
    module, reason = load()
    if module is not None:
        return True
    if mode == "on":
        raise RuntimeError(f"model.fused = 'on', but the {what} is unavailable: {reason}")
    return False


def fused_plastic_step(model: MetODS, params: dict[str, Tensor], w: Tensor, v0: Tensor,
                       out: Tensor | None = None, lanes: bool | None = None) -> tuple[Tensor, Tensor]:
    """``model.plastic_step(params, w, v0)`` by the fused kernel -> (``v_S [P, E, N]``, ``W_t [P, E, N, N]``).

    ``w`` is only read. W_t goes to ``out`` when given (a contiguous float32 tensor shaped like ``w`` that does not
    overlap it), otherwise to a new tensor; from 1 MiB up its memory comes from a pool that takes buffers back only
    once torch has freed every tensor on them, so references to an old W (a rollout's ``trace``) stay valid.
    Raises if the call is not ``fused_supported`` or the kernel did not compile: dispatch on those two, the
    eager step is the fallback. ``lanes``: None picks the lanes kernel where ``uses_lanes`` (and no ``out`` is
    given), False forces the per-agent kernel, True the lanes kernel (raising where it cannot run).
    """
    if not fused_supported(model, params, w, v0):
        raise ValueError("the fused step needs no_grad, float32 CPU tensors and the hebbian or linear write")
    module, reason = _load()
    if module is None:
        raise RuntimeError(f"the fused kernel is unavailable: {reason}")
    v0 = v0.contiguous()
    if lanes and (out is not None or not uses_lanes(model, w, module)):
        raise ValueError(f"the lanes kernel needs no out=, S <= {LANES_MAX_DEPTH} and E a multiple of "
                         f"{module.lanes()} (got S = {model.cfg.depth}, E = {w.shape[1]})")
    lanes = out is None and uses_lanes(model, w, module) if lanes is None else lanes
    if lanes:  # W as its lanes layout [P, N, N, E] (a view, free, when W_{t-1} came from this kernel)
        w = w.permute(0, 2, 3, 1).contiguous()
    else:
        w = w.contiguous()
    w_out = module.empty_output(list(w.shape)) if out is None else out
    if w_out.data_ptr() == w.data_ptr():
        raise ValueError("out must not alias w: the kernel reads W^(0) while it writes W_t")
    v_out = torch.empty_like(v0)
    kappa, beta, alpha = params["kappa"], params["beta"], params["alpha"]
    if kappa.stride(-1) != 1 or beta.stride(-1) != 1:
        kappa, beta = kappa.contiguous(), beta.contiguous()
    if alpha.dim() == 3 and (alpha.stride(2) != 1 or alpha.stride(1) != alpha.shape[2]):
        alpha = alpha.contiguous()
    if model.cfg.write == "linear":
        write_l = params["write_l"]
        if write_l.stride(2) != 1:
            write_l = write_l.contiguous()
    else:  # empty: the kernel's hebbian write (u = v)
        write_l = w.new_empty(0)
    step = module.plastic_step_lanes if lanes else module.plastic_step
    grain = max(1, GRAIN_AGENTS // module.lanes()) if lanes else GRAIN_AGENTS
    step(w, v0, kappa, beta, alpha, write_l, model.cfg.depth, ACTIVATION_CODES[model.cfg.activation],
         float(model.cfg.plastic_bound), grain, w_out, v_out)
    return v_out, (w_out.permute(0, 3, 1, 2) if lanes else w_out)


def uses_lanes(model: MetODS, w: Tensor, module: object | None = None) -> bool:
    """Whether the fused step of W ``[P, E, N, N]`` takes the lanes kernel: E a multiple of the vector width (8
    float32 on AVX2) and S <= ``LANES_MAX_DEPTH``. Its W_t is then a ``[P, E, N, N]`` view of a ``[P, N, N, E]``
    tensor (episodes innermost), which the next step reads in place; any torch op reads it like any other W."""
    module = module if module is not None else _load()[0]
    return (module is not None and model.cfg.depth <= LANES_MAX_DEPTH and w.shape[1] % module.lanes() == 0
            and w.shape[1] > 0)


def clear_buffer_pool() -> None:
    """Free the recycled W_t buffers the pool keeps (at most two per size), e.g. after a large evaluation."""
    module = _load()[0]
    if module is not None:
        module.clear_buffer_pool()
