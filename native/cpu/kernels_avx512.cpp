// CPU kernels for AVX-512 (F, BW, DQ, VL), chosen at run time by CPUID. Only this translation unit is
// compiled with AVX-512 flags, and all of its code lives in namespace fsig::cpu::avx512, so that no
// inline function of it can serve the AVX2 path (CTest load_on_avx2_only_cpu runs the library on qemu's
// Haswell model, where an AVX-512 instruction is SIGILL).
#define FSIG_ISA_NAMESPACE avx512
#define FSIG_ISA_NAME "avx512"
#define FSIG_ISA_ID FSIG_CPU_ISA_AVX512
#include "kernels.inc"

namespace fsig::cpu {
const KernelTable& kernels_avx512() { return avx512::table(); }
}  // namespace fsig::cpu
