#!/usr/bin/env bash
# Everything the GPU backends need a GPU for, in one call, on a machine with an NVIDIA GPU and the
# project's dependencies installed (no network needed):
#
#   scripts/gpu_check.sh OUTDIR
#
#   1. builds the extensions in place with GEMMLAB_CUDA=1 (a CUDA build that cannot happen fails
#      loudly), while the torch-free harness (scripts/cuda_check.sh) is compiled alongside and then
#      run on the GPU: every kernel, float and double, many shapes and storage layouts;
#   2. runs the GPU tests (pytest -m gpu tests/test_gpu.py), the GPU backends required;
#   3. benchmarks every kernel of the cuda ladder, numba_cuda and cuBLAS on square float32 products
#      (`gemmlab bench --device cuda --direct`: each kernel called directly, checked against the
#      float64 reference, timed with CUDA events): 1024-8192 (bench's `gpu` preset), the naive
#      kernel in a run of its own up to 4096 (it takes seconds per call at 8192).
#
# Writes OUTDIR/gpu_check.log (everything printed), OUTDIR/harness.log, OUTDIR/gpu_bench.json,
# OUTDIR/gpu_bench_naive.json and OUTDIR/summary.txt. Every step has a time limit, the sum of them
# about 5.8 minutes, so the whole run fits in 6 minutes (an H200 takes less). The exit status is 0
# only if every step passed.
set -uo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
exec > >(tee "$OUT/gpu_check.log") 2>&1

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=$(command -v python3 || command -v python); fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's gemmlab, built in place
T0=$SECONDS
declare -A STATUS

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record pass/fail
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo
  echo "=== $name (limit ${limit} s): $*"
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  [[ $rc == 124 || $rc == 137 ]] && echo "=== $name: TIMED OUT after ${limit} s"
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  STATUS[$name]=$rc
  return $rc
}

echo "=== gpu_check $(date -u +%FT%TZ) in $PWD, python $PY, output in $OUT"
git log -1 --format='commit %H %s' 2>/dev/null || true
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo "nvidia-smi failed"
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "device available:", torch.cuda.is_available())'

# The build: the toolkit torch was built for, the architecture of this GPU only (a faster build).
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda; fi
if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
  [[ -n "$cap" ]] && export TORCH_CUDA_ARCH_LIST=$cap
fi
export GEMMLAB_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
export NVCC=${NVCC:-${CUDA_HOME:+$CUDA_HOME/bin/nvcc}}
echo "CUDA_HOME=${CUDA_HOME:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} MAX_JOBS=$MAX_JOBS"

# The harness needs only nvcc: compile and run it next to the build (it reports in harness.log).
(timeout --kill-after=5 150 scripts/cuda_check.sh --require-gpu > "$OUT/harness.log" 2>&1; echo "exit $?" >> "$OUT/harness.log") &
HARNESS=$!

step build 150 "$PY" setup.py build_ext --inplace
wait "$HARNESS"
echo
echo "=== harness (torch-free kernels on the GPU):"
cat "$OUT/harness.log"
STATUS[harness]=$(tail -1 "$OUT/harness.log" | awk '{print $2}')

if [[ ${STATUS[build]} == 0 ]]; then
  "$PY" -m gemmlab info || true
  step tests 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
  bench=("$PY" -m gemmlab bench --device cuda --direct --dtype float32)
  step bench 85 "${bench[@]}" --preset gpu --backend cuda:coalesced cuda:smem cuda:regblock cuda:warptile numba_cuda \
    --json "$OUT/gpu_bench.json"
  step bench-naive 25 "${bench[@]}" --size 1024 --size 2048 --size 4096 --backend cuda:naive --json "$OUT/gpu_bench_naive.json"
else
  echo "=== the build failed: no tests, no benchmark"
  STATUS[tests]=skipped STATUS[bench]=skipped STATUS[bench-naive]=skipped
fi

STEPS=(build harness tests bench bench-naive)
{
  echo "gpu_check finished in $((SECONDS - T0)) s"
  for name in "${STEPS[@]}"; do echo "  $name: ${STATUS[$name]:-not run}"; done
} | tee "$OUT/summary.txt"
for name in "${STEPS[@]}"; do [[ "${STATUS[$name]:-1}" == 0 ]] || exit 1; done
exit 0
