// CPU kernels for AVX-512 with AVX512-BF16 and AMX (Intel Sapphire Rapids and later): the kernels of
// kernels_avx512bf16.cpp, whose products for bf16 tensors run as AMX tile products (amx_tiles.h). Chosen
// at run time by CPUID where the OS grants the tile state (cpu_backend.cpp); everything lives in namespace
// fsig::cpu::amx.
#define FSIG_ISA_NAMESPACE amx
#define FSIG_ISA_NAME "amx"
#define FSIG_ISA_ID FSIG_CPU_ISA_AMX
#include "kernels.inc"

namespace fsig::cpu {
const KernelTable& kernels_amx() { return amx::table(); }
}  // namespace fsig::cpu
