// FSIG_LAUNCH(kernel, grid, block, smem, stream, args...): kernel<<<grid, block, smem, stream>>>(args...)
// under nvcc; in the SIMT emulator's g++ build (tests/emu, FSIG_CUDA_EMULATION) a call into it, since
// g++ cannot parse <<<>>>. kernel must be one token or parenthesised (no bare template commas).
// smem_raw: the dynamic shared memory (the launch's smem bytes) of every kernel, declared once here at
// namespace scope so that the emulator can supply, poison and bound-check it (a block-scope declaration
// inside an unnamed namespace would have internal linkage outside nvcc).
#pragma once

namespace fsig::cuda {
#if defined(FSIG_CUDA_EMULATION)
extern unsigned char smem_raw[];  // defined by tests/emu/cuda_emu.cpp
#else
extern __shared__ __align__(128) unsigned char smem_raw[];
#endif
}  // namespace fsig::cuda

#if defined(FSIG_CUDA_EMULATION)
#define FSIG_LAUNCH(kernel, grid, block, smem, stream, ...) \
    ::fsig::emu::launch(kernel, dim3(grid), dim3(block), size_t(smem), stream, __VA_ARGS__)
#else
#define FSIG_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
