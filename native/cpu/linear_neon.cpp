// Linear-attention kernels for AArch64 (NEON).
#define FSIG_ISA_NAMESPACE neon
#include "linear.inc"

namespace fsig::cpu {
const LinearTable& linear_neon() { return neon::linear_table(); }
}  // namespace fsig::cpu
