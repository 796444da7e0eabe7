"""The MetODS layer against a literal, loop-based transcription of Algorithm 1 (Chalvidal et al., 2022)."""

import itertools

import pytest
import torch

from metods_evo.config import ModelConfig
from metods_evo.models.metods import MetODS, coefficient_offset


def reference_step(model: MetODS, p: dict, w: torch.Tensor, obs, prev_action: int, prev_reward: float, pre=None,
                   out=None):
    """One agent, one step, float64, written exactly as the paper's equations (no batching tricks). ``pre``
    (write_pre = 'previous'): the previous step's [v_0, ..., v_{S-1}], the writes' right-hand vectors; the step
    also returns its own. ``out`` (feedback = 'diagonal'): the previous step's v_S, added as c_i * v_S,i to f's
    pre-activation; the step returns its own v_S last."""
    cfg, n = model.cfg, model.cfg.n
    sigma = model.sigma
    onehot = torch.zeros(model.num_actions, dtype=torch.float64)
    if prev_action >= 0:
        onehot[prev_action] = 1.0
    x = torch.cat([obs, onehot, torch.tensor([prev_reward], dtype=torch.float64)])
    if cfg.action_reward_inputs:
        x = torch.cat([x, onehot * prev_reward])
    if "f_hidden_w" in p:
        x = sigma(p["f_hidden_w"] @ x + p["f_hidden_b"])
    pre_activation = p["f_w"] @ x + p["f_b"]
    if out is not None:
        pre_activation = pre_activation + p["feedback_c"] * out
    v = [sigma(pre_activation)]
    ws = [w]

    def u(vec):
        if cfg.write == "linear":
            return p["write_l"] @ vec
        if cfg.write == "mlp":
            return p["write_o_w"] @ torch.tanh(p["write_h_w"] @ vec + p["write_h_b"]) + p["write_o_b"]
        return vec

    alpha = p["alpha"] if cfg.alpha == "matrix" else p["alpha"][0] * torch.ones(n, n, dtype=torch.float64)
    for s in range(1, cfg.depth + 1):
        kappa = [p["kappa"][coefficient_offset(s) + l] for l in range(s + 1)]
        beta = [p["beta"][coefficient_offset(s) + l] for l in range(s + 1)]
        v_s = kappa[s] * sigma(ws[s - 1] @ v[s - 1])
        w_s = beta[s] * (alpha * torch.outer(v[s - 1], u(v[s - 1] if pre is None else pre[s - 1])))
        for l in range(s):
            v_s = v_s + kappa[l] * v[l]
            w_s = w_s + beta[l] * ws[l]
        v.append(v_s)
        ws.append(w_s)
    w_t = ws[-1].clamp(-cfg.plastic_bound, cfg.plastic_bound) if cfg.plastic_bound > 0 else ws[-1]
    g_in = sigma(p["g_hidden_w"] @ v[-1] + p["g_hidden_b"]) if "g_hidden_w" in p else v[-1]
    return p["policy_w"] @ g_in + p["policy_b"], (p["value_w"] @ g_in + p["value_b"])[0], w_t, v[:-1], v[-1]


VARIANTS = [dict(depth=d, alpha=a, write=wr) for d, a, wr in
            itertools.product([1, 2, 3, 4], ["matrix", "scalar"], ["hebbian", "linear", "mlp"])]
VARIANTS += [dict(depth=d, alpha="matrix", write=wr, write_pre="previous") for d, wr in
             itertools.product([1, 2, 3], ["hebbian", "linear", "mlp"])]
VARIANTS += [dict(depth=d, alpha="matrix", write=wr, feedback="diagonal", **pre) for d, wr, pre in
             [(1, "hebbian", {}), (2, "linear", {}), (1, "hebbian", {"write_pre": "previous"}),
              (3, "mlp", {"write_pre": "previous"})]]


def random_theta(model: MetODS, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (model.init_params(g).double() + 0.3 * torch.randn(model.num_params, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"S{v['depth']}-{v['alpha']}-{v['write']}"
                         + ("-pre" if "write_pre" in v else "") + ("-feedback" if "feedback" in v else ""))
def test_batched_step_matches_reference(variant):
    cfg = ModelConfig(n=6, plastic_bound=1.5, embed_hidden=3 if variant["depth"] == 2 else 0,
                      readout_hidden=4 if variant["depth"] in (1, 3) else 0,
                      action_reward_inputs=variant["depth"] == 3, **variant)
    model = MetODS(cfg, obs_dim=5, num_actions=3)
    pop, agents, steps = 3, 4, 4
    g = torch.Generator().manual_seed(1)
    theta = torch.stack([random_theta(model, seed) for seed in range(pop)])
    params = model.spec.unflatten(theta)
    state = model.initial_state(params, agents)
    state["W"] = 0.5 * torch.randn(pop, agents, 6, 6, generator=g, dtype=torch.float64)
    ref_w = state["W"].clone()
    ref_pre = [[None if "pre" not in state else list(state["pre"][i, j]) for j in range(agents)] for i in range(pop)]
    ref_out = [[None if "out" not in state else state["out"][i, j] for j in range(agents)] for i in range(pop)]
    for t in range(steps):
        obs = torch.randn(pop, agents, 5, generator=g, dtype=torch.float64)
        act = torch.randint(-1 if t == 0 else 0, 3, (pop, agents), generator=g)
        rew = torch.randn(pop, agents, generator=g, dtype=torch.float64)
        with torch.no_grad():
            logits, value, state = model.step(params, state, obs, act, rew)
        for i, j in itertools.product(range(pop), range(agents)):
            p_i = {k: v[i] for k, v in params.items()}
            ref_logits, ref_value, ref_w[i, j], levels, v_s = reference_step(
                model, p_i, ref_w[i, j], obs[i, j], int(act[i, j]), float(rew[i, j]), ref_pre[i][j], ref_out[i][j])
            if "out" in state:
                ref_out[i][j] = v_s
                torch.testing.assert_close(state["out"][i, j], v_s, rtol=1e-9, atol=1e-9)
            if "pre" in state:
                ref_pre[i][j] = levels
                torch.testing.assert_close(state["pre"][i, j], torch.stack(levels), rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(logits[i, j], ref_logits, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(value[i, j], ref_value, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(state["W"], ref_w, rtol=1e-9, atol=1e-9)


def test_feedback_starts_as_the_papers_model():
    """feedback = 'diagonal' adds one leak per neuron, zero at init: from init_params it plays the paper's model's
    episodes exactly (the same theta for both, less the leak), and a non-zero leak changes them."""
    from metods_evo.rollout import rollout
    from metods_evo.tasks import make_task

    task = make_task("maze", size=6)
    plain = MetODS(ModelConfig(n=8, depth=1, write_pre="previous"), task.obs_dim, task.num_actions)
    fed = MetODS(ModelConfig(n=8, depth=1, write_pre="previous", feedback="diagonal"), task.obs_dim, task.num_actions)
    assert fed.num_params == plain.num_params + 8
    theta = fed.init_params(torch.Generator().manual_seed(0))
    params = fed.spec.unflatten(theta.unsqueeze(0))
    assert torch.equal(params["feedback_c"], torch.zeros(1, 8))
    plain_params = {k: v for k, v in params.items() if k != "feedback_c"}

    def play(model, p):
        with torch.no_grad():
            return rollout(model, p, task, 8, torch.Generator().manual_seed(3), action_mode="sample").rewards

    assert torch.equal(play(fed, params), play(plain, plain_params))
    assert not torch.equal(play(fed, {**params, "feedback_c": torch.full((1, 8), 2.0)}), play(plain, plain_params))


def test_depth_one_is_a_hebbian_update():
    cfg = ModelConfig(n=5, depth=1, plastic_bound=0.0)
    model = MetODS(cfg, obs_dim=4, num_actions=2)
    params = model.spec.unflatten(random_theta(model, 0).unsqueeze(0))
    w = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    obs = torch.randn(1, 1, 4, dtype=torch.float64)
    zero = torch.zeros(1, 1, dtype=torch.float64)
    with torch.no_grad():
        _, _, state = model.step(params, {"W": w}, obs, torch.tensor([[-1]]), zero)
        v0 = model.embed(params, obs, torch.tensor([[-1]]), zero)[0, 0]
    b0, b1 = params["beta"][0]
    hebbian = b0 * w[0, 0] + b1 * params["alpha"][0] * torch.outer(v0, v0)
    torch.testing.assert_close(state["W"][0, 0], hebbian)


def test_gradient_path_equals_no_grad_path():
    """The in-place (no-grad, ES) and out-of-place (autograd) code paths compute the same step."""
    model = MetODS(ModelConfig(n=8, depth=3), obs_dim=5, num_actions=3)
    params = model.spec.unflatten(torch.stack([random_theta(model, s).float() for s in range(2)]))
    w = torch.randn(2, 3, 8, 8)
    obs, act, rew = torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3)
    with torch.no_grad():
        a = model.step(params, {"W": w}, obs, act, rew)
    b = model.step(params, {"W": w}, obs, act, rew)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[2]["W"], b[2]["W"])


def test_population_forward_equals_per_individual_forward():
    model = MetODS(ModelConfig(n=10, depth=3), obs_dim=20, num_actions=3)
    theta = torch.stack([random_theta(model, s).float() for s in range(5)])
    params = model.spec.unflatten(theta)
    g = torch.Generator().manual_seed(0)
    state = model.initial_state(params, 7)
    singles = [model.initial_state(model.spec.unflatten(theta[i]), 7) for i in range(5)]
    for _ in range(6):
        obs, act = torch.randn(5, 7, 20, generator=g), torch.randint(-1, 3, (5, 7), generator=g)
        rew = torch.randn(5, 7, generator=g)
        with torch.no_grad():
            logits, _, state = model.step(params, state, obs, act, rew)
            for i in range(5):
                li, _, singles[i] = model.step(model.spec.unflatten(theta[i]), singles[i], obs[i:i + 1], act[i:i + 1],
                                               rew[i:i + 1])
                torch.testing.assert_close(logits[i:i + 1], li, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(state["W"][i:i + 1], singles[i]["W"], rtol=1e-5, atol=1e-6)


def test_param_vector_roundtrip_and_counts():
    for depth in (1, 2, 3):
        model = MetODS(ModelConfig(n=7, depth=depth), obs_dim=4, num_actions=2)
        assert model.spec.shapes[model.spec.names.index("kappa")] == (depth * (depth + 3) // 2,)
        theta = torch.randn(3, model.num_params)
        torch.testing.assert_close(model.spec.flatten(model.spec.unflatten(theta)), theta)
    scalar = MetODS(ModelConfig(n=7, alpha="scalar"), obs_dim=4, num_actions=2)
    assert scalar.spec.shapes[scalar.spec.names.index("alpha")] == (1,)


@pytest.mark.parametrize("w0", ["zero", "learnt", "random"])
def test_initial_state_variants(w0):
    model = MetODS(ModelConfig(n=6, w0=w0, w0_std=0.5), obs_dim=4, num_actions=2)
    theta = torch.randn(3, model.num_params)
    state = model.initial_state(model.spec.unflatten(theta), 5, torch.Generator().manual_seed(0))
    assert state["W"].shape == (3, 5, 6, 6)
    if w0 == "zero":
        assert state["W"].abs().max() == 0
    elif w0 == "learnt":
        torch.testing.assert_close(state["W"][1, 2], model.spec.unflatten(theta)["w0"][1])
    else:  # every individual sees the same W0 draws, each agent a different one
        torch.testing.assert_close(state["W"][0], state["W"][2])
        assert 0.3 < state["W"].std() < 0.7 and not torch.equal(state["W"][0, 0], state["W"][0, 1])


def test_plastic_bound_holds_under_huge_plasticity():
    model = MetODS(ModelConfig(n=6, plastic_bound=2.0), obs_dim=4, num_actions=2)
    params = model.spec.unflatten(model.init_params() * 0 + 50.0)
    state = model.initial_state(params, 3)
    for _ in range(20):
        with torch.no_grad():
            out, _, state = model.step(params, state, torch.ones(1, 3, 4), torch.zeros(1, 3, dtype=torch.long),
                                       torch.ones(1, 3))
    assert state["W"].abs().max() <= 2.0 and torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(3, 5, 20), (2, 4, 64)])
def test_both_matvec_formulations_agree(shape, monkeypatch):
    """The broadcast multiply-and-sum read (small CPU batches) and the batched matmul give the same W v."""
    from metods_evo.models import metods

    p, e, n = shape
    g = torch.Generator().manual_seed(0)
    w, v = torch.randn(p, e, n, n, generator=g), torch.randn(p, e, n, generator=g)
    reference = torch.einsum("peij,pej->pei", w.double(), v.double()).float()
    fast = metods.matvec(w, v)
    monkeypatch.setattr(metods, "MULSUM_MAX_ELEMENTS", 0)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metods.matvec(w, v), reference, rtol=1e-5, atol=1e-5)


def test_previous_step_write_stores_what_followed_what():
    """write_pre = 'previous', S = 1, hebbian: W_2 = beta0 W_1 + beta1 alpha * v0_2 (x) v0_1, with W_1 = beta0 W_0
    (no previous step at the start); and the step refuses to run without the previous vectors."""
    model = MetODS(ModelConfig(n=5, depth=1, plastic_bound=0.0, write_pre="previous"), obs_dim=4, num_actions=2)
    params = model.spec.unflatten(random_theta(model, 0).unsqueeze(0))
    g = torch.Generator().manual_seed(0)
    state = model.initial_state(params, 1)
    state["W"] = torch.randn(1, 1, 5, 5, generator=g, dtype=torch.float64)
    w0 = state["W"].clone()
    obs = [torch.randn(1, 1, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    prev = [(torch.tensor([[-1]]), torch.zeros(1, 1, dtype=torch.float64)),
            (torch.tensor([[1]]), torch.ones(1, 1, dtype=torch.float64))]
    with torch.no_grad():
        v0 = [model.embed(params, o, a, r)[0, 0] for o, (a, r) in zip(obs, prev)]
        for o, (a, r) in zip(obs, prev):
            _, _, state = model.step(params, state, o, a, r)
        with pytest.raises(ValueError, match="write_pre"):
            model.plastic_step(params, state["W"], v0[0].view(1, 1, 5))
    b0, b1 = params["beta"][0]
    expected = b0 * (b0 * w0[0, 0]) + b1 * params["alpha"][0] * torch.outer(v0[1], v0[0])
    torch.testing.assert_close(state["W"][0, 0], expected)
    torch.testing.assert_close(state["pre"][0, 0, 0], v0[1])
