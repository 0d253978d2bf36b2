// The benches' input fills on every hardware thread (flashsig-bench, cuda-masks-bench): one thread took ≈ 5 s
// to draw a 16k-token problem's 134 M normals, most of a GPU row's time (the 2026-12-04 H200 session).
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

// Calls fill(begin, end, chunk) over [0, n) in chunks of 2^20 elements on every hardware thread. A fill whose
// values depend on the chunk's index alone gives the same bits on any machine, whatever its thread count.
template <class Fill>
void for_chunks(size_t n, const Fill& fill) {
    constexpr size_t kChunk = size_t(1) << 20;
    const size_t chunks = (n + kChunk - 1) / kChunk;
    const size_t workers = std::min<size_t>(chunks, std::max(1u, std::thread::hardware_concurrency()));
    auto work = [&](size_t w) {
        for (size_t c = w; c < chunks; c += workers) fill(c * kChunk, std::min(n, (c + 1) * kChunk), c);
    };
    std::vector<std::thread> pool;
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work, w);
    if (workers > 0) work(0);
    for (auto& t : pool) t.join();
}
