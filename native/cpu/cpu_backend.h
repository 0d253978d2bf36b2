// The CPU backend: runs validated problems on the kernels of the best ISA this CPU has.
#pragma once
#include "../internal.h"

namespace fsig::cpu {

// The kernels in use: AVX-512 when CPUID reports F, BW, DQ and VL (and the OS saves zmm state),
// else AVX2. FSIG_CPU_ISA=avx2 in the environment forces the baseline (tests run both).
int32_t active_isa();
const char* active_isa_name();

constexpr int64_t kMaxHeadDim = 256;

int forward(const ForwardArgs& a);
int backward(const BackwardArgs& a);

}  // namespace fsig::cpu
