// The SIMT emulator's runtime (libfsig_cuda_emu.so): the subset of the CUDA runtime API that libflashsig
// and the GPU tests call, and the execution of kernels compiled as C++ (cuda_emu.h) — each thread block
// in turn, each CUDA thread a fiber on its own stack, switching only at synchronisation points. Device
// memory is host memory between guard pages; streams run in order at the call; stream capture records
// launches and copies into a graph that cudaGraphLaunch replays. Linked instead of cudart by
// libflashsig_emu and the GPU tests' *_emu executables, so they run unchanged on a machine without a GPU.
// One emulated device: cuda:0, with the shared memory of the smallest compiled target (sm_80: 163 KiB
// per block), so a kernel that only an H100 could launch fails here too; with FSIG_EMU_SM=90 it is an
// sm_90a device instead (227 KiB per block, wgmma and fence.proxy.async), with FSIG_EMU_SM=89 an sm_89
// (L4, L40S, RTX 4090: 99 KiB per block, the compute_80 PTX JIT-compiled).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <unistd.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "cuda_emu.h"
#include "../../native/float_mode.h"

// ---- the driver's current context, per host thread as in CUDA: cuCtxGetCurrent / cuCtxSetCurrent, which
// the library reaches through cudaGetDriverEntryPointByVersion. The runtime makes the device's primary
// context current where the real one does: cudaSetDevice (CUDA 12+), and the first call on a thread
// without a context that needs one (here: allocation, copies, memset, launches, streams,
// synchronisation, function attributes). ----
namespace {
int g_primary_context;  // its address stands for device 0's primary context
thread_local CUcontext t_current_context = nullptr;
void bind_context() {
    if (t_current_context == nullptr) t_current_context = reinterpret_cast<CUcontext>(&g_primary_context);
}
CUresult emu_ctx_get_current(CUcontext* ctx) {
    *ctx = t_current_context;
    return CUDA_SUCCESS;
}
CUresult emu_ctx_set_current(CUcontext ctx) {
    t_current_context = ctx;
    return CUDA_SUCCESS;
}
}  // namespace

namespace fsig::cuda {
// the opt-in dynamic shared memory per block of sm_80, sm_86/sm_89 and sm_90
constexpr size_t kSharedMaxSm80 = 163 * 1024;
constexpr size_t kSharedMaxSm89 = 99 * 1024;
constexpr size_t kSharedMaxSm90 = 227 * 1024;
// the dynamic shared memory of every kernel (native/cuda/launch.h)
alignas(128) unsigned char smem_raw[kSharedMaxSm90 + 4096];
}  // namespace fsig::cuda

// ---- fiber switching (x86-64 System V): the callee-saved registers. Every fiber of a block runs in the
// floating-point mode run_block sets (no kernel changes it, none uses x87), so a switch leaves MXCSR and the
// x87 control word alone (loading both at every switch took ≈ 6 % of an emulated run) ----
extern "C" void fsig_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl fsig_emu_switch
    .hidden fsig_emu_switch
    .type fsig_emu_switch, @function
fsig_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fsig_emu_switch, .-fsig_emu_switch
)");

namespace fsig::emu {
namespace {

[[noreturn]] void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "cuda emulator: ");
    std::vfprintf(stderr, fmt, ap);
    std::fprintf(stderr, "\n");
    va_end(ap);
    std::abort();
}

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpgroup = 128;

// the emulated device's compute capability (80, 89 or 90), read at each use so that a test can switch it
int emulated_sm() {
    const char* sm = std::getenv("FSIG_EMU_SM");
    if (sm != nullptr && std::strcmp(sm, "90") == 0) return 90;
    return sm != nullptr && std::strcmp(sm, "89") == 0 ? 89 : 80;
}
size_t shared_max(int sm) {
    return sm >= 90 ? fsig::cuda::kSharedMaxSm90 : sm == 89 ? fsig::cuda::kSharedMaxSm89 : fsig::cuda::kSharedMaxSm80;
}

enum class Op {
    kNone, kSyncWarp, kShfl, kAny, kAll, kBallot, kLdmatrix, kLdmatrixTrans, kMmaF16, kMmaBf16,
    kWgmmaFence, kWgmmaCommit, kWgmmaWait, kWgmmaMma
};
const char* op_name(Op op) {
    switch (op) {
        case Op::kSyncWarp: return "__syncwarp";
        case Op::kShfl: return "__shfl_xor_sync";
        case Op::kAny: return "__any_sync";
        case Op::kAll: return "__all_sync";
        case Op::kBallot: return "__ballot_sync";
        case Op::kLdmatrix: return "ldmatrix.x4";
        case Op::kLdmatrixTrans: return "ldmatrix.x4.trans";
        case Op::kMmaF16: return "mma.m16n8k16.f16";
        case Op::kMmaBf16: return "mma.m16n8k16.bf16";
        case Op::kWgmmaFence: return "wgmma.fence";
        case Op::kWgmmaCommit: return "wgmma.commit_group";
        case Op::kWgmmaWait: return "wgmma.wait_group";
        case Op::kWgmmaMma: return "wgmma.mma_async";
        default: return "?";
    }
}

struct Copy {  // a pending cp.async
    uint32_t dst;
    const void* src;
    int bytes, src_bytes;
};

// what the last wgmma to finish wrote into one thread's accumulator registers, and how many wgmma.fence
// the thread had issued by then: if the registers differ at the next wgmma and no fence came between,
// the thread wrote them without the fence the ISA requires
struct AccumulatorWrite {
    std::vector<float> values;
    uint64_t fences;
};

struct Thread {
    void* sp = nullptr;
    const void* site = nullptr;  // the call site of the warp collective it waits at
    unsigned char* stack = nullptr;  // kStackBytes above a guard page
    int tid = 0;
    bool done = false;
    // what it waits for: a warp collective's or the block barrier's generation to move on
    const uint64_t* wait_gen = nullptr;
    uint64_t wait_value = 0;
    const char* wait_what = "";
    std::vector<Copy> issued;               // cp.async not yet committed, pending
    std::deque<std::vector<Copy>> committed;  // the committed groups with copies pending, oldest first
    uint64_t wgmma_fences = 0;
    std::map<const float*, AccumulatorWrite> accumulators;  // by the address of d[0][0]
    // the 16-byte shared chunks its landed cp.async wrote since its last fence.proxy.async
    std::vector<uint32_t> unfenced_chunks;
};

// a collective in progress: threads of a warp or warpgroup arrive, the last one computes for all
struct Collective {
    int arrived = 0;
    uint64_t gen = 0;
    Op op = Op::kNone;
    const void* site = nullptr;
};

struct Warp : Collective {
    uint32_t in_u[32][6];
    float in_f[32][4];
    uint32_t out_u[32][4];
    float out_f[32][4];
};

// one wgmma.mma_async of a warpgroup, from its issue until the wgmma.wait_group that retires it
struct WgmmaOp {
    int n = 0;
    bool bf16 = false, a_in_regs = false, trans_a = false, trans_b = false, accumulate = false;
    bool late = false;      // executes at the wait (its accumulators hold the poison until then), not at issue
    bool executed = false;
    uint64_t desc_a = 0, desc_b = 0;
    float* d[kWarpgroup];              // each thread's accumulator registers
    uint32_t a[kWarpgroup][4];         // each thread's A fragment, as at issue
    const uint32_t* a_regs[kWarpgroup];  // ... and where it lives: unchanged until the operation ran
    std::vector<float> c;              // [thread][n / 2]: the accumulator inputs
    bool chained[kWarpgroup];          // c[thread] comes from the in-flight wgmma before it on the same registers
    WgmmaOp* successor[kWarpgroup];    // the in-flight wgmma after it on the same registers: it gets the result
};

struct Warpgroup : Collective {
    // what each thread brings to the collective
    float* d[kWarpgroup];
    uint32_t a[kWarpgroup][4];
    const uint32_t* a_regs[kWarpgroup];
    uint64_t desc_a[kWarpgroup], desc_b[kWarpgroup];
    bool accumulate[kWarpgroup];
    int pending[kWarpgroup];
    std::deque<std::unique_ptr<WgmmaOp>> ops;  // issued and not yet retired, oldest first
    std::deque<size_t> groups;                 // sizes of the committed groups among them, oldest first
};

struct Launch {
    dim3 grid, block;
    size_t smem_bytes = 0;
    uint3 block_idx{};
    std::function<void()> body;
    int threads = 0, live = 0;
    std::vector<Warp> warps;
    std::vector<Warpgroup> warpgroups;  // the block's full warpgroups
    int sm = 80;
    int bar_arrived = 0;
    uint64_t bar_gen = 0;
    bool failed = false;
    // sm_90 only, for the proxy-fence check: per 16-byte shared chunk the thread whose landed cp.async wrote
    // it and has not issued fence.proxy.async since (-1: none), and shared memory as the async proxy may
    // see it (the contents at the last fence.proxy.async of any thread)
    std::vector<int16_t> unfenced_writer;
    std::vector<unsigned char> async_view;
    // the scheduler's round: the threads in a random order, the place of the next one to run, and whether any ran
    std::vector<int> order;
    size_t next = 0;
    bool progress = false;
};

struct Allocation {
    size_t bytes;
    bool device;  // false: page-locked host memory (cudaHostAlloc)
    void* map;
    size_t map_bytes;
};

struct State {
    std::recursive_mutex lock;
    std::vector<Thread> threads;
    void* scheduler_sp = nullptr;
    Thread* current = nullptr;
    Launch* launch = nullptr;
    std::mt19937_64 rng;
    bool shuffle = true;
    cudaError_t sticky = cudaSuccess, last = cudaSuccess;
    int device = 0;
    std::map<uintptr_t, Allocation> allocations;  // by start address
    std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute, per kernel
    uint64_t launches = 0;
    uint64_t wgmma_ops = 0;  // wgmma.mma_async issued (wgmma_operations)
    uint64_t wgmma_launches = 0;  // kernel launches that issued one or more (wgmma_kernel_launches)
    WorkCounters work;
};

State& state() {
    static State* s = [] {
        auto* st = new State;
        const char* seed = std::getenv("FSIG_EMU_SEED");
        const unsigned long long v = seed != nullptr ? std::strtoull(seed, nullptr, 10) : 1;
        st->rng.seed(v);
        st->shuffle = v != 0;
        return st;
    }();
    return *s;
}

Thread& me() { return *state().current; }
Launch& launch_of_me() { return *state().launch; }

void fail(const char* fmt, ...) {
    State& s = state();
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const Launch* l = s.launch;
    if (l != nullptr && s.current != nullptr)
        std::fprintf(stderr, "cuda emulator: launch %llu, block (%u, %u, %u), thread %d: %s\n",
                     (unsigned long long)s.launches, l->block_idx.x, l->block_idx.y, l->block_idx.z, s.current->tid,
                     msg);
    else
        std::fprintf(stderr, "cuda emulator: %s\n", msg);
    if (s.launch != nullptr) s.launch->failed = true;
    s.sticky = cudaErrorLaunchFailure;
}

bool runnable(const Thread& t) { return !t.done && (t.wait_gen == nullptr || *t.wait_gen != t.wait_value); }

// The round's next thread that may run (nullptr: the round is over, or the launch failed)
Thread* next_in_round(State& s, Launch& l) {
    while (!l.failed && l.next < l.order.size()) {
        Thread& t = s.threads[size_t(l.order[l.next++])];
        if (!runnable(t)) continue;
        t.wait_gen = nullptr;
        l.progress = true;
        return &t;
    }
    return nullptr;
}

// The running fiber (its stack pointer saved in *save_sp) hands over to the round's next thread itself, and to the
// scheduler only at the round's end: one switch per thread and collective, not two (a fifth of an emulated run)
void switch_onward(void** save_sp) {
    State& s = state();
    Thread* next = next_in_round(s, *s.launch);
    s.current = next;
    fsig_emu_switch(save_sp, next != nullptr ? next->sp : s.scheduler_sp);
}

// on to the next thread until *gen moves past its current value
void block_on(const uint64_t* gen, const char* what) {
    Thread& t = me();
    t.wait_gen = gen;
    t.wait_value = *gen;
    t.wait_what = what;
    switch_onward(&t.sp);
}

[[noreturn]] void fiber_entry() {
    State& s = state();
    Launch& l = *s.launch;
    l.body();
    Thread& t = me();
    if (!l.failed && size_t(t.tid / kWarpgroup) < l.warpgroups.size() &&
        !l.warpgroups[size_t(t.tid / kWarpgroup)].ops.empty())
        fail("the thread exits with wgmma.mma_async operations its warpgroup never retired (a missing "
             "wgmma.commit_group or wgmma.wait_group)");
    t.done = true;
    --l.live;
    if (l.bar_arrived > 0 && l.bar_arrived == l.live) l.bar_arrived = 0, ++l.bar_gen;
    switch_onward(&t.sp);
    die("a finished thread was resumed");
}

void prepare_fiber(Thread& t) {
    if (t.stack == nullptr) {
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) die("no memory for a fiber stack");
        mprotect(m, page, PROT_NONE);  // overflow faults instead of corrupting a neighbour
        t.stack = static_cast<unsigned char*>(m) + page;
    }
    // the first switch pops 6 zero registers, then returns into fiber_entry with the stack aligned as
    // after a call
    auto* top = reinterpret_cast<uint64_t*>(t.stack + kStackBytes);
    top[-1] = 0;
    top[-2] = reinterpret_cast<uint64_t>(&fiber_entry);
    for (int i = 3; i <= 8; ++i) top[-i] = 0;
    t.sp = top - 8;
    t.done = false;
    t.wait_gen = nullptr;
    t.issued.clear(), t.committed.clear();
    t.wgmma_fences = 0;
    t.accumulators.clear();
    t.unfenced_chunks.clear();
}

// a landing copy writes through the generic proxy: on sm_90 its chunks wait for the thread's fence.proxy.async
void land(const Copy& c) {
    unsigned char* dst = fsig::cuda::smem_raw + c.dst;
    if (c.src_bytes > 0) std::memcpy(dst, c.src, size_t(c.src_bytes));
    if (c.src_bytes < c.bytes) std::memset(dst + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
    Launch& l = launch_of_me();
    if (l.sm < 90) return;
    Thread& t = me();
    for (uint32_t chunk = c.dst / 16; chunk <= (c.dst + uint32_t(c.bytes) - 1) / 16; ++chunk) {
        l.unfenced_writer[chunk] = int16_t(t.tid);
        t.unfenced_chunks.push_back(chunk);
    }
}

// Shared memory from this byte on is known to hold the poison: after a block that passed the check at its
// end, the bytes it could not write; after a failed one, none
size_t poisoned_from = sizeof fsig::cuda::smem_raw;

void run_block(Launch& l) {
    State& s = state();
    const IeeeFloatMode float_mode;  // a GPU thread's: round to nearest, no flush to zero
    std::memset(fsig::cuda::smem_raw, 0xFF, poisoned_from);
    l.live = l.threads;
    l.bar_arrived = 0;
    for (Warp& w : l.warps) w.arrived = 0, w.op = Op::kNone;
    for (Warpgroup& g : l.warpgroups) g.arrived = 0, g.op = Op::kNone, g.ops.clear(), g.groups.clear();
    if (l.sm >= 90) {
        l.unfenced_writer.assign(sizeof fsig::cuda::smem_raw / 16, -1);
        l.async_view.assign(fsig::cuda::smem_raw, fsig::cuda::smem_raw + sizeof fsig::cuda::smem_raw);
    }
    l.order.resize(size_t(l.threads));
    for (int i = 0; i < l.threads; ++i) {
        s.threads[size_t(i)].tid = i;
        prepare_fiber(s.threads[size_t(i)]);
        l.order[size_t(i)] = i;
    }
    while (l.live > 0 && !l.failed) {
        // each runnable thread once, in a random order, until it waits or ends (switch_onward)
        if (s.shuffle) std::shuffle(l.order.begin(), l.order.end(), s.rng);
        l.next = 0, l.progress = false;
        if (Thread* first = next_in_round(s, l)) {
            s.current = first;
            fsig_emu_switch(&s.scheduler_sp, first->sp);
            s.current = nullptr;
        }
        if (!l.progress && !l.failed) {
            for (int i = 0; i < l.threads; ++i) {
                const Thread& t = s.threads[size_t(i)];
                if (!t.done) {
                    std::fprintf(stderr, "cuda emulator: deadlock in block (%u, %u, %u): thread %d waits at %s "
                                 "(%d of %d live threads at the barrier)\n",
                                 l.block_idx.x, l.block_idx.y, l.block_idx.z, i, t.wait_what, l.bar_arrived, l.live);
                    break;
                }
            }
            l.failed = true;
            s.sticky = cudaErrorLaunchFailure;
        }
    }
    // past the launch's size every byte is still the poison: the first is, and each equals the next
    const unsigned char* past = fsig::cuda::smem_raw + l.smem_bytes;
    const size_t past_bytes = sizeof fsig::cuda::smem_raw - l.smem_bytes;
    if (past[0] != 0xFF || std::memcmp(past, past + 1, past_bytes - 1) != 0) {
        const size_t b = size_t(std::find_if(past, past + past_bytes, [](unsigned char c) { return c != 0xFF; }) -
                                fsig::cuda::smem_raw);
        fail("shared memory byte %zu was written, past the launch's %zu bytes", b, l.smem_bytes);
        poisoned_from = sizeof fsig::cuda::smem_raw;
        return;
    }
    poisoned_from = l.smem_bytes;
}

// A collective of the `width` threads of a warp (32) or warpgroup (128): every thread stores its inputs,
// the last to arrive computes every thread's outputs, the others wait until it has.
// site: the kernel's call site, so that threads at two different instructions of one kind are caught too.
template <class Compute>  // (a template: one collective per mma, no std::function on that path)
void gather(Collective& c, int width, Op op, const void* site, const Compute& compute) {
    Launch& l = launch_of_me();
    Thread& t = me();
    const char* unit = width == 32 ? "warp" : "warpgroup";
    if (c.arrived == 0) {
        c.op = op;
        c.site = site;
        for (int i = 0; i < width; ++i) {
            const int tid = t.tid / width * width + i;
            if (tid >= l.threads || state().threads[size_t(tid)].done)
                fail("%s in a %s whose %s %d has exited or does not exist", op_name(op), unit,
                     width == 32 ? "lane" : "thread", i);
        }
    } else if (c.op != op || c.site != site) {
        fail("divergent %s: %s %d is at %s (%p) while the others are at %s (%p)", unit,
             width == 32 ? "lane" : "thread", t.tid % width, op_name(op), site, op_name(c.op), c.site);
    }
    if (++c.arrived == width) {
        compute();
        c.arrived = 0;
        ++c.gen;
        return;
    }
    block_on(&c.gen, op_name(op));
}

template <class Compute>
void arrive(Op op, unsigned mask, const void* site, const Compute& compute) {
    if (mask != kFullMask) fail("%s with mask %#x: the kernels use full warps only", op_name(op), mask);
    Warp& w = launch_of_me().warps[size_t(me().tid / 32)];
    gather(w, 32, op, site, [&] { compute(w); });
}

float half_bits_to_float(uint32_t h, bool bf16) {
    if (bf16) {
        const uint32_t u = h << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    // F16C (x86-64-v3): exact for every number; a NaN keeps its sign and payload, quieted (__half2float's host
    // version returned one canonical NaN; no test compares NaN bits)
    return _cvtsh_ss(static_cast<unsigned short>(h));
}

bool in_shared(uint32_t addr, uint32_t bytes) {
    const Launch& l = launch_of_me();
    return uint64_t(addr) + bytes <= l.smem_bytes;
}

// __any_sync, __all_sync and __ballot_sync: every lane gets the warp's predicates as a bit mask (lane i: bit i). The
// call site is the public function's caller, so each collective keeps its own site for the checks.
uint32_t vote(Op op, unsigned mask, bool predicate, const void* site) {
    Launch& l = launch_of_me();
    const int lane = me().tid % 32;
    Warp& w = l.warps[size_t(me().tid / 32)];
    w.in_u[lane][0] = predicate ? 1 : 0;
    arrive(op, mask, site, [](Warp& x) {
        uint32_t r = 0;
        for (int i = 0; i < 32; ++i) r |= x.in_u[i][0] << i;
        for (int i = 0; i < 32; ++i) x.out_u[i][0] = r;
    });
    return w.out_u[lane][0];
}

}  // namespace

// ---- device side (cuda_emu.h) ----

uint3 thread_idx() { return uint3{unsigned(me().tid), 0, 0}; }
uint3 block_idx() { return launch_of_me().block_idx; }
dim3 block_dim() { return launch_of_me().block; }
dim3 grid_dim() { return launch_of_me().grid; }

void sync_threads() {
    Launch& l = launch_of_me();
    if (++l.bar_arrived == l.live) {
        l.bar_arrived = 0;
        ++l.bar_gen;
        return;
    }
    block_on(&l.bar_gen, "__syncthreads");
}

void sync_warp(unsigned mask) {
    arrive(Op::kSyncWarp, mask, __builtin_return_address(0), [](Warp&) {});
}

float shfl_xor(unsigned mask, float value, int lane_mask) {
    Launch& l = launch_of_me();
    const int lane = me().tid % 32;
    Warp& w = l.warps[size_t(me().tid / 32)];
    w.in_f[lane][0] = value;
    w.in_u[lane][0] = uint32_t(lane_mask);
    arrive(Op::kShfl, mask, __builtin_return_address(0), [](Warp& x) {
        for (int i = 0; i < 32; ++i) {
            const int from = i ^ int(x.in_u[i][0] & 31);
            x.out_f[i][0] = x.in_f[from][0];
        }
    });
    return w.out_f[lane][0];
}

bool any(unsigned mask, bool predicate) { return vote(Op::kAny, mask, predicate, __builtin_return_address(0)) != 0; }

bool all(unsigned mask, bool predicate) {
    return (vote(Op::kAll, mask, predicate, __builtin_return_address(0)) & mask) == mask;
}

unsigned ballot(unsigned mask, bool predicate) {
    return vote(Op::kBallot, mask, predicate, __builtin_return_address(0));
}

uint32_t shared_offset(const void* p) {
    const auto* c = static_cast<const unsigned char*>(p);
    if (c < fsig::cuda::smem_raw || c > fsig::cuda::smem_raw + shared_max(launch_of_me().sm)) {
        fail("__cvta_generic_to_shared of %p, which is not shared memory", p);
        return 0;
    }
    return uint32_t(c - fsig::cuda::smem_raw);
}

// The shared-memory wavefronts of one ldmatrix .x4 (emu_counters.h): per 8 × 8 matrix, the most distinct
// 16-byte rows in one bank quad (the same address twice is a broadcast, not a conflict)
void count_ldmatrix(const Warp& x) {
    WorkCounters& work = state().work;
    ++work.ldmatrix_ops;
    for (int m = 0; m < 4; ++m) {
        uint32_t rows[8];
        int distinct = 0;
        for (int r = 0; r < 8; ++r) {
            const uint32_t a = x.in_u[8 * m + r][0];
            if (std::find(rows, rows + distinct, a) == rows + distinct) rows[distinct++] = a;
        }
        int in_quad[8] = {};
        int fullest = 0;
        for (int i = 0; i < distinct; ++i) fullest = std::max(fullest, ++in_quad[rows[i] / 16 % 8]);
        work.ldmatrix_wavefronts += uint64_t(fullest);
    }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (PTX ISA): lanes 8m..8m+7 hold the addresses of
// rows 0..7 of 8x8 matrix m (16-byte aligned); register m of lane l gets, without .trans, row l/4,
// elements 2(l%4) and 2(l%4)+1; with .trans, element l/4 of rows 2(l%4) and 2(l%4)+1 (lower half first).
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans) {
    Launch& l = launch_of_me();
    const int lane = me().tid % 32;
    Warp& w = l.warps[size_t(me().tid / 32)];
    if (addr % 16 != 0 || !in_shared(addr, 16)) {
        fail("ldmatrix row address %u is misaligned or outside the %zu bytes of shared memory", addr, l.smem_bytes);
        addr = 0;
    }
    w.in_u[lane][0] = addr;
    arrive(trans ? Op::kLdmatrixTrans : Op::kLdmatrix, kFullMask, __builtin_return_address(0), [trans](Warp& x) {
        count_ldmatrix(x);
        uint16_t rows[4][8][8];  // [matrix][row][element]
        for (int m = 0; m < 4; ++m)
            for (int row = 0; row < 8; ++row) std::memcpy(rows[m][row], fsig::cuda::smem_raw + x.in_u[8 * m + row][0], 16);
        for (int i = 0; i < 32; ++i)
            for (int m = 0; m < 4; ++m) {
                uint32_t lo, hi;
                if (!trans) lo = rows[m][i / 4][2 * (i % 4)], hi = rows[m][i / 4][2 * (i % 4) + 1];
                else lo = rows[m][2 * (i % 4)][i / 4], hi = rows[m][2 * (i % 4) + 1][i / 4];
                x.out_u[i][m] = lo | hi << 16;
            }
    });
    for (int m = 0; m < 4; ++m) r[m] = w.out_u[lane][m];
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16} (PTX ISA, g = lane/4, t = lane%4): A 16x16 in
// a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..); B 16x8 in b0 = (k 2t..2t+1,
// n g), b1 = (k 2t+8..2t+9, n g); C/D c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1). The products are
// exact in fp32 and the sum is taken in double, then rounded once.
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16) {
    Launch& l = launch_of_me();
    const int lane = me().tid % 32;
    Warp& w = l.warps[size_t(me().tid / 32)];
    for (int i = 0; i < 4; ++i) w.in_u[lane][i] = a[i], w.in_f[lane][i] = d[i];
    w.in_u[lane][4] = b0, w.in_u[lane][5] = b1;
    arrive(bf16 ? Op::kMmaBf16 : Op::kMmaF16, kFullMask, __builtin_return_address(0), [bf16](Warp& x) {
        state().work.tensor_flops += 2 * 16 * 8 * 16;
        double A[16][16], B[16][8], C[16][8];
        auto lo = [&](uint32_t u) { return double(half_bits_to_float(u & 0xFFFF, bf16)); };
        auto hi = [&](uint32_t u) { return double(half_bits_to_float(u >> 16, bf16)); };
        for (int i = 0; i < 32; ++i) {
            const int g = i / 4, t = i % 4;
            const uint32_t* u = x.in_u[i];
            A[g][2 * t] = lo(u[0]), A[g][2 * t + 1] = hi(u[0]);
            A[g + 8][2 * t] = lo(u[1]), A[g + 8][2 * t + 1] = hi(u[1]);
            A[g][2 * t + 8] = lo(u[2]), A[g][2 * t + 9] = hi(u[2]);
            A[g + 8][2 * t + 8] = lo(u[3]), A[g + 8][2 * t + 9] = hi(u[3]);
            B[2 * t][g] = lo(u[4]), B[2 * t + 1][g] = hi(u[4]);
            B[2 * t + 8][g] = lo(u[5]), B[2 * t + 9][g] = hi(u[5]);
            C[g][2 * t] = x.in_f[i][0], C[g][2 * t + 1] = x.in_f[i][1];
            C[g + 8][2 * t] = x.in_f[i][2], C[g + 8][2 * t + 1] = x.in_f[i][3];
        }
        // a row's 8 sums at once, each adding its products in k order
        // (in two 4-wide vector values, so that the 8 sums stay in registers)
        typedef double Half __attribute__((vector_size(4 * sizeof(double))));
        auto half = [](const double* p) {
            Half h;
            std::memcpy(&h, p, sizeof h);
            return h;
        };
        for (int row = 0; row < 16; ++row) {
            Half lo = half(C[row]), hi = half(C[row] + 4);
            for (int k = 0; k < 16; ++k) lo += A[row][k] * half(B[k]), hi += A[row][k] * half(B[k] + 4);
            std::memcpy(C[row], &lo, sizeof lo), std::memcpy(C[row] + 4, &hi, sizeof hi);
        }
        for (int i = 0; i < 32; ++i) {
            const int g = i / 4, t = i % 4;
            x.out_f[i][0] = float(C[g][2 * t]), x.out_f[i][1] = float(C[g][2 * t + 1]);
            x.out_f[i][2] = float(C[g + 8][2 * t]), x.out_f[i][3] = float(C[g + 8][2 * t + 1]);
        }
    });
    for (int i = 0; i < 4; ++i) d[i] = w.out_f[lane][i];
}

bool readable(const void* p, size_t bytes);

void cp_async(uint32_t dst, const void* src, int bytes, int src_bytes) {
    if (dst % uint32_t(bytes) != 0 || !in_shared(dst, uint32_t(bytes))) {
        fail("cp.async to shared address %u (%d bytes): misaligned or outside the launch's %zu bytes", dst, bytes,
             launch_of_me().smem_bytes);
        return;
    }
    if (src_bytes > 0 && (reinterpret_cast<uintptr_t>(src) % uintptr_t(bytes) != 0 || !readable(src, size_t(src_bytes)))) {
        fail("cp.async reads %d bytes at %p: misaligned or outside every allocation", src_bytes, src);
        return;
    }
    const Copy c{dst, src, bytes, src_bytes};
    State& s = state();
    s.work.cp_async_bytes += uint64_t(src_bytes);
    // the copy lands now or once waited for (either is what the hardware may do)
    if (s.shuffle && (s.rng() & 1)) land(c);
    else me().issued.push_back(c);
}

// cp.async.commit_group: the copies issued since the last commit form a group (it may be empty)
void cp_async_commit() {
    Thread& t = me();
    t.committed.push_back(std::move(t.issued));
    t.issued.clear();
}

// cp.async.wait_group N: every committed group but the newest N lands; copies issued after the last
// commit stay pending
void cp_async_wait(int pending) {
    Thread& t = me();
    while (t.committed.size() > size_t(pending)) {
        for (const Copy& c : t.committed.front()) land(c);
        t.committed.pop_front();
    }
}

namespace {
// ---- sm_90a: warpgroup MMA (PTX ISA 9.7.15, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate") ----
//
// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}: D[64 x N] = (scale-d ? D : 0) + A[64 x 16] B[16 x N],
// issued by a warpgroup (4 consecutive warps, threads 128g..128g+127), all of which execute the same
// instruction. Register fragments (9.7.15.5.1.1.1, figures 148 and 149; the same as CUTLASS's
// GMMA::ALayout_64x16 / CLayout_64xN), for thread t of the warpgroup, w = t / 32, g = (t % 32) / 4,
// q = t % 4: warp w owns rows 16w..16w+15, which it holds as mma.m16n8k16 holds its 16 rows —
//   A (4 .f16x2 registers, elements a0..a7, low half first): a_i at row 16w + g + 8((i / 2) % 2),
//     column 2q + i % 2 + 8(i / 4);
//   D (N/2 .f32 registers d0..): d_i at row 16w + g + 8((i / 2) % 2), column 8(i / 4) + 2q + i % 2.
// Shared-memory operands come as 64-bit matrix descriptors (9.7.15.5.1.2.2): bits [0,14) start address,
// [16,30) leading dimension byte offset (LBO), [32,46) stride dimension byte offset (SBO), each a byte
// value >> 4; [49,52) matrix base offset; [62,64) layout type (0 none, 1 128B, 2 64B, 3 32B swizzle).
// imm-trans 0 is K-major, 1 MN-major (M for A, N for B; 9.7.15.5.1.2). Only the 128-byte swizzle is
// emulated, whose canonical layouts (9.7.15.5.1.2.1.3, in 16-bit elements, T = 8; offsets in bytes) are
//   K-major : ((8,m),(T,2k)):((8T,SBO),(1,T)) — row r of the MN dimension at (r / 8) SBO + (r % 8) 128,
//             its 16 K elements contiguous (32 bytes); LBO is not used;
//   MN-major: ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)) — 64 MN elements contiguous (128 bytes), the next 64
//             at + LBO; K row k at (k / 8) SBO + (k % 8) 128;
// then Swizzle<3,4,3> on the byte address: bits [4,7) ^= bits [7,10), a pattern of 8 rows of 128 bytes
// that with base offset 0 starts at a 1024-byte boundary. So the next k16 step of a K-major operand is
// the start address + 32 bytes (within the 128-byte row), of an MN-major one + 2 SBO.
// The products are exact and the sum is taken in double, then rounded once (as mma_m16n8k16 does).
//
// Asynchrony (9.7.15.4, 9.7.15.7): mma_async only issues; wgmma.commit_group closes the warpgroup's
// uncommitted operations into a group, wgmma.wait_group N returns once at most N groups are pending.
// Here an operation executes at its issue or at the wait that retires it (at random per operation; with
// FSIG_EMU_SEED=0 always at the wait), reading shared memory then. Until it has executed its accumulators
// hold a NaN poison, and if they no longer do when it executes the launch fails; operations on the same
// accumulators chain without a fence (the ISA orders them). The ISA requires wgmma.fence before the
// first mma_async and between a thread's access to the registers and the mma_async using them: checked
// are the first, and accumulators the thread changed since a wgmma last wrote them with no fence since
// that write (a read of the registers is not detected). A fragments are taken at issue and compared with
// their registers when the operation executes late: rewritten (or gone out of scope) in flight, it fails —
// stricter than the ISA, which speaks of PTX registers, where a C++ array out of scope may become new ones.
// wgmma reads shared memory through the async proxy: a 16-byte chunk a landed cp.async wrote must have
// seen its writer's fence.proxy.async, and any other chunk the same contents as at the last
// fence.proxy.async of any thread (plain stores are caught by content, not by writer).

constexpr uint32_t kAccumulatorPoison = 0x7FC0FEEDu;  // a quiet NaN that no arithmetic here produces

bool is_poison(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u == kAccumulatorPoison;
}

// a shared-memory operand, from its matrix descriptor
struct SmemMatrix {
    uint32_t start = 0, lbo = 0, sbo = 0;
    bool mn_major = false;
    // the shared address of element (i, k): i along M or N, k along K (0..15)
    uint32_t address(int i, int k) const {
        const uint32_t linear = mn_major ? start + uint32_t(i / 64) * lbo + uint32_t(k / 8) * sbo +
                                               uint32_t(k % 8) * 128 + uint32_t(i % 64) * 2
                                         : start + uint32_t(i / 8) * sbo + uint32_t(i % 8) * 128 + uint32_t(k) * 2;
        return linear ^ (((linear >> 7) & 7) << 4);
    }
};

// decodes and checks the descriptor of a `rows` x 16 operand (rows along M or N); false after a failure
bool decode(uint64_t desc, bool mn_major, int rows, const char* name, SmemMatrix* m) {
    const Launch& l = launch_of_me();
    const int layout = int(desc >> 62), base = int((desc >> 49) & 7);
    if (layout != 1) {
        fail("wgmma %s descriptor %#llx: layout type %d (%s) is not emulated, only the 128-byte swizzle (1)", name,
             (unsigned long long)desc, layout,
             layout == 0 ? "no swizzle" : layout == 2 ? "64B swizzle" : "32B swizzle");
        return false;
    }
    if (base != 0) {
        fail("wgmma %s descriptor %#llx: a nonzero matrix base offset (%d) is not emulated", name,
             (unsigned long long)desc, base);
        return false;
    }
    const uint64_t fields = 0x3FFFull | 0x3FFFull << 16 | 0x3FFFull << 32 | 7ull << 49 | 3ull << 62;
    const uint64_t reserved = desc & ~fields;
    if (reserved != 0) {
        fail("wgmma %s descriptor %#llx sets bits outside its fields (%#llx)", name, (unsigned long long)desc,
             (unsigned long long)reserved);
        return false;
    }
    m->start = uint32_t(desc & 0x3FFF) << 4;
    m->lbo = uint32_t((desc >> 16) & 0x3FFF) << 4;
    m->sbo = uint32_t((desc >> 32) & 0x3FFF) << 4;
    m->mn_major = mn_major;
    // with base offset 0 every 8 x 128-byte swizzle pattern the operand uses starts at a 1024-byte boundary
    // (else the ISA asks for base offset = (pattern start >> 7) & 7): the start lies in a pattern's first
    // row, the used strides between patterns are multiples of 1024, and no row's slice crosses 128 bytes
    const uint32_t in_row = m->start % 128, pattern_row = (m->start >> 7) & 7;
    char why[160] = "";
    if (pattern_row != 0)
        std::snprintf(why, sizeof why, "it starts in row %u of a 1024-byte swizzle pattern (base offset 0 needs row 0)",
                      pattern_row);
    else if (!mn_major && in_row + 32 > 128)
        std::snprintf(why, sizeof why, "its 32-byte K slice at byte %u crosses the 128-byte swizzle row", in_row);
    else if (mn_major && in_row + 2 * uint32_t(std::min(rows, 64)) > 128)
        std::snprintf(why, sizeof why, "its MN run at byte %u crosses the 128-byte swizzle row", in_row);
    else if ((mn_major || rows > 8) && m->sbo % 1024 != 0)
        std::snprintf(why, sizeof why, "SBO is not a multiple of the 1024-byte swizzle pattern");
    else if (mn_major && rows > 64 && m->lbo % 1024 != 0)
        std::snprintf(why, sizeof why, "LBO is not a multiple of the 1024-byte swizzle pattern");
    if (why[0] != 0) {
        fail("wgmma %s descriptor %#llx (%s-major, start %u, LBO %u, SBO %u): %s", name, (unsigned long long)desc,
             mn_major ? "MN" : "K", m->start, m->lbo, m->sbo, why);
        return false;
    }
    for (int i = 0; i < rows; ++i)
        for (int k = 0; k < 16; ++k)
            if (uint64_t(m->address(i, k)) + 2 > l.smem_bytes) {
                fail("wgmma %s element (%d, %d) at shared address %u lies outside the launch's %zu bytes", name, i, k,
                     m->address(i, k), l.smem_bytes);
                return false;
            }
    return true;
}

// the async proxy may read this chunk: no unfenced landed cp.async, no change since the last proxy fence
bool async_visible(uint32_t addr) {
    const Launch& l = launch_of_me();
    const uint32_t chunk = addr / 16;
    const int writer = l.unfenced_writer[chunk];
    if (writer < 0 && std::memcmp(fsig::cuda::smem_raw + chunk * 16, l.async_view.data() + chunk * 16, 16) == 0)
        return true;
    fail("wgmma reads shared memory at %u, written through the generic proxy (%s) and not yet made visible to "
         "the async proxy: a missing fence.proxy.async, or an operand overwritten before the wgmma.wait_group "
         "that retires its wgmma", addr,
         writer >= 0 ? "a cp.async of a thread that has not issued fence.proxy.async since" : "a store");
    return false;
}

// reads an operand's 16-bit elements into x[i][k]; false after a failure
bool read_operand(const SmemMatrix& m, int rows, bool bf16, double* x) {
    for (int i = 0; i < rows; ++i)
        for (int k = 0; k < 16; ++k) {
            const uint32_t addr = m.address(i, k);
            if (!async_visible(addr)) return false;
            uint16_t h;
            std::memcpy(&h, fsig::cuda::smem_raw + addr, 2);
            x[i * 16 + k] = double(half_bits_to_float(h, bf16));
        }
    return true;
}

// executes one wgmma of warpgroup `wg` (its first thread: first); false after a failure
bool execute(WgmmaOp& op, int first) {
    State& s = state();
    const int n = op.n, regs = n / 2;
    std::vector<double> a(64 * 16), b(size_t(n) * 16);  // a[m][k], b[n][k]
    SmemMatrix ma, mb;
    if (!decode(op.desc_b, op.trans_b, n, "B", &mb) || !read_operand(mb, n, op.bf16, b.data())) return false;
    if (op.a_in_regs) {
        for (int t = 0; t < kWarpgroup; ++t) {
            const int w = t / 32, g = t % 32 / 4, q = t % 4;
            for (int i = 0; i < 8; ++i) {
                const uint32_t u = op.a[t][i / 2];
                a[size_t(16 * w + g + 8 * (i / 2 % 2)) * 16 + size_t(2 * q + i % 2 + 8 * (i / 4))] =
                    double(half_bits_to_float(i % 2 ? u >> 16 : u & 0xFFFF, op.bf16));
            }
        }
    } else if (!decode(op.desc_a, op.trans_a, 64, "A", &ma) || !read_operand(ma, 64, op.bf16, a.data())) {
        return false;
    }
    // A from registers is read while in flight too: the thread must leave them as they were at issue
    if (op.late && op.a_in_regs)
        for (int t = 0; t < kWarpgroup; ++t)
            if (std::memcmp(op.a_regs[t], op.a[t], sizeof op.a[t]) != 0) {
                fail("A-fragment registers changed (or their array went out of scope) while a wgmma was in flight: "
                     "thread %d of warpgroup %d", t, first / kWarpgroup);
                return false;
            }
    std::vector<float> out(static_cast<size_t>(regs));
    for (int t = 0; t < kWarpgroup; ++t) {
        const int w = t / 32, g = t % 32 / 4, q = t % 4;
        float* d = op.d[t];
        if (op.late || op.chained[t])
            for (int i = 0; i < regs; ++i)
                if (!is_poison(d[i])) {
                    fail("accumulator registers changed while a wgmma was in flight: thread %d of warpgroup %d, "
                         "d%d = %g", t, first / kWarpgroup, i, double(d[i]));
                    return false;
                }
        for (int i = 0; i < regs; ++i) {
            const int row = 16 * w + g + 8 * (i / 2 % 2), col = 8 * (i / 4) + 2 * q + i % 2;
            double acc = op.accumulate ? double(op.c[size_t(t * regs + i)]) : 0.0;
            for (int k = 0; k < 16; ++k) acc += a[size_t(row * 16 + k)] * b[size_t(col * 16 + k)];
            out[size_t(i)] = float(acc);
        }
        if (WgmmaOp* next = op.successor[t]) {
            std::copy(out.begin(), out.end(), next->c.begin() + t * regs);
        } else {
            std::copy(out.begin(), out.end(), d);
            Thread& th = s.threads[size_t(first + t)];
            th.accumulators[d] = AccumulatorWrite{out, th.wgmma_fences};
        }
    }
    op.executed = true;
    return true;
}

// executes the warpgroup's operations up to index last, in issue order (always a schedule the hardware
// may choose: each runs between its issue and its wait)
bool execute_through(Warpgroup& wg, size_t last, int first) {
    for (size_t i = 0; i <= last && i < wg.ops.size(); ++i)
        if (!wg.ops[i]->executed && !execute(*wg.ops[i], first)) return false;
    return true;
}

// the warpgroup of the running thread, after the checks every wgmma instruction makes; null after a failure
Warpgroup* warpgroup_of_me(Op op) {
    Launch& l = launch_of_me();
    if (l.failed) return nullptr;  // reported already; the thread only runs on to its next switch
    if (l.sm < 90) {
        fail("%s: wgmma needs sm_90a, and the emulated device is sm_80 (FSIG_EMU_SM=90 emulates an sm_90a one)",
             op_name(op));
        return nullptr;
    }
    if (l.threads % kWarpgroup != 0) {
        fail("%s in a block of %d threads: warpgroups need a multiple of %d", op_name(op), l.threads, kWarpgroup);
        return nullptr;
    }
    return &l.warpgroups[size_t(me().tid / kWarpgroup)];
}

}  // namespace

void wgmma_fence() {
    Warpgroup* wg = warpgroup_of_me(Op::kWgmmaFence);
    if (wg == nullptr) return;
    ++me().wgmma_fences;
    gather(*wg, kWarpgroup, Op::kWgmmaFence, __builtin_return_address(0), [] {});
}

void wgmma_commit() {
    Warpgroup* wg = warpgroup_of_me(Op::kWgmmaCommit);
    if (wg == nullptr) return;
    gather(*wg, kWarpgroup, Op::kWgmmaCommit, __builtin_return_address(0), [wg] {
        size_t committed = 0;
        for (size_t g : wg->groups) committed += g;
        wg->groups.push_back(wg->ops.size() - committed);  // may be empty, as the ISA allows
    });
}

uint64_t wgmma_operations() { return state().wgmma_ops; }
uint64_t wgmma_kernel_launches() { return state().wgmma_launches; }
WorkCounters work_counters() { return state().work; }

void wgmma_wait(int pending) {
    Warpgroup* wg = warpgroup_of_me(Op::kWgmmaWait);
    if (wg == nullptr) return;
    const int first = me().tid / kWarpgroup * kWarpgroup;
    wg->pending[me().tid % kWarpgroup] = pending;
    gather(*wg, kWarpgroup, Op::kWgmmaWait, __builtin_return_address(0), [wg, first] {
        const int keep = wg->pending[0];
        for (int t = 1; t < kWarpgroup; ++t)
            if (wg->pending[t] != keep) {
                fail("wgmma.wait_group with different counts in one warpgroup (%d, %d)", keep, wg->pending[t]);
                return;
            }
        while (wg->groups.size() > size_t(keep)) {
            const size_t retire = wg->groups.front();
            if (retire > 0 && !execute_through(*wg, retire - 1, first)) return;
            for (size_t i = 0; i < retire; ++i) wg->ops.pop_front();
            wg->groups.pop_front();
        }
    });
}

void wgmma_mma(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool trans_b, bool bf16,
               bool accumulate) {
    Warpgroup* wg = warpgroup_of_me(Op::kWgmmaMma);
    if (wg == nullptr) return;
    Thread& me_thread = me();
    if (me_thread.wgmma_fences == 0) {
        fail("wgmma.mma_async before the thread's first wgmma.fence (the ISA requires one before the first)");
        return;
    }
    const int t = me_thread.tid % kWarpgroup, first = me_thread.tid - t;
    wg->d[t] = d;
    if (a_regs != nullptr) std::copy(a_regs, a_regs + 4, wg->a[t]);
    wg->a_regs[t] = a_regs;
    wg->desc_a[t] = desc_a, wg->desc_b[t] = desc_b, wg->accumulate[t] = accumulate;
    // the kind (N, types, A's source, majorness) is the call site's: the site check covers it
    gather(*wg, kWarpgroup, Op::kWgmmaMma, __builtin_return_address(0),
           [wg, first, n, a_in_regs = a_regs != nullptr, trans_b, bf16] {
        State& s = state();
        const int regs = n / 2;
        for (int i = 1; i < kWarpgroup; ++i)
            if ((!a_in_regs && wg->desc_a[i] != wg->desc_a[0]) || wg->desc_b[i] != wg->desc_b[0] ||
                wg->accumulate[i] != wg->accumulate[0]) {
                fail("wgmma.mma_async with different descriptors or scale-d in one warpgroup: thread %d has A %#llx, "
                     "B %#llx, scale-d %d; thread 0 A %#llx, B %#llx, scale-d %d", i, (unsigned long long)wg->desc_a[i],
                     (unsigned long long)wg->desc_b[i], int(wg->accumulate[i]), (unsigned long long)wg->desc_a[0],
                     (unsigned long long)wg->desc_b[0], int(wg->accumulate[0]));
                return;
            }
        SmemMatrix check;
        if (!a_in_regs && !decode(wg->desc_a[0], false, 64, "A", &check)) return;
        if (!decode(wg->desc_b[0], trans_b, n, "B", &check)) return;
        auto op = std::make_unique<WgmmaOp>();
        op->n = n, op->bf16 = bf16, op->a_in_regs = a_in_regs, op->trans_a = false, op->trans_b = trans_b;
        op->accumulate = wg->accumulate[0];
        op->desc_a = a_in_regs ? 0 : wg->desc_a[0], op->desc_b = wg->desc_b[0];
        op->c.assign(size_t(kWarpgroup * regs), 0.f);
        for (int i = 0; i < kWarpgroup; ++i) {
            float* acc = wg->d[i];
            op->d[i] = acc;
            std::copy(wg->a[i], wg->a[i] + 4, op->a[i]);
            op->a_regs[i] = wg->a_regs[i];
            op->chained[i] = false;
            op->successor[i] = nullptr;
            // the newest operation in flight on these registers, if any
            WgmmaOp* before = nullptr;
            for (auto it = wg->ops.rbegin(); it != wg->ops.rend() && before == nullptr; ++it) {
                WgmmaOp& o = **it;
                if (o.d[i] < acc + regs && acc < o.d[i] + o.n / 2) before = &o;
            }
            if (before != nullptr && !before->executed) {
                if (before->d[i] != acc || before->n != n) {
                    fail("wgmma.mma_async on accumulator registers that overlap those of an in-flight wgmma of "
                         "another shape (thread %d of warpgroup %d)", i, first / kWarpgroup);
                    return;
                }
                for (int r = 0; r < regs; ++r)
                    if (!is_poison(acc[r])) {
                        fail("accumulator registers changed while a wgmma was in flight: thread %d of warpgroup %d, "
                             "d%d = %g", i, first / kWarpgroup, r, double(acc[r]));
                        return;
                    }
                op->chained[i] = true;
                before->successor[i] = op.get();
                continue;
            }
            Thread& th = s.threads[size_t(first + i)];
            auto last = th.accumulators.find(acc);
            if (last != th.accumulators.end() && last->second.values.size() == size_t(regs) &&
                last->second.fences == th.wgmma_fences &&
                std::memcmp(last->second.values.data(), acc, size_t(regs) * 4) != 0) {
                fail("thread %d wrote accumulator registers after a wgmma wrote them and issued this wgmma.mma_async "
                     "on them without a wgmma.fence between", first + i);
                return;
            }
            if (op->accumulate) std::copy(acc, acc + regs, op->c.begin() + i * regs);
        }
        WgmmaOp& issued = *op;
        wg->ops.push_back(std::move(op));
        ++s.wgmma_ops;
        s.work.tensor_flops += 2ull * 64 * uint64_t(n) * 16;
        issued.late = !(s.shuffle && (s.rng() & 1));
        if (!issued.late) {
            execute_through(*wg, wg->ops.size() - 1, first);
            return;
        }
        float poison;
        std::memcpy(&poison, &kAccumulatorPoison, 4);
        for (int i = 0; i < kWarpgroup; ++i) std::fill(issued.d[i], issued.d[i] + regs, poison);
    });
}

void fence_proxy_async() {
    Launch& l = launch_of_me();
    if (l.sm < 90) {
        fail("fence.proxy.async needs sm_90, and the emulated device is sm_80 (FSIG_EMU_SM=90 emulates an sm_90a one)");
        return;
    }
    Thread& t = me();
    for (uint32_t chunk : t.unfenced_chunks)
        if (l.unfenced_writer[chunk] == t.tid) l.unfenced_writer[chunk] = -1;
    t.unfenced_chunks.clear();
    std::memcpy(l.async_view.data(), fsig::cuda::smem_raw, l.smem_bytes);
}

// ---- memory ----

namespace {
const Allocation* find(const void* p, uintptr_t* start) {
    State& s = state();
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = s.allocations.upper_bound(a);
    if (it == s.allocations.begin()) return nullptr;
    --it;
    if (a >= it->first + std::max<size_t>(it->second.bytes, 1)) return nullptr;
    if (start != nullptr) *start = it->first;
    return &it->second;
}

// Device memory between guard pages, its end at the end of the last usable page rounded to 256 bytes
// (cudaMalloc's alignment): an access past it faults.
void* map_allocation(size_t bytes, bool device) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    const size_t body = (rounded + page - 1) / page * page;
    const size_t total = body + 2 * page;
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    auto* base = static_cast<unsigned char*>(m);
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + body, page, PROT_NONE);
    unsigned char* p = base + page + body - rounded;
    std::memset(p, 0xFF, rounded);  // cudaMalloc leaves memory undefined: NaN in every float format
    state().allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, device, m, total};
    return p;
}

struct Stream {
    bool capturing = false;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    bool invalidated = false;
    std::vector<std::function<void()>> ops;
};
Stream g_default_stream;
Stream* stream_of(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &g_default_stream;
    return reinterpret_cast<Stream*>(s);
}
std::vector<Stream*>& live_streams() {
    static std::vector<Stream*> v{&g_default_stream};
    return v;
}
// a synchronous call while some stream captures in global mode: forbidden, and it ends that capture
bool capture_violation() {
    bool any = false;
    for (Stream* s : live_streams())
        if (s->capturing && s->mode == cudaStreamCaptureModeGlobal) s->invalidated = true, any = true;
    return any;
}

cudaError_t set_last(cudaError_t e) {
    if (e != cudaSuccess) state().last = e;
    return e;
}

// in stream order: now, or recorded into the capturing stream's graph
cudaError_t enqueue(cudaStream_t stream, std::function<void()> op) {
    Stream* s = stream_of(stream);
    if (s == &g_default_stream && capture_violation()) return set_last(cudaErrorStreamCaptureImplicit);
    if (s->capturing) {
        s->ops.push_back(std::move(op));
        return cudaSuccess;
    }
    op();
    return cudaSuccess;
}

struct Graph {
    std::vector<std::function<void()>> ops;
};
}  // namespace

bool readable(const void* p, size_t bytes) {
    uintptr_t start = 0;
    const Allocation* a = find(p, &start);
    return a != nullptr && reinterpret_cast<uintptr_t>(p) + bytes <= start + a->bytes;
}

cudaError_t submit(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                   std::function<void()> thread_body) {
    bind_context();
    State& s = state();
    std::lock_guard<std::recursive_mutex> hold(s.lock);
    const int threads = int(block.x * block.y * block.z);
    if (block.y != 1 || block.z != 1 || threads < 1 || threads > kMaxThreads || grid.x < 1 || grid.y != 1 ||
        grid.z != 1)
        return set_last(cudaErrorInvalidConfiguration);
    const int sm = emulated_sm();
    if (smem_bytes > shared_max(sm)) return set_last(cudaErrorInvalidValue);
    if (smem_bytes > 48 * 1024) {
        auto it = s.max_dynamic_smem.find(kernel);
        if (it == s.max_dynamic_smem.end() || size_t(it->second) < smem_bytes) {
            std::fprintf(stderr, "cuda emulator: a launch asks for %zu bytes of dynamic shared memory without "
                         "cudaFuncSetAttribute(MaxDynamicSharedMemorySize) allowing it\n", smem_bytes);
            return set_last(cudaErrorInvalidValue);
        }
    }
    auto run = [grid, block, smem_bytes, threads, sm, body = std::move(thread_body)] {
        State& st = state();
        std::lock_guard<std::recursive_mutex> hold2(st.lock);
        if (st.sticky != cudaSuccess) return;  // a failed context runs nothing more
        ++st.launches;
        if (st.threads.size() < size_t(threads)) st.threads.resize(size_t(threads));
        Launch l;
        l.grid = grid, l.block = block, l.smem_bytes = smem_bytes, l.body = body, l.threads = threads;
        l.warps.resize(size_t((threads + 31) / 32));
        l.sm = sm;
        if (sm >= 90) l.warpgroups = std::vector<Warpgroup>(size_t(threads / kWarpgroup));
        st.launch = &l;
        // blocks in a random order too (the hardware promises none)
        std::vector<unsigned> blocks(grid.x);
        for (unsigned b = 0; b < grid.x; ++b) blocks[b] = b;
        if (st.shuffle) std::shuffle(blocks.begin(), blocks.end(), st.rng);
        const uint64_t wgmma_before = st.wgmma_ops;
        for (unsigned b : blocks) {
            if (l.failed) break;
            l.block_idx = uint3{b, 0, 0};
            run_block(l);
        }
        st.wgmma_launches += st.wgmma_ops > wgmma_before;
        st.launch = nullptr;
    };
    return enqueue(stream, std::move(run));
}

}  // namespace fsig::emu

// ---- the runtime API (C linkage, as cuda_runtime_api.h declares it) ----

using fsig::emu::State;
using fsig::emu::state;

namespace {
cudaError_t sync_result() {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    if (fsig::emu::capture_violation()) return fsig::emu::set_last(cudaErrorStreamCaptureUnsupported);
    return state().sticky;
}

// cuMemGetAddressRange: the device allocation holding ptr (page-locked host memory: not found, so the
// library's check of the other kinds of memory runs too)
CUresult emu_mem_get_address_range(CUdeviceptr* base, size_t* bytes, CUdeviceptr ptr) {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    uintptr_t start = 0;
    const fsig::emu::Allocation* a = fsig::emu::find(reinterpret_cast<const void*>(ptr), &start);
    if (a == nullptr || !a->device) return CUDA_ERROR_NOT_FOUND;
    if (base != nullptr) *base = CUdeviceptr(start);
    if (bytes != nullptr) *bytes = a->bytes;
    return CUDA_SUCCESS;
}
}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = state().device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device != 0) return fsig::emu::set_last(cudaErrorInvalidDevice);
    state().device = device;
    t_current_context = reinterpret_cast<CUcontext>(&g_primary_context);
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
    *version = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int version,
                                             unsigned long long flags, cudaDriverEntryPointQueryResult* status) {
    (void)version, (void)flags;
    *fn = nullptr;
    if (std::strcmp(symbol, "cuCtxGetCurrent") == 0) *fn = reinterpret_cast<void*>(&emu_ctx_get_current);
    if (std::strcmp(symbol, "cuCtxSetCurrent") == 0) *fn = reinterpret_cast<void*>(&emu_ctx_set_current);
    if (std::strcmp(symbol, "cuMemGetAddressRange") == 0) *fn = reinterpret_cast<void*>(&emu_mem_get_address_range);
    if (status != nullptr) *status = *fn != nullptr ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device != 0) return fsig::emu::set_last(cudaErrorInvalidDevice);
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "FlashSig SIMT emulator (CPU)");
    const int sm = fsig::emu::emulated_sm();
    prop->major = sm / 10, prop->minor = sm % 10;
    prop->multiProcessorCount = 1;
    prop->totalGlobalMem = size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));  // device memory is the host's
    prop->sharedMemPerBlock = 48 * 1024;
    prop->sharedMemPerBlockOptin = fsig::emu::shared_max(sm);
    prop->maxThreadsPerBlock = 1024;
    prop->warpSize = 32;
    return cudaSuccess;
}
// the same device as cudaGetDeviceProperties; an attribute it does not describe is refused, not guessed
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return fsig::emu::set_last(cudaErrorInvalidDevice);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, device);
    switch (attr) {
        case cudaDevAttrComputeCapabilityMajor: *value = prop.major; break;
        case cudaDevAttrComputeCapabilityMinor: *value = prop.minor; break;
        case cudaDevAttrMultiProcessorCount: *value = prop.multiProcessorCount; break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(prop.sharedMemPerBlock); break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(prop.sharedMemPerBlockOptin); break;
        case cudaDevAttrMaxThreadsPerBlock: *value = prop.maxThreadsPerBlock; break;
        case cudaDevAttrWarpSize: *value = prop.warpSize; break;
        default:
            std::fprintf(stderr, "cuda emulator: cudaDeviceGetAttribute(%d) is not emulated\n", int(attr));
            return fsig::emu::set_last(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    State& s = state();
    const cudaError_t e = s.sticky != cudaSuccess ? s.sticky : s.last;
    s.last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) {
    State& s = state();
    return s.sticky != cudaSuccess ? s.sticky : s.last;
}
const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
        case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
        case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
        case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
        case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
        case cudaErrorIllegalState: return "cudaErrorIllegalState";
        default: return "cudaErrorUnknown";
    }
}
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorLaunchFailure: return "unspecified launch failure (see the emulator's message above)";
        default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
    bind_context();
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    *ptr = fsig::emu::map_allocation(bytes, true);
    return *ptr != nullptr ? cudaSuccess : fsig::emu::set_last(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int flags) {
    bind_context();
    (void)flags;
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    *ptr = fsig::emu::map_allocation(bytes, false);
    return *ptr != nullptr ? cudaSuccess : fsig::emu::set_last(cudaErrorMemoryAllocation);
}
static cudaError_t release(void* ptr, bool device) {
    if (ptr == nullptr) return cudaSuccess;
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    auto& all = state().allocations;
    auto it = all.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == all.end() || it->second.device != device) return fsig::emu::set_last(cudaErrorInvalidValue);
    munmap(it->second.map, it->second.map_bytes);
    all.erase(it);
    return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) { return release(ptr, true); }
cudaError_t cudaFreeHost(void* ptr) { return release(ptr, false); }

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    std::memset(attr, 0, sizeof *attr);
    const fsig::emu::Allocation* a = fsig::emu::find(ptr, nullptr);
    if (a == nullptr) {
        attr->type = cudaMemoryTypeUnregistered;
        attr->device = -2;
        return cudaSuccess;
    }
    attr->type = a->device ? cudaMemoryTypeDevice : cudaMemoryTypeHost;
    attr->device = 0;
    attr->devicePointer = const_cast<void*>(ptr);
    attr->hostPointer = a->device ? nullptr : const_cast<void*>(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    bind_context();
    (void)kind;
    if (cudaError_t e = sync_result(); e != cudaSuccess) return e;
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    bind_context();
    (void)kind;
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    return fsig::emu::enqueue(stream, [=] { std::memmove(dst, src, bytes); });
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
    bind_context();
    if (cudaError_t e = sync_result(); e != cudaSuccess) return e;
    std::memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
    bind_context();
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    if (!fsig::emu::readable(dst, bytes)) return fsig::emu::set_last(cudaErrorInvalidValue);
    return fsig::emu::enqueue(stream, [=] { std::memset(dst, value, bytes); });
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    bind_context();
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || size_t(value) > fsig::emu::shared_max(fsig::emu::emulated_sm()))
            return fsig::emu::set_last(cudaErrorInvalidValue);
        state().max_dynamic_smem[func] = value;
    }
    return cudaSuccess;
}

// The code every kernel runs as: the emulated device's own architecture (as an sm_90a cubin reports 90);
// FSIG_EMU_PTX=80 reports code JIT-compiled from compute_80 PTX instead (CUDA_FORCE_PTX_JIT on a GPU)
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
    bind_context();
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    std::memset(attr, 0, sizeof *attr);
    const int sm = fsig::emu::emulated_sm();
    const char* ptx = std::getenv("FSIG_EMU_PTX");
    attr->binaryVersion = sm;
    // (an sm_89 runs the library's compute_80 PTX, JIT-compiled: it has no SASS of its own)
    attr->ptxVersion = ptx != nullptr ? std::atoi(ptx) : sm == 89 ? 80 : sm;
    attr->maxThreadsPerBlock = 1024;
    const auto it = state().max_dynamic_smem.find(func);
    attr->maxDynamicSharedSizeBytes = it != state().max_dynamic_smem.end() ? it->second : 48 * 1024;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
    bind_context();
    (void)flags;
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    auto* s = new fsig::emu::Stream;
    fsig::emu::live_streams().push_back(s);
    *stream = reinterpret_cast<cudaStream_t>(s);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    auto& v = fsig::emu::live_streams();
    auto* s = reinterpret_cast<fsig::emu::Stream*>(stream);
    auto it = std::find(v.begin(), v.end(), s);
    if (it == v.end() || s == &fsig::emu::g_default_stream) return fsig::emu::set_last(cudaErrorInvalidValue);
    v.erase(it);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    bind_context();
    (void)stream;
    return sync_result();
}
cudaError_t cudaDeviceSynchronize(void) {
    bind_context();
    return sync_result();
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    fsig::emu::Stream* s = fsig::emu::stream_of(stream);
    if (s == &fsig::emu::g_default_stream || s->capturing) return fsig::emu::set_last(cudaErrorIllegalState);
    s->capturing = true, s->mode = mode, s->invalidated = false;
    s->ops.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    fsig::emu::Stream* s = fsig::emu::stream_of(stream);
    if (!s->capturing) return fsig::emu::set_last(cudaErrorIllegalState);
    s->capturing = false;
    if (s->invalidated) {
        *graph = nullptr;
        return fsig::emu::set_last(cudaErrorStreamCaptureInvalidated);
    }
    auto* g = new fsig::emu::Graph{std::move(s->ops)};
    s->ops.clear();
    *graph = reinterpret_cast<cudaGraph_t>(g);
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
    (void)flags;
    if (graph == nullptr) return fsig::emu::set_last(cudaErrorInvalidValue);
    *exec = reinterpret_cast<cudaGraphExec_t>(new fsig::emu::Graph(*reinterpret_cast<fsig::emu::Graph*>(graph)));
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    for (const auto& op : reinterpret_cast<fsig::emu::Graph*>(exec)->ops)
        if (cudaError_t e = fsig::emu::enqueue(stream, op); e != cudaSuccess) return e;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete reinterpret_cast<fsig::emu::Graph*>(exec);
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete reinterpret_cast<fsig::emu::Graph*>(graph);
    return cudaSuccess;
}

// Events for the benches' timing (CTest bench_smoke_cuda_emu): a record is a stream operation that reads the
// host clock, so elapsed times are the emulator's, not a GPU's
namespace {
struct Event {
    std::chrono::steady_clock::time_point at;
    bool recorded = false;
};
}  // namespace
cudaError_t cudaEventCreate(cudaEvent_t* event) {
    if (event == nullptr) return fsig::emu::set_last(cudaErrorInvalidValue);
    *event = reinterpret_cast<cudaEvent_t>(new Event);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete reinterpret_cast<Event*>(event);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    bind_context();
    std::lock_guard<std::recursive_mutex> hold(state().lock);
    auto* e = reinterpret_cast<Event*>(event);
    if (e == nullptr) return fsig::emu::set_last(cudaErrorInvalidResourceHandle);
    return fsig::emu::enqueue(stream, [e] { e->at = std::chrono::steady_clock::now(), e->recorded = true; });
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    (void)event;
    return sync_result();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
    auto *a = reinterpret_cast<Event*>(start), *b = reinterpret_cast<Event*>(end);
    if (ms == nullptr || a == nullptr || b == nullptr) return fsig::emu::set_last(cudaErrorInvalidValue);
    if (!a->recorded || !b->recorded) return fsig::emu::set_last(cudaErrorInvalidResourceHandle);
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return cudaSuccess;
}

}  // extern "C"
