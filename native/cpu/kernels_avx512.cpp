// CPU kernels for AVX-512 (F, BW, DQ, VL), chosen at run time by CPUID. Only this translation unit is
// compiled with AVX-512 flags, and all of its code lives in namespace fsig::cpu::avx512: a test
// (tests/check_isa_isolation) fails if any other function of the library touches zmm registers.
#define FSIG_ISA_NAMESPACE avx512
#define FSIG_ISA_NAME "avx512"
#define FSIG_ISA_ID FSIG_CPU_ISA_AVX512
#include "kernels.inc"

namespace fsig::cpu {
const KernelTable& kernels_avx512() { return avx512::table(); }
}  // namespace fsig::cpu
