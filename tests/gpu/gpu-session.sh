#!/usr/bin/env bash
# One prepared run for a session with a lent GPU (native/cuda/NOTES.md, "Running on a GPU"), sized for
# the device tool: one command may run 10 minutes and at most 8 files come back from $OUT. So the script
# keeps to BUDGET seconds (default 540) whatever happens, runs its steps in order of value with each one
# cut to the time left, and after every step packs every log and CSV into $OUT/session.tar.gz; the table
# of steps is $OUT/summary.txt and the last lines printed.
#   tests/gpu/gpu-session.sh [build-dir]        (default: build-gpu)
# Steps, in this order (STEPS="…" runs a subset, e.g. on a warm machine whose build dir is kept):
#   configure build        only the targets run here, for the GPU's own architecture (ARCH, default
#                          90a-real: H100/H200), with the ptxas register/spill report in build.log
#                          (tests/gpu/session-build.sh); skipped when build-dir is gpu-prebuilt and
#                          gpu-prebuilt.tar.xz (scripts/gpu-prebuild.sh, carried along) was built from these
#                          very sources (saves the device ≈ 1.5–2 minutes)
#   graph_cold             a CUDA-graph capture that is the kernel's first use, alone in a fresh process
#   forward forward_wgmma backward_wgmma backward   the device tests (DESIGN §6 rule against the CPU fp64
#                          reference; the backward runs the fast and the deterministic path), never the
#                          emulator's; the _wgmma ones under FSIG_CUDA_WGMMA=require (the Hopper kernels used
#                          or refused; sm_90 only)
#   masks_wgmma            the masks' extension sets that the Hopper kernels serve, on them
#   sdpa                   benchmarks/sdpa_compare.py: fwd and fwd+bwd against SDPA flash and cuDNN, FlashSig on
#                          the mma.sync and on the Hopper kernels
#   bench_wgmma            both kernel families' TFLOP/s at d = 128 and 256: forward, both backward paths
#   tall_always            the forward's quick set and the masks' positions, layouts and key padding on the tall kernel at
#                          every grid (FSIG_CUDA_FWD_TALL=always: the tests' grids hold fewer blocks than the GPU
#                          has SMs)
#   bench_tall             the mma.sync forward at d = 64 and 128 on its tall kernel and (FSIG_CUDA_FWD_TALL=0)
#                          on the regular one: the tall kernel's gain in one run
#   profile                ncu on the forward and backward kernels at d = 128, both kernel families
#   linear                 the linear-attention device test (before its benchmarks: its loads changed unrun)
#   bench_linear           cosFormer's growth 8k-64k and against the causal sigmoid forward at 16k (and
#                          without the workspace: its segments then recompute their prefixes)
#   profile_linear         ncu on the linear-attention kernels (cosFormer causal at 16k, both paths)
#   bench_masks            ALiBi overhead and block-sparse time vs density at 16k (and the mma.sync kernels'
#                          ALiBi and layouts without the tall kernel: its gain there)
#   sdpa_d256              the 256-wide kernels against SDPA at d = 256, forward and forward + backward
#   java                   the Java CUDA tests and the training example on the device, if gpu-carry/ (from
#                          scripts/gpu-carry.sh) was carried: this machine has no Java of its own
#   masks memory           the other device tests
#   bench_bwd              fast vs deterministic backward at d = 64 and 128
#   small_smem             the kernels of GPUs with 99 KiB per block (FSIG_CUDA_SMEM_LIMIT_KIB=99: the backward's
#                          pair kernels at d <= 128, the compact 256-wide forward): their numerics, then their
#                          TFLOP/s (compare bench_bwd, and sdpa_d256's forward)
#   sanitizer              compute-sanitizer memcheck, racecheck, synccheck on the quick sets
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(realpath -m "${1:-build-gpu}")
out=${OUT:-gpu-session-out}
logs=${LOGS:-$build/session-logs}
budget=${BUDGET:-540}
steps=" ${STEPS:-configure build graph_cold forward forward_wgmma backward_wgmma backward masks_wgmma sdpa bench_wgmma tall_always bench_tall profile linear bench_linear profile_linear bench_masks sdpa_d256 java masks memory bench_bwd small_smem sanitizer} "
deadline=$((SECONDS + budget))
[[ -n ${LOGS:-} ]] || rm -rf "$logs"  # this call's logs only (an earlier call's came back with it)
mkdir -p "$out" "$logs"
summary=()

pack() {
  printf '%s\n' "${summary[@]}" >"$out/summary.txt"
  tar -czf "$out/session.tar.gz" -C "$logs" . 2>/dev/null
}
# step NAME CAP_SECONDS COMMAND...: runs COMMAND (log in $logs/NAME.log) for at most CAP seconds and at
# most what the budget leaves (minus 15 s to pack); skipped when under 20 s are left
step() {
  local name=$1 cap=$2
  shift 2
  [[ $steps == *" $name "* ]] || return 0
  local left=$((deadline - SECONDS - 15))
  if ((left < 20)); then
    summary+=("$(printf '%-12s %-8s %5s' "$name" "no time" "")")
    pack
    return 1
  fi
  ((cap > left)) && cap=$left
  local t0=$SECONDS
  timeout -k 5 "$cap" "$@" >"$logs/$name.log" 2>&1
  local rc=$? verdict
  case $rc in
    0) verdict=ok ;;
    77) verdict=skipped ;;
    124 | 137) verdict="timeout" ;;
    *) verdict="FAIL($rc)" ;;
  esac
  local key
  key=$(grep -E "test\(s\) ran|tests (successful|failed)|clean|error|FAILED" "$logs/$name.log" | tail -n 2 | tr -s ' \n' ' ')
  summary+=("$(printf '%-12s %-8s %4ss cap %4ss  %s' "$name" "$verdict" $((SECONDS - t0)) "$cap" "${key:0:110}")")
  tail -n 3 "$logs/$name.log"
  pack
  return $rc
}

finish() {
  pack
  echo
  echo "== summary ($SECONDS s of a $budget s budget; every log in $out/session.tar.gz)"
  cat "$out/summary.txt"
  head -n 30 "$out/sdpa.txt" 2>/dev/null
}
trap finish EXIT

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -n 2; nproc; } >"$logs/gpu.txt" 2>&1
cat "$logs/gpu.txt"
cp "$logs/gpu.txt" "$out/gpu.txt"

source "$root/tests/gpu/session-build.sh"
# a folder from scripts/gpu-prebuild.sh (the same targets, built on the CPU machine, carried packed): used
# without configure and build when every source it was built from is unchanged and its binaries start here,
# else built over
if [[ $(basename "$build") == gpu-prebuilt && -f $root/gpu-prebuilt.tar.xz ]]; then
  tar -C "$(dirname "$build")" -xJf "$root/gpu-prebuilt.tar.xz" 2>/dev/null ||  # no xz there: Python's lzma
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$root/gpu-prebuilt.tar.xz" \
      "$(dirname "$build")"
fi
if [[ -f $build/sources.sha256 ]]; then
  if [[ $(cat "$build/arch" 2>/dev/null) == "$gpu_arch" ]] &&
    (cd "$root" && sha256sum --quiet --status -c "$build/sources.sha256") &&
    "$build/benchmarks/flashsig-bench" --help >/dev/null 2>&1; then
    steps=${steps/ configure / }
    steps=${steps/ build / }
    cp "$build/build.log" "$logs/build.log"
    summary+=("$(printf '%-12s %-8s %s' build prebuilt "for $(cat "$build/arch" 2>/dev/null) by scripts/gpu-prebuild.sh")")
  else
    echo "$build: another ARCH, sources changed since scripts/gpu-prebuild.sh, or its binaries do not start here: building"
    rm -f "$build/sources.sha256"  # the binaries built over it are not the listed ones
  fi
fi
step configure 120 cmake -S "$root" -B "$build" "${gpu_configure_args[@]}" || exit 1
step build 360 cmake --build "$build" --parallel "$(nproc)" --target "${gpu_targets[@]}" || exit 1

gpu=$build/tests/gpu
bench=$build/benchmarks/flashsig-bench
# The order, from the first GPU run (2026-12-04, H200): the device tests take ≈ 90 s together and passed, so
# they stay first (a kernel change shows there) and the comparisons of issues 4 and 5 follow at once.
step graph_cold 60 "$gpu/test_cuda_forward" cuda_graph_capture_cold
step forward 200 "$gpu/test_cuda_forward"
# require: a call the wgmma kernels should serve but cannot fails, so green means they ran
step forward_wgmma 150 env FSIG_CUDA_WGMMA=require "$gpu/test_cuda_forward" numerics_matrix numerics_shapes \
  numerics_targeted nan_propagates hopper_kernel_choice
# the backward's dK/dV (and the fast path's dS K) and the deterministic path's dQ on the Hopper kernels, both
# paths, every score (plain calls; the extended ones in masks_wgmma)
step backward_wgmma 150 env FSIG_CUDA_WGMMA=require "$gpu/test_cuda_backward" numerics_matrix numerics_shapes \
  numerics_targeted determinism hopper_kernel_choice
step backward 240 "$gpu/test_cuda_backward"
# masks: the extension sets with calls the wgmma kernels serve — positions, key padding, layouts of 128-row
# blocks, Nq = 1; their backward's dQ on wgmma too (deterministic path, no dBias), and its dK/dV at d = 64
step masks_wgmma 90 env FSIG_CUDA_WGMMA=require "$gpu/test_cuda_masks" _alibi _logn _keypad _layouttiles _alibilayout \
  _padlayout _biasfull _maskfull
# SDPA flash and cuDNN first (each figure printed as it comes), then FlashSig on the mma.sync kernels (0) and
# on the Hopper ones (1: wherever they serve the call): the ratios of issues 4 and 5
step sdpa 200 env PYTHONUNBUFFERED=1 python3 "$root/benchmarks/sdpa_compare.py" --bench "$bench" \
  --seqs 1024,4096,16384 --dims 64,128 --wgmma 0,1 --check --warmup 3 --iters 10 --csv "$logs/sdpa.csv"
grep -A 40 "ratios" "$logs/sdpa.log" >"$out/sdpa.txt" 2>/dev/null
# the same shapes on the mma.sync kernels (FSIG_CUDA_WGMMA=0) and on the wgmma kernels, one log; d = 128 and
# d = 256 each: the forward and both backward paths
step bench_wgmma 180 bash -c 'for k in 0 require; do echo "FSIG_CUDA_WGMMA=$k"; FSIG_CUDA_WGMMA=$k "$0" --device cuda \
  --dtype bf16 --hidden 2048 --seq 4096,16384 --d 128 --causal both --score softmax,sigmoid --pass fwd,bwd --bwd-path both \
  --warmup 2 --iters 10 --csv "$1$k.csv" && FSIG_CUDA_WGMMA=$k "$0" --device cuda --dtype bf16 --hidden 2048 \
  --seq 4096,16384 --d 256 --causal both --score softmax,sigmoid --pass fwd,bwd --bwd-path both --warmup 2 --iters 10 \
  --csv "$1$k.d256.csv" || exit 1; done' "$bench" "$logs/bench_wgmma"
# the tall forward's numerics on this GPU, whose SM count the tests' grids stay below (FSIG_CUDA_FWD_TALL=always):
# plain calls, positions, layouts it applies by skipping tiles, key padding (a row of β per key tile); the masks
# cases' forwards alone (the setting changes no backward kernel: step masks runs those)
step tall_always 90 env FSIG_CUDA_FWD_TALL=always bash -c '"$0/test_cuda_forward" --quick && \
  "$0/test_cuda_masks" --forward-only t0 t1 _alibi_ _alibih_ _logn_ w00 _layout_ _layoutruns_ _layouttiles_ \
  _alibilayout_ _keypad _padlayout_' "$gpu"
# the plain mma.sync forward: the tall kernel (256-row blocks), then the regular one (native/cuda/NOTES.md, "The
# tall forward": predicted 1.1-1.4x at N = 4k-16k)
step bench_tall 60 bash -c 'for tall in 1 0; do echo "FSIG_CUDA_FWD_TALL=$tall"; FSIG_CUDA_WGMMA=0 \
  FSIG_CUDA_FWD_TALL=$tall "$0" --device cuda --dtype bf16 --hidden 2048 --seq 4096,16384 --d 64,128 --causal both \
  --score softmax,sigmoid --pass fwd --warmup 2 --iters 10 --csv "$1$tall.csv" || exit 1; done' "$bench" "$logs/bench_tall"
# where the time goes (ncu, clocks left alone): the forward and both backward paths' kernels, d = 128, on each
# kernel family — tensor-pipe use, stall reasons, occupancy, L2 atomics (the fast backward was no faster than
# the deterministic one at d = 128 on the first run)
step profile 120 bash -c 'ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -n 1)
  [[ -n $ncu ]] || { echo "no ncu on this machine"; exit 77; }
  for k in 0 1; do echo "FSIG_CUDA_WGMMA=$k"; FSIG_CUDA_WGMMA=$k "$ncu" --clock-control none \
  -k "regex:attention_|dq_convert" --launch-count 16 --section SpeedOfLight --section ComputeWorkloadAnalysis \
  --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats "$0" --device cuda \
  --dtype bf16 --batch 4 --heads 16 --d 128 --seq 4096 --score softmax,sigmoid --pass fwdbwd --bwd-path both \
  --warmup 0 --iters 1 || exit 1; done' "$bench"
# the linear kernels' numerics on the device first (versions 2.1 and 2.2 changed them without a GPU run)
step linear 150 "$gpu/test_cuda_linear"
# issue 6: linear growth at a fixed batch and head count (B = 1, H = 16) from 8k to 64k, and cosFormer against
# the causal sigmoid forward at 16k
step bench_linear 120 bash -c '"$0" --device cuda --dtype bf16 --batch 1 --heads 16 --d 128 --seq 16384 --causal 1 \
  --score sigmoid --pass fwd --warmup 2 --iters 10 --csv "$1" && "$0" --device cuda --dtype bf16 --batch 1 \
  --heads 16 --d 128 --seq 8192,16384,32768,65536 --causal both --score cosformer,linear_elu --pass fwd,fwdbwd \
  --warmup 2 --iters 10 --csv "$1" && "$0" --device cuda --dtype bf16 --batch 1 --heads 16 --d 128 --seq 16384 \
  --causal both --score cosformer --pass fwd,fwdbwd --bwd-path both --warmup 2 --iters 10 --csv "$1"' \
  "$bench" "$logs/bench_linear.csv"
# why cosFormer's forward ran 2.3-4.6x slower than predicted on the first run (benchmarks/NOTES.md): ncu on its
# causal forward at 16k with the workspace (kPartial, kCombine) and without (one launch) — tensor-pipe use,
# stall reasons (barriers? the operand loads?), occupancy — and on the backward's five kernels
step profile_linear 90 bash -c 'ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -n 1)
  [[ -n $ncu ]] || { echo "no ncu on this machine"; exit 77; }
  "$ncu" --clock-control none -k "regex:linear_" --launch-count 20 --section SpeedOfLight \
  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
  --section LaunchStats --section SourceCounters "$0" --device cuda --dtype bf16 --batch 1 --heads 16 --d 128 \
  --seq 16384 --causal 1 --score cosformer --pass fwd,fwdbwd --bwd-path both --warmup 0 --iters 1' "$bench"
# issue 9: ALiBi overhead and block-sparse time vs density at N = 16k, on the mma.sync and the wgmma kernels
step bench_masks 150 bash -c 'for k in 0 1; do echo "FSIG_CUDA_WGMMA=$k"; FSIG_CUDA_WGMMA=$k "$0" 16384 10 || exit 1; done
  echo "FSIG_CUDA_WGMMA=0 FSIG_CUDA_FWD_TALL=0"; FSIG_CUDA_WGMMA=0 FSIG_CUDA_FWD_TALL=0 "$0" 16384 10' \
  "$build/benchmarks/cuda-masks-bench"
# the 256-wide kernels against SDPA at d = 256
step sdpa_d256 120 env PYTHONUNBUFFERED=1 python3 "$root/benchmarks/sdpa_compare.py" --bench "$bench" \
  --seqs 4096,16384 --dims 256 --passes fwd,fwdbwd --wgmma 0,1 --check --warmup 3 --iters 10 --csv "$logs/sdpa_d256.csv"

carry=$root/gpu-carry
if [[ -x $carry/jdk/bin/java ]]; then
  step java 180 env FLASHSIG_LIBRARY_PATH="$build/libflashsig.so" "$carry/jdk/bin/java" --enable-native-access=ALL-UNNAMED \
    -Xss4m -Dflashsig.test.requireCuda=true -jar "$carry/junit-console.jar" execute --disable-banner \
    --details=tree -cp "$carry/classes:$carry/test-classes" --select-class io.flashsig.CudaTest \
    --select-class io.flashsig.CudaMaskTest --select-class io.flashsig.BackwardWorkspaceTest \
    --select-class io.flashsig.examples.TrainTest
else
  summary+=("$(printf '%-12s %-8s' java "no gpu-carry/ (scripts/gpu-carry.sh, then carry it)")")
fi
step masks 150 "$gpu/test_cuda_masks"
step memory 60 "$gpu/test_cuda_memory"
step bench_bwd 90 "$bench" --device cuda --dtype bf16 --hidden 2048 --seq 4096 --d 64,128 --causal both \
  --score softmax,sigmoid --pass bwd --bwd-path both --warmup 2 --iters 10 --csv "$logs/bench_bwd.csv"
# the forward and the backward as a 99 KiB GPU (L4, L40S, RTX) runs them, on this one (2 compact forward blocks
# fit an SM here where 1 does there: read its TFLOP/s as an upper bound)
step small_smem 150 env FSIG_CUDA_SMEM_LIMIT_KIB=99 bash -c '"$0/test_cuda_backward" --quick small_shared_memory \
  numerics_shapes numerics_targeted && "$0/test_cuda_forward" --quick small_shared_memory numerics_targeted && \
  "$0/test_cuda_masks" w0 && "$1" --device cuda --dtype bf16 --hidden 2048 --seq 4096 --d 64,128 \
  --causal both --score softmax,sigmoid --pass bwd --bwd-path both --warmup 2 --iters 10 --csv "$2.bwd.csv" && \
  "$1" --device cuda --dtype bf16 --hidden 2048 --seq 4096,16384 --d 256 --causal both --score softmax,sigmoid \
  --pass fwd --warmup 2 --iters 10 --csv "$2.fwd.csv"' "$gpu" "$bench" "$logs/small_smem"
step sanitizer 600 "$root/tests/gpu/run-compute-sanitizer.sh" "$build"
