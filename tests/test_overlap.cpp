// The C ABI's aliasing rule for strided views (native/overlap.h): against enumerating every byte of both
// views, on random pairs — it must never call overlapping views disjoint, and where it claims to be exact
// (one element size, the same nested strides, bases whole elements apart) it must agree exactly. Then the
// case it exists for: a backward writing dq, dk, dv into one fused [B, N, 3, H, d] gradient buffer is
// accepted and gives the same bits as three separate buffers, while views that do share an element are
// still refused.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "flashsig.h"
#include "harness.h"
#include "overlap.h"

namespace {

std::set<uintptr_t> bytes_of(const fsig::ViewShape& v) {
    std::set<uintptr_t> out;
    for (int64_t i0 = 0; i0 < v.shape[0]; ++i0)
        for (int64_t i1 = 0; i1 < v.shape[1]; ++i1)
            for (int64_t i2 = 0; i2 < v.shape[2]; ++i2)
                for (int64_t i3 = 0; i3 < v.shape[3]; ++i3) {
                    const int64_t e = i0 * v.stride[0] + i1 * v.stride[1] + i2 * v.stride[2] + i3 * v.stride[3];
                    for (int64_t b = 0; b < v.esize; ++b) out.insert(v.base + uintptr_t(e * v.esize + b));
                }
    return out;
}

fsig::ViewShape finish(fsig::ViewShape v) {
    int64_t last = 0;
    for (int k = 0; k < 4; ++k) last += (v.shape[k] - 1) * v.stride[k];
    v.rank = 4;
    v.begin = v.base, v.end = v.base + uintptr_t((last + 1) * v.esize);
    return v;
}

TEST(random_pairs_against_enumeration) {
    std::mt19937_64 rng(20261130);
    auto pick = [&](int64_t n) { return int64_t(rng() % uint64_t(n)); };
    int exact = 0, found = 0, exact_found = 0;
    for (int it = 0; it < 20000; ++it) {
        fsig::ViewShape a{}, b{};
        a.esize = b.esize = pick(4) == 0 ? 2 : 4;
        if (pick(8) == 0) b.esize = 6 - a.esize;
        for (int k = 0; k < 4; ++k) a.shape[k] = 1 + pick(3), b.shape[k] = 1 + pick(3);
        // strides: nested (fused-buffer style: each the span of the smaller dims times a factor), or random
        const bool nested = pick(4) != 0;
        int64_t span = 1;
        for (int k = 3; k >= 0; --k) {
            if (nested) {
                a.stride[k] = span * (1 + pick(3));
                span = a.stride[k] * (std::max(a.shape[k], b.shape[k]));
            } else {
                a.stride[k] = pick(7);
            }
            b.stride[k] = pick(10) == 0 ? a.stride[k] + 1 : a.stride[k];
        }
        a.base = 4096;
        b.base = 4096 + uintptr_t(pick(200)) * (pick(5) == 0 ? 1 : uintptr_t(a.esize));
        a = finish(a), b = finish(b);
        const std::set<uintptr_t> ba = bytes_of(a), bb = bytes_of(b);
        bool shared = false;
        for (uintptr_t x : bb)
            if (ba.count(x) != 0) {
                shared = true;
                break;
            }
        const bool said = fsig::views_overlap(a, b);
        found += shared;
        REQUIRE(said || !shared, "iteration %d: views sharing a byte called disjoint", it);
        bool same = a.esize == b.esize && (b.base - a.base) % uintptr_t(a.esize) == 0;
        for (int k = 0; k < 4; ++k) same = same && a.stride[k] == b.stride[k];
        if (same && nested) {
            ++exact, exact_found += shared;
            EXPECT(said == shared, "iteration %d: exact case says %d, enumeration %d", it, int(said), int(shared));
        }
    }
    std::printf("  20000 pairs, %d sharing a byte, %d in the exact case (%d of them sharing)\n", found, exact,
                exact_found);
    EXPECT(exact > 5000 && found > 1000 && exact_found > 200 && exact - exact_found > 200, "too few informative pairs");
}

// dq, dk, dv as views into one [B, N, 3, H, d] buffer against three separate buffers.
TEST(fused_gradient_buffer_is_accepted) {
    const int64_t B = 2, N = 37, H = 3, d = 16;
    const int64_t n = B * N * H * d;
    std::vector<float> q(n), k(n), v(n), dout(n);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> nd;
    for (auto* t : {&q, &k, &v, &dout})
        for (float& x : *t) x = nd(rng);
    auto dense = [&](void* data) {
        fsig_tensor t{};
        t.data = data, t.dtype = FSIG_DTYPE_FP32, t.ndim = 4, t.device_type = FSIG_DEVICE_CPU;
        const int64_t shape[4] = {B, N, H, d}, strides[4] = {N * H * d, H * d, d, 1};
        for (int i = 0; i < 4; ++i) t.shape[i] = shape[i], t.strides[i] = strides[i];
        t.capacity_bytes = n * 4;
        return t;
    };
    fsig_attention_params p = fsig_attention_params_default();
    p.score = FSIG_SCORE_SIGMOID;
    const fsig_tensor tq = dense(q.data()), tk = dense(k.data()), tv = dense(v.data()), tg = dense(dout.data());
    std::vector<float> dq(n), dk(n), dv(n);
    const fsig_tensor tdq = dense(dq.data()), tdk = dense(dk.data()), tdv = dense(dv.data());
    REQUIRE(fsig_attention_backward(&p, &tq, &tk, &tv, nullptr, &tg, nullptr, &tdq, &tdk, &tdv, nullptr) == FSIG_OK,
            "separate buffers: %s", fsig_last_error());

    std::vector<float> fused(size_t(3 * n) + 1, -7.f);  // [B, N, 3, H, d], plus a sentinel
    auto part = [&](int which) {
        fsig_tensor t = dense(fused.data() + which * H * d);
        t.strides[0] = N * 3 * H * d, t.strides[1] = 3 * H * d;
        t.capacity_bytes = (3 * n - which * H * d) * 4;
        return t;
    };
    const fsig_tensor fq = part(0), fk = part(1), fv = part(2);
    const int st = fsig_attention_backward(&p, &tq, &tk, &tv, nullptr, &tg, nullptr, &fq, &fk, &fv, nullptr);
    REQUIRE(st == FSIG_OK, "fused dq/dk/dv: %d %s", st, fsig_last_error());
    int64_t differ = 0;
    for (int64_t e = 0; e < n; ++e) {
        const int64_t row = e / (H * d), col = e % (H * d);
        for (int w = 0; w < 3; ++w) {
            const float got = fused[size_t(row * 3 * H * d + w * H * d + col)];
            const float want = (w == 0 ? dq : w == 1 ? dk : dv)[size_t(e)];
            differ += std::memcmp(&got, &want, 4) != 0;
        }
    }
    EXPECT(differ == 0, "%lld elements of the fused dq/dk/dv differ from the separate buffers' bits", (long long)differ);
    EXPECT(fused.back() == -7.f, "the sentinel after the fused buffer was written");

    // dk shifted by one element into dq's elements: shares elements, refused, nothing written
    std::fill(fused.begin(), fused.end(), -7.f);
    fsig_tensor bad = fk;
    bad.data = fused.data() + 1;
    const int st2 = fsig_attention_backward(&p, &tq, &tk, &tv, nullptr, &tg, nullptr, &fq, &bad, &fv, nullptr);
    EXPECT(st2 == FSIG_ERROR_ALIASING && std::strstr(fsig_last_error(), "overlaps") != nullptr,
           "overlapping dq and dk: %d %s", st2, fsig_last_error());
    EXPECT(std::count(fused.begin(), fused.end(), -7.f) == int64_t(fused.size()), "a refused call wrote the buffer");
}

}  // namespace

int main(int argc, char** argv) { return th::run_all(std::vector<std::string>(argv + 1, argv + argc)); }
