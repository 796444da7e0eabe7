// The fused Harlow rollout (metods_evo/fused_rollout.py): whole episodes of a block of agents in one pass, on the
// lanes kernel's sweeps. METODS_HARLOW_CENTRE (HarlowTask's centre position) comes from the loader.
#include <atomic>
#include <cmath>

#include "plastic_step.h"

#ifndef METODS_HARLOW_CENTRE
#error "METODS_HARLOW_CENTRE must be defined (metods_evo.fused_rollout passes it)"
#endif

namespace { constexpr int64_t kCentre = METODS_HARLOW_CENTRE; }  // HarlowTask's centre position

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("harlow_rollout", torch::wrap_pybind_function(harlow_rollout), "harlow_rollout");
  m.def("lanes", torch::wrap_pybind_function(lanes), "lanes");
}
