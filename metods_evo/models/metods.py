"""The MetODS plastic layer with its embedding f and read-out g, functional and population-batched.

Per environment step (Algorithm 1 of Chalvidal et al., 2022), with W the plastic state:

    v0 = f(s_t, a_{t-1}, r_{t-1}),  W^(0) = W_{t-1}
    for s = 1..S:
        v_s = sum_{l<s} kappa_s^l v_l + kappa_s^s sigma(W^(s-1) v_{s-1})              (read)
        W^(s) = sum_{l<s} beta_s^l W^(l) + beta_s^s (alpha * v_{s-1} (x) u(v_{s-1}))  (write)
    (logits, value) = g(v_S),  W_t = W^(S)

with u(v) = v (hebbian), L v (linear) or MLP(v) (mlp). With ``model.write_pre = 'previous'`` (beyond the paper)
the write's right-hand factor is u of the same level's vector one env step earlier, v_{s-1}^(t-1), carried in the
state as ``pre``. With ``model.feedback = 'diagonal'`` (beyond the paper) f's pre-activation also gets
c * v_S of the previous env step (one learnt c_i per neuron, zero at init), carried in the state as ``out``.
``(x)`` is the outer product
(a (x) b)_{ij} = a_i b_j, and (W v)_i = sum_j W_ij v_j. kappa and beta hold S(S+3)/2 scalars each.

Every parameter tensor carries a leading population axis P and the plastic state is
``W: [P, E, N, N]`` for E agents per individual, so one call steps all P x E agents. Gradient
training uses the same code with P = 1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metods_evo.models import fused
from metods_evo.models.params import ParamSpec, action_input, linear

if TYPE_CHECKING:  # annotations only: config imports the model registry
    from metods_evo.config import ModelConfig

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


def coefficient_offset(s: int) -> int:
    """Index of kappa_s^0 (and beta_s^0) in the flat coefficient vector; step s has s + 1 coefficients."""
    return (s - 1) * (s + 2) // 2


class MetODS:
    """Stateless model: all weights come in as ``params`` (from ``spec.unflatten``), state in and out."""

    # The ModelConfig fields it reads (besides kind): a finished run of another model kind stays comparable when
    # these defaults change (experiments.plan_runs), and the other kinds' fields cannot change this one.
    config_fields = ("n", "depth", "activation", "alpha", "write", "write_hidden", "write_pre", "feedback", "w0",
                     "w0_std", "plastic_bound", "embed_hidden", "readout_hidden", "action_reward_inputs", "fused")

    def __init__(self, cfg: ModelConfig, obs_dim: int, num_actions: int, action_dim: int = 0):
        if (num_actions > 0) == (action_dim > 0):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        self.cfg, self.obs_dim, self.num_actions, self.action_dim = cfg, obs_dim, num_actions, action_dim
        self.sigma = ACTIVATIONS[cfg.activation]
        n, s, h = cfg.n, cfg.depth, cfg.embed_hidden
        self.input_dim = obs_dim + (max(num_actions, action_dim) * (2 if cfg.action_reward_inputs else 1)) + 1
        self.num_coefficients = s * (s + 3) // 2
        shapes: dict[str, tuple[int, ...]] = {}
        if h:
            shapes |= {"f_hidden_w": (h, self.input_dim), "f_hidden_b": (h,)}
        shapes |= {"f_w": (n, h or self.input_dim), "f_b": (n,)}
        if self.feeds_back:
            shapes |= {"feedback_c": (n,)}
        shapes |= {"alpha": (n, n) if cfg.alpha == "matrix" else (1,)}
        shapes |= {"kappa": (self.num_coefficients,), "beta": (self.num_coefficients,)}
        if cfg.w0 == "learnt":
            shapes |= {"w0": (n, n)}
        if cfg.write == "linear":
            shapes |= {"write_l": (n, n)}
        elif cfg.write == "mlp":
            shapes |= {"write_h_w": (cfg.write_hidden, n), "write_h_b": (cfg.write_hidden,),
                       "write_o_w": (n, cfg.write_hidden), "write_o_b": (n,)}
        out, g_in = num_actions or action_dim, cfg.readout_hidden or n
        if cfg.readout_hidden:
            shapes |= {"g_hidden_w": (cfg.readout_hidden, n), "g_hidden_b": (cfg.readout_hidden,)}
        shapes |= {"policy_w": (out, g_in), "policy_b": (out,), "value_w": (1, g_in), "value_b": (1,)}
        if action_dim:
            shapes |= {"log_std": (action_dim,)}
        self.spec = ParamSpec(tuple(shapes), tuple(shapes.values()))
        # the entries of theta that shape the plastic dynamics (alpha, kappa, beta, W0, the write rule), not f or g
        self.plasticity = tuple(name for name in shapes if name in ("alpha", "kappa", "beta", "w0")
                                or name.startswith("write_"))

    @property
    def num_params(self) -> int:
        return self.spec.num_params

    # ------------------------------------------------------------------ initial values
    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A sensible starting theta ``[D]``: fan-in scaled weights, carry-over of W, modest plasticity.

        kappa starts as v_s = v_{s-1} + sigma(W v_{s-1}) (a residual read, so v never collapses to 0
        when W0 = 0) and beta as W^(s) = W^(s-1) + 0.1 * 0.5 alpha * v (x) u.
        """
        cfg, values = self.cfg, {}
        for name, shape in zip(self.spec.names, self.spec.shapes):
            if name.endswith("_w") or name == "write_l":
                values[name] = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
            else:
                values[name] = torch.zeros(shape)
        values["alpha"] = torch.full(self.spec.shapes[self.spec.names.index("alpha")], 0.5)
        for s in range(1, cfg.depth + 1):
            k = coefficient_offset(s)
            values["kappa"][k + s - 1] = 1.0
            values["kappa"][k + s] = 1.0
            values["beta"][k + s - 1] = 1.0
            values["beta"][k + s] = 0.1
        if "log_std" in values:
            values["log_std"] = torch.full_like(values["log_std"], -0.5)
        return self.spec.flatten({k: v.unsqueeze(0) for k, v in values.items()})[0]

    def initial_weights(self, params: dict[str, Tensor], num_agents: int,
                        generator: torch.Generator | None = None) -> Tensor:
        """W0 before it is broadcast to ``[P, E, N, N]``: ``[P, 1, N, N]`` (learnt: one per individual),
        ``[1, E, N, N]`` (random: the same E draws for every individual) or ``[1, 1, N, N]`` (zero)."""
        n, ref = self.cfg.n, params["f_b"]
        if self.cfg.w0 == "learnt":
            return params["w0"].unsqueeze(1)
        if self.cfg.w0 == "random":
            w = torch.randn(num_agents, n, n, generator=generator, device=ref.device, dtype=ref.dtype) * self.cfg.w0_std
            return w.unsqueeze(0)
        return ref.new_zeros(1, 1, n, n)

    def initial_state(self, params: dict[str, Tensor], num_agents: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Plastic state at episode start: ``{"W": [P, E, N, N]}``, and with ``write_pre = 'previous'`` the
        previous step's vectors v_0..v_{S-1}, ``"pre": [P, E, S, N]``, zero at an episode's start (no previous step)."""
        p, n = params["f_b"].shape[0], self.cfg.n
        return self.start_state(self.initial_weights(params, num_agents, generator).expand(p, num_agents, n, n).clone())

    def start_state(self, w0: Tensor) -> dict[str, Tensor]:
        """The state at an episode's start from its weights ``w0 [..., N, N]``: ``{"W": w0}``, plus the zero previous
        vectors ``"pre"`` where ``write_pre = 'previous'`` and the zero previous output ``"out"`` where
        ``feedback = 'diagonal'``."""
        state = {"W": w0}
        if self.writes_previous:
            state["pre"] = w0.new_zeros(*w0.shape[:-2], self.cfg.depth, w0.shape[-1])
        if self.feeds_back:
            state["out"] = w0.new_zeros(*w0.shape[:-1])
        return state

    @property
    def writes_previous(self) -> bool:
        return self.cfg.write_pre == "previous"

    @property
    def feeds_back(self) -> bool:
        return self.cfg.feedback == "diagonal"

    def replay_state(self, params: dict[str, Tensor], state0: dict[str, Tensor]) -> dict[str, Tensor]:
        """The start state of recorded episodes (``state0``, their ``initial_state``) under ``params``, for
        ``rollout.replay``: a learnt W0 is taken from ``params`` again, so that the replayed loss has a gradient
        for it (the recording is detached); a zero or random W0 is the recorded one."""
        if self.cfg.w0 != "learnt":
            return dict(state0)
        return {**state0, "W": params["w0"].unsqueeze(1).expand_as(state0["W"])}

    def state_stats(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """How full the plastic memory is in ``state`` (the gradient trainers log it every update, so a saturating
        memory shows in ``metrics.csv`` without running ``analyze``): mean |W| over all entries, and the fraction
        of entries at the clip +-``plastic_bound`` (NaN where W is not clipped)."""
        w_abs, bound = state["W"].detach().abs(), self.cfg.plastic_bound
        at_bound = (w_abs >= bound).float().mean() if bound > 0 else w_abs.new_tensor(math.nan)
        return {"plastic/mean_abs_w": w_abs.mean(), "plastic/w_at_bound": at_bound}

    # ------------------------------------------------------------------ forward
    def embed(self, params: dict[str, Tensor], obs: Tensor, prev_action: Tensor, prev_reward: Tensor,
              feedback: Tensor | None = None) -> Tensor:
        """f: ``[P, E, obs]``, prev action (int64 ``[P, E]``, -1 = none; or float ``[P, E, A]``), reward -> v0.
        ``feedback [P, E, N]`` (``feedback = 'diagonal'``): the previous step's v_S, added as c * v_S to the
        pre-activation (``state["out"]``; ``step`` passes it)."""
        if self.feeds_back and feedback is None:
            raise ValueError("model.feedback = 'diagonal' needs the previous step's output: pass feedback (see step)")
        action_in = action_input(prev_action, self.num_actions, obs.dtype)
        reward = prev_reward.unsqueeze(-1).to(obs.dtype)
        parts = [obs, action_in, reward] + ([action_in * reward] if self.cfg.action_reward_inputs else [])
        x = torch.cat(parts, dim=-1)
        if "f_hidden_w" in params:
            x = self.sigma(linear(x, params["f_hidden_w"], params["f_hidden_b"]))
        pre_activation = linear(x, params["f_w"], params["f_b"])
        if self.feeds_back:
            pre_activation = pre_activation + params["feedback_c"].unsqueeze(1) * feedback
        return self.sigma(pre_activation)

    def write_vector(self, params: dict[str, Tensor], v: Tensor) -> Tensor:
        """u(v), the right-hand factor of the outer product of the write."""
        if self.cfg.write == "linear":
            return linear(v, params["write_l"], None)
        if self.cfg.write == "mlp":
            hidden = torch.tanh(linear(v, params["write_h_w"], params["write_h_b"]))
            return linear(hidden, params["write_o_w"], params["write_o_b"])
        return v

    def plastic_step(self, params: dict[str, Tensor], w: Tensor, v0: Tensor,
                     pre: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The S read / write recursions. ``w [P, E, N, N]``, ``v0 [P, E, N]`` -> (``v_S``, ``W_t``).
        ``pre [P, E, S, N]`` (``write_pre = 'previous'``): the previous step's v_0..v_{S-1}, whose u(.) the S writes
        take as their right-hand factor; ``plastic_sweep`` also returns this step's, the next step's ``pre``.

        Every intermediate W^(s) is a combination c_s W^(0) + alpha * sum_k D[s,k] v_k (x) u_k of the
        incoming weights and the S outer products (by induction on the write rule), so we track the
        scalars c and D instead of materializing W^(1..S-1): a read costs one W^(0) matvec plus cheap
        alpha terms, and W is written once per environment step. This is exact, not an approximation;
        ``tests/test_model.py`` checks it against a literal transcription of the recursions.
        ``plastic_bound`` clips the carried W_t (not the transient W^(s) inside a step). Large no-grad steps with the
        hebbian or linear write go to the fused C++ kernel (``model.fused``, ``metods_evo/models/fused.py``).
        """
        if self.writes_previous and pre is None:
            raise ValueError("model.write_pre = 'previous' needs the previous step's vectors: pass pre (see step)")
        if pre is None and fused.should_fuse(self, params, w, v0):  # the same step in one C++ pass over each W
            return fused.fused_plastic_step(self, params, w, v0)
        vs, w_new = self.plastic_sweep(params, w, v0, pre)
        return vs[-1], w_new

    def plastic_sweep(self, params: dict[str, Tensor], w: Tensor, v0: Tensor,
                      pre: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """``plastic_step`` by the eager kernels -> ([v_0, ..., v_S], ``W_t``)."""
        kappa, beta, alpha = params["kappa"], params["beta"], params["alpha"]  # [P, C], [P, C], [P, N, N] | [P, 1]
        pop = kappa.shape[0]
        grad = torch.is_grad_enabled()

        def col(x: Tensor) -> Tensor:  # [P] -> [P, 1, 1], broadcasting over agents and neurons
            return x.view(pop, 1, 1)

        vs, us = [v0], []
        c = [kappa.new_ones(pop)]  # c[s]: coefficient of W^(0) in W^(s)
        d: list[list[Tensor]] = [[]]  # d[s][k]: coefficient of alpha * v_k (x) u_k in W^(s), k < s
        for s in range(1, self.cfg.depth + 1):
            off = coefficient_offset(s)
            v_prev = vs[-1]
            us.append(self.write_vector(params, v_prev if pre is None else pre[..., s - 1, :]))
            read = col(c[s - 1]) * matvec(w, v_prev)
            for k, coef in enumerate(d[s - 1]):
                read = read + col(coef) * self._alpha_outer_times(alpha, vs[k], us[k], v_prev)
            v_new = col(kappa[:, off + s]) * self.sigma(read)
            for l in range(s):
                v_new = v_new + col(kappa[:, off + l]) * vs[l]
            b = [beta[:, off + l] for l in range(s + 1)]
            c.append(sum(b[l] * c[l] for l in range(s)))
            d.append([sum(b[l] * d[l][k] for l in range(k + 1, s)) + (b[s] if k == s - 1 else 0.0)
                      for k in range(s)])
            vs.append(v_new)
        # W_t = c_S W^(0) + alpha * (V diag(d_S) U^T): one batched matmul writes the new weights.
        scaled_v = torch.stack([col(coef) * v for coef, v in zip(d[-1], vs)], dim=-1)  # [P, E, N, S]
        outer = torch.matmul(scaled_v, torch.stack(us, dim=-2))  # [P, E, N, N]
        alpha_w = alpha.unsqueeze(1) if alpha.dim() == 3 else alpha.view(pop, 1, 1, 1)
        carry = c[-1].view(pop, 1, 1, 1)
        bound = self.cfg.plastic_bound
        if grad:  # the same kernels as below, out of place: replaying an episode must reproduce it bit for bit
            w_new = torch.addcmul(outer * alpha_w, w, carry)
            return vs, (w_new.clamp(-bound, bound) if bound > 0 else w_new)
        w_new = outer.mul_(alpha_w).addcmul_(w, carry)  # in place: no [P, E, N, N] temporaries
        return vs, (w_new.clamp_(-bound, bound) if bound > 0 else w_new)

    @staticmethod
    def _alpha_outer_times(alpha: Tensor, v_k: Tensor, u_k: Tensor, v: Tensor) -> Tensor:
        """(alpha * v_k (x) u_k) v = v_k * (alpha (u_k * v)), without forming the N x N product per agent."""
        if alpha.dim() == 3:
            return v_k * torch.matmul(u_k * v, alpha.transpose(-1, -2))
        return alpha.view(-1, 1, 1) * v_k * (u_k * v).sum(-1, keepdim=True)

    def heads(self, params: dict[str, Tensor], v: Tensor) -> tuple[Tensor, Tensor]:
        """g: policy output (logits or Gaussian mean, ``[P, E, A]``) and value ``[P, E]``."""
        if "g_hidden_w" in params:  # model.readout_hidden: one shared hidden layer before both heads
            v = self.sigma(linear(v, params["g_hidden_w"], params["g_hidden_b"]))
        value = linear(v, params["value_w"], params["value_b"])[..., 0]
        return linear(v, params["policy_w"], params["policy_b"]), value

    def step(self, params: dict[str, Tensor], state: dict[str, Tensor], obs: Tensor, prev_action: Tensor,
             prev_reward: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One environment step for all P x E agents -> (policy output, value, new state)."""
        v0 = self.embed(params, obs, prev_action, prev_reward, state.get("out"))
        v, state = self.plastic_update(params, state, v0)
        out, value = self.heads(params, v)
        return out, value, state

    def plastic_update(self, params: dict[str, Tensor], state: dict[str, Tensor],
                       v0: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The plastic layer on a whole state (what ``step`` runs between f and g) -> (``v_S``, the next state)."""
        if not self.writes_previous:
            v, w = self.plastic_step(params, state["W"], v0)
            new_state = {"W": w}
        else:
            vs, w = self.plastic_sweep(params, state["W"], v0, state["pre"])
            v, new_state = vs[-1], {"W": w, "pre": torch.stack(vs[:-1], dim=-2)}
        if self.feeds_back:
            new_state["out"] = v
        return v, new_state


# Below this many elements of W, a CPU batch of tiny mat-vecs is ~2x faster as one broadcast multiply and a
# row sum than as a batched matmul (measured for N = 20 and 64, P x E = 1024-4096); above it, the product
# no longer fits in cache and the matmul wins (benchmarks/roofline.py shows the step's rates).
MULSUM_MAX_ELEMENTS = 1 << 23


def matvec(w: Tensor, v: Tensor) -> Tensor:
    """``W v`` for a batch: ``w [..., N, N]``, ``v [..., N]`` -> ``[..., N]``, by the faster formulation here."""
    if w.device.type == "cpu" and w.numel() <= MULSUM_MAX_ELEMENTS:
        return (w * v.unsqueeze(-2)).sum(-1)
    return torch.matmul(w, v.unsqueeze(-1)).squeeze(-1)

