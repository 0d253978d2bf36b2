// Results never depend on the thread count (DESIGN.md §5): the same forward and backward with
// fsig_set_num_threads(1), 2, 3 and 8 give bitwise-equal outputs (8: more threads than this machine's
// cores, so the backward's key tasks, which wait for each other's dQ turns, run preempted too). Problems span several query and key
// tiles, GQA groups and batches so that a thread-dependent partition or reduction order would show.
// Nor on the tensors' memory layout: contiguous rows, head-major, a head-dim stride of 2 (element-wise
// loads) and [B, H, d, N] (packed and stored along positions) give bitwise-equal values. Nor on the size
// of the CPU's waves (FSIG_CPU_WAVE_FLOATS), packed K and V or not, nor on its cache of working buffers.
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "harness.h"
#include "lib_util.h"

using namespace ref;

namespace {

struct Outputs {
    std::vector<unsigned char> out, lse, dq, dk, dv;
};

// layout < 0: a mix (padded q, head-major k, contiguous rest); else every tensor in that layout. Outputs
// are the values in logical [B, N, H, d] order.
Outputs run(const Spec& s, int dtype, int threads, uint64_t seed, int layout = -1) {
    Outputs r;
    const int lq = layout < 0 ? tu::kPadded : layout, lk = layout < 0 ? tu::kBHSD : layout,
              lo = layout < 0 ? tu::kContiguous : layout;
    EXPECT(fsig_set_num_threads(threads) == FSIG_OK, "fsig_set_num_threads(%d): %s", threads, fsig_last_error());
    EXPECT(fsig_get_num_threads() == threads, "fsig_get_num_threads() = %d after setting %d", fsig_get_num_threads(),
           threads);
    Rng rng(seed);
    tu::View q = tu::make_view(dtype, lq, s.B, s.Nq, s.Hq, s.d), k = tu::make_view(dtype, lk, s.B, s.Nk, s.Hk, s.d),
             v = tu::make_view(dtype, lo, s.B, s.Nk, s.Hk, s.d), out = tu::make_view(dtype, lo, s.B, s.Nq, s.Hq, s.d),
             dout = tu::make_view(dtype, lo, s.B, s.Nq, s.Hq, s.d),
             lse = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq),
             dq = tu::make_view(dtype, lo, s.B, s.Nq, s.Hq, s.d), dk = tu::make_view(dtype, lo, s.B, s.Nk, s.Hk, s.d),
             dv = tu::make_view(dtype, lo, s.B, s.Nk, s.Hk, s.d);
    q.store(random_values(rng, s.q_elems(), dtype));
    k.store(random_values(rng, s.kv_elems(), dtype));
    v.store(random_values(rng, s.kv_elems(), dtype));
    dout.store(random_values(rng, s.q_elems(), dtype));
    tu::poison(out), tu::poison(lse), tu::poison(dq), tu::poison(dk), tu::poison(dv);
    const bool softmax = s.score == kSoftmax;
    const fsig_attention_params p = tu::params_for(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(), tg = dout.desc(),
                      tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
    int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, softmax ? &tl : nullptr, nullptr);
    EXPECT(st == FSIG_OK, "forward: %s", fsig_last_error());
    st = fsig_attention_backward(&p, &tq, &tk, &tv, &to, &tg, softmax ? &tl : nullptr, &tdq, &tdk, &tdv, nullptr);
    EXPECT(st == FSIG_OK, "backward: %s", fsig_last_error());
    auto values = [](const tu::View& v) {  // bit patterns in logical order, whatever the layout
        const std::vector<float> x = v.load();
        const unsigned char* bytes = reinterpret_cast<const unsigned char*>(x.data());
        return std::vector<unsigned char>(bytes, bytes + x.size() * sizeof(float));
    };
    r.out = values(out), r.dq = values(dq), r.dk = values(dk), r.dv = values(dv);
    if (softmax) r.lse = values(lse);
    return r;
}

const char* const kOutputNames[5] = {"out", "lse", "dq", "dk", "dv"};
std::array<const std::vector<unsigned char>*, 5> fields(const Outputs& o) { return {&o.out, &o.lse, &o.dq, &o.dk, &o.dv}; }

// every output of x bitwise equal to y's
void expect_same(const Spec& s, int dtype, const Outputs& x, const Outputs& y, const std::string& between) {
    const auto a = fields(x), b = fields(y);
    for (int t = 0; t < 5; ++t)
        EXPECT(*a[t] == *b[t], "%s %s: %s differs between %s", s.describe().c_str(), dtype_name(dtype), kOutputNames[t],
               between.c_str());
}

// The CPU's wave buffers (packed K, V for the forward; dQ accumulators and packed Q, dO for the backward)
// come in waves of as many (batch, kv head) pairs as FSIG_CPU_WAVE_FLOATS allows: all pairs at once,
// one pair per wave, or (budget 1) a forward that packs nothing. Same bits every time.
void check_wave_independent(const Spec& s, int dtype, uint64_t seed) {
    ::unsetenv("FSIG_CPU_WAVE_FLOATS");
    const Outputs one_wave = run(s, dtype, 2, seed);
    for (const char* floats : {"65536", "1"}) {
        ::setenv("FSIG_CPU_WAVE_FLOATS", floats, 1);
        expect_same(s, dtype, one_wave, run(s, dtype, 2, seed), std::string("one wave and FSIG_CPU_WAVE_FLOATS=") + floats);
    }
    ::unsetenv("FSIG_CPU_WAVE_FLOATS");
}

// Nor on what the CPU backend's cache of working buffers holds (native/cpu/block_cache.h): fresh buffers
// after fsig_release_cached_memory, then the same ones again after another problem wrote them. Under
// FSIG_CPU_POISON_SCRATCH=1 every buffer comes NaN-filled instead: the outputs must be finite.
void check_cache_independent(const Spec& s, const Spec& other, int dtype, uint64_t seed) {
    EXPECT(fsig_release_cached_memory() == FSIG_OK, "fsig_release_cached_memory: %s", fsig_last_error());
    const Outputs fresh = run(s, dtype, 2, seed);
    run(other, dtype, 2, seed + 1);
    expect_same(s, dtype, fresh, run(s, dtype, 2, seed), "fresh and reused buffers");
    const auto a = fields(fresh);
    for (int t = 0; t < 5; ++t)
        for (size_t i = 0; i + sizeof(float) <= a[t]->size(); i += sizeof(float)) {
            float x;
            std::memcpy(&x, a[t]->data() + i, sizeof x);
            if (!std::isfinite(x)) {
                EXPECT(false, "%s %s: %s[%zu] = %g", s.describe().c_str(), dtype_name(dtype), kOutputNames[t],
                       i / sizeof x, x);
                break;
            }
        }
}

void check_layout_independent(const Spec& s, int dtype, uint64_t seed) {
    const Outputs contiguous = run(s, dtype, 2, seed, tu::kContiguous);
    for (int layout : {tu::kBHSD, tu::kStrideD2, tu::kBHDN}) {
        expect_same(s, dtype, contiguous, run(s, dtype, 2, seed, layout),
                    std::string("layouts contig and ") + tu::layout_name(layout));
    }
}

void check_independent(const Spec& s, int dtype, uint64_t seed) {
    const Outputs one = run(s, dtype, 1, seed);
    for (int threads : {2, 3, 8}) {
        expect_same(s, dtype, one, run(s, dtype, threads, seed), th::format("1 and %d threads", threads));
    }
}

Spec spec(int score, int64_t Hq, int64_t Hk, int64_t d, bool causal, int64_t wl, int64_t wr, int64_t Nq = 300,
          int64_t Nk = 333) {
    Spec s;
    s.B = 2, s.Nq = Nq, s.Nk = Nk, s.Hq = Hq, s.Hk = Hk, s.d = d, s.score = score, s.causal = causal;
    s.window_left = wl, s.window_right = wr;
    return s;
}

}  // namespace

TEST(softmax_fp32_gqa_causal_is_thread_count_independent) { check_independent(spec(kSoftmax, 4, 2, 64, true, -1, -1), kFp32, 1); }
TEST(sigmoid_bf16_mqa_window_is_thread_count_independent) { check_independent(spec(kSigmoid, 3, 1, 59, false, 70, 20), kBf16, 2); }
TEST(gelu_fp16_mha_is_thread_count_independent) { check_independent(spec(kGelu, 2, 2, 128, false, -1, -1), kFp16, 3); }
TEST(relu2_fp32_d256_is_thread_count_independent) { check_independent(spec(kRelu2, 4, 1, 256, true, 100, -1), kFp32, 4); }
// one query tile against six key tiles (dQ summed over many turns), and causal rows with no key at all
TEST(softmax_fp32_short_queries_long_keys_is_thread_count_independent) {
    check_independent(spec(kSoftmax, 4, 2, 64, true, -1, -1, 40, 700), kFp32, 5);
}
TEST(sigmoid_fp16_causal_rows_without_keys_is_thread_count_independent) {
    check_independent(spec(kSigmoid, 2, 1, 64, true, -1, -1, 700, 40), kFp16, 6);
}

// ragged tiles (Nq, Nk not multiples of the tiles or the vector width), GQA, every dtype
TEST(softmax_fp32_gqa_causal_is_layout_independent) { check_layout_independent(spec(kSoftmax, 4, 2, 64, true, -1, -1), kFp32, 7); }
TEST(sigmoid_bf16_mqa_window_is_layout_independent) { check_layout_independent(spec(kSigmoid, 3, 1, 59, false, 70, 20), kBf16, 8); }
TEST(gelu_fp16_d128_is_layout_independent) { check_layout_independent(spec(kGelu, 2, 2, 128, false, -1, -1, 77, 201), kFp16, 9); }
TEST(softmax_fp32_gqa_causal_is_wave_independent) { check_wave_independent(spec(kSoftmax, 4, 2, 64, true, -1, -1), kFp32, 12); }
TEST(sigmoid_bf16_mqa_window_is_wave_independent) { check_wave_independent(spec(kSigmoid, 3, 1, 59, false, 70, 20), kBf16, 13); }

// buffers of 1 MiB and more (packed K and V: 6 key tiles at d = 128 for 4 (batch, kv head) pairs, 3 MiB; the
// backward's wave rows). CTest runs these once without FSIG_CPU_POISON_SCRATCH too: stale contents then.
TEST(sigmoid_fp32_gqa_causal_is_cache_independent) {
    check_cache_independent(spec(kSigmoid, 4, 2, 128, true, -1, -1, 700, 700), spec(kSoftmax, 2, 2, 128, false, -1, -1, 900, 650),
                            kFp32, 14);
}
TEST(softmax_bf16_gqa_is_cache_independent) {
    check_cache_independent(spec(kSoftmax, 4, 2, 128, false, -1, -1, 700, 700), spec(kGelu, 4, 1, 96, true, 30, 0, 800, 800),
                            kBf16, 15);
}

// d > 128 (key tiles of 64) and d below the vector width
TEST(relu_fp32_d160_is_layout_independent) { check_layout_independent(spec(kRelu, 2, 1, 160, true, -1, -1, 130, 150), kFp32, 10); }
TEST(softmax_bf16_d5_is_layout_independent) { check_layout_independent(spec(kSoftmax, 2, 2, 5, false, 40, 3, 97, 90), kBf16, 11); }

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    const int rc = th::run_all(std::vector<std::string>(argv + 1, argv + argc));
    fsig_set_num_threads(0);
    return rc;
}
