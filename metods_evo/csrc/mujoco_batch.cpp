// The batched MuJoCo stepper (metods_evo/tasks/mujoco_batch.py), compiled against the mujoco wheel's headers and
// library.
#include <mujoco/mujoco.h>
#include <pybind11/pybind11.h>
#include <omp.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <vector>

// Rows of physics [B, nstate] (float64, the mjtState ``spec`` layout) stepped in place, in parallel, one row at a
// time from a shared counter (an Ant row costs 0.1-1 ms depending on its contacts). Per row: load its state, ``nstep``
// mj_step calls, ``after_steps(d, row)``, store the state back; warned[row] = any MuJoCo warning counter moved (and
// the counters are cleared), as the Python loop does. rows: the int64 indices to step.
template <typename AfterSteps>
void step_each_row(const mjModel* m, const std::vector<int64_t>& data_addresses, at::Tensor physics, at::Tensor rows,
                   int64_t spec, int64_t nstep, at::Tensor warned, AfterSteps after_steps) {
  TORCH_CHECK(physics.dtype() == at::kDouble && physics.is_contiguous() && physics.dim() == 2, "physics");
  TORCH_CHECK(rows.dtype() == at::kLong && rows.is_contiguous(), "rows");
  TORCH_CHECK(warned.dtype() == at::kBool && warned.is_contiguous() && warned.size(0) == physics.size(0), "warned");
  const int64_t nstate = physics.size(1), count = rows.size(0);
  TORCH_CHECK(mj_stateSize(m, static_cast<unsigned int>(spec)) == nstate, "physics does not match the state spec");
  double* state = physics.data_ptr<double>();
  const int64_t* row_index = rows.data_ptr<int64_t>();
  bool* warn = warned.data_ptr<bool>();
  std::atomic<int64_t> next(0);
  const int threads = static_cast<int>(data_addresses.size());
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel num_threads(threads)
  {
    const int worker = threads > 1 ? omp_get_thread_num() : 0;
    mjData* d = reinterpret_cast<mjData*>(data_addresses[worker]);
    for (int64_t k = next.fetch_add(1); k < count; k = next.fetch_add(1)) {
      const int64_t i = row_index[k];
      double* s = state + i * nstate;
      mj_setState(m, d, s, static_cast<unsigned int>(spec));
      for (int64_t step = 0; step < nstep; ++step) mj_step(m, d);
      after_steps(d, i);
      mj_getState(m, d, s, static_cast<unsigned int>(spec));
      bool any = false;
      for (int w = 0; w < mjNWARNING; ++w) {
        any = any || d->warning[w].number != 0;
        d->warning[w].number = 0;
      }
      if (any) warn[i] = true;
    }
  }
}

// step_each_row, then per row: (rne) mj_rnePostConstraint, then xpos[body][:2] into body_xy [B, 2] (body >= 0) and
// cfrc_ext into cfrc [B, nbody, 6] (when not empty).
void step_rows(int64_t model_address, const std::vector<int64_t>& data_addresses, at::Tensor physics,
               at::Tensor rows, int64_t spec, int64_t nstep, bool rne, int64_t body, at::Tensor body_xy,
               at::Tensor cfrc, at::Tensor warned) {
  const mjModel* m = reinterpret_cast<const mjModel*>(model_address);
  const bool want_cfrc = cfrc.numel() > 0, want_xy = body >= 0;
  if (want_cfrc) TORCH_CHECK(cfrc.dtype() == at::kDouble && cfrc.is_contiguous() && cfrc.size(1) == m->nbody, "cfrc");
  if (want_xy) TORCH_CHECK(body_xy.dtype() == at::kDouble && body_xy.is_contiguous() && body < m->nbody, "body_xy");
  double* xy = want_xy ? body_xy.data_ptr<double>() : nullptr;
  double* forces = want_cfrc ? cfrc.data_ptr<double>() : nullptr;
  step_each_row(m, data_addresses, physics, rows, spec, nstep, warned, [&](mjData* d, int64_t i) {
    if (rne) mj_rnePostConstraint(m, d);
    if (want_xy) {
      xy[2 * i] = d->xpos[3 * body];
      xy[2 * i + 1] = d->xpos[3 * body + 1];
    }
    if (want_cfrc) std::copy(d->cfrc_ext, d->cfrc_ext + 6 * m->nbody, forces + i * 6 * m->nbody);
  });
}

// One Meta-World env step of rows of physics [B, nstate] in place, the mocap target and ctrl already written into
// each row's state: what Meta-World's step runs on the simulation after setting them (``nstep`` mj_step, then
// mj_rnePostConstraint as gymnasium's do_simulation, then mj_forward). Per row, after the calls: xpos of ``bodies``,
// site_xpos of ``sites`` and geom_xmat of ``geoms`` (int64 ids) into reads [B, 3 * nbodies + 3 * nsites + 9 * ngeoms],
// in that order; warned as in step_each_row.
void step_forward_rows(int64_t model_address, const std::vector<int64_t>& data_addresses, at::Tensor physics,
                       at::Tensor rows, int64_t spec, int64_t nstep, at::Tensor bodies, at::Tensor sites,
                       at::Tensor geoms, at::Tensor reads, at::Tensor warned) {
  for (const at::Tensor& ids : {bodies, sites, geoms}) {
    TORCH_CHECK(ids.dtype() == at::kLong && ids.is_contiguous(), "ids");
  }
  const mjModel* m = reinterpret_cast<const mjModel*>(model_address);
  const int64_t nb = bodies.numel(), ns = sites.numel(), ng = geoms.numel(), width = 3 * nb + 3 * ns + 9 * ng;
  TORCH_CHECK(reads.dtype() == at::kDouble && reads.is_contiguous() && reads.dim() == 2 &&
              reads.size(0) == physics.size(0) && reads.size(1) == width, "reads");
  const int64_t* body = bodies.data_ptr<int64_t>();
  const int64_t* site = sites.data_ptr<int64_t>();
  const int64_t* geom = geoms.data_ptr<int64_t>();
  for (int64_t k = 0; k < nb; ++k) TORCH_CHECK(body[k] >= 0 && body[k] < m->nbody, "body id");
  for (int64_t k = 0; k < ns; ++k) TORCH_CHECK(site[k] >= 0 && site[k] < m->nsite, "site id");
  for (int64_t k = 0; k < ng; ++k) TORCH_CHECK(geom[k] >= 0 && geom[k] < m->ngeom, "geom id");
  double* out = reads.data_ptr<double>();
  step_each_row(m, data_addresses, physics, rows, spec, nstep, warned, [&](mjData* d, int64_t i) {
    mj_rnePostConstraint(m, d);
    mj_forward(m, d);
    double* o = out + i * width;
    for (int64_t b = 0; b < nb; ++b, o += 3) std::copy(d->xpos + 3 * body[b], d->xpos + 3 * body[b] + 3, o);
    for (int64_t t = 0; t < ns; ++t, o += 3) std::copy(d->site_xpos + 3 * site[t], d->site_xpos + 3 * site[t] + 3, o);
    for (int64_t g = 0; g < ng; ++g, o += 9) std::copy(d->geom_xmat + 9 * geom[g], d->geom_xmat + 9 * geom[g] + 9, o);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("step_rows", torch::wrap_pybind_function(step_rows), "step_rows");
  m.def("step_forward_rows", torch::wrap_pybind_function(step_forward_rows), "step_forward_rows");
}
