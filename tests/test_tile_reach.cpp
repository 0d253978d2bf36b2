// The ALiBi distances the CPU kernels' norm bound and its gate rest on (native/cpu/kernel_table.h): least_distance
// and largest_distance against the least and largest |i + Nk − Nq − j| over each query tile × key tile, and
// query_tiles_reach and key_tiles_reach (the largest least distance to any tile of the other axis, taken at the
// first or last tile) against that maximum over every tile, element by element, on random and edge shapes. A reach
// too small would leave out norms that could skip a tile (speed only: no result test can see it); too large, take
// norms that never can.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernel_table.h"
#include "harness.h"

namespace {

using fsig::cpu::block_n_for;
using fsig::cpu::kBlockM;

// Every tile pair's least and largest distance, from each element
void check_shape(int64_t nq, int64_t nk, int64_t d) {
    fsig::Problem p;
    p.seq_q = nq, p.seq_k = nk, p.head_dim = d;
    const int64_t bn = block_n_for(d), q_tiles = (nq + kBlockM - 1) / kBlockM, k_tiles = (nk + bn - 1) / bn;
    std::vector<int64_t> least(size_t(q_tiles * k_tiles), INT64_MAX), largest(size_t(q_tiles * k_tiles), -1);
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j) {
            const int64_t dist = std::llabs(i + nk - nq - j);
            const size_t t = size_t(i / kBlockM * k_tiles + j / bn);
            least[t] = std::min(least[t], dist), largest[t] = std::max(largest[t], dist);
        }
    std::vector<int64_t> reach_of_key(size_t(k_tiles), -1), reach_of_query(size_t(q_tiles), -1);
    for (int64_t qt = 0; qt < q_tiles; ++qt)
        for (int64_t kt = 0; kt < k_tiles; ++kt) {
            const int64_t i0 = qt * kBlockM, m = std::min(kBlockM, nq - i0), j0 = kt * bn, n = std::min(bn, nk - j0);
            const size_t t = size_t(qt * k_tiles + kt);
            const int64_t lo = fsig::cpu::least_distance(p, i0, m, j0, n);
            const int64_t hi = fsig::cpu::largest_distance(p, i0, m, j0, n);
            EXPECT(lo == least[t], "%lldx%lld d %lld tile (%lld, %lld): least %lld, want %lld", (long long)nq,
                   (long long)nk, (long long)d, (long long)qt, (long long)kt, (long long)lo, (long long)least[t]);
            EXPECT(hi == largest[t], "%lldx%lld d %lld tile (%lld, %lld): largest %lld, want %lld", (long long)nq,
                   (long long)nk, (long long)d, (long long)qt, (long long)kt, (long long)hi, (long long)largest[t]);
            reach_of_key[size_t(kt)] = std::max(reach_of_key[size_t(kt)], least[t]);
            reach_of_query[size_t(qt)] = std::max(reach_of_query[size_t(qt)], least[t]);
        }
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
        const int64_t j0 = kt * bn, got = fsig::cpu::query_tiles_reach(p, j0, std::min(bn, nk - j0));
        EXPECT(got == reach_of_key[size_t(kt)], "%lldx%lld d %lld key tile %lld: reach %lld, want %lld", (long long)nq,
               (long long)nk, (long long)d, (long long)kt, (long long)got, (long long)reach_of_key[size_t(kt)]);
    }
    for (int64_t qt = 0; qt < q_tiles; ++qt) {
        const int64_t i0 = qt * kBlockM, got = fsig::cpu::key_tiles_reach(p, i0, std::min(kBlockM, nq - i0));
        EXPECT(got == reach_of_query[size_t(qt)], "%lldx%lld d %lld query tile %lld: reach %lld, want %lld",
               (long long)nq, (long long)nk, (long long)d, (long long)qt, (long long)got,
               (long long)reach_of_query[size_t(qt)]);
    }
}

TEST(edge_shapes) {
    for (int64_t d : {int64_t(64), int64_t(192)})
        for (int64_t nq : {int64_t(1), int64_t(63), int64_t(64), int64_t(65), int64_t(128), int64_t(300)})
            for (int64_t nk :
                 {int64_t(1), int64_t(64), int64_t(127), int64_t(128), int64_t(129), int64_t(287), int64_t(700)})
                check_shape(nq, nk, d);
}

TEST(random_shapes) {
    std::mt19937 rng(4911);
    std::uniform_int_distribution<int64_t> len(1, 600);
    for (int c = 0; c < 60; ++c) check_shape(len(rng), len(rng), c % 2 == 0 ? 64 : 256);
}

}  // namespace

int main(int argc, char** argv) { return th::run_all(std::vector<std::string>(argv + 1, argv + argc)); }
