// The fused plastic step (metods_evo/models/fused.py): the per-agent kernel, the lanes kernel's blocks and the
// pool of W_t buffers, bound as the extension's functions.
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "plastic_step.h"

namespace {

// The sums of kLanes accumulators, one per lane: a transpose-and-add instead of kLanes horizontal sums.
inline Vec row_sums(const Vec* acc) {
#if defined(CPU_CAPABILITY_AVX2)
  const __m256 t0 = _mm256_hadd_ps(acc[0], acc[1]), t1 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 t2 = _mm256_hadd_ps(acc[4], acc[5]), t3 = _mm256_hadd_ps(acc[6], acc[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
#else
  float sums[kLanes];
  for (int64_t r = 0; r < kLanes; ++r)
    sums[r] = at::vec::vec_reduce_all<float>([](Vec a, Vec b) { return a + b; }, acc[r]);
  return Vec::loadu(sums);
#endif
}

struct Step {
  const float* w; const float* v0; const float* kappa; const float* beta; const float* alpha;
  const float* write_l;  // the linear write's L [P or 1][N][N] (rows contiguous, row stride write_l_row), or null
  float* w_out; float* v_out;
  int64_t agents_per_individual, n, depth, kappa_stride, beta_stride, alpha_stride, write_l_stride, write_l_row,
      activation;
  bool alpha_matrix;
  float bound;
};

// u = L v for one agent (the linear write's u(v)): rows of L [n][row stride ld], v zero-padded to np; writes u[0..np)
// (the padding lanes stay zero). Lane-wise FMA over j, one transpose-and-add per kLanes rows, as the sweeps.
void linear_write_vector(const float* l, int64_t ld, int64_t n, int64_t np, const float* v, float* u) {
  const int64_t chunks = np / kLanes, tail = n - (chunks - 1) * kLanes;
  for (int64_t i0 = 0; i0 < np; i0 += kLanes) {
    Vec acc[kLanes];
    for (int64_t r = 0; r < kLanes; ++r) {
      const int64_t i = i0 + r;
      acc[r] = Vec(0.f);
      if (i >= n) continue;
      const float* l_row = l + i * ld;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t j = c * kLanes, count = c + 1 < chunks ? kLanes : tail;
        acc[r] = at::vec::fmadd(Vec::loadu(l_row + j, count), Vec::loadu(v + j), acc[r]);
      }
    }
    row_sums(acc).store(u + i0);
  }
}

// One read sweep s over the rows of one agent's W^(0) (and, on the last sweep, the write of W_t).
struct Sweep {
  int64_t n, np, terms, writes;  // terms: alpha terms of the read (s - 1); writes: outer products (S, last sweep)
  const float* w; const float* alpha; float alpha_scalar;
  const float* v; const float* u;                   // v_0..v_S [S + 1][np]; u_k = u(v_k) [S][np] (hebbian: u = v)
  const float* vp; const float* z;                  // v_{s-1}; z_k = u_k * v_{s-1}
  const float* d_read; const float* d_write;        // D[s-1, k], D[S, k]
  float c_read, c_write, bound;
  float* coef_read; float* coef_write;              // per row: D[s-1, k] v_k[i], D[S, k] v_k[i]
  float* read;                                      // out: sum_j W^(s-1)_ij v_{s-1, j}  ([np])
  float* out;                                       // out: W_t rows (row stride n)
};

// kT, kU: terms and writes as compile-time constants (the common S <= 4), -1: read them from the Sweep.
// kChunks: vectors per row as a compile-time constant (N <= 4 lanes-widths), 0: any N.
template <bool kMatrix, int kT, int kU, int kChunks>
void sweep(const Sweep& sw) {
  const int64_t n = sw.n, np = sw.np;
  const int64_t terms = kT >= 0 ? kT : sw.terms, writes = kU >= 0 ? kU : sw.writes;
  const int64_t chunks = kChunks > 0 ? kChunks : np / kLanes, tail = n - (chunks - 1) * kLanes;
  constexpr int kTR = kT > 0 ? kT : 1, kUR = kU > 0 ? kU : 1;  // register copies of the per-row coefficients
  const Vec c_read(sw.c_read), c_write(sw.c_write), lo(-sw.bound), hi(sw.bound), alpha_scalar(sw.alpha_scalar);
  const bool clip = sw.bound > 0.f;
  for (int64_t i0 = 0; i0 < n; i0 += kLanes) {
    Vec acc[kLanes];
    for (int64_t r = 0; r < kLanes; ++r) {
      const int64_t i = i0 + r;
      if (i >= n) {
        acc[r] = Vec(0.f);
        continue;
      }
      Vec cr[kTR], cw[kUR];
      if (kMatrix && kT >= 0) {
        for (int k = 0; k < kT; ++k) cr[k] = Vec(sw.d_read[k] * sw.v[k * np + i]);
      } else if (kMatrix) {
        for (int64_t k = 0; k < terms; ++k) sw.coef_read[k] = sw.d_read[k] * sw.v[k * np + i];
      }
      if (kU >= 0) {
        for (int k = 0; k < kU; ++k) cw[k] = Vec(sw.d_write[k] * sw.v[k * np + i]);
      } else {
        for (int64_t k = 0; k < writes; ++k) sw.coef_write[k] = sw.d_write[k] * sw.v[k * np + i];
      }
      const float* w_row = sw.w + i * n;
      const float* a_row = kMatrix ? sw.alpha + i * n : nullptr;
      float* out_row = sw.out + i * n;
      Vec acc_w(0.f), acc_a(0.f);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t j = c * kLanes, count = c + 1 < chunks ? kLanes : tail;
        const Vec wv = Vec::loadu(w_row + j, count);
        acc_w = at::vec::fmadd(wv, Vec::loadu(sw.vp + j), acc_w);
        const Vec av = kMatrix ? Vec::loadu(a_row + j, count) : alpha_scalar;
        if (kMatrix && terms > 0) {  // row i of (alpha * sum_k D[s-1,k] v_k (x) u_k), times v_{s-1}
          Vec y;
          if (kT >= 0) {
            y = cr[0] * Vec::loadu(sw.z + j);
            for (int k = 1; k < kT; ++k) y = at::vec::fmadd(cr[k], Vec::loadu(sw.z + k * np + j), y);
          } else {
            y = Vec(sw.coef_read[0]) * Vec::loadu(sw.z + j);
            for (int64_t k = 1; k < terms; ++k)
              y = at::vec::fmadd(Vec(sw.coef_read[k]), Vec::loadu(sw.z + k * np + j), y);
          }
          acc_a = at::vec::fmadd(av, y, acc_a);
        }
        if (writes > 0) {  // row i of W_t = clip(c_S W^(0) + alpha * sum_k D[S,k] v_k (x) u_k)
          Vec outer;
          if (kU >= 0) {
            outer = cw[0] * Vec::loadu(sw.u + j);
            for (int k = 1; k < kU; ++k) outer = at::vec::fmadd(cw[k], Vec::loadu(sw.u + k * np + j), outer);
          } else {
            outer = Vec(sw.coef_write[0]) * Vec::loadu(sw.u + j);
            for (int64_t k = 1; k < writes; ++k)
              outer = at::vec::fmadd(Vec(sw.coef_write[k]), Vec::loadu(sw.u + k * np + j), outer);
          }
          Vec w_new = at::vec::fmadd(wv, c_write, outer * av);
          if (clip) w_new = at::vec::clamp(w_new, lo, hi);
          if (i + 1 < n || count == kLanes) {
            w_new.store(out_row + j);  // whole lanes: the spill past row i is overwritten by row i + 1
          } else {
            w_new.store(out_row + j, count);  // the agent's last row: not a lane beyond it
          }
        }
      }
      acc[r] = kMatrix && terms > 0 ? at::vec::fmadd(c_read, acc_w, acc_a) : c_read * acc_w;
    }
    row_sums(acc).store(sw.read + i0);
  }
}

template <bool kMatrix, int kT, int kU>
void sweep_n(const Sweep& sw) {
  if (kT < 0) return sweep<kMatrix, kT, kU, 0>(sw);  // S > 4: the generic loops (keeps the build small)
  switch (sw.np / kLanes) {
    case 1: return sweep<kMatrix, kT, kU, 1>(sw);
    case 2: return sweep<kMatrix, kT, kU, 2>(sw);
    case 3: return sweep<kMatrix, kT, kU, 3>(sw);
    case 4: return sweep<kMatrix, kT, kU, 4>(sw);
    default: return sweep<kMatrix, kT, kU, 0>(sw);
  }
}

template <bool kMatrix>
void dispatch_sweep(const Sweep& sw) {
  if (sw.writes == 0) {
    switch (sw.terms) {
      case 0: return sweep_n<kMatrix, 0, 0>(sw);
      case 1: return sweep_n<kMatrix, 1, 0>(sw);
      case 2: return sweep_n<kMatrix, 2, 0>(sw);
      default: return sweep_n<kMatrix, -1, -1>(sw);
    }
  }
  switch (sw.writes) {
    case 1: return sweep_n<kMatrix, 0, 1>(sw);
    case 2: return sweep_n<kMatrix, 1, 2>(sw);
    case 3: return sweep_n<kMatrix, 2, 3>(sw);
    case 4: return sweep_n<kMatrix, 3, 4>(sw);
    default: return sweep_n<kMatrix, -1, -1>(sw);
  }
}

void run_agents(const Step& st, int64_t begin, int64_t end) {
  const int64_t n = st.n, depth = st.depth, nn = n * n;
  const int64_t np = (n + kLanes - 1) / kLanes * kLanes;  // local vectors are zero-padded to whole lanes
  const bool linear = st.write_l != nullptr;
  std::vector<float> scratch((2 * depth + 2 + (linear ? depth : 0)) * np + (depth + 1) * (depth + 1) + 2 * depth,
                             0.f);
  float* v = scratch.data();         // v_0..v_S, [S + 1][np]
  float* z = v + (depth + 1) * np;   // [S][np]
  float* read = z + depth * np;      // [np]
  float* u = linear ? read + np + (depth + 1) * (depth + 1) + 2 * depth : v;  // u_0..u_{S-1} [S][np]; hebbian: v
  float* c = read + np;              // [S + 1]
  float* d = c + (depth + 1);        // [S + 1][S]
  float* coef_read = d + (depth + 1) * depth;
  float* coef_write = coef_read + depth;
  int64_t individual = -1;
  const float* kappa = nullptr;
  const float* write_l = nullptr;
  Sweep sw{};
  sw.n = n;
  sw.np = np;
  sw.v = v;
  sw.u = u;
  sw.z = z;
  sw.coef_read = coef_read;
  sw.coef_write = coef_write;
  sw.read = read;
  sw.bound = st.bound;
  for (int64_t agent = begin; agent < end; ++agent) {
    const int64_t p = agent / st.agents_per_individual;
    if (p != individual) {
      individual = p;
      coefficients(st.beta + p * st.beta_stride, depth, c, d);
      kappa = st.kappa + p * st.kappa_stride;
      sw.alpha = st.alpha + p * st.alpha_stride;
      sw.alpha_scalar = sw.alpha[0];
      if (linear) write_l = st.write_l + p * st.write_l_stride;
    }
    sw.w = st.w + agent * nn;
    sw.out = st.w_out + agent * nn;
    std::copy(st.v0 + agent * n, st.v0 + (agent + 1) * n, v);
    for (int64_t s = 1; s <= depth; ++s) {
      const float* vp = v + (s - 1) * np;
      sw.vp = vp;
      sw.terms = s - 1;
      sw.writes = s == depth ? depth : 0;
      sw.c_read = c[s - 1];
      sw.d_read = d + (s - 1) * depth;
      sw.c_write = c[depth];
      sw.d_write = d + depth * depth;
      // u_{s-1} = L v_{s-1}: the reads of sweeps > s - 1 and the write need it, L comes from cache after agent 1
      if (linear) linear_write_vector(write_l, st.write_l_row, n, np, vp, u + (s - 1) * np);
      if (st.alpha_matrix) {
        for (int64_t k = 0; k + 1 < s; ++k)
          for (int64_t j = 0; j < np; j += kLanes)
            (Vec::loadu(u + k * np + j) * Vec::loadu(vp + j)).store(z + k * np + j);
        dispatch_sweep<true>(sw);
      } else {
        dispatch_sweep<false>(sw);
        for (int64_t k = 0; k + 1 < s; ++k) {  // (alpha v_k (x) u_k) v_{s-1} = alpha (u_k . v_{s-1}) v_k
          Vec dot(0.f);
          for (int64_t j = 0; j < np; j += kLanes)
            dot = at::vec::fmadd(Vec::loadu(u + k * np + j), Vec::loadu(vp + j), dot);
          const float dot_k = at::vec::vec_reduce_all<float>([](Vec a, Vec b) { return a + b; }, dot);
          const Vec g(sw.d_read[k] * sw.alpha_scalar * dot_k);
          for (int64_t j = 0; j < np; j += kLanes)
            at::vec::fmadd(g, Vec::loadu(v + k * np + j), Vec::loadu(read + j)).store(read + j);
        }
      }
      // v_s = kappa_s^s sigma(read) + sum_l kappa_s^l v_l, in the eager step's order
      const float* ks = kappa + (s - 1) * (s + 2) / 2;
      float* vs = v + s * np;
      for (int64_t j = 0; j < np; j += kLanes) {
        Vec x = Vec(ks[s]) * activate(Vec::loadu(read + j), st.activation);
        for (int64_t l = 0; l < s; ++l) x = x + Vec(ks[l]) * Vec::loadu(v + l * np + j);
        x.store(vs + j);
      }
      std::fill(vs + n, vs + np, 0.f);  // keep the padding lanes zero (sigmoid(0) is not)
    }
    std::copy(v + depth * np, v + depth * np + n, st.v_out + agent * n);
  }
}

// The lanes kernel's arguments (see plastic_step_lanes).
struct Lanes {
  const float* w; const float* v0; const float* kappa; const float* beta; const float* alpha; const float* write_l;
  float* w_out; float* v_out;
  int64_t episodes, n, kappa_stride, beta_stride, alpha_stride, write_l_stride, write_l_row, activation;
  bool alpha_matrix;
  float bound;
};

// One block: kW episodes (e0 ..) of individual p. kS: the depth S (1..4).
template <typename V, int kS>
void lanes_block(const Lanes& st, int64_t p, int64_t e0, float* scratch, int64_t next_p, int64_t next_e0) {
  constexpr int64_t kW = V::size();
  const int64_t n = st.n, e = st.episodes, nn = n * n;
  const bool linear = st.write_l != nullptr;
  float c[kS + 1], d[(kS + 1) * kS];
  coefficients(st.beta + p * st.beta_stride, kS, c, d);
  LanesBlock b{n, e, st.w + p * nn * e + e0, st.w_out + p * nn * e + e0, st.alpha + p * st.alpha_stride,
               st.kappa + p * st.kappa_stride, linear ? st.write_l + p * st.write_l_stride : nullptr,
               st.write_l_row, c, d, scratch, nullptr, scratch + (2 * kS + 1) * n * kW, 0.f, st.bound,
               st.activation, nullptr, nullptr};
  if (next_p >= 0) {
    b.next_w = st.w + next_p * nn * e + next_e0;
    b.next_w_out = st.w_out + next_p * nn * e + next_e0;
  }
  b.u = linear ? b.v + (kS + 1) * n * kW : b.v;
  b.alpha_scalar = b.alpha[0];
  for (int64_t lane = 0; lane < kW; ++lane) {  // v_0: [P, E, N] -> lanes
    const float* src = st.v0 + (p * e + e0 + lane) * n;
    for (int64_t j = 0; j < n; ++j) b.v[j * kW + lane] = src[j];
  }
  if (st.alpha_matrix) lanes_sweep<V, kS, 1, true>(b);
  else lanes_sweep<V, kS, 1, false>(b);
  const float* v_last = b.v + kS * n * kW;
  for (int64_t lane = 0; lane < kW; ++lane) {  // v_S: lanes -> [P, E, N]
    float* dst = st.v_out + (p * e + e0 + lane) * n;
    for (int64_t j = 0; j < n; ++j) dst[j] = v_last[j * kW + lane];
  }
}

template <typename V, int kS>
void lanes_blocks(const Lanes& st, int64_t begin, int64_t end) {
  constexpr int64_t kW = V::size();
  std::vector<float> scratch((3 * kS + 1) * st.n * kW);
  const int64_t blocks = st.episodes / kW;
  for (int64_t b = begin; b < end; ++b) {
    const int64_t next = b + 1 < end ? b + 1 : -1;
    lanes_block<V, kS>(st, b / blocks, b % blocks * kW, scratch.data(), next < 0 ? -1 : next / blocks,
                    next < 0 ? 0 : next % blocks * kW);
  }
}

// Output buffers for W_t, recycled once torch frees them. A fresh multi-MiB tensor per step costs a page fault per
// 4 KiB (the kernel zeroes every page): 2-6x the time of the step itself. A buffer goes back to this pool only from
// its storage's deleter, i.e. when no tensor, view or detached copy refers to it any more, so reuse is safe.
class BufferPool {
 public:
  static constexpr size_t kMinBytes = size_t{1} << 20;  // smaller tensors come cheaply from malloc
  static constexpr size_t kKeepPerSize = 2;             // a rollout circulates two: W_{t-1} and W_t

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    TORCH_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes for W_t");
    return p;
  }
  void give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& kept = free_[bytes];
    if (kept.size() < kKeepPerSize) kept.push_back(p);
    else std::free(p);
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : free_)
      for (void* p : entry.second) std::free(p);
    free_.clear();
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
};

BufferPool& pool() {
  static BufferPool* instance = new BufferPool();  // never destroyed: deleters may run during interpreter exit
  return *instance;
}

}  // namespace

at::Tensor empty_output(std::vector<int64_t> sizes) {
  int64_t numel = 1;
  for (int64_t size : sizes) numel *= size;
  const size_t bytes = static_cast<size_t>(numel) * sizeof(float);
  if (bytes < BufferPool::kMinBytes) return at::empty(sizes, at::kFloat);
  void* data = pool().take(bytes);
  return at::from_blob(data, sizes, [bytes](void* p) { pool().give(p, bytes); }, at::TensorOptions().dtype(at::kFloat));
}

void clear_buffer_pool() { pool().clear(); }

int64_t individual_stride(const at::Tensor& t) { return t.size(0) == 1 ? int64_t{0} : t.stride(0); }

void plastic_step(const at::Tensor& w, const at::Tensor& v0, const at::Tensor& kappa, const at::Tensor& beta,
                  const at::Tensor& alpha, const at::Tensor& write_l, int64_t depth, int64_t activation, double bound,
                  int64_t grain,
                  const at::Tensor& w_out, const at::Tensor& v_out) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == w.size(3), "w must be [P, E, N, N]");
  const int64_t pop = w.size(0), agents = w.size(1), n = w.size(2);
  for (const at::Tensor* t : {&w, &v0, &w_out, &v_out})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(), "the fused step takes float32 CPU tensors");
  TORCH_CHECK(w.is_contiguous() && v0.is_contiguous() && w_out.is_contiguous() && v_out.is_contiguous(),
              "w, v0 and the outputs must be contiguous");
  TORCH_CHECK(v0.sizes() == v_out.sizes() && v0.dim() == 3 && v0.size(0) == pop && v0.size(1) == agents &&
              v0.size(2) == n && w_out.sizes() == w.sizes(), "v0 must be [P, E, N], outputs shaped as inputs");
  const bool matrix = alpha.dim() == 3, linear = check_parameters(pop, n, depth, kappa, beta, alpha, write_l);
  Step st{w.data_ptr<float>(), v0.data_ptr<float>(), kappa.data_ptr<float>(), beta.data_ptr<float>(),
          alpha.data_ptr<float>(), linear ? write_l.data_ptr<float>() : nullptr, w_out.data_ptr<float>(),
          v_out.data_ptr<float>(), agents, n, depth, individual_stride(kappa), individual_stride(beta),
          individual_stride(alpha), linear ? individual_stride(write_l) : 0, linear ? write_l.stride(1) : 0,
          activation, matrix, static_cast<float>(bound)};
  if (pop * agents == 0) return;
  pybind11::gil_scoped_release no_gil;  // plain C++ from here on: other Python threads may run
  at::parallel_for(0, pop * agents, grain, [&](int64_t begin, int64_t end) { run_agents(st, begin, end); });
}

void plastic_step_lanes(const at::Tensor& w, const at::Tensor& v0, const at::Tensor& kappa, const at::Tensor& beta,
                        const at::Tensor& alpha, const at::Tensor& write_l, int64_t depth, int64_t activation,
                        double bound, int64_t grain_blocks, const at::Tensor& w_out, const at::Tensor& v_out) {
  TORCH_CHECK(w.dim() == 4 && w.size(1) == w.size(2), "w must be the lanes layout [P, N, N, E]");
  const int64_t pop = w.size(0), n = w.size(1), episodes = w.size(3);
  for (const at::Tensor* t : {&w, &v0, &w_out, &v_out})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(), "the fused step takes float32 CPU tensors");
  TORCH_CHECK(w.is_contiguous() && v0.is_contiguous() && w_out.is_contiguous() && v_out.is_contiguous() &&
              w_out.sizes() == w.sizes(), "w, v0 and the outputs must be contiguous, w_out shaped as w");
  TORCH_CHECK(episodes % kLanes == 0, "the lanes kernel needs E to be a multiple of ", kLanes);
  TORCH_CHECK(v0.dim() == 3 && v0.size(0) == pop && v0.size(1) == episodes && v0.size(2) == n &&
              v0.sizes() == v_out.sizes(), "v0 must be [P, E, N], v_out shaped as v0");
  TORCH_CHECK(depth <= 4, "the lanes kernel takes S <= 4");
  const bool matrix = alpha.dim() == 3, linear = check_parameters(pop, n, depth, kappa, beta, alpha, write_l);
  Lanes st{w.data_ptr<float>(), v0.data_ptr<float>(), kappa.data_ptr<float>(), beta.data_ptr<float>(),
           alpha.data_ptr<float>(), linear ? write_l.data_ptr<float>() : nullptr, w_out.data_ptr<float>(),
           v_out.data_ptr<float>(), episodes, n, individual_stride(kappa), individual_stride(beta),
           individual_stride(alpha), linear ? individual_stride(write_l) : 0, linear ? write_l.stride(1) : 0,
           activation, matrix, static_cast<float>(bound)};
  // 16 episodes per block where E allows (whole cache lines), else 8
  const bool wide = episodes % Vec2::size() == 0;
  const int64_t blocks = pop * (episodes / (wide ? Vec2::size() : kLanes));
  if (blocks == 0) return;
  pybind11::gil_scoped_release no_gil;
  const int64_t grain = wide ? std::max<int64_t>(1, grain_blocks / 2) : grain_blocks;
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    if (wide) {
      switch (depth) {
        case 1: return lanes_blocks<Vec2, 1>(st, begin, end);
        case 2: return lanes_blocks<Vec2, 2>(st, begin, end);
        case 3: return lanes_blocks<Vec2, 3>(st, begin, end);
        default: return lanes_blocks<Vec2, 4>(st, begin, end);
      }
    }
    switch (depth) {
      case 1: return lanes_blocks<Vec, 1>(st, begin, end);
      case 2: return lanes_blocks<Vec, 2>(st, begin, end);
      case 3: return lanes_blocks<Vec, 3>(st, begin, end);
      default: return lanes_blocks<Vec, 4>(st, begin, end);
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("plastic_step", torch::wrap_pybind_function(plastic_step), "plastic_step");
  m.def("plastic_step_lanes", torch::wrap_pybind_function(plastic_step_lanes), "plastic_step_lanes");
  m.def("lanes", torch::wrap_pybind_function(lanes), "lanes");
  m.def("empty_output", torch::wrap_pybind_function(empty_output), "empty_output");
  m.def("clear_buffer_pool", torch::wrap_pybind_function(clear_buffer_pool), "clear_buffer_pool");
}
