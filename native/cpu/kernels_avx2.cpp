// CPU kernels for the x86-64-v3 baseline (AVX2, FMA, F16C): every x86-64 CPU FlashSig supports.
#define FSIG_ISA_NAMESPACE avx2
#define FSIG_ISA_NAME "avx2"
#define FSIG_ISA_ID FSIG_CPU_ISA_AVX2
#include "kernels.inc"

namespace fsig::cpu {
const KernelTable& kernels_avx2() { return avx2::table(); }
}  // namespace fsig::cpu
