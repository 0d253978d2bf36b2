#!/usr/bin/env bash
# The SASS of one CUDA unit, and a count of what the main loop of each kernel in it issues — on a machine
# without nvcc 13's own disassembler (this one: nvcc and ptxas only). It uses nvdisasm 11.8 from Debian's
# nvidia-cuda-toolkit package (downloaded once, unpacked into a cache, never installed), which reads the
# sm_80 and sm_90 instruction sets but not nvcc 13's cubin header: the script rewrites the header's ELF
# ABI fields to the older layout (OS/ABI 0x33, ABI version 7, e_flags sm | sm << 16 | 0x500) in a copy.
# Instructions that 11.8 does not know (sm_90a's wgmma, setmaxnreg, TMA) are not decoded: use it for the
# mma.sync kernels and the linear-attention kernels. Analysis only; the build never needs it.
#   scripts/sass.sh BUILD_DIR SOURCE.cu [ARCH] [FILTER]
#     BUILD_DIR  a configured CMake build with CUDA (its flags and generated units are used)
#     SOURCE.cu  a unit: native/cuda/linear_bf16.cu, or a generated one as BUILD_DIR/cuda_gen/fwd.cu
#     ARCH       sm_80 or sm_90a (default sm_90a; decoded as sm_90)
#     FILTER     only kernels whose mangled name contains it
#   Writes SOURCE's SASS to $OUT_SASS (default /tmp/<unit>.<arch>.sass) and prints, per kernel, the
#   registers and spills (ptxas) and the instructions of the loop with the most HMMA (every path of the
#   loop body counted once): total, HMMA, LDSM, MUFU, integer and fp32 ALU, local-memory loads and stores (spills).
set -euo pipefail
(($# >= 2)) || { sed -n 9,17p "$0"; exit 2; }
build=$(realpath "$1") src=$(realpath "$2") arch=${3:-sm_90a} filter=${4:-}
unit=$(basename "$src" .cu)
out=${OUT_SASS:-/tmp/$unit.$arch.sass}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/flashsig-nvdisasm
nvdisasm=$cache/usr/bin/nvdisasm
if [[ ! -x $nvdisasm ]]; then
  mkdir -p "$cache"
  (cd "$cache" && apt-get download 'nvidia-cuda-toolkit=11.8.89~11.8.0-5~deb12u1' >/dev/null 2>&1) ||
    { echo "apt-get download nvidia-cuda-toolkit 11.8 failed (Debian bookworm's non-free component needed)" >&2; exit 1; }
  dpkg -x "$cache"/nvidia-cuda-toolkit_*.deb "$cache" && rm -f "$cache"/nvidia-cuda-toolkit_*.deb
fi
flags=$build/CMakeFiles/flashsig.dir/flags.make  # (a Makefile-generator build)
[[ -f $flags ]] || { echo "$flags missing: configure BUILD_DIR with the Unix Makefiles generator" >&2; exit 1; }
defines=$(sed -n 's/^CUDA_DEFINES = //p' "$flags")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# this checkout's headers first, then the build's include paths (which name the tree it was configured from)
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC2086  # the defines are words
(cd "$build" && nvcc $defines -I"$root/native/cuda" -I"$root/include" \
  --options-file CMakeFiles/flashsig.dir/includes_CUDA.rsp -I"$build/cuda_gen" -O3 -DNDEBUG -arch="$arch" \
  -std=c++17 -Xptxas=-v -x cu -cubin "$src" -o "$work/unit.cubin") 2>"$work/ptxas.log" || { cat "$work/ptxas.log" >&2; exit 1; }
python3 - "$work/unit.cubin" "${arch:3:2}" <<'PY'
import struct, sys
elf = bytearray(open(sys.argv[1], 'rb').read())
sm = int(sys.argv[2])
elf[7], elf[8] = 0x33, 7
struct.pack_into('<I', elf, 48, sm | sm << 16 | 0x500)
open(sys.argv[1], 'wb').write(elf)
PY
"$nvdisasm" -c "$work/unit.cubin" >"$out"
echo "SASS: $out"
python3 - "$out" "$work/ptxas.log" "$filter" <<'PY'
import collections, re, sys
sass, ptxas, filt = open(sys.argv[1]).read().split('\n'), open(sys.argv[2]).read(), sys.argv[3]
usage = {}
for m in re.finditer(r"Compiling entry function '(\S+)'.*?(\d+) bytes spill stores.*?Used (\d+) registers", ptxas, re.S):
    usage[m.group(1)] = (int(m.group(3)), int(m.group(2)))
kernels, name = {}, None
for line in sass:
    m = re.match(r'^\.text\.(\S+):', line)
    if m:
        name = m.group(1)
        kernels[name] = []
    elif name:
        kernels[name].append(line)
integer = {'LOP3', 'LEA', 'IMAD', 'IADD3', 'SHF', 'SEL', 'ISETP', 'PRMT', 'MOV', 'IABS', 'LOP', 'VIADD', 'IMNMX',
           'ULOP3', 'ULEA', 'UIMAD', 'UIADD3', 'USHF', 'USEL', 'UISETP', 'UPRMT', 'UMOV'}
floating = {'FFMA', 'FMUL', 'FADD', 'FMNMX', 'FSEL', 'FSETP', 'FCHK'}
for name, body in kernels.items():
    if filt not in name:
        continue
    ins, labels = [], {}
    for line in body:
        m = re.match(r'^(\.L_x_\d+):', line)
        if m:
            labels[m.group(1)] = len(ins)
            continue
        m = re.match(r'\s*/\*[0-9a-f]+\*/\s+(.*?);', line)
        if m:
            ins.append(m.group(1).strip())
    best = None  # the backward branch whose loop holds the most HMMA
    for i, text in enumerate(ins):
        m = re.search(r'BRA.*`\((\.L_x_\d+)\)', text)
        if m and labels.get(m.group(1), i + 1) <= i:
            a = labels[m.group(1)]
            hmma = sum('HMMA' in x for x in ins[a:i + 1])
            if best is None or (hmma, i + 1 - a) > (best[2], best[1] - best[0]):
                best = (a, i + 1, hmma)
    regs, spill = usage.get(name, ('?', '?'))
    line = f"{name[:110]}\n    {regs} registers, {spill} bytes spilled"
    if best:
        ops = collections.Counter()
        for text in ins[best[0]:best[1]]:
            op = text.split()[1] if text.startswith('@') else text.split()[0]
            ops[op.split('.')[0]] += 1
        line += (f"; main loop {best[1] - best[0]} instructions: HMMA {ops['HMMA']}, LDSM {ops['LDSM']}, "
                 f"MUFU {ops['MUFU']}, integer {sum(ops[k] for k in integer)}, fp32 {sum(ops[k] for k in floating)}, "
                 f"local {ops['LDL'] + ops['STL']}")
    print(line)
PY
