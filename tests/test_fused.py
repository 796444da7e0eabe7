"""The fused CPU kernel (``metods_evo.models.fused``) against the eager ``MetODS.plastic_step``.

Bitwise equality is not attainable (the eager step's reductions run in MKL's and ATen's orders; see the module
docstring), so each comparison is normwise, relative to the largest magnitude of the float64 result, and the
tolerance is earned rather than picked: the fused step must agree with the eager step, and with a float64
evaluation of the same equations, within ``ACCURACY_FACTOR`` times the eager step's own error against float64
(floored at ``FLOOR``). Observed: at most 2.9x, usually below 1x (the kernel is often the more accurate of the two).
The kernel compiles once per session (skipped when it cannot); later sessions load the cached library.
"""

import dataclasses
import itertools
import types

import pytest
import torch

from metods_evo.config import ModelConfig
from metods_evo.models import fused
from metods_evo.models.metods import ACTIVATIONS, MetODS
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task

ACCURACY_FACTOR = 4.0
FLOOR = 1e-6  # normwise: ~8 float32 ulps of the largest entry


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not fused.fused_available():
        pytest.skip(f"fused kernel did not compile: {fused.unavailable_reason()}")


def eager_only(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the fused dispatch off, once ModelConfig has the proposed ``fused`` field: the reference."""
    return dataclasses.replace(cfg, fused="off") if hasattr(cfg, "fused") else cfg


def make_case(cfg: ModelConfig, seed: int, pop: int = 3, agents: int = 5):
    """A model (eager ``plastic_step``), random population parameters (``init_params`` + 0.3 noise),
    W ~ 0.5 N(0, 1) and v0 in [-1, 1]."""
    model = MetODS(eager_only(cfg), obs_dim=4, num_actions=3)
    g = torch.Generator().manual_seed(seed)
    params = model.spec.unflatten(model.init_params(g) + 0.3 * torch.randn(pop, model.num_params, generator=g))
    w = 0.5 * torch.randn(pop, agents, cfg.n, cfg.n, generator=g)
    v0 = torch.rand(pop, agents, cfg.n, generator=g) * 2 - 1
    return model, params, w, v0


def float64_step(model: MetODS, params, w, v0):
    """The eager step in float64: (v_S, W_t, the scale of W_t before the clip)."""
    unclipped = MetODS(dataclasses.replace(model.cfg, plastic_bound=0.0), model.obs_dim, model.num_actions)
    params64 = {k: v.double() for k, v in params.items()}
    v, w_free = unclipped.plastic_step(params64, w.double(), v0.double())
    bound = model.cfg.plastic_bound
    return v, (w_free.clamp(-bound, bound) if bound > 0 else w_free), w_free.abs().max()


def assert_as_accurate(fused_x, eager_x, exact_x, scale, what: str):
    """fused vs eager and fused vs float64, normwise, within ACCURACY_FACTOR x max(eager's own error, FLOOR)."""
    def err(a, b):
        return float((a.double() - b.double()).abs().max() / scale)

    allowed = ACCURACY_FACTOR * max(err(eager_x, exact_x), FLOOR)
    assert err(fused_x, eager_x) <= allowed, f"{what}: fused vs eager {err(fused_x, eager_x):.2e} > {allowed:.2e}"
    assert err(fused_x, exact_x) <= allowed, f"{what}: fused vs float64 {err(fused_x, exact_x):.2e} > {allowed:.2e}"


WRITES = ["hebbian", "linear"]  # the write rules the kernel computes (mlp stays eager)


@pytest.mark.parametrize("write,depth,alpha,activation", list(itertools.product(
    WRITES, [1, 2, 3, 4], ["matrix", "scalar"], ["tanh", "relu", "sigmoid", "identity"])))
def test_step_matches_eager(write, depth, alpha, activation):
    # with and without the clip; E = 5: the per-agent kernel, E = 8 / 16: the lanes kernel, 8 / 16 episodes a block
    for (n, bound), agents in itertools.product([(5, 1.5), (20, 0.0), (20, 1.5), (64, 1.5)], [5, 8, 16]):
        cfg = ModelConfig(n=n, depth=depth, alpha=alpha, activation=activation, plastic_bound=bound, write=write)
        model, params, w, v0 = make_case(cfg, seed=100 * depth + n, agents=agents)
        w_before = w.clone()
        with torch.no_grad():
            v_eager, w_eager = model.plastic_step(params, w, v0)
            v_fused, w_fused = fused.fused_plastic_step(model, params, w, v0)
        v_exact, w_exact, w_scale = float64_step(model, params, w, v0)
        assert torch.equal(w, w_before), "the kernel must only read W"
        assert v_fused.shape == v_eager.shape and w_fused.shape == w_eager.shape
        assert (w_fused.stride(1) == 1) == (agents in (8, 16))  # the lanes layout: episodes innermost
        where = f"N={n} E={agents} bound={bound}"
        assert_as_accurate(v_fused, v_eager, v_exact, v_exact.abs().max(), f"v {where}")
        assert_as_accurate(w_fused, w_eager, w_exact, w_scale, f"W {where}")
        if bound > 0:
            assert w_fused.abs().max() <= bound


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("n,depth", [(33, 2), (128, 3), (20, 5), (9, 6)])
@pytest.mark.parametrize("agents", [3, 8])
def test_other_sizes_and_depths(n, depth, write, agents):
    """N past the unrolled sizes (N > 32: generic row loops, with and without a partial lane) and S > 4 (which
    the per-agent kernel computes even where E = 8 would fit the lanes kernel)."""
    cfg = ModelConfig(n=n, depth=depth, plastic_bound=1.5, write=write)
    model, params, w, v0 = make_case(cfg, seed=n + depth, pop=2, agents=agents)
    with torch.no_grad():
        v_eager, w_eager = model.plastic_step(params, w, v0)
        v_fused, w_fused = fused.fused_plastic_step(model, params, w, v0)
    v_exact, w_exact, w_scale = float64_step(model, params, w, v0)
    assert_as_accurate(v_fused, v_eager, v_exact, v_exact.abs().max(), "v")
    assert_as_accurate(w_fused, w_eager, w_exact, w_scale, "W")


def test_linear_write_with_shared_or_strided_l():
    """write_l of one individual broadcast to all P, and a row-strided (non-contiguous) write_l."""
    cfg = ModelConfig(n=20, depth=3, plastic_bound=1.5, write="linear")
    model, params, w, v0 = make_case(cfg, seed=11, pop=3, agents=4)
    wide = torch.randn(3, 20, 24, generator=torch.Generator().manual_seed(12)) / 20 ** 0.5
    for write_l in (params["write_l"][:1], wide[..., :20]):
        case = {**params, "write_l": write_l}
        with torch.no_grad():
            v_eager, w_eager = model.plastic_step(case, w, v0)
            v_fused, w_fused = fused.fused_plastic_step(model, case, w, v0)
        v_exact, w_exact, w_scale = float64_step(model, case, w, v0)
        assert_as_accurate(v_fused, v_eager, v_exact, v_exact.abs().max(), f"v L {tuple(write_l.shape)}")
        assert_as_accurate(w_fused, w_eager, w_exact, w_scale, f"W L {tuple(write_l.shape)}")


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("agents", [4, 16])  # blocks of 8 episodes: test_sixteen_and_eight_episode_blocks_agree_bitwise
def test_thirty_step_chain_matches_eager(write, agents):
    """Along a 30-step trajectory (W fed back, new v0 each step, the bound reached), every step of the fused
    kernel is as accurate as the eager step's.

    Both float32 paths start each step from the float64 trajectory's W (rounded to float32) rather than from
    their own previous output: where the plastic dynamics are chaotic, two float32 trajectories drift apart at
    a rate set by the dynamics, not by either step (seeds 0-11, each path fed back on itself: eager's own error
    against float64 grew to 1e-3 .. 1 in several), so only the per-step error along the trajectory says whether
    the kernel is right. Those states (large, saturated W) are what long rollouts reach."""
    cfg = ModelConfig(n=20, depth=3, plastic_bound=1.5, write=write)
    model, params, w, _ = make_case(cfg, seed=7, pop=3, agents=agents)
    g = torch.Generator().manual_seed(8)
    w_exact = w.double()
    params64 = {k: v.double() for k, v in params.items()}
    with torch.no_grad():
        for t in range(30):
            v0 = torch.rand(3, agents, 20, generator=g) * 2 - 1
            start = w_exact.float()
            v_eager, w_eager = model.plastic_step(params, start, v0)
            v_fused, w_fused = fused.fused_plastic_step(model, params, start, v0)
            v_exact, w_exact = model.plastic_step(params64, start.double(), v0.double())
            assert_as_accurate(v_fused, v_eager, v_exact, v_exact.abs().max(), f"v at step {t}")
            assert_as_accurate(w_fused, w_eager, w_exact, w_exact.abs().max(), f"W at step {t}")
            assert t < 10 or w_exact.abs().max() > 1.4  # the trajectory does reach the bound (1.5)


@pytest.mark.parametrize("write", WRITES)
def test_harlow_rollout_takes_the_same_actions(monkeypatch, write):
    task = make_task("harlow")
    model = MetODS(eager_only(ModelConfig(n=20, depth=3, write=write)), task.obs_dim, task.num_actions)
    g = torch.Generator().manual_seed(3)
    params = model.spec.unflatten(model.init_params(g) + 0.3 * torch.randn(4, model.num_params, generator=g))

    def run():
        with torch.no_grad():
            return rollout(model, params, task, 8, torch.Generator().manual_seed(5), trace=True)

    eager = run()
    monkeypatch.setattr(model, "plastic_step", lambda p, w, v0: fused.fused_plastic_step(model, p, w, v0))
    fast = run()
    assert torch.equal(torch.stack(fast.trace["action"]), torch.stack(eager.trace["action"]))
    assert torch.equal(fast.returns, eager.returns) and torch.equal(fast.lengths, eager.lengths)


@pytest.mark.parametrize("lanes", [False, True])
def test_thread_count_does_not_change_the_result(lanes):
    model, params, w, v0 = make_case(ModelConfig(n=20, depth=3), seed=1, pop=8, agents=16)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = fused.fused_plastic_step(model, params, w, v0, lanes=lanes)
            torch.set_num_threads(2)
            two = fused.fused_plastic_step(model, params, w, v0, lanes=lanes)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_lanes_layout_is_carried_and_read_in_place():
    """The lanes kernel returns W_t as a [P, E, N, N] view of [P, N, N, E] storage; the next step reads it without a
    copy, eager ops read it as any W, and the per-agent kernel given the same W computes the same step."""
    model, params, w, v0 = make_case(ModelConfig(n=20, depth=3, write="linear", plastic_bound=1.5), seed=4,
                                     pop=3, agents=16)
    with torch.no_grad():
        _, w1 = fused.fused_plastic_step(model, params, w, v0)
        assert w1.shape == w.shape and w1.permute(0, 2, 3, 1).is_contiguous()
        assert w1.permute(0, 2, 3, 1).contiguous().data_ptr() == w1.data_ptr()  # what the kernel reads: no copy
        v_lanes, w_lanes = fused.fused_plastic_step(model, params, w1, v0)
        v_agents, w_agents = fused.fused_plastic_step(model, params, w1, v0, lanes=False)
        v_eager, w_eager = model.plastic_step(params, w1, v0)
    v_exact, w_exact, w_scale = float64_step(model, params, w1, v0)
    assert w_agents.is_contiguous() and w_lanes.stride(1) == 1
    for name, (v, w_t) in {"lanes": (v_lanes, w_lanes), "per-agent": (v_agents, w_agents)}.items():
        assert_as_accurate(v, v_eager, v_exact, v_exact.abs().max(), f"v {name}")
        assert_as_accurate(w_t, w_eager, w_exact, w_scale, f"W {name}")


@pytest.mark.parametrize("write", WRITES)
def test_sixteen_and_eight_episode_blocks_agree_bitwise(write):
    """E = 16 runs in blocks of 16 episodes (two vectors, whole cache lines), E = 24 in blocks of 8: each lane's
    arithmetic is the same, so the first 16 episodes of an E = 24 step equal the E = 16 step bit for bit."""
    model, params, w, v0 = make_case(ModelConfig(n=20, depth=3, plastic_bound=1.5, write=write), seed=5, pop=3,
                                     agents=24)
    with torch.no_grad():
        v24, w24 = fused.fused_plastic_step(model, params, w, v0, lanes=True)
        v16, w16 = fused.fused_plastic_step(model, params, w[:, :16].contiguous(), v0[:, :16].contiguous(),
                                            lanes=True)
    assert torch.equal(v24[:, :16], v16) and torch.equal(w24[:, :16], w16)


def test_lanes_kernel_refuses_what_it_cannot_compute():
    model, params, w, v0 = make_case(ModelConfig(n=6, depth=2), seed=0, pop=2, agents=5)
    deep, deep_params, w8, v8 = make_case(ModelConfig(n=6, depth=5), seed=0, pop=2, agents=8)
    with torch.no_grad():
        with pytest.raises(ValueError, match="lanes kernel"):
            fused.fused_plastic_step(model, params, w, v0, lanes=True)  # E = 5
        with pytest.raises(ValueError, match="lanes kernel"):
            fused.fused_plastic_step(deep, deep_params, w8, v8, lanes=True)  # S = 5
        assert not fused.uses_lanes(model, w) and not fused.uses_lanes(deep, w8)
        assert fused.uses_lanes(model, w.new_zeros(2, 8, 6, 6))


def test_fused_step_benchmark_runs():
    """``benchmarks/fused_step.py`` at a tiny size: every path measured (no timing claim)."""
    import contextlib
    import importlib.util
    import io
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_step.py"
    spec = importlib.util.spec_from_file_location("fused_step", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert bench.main(["--ns", "8", "--depths", "2", "--pe", "16", "--threads", "1", "--episodes", "8",
                               "--min-seconds", "0.001", "--repeats", "1", "--copy-mib", "8",
                               "--copy-repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in out.getvalue().splitlines() if line.strip().startswith(("hebbian", "linear"))]
    assert len(rows) == 2 and "fused/per-agent" in out.getvalue()


def test_outputs_never_overwrite_live_tensors():
    """Out buffers: ``out=`` is honoured, aliasing W is refused, and the pool recycles a W_t only once no tensor
    (not even a detached view, as a rollout's trace keeps) refers to it."""
    model, params, w, v0 = make_case(ModelConfig(n=64, depth=2), seed=2, pop=4, agents=32)  # 2 MiB: pooled
    with torch.no_grad():
        out = torch.empty_like(w)
        assert fused.fused_plastic_step(model, params, w, v0, out=out)[1] is out
        with pytest.raises(ValueError, match="alias"):
            fused.fused_plastic_step(model, params, w, v0, out=w)
        first = fused.fused_plastic_step(model, params, w, v0)[1]
        kept = first.detach()
        expected = kept.clone()
        address = first.data_ptr()
        del first
        second = fused.fused_plastic_step(model, params, out, v0)[1]
        assert second.data_ptr() != address and torch.equal(kept, expected)
        del kept
        third = fused.fused_plastic_step(model, params, second, v0)[1]
        assert third.data_ptr() == address  # freed for good: recycled instead of page-faulting a new buffer
    fused.clear_buffer_pool()


def test_supported_only_where_it_applies():
    model, params, w, v0 = make_case(ModelConfig(n=6, depth=2), seed=0)
    assert not fused.fused_supported(model, params, w, v0)  # autograd on
    with torch.no_grad():
        assert fused.fused_supported(model, params, w, v0)
        assert not fused.fused_supported(model, params, w.double(), v0.double())
        linear, linear_params, _, _ = make_case(ModelConfig(n=6, depth=2, write="linear"), seed=0)
        assert fused.fused_supported(linear, linear_params, w, v0)
        assert fused.fused_supported(linear, {**linear_params, "write_l": linear_params["write_l"][:1]}, w, v0)
        assert not fused.fused_supported(linear, params, w, v0)  # no write_l
        assert not fused.fused_supported(linear, {**linear_params, "write_l": linear_params["write_l"][:2]}, w, v0)
        assert not fused.fused_supported(linear, {**linear_params, "write_l": linear_params["write_l"][..., :5]},
                                         w, v0)
        assert not fused.fused_supported(linear, {**linear_params, "write_l": linear_params["write_l"].double()},
                                         w, v0)
        mlp, mlp_params, _, _ = make_case(ModelConfig(n=6, depth=2, write="mlp"), seed=0)
        assert not fused.fused_supported(mlp, mlp_params, w, v0)
        with pytest.raises(ValueError):
            fused.fused_plastic_step(mlp, mlp_params, w, v0)


def with_fused_option(model: MetODS, mode: str | None):
    """The model with the proposed ``model.fused`` config field set to ``mode`` (None: without the field)."""
    fields = {k: v for k, v in vars(model.cfg).items() if k != "fused"}
    return types.SimpleNamespace(cfg=types.SimpleNamespace(**fields, **({} if mode is None else {"fused": mode})))


def big_state(model: MetODS, pop: int):
    """Zero W and v0 with at least AUTO_MIN_ELEMENTS elements in W."""
    n = model.cfg.n
    agents = -(-fused.AUTO_MIN_ELEMENTS // (pop * n * n))
    return torch.zeros(pop, agents, n, n), torch.zeros(pop, agents, n)


def test_dispatch_rule():
    """``should_fuse``: 'off' never, 'auto' from AUTO_MIN_ELEMENTS on, 'any-size' and 'on' wherever supported;
    never with autograd."""
    assert set(fused.ACTIVATION_CODES) == set(ACTIVATIONS)
    model, params, w, v0 = make_case(ModelConfig(n=20, depth=2), seed=0, pop=2, agents=4)
    w_big, v_big = big_state(model, pop=2)
    assert not fused.should_fuse(with_fused_option(model, "on"), params, w_big, v_big)  # autograd on
    with torch.no_grad():
        assert fused.should_fuse(with_fused_option(model, None), params, w_big, v_big)  # no field: 'auto'
        assert fused.should_fuse(with_fused_option(model, "auto"), params, w_big, v_big)
        assert not fused.should_fuse(with_fused_option(model, "auto"), params, w, v0)
        assert fused.should_fuse(with_fused_option(model, "any-size"), params, w, v0)
        assert fused.should_fuse(with_fused_option(model, "on"), params, w, v0)
        assert not fused.should_fuse(with_fused_option(model, "off"), params, w_big, v_big)
        assert not fused.should_fuse(with_fused_option(model, "on"), params, w.double(), v0.double())
        with pytest.raises(ValueError, match="model.fused"):
            fused.should_fuse(with_fused_option(model, "always"), params, w, v0)


def test_unavailable_kernel_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(fused, "_load", lambda: (None, "OSError: no compiler"))
    assert not fused.fused_available() and fused.unavailable_reason() == "OSError: no compiler"
    model, params, w, v0 = make_case(ModelConfig(n=6, depth=2), seed=0)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="no compiler"):
            fused.fused_plastic_step(model, params, w, v0)
        assert not fused.should_fuse(with_fused_option(model, "auto"), params, *big_state(model, pop=3))
        assert not fused.should_fuse(with_fused_option(model, "any-size"), params, w, v0)  # eager, no error
        with pytest.raises(RuntimeError, match="unavailable"):
            fused.should_fuse(with_fused_option(model, "on"), params, w, v0)
