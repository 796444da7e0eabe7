#!/usr/bin/env bash
# The GPU checks of issue #4, as one script for a machine with a CUDA GPU and PyTorch (e.g. a lent H100):
#   1. the CUDA tests (tests/test_cuda.py and the CUDA cases of the task tests),
#   2. one ES generation at popsize 10,000 x 16 harlow episodes (benchmarks/es_generation.py),
#   3. the roofline sweep on the GPU (benchmarks/roofline.py --device cuda),
#   4. torch.compile(plastic_step) against the eager step at a few large points (roofline.py --compile).
# SECTIONS="tests es roofline compile" (the default) picks which run, in that order.
# Logs go to $OUT (default /tmp/gpu_check). Each section has its own time limit, so one slow part cannot
# starve the others. Where metods-evo's dependencies are not installed, put wheels in .whl/ (evotorch, cma,
# gymnasium, farama-notifications). Where Ray is missing (its wheel is too large to send to a lent GPU machine),
# benchmarks/ray_stub/ stands in for it: evotorch imports ray at module level, and these checks use no actors.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
python3 -c "import ray" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks/ray_stub
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

SECTIONS=${SECTIONS:-tests es roofline compile}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

want tests && timeout "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
  tests/test_harlow.py::test_cuda_matches_shapes tests/test_maze.py::test_runs_on_cuda 2>&1 | tee "$OUT/tests.log"

want es && timeout "${ES_S:-120}" python3 benchmarks/es_generation.py --devices cuda --popsize 10000 --episodes 16 \
  --generations 3 --json 2>&1 | tee "$OUT/es_generation.txt"

if want roofline; then
  timeout "${ROOFLINE_S:-240}" python3 benchmarks/roofline.py --device cuda --max-gib 40 --copy-mib 2048 \
    --rollout-pe 256,1024,4096,16384,65536,160000 --json 2>"$OUT/roofline.progress" >"$OUT/roofline.txt"
  echo "roofline exit $?"
  sed -n '/^{/q;p' "$OUT/roofline.txt"
fi

want compile && timeout "${COMPILE_S:-200}" python3 benchmarks/roofline.py --device cuda --compile --ns 20,64 \
  --depths 3 --pe 16384,100000 --tasks "" --copy-mib 2048 --max-gib 40 2>&1 | tee "$OUT/compile.txt"
