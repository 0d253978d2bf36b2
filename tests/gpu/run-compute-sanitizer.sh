#!/usr/bin/env bash
# The CUDA forward and backward under compute-sanitizer: memcheck (out-of-bounds and misaligned
# accesses, leaks), racecheck (shared-memory hazards between the threads of a block: the cp.async
# double buffers, the Q/O and dK/dV/dQ staging, the backward's shared D) and synccheck (barriers in
# divergent code). Small subsets of test_cuda_forward, test_cuda_backward and test_cuda_masks (--quick:
# ragged shapes, every score, masks, GQA, both dtypes and head dims; the backward's and the masks'
# cases run the deterministic and the fast path), since the tools slow kernels down by orders of
# magnitude.
#   tests/gpu/run-compute-sanitizer.sh [build-dir]      (default: build; Maven's is target/native)
# Exits 77 when no CUDA device is present, non-zero when a tool reports an error.
set -uo pipefail
build=${1:-build}
exe=$build/tests/gpu/test_cuda_forward
bwd=$build/tests/gpu/test_cuda_backward
masks=$build/tests/gpu/test_cuda_masks
for x in "$exe" "$bwd" "$masks"; do
  if [[ ! -x $x ]]; then
    echo "no $x: configure and build with CUDA first (cmake -S . -B $build && cmake --build $build)" >&2
    exit 2
  fi
done
cs=$(command -v compute-sanitizer || true)
[[ -z $cs && -x /usr/local/cuda/bin/compute-sanitizer ]] && cs=/usr/local/cuda/bin/compute-sanitizer
if [[ -z $cs ]]; then
  echo "compute-sanitizer not found (it ships with the CUDA toolkit)" >&2
  exit 2
fi
"$exe" --quick cuda_capabilities >/dev/null
rc=$?
if [[ $rc == 77 ]]; then
  echo "SKIP: no CUDA device (test_cuda_forward skips)"
  exit 77
fi
failed=0
run() {
  local tool=$1
  shift
  echo "=== compute-sanitizer --tool $tool: $*"
  if ! "$cs" --tool "$tool" --error-exitcode 99 "$@"; then
    echo "=== $tool FAILED" >&2
    failed=1
  fi
}
run memcheck --leak-check full "$exe" --quick
run racecheck --racecheck-report all "$exe" --quick numerics_matrix numerics_targeted
run synccheck "$exe" --quick numerics_matrix numerics_targeted
run memcheck --leak-check full "$bwd" --quick
run racecheck --racecheck-report all "$bwd" --quick numerics_matrix numerics_targeted
run synccheck "$bwd" --quick numerics_matrix numerics_targeted
run memcheck --leak-check full "$masks" --quick
run racecheck --racecheck-report all "$masks" --quick
# the kernels of GPUs with 99 KiB per block (the compact 256-wide forward, the backward's pair kernels at 64/128)
FSIG_CUDA_SMEM_LIMIT_KIB=99 run racecheck --racecheck-report all "$exe" small_shared_memory
FSIG_CUDA_SMEM_LIMIT_KIB=99 run synccheck "$bwd" small_shared_memory
FSIG_CUDA_SMEM_LIMIT_KIB=99 run memcheck "$masks" small_shared_memory
if [[ $failed == 0 ]]; then echo "compute-sanitizer: memcheck, racecheck, synccheck clean"; fi
exit $failed
