"""One env step of a batch of MuJoCo simulations in C++, threads without the GIL.

``MujocoDirectionTask._simulate`` steps each row in Python: ``mj_setState``, ``mj_step`` for the frame skip,
(Ant) ``mj_rnePostConstraint`` and the reads, ``mj_getState``. ``mj_step`` releases the GIL, but every row also
takes it back several times, and with 2 worker threads each hand-over waits for the other thread to let go:
measured here, 2 Python workers gave 1.2-1.3x over 1 where MuJoCo itself scales 1.5-1.9x. This module makes
exactly the same MuJoCo calls, in the same order, from a small C++ extension: rows are taken one at a time from
an atomic counter by ``threads`` OpenMP threads, each with its own ``mjData``, and the GIL is released for the
whole batch. Results are bitwise those of the Python loop (``tests/test_locomotion.py`` checks it).

The extension (``metods_evo/csrc/mujoco_batch.cpp``) is compiled on first use by ``metods_evo.kernels`` (under a
minute, cached like the fused kernel) against the headers and the ``libmujoco`` shipped in the ``mujoco`` wheel;
where that fails, ``available()`` is False and the task keeps its Python loop.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from metods_evo import kernels


@functools.lru_cache(maxsize=1)
def _load() -> tuple[object | None, str]:
    """(the compiled module, "") or (None, why not); compiled at most once per process, cached on disk."""
    what = "batched MuJoCo stepper"
    try:
        import mujoco

        root = os.path.dirname(mujoco.__file__)
        libraries = sorted(f for f in os.listdir(root) if f.startswith("libmujoco.so"))
    except Exception as error:  # no mujoco: the Python loop serves (and needs it too)
        return kernels.unavailable(what, error)
    if not libraries:
        return None, f"no libmujoco.so in {root}"
    return kernels.load("mujoco_batch.cpp", what, cflags=["-O2", "-fopenmp"],
                        include_paths=[os.path.join(root, "include")],
                        ldflags=["-fopenmp", os.path.join(root, libraries[-1]), f"-Wl,-rpath,{root}"],
                        depends_on=[f"mujoco {mujoco.__version__}"])


def available() -> bool:
    """True when the extension compiled (or loaded from the cache)."""
    return _load()[0] is not None


def step_rows(model, datas: list, physics: np.ndarray, rows: np.ndarray, spec: int, nstep: int, *, rne: bool,
              body: int, body_xy: np.ndarray | None, cfrc: np.ndarray | None, warned: np.ndarray) -> None:
    """Advance ``physics[rows]`` in place (``csrc/mujoco_batch.cpp``); one thread per ``MjData`` in ``datas``."""
    module = _load()[0]
    if module is None:
        raise RuntimeError(f"the batched MuJoCo stepper is unavailable: {_load()[1]}")
    empty = torch.empty(0, dtype=torch.float64)
    module.step_rows(model._address, [d._address for d in datas], torch.from_numpy(physics),
                     torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)), int(spec), int(nstep), rne,
                     body, empty if body_xy is None else torch.from_numpy(body_xy),
                     empty if cfrc is None else torch.from_numpy(cfrc), torch.from_numpy(warned))


def step_forward_rows(model, datas: list, physics: np.ndarray, rows: np.ndarray, spec: int, nstep: int, *,
                      bodies: list[int], sites: list[int], geoms: list[int], reads: np.ndarray,
                      warned: np.ndarray) -> None:
    """Meta-World's simulation calls for ``physics[rows]`` in place (``nstep`` ``mj_step``, ``mj_rnePostConstraint``,
    ``mj_forward``), then the ``xpos`` of ``bodies``, ``site_xpos`` of ``sites`` and ``geom_xmat`` of ``geoms`` of each
    row into ``reads`` [B, 3 * len(bodies) + 3 * len(sites) + 9 * len(geoms)] (``csrc/mujoco_batch.cpp``)."""
    module = _load()[0]
    if module is None:
        raise RuntimeError(f"the batched MuJoCo stepper is unavailable: {_load()[1]}")

    def ids(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64)

    module.step_forward_rows(model._address, [d._address for d in datas], torch.from_numpy(physics),
                             torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)), int(spec), int(nstep),
                             ids(bodies), ids(sites), ids(geoms), torch.from_numpy(reads), torch.from_numpy(warned))
