// What the GPU tests share: tensors staged on the host (tu::View) and mirrored on the device, and the
// start-up check that skips (exit 77) where the library has no CUDA or no device is present. With
// g_cuda = false (--device cpu) nothing touches CUDA: the same cases run through the CPU backend, which
// checks the test itself on machines without a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "flashsig.h"
#include "harness.h"
#include "lib_util.h"

#if defined(FSIG_TEST_ON_EMULATOR)
#include "emu_counters.h"  // what the SIMT emulator counts (tests/emu)
namespace gt {
// Whether the library's Hopper (wgmma) kernels may run on the emulated device: an sm_90 (FSIG_EMU_SM=90)
// running sm_90a code (not FSIG_EMU_PTX below 90), FSIG_CUDA_WGMMA 1 or require
inline bool emulated_hopper() {
    const char* sm = std::getenv("FSIG_EMU_SM");
    const char* ptx = std::getenv("FSIG_EMU_PTX");
    const char* setting = std::getenv("FSIG_CUDA_WGMMA");
    return sm != nullptr && std::strcmp(sm, "90") == 0 && (ptx == nullptr || std::atoi(ptx) >= 90) &&
           setting != nullptr && (std::strcmp(setting, "1") == 0 || std::strcmp(setting, "require") == 0);
}
}  // namespace gt
#endif

namespace gt {

inline bool g_cuda = true;  // false: --device cpu
// the command line every GPU test takes (run_main)
inline bool g_quick = false, g_verbose = false, g_list = false;
// --forward-only: test_cuda_masks's cases and test_cuda_work's calls check the forward alone, for runs whose setting
// changes only the forward's kernels (FSIG_CUDA_FWD_TALL); the other tests ignore it
inline bool g_forward_only = false;
inline int g_device_count = 0;
inline std::vector<std::string> g_filters;  // case filters (those naming a TEST select the test instead)

#define CUDA_OK(call)                                                                                          \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess) {                                                                               \
            std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            std::exit(1);                                                                                      \
        }                                                                                                      \
    } while (0)

// Whether the Hopper (sm_90a) kernels can run on device 0 — compute capability 9.0, and on the emulator no code
// JIT-compiled from older PTX (FSIG_EMU_PTX) — printing the device line of the FSIG_CUDA_WGMMA=require tests.
inline bool hopper_kernels_run_for_require() {
    int major = 0, minor = 0;
    CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
    const char* emulated_ptx = nullptr;
#if defined(FSIG_TEST_ON_EMULATOR)
    emulated_ptx = std::getenv("FSIG_EMU_PTX");
#endif
    const bool ptx_jit = emulated_ptx != nullptr && std::atoi(emulated_ptx) < 90;
    std::printf("  compute capability %d.%d%s, FSIG_CUDA_WGMMA=require\n", major, minor,
                ptx_jit ? " (code JIT-compiled from PTX)" : "");
    return major == 9 && minor == 0 && !ptx_jit;
}

inline std::shared_ptr<void> device_alloc(size_t bytes) {
    void* p = nullptr;
    CUDA_OK(cudaMalloc(&p, bytes ? bytes : 1));
    return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

// A tensor: its layout and host staging in a tu::View, its bytes mirrored on the device (cuda mode).
struct Tensor {
    tu::View host;
    std::shared_ptr<void> dev;  // same byte size as host storage; nullptr in cpu mode

    void* data() const {
        if (!dev) return host.data();
        return static_cast<unsigned char*>(dev.get()) + host.offset * int64_t(tu::esize(host.dtype));
    }
    fsig_tensor desc() const {
        fsig_tensor t = host.desc();
        t.data = data();
        if (dev) t.device_type = FSIG_DEVICE_CUDA, t.device_index = 0;
        return t;
    }
    void upload() const {
        if (dev) CUDA_OK(cudaMemcpy(dev.get(), host.st->mem, host.st->bytes, cudaMemcpyHostToDevice));
    }
    void download() const {
        if (dev) CUDA_OK(cudaMemcpy(host.st->mem, dev.get(), host.st->bytes, cudaMemcpyDeviceToHost));
    }
    std::vector<unsigned char> bytes() const {  // the whole storage, after a download
        download();
        return std::vector<unsigned char>(host.st->mem, host.st->mem + host.st->bytes);
    }
};

// Views sharing one storage (packed qkv) share one device allocation: pass it as shared_dev.
inline Tensor mirror(const tu::View& v, std::shared_ptr<void> shared_dev = nullptr) {
    Tensor t;
    t.host = v;
    if (g_cuda) t.dev = shared_dev ? shared_dev : device_alloc(v.st->bytes);
    return t;
}

inline Tensor with_values(const tu::View& v, const std::vector<float>& dense) {
    Tensor t = mirror(v);
    t.host.store(dense);
    t.upload();
    return t;
}

inline void poison(const Tensor& t) {
    tu::poison(t.host);
    t.upload();
}

// cuda:0's opt-in shared memory per block in bytes, or the library's cap FSIG_CUDA_SMEM_LIMIT_KIB where
// that is lower (the GPU session runs the 99 KiB GPUs' kernels on a larger one so)
inline int shared_memory_optin() {
    static const int allowed = [] {
        int a = 0;
        CUDA_OK(cudaDeviceGetAttribute(&a, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
        const char* cap = std::getenv("FSIG_CUDA_SMEM_LIMIT_KIB");
        const long kib = cap != nullptr ? std::strtol(cap, nullptr, 10) : 0;
        return kib > 0 && kib * 1024 < a ? int(kib * 1024) : a;
    }();
    return allowed;
}

// Whether cuda:0 allows less than 128 KiB per block (sm_86, sm_89, sm_120: 99 KiB): no backward kernel for
// d > 128 fits there (the forward takes its compact 256-wide kernel), and the backward takes its pair kernels
// at d <= 128
inline bool small_shared_memory() { return shared_memory_optin() < 128 * 1024; }

// cuda:0's opt-in shared memory per block in bytes where small_shared_memory(); 0 otherwise, after printing
// that every `kernels` kernel fits there
inline int small_shared_memory_device(const char* kernels) {
    if (small_shared_memory()) return shared_memory_optin();
    std::printf("  cuda:0 allows %d KiB of shared memory per block: every %s kernel fits\n", shared_memory_optin() / 1024,
                kernels);
    return 0;
}

// Whether every element of t's storage still holds the poison (a refused call wrote nothing)
inline bool untouched(const Tensor& t) {
    const std::vector<unsigned char> b = t.bytes();
    const uint32_t bits = tu::poison_bits(t.host.dtype);
    const size_t es = tu::esize(t.host.dtype);
    for (size_t i = 0; i < b.size(); i += es)
        if (std::memcmp(&b[i], &bits, es) != 0) return false;
    return true;
}

// A backward that no kernel of this device can run (d > 128 on a small_shared_memory() device): refused as
// unsupported with a message naming the shared memory, none of dq, dk, dv written
inline void expect_shared_memory_refusal(int status, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                         const std::string& what) {
    EXPECT(status == FSIG_ERROR_UNSUPPORTED && std::strstr(fsig_last_error(), "KiB of shared memory per block"),
           "%s on %d KiB per block: status %d (%s): %s", what.c_str(), shared_memory_optin() / 1024, status,
           fsig_status_string(status), fsig_last_error());
    EXPECT(untouched(dq) && untouched(dk) && untouched(dv), "%s: the refused backward wrote a gradient", what.c_str());
}

// The fast backward's workspace for params p and q (the size fsig_attention_backward_workspace_size
// asks for; on the CPU that is 0 and nothing is allocated), filled with 0xFF bytes before each call so
// that touched() tells whether the fast path ran (it zeroes the workspace, then adds into it).
struct Workspace {
    std::shared_ptr<void> mem;
    int64_t bytes = 0;

    Workspace() = default;
    // the size the call needs (with dbias: fsig_attention_backward_workspace_size_ex); in cpu mode 0
    Workspace(const fsig_attention_params& p, const fsig_tensor& q, const fsig_tensor* dbias = nullptr) {
        REQUIRE(fsig_attention_backward_workspace_size_ex(&p, &q, dbias, &bytes) == FSIG_OK, "workspace size: %s",
                fsig_last_error());
        if (bytes > 0) mem = device_alloc(size_t(bytes));
    }
    // p with this workspace (none when empty)
    fsig_attention_params attach(fsig_attention_params p) const {
        p.workspace = bytes > 0 ? mem.get() : nullptr, p.workspace_bytes = bytes > 0 ? bytes : 0;
        return p;
    }
    void fill_ff() const {
        if (bytes == 0) return;
        CUDA_OK(cudaMemset(mem.get(), 0xFF, size_t(bytes)));
        CUDA_OK(cudaDeviceSynchronize());  // before calls on any stream (non-blocking ones included)
    }
    bool touched() const {
        if (bytes == 0) return false;
        std::vector<unsigned char> h(static_cast<size_t>(bytes));
        CUDA_OK(cudaMemcpy(h.data(), mem.get(), h.size(), cudaMemcpyDeviceToHost));
        for (unsigned char c : h)
            if (c != 0xFF) return true;
        return false;
    }
};

// [B, N, H, d] with every row padded to d + 8 and 16 more elements per batch: non-contiguous, every
// stride a multiple of 8 (a layout the CUDA rule accepts).
inline tu::View padded8_view(int dtype, int64_t B, int64_t N, int64_t H, int64_t d) {
    tu::View v;
    v.dtype = dtype;
    v.shape[0] = B, v.shape[1] = N, v.shape[2] = H, v.shape[3] = d;
    v.strides[3] = 1, v.strides[2] = d + 8, v.strides[1] = H * (d + 8), v.strides[0] = N * H * (d + 8) + 16;
    v.st = std::make_shared<tu::Storage>(size_t(v.extent_elems()) * tu::esize(dtype));
    return v;
}

// In cuda mode: th::kSkip with a message when there is no CUDA build or device, 1 on error, else 0
// with *device_count set and the device printed. what: the pass under test, for the skip message.
inline int setup_device(const char* what, int* device_count) {
    if (!g_cuda) {
        std::printf("--device cpu: the numerics cases through the CPU backend (checks this test, not CUDA)\n");
        return 0;
    }
    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    if (fsig_get_capabilities(&caps) != FSIG_OK) {
        std::fprintf(stderr, "fsig_get_capabilities failed: %s\n", fsig_last_error());
        return 1;
    }
    if (!caps.cuda_compiled) {
        std::printf("SKIP: this libflashsig was built without CUDA\n");
        return th::kSkip;
    }
    if (caps.cuda_device_count < 1) {
        std::printf("SKIP: no CUDA device or driver on this machine (the CUDA %s was not tested)\n", what);
        return th::kSkip;
    }
    *device_count = caps.cuda_device_count;
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device cuda:0 %s (sm_%d%d), %d device(s)\n", prop.name, prop.major, prop.minor, *device_count);
    return 0;
}

// The main of every GPU test: [--quick] [--forward-only] [--device cpu] [--list] [--verbose] [name filters...];
// then the device check (skip, exit 77, without one) and the tests — a filter that names a TEST selects it,
// any other filters the cases inside the tests. what: the pass under test, for the skip message.
inline int run_main(int argc, char** argv, const char* what) {
    // a line at a time into a log file too: a run cut off by a time limit still shows how far it got
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") g_quick = true;
        else if (a == "--forward-only") g_forward_only = true;
        else if (a == "--verbose") g_verbose = true;
        else if (a == "--list") g_list = true;
        else if (a == "--device" && i + 1 < argc) g_cuda = std::string(argv[++i]) != "cpu";
        else if (a == "--help") {
            std::printf("%s [--quick] [--forward-only] [--device cpu] [--list] [--verbose] [name filters...]\n",
                        argv[0]);
            return 0;
        } else g_filters.push_back(a);
    }
    if (const int st = setup_device(what, &g_device_count); st != 0) return st;
    std::vector<std::string> tests;
    for (const std::string& f : g_filters)
        for (const th::Test& t : th::registry())
            if (f == t.name) tests.push_back(f);
    if (!tests.empty()) g_filters.clear();
    return th::run_all(tests);
}

}  // namespace gt
