// The first "live" index of a range, found by a whole warp at once: the kernels' search for the next key
// (or query) tile that the block-sparse layout or the strided pattern does not leave empty. Lane l tests
// index first + l, then first + 32 + l, ...: a run of empty tiles costs one round of independent loads
// per 32 tiles instead of one dependent load per tile on the path to the next prefetch (at density 1/8
// the serial search walked 7 tiles between two computed ones). Every warp of a block gets the same
// answer from the same inputs.
#pragma once

#include <cuda_runtime.h>

namespace fsig::cuda {

// The smallest i in [first, last] with live(i), or a value past `last` when there is none (and when
// first > last). Called by all 32 lanes of a warp together (a warp collective); live(i) is called only
// for i in [first, last]. last + 32 must not overflow.
template <class Live>
__device__ __forceinline__ int first_live_index(int first, int last, int lane, Live live) {
    for (int base = first; base <= last; base += 32) {
        const int i = base + lane;
        const unsigned hits = __ballot_sync(0xffffffffu, i <= last && live(i));
        if (hits != 0) return base + __ffs(int(hits)) - 1;
    }
    return last + 1 > first ? last + 1 : first;
}

}  // namespace fsig::cuda
