// FSIG_LAUNCH(kernel, grid, block, smem, stream, args...): kernel<<<grid, block, smem, stream>>>(args...)
// under nvcc; in the SIMT emulator's g++ build (tests/emu, FSIG_CUDA_EMULATION) a call into it, since
// g++ cannot parse <<<>>>. kernel must be one token or parenthesised (no bare template commas).
#pragma once

#if defined(FSIG_CUDA_EMULATION)
#define FSIG_LAUNCH(kernel, grid, block, smem, stream, ...) \
    ::fsig::emu::launch(kernel, dim3(grid), dim3(block), size_t(smem), stream, __VA_ARGS__)
#else
#define FSIG_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
