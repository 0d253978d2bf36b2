#!/usr/bin/env bash
# FlashSig CPU benchmark run: builds (Release) and runs, in order,
#   fma-peak        the fp32 FMA ceiling of this CPU (1 thread, all threads)
#   sgemm-anchor    OpenBLAS sgemm, the practical ceiling (only when OpenBLAS is installed:
#                   apt-get install -y libopenblas-dev, then rerun — CMake finds it)
#   flashsig-bench  the CPU table: B=1 H=8, N 1024 and 4096, d 64 and 128, fp32/bf16, every score,
#                   fwd and bwd, causal 0/1; plus softmax fwd on the forced AVX2 kernels
#   flashsig-bench --overhead   ns per tiny call from C++
#   JMH             benchmarks/jmh (call overhead from Java, heap paths, throughput), on the same
#                   libflashsig.so as the C++ runs (FLASHSIG_LIBRARY_PATH)
# and prints short tables; everything raw (logs, CSV) goes to the output directory.
#
#   benchmarks/run-cpu.sh [--build-dir DIR] [--out DIR] [--quick] [--no-jmh] [--build-jmh]
#                         [--threads N] [--jmh-args "ARGS"]
#     --build-dir DIR   CMake build directory (default /tmp/flashsig-cpu-bench)
#     --out DIR         results (default DIR/results-YYYYmmdd-HHMMSS under the build directory)
#     --quick           one short run per case (proves the script works; numbers are rough)
#     --no-jmh          skip JMH
#     --build-jmh       (re)build the JMH jar with Maven first (otherwise only when it is missing)
#     --threads N       CPU threads for flashsig-bench (default: the library's, all CPUs)
#     --jmh-args "..."  extra JMH options, e.g. "-f 3" or "Throughput -p n=1024"
# Timings mean something only on a quiet machine: the script prints the load average first.
# Method and recorded figures: benchmarks/NOTES.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=/tmp/flashsig-cpu-bench
OUT=""
QUICK=0
JMH=1
BUILD_JMH=0
THREADS=""
JMH_ARGS=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --build-dir) BUILD=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --no-jmh) JMH=0; shift ;;
        --build-jmh) BUILD_JMH=1; shift ;;
        --threads) THREADS=$2; shift 2 ;;
        --jmh-args) JMH_ARGS=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-cpu.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
BUILD=$(mkdir -p "$BUILD" && cd "$BUILD" && pwd)
OUT=${OUT:-$BUILD/results-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

section() { printf '\n== %s\n' "$*"; }

# A JDK >= 25: $JAVA, else $JAVA_HOME, else the newest under /usr/lib/jvm, else java on PATH.
java_major() { "$1" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print int($2)}'; }
find_java() {
    local c
    for c in "${JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV) \
             "$(command -v java || true)"; do
        [[ -n "$c" && -x "$c" ]] || continue
        if [[ $(java_major "$c") -ge 25 ]]; then echo "$c"; return 0; fi
    done
    return 1
}

# ---- machine ---------------------------------------------------------------------------------------
section "machine"
{
    echo "date      $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit    $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo "cpu       $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) ($(nproc) CPUs available)"
    echo "avx512f   $(grep -q avx512f /proc/cpuinfo && echo yes || echo no)"
    echo "load avg  $(cut -d' ' -f1-3 /proc/loadavg)   (>~0.3 before starting: numbers will be noisy)"
    echo "mode      $([[ $QUICK = 1 ]] && echo 'quick (rough numbers)' || echo full)"
} | tee "$OUT/machine.txt"

# ---- build -----------------------------------------------------------------------------------------
section "build (Release, $BUILD)"
# CUDA off: this run measures the CPU backend only, and a CPU-only library builds in a minute.
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFSIG_CUDA=OFF > "$OUT/cmake-configure.log" 2>&1 \
    || { cat "$OUT/cmake-configure.log"; exit 1; }
targets=(flashsig flashsig-bench fma-peak)
if grep -q 'sgemm-anchor with OpenBLAS' "$OUT/cmake-configure.log"; then targets+=(sgemm-anchor); fi
cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]}" > "$OUT/cmake-build.log" 2>&1 \
    || { tail -40 "$OUT/cmake-build.log"; exit 1; }
echo "built: ${targets[*]}"
BENCH_DIR=$BUILD/benchmarks
LIB=$BUILD/libflashsig.so

# ---- ceilings --------------------------------------------------------------------------------------
section "fma-peak (fp32 FMA ceiling)"
"$BENCH_DIR/fma-peak" "$([[ $QUICK = 1 ]] && echo 0.3 || echo 1)" | tee "$OUT/fma-peak.txt"

section "sgemm-anchor (OpenBLAS)"
if [[ -x "$BENCH_DIR/sgemm-anchor" ]]; then
    "$BENCH_DIR/sgemm-anchor" | tee "$OUT/sgemm-anchor.txt"
    # OpenBLAS picks kernels by CPUID and may not know this CPU (0.3.21 runs Haswell/AVX2 kernels on
    # Zen 5): its AVX-512 kernels too, for the comparison with our AVX-512 path
    if grep -q avx512f /proc/cpuinfo && ! grep -q 'corename SkylakeX\|corename Cooperlake\|corename SapphireRapids' \
            "$OUT/sgemm-anchor.txt"; then
        echo "-- forced AVX-512 kernels (OPENBLAS_CORETYPE=SkylakeX):"
        OPENBLAS_CORETYPE=SkylakeX "$BENCH_DIR/sgemm-anchor" | tee "$OUT/sgemm-anchor-skylakex.txt"
    fi
else
    echo "not built: OpenBLAS not found (apt-get install -y libopenblas-dev, then rerun)"
fi

# ---- attention from C++ ----------------------------------------------------------------------------
bench_opts=(--batch 1 --heads 8)
[[ -n "$THREADS" ]] && bench_opts+=(--threads "$THREADS")
if [[ $QUICK = 1 ]]; then bench_opts+=(--warmup 1 --iters 1); else bench_opts+=(--warmup 1 --min-time 1); fi

section "flashsig-bench: CPU table (GFLOP/s; fwd 4·B·H·N²·d, halved causal; bwd 2.5× fwd)"
CSV=$OUT/cpu.csv
rm -f "$CSV"
"$BENCH_DIR/flashsig-bench" "${bench_opts[@]}" --seq 1024,4096 --d 64,128 --dtype fp32,bf16 --score all \
    --pass fwd,bwd --causal both --csv "$CSV" > "$OUT/cpu-bench.log" 2>&1 \
    || { tail -20 "$OUT/cpu-bench.log"; echo "flashsig-bench failed (full log: $OUT/cpu-bench.log)"; exit 1; }
head -1 "$OUT/cpu-bench.log"
# one row per (N, d, dtype, causal, pass), one column per score: the median-time rate
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    {
        key = sprintf("%5d %4d %-5s %6d %-4s", $col["Nq"], $col["d"], $col["dtype"], $col["causal"], $col["pass"])
        if (!(key in seen)) { seen[key] = 1; order[++n] = key }
        rate[key, $col["score"]] = $col["rate"]
    }
    END {
        split("softmax sigmoid relu relu2 gelu softplus identity", s, " ")
        printf "%5s %4s %-5s %6s %-4s", "N", "d", "dtype", "causal", "pass"
        for (j = 1; j <= 7; j++) printf " %8s", s[j]
        printf "\n"
        for (i = 1; i <= n; i++) {
            printf "%s", order[i]
            for (j = 1; j <= 7; j++) printf " %8.1f", rate[order[i], s[j]]
            printf "\n"
        }
    }' "$CSV" | tee "$OUT/cpu-table.txt"

section "flashsig-bench: forced AVX2 kernels (FSIG_CPU_ISA=avx2), softmax, N=1024 d=64 fp32"
FSIG_CPU_ISA=avx2 "$BENCH_DIR/flashsig-bench" "${bench_opts[@]}" --seq 1024 --d 64 --dtype fp32 --score softmax \
    --pass fwd,bwd | tee "$OUT/cpu-avx2.txt"

section "flashsig-bench --overhead (C++, ns per tiny call)"
"$BENCH_DIR/flashsig-bench" --overhead | tee "$OUT/overhead-cpp.txt"

# ---- JMH -------------------------------------------------------------------------------------------
if [[ $JMH = 0 ]]; then
    echo; echo "JMH skipped (--no-jmh). Results: $OUT"
    exit 0
fi
JAR=$REPO/benchmarks/jmh/target/flashsig-jmh.jar
if [[ $BUILD_JMH = 1 || ! -f "$JAR" ]]; then
    section "build the JMH jar (Maven)"
    (cd "$REPO" && mvn -B -q -pl benchmarks/jmh -am package -DskipTests -DskipSanitize) > "$OUT/mvn.log" 2>&1 \
        || { tail -40 "$OUT/mvn.log"; exit 1; }
fi
JAVA_BIN=$(find_java) || { echo "no JDK >= 25 found (set JAVA=/path/to/bin/java)"; exit 1; }

section "JMH ($JAVA_BIN, library $LIB)"
jmh_opts=(-rf csv -rff "$OUT/jmh.csv")
[[ $QUICK = 1 ]] && jmh_opts+=(-wi 1 -i 1 -w 1s -r 1s)
# shellcheck disable=SC2086  # JMH_ARGS is split on purpose
FLASHSIG_LIBRARY_PATH=$LIB "$JAVA_BIN" --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow \
    -jar "$JAR" "${jmh_opts[@]}" $JMH_ARGS > "$OUT/jmh.log" 2>&1 \
    || { tail -40 "$OUT/jmh.log"; echo "JMH failed (full log: $OUT/jmh.log)"; exit 1; }

# JMH's CSV: "Benchmark","Mode","Threads","Samples","Score","Score Error (99.9%)","Unit","Param: x",...
# jmh_rows prints: name <tab> score <tab> error <tab> unit <tab> "k=v k=v ..." (the parameters given)
jmh_rows() {
    awk -F, '{ sub(/\r$/, ""); for (i = 1; i <= NF; i++) gsub(/"/, "", $i) }  # JMH writes CRLF
        NR == 1 { for (i = 8; i <= NF; i++) { pn[i] = $i; sub(/^Param: /, "", pn[i]) }; next }
        { name = $1; sub(/^io\.flashsig\.jmh\./, "", name); ps = ""
          for (i = 8; i <= NF; i++) if ($i != "") ps = ps (ps == "" ? "" : " ") pn[i] "=" $i
          printf "%s\t%s\t%s\t%s\t%s\n", name, $5, $6, $7, ps }' "$OUT/jmh.csv"
}
# awk helper: the value of parameter k in a "k=v k=v" list
AWK_PARAM='function param(list, k,   n, a, i) { n = split(list, a, " ")
    for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }'

section "JMH CallOverhead (ns per tiny call; compare with the C++ lines above)"
jmh_rows | awk -F'\t' '$1 ~ /^CallOverhead\./ { printf "%-36s %9.1f ± %-7.1f %s\n", $1, $2, $3, $4 }' \
    | tee "$OUT/jmh-overhead.txt"

section "JMH HeapPaths (µs per call, softmax B=1 H=8 d=64 fp32; default threshold 5e7 FLOPs)"
jmh_rows | awk -F'\t' "$AWK_PARAM"'
    $1 ~ /^HeapPaths\.(heapCritical|heapCopy|offHeap)$/ {
        m = $1; sub(/^HeapPaths\./, "", m); key = sprintf("%5d %-4s", param($5, "n"), param($5, "pass"))
        if (!(key in seen)) { seen[key] = 1; order[++k] = key }
        t[key, m] = $2 }
    END {
        for (i = 1; i <= k; i++) {
            split(order[i], p, " "); c = t[order[i], "heapCritical"]; y = t[order[i], "heapCopy"]
            w = 4 * 8 * p[1] * p[1] * 64 * (p[2] == "bwd" ? 2.5 : 1)
            printf "%s %10.2e %12.1f %10.1f %10.1f %10.1f %6.0f%%\n", order[i], w, c, y, t[order[i], "offHeap"], \
                   y - c, (c > 0 ? 100 * (y - c) / c : 0)
        } }' | sort -n \
    | { printf "%5s %-4s %10s %12s %10s %10s %10s %7s\n" N pass "work FLOPs" heapCritical heapCopy offHeap \
               copy-crit "copy %"; cat; } | tee "$OUT/jmh-heap-paths.txt"

section "JMH HeapPaths.GcStall (µs; an allocating thread beside back-to-back heap calls, 1 native thread)"
jmh_rows | awk -F'\t' "$AWK_PARAM"'
    $1 ~ /^HeapPaths\.GcStall\.(critical|copy):(critical|copy)(Allocator|Call)(:p0\.999|:p1\.00)?$/ {
        split($1, a, ":"); g = a[1]; sub(/^HeapPaths\.GcStall\./, "", g)
        what = a[2] ~ /Allocator$/ ? "alloc" : "call"; stat = (3 in a) ? a[3] : "mean"
        key = sprintf("%5d %-8s", param($5, "n"), g)
        if (!(key in seen)) { seen[key] = 1; order[++k] = key }
        v[key, what, stat] = $2 }
    END {
        for (i = 1; i <= k; i++) {
            o = order[i]
            printf "%s %10.1f %12.1f %12.1f %12.1f\n", o, v[o, "call", "mean"], v[o, "alloc", "mean"], \
                   v[o, "alloc", "p0.999"], v[o, "alloc", "p1.00"]
        } }' | sort -n \
    | { printf "%5s %-8s %10s %12s %12s %12s\n" N path "call mean" "alloc mean" "alloc p99.9" "alloc max"; cat; } \
    | tee "$OUT/jmh-gc-stall.txt"

section "JMH Throughput (GFLOP/s from Java, off-heap, B=1 H=8 d=64)"
jmh_rows | awk -F'\t' "$AWK_PARAM"'
    $1 == "Throughput.run:gflop" {
        key = sprintf("%5d %-5s %-4s", param($5, "n"), param($5, "dtype"), param($5, "pass"))
        if (!(key in seen)) { seen[key] = 1; order[++k] = key }
        r[key, param($5, "score")] = $2 }
    END {
        for (i = 1; i <= k; i++) printf "%s %9.1f %9.1f\n", order[i], r[order[i], "softmax"], r[order[i], "sigmoid"]
    }' | sort -n | { printf "%5s %-5s %-4s %9s %9s\n" N dtype pass softmax sigmoid; cat; } | tee "$OUT/jmh-throughput.txt"

echo
echo "Results: $OUT (raw: cpu.csv, cpu-bench.log, jmh.csv, jmh.log)"
