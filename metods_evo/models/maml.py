"""MAML (Finn et al., 2017) as a within-episode baseline: an MLP policy adapted by policy-gradient steps on the
first K steps of its own episode, its initialization meta-trained. Functional and population-batched.

The variant, and why:

* **Policy.** Two tanh hidden layers of ``cfg.maml.hidden`` units on the observation alone (as in MAML, the
  policy gets no previous action or reward: its only memory is the gradient step), then logits (discrete)
  or the mean of a diagonal Gaussian with a state-independent ``log_std`` (continuous, init -0.5).
* **When.** Steps 0..K-1 (K = ``cfg.maml.adapt_steps``, counted in environment steps) are played with the
  meta-initialization theta_0. At step K each agent takes ``cfg.maml.inner_steps`` REINFORCE steps on its
  own K transitions and plays the rest of its episode with the adapted weights theta_n:

      theta_{i+1} = theta_i + lr * grad_theta (1/K) sum_{t<K} log pi_theta(a_t | s_t) G_t,
      G_t = sum_{t <= t' < K} r_t'   (undiscounted reward-to-go inside the window), lr = cfg.maml.inner_lr.

  Undiscounted because the window is short and the step must weigh a late reward (Harlow's choice) fully.
  No baseline: MAML-RL's baseline is fitted on several trajectories of one task, and each agent has a single
  one; the meta-learnt initialization absorbs the variance instead (that is what MAML optimizes for), and
  a window without reward leaves theta_0 unchanged. The mean over the K steps (Finn et al.'s surrogate is a
  mean over time steps too) keeps lr meaningful whatever K. Several inner steps reuse the same K transitions
  (no importance correction), as supervised MAML does.
* **K is explicit.** The model does not know the task, and an episode may end long before ``max_steps``
  (Harlow's five trials take 10 of its 30 steps when played well), so "half the episode" has no meaning
  to it. The default 2 is Harlow's first trial at full speed (fixate, choose: the first reward lands at step
  1), the only one a one-shot learner needs; longer tasks want more (e.g. maze ~50, locomotion ~100).
  A K beyond the episode never adapts: that is the "plain MLP" ablation.
* **Second order.** When the caller differentiates (A2C's rollout, PPO's replay: grad mode on and theta
  requiring grad), the inner gradient is taken with ``create_graph=True`` and the outer gradient flows
  through it (full MAML); ``cfg.maml.first_order`` detaches it (FOMAML: d theta_n / d theta_0 = I). Under
  ``torch.no_grad`` (ES, PPO's acting rollout, ``load_agent``) the inner gradient is computed inside
  ``torch.enable_grad`` on detached copies and its result detached again, so nothing leaks out.
  ``bptt_truncate`` cuts the state, adapted weights included, like any model state.
* **Not adapted.** ``log_std`` is a parameter the rollout reads directly (``params["log_std"]``), so it stays
  theta_0's. The critic is a linear map of theta_0's last hidden layer plus an "adapted" indicator (so it
  can tell the two phases apart); it is never adapted and takes no part in the inner loss.
* **Approximation (continuous tasks).** The model sees the previous action as the environment got it, i.e.
  clipped into the task's bounds, so the inner log-likelihood is that of the clipped action.

Memory: ``{"inner_obs": [P, E, n, obs], "inner_actions": [P, E, m] (or [P, E, m, A]), "inner_rewards": [P, E, m],
"fast_<w>"}`` (names that do not collide with the rollout's trace keys ``obs`` / ``action``).
The buffers grow by one entry per step up to K (n observations, m <= n completed transitions), so the step
number is a *shape*: deciding when to adapt never reads a tensor (no host sync on a GPU). ``fast_<w>`` hold
each agent's adapted weights ``[P, E, *shape]`` after step K and are empty ``[P, E, 0]`` before. Before K the
P x E agents share their individual's weights (batched matmuls over P); after it, one batched matmul over
P x E per-agent weight sets.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metods_evo.models.params import ParamSpec, linear

if TYPE_CHECKING:  # annotations only: config imports the model registry
    from metods_evo.config import ModelConfig

ADAPTED = ("hidden1_w", "hidden1_b", "hidden2_w", "hidden2_b", "policy_w", "policy_b")
"""The policy weights the inner loop adapts (all of them but log_std; the critic is separate)."""


class MAML:
    """Stateless MLP policy with within-episode gradient adaptation: weights in ``params``, memory in ``state``."""

    config_fields = ("maml",)
    plasticity: tuple[str, ...] = ()  # no plastic weights: nothing of theta shapes within-episode plasticity

    def __init__(self, cfg: ModelConfig, obs_dim: int, num_actions: int, action_dim: int = 0):
        if (num_actions > 0) == (action_dim > 0):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        if cfg.maml.adapt_steps < 1 or cfg.maml.inner_steps < 1:
            raise ValueError("model.maml.adapt_steps and model.maml.inner_steps must be >= 1")
        self.cfg, self.obs_dim, self.num_actions, self.action_dim = cfg, obs_dim, num_actions, action_dim
        self.adapt_steps = cfg.maml.adapt_steps
        h, out = cfg.maml.hidden, num_actions or action_dim
        shapes: dict[str, tuple[int, ...]] = {
            "hidden1_w": (h, obs_dim), "hidden1_b": (h,), "hidden2_w": (h, h), "hidden2_b": (h,),
            "policy_w": (out, h), "policy_b": (out,), "value_w": (1, h + 1), "value_b": (1,),
        }
        if action_dim:
            shapes["log_std"] = (action_dim,)
        self.spec = ParamSpec(tuple(shapes), tuple(shapes.values()))

    @property
    def num_params(self) -> int:
        return self.spec.num_params

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A starting theta ``[D]``: fan-in scaled weights, zero biases, log_std -0.5 (as MetODS)."""
        values = {}
        for name, shape in zip(self.spec.names, self.spec.shapes):
            if name.endswith("_w"):
                values[name] = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
            else:
                values[name] = torch.zeros(shape)
        if "log_std" in values:
            values["log_std"] = torch.full_like(values["log_std"], -0.5)
        return self.spec.flatten({k: v.unsqueeze(0) for k, v in values.items()})[0]

    def initial_state(self, params: dict[str, Tensor], num_agents: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Episode start: empty buffers and no adapted weights (module docstring)."""
        ref = params["hidden1_b"]
        batch = (ref.shape[0], num_agents)
        if self.num_actions:
            actions = torch.zeros(*batch, 0, dtype=torch.long, device=ref.device)
        else:
            actions = ref.new_zeros(*batch, 0, self.action_dim)
        state = {"inner_obs": ref.new_zeros(*batch, 0, self.obs_dim), "inner_actions": actions,
                 "inner_rewards": ref.new_zeros(*batch, 0)}
        return state | {f"fast_{name}": ref.new_zeros(*batch, 0) for name in ADAPTED}

    # ------------------------------------------------------------------ the policy
    def policy(self, weights: dict[str, Tensor], obs: Tensor) -> tuple[Tensor, Tensor]:
        """(policy output, last hidden layer) of the MLP. ``weights`` are an individual's (``[P, out, in]``, obs
        ``[P, E, obs]``) or an agent's own (``[P, E, out, in]``, obs ``[P, E, T, obs]``)."""
        h = torch.tanh(_dense(obs, weights["hidden1_w"], weights["hidden1_b"]))
        h = torch.tanh(_dense(h, weights["hidden2_w"], weights["hidden2_b"]))
        return _dense(h, weights["policy_w"], weights["policy_b"]), h

    def log_prob(self, out: Tensor, action: Tensor, log_std: Tensor | None) -> Tensor:
        """log pi(action) for outputs ``[P, E, T, A]``: categorical logits, or a Gaussian mean (``log_std [P, A]``)."""
        if self.num_actions:
            return torch.log_softmax(out, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
        log_std = log_std.view(log_std.shape[0], 1, 1, -1)
        z = (action - out) / log_std.exp()
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def adapt(self, params: dict[str, Tensor], obs: Tensor, actions: Tensor, rewards: Tensor) -> dict[str, Tensor]:
        """The inner loop: each agent's weights after ``model.maml.inner_steps`` REINFORCE steps on its own transitions
        (``obs [P, E, K, obs]``, ``actions [P, E, K(, A)]``, ``rewards [P, E, K]``) -> ``{name: [P, E, *shape]}``.

        Agents' weights are independent copies, so the gradient of the summed objective is every agent's own
        gradient, all in one ``autograd.grad`` call."""
        outer = torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
        create_graph = outer and not self.cfg.maml.first_order
        pop, agents = obs.shape[:2]
        fast = {n: params[n].unsqueeze(1).expand(pop, agents, *params[n].shape[1:]) for n in ADAPTED}
        log_std = params.get("log_std")
        if not outer:
            fast = {n: w.detach() for n, w in fast.items()}
            log_std = None if log_std is None else log_std.detach()
        returns = rewards.flip(-1).cumsum(-1).flip(-1)
        for _ in range(self.cfg.maml.inner_steps):
            with torch.enable_grad():  # ES calls us under no_grad: the inner loop needs a gradient regardless
                if not outer:
                    fast = {n: w.detach().requires_grad_() for n, w in fast.items()}
                out, _ = self.policy(fast, obs)
                objective = (self.log_prob(out, actions, log_std) * returns).mean(-1).sum()
                grads = torch.autograd.grad(objective, tuple(fast.values()), create_graph=create_graph)
            fast = {n: w + self.cfg.maml.inner_lr * g for (n, w), g in zip(fast.items(), grads)}
        return fast if outer else {n: w.detach() for n, w in fast.items()}

    # ------------------------------------------------------------------ forward
    def step(self, params: dict[str, Tensor], state: dict[str, Tensor], obs: Tensor, prev_action: Tensor,
             prev_reward: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One environment step for all P x E agents -> (policy output ``[P, E, A]``, value ``[P, E]``, state)."""
        k, state = self.adapt_steps, dict(state)
        seen, completed = state["inner_obs"].shape[2], state["inner_actions"].shape[2]
        if seen > completed:  # steps 1..K: the previous action and reward complete the transition from obs[completed]
            action = prev_action if self.num_actions else prev_action.to(obs.dtype)
            state["inner_actions"] = torch.cat([state["inner_actions"], action.unsqueeze(2)], dim=2)
            reward = prev_reward.to(obs.dtype).unsqueeze(2)
            state["inner_rewards"] = torch.cat([state["inner_rewards"], reward], dim=2)
            if completed + 1 == k:
                fast = self.adapt(params, state["inner_obs"], state["inner_actions"], state["inner_rewards"])
                state |= {f"fast_{name}": w for name, w in fast.items()}
        if seen < k:
            state["inner_obs"] = torch.cat([state["inner_obs"], obs.unsqueeze(2)], dim=2)
        out, hidden = self.policy(params, obs)
        adapted = state["inner_actions"].shape[2] == k
        if adapted:
            fast = {name: state[f"fast_{name}"] for name in ADAPTED}
            out = self.policy(fast, obs.unsqueeze(2))[0].squeeze(2)
        phase = hidden.new_full((*hidden.shape[:-1], 1), float(adapted))
        value = linear(torch.cat([hidden, phase], dim=-1), params["value_w"], params["value_b"])[..., 0]
        return out, value, state


def _dense(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """An individual's linear map (``weight [P, out, in]``, x ``[P, E, in]``) or each agent's own one (``weight
    [P, E, out, in]``, x ``[P, E, T, in]``)."""
    if weight.dim() == 3:
        return linear(x, weight, bias)
    return torch.matmul(x, weight.transpose(-1, -2)) + bias.unsqueeze(-2)
