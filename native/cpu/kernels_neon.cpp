// CPU kernels for AArch64 (Advanced SIMD / NEON, part of every ARMv8-A core): the one set on that
// architecture, so nothing is chosen at run time there.
#define FSIG_ISA_NAMESPACE neon
#define FSIG_ISA_NAME "neon"
#define FSIG_ISA_ID FSIG_CPU_ISA_NEON
#include "kernels.inc"

namespace fsig::cpu {
const KernelTable& kernels_neon() { return neon::table(); }
}  // namespace fsig::cpu
