// The CPU backend's large working buffers (packed K and V, dQ accumulators, per-worker scratch), kept
// between calls. Allocated afresh each call, a buffer of tens of MB costs a page fault per 4 KiB page
// touched (the kernel zeroes each one): 15-35 % of a forward or backward at N = 4096, d = 128 on the
// 2-vCPU VM of benchmarks/NOTES.md ("Buffers kept between calls"). glibc serves blocks over 32 MiB
// by mmap on every call whatever the process did before, smaller ones mostly from its heap.
#pragma once
#include <cstddef>

namespace fsig::cpu {

// At least `bytes` bytes, 64-byte aligned. Blocks of kMinCachedBytes or more come from the process-wide
// cache of idle blocks (the smallest that fits, the last released of equals) or are allocated 2 MiB-aligned
// with transparent huge pages asked for, and go back to the cache when destroyed; smaller ones are plain
// heap allocations. floats() is nullptr for bytes == 0 and when the allocation failed.
class CachedBlock {
public:
    explicit CachedBlock(size_t bytes);
    ~CachedBlock();
    CachedBlock(const CachedBlock&) = delete;
    CachedBlock& operator=(const CachedBlock&) = delete;
    float* floats() const { return static_cast<float*>(data_); }

private:
    void* data_ = nullptr;
    size_t capacity_ = 0;  // 0: a plain heap allocation, never cached
};

constexpr size_t kMinCachedBytes = size_t(1) << 20;
// Idle blocks beyond this total are freed, the longest idle first: two calls' buffers at the 64 MB wave
// budget (cpu_backend.cpp's wave_floats) and their scratch stay.
constexpr size_t kMaxIdleBytes = size_t(256) << 20;

// Under FSIG_CPU_POISON_SCRATCH=1 (the numerics tests set it), fills p with 0xff bytes: NaN as fp32 and
// bf16. Every working buffer is handed out so (cached or not, reused or new), and a kernel that reads
// memory it did not write in this call then fails its check instead of passing on zeros or stale values.
void poison_for_tests(void* p, size_t bytes);

// Frees every idle block (fsig_release_cached_memory); blocks in use join the cache when their call ends.
void release_idle_blocks();
// The bytes the cache holds idle now (tests).
size_t idle_block_bytes();

}  // namespace fsig::cpu
