#!/usr/bin/env bash
# One prepared run for a session with a lent GPU (native/cuda/NOTES.md, "Not yet measured"): build with
# CUDA, the gpu-labelled tests (forward, backward, CPU-side index checks), compute-sanitizer on the
# quick subsets, then a short forward/backward timing table. Logs go to $OUT (or ./gpu-session-out);
# the last lines printed are the summary.
#   tests/gpu/gpu-session.sh [build-dir]        (default: build-gpu)
# Stages can be skipped: SKIP_SANITIZER=1, SKIP_BENCH=1.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-gpu}
out=${OUT:-gpu-session-out}
mkdir -p "$out"
summary=()
step() {  # name, command...
  local name=$1
  shift
  local t0=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-12s rc=%-3s %4ss  (%s)' "$name" "$rc" $((SECONDS - t0)) "$out/$name.log")")
  tail -n 5 "$out/$name.log"
  return $rc
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
step configure cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFSIG_CUDA_RESOURCE_USAGE=ON || exit 1
step build cmake --build "$build" --parallel "$(nproc)" || exit 1
# first, alone in a fresh process: a graph capture that is the first use of its kernel (lazy loading and
# cudaFuncSetAttribute inside the capture)
step graph_cold "$build/tests/gpu/test_cuda_forward" cuda_graph_capture_cold
step gpu_tests ctest --test-dir "$build" -L gpu --output-on-failure
grep -E "case\(s\)|same bits|FAIL|refused as expected" "$out/gpu_tests.log" | head -n 40 >"$out/gpu_tests.short"
if [[ -z ${SKIP_SANITIZER:-} ]]; then
  step sanitizer "$root/tests/gpu/run-compute-sanitizer.sh" "$build"
fi
if [[ -z ${SKIP_BENCH:-} ]]; then
  step bench "$build/benchmarks/flashsig-bench" --device cuda --dtype bf16 --hidden 2048 --seq 1024,4096 --d 64,128 \
    --causal both --score softmax,sigmoid --pass fwd,bwd,fwdbwd --bwd-path both --warmup 3 --iters 20 --csv "$out/bench.csv"
  # linear attention vs the causal sigmoid forward (issue 6: linear growth 4k..16k; cosFormer faster at 16k?)
  step bench_linear "$build/benchmarks/flashsig-bench" --device cuda --dtype bf16 --hidden 2048 --d 128 \
    --seq 4096,8192,16384 --causal 1 --score sigmoid,cosformer,linear_elu --pass fwd,fwdbwd --warmup 2 --iters 10 \
    --csv "$out/bench_linear.csv"
  # masks and positions (issue 9): ALiBi overhead and block-sparse time vs density at N = 16k
  step bench_masks "$build/benchmarks/cuda-masks-bench" 16384 10
fi
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
cat "$out/gpu_tests.short" 2>/dev/null | grep -E "case\(s\)|FAIL" | head -n 12
