#!/usr/bin/env bash
# The GPU measurements of issue 3, in one go, for a machine with JAX for CUDA
# (and optax, chex) installed. Run from the repository root:
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR [ARGS...]]   # OUT_DIR: benchmarks/results
#
# Writes step_time_gpu_{100,1000}_leaves.{json,md} (GARO against SGD+momentum+wd
# and AdamW, with the device copy's bandwidth) and statistics_kernels_gpu.*.
# The optimizers are a subset, to keep the 1000-leaf compiles short. ARGS go
# to every benchmark after its own (the last of a repeated flag wins), as the
# test that runs this script small does.
set -euo pipefail
out="${1:-benchmarks/results}"
extra=("${@:2}")
mkdir -p "$out"
python -c "import jax; print(jax.__version__, jax.devices())"
python -m benchmarks.step_time --params 2.56e8 --leaves 100 \
  --optimizers garo sgd_momentum_wd adamw --out "$out/step_time_gpu_100_leaves" "${extra[@]}"
python -m benchmarks.step_time --params 1e8 --leaves 1000 \
  --optimizers garo sgd_momentum_wd adamw --out "$out/step_time_gpu_1000_leaves" "${extra[@]}"
python -m benchmarks.statistics_kernels --params 1e8 --leaves 1 100 1000 \
  --formulations garo per_leaf tree_sums elementwise --out "$out/statistics_kernels_gpu" \
  "${extra[@]}"
