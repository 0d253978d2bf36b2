// CPU kernels for AVX-512 (F, BW, DQ, VL) with AVX512-BF16: the kernels of kernels_avx512.cpp, whose
// S = Q Kᵀ (and backward dP = dO Vᵀ) of bf16 tensors multiply with vdpbf16ps (bf16_dot.h). Chosen at run
// time by CPUID on AMD (Zen 4 and later; on Intel's AVX512-BF16 CPUs only with FSIG_CPU_ISA=avx512bf16:
// slower than fp32 products there, cpu_backend.cpp); everything lives in namespace
// fsig::cpu::avx512bf16.
#define FSIG_ISA_NAMESPACE avx512bf16
#define FSIG_ISA_NAME "avx512bf16"
#define FSIG_ISA_ID FSIG_CPU_ISA_AVX512_BF16
#include "kernels.inc"

namespace fsig::cpu {
const KernelTable& kernels_avx512bf16() { return avx512bf16::table(); }
}  // namespace fsig::cpu
