#!/usr/bin/env bash
# Builds here, with this machine's nvcc, what tests/gpu/gpu-session.sh runs on a lent GPU, into gpu-prebuilt/
# (git-ignored), so that the session's device minutes go to the tests and not to the build: the GPU session's
# targets took 9 CPU-minutes here (≈ 1.5–2 device minutes on 16 cores, with configure). Carry it to the device
# tool as `carry: ["gpu-prebuilt"]` (≈ 46 MB; gpu-carry/ does not fit beside it in the tool's 64 MiB, so the
# Java step needs a call of its own) and run `tests/gpu/gpu-session.sh gpu-prebuilt`: the session uses these
# binaries when every source file they were built from is unchanged (gpu-prebuilt/sources.sha256) and they
# start there (this machine's glibc is 2.36), and configures and builds in that folder as before otherwise.
#   scripts/gpu-prebuild.sh            (ARCH as for gpu-session.sh, default 90a-real: H100/H200)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/gpu-prebuilt
build=${BUILD:-$root/build/gpu-prebuild}  # the CMake build folder
source "$root/tests/gpu/session-build.sh"  # the session's targets and configuration

command -v nvcc >/dev/null || { echo "no nvcc on PATH: the CUDA kernels cannot be built here" >&2; exit 1; }
cmake -S "$root" -B "$build" "${gpu_configure_args[@]}" >/dev/null
# the ptxas register and spill report of every kernel (hence a clean build), which the session keeps as its build log
if ! cmake --build "$build" --clean-first --parallel "$(nproc)" --target "${gpu_targets[@]}" >"$build/build.log" 2>&1; then
  grep -E "error" "$build/build.log" | head -n 20 >&2
  echo "build failed: $build/build.log" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/benchmarks" "$out/tests/gpu"
cp -a "$build"/libflashsig.so* "$out/"
cp "$build/benchmarks/flashsig-bench" "$build/benchmarks/cuda-masks-bench" "$out/benchmarks/"
cp "$build"/tests/gpu/test_cuda_{forward,backward,masks,linear,memory} "$out/tests/gpu/"
cp "$build/build.log" "$out/build.log"
# what the binaries were built from, as the device tool sends it (tracked and untracked-not-ignored files; not
# the notes)
(cd "$root" && git ls-files -z --cached --others --exclude-standard -- CMakeLists.txt cmake include native tests \
  benchmarks ':!*.md' | xargs -0 sha256sum >"$out/sources.sha256")
echo "${ARCH:-90a-real}" >"$out/arch"
du -sh "$out"
