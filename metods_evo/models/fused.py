"""A fused CPU kernel for ``MetODS.plastic_step``: each agent's W is read from memory once and written once.

The eager step (``metods.py``) reads W^(0) S times (one batched mat-vec per read) and writes W_t through a few
[P, E, N, N] temporaries. This C++ kernel, compiled on first use with ``torch.utils.cpp_extension.load_inline``,
walks the agents instead (OpenMP over agents, torch's thread count), and for each agent runs the whole
step while that agent's W (and its individual's alpha, and L for the linear write) sit in L1/L2:

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
``fused_supported`` says whether a call qualifies; the eager ``plastic_step`` stays the reference and is always correct.

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

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # metods.py may import this module to dispatch to it
    from metods_evo.models.metods import MetODS

log = logging.getLogger(__name__)

KERNEL_DIR_ENV = "METODS_EVO_KERNEL_DIR"
"""Environment variable: where the compiled extension is cached (default: torch's extension directory)."""
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
KERNEL_VERSION = 10
"""Part of the extension's name: bump it whenever ``SOURCE`` changes, so that no cache (torch's, or
``METODS_EVO_KERNEL_DIR``) can hand a process a library built from an older source (v2: the linear write;
v3: the lanes layout; v6: L v by row groups, prefetch of the next block; v7: 16-episode blocks; v8: locals
instead of the block's fields in the row loops, the last sweep's read and write in two loops; v9: a corrected
comment; v10: several rows per read loop, the activations after the sweep's last row). ``fused_rollout`` builds
on this source and carries the version in its own extension's name."""
LANES_MAX_DEPTH = 4
"""The lanes kernel is instantiated for S = 1..4; deeper steps take the per-agent kernel."""
WRITES = ("hebbian", "linear")
"""The write rules the kernel computes."""

SOURCE = r"""
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

enum Activation : int64_t { kTanh = 0, kRelu = 1, kSigmoid = 2, kIdentity = 3 };

// The activations are forced inline into the sweeps (as calls, the 64-byte Vec2 goes through memory): the fused
// rollout runs 2-4 % faster, 1 thread (benchmarks/results/cpu-2026-11-28/fused-rollout-dense-inline-ab.txt).
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


// ---------------------------------------------------------------------------------------------- the lanes kernel
// The lanes layout stores individual p's W as [N][N][E] (episodes innermost): one vector holds element (i, j) of
// kLanes episodes of the same individual, so every operation of the step is a vertical FMA across agents (no
// padding lanes, no transpose-and-add), and the individual's alpha, L, kappa and beta are broadcast scalars. Same
// c / D formulation and the same single pass over W^(0) as ``run_agents``; the read's alpha terms are accumulated
// per k (acc_k = sum_j alpha_ij z_k[j], then read_i = c W^(0)_i. v + sum_k D[s-1,k] v_k[i] acc_k).
struct Lanes {
  const float* w; const float* v0; const float* kappa; const float* beta; const float* alpha; const float* write_l;
  float* w_out; float* v_out;
  int64_t episodes, n, kappa_stride, beta_stride, alpha_stride, write_l_stride, write_l_row, activation;
  bool alpha_matrix;
  float bound;
};

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
// the same for any kRows (4 rows before the last sweep and 2 on it, which also holds the write's vectors: +0-15 %
// over one row at a time with the activations in the row, benchmarks/results/cpu-2026-11-28/rows-and-claims-ab.txt).
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

// The checks both entry points share: kappa and beta [P or 1, S(S+3)/2], alpha [P or 1, N, N] (rows contiguous) or
// [P or 1, 1], write_l empty (the hebbian write, u = v) or [P or 1, N, N] (the linear write, u = L v), all float32 on
// the CPU. Returns whether the write is linear.
bool check_parameters(int64_t pop, int64_t n, int64_t depth, const at::Tensor& kappa, const at::Tensor& beta,
                      const at::Tensor& alpha, const at::Tensor& write_l) {
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

int64_t lanes() { return kLanes; }

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
"""


def _compile_flags() -> tuple[str, list[str]]:
    """(name tag, compiler flags). x86 CPUs where torch itself runs its AVX2 (or AVX512) kernels get the AVX2
    build of ATen's ``Vectorized``; anything else the portable one. Never ``-march=native``: the tag names the
    instruction set, so a cached library is only reused where that instruction set is present."""
    flags = ["-O3", "-fopenmp", "-ffp-contract=off"]  # fp-contract off: FMAs only where the source asks for them
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        return "avx2", flags + ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return "default", flags + ["-DCPU_CAPABILITY=DEFAULT"]


def compile_extension(prefix: str, source: str, functions: list[str]) -> tuple[object | None, str]:
    """(the module ``{prefix}_{isa}`` compiled from ``source``, "") or (None, why not): built once per machine by
    ``load_inline`` (about a minute of one core) and loaded from the cache (torch's, or ``METODS_EVO_KERNEL_DIR``)
    afterwards. ``prefix`` must carry a version that changes with ``source``."""
    try:
        from torch.utils.cpp_extension import load_inline

        tag, flags = _compile_flags()
        name = f"{prefix}_{tag}"
        build_directory = None
        if os.environ.get(KERNEL_DIR_ENV):
            build_directory = os.path.join(os.environ[KERNEL_DIR_ENV], name)
            os.makedirs(build_directory, exist_ok=True)
        print(f"metods-evo: loading the fused CPU kernel {name} (compiled once per machine, about a minute the "
              "first time)", file=sys.stderr, flush=True)
        module = load_inline(name=name, cpp_sources=[source], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                             functions=functions, build_directory=build_directory, verbose=False)
        return module, ""
    except Exception as error:  # no compiler, no OpenMP, read-only cache, ...: the eager path serves
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[-1] if lines else ''}"
        log.warning("fused kernel %s unavailable, using the eager path (%s)", prefix, reason)
        return None, reason


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str]:
    """(the compiled module, "") or (None, why not). Compiles at most once per process; cached on disk."""
    return compile_extension(f"metods_evo_fused_v{KERNEL_VERSION}", SOURCE,
                             ["plastic_step", "plastic_step_lanes", "lanes", "empty_output", "clear_buffer_pool"])


def fused_available() -> bool:
    """True when the kernel compiled (or loaded from the cache). The first call in a fresh cache compiles it
    (1-2 minutes of one core); later processes load the cached library in about a second."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why ``fused_available()`` is False ("" when it is True)."""
    return _load()[1]


def fused_supported(model: MetODS, params: dict[str, Tensor], w: Tensor, v0: Tensor) -> bool:
    """Whether the kernel computes this step: no autograd, float32 CPU tensors, the hebbian or linear write (for
    linear, ``write_l`` [1 or P, N, N]); independent of whether the kernel compiled: ``fused_available``."""
    write = model.cfg.write
    if torch.is_grad_enabled() or write not in WRITES or model.cfg.activation not in ACTIVATION_CODES:
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
