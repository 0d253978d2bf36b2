#include "cpu_backend.h"

#include <cpuid.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernel_table.h"
#include "thread_pool.h"

namespace fsig::cpu {
namespace {

bool cpu_has_avx512() {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0xE6) != 0xE6) return false;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM enabled by the OS
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const unsigned need = bit_AVX512F | bit_AVX512BW | bit_AVX512DQ | bit_AVX512VL;
    return (b & need) == need;
}

const KernelTable& choose_kernels() {
    const char* force = std::getenv("FSIG_CPU_ISA");
    if (force && std::strcmp(force, "avx2") == 0) return kernels_avx2();
    return cpu_has_avx512() ? kernels_avx512() : kernels_avx2();
}

const KernelTable& kernels() {
    static const KernelTable& k = choose_kernels();
    return k;
}

struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
};

// Small calls reuse one scratch block per calling thread: a malloc/free pair of a few hundred KB costs
// glibc a heap consolidation per call, a quarter of a tiny call's time. Large calls allocate, where
// that cost is noise; the per-thread block never exceeds kMaxCachedScratch and is freed at thread exit.
constexpr size_t kMaxCachedScratch = size_t(1) << 20;
struct ThreadScratch {
    std::unique_ptr<float, FreeDeleter> block;
    size_t bytes = 0;
};
thread_local ThreadScratch t_scratch;

class Scratch {
public:
    // floats_per_worker floats for each of `workers`, each worker's part 64-byte aligned
    Scratch(size_t floats_per_worker, int workers) {
        const size_t bytes = (floats_per_worker * sizeof(float) + 63) / 64 * 64 * size_t(workers);
        if (bytes > kMaxCachedScratch) {
            owned_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
            data_ = owned_.get();
            return;
        }
        if (t_scratch.bytes < bytes) {
            t_scratch.block.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
            t_scratch.bytes = t_scratch.block ? bytes : 0;
        }
        data_ = t_scratch.block.get();
    }
    float* get() const { return data_; }  // nullptr when the allocation failed

private:
    std::unique_ptr<float, FreeDeleter> owned_;
    float* data_ = nullptr;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// No more workers (and worker scratch) than tasks.
int workers_for(int64_t tasks) { return int(std::min<int64_t>(num_threads(), std::max<int64_t>(tasks, 1))); }


}  // namespace

int32_t active_isa() { return kernels().isa; }
const char* active_isa_name() { return kernels().name; }

int forward(const ForwardArgs& a) {
    const KernelTable& k = kernels();
    const Problem& p = a.p;
    const int64_t tiles = ceil_div(p.seq_q, kBlockM);
    const int workers = workers_for(p.batch * p.heads_q * tiles);
    const size_t per_worker = (k.scratch_floats(p) + 15) / 16 * 16;
    const Scratch scratch(per_worker, workers);
    if (!scratch.get()) return FSIG_ERROR_OUT_OF_MEMORY;
    parallel_for(p.batch * p.heads_q * tiles, workers, [&](int64_t t, int w) {
        const int64_t tile = t % tiles, bh = t / tiles;
        k.forward_task(a, bh / p.heads_q, bh % p.heads_q, tile * kBlockM, scratch.get() + size_t(w) * per_worker);
    });
    return FSIG_OK;
}

int backward(const BackwardArgs& a) {
    const KernelTable& k = kernels();
    const Problem& p = a.p;
    const int64_t q_tiles = ceil_div(p.seq_q, kBlockM);
    const int64_t bn = block_n_for(p.head_dim), k_tiles = ceil_div(p.seq_k, bn);
    const int workers = workers_for(std::max(p.batch * p.heads_q * q_tiles, p.batch * p.heads_k * k_tiles));
    const size_t per_worker = (k.scratch_floats(p) + 15) / 16 * 16;
    const Scratch scratch(per_worker, workers);
    const bool softmax = p.score == FSIG_SCORE_SOFTMAX;
    std::unique_ptr<float, FreeDeleter> D(
        softmax ? static_cast<float*>(std::malloc(sizeof(float) * size_t(p.batch * p.heads_q * p.seq_q))) : nullptr);
    if (!scratch.get() || (softmax && !D)) return FSIG_ERROR_OUT_OF_MEMORY;

    if (softmax)
        parallel_for(p.batch * p.heads_q * q_tiles, workers, [&](int64_t t, int) {
            const int64_t tile = t % q_tiles, bh = t / q_tiles;
            k.backward_rowdot_task(a, bh / p.heads_q, bh % p.heads_q, tile * kBlockM, D.get());
        });
    parallel_for(p.batch * p.heads_k * k_tiles, workers, [&](int64_t t, int w) {
        const int64_t tile = t % k_tiles, bh = t / k_tiles;
        k.backward_dkdv_task(a, D.get(), bh / p.heads_k, bh % p.heads_k, tile * bn,
                             scratch.get() + size_t(w) * per_worker);
    });
    parallel_for(p.batch * p.heads_q * q_tiles, workers, [&](int64_t t, int w) {
        const int64_t tile = t % q_tiles, bh = t / q_tiles;
        k.backward_dq_task(a, D.get(), bh / p.heads_q, bh % p.heads_q, tile * kBlockM,
                           scratch.get() + size_t(w) * per_worker);
    });
    // dbias broadcast over batch or heads (else the dQ pass wrote it): tasks own whole output rows
    const int64_t bias_b = a.has_dbias ? a.dbias.shape[0] : 0, bias_h = a.has_dbias ? a.dbias.shape[1] : 0;
    if (a.has_dbias && (bias_b != p.batch || bias_h != p.heads_q))
        parallel_for(bias_b * bias_h * q_tiles, workers, [&](int64_t t, int w) {
            const int64_t tile = t % q_tiles, bh = t / q_tiles;
            k.backward_dbias_task(a, D.get(), bh / bias_h, bh % bias_h, tile * kBlockM,
                                  scratch.get() + size_t(w) * per_worker);
        });
    return FSIG_OK;
}

}  // namespace fsig::cpu
