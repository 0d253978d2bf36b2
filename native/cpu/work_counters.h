// What the CPU kernels' tile loops did, counted over the library's life: the tile pairs they met and how many their
// bounds skipped. A skip changes no result, only the time, so no result test can see a skip that was lost (a gate
// that stops taking norms, a reach too short); tests/test_tile_work reads these through fsig_internal_cpu_work.
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

// One task's counts, added to g_tile_work once, when the task ends (no shared cache line per tile)
struct TaskTileWork {
    uint64_t counts[int(TileWork::kCount)] = {};
    void add(TileWork w) { ++counts[int(w)]; }
    TaskTileWork() = default;
    TaskTileWork(const TaskTileWork&) = delete;
    TaskTileWork& operator=(const TaskTileWork&) = delete;
    ~TaskTileWork() {
        for (int i = 0; i < int(TileWork::kCount); ++i)
            if (counts[i] != 0) g_tile_work[i].fetch_add(counts[i], std::memory_order_relaxed);
    }
};

}  // namespace fsig::cpu

// Copies the first min(count, TileWork::kCount) counters into counts, in TileWork's order; returns how many there are.
extern "C" FSIG_API int fsig_internal_cpu_work(uint64_t* counts, int count);
