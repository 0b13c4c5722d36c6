#!/usr/bin/env bash
# Compile gemmlab's CUDA kernels with plain nvcc -- no torch, no GPU needed -- and run the harness,
# which checks every kernel against a CPU reference when a GPU is present and otherwise only says
# that it compiled. `make cuda-check` and `make test` run this; CI's nvcc compiles only sm_90.
#
#   scripts/cuda_check.sh [--require-gpu] [--quick]     (arguments go to the harness)
#
# Without nvcc (on PATH, in $NVCC or in /usr/local/cuda/bin) it is skipped with a message, unless
# GEMMLAB_REQUIRE_NVCC=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || true)}
if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then
  NVCC=/usr/local/cuda/bin/nvcc
fi
if [[ -z "$NVCC" ]]; then
  echo "cuda-check: SKIPPED: nvcc not found, so the CUDA kernels were not compiled (install the CUDA toolkit or set NVCC=/path/to/nvcc)"
  [[ "${GEMMLAB_REQUIRE_NVCC:-0}" == 1 ]] && exit 1
  exit 0
fi

mkdir -p build
release=$("$NVCC" --version | grep -o 'release [0-9.]*' || echo 'release ?')
echo "cuda-check: compiling csrc/cuda/harness.cu with $NVCC ($release) for sm_90, warnings as errors"
start=$SECONDS
"$NVCC" -std=c++17 -arch=sm_90 -O3 -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror \
  -o build/cuda_harness csrc/cuda/harness.cu
echo "cuda-check: compiled every kernel for float and double in $((SECONDS - start)) s"
build/cuda_harness "$@"
