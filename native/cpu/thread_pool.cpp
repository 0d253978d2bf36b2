#include "thread_pool.h"

#include "../float_mode.h"

#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fsig::cpu {
namespace {

int default_threads() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? int(hw) : 1;
}

class Pool {
public:
    explicit Pool(int threads) : threads_(threads) {
        for (int w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { work(w); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }
    int threads() const { return threads_; }

    // Caller holds the job lock.
    void run(int64_t tasks, int max_workers, const std::function<void(int64_t, int)>& fn) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            max_workers_ = max_workers;
            tasks_ = tasks;
            next_.store(0);
            active_ = int(workers_.size());
            ++generation_;
        }
        wake_.notify_all();
        drain(0);
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return active_ == 0; });
        fn_ = nullptr;
    }

private:
    void drain(int worker) {
        if (worker >= max_workers_) return;
        for (int64_t t; (t = next_.fetch_add(1)) < tasks_;) (*fn_)(t, worker);
    }
    void work(int worker) {
        DefaultFloatMode::set();  // not the mode of the thread that built the pool
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            drain(worker);
            std::lock_guard<std::mutex> lock(mutex_);
            if (--active_ == 0) done_.notify_one();
        }
    }

    const int threads_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int64_t, int)>* fn_ = nullptr;
    int64_t tasks_ = 0;
    std::atomic<int64_t> next_{0};
    int active_ = 0;
    int max_workers_ = 1;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

std::mutex g_job_mutex;   // one job in the pool at a time
std::mutex g_config_mutex;
// Never destroyed: joining workers from a static destructor at process exit could deadlock with a
// call still running on another thread (a JVM exits with its threads alive).
std::shared_ptr<Pool>& g_pool = *new std::shared_ptr<Pool>();
std::atomic<int> g_threads{0};

std::shared_ptr<Pool> pool() {
    std::lock_guard<std::mutex> lock(g_config_mutex);
    if (!g_pool) {
        g_pool = std::make_shared<Pool>(default_threads());
        g_threads.store(g_pool->threads());
    }
    return g_pool;
}

}  // namespace

int num_threads() {
    const int n = g_threads.load(std::memory_order_relaxed);  // no lock on every call once the pool exists
    return n > 0 ? n : pool()->threads();
}

void set_num_threads(int n) {
    std::lock_guard<std::mutex> job(g_job_mutex);  // no job runs while the pool is replaced
    std::lock_guard<std::mutex> lock(g_config_mutex);
    g_pool.reset();
    g_pool = std::make_shared<Pool>(n > 0 ? n : default_threads());
    g_threads.store(g_pool->threads());
}

void parallel_for(int64_t tasks, int max_workers, const std::function<void(int64_t, int)>& fn) {
    std::shared_ptr<Pool> p = pool();
    if (tasks <= 1 || p->threads() == 1 || max_workers <= 1) {
        for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
        return;
    }
    std::unique_lock<std::mutex> job(g_job_mutex, std::try_to_lock);
    if (!job.owns_lock()) {  // another caller's job is running: do ours on this thread alone
        for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
        return;
    }
    p->run(tasks, max_workers, fn);
}

}  // namespace fsig::cpu
