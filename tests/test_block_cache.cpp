// The CPU backend's cache of working buffers (native/cpu/block_cache.h), compiled into this test on its
// own: a released block serves the next request that fits (the smallest such), small blocks are never
// kept, the idle total and count stay within their limits, the longest idle block goes first, every
// block is handed out poisoned under FSIG_CPU_POISON_SCRATCH=1 (this test sets it), release frees all,
// a size that would wrap gets nothing, and threads sharing the cache get blocks of their own. Then the ABI call.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "cpu/block_cache.h"
#include "flashsig.h"
#include "harness.h"

using fsig::cpu::CachedBlock;
using fsig::cpu::idle_block_bytes;
using fsig::cpu::kMaxIdleBytes;
using fsig::cpu::release_idle_blocks;

namespace {

constexpr size_t kMiB = size_t(1) << 20;

bool all_bytes(const void* p, size_t n, unsigned char value) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i)
        if (b[i] != value) return false;
    return true;
}

}  // namespace

TEST(a_released_block_serves_the_next_request_that_fits) {
    release_idle_blocks();
    void* first;
    {
        CachedBlock a(3 * kMiB);
        REQUIRE(a.floats() != nullptr, "3 MiB not allocated");
        EXPECT(reinterpret_cast<uintptr_t>(a.floats()) % 64 == 0, "block not 64-byte aligned");
        first = a.floats();
        EXPECT(idle_block_bytes() == 0, "idle %zu bytes while the only block is in use", idle_block_bytes());
    }
    EXPECT(idle_block_bytes() == 4 * kMiB, "idle %zu bytes after releasing 3 MiB (2 MiB granules: 4 MiB)",
           idle_block_bytes());
    CachedBlock b(4 * kMiB - 1);
    EXPECT(b.floats() == first, "a request that fits the idle block got another");
    EXPECT(idle_block_bytes() == 0, "idle %zu bytes after the block was taken again", idle_block_bytes());
}

TEST(the_smallest_idle_block_that_fits_is_taken) {
    release_idle_blocks();
    void *big, *small;
    {
        CachedBlock a(8 * kMiB), b(4 * kMiB), c(2 * kMiB);
        big = a.floats(), small = b.floats();
    }
    CachedBlock d(3 * kMiB);  // fits 8 and 4, not 2
    EXPECT(d.floats() == small, "3 MiB took %p, not the 4 MiB block %p", static_cast<void*>(d.floats()), small);
    CachedBlock e(5 * kMiB);
    EXPECT(e.floats() == big, "5 MiB did not take the 8 MiB block");
    CachedBlock f(3 * kMiB);  // only the 2 MiB block is idle: a new one
    EXPECT(f.floats() != nullptr && f.floats() != small && f.floats() != big, "3 MiB got a block in use");
    EXPECT(idle_block_bytes() == 2 * kMiB, "idle %zu bytes, expected the 2 MiB block", idle_block_bytes());
}

TEST(small_blocks_are_never_kept) {
    release_idle_blocks();
    {
        CachedBlock a(4096), b(fsig::cpu::kMinCachedBytes - 1);
        REQUIRE(a.floats() != nullptr && b.floats() != nullptr, "small blocks not allocated");
    }
    EXPECT(idle_block_bytes() == 0, "small blocks kept: %zu bytes idle", idle_block_bytes());
    CachedBlock none(0);
    EXPECT(none.floats() == nullptr, "a block of 0 bytes has memory");
}

TEST(idle_blocks_stay_within_the_byte_limit_the_longest_idle_going_first) {
    release_idle_blocks();
    const size_t each = 48 * kMiB, count = kMaxIdleBytes / each + 2;  // more than the limit holds
    std::vector<void*> order;
    {
        std::vector<CachedBlock*> held;
        for (size_t i = 0; i < count; ++i) held.push_back(new CachedBlock(each));
        for (CachedBlock* b : held) order.push_back(b->floats()), delete b;  // released in this order
    }
    EXPECT(idle_block_bytes() <= kMaxIdleBytes, "idle %zu bytes over the limit %zu", idle_block_bytes(), kMaxIdleBytes);
    EXPECT(idle_block_bytes() == (kMaxIdleBytes / each) * each, "idle %zu bytes, expected %zu", idle_block_bytes(),
           (kMaxIdleBytes / each) * each);
    CachedBlock newest(each);
    EXPECT(newest.floats() == order.back(), "the last block released was not kept");
    std::vector<CachedBlock*> rest;
    bool oldest_kept = false;
    while (idle_block_bytes() > 0) {
        rest.push_back(new CachedBlock(each));
        oldest_kept |= rest.back()->floats() == order.front();
    }
    EXPECT(!oldest_kept, "the first block released was kept over newer ones");
    for (CachedBlock* b : rest) delete b;
    release_idle_blocks();
    EXPECT(idle_block_bytes() == 0, "release left %zu bytes idle", idle_block_bytes());
}

TEST(idle_blocks_stay_within_the_count_limit) {
    release_idle_blocks();
    {
        std::vector<CachedBlock*> held;
        for (int i = 0; i < 40; ++i) held.push_back(new CachedBlock(2 * kMiB));
        for (CachedBlock* b : held) delete b;
    }
    EXPECT(idle_block_bytes() > 0 && idle_block_bytes() <= 16 * 2 * kMiB, "%zu bytes idle in 2 MiB blocks",
           idle_block_bytes());
    release_idle_blocks();
}

TEST(every_block_is_handed_out_poisoned) {
    release_idle_blocks();
    for (size_t bytes : {size_t(100), 2 * kMiB + 12}) {
        for (int round = 0; round < 2; ++round) {  // a new block, then (large ones) the same one reused
            CachedBlock b(bytes);
            REQUIRE(b.floats() != nullptr, "%zu bytes not allocated", bytes);
            EXPECT(all_bytes(b.floats(), bytes, 0xff), "%zu bytes (round %d) not poisoned", bytes, round);
            std::memset(b.floats(), 0, bytes);
        }
    }
    release_idle_blocks();
}

TEST(threads_sharing_the_cache_get_blocks_of_their_own) {
    release_idle_blocks();
    std::vector<std::thread> threads;
    std::vector<int> bad(4, 0);
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([t, &bad] {
            uint64_t x = 0x9e3779b97f4a7c15ull * uint64_t(t + 1);
            for (int i = 0; i < 200; ++i) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                const size_t bytes = kMiB + size_t(x % (24 * kMiB));
                CachedBlock b(bytes);
                if (b.floats() == nullptr) { ++bad[size_t(t)]; continue; }
                unsigned char* p = reinterpret_cast<unsigned char*>(b.floats());
                const unsigned char mark = static_cast<unsigned char>(t + 1);
                p[0] = p[bytes / 2] = p[bytes - 1] = mark;
                std::this_thread::yield();
                if (p[0] != mark || p[bytes / 2] != mark || p[bytes - 1] != mark) ++bad[size_t(t)];
            }
        });
    for (std::thread& th : threads) th.join();
    for (int t = 0; t < 4; ++t) EXPECT(bad[size_t(t)] == 0, "thread %d: %d blocks missing or shared", t, bad[size_t(t)]);
    EXPECT(idle_block_bytes() <= kMaxIdleBytes, "idle %zu bytes after the threads", idle_block_bytes());
    release_idle_blocks();
}

TEST(a_size_the_rounding_would_wrap_gets_no_block) {
    release_idle_blocks();
    { CachedBlock idle(2 * kMiB); }
    CachedBlock huge(SIZE_MAX - 100);
    EXPECT(huge.floats() == nullptr, "SIZE_MAX - 100 bytes handed out");
    EXPECT(idle_block_bytes() == 2 * kMiB, "the idle block was taken by an impossible request");
    release_idle_blocks();
}

// (the library's own cache is not visible from here: this checks the call, not what it freed)
TEST(fsig_release_cached_memory_succeeds) {
    EXPECT(fsig_release_cached_memory() == FSIG_OK, "fsig_release_cached_memory: %s", fsig_last_error());
    EXPECT(std::strcmp(fsig_last_error(), "") == 0, "last error after success: %s", fsig_last_error());
}

int main(int argc, char** argv) {
    ::setenv("FSIG_CPU_POISON_SCRATCH", "1", 1);  // read once, at the first block
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
