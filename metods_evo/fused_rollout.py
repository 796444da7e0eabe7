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
  step the fused kernel supports (hebbian or linear write, S <= 4), a ``HarlowTask`` on the CPU, float32, no
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

import torch
from torch import Tensor

from metods_evo.episodes import RolloutResult, reset_episodes
from metods_evo.models import fused
from metods_evo.models.metods import MetODS
from metods_evo.tasks.harlow import CENTRE, HarlowTask

ROLLOUT_VERSION = 4
"""Part of the extension's name with ``fused.KERNEL_VERSION`` (whose source it includes): bump it whenever
``ROLLOUT_SOURCE`` changes (v2: without the unused margins output, all parameter shapes checked; v3: threads claim
blocks from a shared counter; v4: one scratch buffer per thread instead of one per claim)."""
STATE_KEYS = ("left", "pos", "choice", "trials", "t", "done")
"""The Harlow state the kernel returns per agent (``HarlowTask``'s keys besides objects and good)."""
PARAMS = ("f_hidden_w", "f_hidden_b", "f_w", "f_b", "alpha", "kappa", "beta", "write_l", "policy_w", "policy_b")
"""The parameters the kernel reads, in the order it takes them (absent ones as empty tensors)."""

ROLLOUT_SOURCE = r"""
namespace {

// One parameter of the population: individual p's values at data + p * stride (stride 0: shared by all).
struct Param {
  const float* data;
  int64_t stride;
  const float* at(int64_t p) const { return data == nullptr ? nullptr : data + p * stride; }
};

Param param(const at::Tensor& t) {
  if (t.numel() == 0) return {nullptr, 0};
  return {t.data_ptr<float>(), t.size(0) == 1 ? int64_t{0} : t.numel() / t.size(0)};
}

struct HarlowRollout {
  Param f_hidden_w, f_hidden_b, f_w, f_b, alpha, kappa, beta, write_l, policy_w, policy_b, w_init;
  int64_t w_init_episode_stride;  // W0 of episode e at w_init.at(p) + e * this (0: one per individual)
  int64_t n, hidden, in_dim, actions, activation;
  bool alpha_matrix, action_reward_inputs;
  float bound;
  const float* objects; const int64_t* good; const float* uniforms;  // [E][2][D], [E], [max_steps][E]
  int64_t pop, episodes, object_dim, num_trials, max_steps;
  float* rewards;    // [max_steps][P][E], zeros on entry
  int64_t* state;    // [6][P * E]: left, pos, choice, trials, t, done after the episode
  bool* finite;      // [P * E]
};

// y = sigma(weight x + bias) for kW agents: weight [rows][cols] (broadcast scalars), x [cols][kW], y [rows][kW].
// Four rows at a time: four independent FMA chains and one load of x[j] for them.
template <typename V>
void dense(const float* weight, const float* bias, int64_t rows, int64_t cols, const float* x, float* y,
           int64_t activation) {
  constexpr int64_t kW = V::size();
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const float* w_row = weight + i * cols;
    V acc0(0.f), acc1(0.f), acc2(0.f), acc3(0.f);
    for (int64_t j = 0; j < cols; ++j) {
      const V xj = V::loadu(x + j * kW);
      acc0 = vfmadd(V(w_row[j]), xj, acc0);
      acc1 = vfmadd(V(w_row[cols + j]), xj, acc1);
      acc2 = vfmadd(V(w_row[2 * cols + j]), xj, acc2);
      acc3 = vfmadd(V(w_row[3 * cols + j]), xj, acc3);
    }
    activate(acc0 + V(bias[i]), activation).store(y + i * kW);
    activate(acc1 + V(bias[i + 1]), activation).store(y + (i + 1) * kW);
    activate(acc2 + V(bias[i + 2]), activation).store(y + (i + 2) * kW);
    activate(acc3 + V(bias[i + 3]), activation).store(y + (i + 3) * kW);
  }
  for (; i < rows; ++i) {
    const float* w_row = weight + i * cols;
    V acc(0.f);
    for (int64_t j = 0; j < cols; ++j) acc = vfmadd(V(w_row[j]), V::loadu(x + j * kW), acc);
    activate(acc + V(bias[i]), activation).store(y + i * kW);
  }
}

// The whole rollout of kW episodes (e0 ..) of individual p; returns the agent-steps it computed.
template <typename V, int kS, bool kMatrix>
int64_t harlow_block(const HarlowRollout& st, int64_t p, int64_t e0, float* scratch) {
  constexpr int64_t kW = V::size();
  const int64_t n = st.n, nn = n * n, dim = st.object_dim, actions = st.actions, agents = st.pop * st.episodes;
  float c[kS + 1], d[(kS + 1) * kS];
  coefficients(st.beta.at(p), kS, c, d);
  float* w = scratch;                                                     // [N][N][kW], updated in place
  float* v = w + nn * kW;                                                 // v_0..v_S [S + 1][N][kW]
  float* u = st.write_l.data != nullptr ? v + (kS + 1) * n * kW : v;      // [S][N][kW] (hebbian: u = v)
  float* z = v + (2 * kS + 1) * n * kW;                                   // [S][N][kW]
  float* x = z + kS * n * kW;                                             // the input of f [in][kW]
  float* hidden = x + st.in_dim * kW;                                     // [H][kW]
  float* logits = hidden + st.hidden * kW;                                // [A][kW]
  if (st.w_init.data == nullptr) {
    std::fill(w, w + nn * kW, 0.f);
  } else {
    for (int64_t lane = 0; lane < kW; ++lane) {
      const float* src = st.w_init.at(p) + (e0 + lane) * st.w_init_episode_stride;
      for (int64_t k = 0; k < nn; ++k) w[k * kW + lane] = src[k];
    }
  }
  const float* alpha = st.alpha.at(p);
  LanesBlock b{n, kW, w, w, alpha, st.kappa.at(p), st.write_l.at(p), n, c, d, v, u, z, alpha[0], st.bound,
               st.activation, nullptr, nullptr};
  int64_t left[kW], pos[kW], trials[kW], t[kW], action[kW];
  bool choice[kW], done[kW], finite[kW];
  float reward[kW];
  for (int64_t lane = 0; lane < kW; ++lane) {  // HarlowTask.reset: fixation at the centre, no previous action
    left[lane] = 0, pos[lane] = kCentre, trials[lane] = 0, t[lane] = 0, action[lane] = -1;
    choice[lane] = false, done[lane] = false, finite[lane] = true, reward[lane] = 0.f;
  }
  const int64_t action_at = 2 * dim + 4, reward_at = action_at + actions, product_at = reward_at + 1;
  int64_t step = 0;
  while (step < st.max_steps) {
    // the model's input: [observation (HarlowTask._observe), one-hot previous action, reward, (action * reward)]
    std::fill(x, x + st.in_dim * kW, 0.f);
    for (int64_t lane = 0; lane < kW; ++lane) {
      x[lane] = choice[lane] ? 0.f : 1.f;
      if (choice[lane]) {
        const float* shown = st.objects + (e0 + lane) * 2 * dim;
        const float* on_left = shown + left[lane] * dim;
        const float* on_right = shown + (1 - left[lane]) * dim;
        for (int64_t k = 0; k < dim; ++k) {
          x[(1 + k) * kW + lane] = on_left[k];
          x[(1 + dim + k) * kW + lane] = on_right[k];
        }
      }
      x[(1 + 2 * dim + pos[lane]) * kW + lane] = 1.f;
      if (action[lane] >= 0) x[(action_at + action[lane]) * kW + lane] = 1.f;
      x[reward_at * kW + lane] = reward[lane];
      if (st.action_reward_inputs && action[lane] >= 0) x[(product_at + action[lane]) * kW + lane] = reward[lane];
    }
    if (st.hidden > 0) {
      dense<V>(st.f_hidden_w.at(p), st.f_hidden_b.at(p), st.hidden, st.in_dim, x, hidden, st.activation);
      dense<V>(st.f_w.at(p), st.f_b.at(p), n, st.hidden, hidden, v, st.activation);
    } else {
      dense<V>(st.f_w.at(p), st.f_b.at(p), n, st.in_dim, x, v, st.activation);
    }
    lanes_sweep<V, kS, 1, kMatrix>(b);  // v_S, and W_t over W in place
    const float* v_last = v + kS * n * kW;
    const float* policy_w = st.policy_w.at(p);
    const float* policy_b = st.policy_b.at(p);
    for (int64_t a = 0; a < actions; ++a) {
      V acc(0.f);
      for (int64_t j = 0; j < n; ++j) acc = vfmadd(V(policy_w[a * n + j]), V::loadu(v_last + j * kW), acc);
      (acc + V(policy_b[a])).store(logits + a * kW);
    }
    bool all_done = true;
    for (int64_t lane = 0; lane < kW; ++lane) {
      if (done[lane]) continue;
      // greedy action as the rollout takes it: non-finite outputs flagged, nan_to_num, the first maximum
      int64_t best = 0;
      float best_value = 0.f;
      for (int64_t a = 0; a < actions; ++a) {
        float value = logits[a * kW + lane];
        if (!std::isfinite(value)) {
          finite[lane] = false;
          value = std::isnan(value) ? 0.f : (value > 0.f ? 1e6f : -1e6f);
        }
        if (a == 0 || value > best_value) best = a, best_value = value;
      }
      action[lane] = best;
      // HarlowTask.step for one live episode
      const int64_t e = e0 + lane;
      pos[lane] = std::min<int64_t>(2, std::max<int64_t>(0, pos[lane] + best - 1));
      const bool at_centre = pos[lane] == kCentre;
      const bool enter = !choice[lane] && at_centre, pick = choice[lane] && !at_centre;
      if (enter) left[lane] = st.uniforms[step * st.episodes + e] < 0.5f ? 1 : 0;
      float paid = 0.f;
      if (pick) {
        const int64_t chosen = pos[lane] == 0 ? left[lane] : 1 - left[lane];
        paid = chosen == st.good[e] ? 1.f : -1.f;
        trials[lane] += 1;
      }
      t[lane] += 1;
      choice[lane] = (choice[lane] || enter) && !pick;
      done[lane] = trials[lane] >= st.num_trials || t[lane] >= st.max_steps;
      reward[lane] = paid;
      st.rewards[step * agents + p * st.episodes + e] = paid;
      all_done = all_done && done[lane];
    }
    ++step;
    if (all_done) break;
  }
  for (int64_t lane = 0; lane < kW; ++lane) {
    const int64_t agent = p * st.episodes + e0 + lane;
    const int64_t values[6] = {left[lane], pos[lane], choice[lane], trials[lane], t[lane], done[lane]};
    for (int k = 0; k < 6; ++k) st.state[k * agents + agent] = values[k];
    st.finite[agent] = finite[lane];
  }
  return step * kW;
}

// Floats of scratch one block of kW episodes needs at depth S (W, the v_s and z_s, f's and g's vectors).
int64_t scratch_floats(const HarlowRollout& st, int64_t depth, int64_t kW) {
  return (st.n * st.n + (3 * depth + 1) * st.n + st.in_dim + st.hidden + st.actions) * kW;
}

template <typename V, int kS>
int64_t harlow_blocks(const HarlowRollout& st, int64_t begin, int64_t end, float* scratch) {
  constexpr int64_t kW = V::size();
  const int64_t blocks = st.episodes / kW;
  int64_t steps = 0;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t p = i / blocks, e0 = i % blocks * kW;
    steps += st.alpha_matrix ? harlow_block<V, kS, true>(st, p, e0, scratch)
                             : harlow_block<V, kS, false>(st, p, e0, scratch);
  }
  return steps;
}

template <typename V>
int64_t harlow_blocks_depth(const HarlowRollout& st, int64_t depth, int64_t begin, int64_t end, float* scratch) {
  switch (depth) {
    case 1: return harlow_blocks<V, 1>(st, begin, end, scratch);
    case 2: return harlow_blocks<V, 2>(st, begin, end, scratch);
    case 3: return harlow_blocks<V, 3>(st, begin, end, scratch);
    default: return harlow_blocks<V, 4>(st, begin, end, scratch);
  }
}

}  // namespace

// The whole rollout; returns the agent-steps computed. params: PARAMS's order, each [P or 1, ...] contiguous
// float32 (absent: empty); w_init [P or 1, E or 1, N, N] or empty (zeros).
int64_t harlow_rollout(const std::vector<at::Tensor>& params, const at::Tensor& w_init, const at::Tensor& objects,
                       const at::Tensor& good, const at::Tensor& uniforms, int64_t depth, int64_t activation,
                       double bound, bool action_reward_inputs, int64_t num_trials, const at::Tensor& rewards,
                       const at::Tensor& state, const at::Tensor& finite) {
  TORCH_CHECK(params.size() == 10, "harlow_rollout takes 10 parameter tensors");
  for (const at::Tensor& t : params)
    TORCH_CHECK(t.numel() == 0 || (t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous()),
                "parameters must be contiguous float32 CPU tensors");
  TORCH_CHECK(rewards.dim() == 3 && rewards.is_contiguous() && rewards.scalar_type() == at::kFloat,
              "rewards must be [T, P, E] float32");
  const int64_t max_steps = rewards.size(0), pop = rewards.size(1), episodes = rewards.size(2);
  const at::Tensor &f_hidden_w = params[0], &f_w = params[2], &alpha = params[4], &policy_w = params[8];
  const int64_t n = f_w.size(1), hidden = f_hidden_w.numel() ? f_hidden_w.size(1) : 0;
  const int64_t in_dim = hidden ? f_hidden_w.size(2) : f_w.size(2), actions = policy_w.size(1);
  const int64_t dim = objects.size(2);
  TORCH_CHECK(objects.dim() == 3 && objects.size(0) == episodes && objects.size(1) == 2 && objects.is_contiguous() &&
              objects.scalar_type() == at::kFloat, "objects must be [E, 2, D] float32");
  TORCH_CHECK(good.numel() == episodes && good.scalar_type() == at::kLong && good.is_contiguous(), "good: [E] int64");
  TORCH_CHECK(uniforms.dim() == 2 && uniforms.size(0) == max_steps && uniforms.size(1) == episodes &&
              uniforms.is_contiguous() && uniforms.scalar_type() == at::kFloat, "uniforms must be [T, E] float32");
  TORCH_CHECK(in_dim == 2 * dim + 4 + actions * (action_reward_inputs ? 2 : 1) + 1, "f's input size does not match");
  TORCH_CHECK(state.numel() == 6 * pop * episodes && state.scalar_type() == at::kLong && state.is_contiguous() &&
              finite.numel() == pop * episodes && finite.scalar_type() == at::kBool && finite.is_contiguous(),
              "state must be [6, P * E] int64 and finite [P * E] bool");
  TORCH_CHECK(depth >= 1 && depth <= 4 && episodes % kLanes == 0, "the rollout kernel takes S <= 4 and E a multiple "
              "of ", kLanes);
  TORCH_CHECK(w_init.numel() == 0 || (w_init.dim() == 4 && w_init.size(2) == n && w_init.size(3) == n &&
              (w_init.size(1) == 1 || w_init.size(1) == episodes) && w_init.is_contiguous() &&
              w_init.scalar_type() == at::kFloat), "w_init must be [P or 1, E or 1, N, N] float32");
  for (const at::Tensor& t : params)
    TORCH_CHECK(t.numel() == 0 || t.size(0) == pop || t.size(0) == 1, "parameters must have P or 1 individuals");
  check_parameters(pop, n, depth, params[5], params[6], alpha, params[7]);  // kappa, beta, alpha, write_l
  const at::Tensor &f_hidden_b = params[1], &f_b = params[3], &policy_b = params[9];
  TORCH_CHECK(f_w.dim() == 3 && f_b.dim() == 2 && f_b.size(1) == n && policy_w.dim() == 3 && policy_w.size(2) == n &&
              policy_b.dim() == 2 && policy_b.size(1) == actions && actions >= 1,
              "f must be [P, N, in] + [P, N] and g's policy [P, A, N] + [P, A]");
  TORCH_CHECK(hidden == 0 ? f_hidden_b.numel() == 0
                          : (f_hidden_w.dim() == 3 && f_hidden_b.dim() == 2 && f_hidden_b.size(1) == hidden &&
                             f_w.size(2) == hidden), "f's hidden layer must be [P, H, in] + [P, H], f_w [P, N, H]");
  TORCH_CHECK(w_init.numel() == 0 || w_init.size(0) == pop || w_init.size(0) == 1, "w_init must have P or 1 rows");
  HarlowRollout st{param(params[0]), param(params[1]), param(params[2]), param(params[3]), param(params[4]),
                   param(params[5]), param(params[6]), param(params[7]), param(params[8]), param(params[9]),
                   param(w_init), w_init.numel() && w_init.size(1) > 1 ? n * n : 0,
                   n, hidden, in_dim, actions, activation, alpha.dim() == 3, action_reward_inputs,
                   static_cast<float>(bound), objects.data_ptr<float>(), good.data_ptr<int64_t>(),
                   uniforms.data_ptr<float>(), pop, episodes, dim, num_trials, max_steps,
                   rewards.data_ptr<float>(), state.data_ptr<int64_t>(), finite.data_ptr<bool>()};
  const bool wide = episodes % Vec2::size() == 0;  // 16-episode blocks where E allows, as the fused step
  const int64_t blocks = pop * (episodes / (wide ? Vec2::size() : kLanes));
  std::atomic<int64_t> steps{0};
  pybind11::gil_scoped_release no_gil;
  // Each thread claims a few blocks at a time from a shared counter instead of taking an even share up front: a
  // thread whose core is slowed (other jobs, interrupts) then plays fewer blocks rather than making the others wait
  // at the end (+4-6 % at 2 threads on the shared 2-core machine). Blocks are independent: the results do not depend
  // on which thread plays which block.
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(4, blocks / (8 * threads)));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    std::vector<float> scratch(scratch_floats(st, depth, wide ? Vec2::size() : kLanes));  // one per thread
    for (int64_t begin; (begin = next.fetch_add(chunk)) < blocks;) {
      const int64_t end = std::min(begin + chunk, blocks);
      steps += wide ? harlow_blocks_depth<Vec2>(st, depth, begin, end, scratch.data())
                    : harlow_blocks_depth<Vec>(st, depth, begin, end, scratch.data());
    }
  });
  return steps.load();
}
"""


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str]:
    centre = f"namespace {{ constexpr int64_t kCentre = {CENTRE}; }}  // HarlowTask's centre position\n"
    source = f"#include <atomic>\n#include <cmath>\n{fused.SOURCE}\n{centre}{ROLLOUT_SOURCE}"
    return fused.compile_extension(f"metods_evo_rollout_v{ROLLOUT_VERSION}_k{fused.KERNEL_VERSION}", source,
                                   ["harlow_rollout", "lanes"])


def available() -> bool:
    """True when the rollout kernel compiled (or loaded from the cache)."""
    return _load()[0] is not None


def supported(model, params: dict[str, Tensor], task, num_episodes: int) -> bool:
    """Whether the kernel computes this rollout exactly as the step-by-step loop (module docstring); independent of
    ``model.fused`` and of whether the kernel compiled. The caller checks greedy actions and no record / trace."""
    if not (isinstance(model, MetODS) and type(task) is HarlowTask and task.device.type == "cpu"):
        return False
    cfg = model.cfg
    if (torch.is_grad_enabled() or cfg.write not in fused.WRITES or cfg.activation not in fused.ACTIVATION_CODES
            or model.writes_previous or model.feeds_back or cfg.depth > fused.LANES_MAX_DEPTH or cfg.readout_hidden
            or num_episodes <= 0 or num_episodes % 8 != 0):
        return False
    pop = params[model.spec.names[0]].shape[0]
    return all(v.device.type == "cpu" and v.dtype == torch.float32 and v.shape[0] == pop for v in params.values())


def should_use(model, params: dict[str, Tensor], task, num_episodes: int) -> bool:
    """``rollout``'s dispatch, by ``model.cfg.fused`` as the fused step's: 'off' never; 'auto' where ``supported``
    and W (P x E x N x N) has at least ``fused.AUTO_MIN_ELEMENTS`` elements; 'any-size' wherever supported; all of
    them only where the kernel compiles ('on' raises where it does not)."""
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
