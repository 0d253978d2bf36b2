#!/usr/bin/env bash
# Cross-builds libflashsig for Linux on AArch64 (the NEON kernel set) into target/native-aarch64 and
# runs its C++ tests under qemu-aarch64 (user-mode emulation, 10-30x slower than native). The Maven
# build runs it (build, then --smoke) where the tools are installed and packs the library it leaves in
# target/native-aarch64/jar into the core jar as linux-aarch64.
# Needs, on an x86-64 Debian/Ubuntu machine: apt-get install g++-aarch64-linux-gnu qemu-user
#   scripts/cross-aarch64.sh [--if-available] [MODE]
#   MODE --build-only
#        --smoke     build; the quick tests: C example, reference, bad inputs, numeric edges, finite
#                    differences, the numerics matrix cut to its small shapes (about a minute)
#        (default)   build; every test executable once, the numerics matrix cut to its small shapes (~6 min)
#        --ci-tier   build; the whole CI tier, ctest -LE full (an hour or more under emulation)
#   --if-available   without the tools: say so and exit 0 (the Maven build's use)
# FSIG_AARCH64_SKIP=true (Maven: -Dflashsig.aarch64.skip=true): no build and no tests; like every run,
# it empties target/native-aarch64/jar, so the jar gets no AArch64 library from an earlier run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/target/native-aarch64"
emulator=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
mode=reduced if_available=0
for arg in "$@"; do
  case "$arg" in
    --if-available) if_available=1 ;;
    --build-only | --smoke | --ci-tier) mode=${arg#--} ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
# what the jar packs as linux-aarch64: only a library this run built (never one left from an earlier run)
jar_dir="$build/jar"
rm -rf "$jar_dir"
if [[ ${FSIG_AARCH64_SKIP:-false} = true ]]; then
  echo "FSIG_AARCH64_SKIP=true (-Dflashsig.aarch64.skip=true): AArch64 cross-build left out"
  exit 0
fi
for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool not found: AArch64 cross-build left out (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
    [[ $if_available = 1 ]] && exit 0 || exit 1
  fi
done
cmake -S "$root" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "$(nproc)"
mkdir -p "$jar_dir" && cp "$build/libflashsig.so" "$jar_dir/"
small_numerics() { "${emulator[@]}" "$build/tests/test_attention" --tier ci --max-elements 20000; }
case "$mode" in
  build-only) ;;
  smoke)
    ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" \
      -R '^(example_c|reference_selfcheck|view_overlap|bad_inputs|numeric_edges_neon|finite_differences_neon)$'
    small_numerics ;;
  reduced)
    ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" -LE full -E '^(install_consumer|numerics_ci_neon)$'
    small_numerics ;;
  ci-tier)
    ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" -LE full -E '^install_consumer$' --timeout 7200 ;;
esac
