// Linear-attention kernels for AVX-512 (F, BW, DQ, VL), chosen at run time with the attention kernels.
// Compiled with AVX-512 flags; every function lives in namespace fsig::cpu::avx512.
#define FSIG_ISA_NAMESPACE avx512
#include "linear.inc"

namespace fsig::cpu {
const LinearTable& linear_avx512() { return avx512::linear_table(); }
}  // namespace fsig::cpu
