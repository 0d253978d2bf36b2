#!/usr/bin/env bash
# Builds here, with this machine's nvcc, what tests/gpu/gpu-session.sh runs on a lent GPU, so that the session's
# device minutes go to the tests and not to the build: the session's targets took 9 CPU-minutes here (≈ 1.5–2
# device minutes on 16 cores, with configure). Writes gpu-prebuilt.tar.xz (git-ignored; 4.4 MB, the binaries
# are 45 MB unpacked), which fits beside gpu-carry/ in the device tool's 64 MiB: carry both
# (`carry: ["gpu-prebuilt.tar.xz", "gpu-carry"]`) and run `tests/gpu/gpu-session.sh gpu-prebuilt`. The session
# unpacks it and uses these binaries when every source file they were built from is unchanged
# (gpu-prebuilt/sources.sha256) and they start there (this machine's glibc is 2.36); otherwise it configures and
# builds in that folder as before.
#   scripts/gpu-prebuild.sh            (ARCH as for gpu-session.sh, default 90a-real: H100/H200)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/gpu-prebuilt  # packed into $out.tar.xz, then removed
build=${BUILD:-$root/build/gpu-prebuild}  # the CMake build folder
source "$root/tests/gpu/session-build.sh"  # the session's targets and configuration

command -v nvcc >/dev/null || { echo "no nvcc on PATH: the CUDA kernels cannot be built here" >&2; exit 1; }
cmake -S "$root" -B "$build" "${gpu_configure_args[@]}" >/dev/null
# what the binaries are built from, as the device tool sends it (tracked and untracked-not-ignored files that
# exist; not the notes), hashed before the build so that an edit made during it does not pass for built
(cd "$root" && git ls-files -z --cached --others --exclude-standard -- CMakeLists.txt cmake include native tests \
  benchmarks ':!*.md' | while IFS= read -r -d '' f; do if [[ -f $f ]]; then printf '%s\0' "$f"; fi; done |
  xargs -0 sha256sum >"$build/sources.sha256")
# the ptxas register and spill report of every kernel (hence a clean build), which the session keeps as its build log
if ! cmake --build "$build" --clean-first --parallel "$(nproc)" --target "${gpu_targets[@]}" >"$build/build.log" 2>&1; then
  grep -m 20 error "$build/build.log" >&2 || true
  echo "build failed: $build/build.log" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/benchmarks" "$out/tests/gpu"
cp -a "$build"/libflashsig.so* "$out/"
cp "$build/benchmarks/flashsig-bench" "$build/benchmarks/cuda-masks-bench" "$out/benchmarks/"
cp "$build"/tests/gpu/test_cuda_{forward,backward,masks,linear,memory} "$out/tests/gpu/"
cp "$build/build.log" "$build/sources.sha256" "$out/"
echo "$gpu_arch" >"$out/arch"
tar -C "$root" -cf - gpu-prebuilt | xz -T0 -6 >"$out.tar.xz"
rm -rf "$out"
du -h "$out.tar.xz"
