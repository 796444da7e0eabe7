// The arithmetic the fused plastic step (plastic_step.cpp) and the fused Harlow rollout (harlow_rollout.cpp) share:
// the activations, the c / D coefficients and the lanes kernel's sweeps. Each extension is one translation unit that
// includes this header once, hence the anonymous namespace.
#pragma once

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

enum Activation : int64_t { kTanh = 0, kRelu = 1, kSigmoid = 2, kIdentity = 3 };

// The activations are forced inline into the sweeps: as calls, the 64-byte Vec2 goes through memory.
#if defined(__GNUC__)
#define METODS_INLINE __attribute__((always_inline)) inline
#else
#define METODS_INLINE inline
#endif

#if defined(CPU_CAPABILITY_AVX2)
// tanh of 8 float32 lanes, inlined (a SLEEF call costs 3x more and was a quarter of the step at N = 20): below
// |x| = 0.625 x + x^3 P(x^2) with a degree-4 least-squares fit of (tanh(x) - x) / x^3 (Cephes' tanhf form), above
// it 1 - 2 / (exp(2|x|) + 1) with exp by Cody-Waite reduction and a degree-7 Taylor polynomial (|x| clamped to 9,
// where tanh rounds to 1). Within 1.4 ulp of tanh on [-12, 12] (checked against double); NaN stays NaN.
METODS_INLINE Vec fast_tanh(const Vec& xv) {
  const __m256 x = xv, sign_bit = _mm256_set1_ps(-0.f), one = _mm256_set1_ps(1.f);
  const __m256 ax = _mm256_min_ps(_mm256_set1_ps(9.f), _mm256_andnot_ps(sign_bit, x));  // NaN passes through
  const __m256 z = _mm256_mul_ps(ax, ax);
  __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(ax, z), p, ax);
  const __m256 y = _mm256_add_ps(ax, ax);  // exp(y), y in [1.25, 18]
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.44269504089f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), y);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 e = _mm256_set1_ps(1.f / 5040);
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 720));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 120));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 24));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 6));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.5f));
  e = _mm256_fmadd_ps(e, r, one);
  e = _mm256_fmadd_ps(e, r, one);
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                                                _mm256_set1_epi32(127)), 23));
  e = _mm256_mul_ps(e, scale);
  const __m256 large = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(e, one)));
  const __m256 t = _mm256_blendv_ps(large, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
  return _mm256_or_ps(t, _mm256_and_ps(x, sign_bit));
}
#else
inline Vec fast_tanh(const Vec& x) { return x.tanh(); }
#endif

METODS_INLINE Vec activate(const Vec& x, int64_t activation) {
  switch (activation) {
    case kTanh: return fast_tanh(x);
    case kRelu: return at::vec::clamp_min(x, Vec(0.f));
    case kSigmoid: return ((Vec(0.f) - x).exp() + Vec(1.f)).reciprocal();  // as ATen's vectorized sigmoid
    default: return x;
  }
}

// c[s]: coefficient of W^(0) in W^(s); d[s * S + k]: of alpha * v_k (x) u_k. The same float32 operations in the
// same order as MetODS.plastic_step (Python's sum starts from 0), so c and d round exactly as the eager ones
// (the build uses -ffp-contract=off: no FMA may merge these products and sums).
void coefficients(const float* beta, int64_t depth, float* c, float* d) {
  c[0] = 1.f;
  for (int64_t s = 1; s <= depth; ++s) {
    const float* b = beta + (s - 1) * (s + 2) / 2;
    float cs = 0.f;
    for (int64_t l = 0; l < s; ++l) cs = cs + b[l] * c[l];
    c[s] = cs;
    for (int64_t k = 0; k < s; ++k) {
      float dk = 0.f;
      for (int64_t l = k + 1; l < s; ++l) dk = dk + b[l] * d[l * depth + k];
      d[s * depth + k] = k == s - 1 ? dk + b[s] : dk + 0.f;
    }
  }
}

// ---------------------------------------------------------------------------------------------- the lanes kernel
// The lanes layout stores individual p's W as [N][N][E] (episodes innermost): one vector holds element (i, j) of
// kLanes episodes of the same individual, so every operation of the step is a vertical FMA across agents (no
// padding lanes, no transpose-and-add), and the individual's alpha, L, kappa and beta are broadcast scalars. Same
// c / D formulation and the same single pass over W^(0) as the per-agent kernel (plastic_step.cpp); the read's alpha
// terms are accumulated per k (acc_k = sum_j alpha_ij z_k[j], then read_i = c W^(0)_i. v + sum_k D[s-1,k] v_k[i]
// acc_k).

// The lanes kernel's vector types: one AVX2 vector (8 episodes), or two (16 episodes: element (i, j) of the block
// is then one whole 64-byte line of W, read and written once per sweep instead of half a line twice).
struct Vec2 {
  Vec lo, hi;
  Vec2() = default;
  explicit Vec2(float x) : lo(x), hi(x) {}
  Vec2(const Vec& l, const Vec& h) : lo(l), hi(h) {}
  static constexpr int64_t size() { return 2 * Vec::size(); }
  static Vec2 loadu(const float* p) { return {Vec::loadu(p), Vec::loadu(p + Vec::size())}; }
  void store(float* p) const {
    lo.store(p);
    hi.store(p + Vec::size());
  }
};
inline Vec2 operator*(const Vec2& a, const Vec2& b) { return {a.lo * b.lo, a.hi * b.hi}; }
inline Vec2 operator+(const Vec2& a, const Vec2& b) { return {a.lo + b.lo, a.hi + b.hi}; }
inline Vec vfmadd(const Vec& a, const Vec& b, const Vec& c) { return at::vec::fmadd(a, b, c); }
inline Vec2 vfmadd(const Vec2& a, const Vec2& b, const Vec2& c) {
  return {at::vec::fmadd(a.lo, b.lo, c.lo), at::vec::fmadd(a.hi, b.hi, c.hi)};
}
inline Vec vclamp(const Vec& x, const Vec& lo, const Vec& hi) { return at::vec::clamp(x, lo, hi); }
inline Vec2 vclamp(const Vec2& x, const Vec2& lo, const Vec2& hi) {
  return {at::vec::clamp(x.lo, lo.lo, hi.lo), at::vec::clamp(x.hi, lo.hi, hi.hi)};
}
METODS_INLINE Vec2 activate(const Vec2& x, int64_t code) { return {activate(x.lo, code), activate(x.hi, code)}; }

// What one block's sweeps share: kW episodes of one individual.
struct LanesBlock {
  int64_t n, e;
  const float* w; float* w_out;  // element (i, j) of the block at w[(i * n + j) * e]
  const float* alpha; const float* kappa; const float* write_l; int64_t write_l_row;
  const float* c; const float* d;
  float* v; float* u; float* z;  // [S + 1][N][kW], [S][N][kW] (hebbian: u = v), [S][N][kW]
  float alpha_scalar, bound;
  int64_t activation;
  const float* next_w; const float* next_w_out;  // the next block's W and W_t (nullptr: none), to prefetch
};

// Sweep kSweep's reads of kRows consecutive rows i..: read_i = c W^(0)_i . v_{s-1} + sum_k D[s-1,k] v_k[i]
// (alpha_i . z_k), stored into v_s[i] (lanes_activate turns it into v_s[i] after the last row). The rows share the
// loads of v_{s-1}[j] and z_k[j] and run kRows times as many independent FMA chains (a row alone is one chain per
// term, bound by the FMA latency). Every pointer and scalar is read into a local first (the stores to W_t could
// alias the block's fields, which would reload them at every j). Each sum keeps its order: the result is bitwise
// the same for any kRows (4 rows before the last sweep and 2 on it, which also holds the write's vectors).
template <typename V, int kS, int kSweep, bool kMatrix, int kRows>
METODS_INLINE void lanes_read(const LanesBlock& b, int64_t i, const float* vp, float* vs) {
  constexpr int64_t kW = V::size();
  constexpr int kTerms = kSweep - 1, kT = kTerms > 0 ? kTerms : 1;
  const int64_t n = b.n, e = b.e;
  const float* w_row[kRows];
  const float* a_row[kRows];
  for (int r = 0; r < kRows; ++r) {
    w_row[r] = b.w + (i + r) * n * e;
    a_row[r] = kMatrix ? b.alpha + (i + r) * n : nullptr;
  }
  const float* const z = b.z;
  const float* const v = b.v;
  const float* const next_w = b.next_w;
  const V alpha_scalar(b.alpha_scalar);
  V acc_w[kRows], acc_k[kRows][kT];
  for (int r = 0; r < kRows; ++r) {
    acc_w[r] = V(0.f);
    for (int k = 0; k < kTerms; ++k) acc_k[r][k] = V(0.f);
  }
  for (int64_t j = 0; j < n; ++j) {
    // S >= 2: prefetch the next block's W (on sweep 2, which reads only cached data), so that DRAM works while this
    // block computes: +15-25 % at S = 3. S = 1 is bound by DRAM alone and the prefetches only cost it (-5 %).
    if constexpr (kS >= 2 && kSweep == 2)
      if (next_w != nullptr)
        for (int r = 0; r < kRows; ++r) __builtin_prefetch(next_w + (i + r) * n * e + j * e, 0, 3);
    const V x = V::loadu(vp + j * kW);
    for (int r = 0; r < kRows; ++r) acc_w[r] = vfmadd(V::loadu(w_row[r] + j * e), x, acc_w[r]);
    if constexpr (kTerms > 0) {
      for (int k = 0; k < kTerms; ++k) {
        const V zk = V::loadu(z + (k * n + j) * kW);
        for (int r = 0; r < kRows; ++r) acc_k[r][k] = vfmadd(kMatrix ? V(a_row[r][j]) : alpha_scalar, zk, acc_k[r][k]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    V read = V(b.c[kSweep - 1]) * acc_w[r];
    for (int k = 0; k < kTerms; ++k)
      read = vfmadd(V(b.d[(kSweep - 1) * kS + k]) * V::loadu(v + (k * n + i + r) * kW), acc_k[r][k], read);
    read.store(vs + (i + r) * kW);
  }
}

// Row i of W_t = clip(c_S W^(0) + alpha * sum_k D[S,k] v_k (x) u_k), on the last sweep, after row i's read (W_t may
// be W itself: the fused rollout updates W in place). A loop of its own: with the read it would hold more vectors
// than there are registers (spilled at every j).
template <typename V, int kS, bool kMatrix, bool kClip>
METODS_INLINE void lanes_write(const LanesBlock& b, int64_t i) {
  constexpr int64_t kW = V::size();
  const int64_t n = b.n, e = b.e;
  const float* const w_row = b.w + i * n * e;
  const float* const a_row = kMatrix ? b.alpha + i * n : nullptr;
  const float* const v = b.v;
  const float* const u = b.u;
  const float* const next_w_out = b.next_w_out;
  float* const out_row = b.w_out + i * n * e;
  const V alpha_scalar(b.alpha_scalar), c_write(b.c[kS]), lo(-b.bound), hi(b.bound);
  V cw[kS];
  for (int k = 0; k < kS; ++k) cw[k] = V(b.d[kS * kS + k]) * V::loadu(v + (k * n + i) * kW);
  for (int64_t j = 0; j < n; ++j) {
    if constexpr (kS >= 2)  // the next block's W_t lines, as its W on sweep 2
      if (next_w_out != nullptr) __builtin_prefetch(next_w_out + i * n * e + j * e, 1, 3);
    const V a = kMatrix ? V(a_row[j]) : alpha_scalar;
    V outer = cw[0] * V::loadu(u + j * kW);
    for (int k = 1; k < kS; ++k) outer = vfmadd(cw[k], V::loadu(u + (k * n + j) * kW), outer);
    V w_new = vfmadd(V::loadu(w_row + j * e), c_write, outer * a);
    if constexpr (kClip) w_new = vclamp(w_new, lo, hi);
    w_new.store(out_row + j * e);
  }
}

// v_s = kappa_s^s sigma(read) + sum_l kappa_s^l v_l for every row, in the eager step's order, once all reads of the
// sweep are done: the rows' activations are independent, so their long dependency chains (tanh) overlap.
template <typename V, int kSweep>
METODS_INLINE void lanes_activate(const LanesBlock& b, float* vs) {
  constexpr int64_t kW = V::size();
  const int64_t n = b.n;
  const float* const v = b.v;
  const float* const ks = b.kappa + (kSweep - 1) * (kSweep + 2) / 2;
  for (int64_t i = 0; i < n; ++i) {
    V x = V(ks[kSweep]) * activate(V::loadu(vs + i * kW), b.activation);
    for (int l = 0; l < kSweep; ++l) x = x + V(ks[l]) * V::loadu(v + (l * n + i) * kW);
    x.store(vs + i * kW);
  }
}

// Sweep kSweep (1..kS) of one block; on the last sweep it also writes W_t. Compile-time S and sweep: every loop
// over k is unrolled and the per-row coefficients and accumulators live in registers.
template <typename V, int kS, int kSweep, bool kMatrix>
void lanes_sweep(const LanesBlock& b) {
  constexpr int64_t kW = V::size();
  constexpr int kTerms = kSweep - 1;
  const int64_t n = b.n;
  const float* vp = b.v + (kSweep - 1) * n * kW;
  if (b.write_l != nullptr) {  // u_{s-1} = L v_{s-1}, 4 rows at a time (4 chains, one load of v_j per 4 FMAs)
    float* us = b.u + (kSweep - 1) * n * kW;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      const float* l_row = b.write_l + i * b.write_l_row;
      V acc0(0.f), acc1(0.f), acc2(0.f), acc3(0.f);
      for (int64_t j = 0; j < n; ++j) {
        const V vj = V::loadu(vp + j * kW);
        acc0 = vfmadd(V(l_row[j]), vj, acc0);
        acc1 = vfmadd(V(l_row[b.write_l_row + j]), vj, acc1);
        acc2 = vfmadd(V(l_row[2 * b.write_l_row + j]), vj, acc2);
        acc3 = vfmadd(V(l_row[3 * b.write_l_row + j]), vj, acc3);
      }
      acc0.store(us + i * kW);
      acc1.store(us + (i + 1) * kW);
      acc2.store(us + (i + 2) * kW);
      acc3.store(us + (i + 3) * kW);
    }
    for (; i < n; ++i) {
      const float* l_row = b.write_l + i * b.write_l_row;
      V acc(0.f);
      for (int64_t j = 0; j < n; ++j) acc = vfmadd(V(l_row[j]), V::loadu(vp + j * kW), acc);
      acc.store(us + i * kW);
    }
  }
  for (int k = 0; k < kTerms; ++k)
    for (int64_t j = 0; j < n; ++j)
      (V::loadu(b.u + (k * n + j) * kW) * V::loadu(vp + j * kW)).store(b.z + (k * n + j) * kW);
  float* vs = b.v + kSweep * n * kW;
  constexpr int kReadRows = kSweep < kS ? 4 : 2;  // rows read at once (lanes_read), then written (last sweep)
  int64_t i = 0;
  for (; i + kReadRows <= n; i += kReadRows) {
    lanes_read<V, kS, kSweep, kMatrix, kReadRows>(b, i, vp, vs);
    if constexpr (kSweep == kS)
      for (int r = 0; r < kReadRows; ++r) {
        if (b.bound > 0.f) lanes_write<V, kS, kMatrix, true>(b, i + r);
        else lanes_write<V, kS, kMatrix, false>(b, i + r);
      }
  }
  for (; i < n; ++i) {
    lanes_read<V, kS, kSweep, kMatrix, 1>(b, i, vp, vs);
    if constexpr (kSweep == kS) {
      if (b.bound > 0.f) lanes_write<V, kS, kMatrix, true>(b, i);
      else lanes_write<V, kS, kMatrix, false>(b, i);
    }
  }
  lanes_activate<V, kSweep>(b, vs);
  if constexpr (kSweep < kS) lanes_sweep<V, kS, kSweep + 1, kMatrix>(b);
}

}  // namespace

// The checks both entry points share: kappa and beta [P or 1, S(S+3)/2], alpha [P or 1, N, N] (rows contiguous) or
// [P or 1, 1], write_l empty (the hebbian write, u = v) or [P or 1, N, N] (the linear write, u = L v), all float32 on
// the CPU. Returns whether the write is linear.
inline bool check_parameters(int64_t pop, int64_t n, int64_t depth, const at::Tensor& kappa,
                             const at::Tensor& beta, const at::Tensor& alpha, const at::Tensor& write_l) {
  for (const at::Tensor* t : {&kappa, &beta, &alpha, &write_l})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(), "the fused step takes float32 CPU tensors");
  TORCH_CHECK(depth >= 1 && kappa.dim() == 2 && beta.dim() == 2 && kappa.size(1) == depth * (depth + 3) / 2 &&
              beta.size(1) == kappa.size(1) && kappa.stride(1) == 1 && beta.stride(1) == 1,
              "kappa and beta must be [P, S(S+3)/2] with unit inner stride");
  TORCH_CHECK(alpha.dim() == 3 ? (alpha.size(1) == n && alpha.size(2) == n && alpha.stride(2) == 1 &&
                                  alpha.stride(1) == n)
                               : (alpha.dim() == 2 && alpha.size(1) == 1),
              "alpha must be [P, N, N] (rows contiguous) or [P, 1]");
  const bool linear = write_l.numel() > 0;
  TORCH_CHECK(!linear || (write_l.dim() == 3 && write_l.size(1) == n && write_l.size(2) == n &&
                          write_l.stride(2) == 1 && (write_l.size(0) == pop || write_l.size(0) == 1)),
              "write_l must be empty (hebbian) or [P or 1, N, N] with unit inner stride");
  for (const at::Tensor* t : {&kappa, &beta, &alpha})
    TORCH_CHECK(t->size(0) == pop || t->size(0) == 1, "parameters must have P or 1 individuals");
  return linear;
}

inline int64_t lanes() { return kLanes; }
