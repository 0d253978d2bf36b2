// native/cuda/warp_search.h on the SIMT emulator (tests/emu): first_live_index, the warp-collective search
// the kernels use for the next key or query tile that the block layout or the strided pattern does not
// leave empty, against a plain scan — random live patterns (all dead, sparse, runs, dense, all live),
// empty and one-element ranges, ranges starting at any lane offset and spanning several 32-wide rounds,
// with two warps per block that must each get the answer. It also checks that live(i) is only ever called
// for i inside the range (the kernels' ext_tile_live would read layout bytes past the row otherwise).
//
//   test_warp_search_emulation
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "harness.h"
#include "reference.h"
#include "warp_search.h"

namespace {

struct SearchArgs {
    const unsigned char* live;  // live[i] for i in [0, n)
    int first, last;
    int* found;                 // per thread
    int* outside;               // per thread: calls of live(i) with i outside [first, last]
};

void search_kernel(SearchArgs a) {
    const int tid = int(threadIdx.x), lane = tid % 32;
    int outside = 0;
    a.found[tid] = fsig::cuda::first_live_index(a.first, a.last, lane, [&](int i) {
        if (i < a.first || i > a.last) return ++outside, false;
        return a.live[i] != 0;
    });
    a.outside[tid] = outside;
}

int scan(const std::vector<unsigned char>& live, int first, int last) {
    for (int i = first; i <= last; ++i)
        if (live[size_t(i)]) return i;
    return last + 1 > first ? last + 1 : first;
}

TEST(first_live_index_matches_a_scan) {
    ref::Rng rng(20261201);
    constexpr int kThreads = 64;
    int *found, *outside;
    unsigned char* live;
    cudaMalloc(reinterpret_cast<void**>(&found), kThreads * sizeof(int));
    cudaMalloc(reinterpret_cast<void**>(&outside), kThreads * sizeof(int));
    cudaMalloc(reinterpret_cast<void**>(&live), 512);
    int cases = 0, none = 0, past_first_round = 0;
    // at least 400 ranges, and on until both outcomes and several rounds are covered, whatever the seed's draws
    auto covered = [&] { return none > 20 && past_first_round > 30; };
    for (int c = 0; c < 400 || (!covered() && c < 4000); ++c) {
        const int n = int(rng.below(300)) + 1;
        // density: 0 (none), 1/64, 1/8, 1/2, 1 (every index), or runs of 40 dead between single live ones
        const int kind = c % 6;
        std::vector<unsigned char> pattern(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i)
            pattern[size_t(i)] = kind == 0   ? 0
                                 : kind == 1 ? rng.below(64) == 0
                                 : kind == 2 ? rng.below(8) == 0
                                 : kind == 3 ? rng.below(2) == 0
                                 : kind == 4 ? 1
                                             : i % 41 == 40;
        // [0, n] (n: an empty range); for the runs, the start of one, so the live index lies 40 on
        const int first = kind == 5 ? std::min(n, 41 * int(rng.below(uint64_t(n / 41) + 1)))
                                    : int(rng.below(uint64_t(n) + 1));
        const int last = c % 7 == 0 ? first - 1 : first + int(rng.below(uint64_t(n - first) + 1)) - 1;
        for (int i = 0; i < n; ++i) live[i] = pattern[size_t(i)];
        for (int t = 0; t < kThreads; ++t) found[t] = -7, outside[t] = -7;
        fsig::emu::launch(search_kernel, dim3(1), dim3(kThreads), 0, nullptr, SearchArgs{live, first, last, found, outside});
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess, "launch failed: %s", cudaGetErrorString(cudaGetLastError()));
        const int want = scan(pattern, first, last);
        for (int t = 0; t < kThreads; ++t) {
            EXPECT(found[t] == want, "case %d (n %d, range [%d, %d], kind %d): thread %d found %d, want %d", c, n,
                   first, last, kind, t, found[t], want);
            EXPECT(outside[t] == 0, "case %d: thread %d called live() %d time(s) outside [%d, %d]", c, t, outside[t],
                   first, last);
        }
        ++cases, none += want > last, past_first_round += want <= last && want >= first + 32;
    }
    std::printf("  %d ranges (%d without a live index, %d found past the first 32)\n", cases, none, past_first_round);
    EXPECT(covered(), "the cases must cover both outcomes and several rounds");
    cudaFree(found), cudaFree(outside), cudaFree(live);
}

}  // namespace

int main(int argc, char** argv) {
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
