#!/usr/bin/env bash
# The GPU measurements of issue 3, in one go, for a machine with JAX for CUDA
# (and optax, chex) installed. Run from the repository root:
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]      # default: benchmarks/results
#
# Writes step_time_gpu_{100,1000}_leaves.{json,md} (GARO against SGD+momentum+wd
# and AdamW, with the device copy's bandwidth) and statistics_kernels_gpu.*.
# The optimizers are a subset, to keep the 1000-leaf compiles short.
set -euo pipefail
out="${1:-benchmarks/results}"
mkdir -p "$out"
python -c "import jax; print(jax.__version__, jax.devices())"
python -m benchmarks.step_time --params 2.56e8 --leaves 100 \
  --optimizers garo sgd_momentum_wd adamw --out "$out/step_time_gpu_100_leaves"
python -m benchmarks.step_time --params 1e8 --leaves 1000 \
  --optimizers garo sgd_momentum_wd adamw --out "$out/step_time_gpu_1000_leaves"
python -m benchmarks.statistics_kernels --params 1e8 --leaves 1 100 1000 \
  --formulations garo per_leaf tree_sums elementwise --out "$out/statistics_kernels_gpu"
