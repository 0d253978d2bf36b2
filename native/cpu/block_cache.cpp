#include "block_cache.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace fsig::cpu {
namespace {

constexpr size_t kGranule = size_t(2) << 20;  // a transparent huge page on x86-64 and 4 KiB-page AArch64
// glibc's largest mmap threshold: smaller blocks may come from its heap, which later serves small ones
constexpr size_t kHugePageMin = size_t(32) << 20;

// Under AddressSanitizer the bytes of a block past what its holder asked for, and a whole idle block,
// are unaddressable, as they would be with a fresh allocation of the exact size and a free.
void mark_usable(void* p, size_t bytes, size_t capacity) {
#if defined(__SANITIZE_ADDRESS__)
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
    ASAN_POISON_MEMORY_REGION(static_cast<char*>(p) + bytes, capacity - bytes);
#else
    (void)p, (void)bytes, (void)capacity;
#endif
}
void free_block(void* p, size_t capacity) {
#if defined(__SANITIZE_ADDRESS__)
    ASAN_UNPOISON_MEMORY_REGION(p, capacity);
#else
    (void)capacity;
#endif
    std::free(p);
}

struct Idle {
    void* data;
    size_t capacity;
};

// A fixed array, so that returning a block (in a destructor) never allocates
constexpr int kMaxIdleBlocks = 16;
struct Cache {
    std::mutex mutex;
    Idle idle[kMaxIdleBlocks];  // [0, count), oldest first
    int count = 0;
    size_t idle_bytes = 0;

    // (under the lock) idle block i taken out of the list
    Idle remove(int i) {
        const Idle taken = idle[i];
        idle_bytes -= taken.capacity;
        for (int j = i + 1; j < count; ++j) idle[j - 1] = idle[j];
        --count;
        return taken;
    }
    void drop_oldest() {
        const Idle oldest = remove(0);
        free_block(oldest.data, oldest.capacity);
    }
};

// Never destroyed: a call still running on another thread at exit may return its blocks after static
// destructors ran (what it holds idle then is the process's to reclaim, and reachable for leak checkers).
Cache& cache() {
    static Cache* c = new Cache;
    return *c;
}

void* allocate_granules(size_t capacity) {
    void* p = std::aligned_alloc(kGranule, capacity);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Fewer faults and TLB misses where huge pages are "madvise" only; harmless where refused. Only blocks
    // glibc always maps on their own: a heap range would keep the advice after it is freed.
    if (p != nullptr && capacity >= kHugePageMin) madvise(p, capacity, MADV_HUGEPAGE);
#endif
    return p;
}

// The smallest idle block that fits; of equal ones the last released (the likeliest still in the caches)
void* take_idle(Cache& c, size_t capacity, size_t* taken) {
    std::lock_guard<std::mutex> lock(c.mutex);
    int best = -1;
    for (int i = 0; i < c.count; ++i)
        if (c.idle[i].capacity >= capacity && (best < 0 || c.idle[i].capacity <= c.idle[best].capacity)) best = i;
    if (best < 0) return nullptr;
    const Idle block = c.remove(best);
    *taken = block.capacity;
    return block.data;
}

}  // namespace

void poison_for_tests(void* p, size_t bytes) {
    static const bool poison = [] {
        const char* env = std::getenv("FSIG_CPU_POISON_SCRATCH");
        return env != nullptr && std::strcmp(env, "1") == 0;
    }();
    if (poison && p != nullptr) std::memset(p, 0xff, bytes);
}

CachedBlock::CachedBlock(size_t bytes) {
    if (bytes == 0) return;
    if (bytes < kMinCachedBytes) {
        if (posix_memalign(&data_, 64, bytes) != 0) data_ = nullptr;
        poison_for_tests(data_, bytes);
        return;
    }
    if (bytes > SIZE_MAX - kGranule) return;  // no such block; the rounding below would wrap
    const size_t capacity = (bytes + kGranule - 1) / kGranule * kGranule;
    data_ = take_idle(cache(), capacity, &capacity_);
    if (data_ == nullptr) {
        data_ = allocate_granules(capacity);
        if (data_ == nullptr) {  // idle blocks too small to serve may be what the memory went to
            release_idle_blocks();
            data_ = allocate_granules(capacity);
        }
        capacity_ = data_ != nullptr ? capacity : 0;
    }
    if (data_ != nullptr) mark_usable(data_, bytes, capacity_);
    poison_for_tests(data_, bytes);
}

CachedBlock::~CachedBlock() {
    if (data_ == nullptr) return;
    if (capacity_ == 0 || capacity_ > kMaxIdleBytes) {
        free_block(data_, capacity_);
        return;
    }
    mark_usable(data_, 0, capacity_);  // idle: nothing addressable
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.count == kMaxIdleBlocks) c.drop_oldest();
    c.idle[c.count++] = {data_, capacity_};
    c.idle_bytes += capacity_;
    while (c.idle_bytes > kMaxIdleBytes) c.drop_oldest();
}

void release_idle_blocks() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    while (c.count > 0) c.drop_oldest();
}

size_t idle_block_bytes() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.idle_bytes;
}

}  // namespace fsig::cpu
