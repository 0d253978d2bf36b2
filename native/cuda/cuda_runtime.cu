// The CUDA backend's host side: device queries, the checks only the CUDA kernels need, and the launch
// of the forward kernels (fwd_kernel.cuh through the generated units fwd[_ext].cu) and of the
// backward kernels (bwd_kernel.cuh through bwd_{dkdv,dq}[_ext].cu).
// cudaGetDeviceCount fails cleanly (no device / insufficient driver) without libcuda, so a library
// built with CUDA still loads and runs its CPU backend on a machine with no GPU.
#include <cuda.h>  // CUcontext, CUresult: types only (the driver is reached through the runtime's entry points)
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bwd_kernel.cuh"  // BwdSmemPlan and fwd_kernel.cuh's FwdSmemPlan: the device query's sizes
#include "bwd_launch.h"
#include "cuda_backend.h"
#include "driver_entry.h"
#include "fwd_launch.h"
#include "launch.h"
#include "linear_launch.h"
#include "fwd_params.h"
#include "host_params.h"

namespace fsig::cuda {

bool compiled() { return true; }

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the error so later runtime calls start clean
        return 0;
    }
    return count;
}

const char* no_device_reason() {
    static thread_local char why[200];
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    cudaGetLastError();
    int driver = 0;  // 0: no driver installed
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0, cudaGetLastError();
    if (driver > 0 && driver < CUDART_VERSION)
        std::snprintf(why, sizeof why,
                      "the installed driver supports CUDA %d.%d but this library's runtime is CUDA %d.%d: update the "
                      "driver", driver / 1000, driver % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    else if (driver == 0)
        std::snprintf(why, sizeof why, "no CUDA driver is installed");
    else if (e == cudaSuccess || e == cudaErrorNoDevice)
        std::snprintf(why, sizeof why, "the driver reports no CUDA device");
    else
        std::snprintf(why, sizeof why, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
    return why;
}

uint32_t forward_dtypes() { return (1u << FSIG_DTYPE_FP16) | (1u << FSIG_DTYPE_BF16); }

int forward_head_dims(int32_t* dims, int max) {
    static const int32_t kDims[] = {64, 128, 256};
    int n = 0;
    for (int32_t d : kDims)
        if (n < max) dims[n++] = d;
    return n;
}

namespace {

struct Message {
    char* buf;
    size_t size;
    [[gnu::format(printf, 3, 4)]] int fail(int status, const char* fmt, ...) const {
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return status;
    }
};

// Three driver functions, reached through the runtime's entry points (no link to libcuda): the calling
// thread's current context and the allocation holding an address.
struct Driver {
    using GetContext = CUresult (*)(CUcontext*);
    using SetContext = CUresult (*)(CUcontext);
    using AddressRange = CUresult (*)(CUdeviceptr* base, size_t* bytes, CUdeviceptr ptr);
    GetContext get_context = nullptr;
    SetContext set_context = nullptr;
    AddressRange address_range = nullptr;  // the cuMemAlloc allocation holding an address
};

const Driver& driver() {
    static const Driver api = [] {
        Driver d;
        d.get_context = reinterpret_cast<Driver::GetContext>(driver_entry("cuCtxGetCurrent", 4000));
        d.set_context = reinterpret_cast<Driver::SetContext>(driver_entry("cuCtxSetCurrent", 4000));
        if (d.get_context == nullptr || d.set_context == nullptr) d.get_context = nullptr, d.set_context = nullptr;
        d.address_range = reinterpret_cast<Driver::AddressRange>(driver_entry("cuMemGetAddressRange", 3020));
        return d;
    }();
    return api;
}

// DESIGN §3's rule for GPU tensors: 16-byte-aligned base, last-dim stride 1, other strides multiples of
// 8 elements (so every access is one aligned 16-byte vector). The stride of a dimension of size 1 is
// never used and may be anything.
int check_layout(const Message& m, const char* name, const TensorView& t) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(t.data);
    if (addr % 16 != 0)
        return m.fail(FSIG_ERROR_MISALIGNED,
                      "%s: data address %p is not 16-byte aligned, which CUDA tensors need (DESIGN §3)", name, t.data);
    if (t.stride[3] != 1)
        return m.fail(FSIG_ERROR_INVALID_STRIDE,
                      "%s.strides[3] is %lld but CUDA tensors need a last-dimension stride of 1 (DESIGN §3)", name,
                      (long long)t.stride[3]);
    for (int dim = 0; dim < 3; ++dim)
        if (t.shape[dim] > 1 && t.stride[dim] % 8 != 0)
            return m.fail(FSIG_ERROR_INVALID_STRIDE,
                          "%s.strides[%d] is %lld but CUDA tensors need strides that are multiples of 8 elements "
                          "(16 bytes) in every dimension but the last (DESIGN §3)",
                          name, dim, (long long)t.stride[dim]);
    return FSIG_OK;
}

// Bytes from a view's first element to the end of its last (the C ABI layer checked that this fits).
int64_t extent_bytes(const TensorView& t) {
    int64_t last = 0;
    for (int dim = 0; dim < 4; ++dim) last += (t.shape[dim] - 1) * t.stride[dim];
    return (last + 1) * (t.dtype == FSIG_DTYPE_FP32 ? 4 : t.dtype == FSIG_DTYPE_BOOL ? 1 : 2);
}

// The memory [data, data + extent) must be what the kernel may read on this device, in one allocation:
// device memory of this ordinal, managed memory, or page-locked host memory known to CUDA. A plain host
// pointer, or a tensor running past the end of its allocation, would fault the kernel, and a fault
// poisons the CUDA context of the whole process. extent 0: the first byte only.
int check_pointer(const Message& m, const char* name, const void* data, int64_t extent, int device) {
    cudaPointerAttributes attr;
    const cudaError_t e = cudaPointerGetAttributes(&attr, data);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return m.fail(FSIG_ERROR_INVALID_DEVICE, "%s: CUDA does not know the address %p (%s: %s)", name, data,
                      cudaGetErrorName(e), cudaGetErrorString(e));
    }
    switch (attr.type) {
        case cudaMemoryTypeDevice:
            if (attr.device != device)
                return m.fail(FSIG_ERROR_INVALID_DEVICE,
                              "%s is described as on cuda:%d but its memory belongs to cuda:%d", name, device,
                              attr.device);
            break;
        case cudaMemoryTypeManaged:
            break;
        case cudaMemoryTypeHost:
            if (attr.devicePointer == nullptr)
                return m.fail(FSIG_ERROR_INVALID_DEVICE,
                              "%s: page-locked host memory at %p is not mapped into cuda:%d's address space", name,
                              data, device);
            // the kernels dereference the address itself: registered memory may be mapped at another device
            // address (cudaDevAttrCanUseHostPointerForRegisteredMem = 0), which would fault
            if (attr.devicePointer != data)
                return m.fail(FSIG_ERROR_INVALID_DEVICE,
                              "%s: page-locked host memory at %p is mapped at another address (%p) on cuda:%d; pass "
                              "that device address (cudaHostGetDevicePointer)",
                              name, data, attr.devicePointer, device);
            break;
        default:
            return m.fail(FSIG_ERROR_INVALID_DEVICE,
                          "%s is described as a CUDA tensor but %p is host memory unknown to CUDA (a host pointer "
                          "must be a CPU tensor, or be page-locked with cudaHostRegister/cudaHostAlloc)",
                          name, data);
    }
    if (extent <= 1) return FSIG_OK;
    // Device allocations: the driver knows each one's range. A tensor may cross into the next range only
    // where that one starts exactly there (virtual-memory mappings made piece by piece, such as PyTorch's
    // expandable segments; adjacent allocations are equally safe to read). Other memory (managed, mapped
    // host): at least the last byte must be memory of the same kind and device.
    const uint64_t begin = reinterpret_cast<uintptr_t>(data), end = begin + uint64_t(extent);
    CUdeviceptr base = 0;
    size_t bytes = 0;
    const Driver::AddressRange range = driver().address_range;
    if (range != nullptr && range(&base, &bytes, CUdeviceptr(begin)) == CUDA_SUCCESS) {
        const CUdeviceptr first_base = base;
        const size_t first_bytes = bytes;
        uint64_t covered = uint64_t(base) + bytes;
        for (int pieces = 1; covered < end; ++pieces) {
            if (pieces == 65536 || range(&base, &bytes, CUdeviceptr(covered)) != CUDA_SUCCESS || base != covered)
                return m.fail(FSIG_ERROR_BUFFER_TOO_SMALL,
                              "%s: its elements span %lld bytes from %p, past the end of its CUDA allocation (%zu "
                              "bytes at %p)",
                              name, (long long)extent, data, first_bytes, reinterpret_cast<void*>(first_base));
            covered = uint64_t(base) + bytes;
        }
        return FSIG_OK;
    }
    const void* last = reinterpret_cast<const char*>(data) + (extent - 1);
    cudaPointerAttributes end_attr;
    if (cudaPointerGetAttributes(&end_attr, last) != cudaSuccess || end_attr.type != attr.type ||
        (attr.type == cudaMemoryTypeDevice && end_attr.device != attr.device)) {
        cudaGetLastError();
        return m.fail(FSIG_ERROR_BUFFER_TOO_SMALL,
                      "%s: its elements span %lld bytes from %p, but its last byte (%p) is not memory of the same "
                      "kind on cuda:%d",
                      name, (long long)extent, data, last, device);
    }
    return FSIG_OK;
}

// Makes `device` current for the guard's lifetime and gives the caller's context back afterwards. The
// driver's current context is what every CUDA runtime in the process shares (this library links its own,
// statically), so saving and restoring it — not the runtime's current device — gives the caller back
// exactly what it had, including no context at all on a thread that never used CUDA (a Java thread):
// restoring "device 0" there with cudaSetDevice would create device 0's primary context (CUDA 12+
// initialises it at once), hundreds of MiB on a GPU the caller may not use.
class DeviceGuard {
public:
    cudaError_t enter(int device) {
        const Driver& d = driver();
        CUcontext current = nullptr;
        const bool known = d.get_context != nullptr && d.get_context(&current) == CUDA_SUCCESS;
        cudaError_t e = cudaGetDevice(&saved_device_);
        if (e != cudaSuccess) return e;
        // the caller's own context on this device stays (memory of a context it made current stays usable)
        if (saved_device_ == device && (current != nullptr || !known)) return cudaSuccess;
        e = cudaSetDevice(device);
        if (e != cudaSuccess) return e;
        switched_ = true;
        restore_context_ = known;
        saved_context_ = current;
        return cudaSuccess;
    }
    ~DeviceGuard() {
        if (!switched_) return;
        if (restore_context_)
            driver().set_context(saved_context_);
        else
            cudaSetDevice(saved_device_);
    }

private:
    int saved_device_ = 0;
    CUcontext saved_context_ = nullptr;
    bool switched_ = false, restore_context_ = false;
};

// A launch's failure as the call's status and message (`what`: "forward", "backward dQ", ...): a kernel
// that needs more shared memory per block than the device allows (allow_dynamic_smem, launch.h: nothing
// was launched) is unsupported there; anything else is a CUDA error. Clears the runtime's last error.
int launch_failure(const Message& m, cudaError_t e, const char* what, int device) {
    cudaGetLastError();
    const SmemShortfall s = smem_shortfall();
    if (e == cudaErrorLaunchOutOfResources && s.needed > 0)
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "the %s kernel for this call needs %d KiB of shared memory per block but cuda:%d allows %d KiB "
                      "(sm_86/sm_89 GPUs: 99 KiB; A100: 163, H100/H200: 227); run it on a GPU with more, or on CPU "
                      "tensors",
                      what, (s.needed + 1023) / 1024, device, s.allowed / 1024);
    return m.fail(FSIG_ERROR_CUDA, "launching the %s kernel on cuda:%d failed: %s: %s", what, device,
                  cudaGetErrorName(e), cudaGetErrorString(e));
}

// What every CUDA call needs of the problem itself: a dtype and head dim with kernels, lengths and
// grid sizes inside the kernels' int32 arithmetic. `pass` names the call in the messages, `caps_field` the
// fsig_capabilities field that states its head dims. The attention kernels run every head dim that is a
// multiple of 8 (16-byte rows) up to max_head_dim on the narrowest kernel that holds it (FwdParams::head_dim):
// widths 64, 128 and 256, forward and backward; linear attention (max_head_dim 0) has 64 and 128 only.
int check_problem(const Message& m, const Problem& pr, const char* pass, int max_head_dim,
                  const char* caps_field = "cuda_head_dims") {
    if (pr.dtype != FSIG_DTYPE_FP16 && pr.dtype != FSIG_DTYPE_BF16)
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "q.dtype is fp32 but the CUDA kernels take fp16 or bf16 (tensor cores); convert the tensors "
                      "or pass CPU tensors");
    if (max_head_dim == 0 && pr.head_dim != 64 && pr.head_dim != 128)
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "q.shape[3] (head_dim) is %lld but the CUDA %s supports head_dim 64 and 128; other head dims "
                      "run on CPU tensors",
                      (long long)pr.head_dim, pass);
    if (max_head_dim > 0 && (pr.head_dim % 8 != 0 || pr.head_dim > max_head_dim))
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "q.shape[3] (head_dim) is %lld but the CUDA %s supports head dims that are multiples of 8 "
                      "up to %d (fsig_capabilities.%s); the others up to fsig_capabilities.cpu_max_head_dim run "
                      "on CPU tensors",
                      (long long)pr.head_dim, pass, max_head_dim, caps_field);
    if (pr.seq_q > kMaxCudaSeq || pr.seq_k > kMaxCudaSeq)
        return m.fail(FSIG_ERROR_UNSUPPORTED, "seq_q (%lld) and seq_k (%lld) must be at most 2^30 on CUDA",
                      (long long)pr.seq_q, (long long)pr.seq_k);
    // by the finest blocks a forward kernel may take (the compact 256-wide one's, on a 99 KiB GPU)
    const int64_t m_blocks = (pr.seq_q + kFwdSmallBlockM - 1) / kFwdSmallBlockM;
    if (pr.heads_q > INT32_MAX || m_blocks * pr.heads_q > INT32_MAX / pr.batch)
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "batch %lld x heads_q %lld x %lld query tiles of %d rows exceed the 2^31 - 1 thread blocks "
                      "of one CUDA launch; split the batch",
                      (long long)pr.batch, (long long)pr.heads_q, (long long)m_blocks, kFwdSmallBlockM);
    return FSIG_OK;
}

struct Named {
    const char* name;
    const TensorView* t;
};

// Device guard entered, no stale asynchronous error pending, every pointer usable on the device.
int enter_device(const Message& m, DeviceGuard& guard, int device, const Named* tensors, int n) {
    if (cudaError_t e = guard.enter(device); e != cudaSuccess) {
        cudaGetLastError();
        return m.fail(FSIG_ERROR_CUDA, "cannot make cuda:%d the current device: %s: %s", device, cudaGetErrorName(e),
                      cudaGetErrorString(e));
    }
    // An error left by an earlier asynchronous launch surfaces here rather than being blamed on this
    // call's launch; the read clears it unless it is sticky. The runtime is linked statically, so this is
    // this library's own runtime state: another library's non-sticky errors are never seen (or consumed)
    // here, only sticky ones, which poison the device's context for every library.
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess)
        return m.fail(FSIG_ERROR_CUDA,
                      "an earlier CUDA error was pending on cuda:%d before this call (an asynchronous error of an "
                      "earlier launch): %s: %s",
                      device, cudaGetErrorName(e), cudaGetErrorString(e));
    for (int i = 0; i < n; ++i)
        if (int st = check_pointer(m, tensors[i].name, tensors[i].t->data, extent_bytes(*tensors[i].t), device);
            st != FSIG_OK)
            return st;
    smem_shortfall() = SmemShortfall{};  // (a refusal of this call's launch records it afresh)
    return FSIG_OK;
}

// The extension tensors (alibi slopes, bias, mask, block layout; dbias) must be usable on the device as
// well; their layout is free (the kernels read them element by element).
int check_extension_pointers(const Message& m, const Problem& pr, const TensorView* dbias, int device) {
    const int64_t alibi_extent = ((pr.batch - 1) * pr.alibi_stride_b + (pr.heads_q - 1) * pr.alibi_stride_h + 1) * 4;
    const struct {
        const char* name;
        const void* data;
        int64_t extent;
    } ext[] = {{"alibi_slopes", pr.alibi, alibi_extent},
               {"bias", pr.has_bias ? pr.bias.data : nullptr, extent_bytes(pr.bias)},
               {"mask", pr.has_mask ? pr.mask.data : nullptr, extent_bytes(pr.mask)},
               {"block_layout", pr.block_m > 0 ? pr.block_layout.data : nullptr, extent_bytes(pr.block_layout)},
               {"dbias", dbias != nullptr ? dbias->data : nullptr, dbias != nullptr ? extent_bytes(*dbias) : 0}};
    for (const auto& x : ext)
        if (x.data != nullptr)
            if (int st = check_pointer(m, x.name, x.data, x.extent, device); st != FSIG_OK) return st;
    return FSIG_OK;
}

using FwdLauncher = cudaError_t (*)(const FwdParams&, cudaStream_t);
using BwdLauncher = cudaError_t (*)(const BwdParams&, cudaStream_t);

// The generated units' launchers, by [extended][bf16][kernel width: 64, 128, 256]
constexpr FwdLauncher kFwd[2][2][3] = {
    {{launch_fwd_fp16_hd64, launch_fwd_fp16_hd128, launch_fwd_fp16_hd256},
     {launch_fwd_bf16_hd64, launch_fwd_bf16_hd128, launch_fwd_bf16_hd256}},
    {{launch_fwd_ext_fp16_hd64, launch_fwd_ext_fp16_hd128, launch_fwd_ext_fp16_hd256},
     {launch_fwd_ext_bf16_hd64, launch_fwd_ext_bf16_hd128, launch_fwd_ext_bf16_hd256}}};
constexpr BwdLauncher kBwdDkDv[2][2][3] = {
    {{launch_bwd_dkdv_fp16_hd64, launch_bwd_dkdv_fp16_hd128, launch_bwd_dkdv_fp16_hd256},
     {launch_bwd_dkdv_bf16_hd64, launch_bwd_dkdv_bf16_hd128, launch_bwd_dkdv_bf16_hd256}},
    {{launch_bwd_dkdv_ext_fp16_hd64, launch_bwd_dkdv_ext_fp16_hd128, launch_bwd_dkdv_ext_fp16_hd256},
     {launch_bwd_dkdv_ext_bf16_hd64, launch_bwd_dkdv_ext_bf16_hd128, launch_bwd_dkdv_ext_bf16_hd256}}};
constexpr BwdLauncher kBwdDq[2][2][3] = {
    {{launch_bwd_dq_fp16_hd64, launch_bwd_dq_fp16_hd128, launch_bwd_dq_fp16_hd256},
     {launch_bwd_dq_bf16_hd64, launch_bwd_dq_bf16_hd128, launch_bwd_dq_bf16_hd256}},
    {{launch_bwd_dq_ext_fp16_hd64, launch_bwd_dq_ext_fp16_hd128, launch_bwd_dq_ext_fp16_hd256},
     {launch_bwd_dq_ext_bf16_hd64, launch_bwd_dq_ext_bf16_hd128, launch_bwd_dq_ext_bf16_hd256}}};

// (the extended Hopper dK/dV kernels at d = 128 are not built: they spill, native/cuda/NOTES.md; at width
// 256 only the plain dK/dV and dQ kernels are: extended calls there take the mma.sync kernels)
constexpr BwdLauncher kBwdWgmma[2][2][3] = {
    {{launch_bwd_wgmma_fp16_hd64, launch_bwd_wgmma_fp16_hd128, launch_bwd_wgmma_fp16_hd256},
     {launch_bwd_wgmma_bf16_hd64, launch_bwd_wgmma_bf16_hd128, launch_bwd_wgmma_bf16_hd256}},
    {{launch_bwd_wgmma_ext_fp16_hd64, nullptr, nullptr}, {launch_bwd_wgmma_ext_bf16_hd64, nullptr, nullptr}}};
constexpr BwdLauncher kBwdDqWgmma[2][2][3] = {
    {{launch_bwd_dq_wgmma_fp16_hd64, launch_bwd_dq_wgmma_fp16_hd128, launch_bwd_dq_wgmma_fp16_hd256},
     {launch_bwd_dq_wgmma_bf16_hd64, launch_bwd_dq_wgmma_bf16_hd128, launch_bwd_dq_wgmma_bf16_hd256}},
    {{launch_bwd_dq_wgmma_ext_fp16_hd64, launch_bwd_dq_wgmma_ext_fp16_hd128, nullptr},
     {launch_bwd_dq_wgmma_ext_bf16_hd64, launch_bwd_dq_wgmma_ext_bf16_hd128, nullptr}}};
constexpr FwdLauncher kFwdWgmma[2][2][3] = {
    {{launch_fwd_wgmma_fp16_hd64, launch_fwd_wgmma_fp16_hd128, launch_fwd_wgmma_fp16_hd256},
     {launch_fwd_wgmma_bf16_hd64, launch_fwd_wgmma_bf16_hd128, launch_fwd_wgmma_bf16_hd256}},
    {{launch_fwd_wgmma_ext_fp16_hd64, launch_fwd_wgmma_ext_fp16_hd128, launch_fwd_wgmma_ext_fp16_hd256},
     {launch_fwd_wgmma_ext_bf16_hd64, launch_fwd_wgmma_ext_bf16_hd128, launch_fwd_wgmma_ext_bf16_hd256}}};

// p for a kernel of tile_m x tile_n tiles: without β where a block layout, the only element-wise
// extension, is constant over every such tile (the tile skipping applies it); with key_rows (the Hopper
// kernels, which have no room for a β per row) β as one row per key tile where it is the same on every row
// of a tile (ext_key_beta)
FwdParams for_kernel_tiles(FwdParams p, int tile_n, bool key_rows, int tile_m = kFwdBlockM) {
    if (ext_layout_tile_uniform(p.ext, tile_m, tile_n, p.seq_q, p.seq_k)) p.ext.elementwise = 0;
    else if (key_rows && ext_key_beta(p.ext, tile_m, p.seq_q)) p.ext.elementwise = 0, p.ext.key_beta = 1;
    return p;
}

// The Hopper kernels (fwd_wgmma_kernel.cuh) serve the forward calls without a β per row (plain, positions,
// key-padding bias and mask, block layouts of 128-row multiples) at every d, and bwd_wgmma_kernel.cuh the
// backward's dK/dV of plain calls at every d and at d ≤ 64 (width 64) of the same extensions (64-row tiles) and the
// deterministic path's dQ of plain calls at every d and those extensions at d ≤ 128 (128-row tiles, no dBias), on a
// compute capability 9.0 device when the library carries sm_90a code (which runs on 9.0 only); the others take
// the mma.sync kernels.
// Opt-in until they have run on a GPU (benchmarks/NOTES.md): FSIG_CUDA_WGMMA, read once at first use, is 1
// (use them where they can run), require (a call they should serve but cannot fails: the GPU session's proof
// that they ran) or off.
enum class WgmmaSetting { kOff, kOn, kRequired };
WgmmaSetting wgmma_setting() {
    static const WgmmaSetting setting = [] {
        const char* e = std::getenv("FSIG_CUDA_WGMMA");
        if (e == nullptr) return WgmmaSetting::kOff;
        if (std::strcmp(e, "1") == 0) return WgmmaSetting::kOn;
        return std::strcmp(e, "require") == 0 ? WgmmaSetting::kRequired : WgmmaSetting::kOff;
    }();
    return setting;
}

#if FSIG_CUDA_SM90A
// Compiled like every kernel of the library: the PTX version of the code loaded for a device is 90 where
// that is the sm_90a SASS, 80 where the driver JIT-compiled the compute_80 PTX (CUDA_FORCE_PTX_JIT), in
// which the wgmma kernels are traps
__global__ void sm90a_probe_kernel() {}
#endif

// Why the Hopper kernels cannot run on this device (nullptr: they can). Asked before anything of a call is
// launched or written; per device, the answer cached (it cannot change while the process lives).
const char* wgmma_unavailable(int device) {
#if FSIG_CUDA_SM90A
    constexpr int kCachedDevices = 64;
    static std::atomic<int> cached[kCachedDevices];  // 1: they can run (else asked again: a cheap query)
    static thread_local char why[120];
    if (device >= 0 && device < kCachedDevices && cached[device].load(std::memory_order_relaxed) == 1) return nullptr;
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
        cudaGetLastError();
        return "the device's compute capability could not be read";
    }
    cudaFuncAttributes attr;
    if (major != 9 || minor != 0) {
        std::snprintf(why, sizeof why, "cuda:%d has compute capability %d.%d, and sm_90a code runs on 9.0 only",
                      device, major, minor);
    } else if (cudaFuncGetAttributes(&attr, sm90a_probe_kernel) != cudaSuccess) {
        cudaGetLastError();
        std::snprintf(why, sizeof why, "the code loaded for cuda:%d could not be queried", device);
    } else if (attr.ptxVersion < 90) {
        std::snprintf(why, sizeof why, "the code loaded for cuda:%d is not sm_90a's (PTX %d.%d compiled for it)", device,
                      attr.ptxVersion / 10, attr.ptxVersion % 10);
    } else {
        if (device >= 0 && device < kCachedDevices) cached[device].store(1, std::memory_order_relaxed);
        return nullptr;
    }
    return why;
#else
    (void)device;
    return "this library was built without sm_90a code (FSIG_CUDA_ARCHITECTURES)";
#endif
}

// The narrowest kernel width that holds head dim d (check_problem passed it): 0, 1, 2 for 64, 128, 256, the
// index of the launcher tables (the width itself is 64 << index).
int width_index(int64_t d) { return d <= 64 ? 0 : d <= 128 ? 1 : 2; }

// params.workspace (when given): device memory of this device only (one query): atomics or partial sums
// in managed or mapped host memory would cross the bus.
int check_workspace_memory(const Message& m, void* workspace, int64_t bytes, int device) {
    if (workspace == nullptr) return FSIG_OK;
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, workspace) != cudaSuccess || attr.type != cudaMemoryTypeDevice ||
        attr.device != device) {
        cudaGetLastError();
        return m.fail(FSIG_ERROR_INVALID_DEVICE,
                      "params.workspace (%p) must be device memory of cuda:%d (cudaMalloc, fsig_cuda_malloc), "
                      "not another device's, managed or host memory", workspace, device);
    }
    return check_pointer(m, "params.workspace", workspace, bytes, device);
}

}  // namespace

int forward(const ForwardArgs& a, int device, void* stream, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    const Problem& pr = a.p;
    if (int st = check_problem(m, pr, "forward", kForwardMaxHeadDim); st != FSIG_OK) return st;
    const Named tensors[] = {{"q", &a.q}, {"k", &a.k}, {"v", &a.v}, {"out", &a.out}, {"lse", &a.lse}};
    const int n_layout = 4, n_pointers = a.has_lse ? 5 : 4;  // (lse: fp32, any strides)
    for (int i = 0; i < n_layout; ++i)
        if (int st = check_layout(m, tensors[i].name, *tensors[i].t); st != FSIG_OK) return st;

    DeviceGuard guard;
    if (int st = enter_device(m, guard, device, tensors, n_pointers); st != FSIG_OK) return st;
    if (int st = check_extension_pointers(m, pr, nullptr, device); st != FSIG_OK) return st;

    const FwdParams p = make_params(pr, a.q, a.k, a.v, a.out, a.has_lse ? &a.lse : nullptr);
    const int ext = p.ext.on, bf16 = pr.dtype == FSIG_DTYPE_BF16;
    const int width = width_index(pr.head_dim);
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const FwdParams p_wgmma = for_kernel_tiles(p, kWgmmaFwdBlockN, true);
    const FwdLauncher fwd_wgmma = kFwdWgmma[ext][bf16][width];
    const WgmmaSetting wgmma = p_wgmma.ext.elementwise || fwd_wgmma == nullptr ? WgmmaSetting::kOff : wgmma_setting();
    bool launched = false;
    cudaError_t e = cudaSuccess;
    if (wgmma != WgmmaSetting::kOff) {
        const char* why = wgmma_unavailable(device);
        if (why == nullptr) {
            e = fwd_wgmma(p_wgmma, s);
            launched = e != cudaErrorNoKernelImageForDevice;
            if (!launched) cudaGetLastError(), why = "the code loaded for the device is not sm_90a's (PTX compiled for it)";
        }
        if (!launched && wgmma == WgmmaSetting::kRequired)
            return m.fail(FSIG_ERROR_UNSUPPORTED, "FSIG_CUDA_WGMMA=require, but the Hopper (wgmma) kernels cannot run: %s",
                          why);
    }
    if (!launched) e = kFwd[ext][bf16][width](for_kernel_tiles(p, kFwdBlockN, false), s);
    if (e != cudaSuccess) return launch_failure(m, e, "forward", device);
    return FSIG_OK;
}

int backward(const BackwardArgs& a, int device, void* stream, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    const Problem& pr = a.p;
    if (int st = check_problem(m, pr, "backward", kBackwardMaxHeadDim, "cuda_backward_max_head_dim"); st != FSIG_OK)
        return st;
    const bool softmax = pr.score == FSIG_SCORE_SOFTMAX;
    if (softmax && (!a.has_out || !a.has_lse))  // (the C ABI layer already refuses this)
        return m.fail(FSIG_ERROR_NULL_ARGUMENT, "softmax backward needs the forward's out and lse");
    // grids of the dK/dV and dQ kernels, by the finest blocks any of them may take (the pair kernels', at
    // d > 128 or on a GPU with 99 KiB per block), and the dK/dV kernel's per-block tile count (query tiles
    // of 32 rows or more x group), in int32
    const int width = width_index(pr.head_dim);
    const int64_t n_blocks = (pr.seq_k + kBwdPairKvBlockN - 1) / kBwdPairKvBlockN;
    const int64_t q_blocks = (pr.seq_q + kBwdPairQBlockM - 1) / kBwdPairQBlockM;
    if (pr.heads_k > INT32_MAX || n_blocks * pr.heads_k > INT32_MAX / pr.batch ||
        q_blocks * pr.heads_q > INT32_MAX / pr.batch || pr.group() * ((pr.seq_q + 15) / 16) > INT32_MAX)
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "batch %lld x heads_k %lld x %lld key tiles of %d keys (or heads_q %lld x seq_q %lld) exceed "
                      "the 2^31 - 1 limit of the CUDA backward's launch and loop counters; split the batch",
                      (long long)pr.batch, (long long)pr.heads_k, (long long)n_blocks, kBwdPairKvBlockN,
                      (long long)pr.heads_q, (long long)pr.seq_q);
    // out and lse are read by softmax only; the pointwise scores ignore them (they may be absent)
    const Named tensors[] = {{"q", &a.q},   {"k", &a.k},   {"v", &a.v},   {"dout", &a.dout}, {"dq", &a.dq},
                             {"dk", &a.dk}, {"dv", &a.dv}, {"out", &a.out}, {"lse", &a.lse}};
    const int n_layout = softmax ? 8 : 7, n_pointers = softmax ? 9 : 7;
    for (int i = 0; i < n_layout; ++i)
        if (int st = check_layout(m, tensors[i].name, *tensors[i].t); st != FSIG_OK) return st;

    DeviceGuard guard;
    if (int st = enter_device(m, guard, device, tensors, n_pointers); st != FSIG_OK) return st;
    const TensorView* dbias = a.has_dbias ? &a.dbias : nullptr;
    if (int st = check_extension_pointers(m, pr, dbias, device); st != FSIG_OK) return st;
    if (int st = check_workspace_memory(m, a.workspace, a.workspace_bytes, device); st != FSIG_OK) return st;

    BwdParams p{};
    p.f = make_params(pr, a.q, a.k, a.v, softmax ? a.out : a.q, softmax ? &a.lse : nullptr, dbias);
    if (!softmax) p.f.out = nullptr;
    p.dout = a.dout.data, p.dq = a.dq.data, p.dk = a.dk.data, p.dv = a.dv.data;
    p.do_batch = a.dout.stride[0], p.do_row = a.dout.stride[1], p.do_head = a.dout.stride[2];
    p.dq_batch = a.dq.stride[0], p.dq_row = a.dq.stride[1], p.dq_head = a.dq.stride[2];
    p.dk_batch = a.dk.stride[0], p.dk_row = a.dk.stride[1], p.dk_head = a.dk.stride[2];
    p.dv_batch = a.dv.stride[0], p.dv_row = a.dv.stride[1], p.dv_head = a.dv.stride[2];
    p.heads_k = int32_t(pr.heads_k);
    // the C ABI layer passes the workspace on for the fast path, or for a broadcast dbias's partial sums
    const bool dbias_sums = a.has_dbias && a.workspace != nullptr;
    p.dq_accum = dbias_sums ? nullptr : static_cast<float*>(a.workspace);
    if (dbias_sums) {
        static_assert(kDbiasGroupRows == 16, "the dQ kernel's warps sum their 16 rows");
        p.dbias_partial = static_cast<float*>(a.workspace);
        p.dbias_groups = dbias_row_groups(pr.seq_q, a.dbias.shape[2]);
        p.dbias_group_rows = int32_t(dbias_group_rows(pr.seq_q, a.dbias.shape[2]));
        for (int dim = 0; dim < 3; ++dim) p.dbias_shape[dim] = a.dbias.shape[dim];
    }

    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int ext = p.f.ext.on, bf16 = pr.dtype == FSIG_DTYPE_BF16;
    // The Hopper kernels where they can run (bwd_wgmma_kernel.cuh; opted in as the forward's, FSIG_CUDA_WGMMA),
    // else bwd_kernel.cuh's: dK, dV (and on the fast path dS K into the workspace) where β is not needed per
    // element of its 64 x 128 tiles (the Hopper forward's rule) and the kernel is built (extended: width 64,
    // d ≤ 64), on both paths alike, so that their dK and dV stay the same bits; the deterministic path's dQ where β is not
    // needed per element of its 128 x 64 tiles and no dBias is asked for (bwd_kernel.cuh's dQ kernel owns it).
    BwdParams p_dkdv = p, p_dq = p;
    p_dkdv.f = for_kernel_tiles(p.f, kBwdKvBlockN, true, kWgmmaBwdBlockM);
    p_dq.f = for_kernel_tiles(p.f, kWgmmaDqBlockN, true, kBwdQBlockM);
    const BwdLauncher dkdv_wgmma = kBwdWgmma[ext][bf16][width];
    const bool dkdv_fits = !p_dkdv.f.ext.elementwise && dkdv_wgmma != nullptr;
    const BwdLauncher dq_wgmma = kBwdDqWgmma[ext][bf16][width];
    const bool dq_fits =
        p.dq_accum == nullptr && !p_dq.f.ext.elementwise && p.f.ext.dbias == nullptr && dq_wgmma != nullptr;
    WgmmaSetting wgmma = dkdv_fits || dq_fits ? wgmma_setting() : WgmmaSetting::kOff;
    if (wgmma != WgmmaSetting::kOff) {
        if (const char* why = wgmma_unavailable(device); why != nullptr) {
            if (wgmma == WgmmaSetting::kRequired)
                return m.fail(FSIG_ERROR_UNSUPPORTED,
                              "FSIG_CUDA_WGMMA=require, but the Hopper (wgmma) kernels cannot run: %s", why);
            wgmma = WgmmaSetting::kOff;
        }
    }
    // the Hopper kernel where chosen, else (or for code JIT-compiled from compute_80 PTX, unless required)
    // the mma.sync one
    auto launch = [&](bool hopper, BwdLauncher hopper_kernel, const BwdParams& hopper_params, BwdLauncher kernel) {
        if (hopper) {
            const cudaError_t e = hopper_kernel(hopper_params, s);
            if (e != cudaErrorNoKernelImageForDevice || wgmma == WgmmaSetting::kRequired) return e;
            cudaGetLastError();
        }
        return kernel(p, s);
    };
    auto launch_dkdv = [&] {
        return launch(wgmma != WgmmaSetting::kOff && dkdv_fits, dkdv_wgmma, p_dkdv, kBwdDkDv[ext][bf16][width]);
    };
    cudaError_t e;
    const char* which;
    if (p.dq_accum != nullptr) {
        // fast: zero the fp32 dQ, dK/dV kernel adding dS K to it, conversion into dq (stream order)
        which = "workspace clearing";
        e = cudaMemsetAsync(p.dq_accum, 0, size_t(a.workspace_bytes), s);
        if (e == cudaSuccess) which = "dK/dV/dQ", e = launch_dkdv();
        if (e == cudaSuccess)
            which = "dQ conversion", e = (bf16 ? launch_bwd_dq_convert_bf16 : launch_bwd_dq_convert_fp16)(
                                         p, 64 << width, s);
    } else {
        // deterministic: two independent kernels, dK, dV (one block per key tile), then dQ (and dBias; a
        // broadcast one as partial sums into the zeroed workspace, then added up by a third kernel)
        which = "workspace clearing";
        e = dbias_sums ? cudaMemsetAsync(p.dbias_partial, 0, size_t(a.workspace_bytes), s) : cudaSuccess;
        if (e == cudaSuccess) which = "dK/dV", e = launch_dkdv();
        if (e == cudaSuccess)
            which = "dQ", e = launch(wgmma != WgmmaSetting::kOff && dq_fits, dq_wgmma, p_dq,
                                     kBwdDq[ext][bf16][width]);
        if (e == cudaSuccess && dbias_sums) which = "dbias reduction", e = launch_bwd_dbias_reduce(p, s);
    }
    if (e != cudaSuccess) {
        char what[64];
        std::snprintf(what, sizeof what, "backward %s", which);
        return launch_failure(m, e, what, device);
    }
    return FSIG_OK;
}

// ---- memory and streams (fsig_cuda_*) ----

namespace {
int runtime_error(const Message& m, cudaError_t e, const char* what, int device) {
    cudaGetLastError();  // a non-sticky error must not be blamed on the next call
    return m.fail(FSIG_ERROR_CUDA, "%s on cuda:%d failed: %s: %s", what, device, cudaGetErrorName(e),
                  cudaGetErrorString(e));
}

int enter(const Message& m, DeviceGuard& guard, int device) {
    if (cudaError_t e = guard.enter(device); e != cudaSuccess) return runtime_error(m, e, "cudaSetDevice", device);
    return FSIG_OK;
}

// The most shared memory per block any forward (backward) launch of width 64 << w takes, plain or extended,
// on a device that allows `allowed` (the backward's kernels chosen by BwdSmemPlan's rule, as its launchers do)
template <int kWidth>
int forward_most(int allowed) {
    return std::max(FwdSmemPlan<kWidth, false>::most(allowed), FwdSmemPlan<kWidth, true>::most(allowed));
}
template <int kWidth>
int backward_most(int allowed) {
    return std::max(BwdSmemPlan<kWidth, false>::most(allowed), BwdSmemPlan<kWidth, true>::most(allowed));
}
// the largest head dim whose calls all fit: the widest width such that it and every narrower one fit
int max_head_dim(const int (&most)[3], int allowed) {
    int d = 0;
    for (int w = 0; w < 3 && most[w] <= allowed; ++w) d = 64 << w;
    return d;
}
}  // namespace

int device_info(int device, fsig_cuda_device_info& info, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    cudaDeviceProp prop;
    if (cudaError_t e = cudaGetDeviceProperties(&prop, device); e != cudaSuccess)
        return runtime_error(m, e, "cudaGetDeviceProperties", device);
    info.compute_capability = prop.major * 10 + prop.minor;
    info.multiprocessors = prop.multiProcessorCount;
    const int allowed = capped_smem(int(prop.sharedMemPerBlockOptin));
    info.shared_memory_per_block = allowed;
    info.memory_bytes = int64_t(prop.totalGlobalMem);
    const int fwd[3] = {forward_most<64>(allowed), forward_most<128>(allowed), forward_most<256>(allowed)};
    const int bwd[3] = {backward_most<64>(allowed), backward_most<128>(allowed), backward_most<256>(allowed)};
    info.forward_max_head_dim = max_head_dim(fwd, allowed);
    info.backward_max_head_dim = max_head_dim(bwd, allowed);
    static_assert(kForwardMaxHeadDim == 256 && kBackwardMaxHeadDim == 256, "the widths above are the kernels'");
    // the Hopper kernels' check reads the code loaded for the device, so it is entered (its context made)
    // only where they could apply
    info.hopper_kernels = 0;
    if (wgmma_setting() != WgmmaSetting::kOff && info.compute_capability == 90) {
        DeviceGuard guard;
        if (int st = enter(m, guard, device); st != FSIG_OK) return st;
        info.hopper_kernels = wgmma_unavailable(device) == nullptr;
    }
    std::snprintf(info.name, sizeof info.name, "%s", prop.name);
    return FSIG_OK;
}

int malloc_device(int device, int64_t bytes, void** ptr, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    DeviceGuard guard;
    if (int st = enter(m, guard, device); st != FSIG_OK) return st;
    void* p = nullptr;
    if (cudaError_t e = cudaMalloc(&p, size_t(bytes)); e != cudaSuccess) {
        cudaGetLastError();
        return m.fail(e == cudaErrorMemoryAllocation ? FSIG_ERROR_OUT_OF_MEMORY : FSIG_ERROR_CUDA,
                      "cudaMalloc of %lld bytes on cuda:%d failed: %s: %s", (long long)bytes, device,
                      cudaGetErrorName(e), cudaGetErrorString(e));
    }
    *ptr = p;
    return FSIG_OK;
}

int free_device(int device, void* ptr, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    DeviceGuard guard;
    if (int st = enter(m, guard, device); st != FSIG_OK) return st;
    if (cudaError_t e = cudaFree(ptr); e != cudaSuccess) return runtime_error(m, e, "cudaFree", device);
    return FSIG_OK;
}

int memcpy_async(int device, void* dst, const void* src, int64_t bytes, void* stream, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    DeviceGuard guard;
    if (int st = enter(m, guard, device); st != FSIG_OK) return st;
    if (cudaError_t e = cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyDefault, static_cast<cudaStream_t>(stream));
        e != cudaSuccess)
        return runtime_error(m, e, "cudaMemcpyAsync", device);
    return FSIG_OK;
}

int stream_create(int device, void** stream, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    DeviceGuard guard;
    if (int st = enter(m, guard, device); st != FSIG_OK) return st;
    cudaStream_t s = nullptr;
    if (cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); e != cudaSuccess)
        return runtime_error(m, e, "cudaStreamCreateWithFlags", device);
    *stream = s;
    return FSIG_OK;
}

int stream_destroy(int device, void* stream, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    DeviceGuard guard;
    if (int st = enter(m, guard, device); st != FSIG_OK) return st;
    if (cudaError_t e = cudaStreamDestroy(static_cast<cudaStream_t>(stream)); e != cudaSuccess)
        return runtime_error(m, e, "cudaStreamDestroy", device);
    return FSIG_OK;
}

int synchronize(int device, void* stream, char* msg, size_t msg_size) {
    const Message m{msg, msg_size};
    DeviceGuard guard;
    if (int st = enter(m, guard, device); st != FSIG_OK) return st;
    const cudaError_t e = stream != nullptr ? cudaStreamSynchronize(static_cast<cudaStream_t>(stream))
                                            : cudaDeviceSynchronize();
    if (e == cudaSuccess) return FSIG_OK;
    cudaGetLastError();  // a non-sticky error (below) must not be reported again by the next call
    if (e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureInvalidated ||
        e == cudaErrorStreamCaptureImplicit)
        return m.fail(FSIG_ERROR_CUDA,
                      "cannot synchronise cuda:%d while a stream is being captured into a CUDA graph (%s; the "
                      "capture is invalidated): end the capture first", device, cudaGetErrorName(e));
    if (e == cudaErrorInvalidResourceHandle || e == cudaErrorContextIsDestroyed)
        return m.fail(FSIG_ERROR_CUDA, "stream %p is not a live stream of cuda:%d (%s: %s)", stream, device,
                      cudaGetErrorName(e), cudaGetErrorString(e));
    return m.fail(FSIG_ERROR_CUDA,
                  "an asynchronous CUDA error on cuda:%d (a kernel or copy before this synchronise failed): %s: %s",
                  device, cudaGetErrorName(e), cudaGetErrorString(e));
}

// ---- linear attention (cosFormer, elu+1): kernels in linear_kernel.h, launches in linear_runtime.cu ----

namespace {
int check_linear_grid(const Message& m, const Problem& pr) {
    if (linear_max_blocks(pr) > INT32_MAX)
        return m.fail(FSIG_ERROR_UNSUPPORTED,
                      "batch %lld x heads %lld x seq_q %lld exceed the 2^31 - 1 thread blocks of one CUDA launch of "
                      "the linear-attention kernels; split the batch",
                      (long long)pr.batch, (long long)(pr.heads_q > pr.heads_k ? pr.heads_q : pr.heads_k),
                      (long long)pr.seq_q);
    return FSIG_OK;
}
}  // namespace

int linear_forward(const ForwardArgs& a, int64_t length, float epsilon, int device, void* stream, char* msg,
                   size_t msg_size) {
    const Message m{msg, msg_size};
    const Problem& pr = a.p;
    if (int st = check_problem(m, pr, "linear attention", 0); st != FSIG_OK) return st;
    if (int st = check_linear_grid(m, pr); st != FSIG_OK) return st;
    const Named tensors[] = {{"q", &a.q}, {"k", &a.k}, {"v", &a.v}, {"out", &a.out}};
    for (const Named& t : tensors)
        if (int st = check_layout(m, t.name, *t.t); st != FSIG_OK) return st;
    DeviceGuard guard;
    if (int st = enter_device(m, guard, device, tensors, 4); st != FSIG_OK) return st;
    if (int st = check_workspace_memory(m, a.workspace, a.workspace_bytes, device); st != FSIG_OK) return st;
    if (const cudaError_t e = launch_linear_forward(a, length, epsilon, static_cast<cudaStream_t>(stream));
        e != cudaSuccess)
        return launch_failure(m, e, pr.score == FSIG_SCORE_COSFORMER ? "cosformer forward" : "linear_elu forward",
                              device);
    return FSIG_OK;
}

int linear_backward(const BackwardArgs& a, int64_t length, float epsilon, int device, void* stream, char* msg,
                    size_t msg_size) {
    const Message m{msg, msg_size};
    const Problem& pr = a.p;
    if (int st = check_problem(m, pr, "linear attention", 0); st != FSIG_OK) return st;
    if (int st = check_linear_grid(m, pr); st != FSIG_OK) return st;
    // out (optional) is not read: the backward recomputes what it needs
    const Named tensors[] = {{"q", &a.q},       {"k", &a.k},   {"v", &a.v},  {"dout", &a.dout},
                             {"dq", &a.dq},     {"dk", &a.dk}, {"dv", &a.dv}};
    for (const Named& t : tensors)
        if (int st = check_layout(m, t.name, *t.t); st != FSIG_OK) return st;
    DeviceGuard guard;
    if (int st = enter_device(m, guard, device, tensors, 7); st != FSIG_OK) return st;
    if (int st = check_workspace_memory(m, a.workspace, a.workspace_bytes, device); st != FSIG_OK) return st;
    const char* which = "";
    if (const cudaError_t e = launch_linear_backward(a, length, epsilon, static_cast<cudaStream_t>(stream), &which);
        e != cudaSuccess) {
        char what[64];
        std::snprintf(what, sizeof what, "%s backward's %s", pr.score == FSIG_SCORE_COSFORMER ? "cosformer" : "linear_elu",
                      which);
        return launch_failure(m, e, what, device);
    }
    return FSIG_OK;
}

}  // namespace fsig::cuda
