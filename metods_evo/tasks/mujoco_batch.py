"""One env step of a batch of MuJoCo simulations in C++, threads without the GIL.

``MujocoDirectionTask._simulate`` steps each row in Python: ``mj_setState``, ``mj_step`` for the frame skip,
(Ant) ``mj_rnePostConstraint`` and the reads, ``mj_getState``. ``mj_step`` releases the GIL, but every row also
takes it back several times, and with 2 worker threads each hand-over waits for the other thread to let go:
measured here, 2 Python workers gave 1.2-1.3x over 1 where MuJoCo itself scales 1.5-1.9x. This module makes
exactly the same MuJoCo calls, in the same order, from a small C++ extension: rows are taken one at a time from
an atomic counter by ``threads`` OpenMP threads, each with its own ``mjData``, and the GIL is released for the
whole batch. Results are bitwise those of the Python loop (``tests/test_locomotion.py`` checks it).

The extension is compiled on first use (under a minute, cached like the fused kernel) against the headers and the
``libmujoco`` shipped in the ``mujoco`` wheel; where that fails, ``available()`` is False and the task keeps its
Python loop.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import numpy as np
import torch

log = logging.getLogger(__name__)

KERNEL_DIR_ENV = "METODS_EVO_KERNEL_DIR"
"""Where the compiled extension is cached (default: torch's extension directory); the fused kernel's variable."""
VERSION = 1
"""Part of the extension's name: bump it whenever ``SOURCE`` changes."""

SOURCE = r"""
#include <mujoco/mujoco.h>
#include <pybind11/pybind11.h>
#include <omp.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <vector>

// Step rows of physics [B, nstate] (float64, the mjtState ``spec`` layout) in place by ``nstep`` mj_step calls.
// rows: the int64 indices to step. Per row, after the steps: (rne) mj_rnePostConstraint, then xpos[body][:2] into
// body_xy [B, 2] (body >= 0) and cfrc_ext into cfrc [B, nbody, 6] (when not empty); warned[row] = any MuJoCo
// warning counter moved (and the counters are cleared), as the Python loop does.
void step_rows(int64_t model_address, const std::vector<int64_t>& data_addresses, at::Tensor physics,
               at::Tensor rows, int64_t spec, int64_t nstep, bool rne, int64_t body, at::Tensor body_xy,
               at::Tensor cfrc, at::Tensor warned) {
  TORCH_CHECK(physics.dtype() == at::kDouble && physics.is_contiguous() && physics.dim() == 2, "physics");
  TORCH_CHECK(rows.dtype() == at::kLong && rows.is_contiguous(), "rows");
  TORCH_CHECK(warned.dtype() == at::kBool && warned.is_contiguous() && warned.size(0) == physics.size(0), "warned");
  const mjModel* m = reinterpret_cast<const mjModel*>(model_address);
  const int64_t nstate = physics.size(1), count = rows.size(0);
  TORCH_CHECK(mj_stateSize(m, static_cast<unsigned int>(spec)) == nstate, "physics does not match the state spec");
  const bool want_cfrc = cfrc.numel() > 0, want_xy = body >= 0;
  if (want_cfrc) TORCH_CHECK(cfrc.dtype() == at::kDouble && cfrc.is_contiguous() && cfrc.size(1) == m->nbody, "cfrc");
  if (want_xy) TORCH_CHECK(body_xy.dtype() == at::kDouble && body_xy.is_contiguous() && body < m->nbody, "body_xy");
  double* state = physics.data_ptr<double>();
  const int64_t* row_index = rows.data_ptr<int64_t>();
  bool* warn = warned.data_ptr<bool>();
  double* xy = want_xy ? body_xy.data_ptr<double>() : nullptr;
  double* forces = want_cfrc ? cfrc.data_ptr<double>() : nullptr;
  std::atomic<int64_t> next(0);
  const int threads = static_cast<int>(data_addresses.size());
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel num_threads(threads)
  {
    const int worker = threads > 1 ? omp_get_thread_num() : 0;
    mjData* d = reinterpret_cast<mjData*>(data_addresses[worker]);
    // One row at a time from a shared counter: an Ant row costs 0.1-1 ms depending on its contacts.
    for (int64_t k = next.fetch_add(1); k < count; k = next.fetch_add(1)) {
      const int64_t i = row_index[k];
      double* s = state + i * nstate;
      mj_setState(m, d, s, static_cast<unsigned int>(spec));
      for (int64_t step = 0; step < nstep; ++step) mj_step(m, d);
      if (rne) mj_rnePostConstraint(m, d);
      if (want_xy) {
        xy[2 * i] = d->xpos[3 * body];
        xy[2 * i + 1] = d->xpos[3 * body + 1];
      }
      if (want_cfrc) std::copy(d->cfrc_ext, d->cfrc_ext + 6 * m->nbody, forces + i * 6 * m->nbody);
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
"""


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str]:
    """(the compiled module, "") or (None, why not); compiled at most once per process, cached on disk."""
    try:
        import mujoco
        from torch.utils.cpp_extension import load_inline

        root = os.path.dirname(mujoco.__file__)
        libraries = sorted(f for f in os.listdir(root) if f.startswith("libmujoco.so"))
        if not libraries:
            return None, f"no libmujoco.so in {root}"
        name = f"metods_evo_mujoco_batch_v{VERSION}_" + mujoco.__version__.replace(".", "_")
        print(f"metods-evo: loading the batched MuJoCo stepper {name} (compiled once per machine, under a minute the "
              "first time)", file=sys.stderr, flush=True)
        build_directory = None
        if os.environ.get(KERNEL_DIR_ENV):
            build_directory = os.path.join(os.environ[KERNEL_DIR_ENV], name)
            os.makedirs(build_directory, exist_ok=True)
        module = load_inline(name=name, cpp_sources=[SOURCE], functions=["step_rows"], build_directory=build_directory,
                             extra_cflags=["-O2", "-fopenmp"], extra_include_paths=[os.path.join(root, "include")],
                             extra_ldflags=["-fopenmp", os.path.join(root, libraries[-1]), f"-Wl,-rpath,{root}"],
                             verbose=False)
        return module, ""
    except Exception as error:  # no compiler, headers missing, ...: the Python loop serves
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[-1] if lines else ''}"
        log.warning("batched MuJoCo stepper unavailable, stepping rows from Python (%s)", reason)
        return None, reason


def available() -> bool:
    """True when the extension compiled (or loaded from the cache)."""
    return _load()[0] is not None


def step_rows(model, datas: list, physics: np.ndarray, rows: np.ndarray, spec: int, nstep: int, *, rne: bool,
              body: int, body_xy: np.ndarray | None, cfrc: np.ndarray | None, warned: np.ndarray) -> None:
    """Advance ``physics[rows]`` in place (see ``SOURCE``); one thread per ``MjData`` in ``datas``."""
    module = _load()[0]
    if module is None:
        raise RuntimeError(f"the batched MuJoCo stepper is unavailable: {_load()[1]}")
    empty = torch.empty(0, dtype=torch.float64)
    module.step_rows(model._address, [d._address for d in datas], torch.from_numpy(physics),
                     torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)), int(spec), int(nstep), rne,
                     body, empty if body_xy is None else torch.from_numpy(body_xy),
                     empty if cfrc is None else torch.from_numpy(cfrc), torch.from_numpy(warned))
