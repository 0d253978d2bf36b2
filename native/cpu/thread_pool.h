// A fixed pool of worker threads for the CPU backend. One job at a time: a caller that finds the pool
// busy (another thread's call is running) runs its job alone on its own thread, so concurrent
// callers never oversubscribe the cores. Which thread runs a task never changes its result.
#pragma once
#include <cstdint>
#include <functional>

namespace fsig::cpu {

// Runs fn(task, worker) for task in [0, tasks) with worker < max_workers (the caller sizes per-worker
// scratch by it; pass num_threads()). Returns when every task is done.
void parallel_for(int64_t tasks, int max_workers, const std::function<void(int64_t task, int worker)>& fn);

int num_threads();
// n >= 1, or 0 for the CPUs this process may run on.
void set_num_threads(int n);

}  // namespace fsig::cpu
