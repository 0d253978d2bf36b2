// Linear-attention kernels for the x86-64-v3 baseline (AVX2, FMA, F16C).
#define FSIG_ISA_NAMESPACE avx2
#include "linear.inc"

namespace fsig::cpu {
const LinearTable& linear_avx2() { return avx2::linear_table(); }
}  // namespace fsig::cpu
