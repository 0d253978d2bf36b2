// What the CPU kernels' tile loops did, counted over the library's life: the tile pairs they met and how many their
// bounds skipped. A skip changes no result, only the time, so no result test can see a skip that was lost (a gate
// that stops taking norms, a reach too short); test_masks' alibi_bound_skip_counts reads them through
// fsig_internal_cpu_work. (Each task adds its counts once, at its end: kernels.inc, TaskTileWork.)
// Not part of the C ABI: no header under include/ declares that function, and it may change with any release.
#pragma once
#include <atomic>
#include <cstdint>

#include "flashsig.h"  // FSIG_API

namespace fsig::cpu {

enum class TileWork : int {
    kForwardTiles,         // (query tile, key tile) pairs a forward task met with some key allowed (not tile_empty)
    kForwardBoundSkips,    // ... skipped before their product by the norm bound (norm_bound_ok)
    kForwardNothingSkips,  // ... skipped after it: every row adds nothing (far_rows, softmax's row maxima)
    kBackwardTiles,        // the same for the backward's key tasks
    kBackwardBoundSkips,
    kBackwardNothingSkips,
    kCount
};

inline std::atomic<uint64_t> g_tile_work[int(TileWork::kCount)];

}  // namespace fsig::cpu

// Copies the first min(count, TileWork::kCount) counters into counts, in TileWork's order; returns how many there are.
extern "C" FSIG_API int fsig_internal_cpu_work(uint64_t* counts, int count);
