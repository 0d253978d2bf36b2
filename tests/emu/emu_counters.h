// What the SIMT emulator (cuda_emu.cpp) counts while it runs the kernels, for the tests: which kernel family
// ran (the wgmma counts) and how much work a GPU would do for the same launches (WorkCounters). Included by
// cuda_emu.h (the emulated units) and by the tests that link the emulator (tests/gpu/cuda_harness.h).
#pragma once

#include <cstdint>

namespace fsig::emu {

// wgmma.mma_async instructions issued so far (a test's proof that the Hopper kernels ran)
uint64_t wgmma_operations();
// kernel launches so far that issued wgmma.mma_async (which of a call's kernels ran on it)
uint64_t wgmma_kernel_launches();

// The work of every launch so far, as the instructions define it (not time): what a kernel does that it
// should not — a tile computed that the masks leave empty, a bank conflict — shows here while the results
// stay right.
struct WorkCounters {
    uint64_t tensor_flops = 0;        // 2·m·n·k of every mma.sync m16n8k16 and wgmma m64nNk16
    uint64_t cp_async_bytes = 0;      // bytes cp.async read from global memory (zero fills not counted; the
                                      // kernels' plain loads, e.g. of a layout or the fast path's dQ, neither)
    uint64_t ldmatrix_ops = 0;        // ldmatrix .x4 warp instructions
    // shared-memory wavefronts those took: each of an .x4's four 8 × 8 matrices is one 128-byte wavefront
    // when its 8 rows fall in distinct bank quads (addresses / 16 mod 8), one more per further distinct row
    // in the fullest quad; conflict-free: 4 per instruction
    uint64_t ldmatrix_wavefronts = 0;
};
WorkCounters work_counters();

}  // namespace fsig::emu
