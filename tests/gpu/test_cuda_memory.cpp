// fsig_cuda_* (memory, copies, streams, synchronise) through the C ABI only, as a caller without a
// CUDA runtime of its own (the JVM) uses them.
//   test_cuda_memory --refusals   argument refusals and the no-device answers: runs everywhere
//   test_cuda_memory              on a device: copy round trip, a forward on device buffers queued on a
//                                 FlashSig stream against the same call on the CPU, and the device's info
//                                 (fsig_cuda_get_device_info); exit 77 without one
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flashsig.h"
#include "reference.h"

namespace {

int failures = 0;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            std::printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
            std::printf(__VA_ARGS__);                                 \
            std::printf("\n");                                        \
            ++failures;                                               \
        }                                                             \
    } while (0)

void expect(int got, int want, const char* needle, const char* what) {
    CHECK(got == want && std::strstr(fsig_last_error(), needle) != nullptr, "%s: status %d '%s', want %d with '%s'",
          what, got, fsig_last_error(), want, needle);
}

bool device_present() {
    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    return fsig_get_capabilities(&caps) == FSIG_OK && caps.cuda_device_count > 0;
}

void refusals() {
    void* p = reinterpret_cast<void*>(0x1234);
    expect(fsig_cuda_malloc(0, 64, nullptr), FSIG_ERROR_NULL_ARGUMENT, "ptr is NULL", "malloc ptr NULL");
    expect(fsig_cuda_malloc(0, 0, &p), FSIG_ERROR_INVALID_PARAMS, "bytes is 0", "malloc 0 bytes");
    CHECK(p == nullptr, "malloc refused but *ptr not cleared");
    expect(fsig_cuda_malloc(0, -5, &p), FSIG_ERROR_INVALID_PARAMS, "bytes is -5", "malloc -5 bytes");
    char a[64], b[64];
    expect(fsig_cuda_memcpy(0, nullptr, b, 8, nullptr), FSIG_ERROR_NULL_ARGUMENT, "dst is NULL", "memcpy dst");
    expect(fsig_cuda_memcpy(0, a, nullptr, 8, nullptr), FSIG_ERROR_NULL_ARGUMENT, "src is NULL", "memcpy src");
    expect(fsig_cuda_memcpy(0, a, b, 0, nullptr), FSIG_ERROR_INVALID_PARAMS, "bytes is 0", "memcpy 0 bytes");
    expect(fsig_cuda_memcpy(0, a, a + 8, 16, nullptr), FSIG_ERROR_ALIASING, "overlap", "memcpy overlap");
    expect(fsig_cuda_memcpy(0, reinterpret_cast<void*>(UINTPTR_MAX - 4), b, 16, nullptr), FSIG_ERROR_INVALID_PARAMS,
           "wraps", "memcpy wrap");
    expect(fsig_cuda_stream_create(0, nullptr), FSIG_ERROR_NULL_ARGUMENT, "stream is NULL", "stream_create NULL");
    expect(fsig_cuda_stream_destroy(0, nullptr), FSIG_ERROR_NULL_ARGUMENT, "stream is NULL", "stream_destroy NULL");
    CHECK(fsig_cuda_free(0, nullptr) == FSIG_OK && fsig_last_error()[0] == '\0', "free(NULL) must succeed");
    fsig_cuda_device_info info;
    std::memset(&info, 0xab, sizeof info);
    info.struct_size = sizeof info;
    expect(fsig_cuda_get_device_info(0, nullptr), FSIG_ERROR_NULL_ARGUMENT, "info is NULL", "device info NULL");
    info.struct_size = sizeof info - 4;
    expect(fsig_cuda_get_device_info(0, &info), FSIG_ERROR_INVALID_PARAMS, "struct_size", "device info old size");
    CHECK(info.compute_capability == int32_t(0xabababab) && info.name[0] == char(0xab),
          "a refused device info call wrote into info");
    info.struct_size = sizeof info;
    if (!device_present()) {
        // every call that reaches a device says why there is none
        fsig_capabilities caps;
        std::memset(&caps, 0, sizeof caps);
        caps.struct_size = sizeof caps;
        fsig_get_capabilities(&caps);
        const char* why = caps.cuda_compiled ? "no CUDA device or driver" : "no CUDA support";
        expect(fsig_cuda_malloc(0, 64, &p), FSIG_ERROR_NO_DEVICE, why, "malloc without a device");
        expect(fsig_cuda_memcpy(0, a, b, 8, nullptr), FSIG_ERROR_NO_DEVICE, why, "memcpy without a device");
        expect(fsig_cuda_stream_create(0, &p), FSIG_ERROR_NO_DEVICE, why, "stream without a device");
        expect(fsig_cuda_synchronize(0, nullptr), FSIG_ERROR_NO_DEVICE, why, "synchronize without a device");
        expect(fsig_cuda_free(0, a), FSIG_ERROR_NO_DEVICE, why, "free without a device");
        expect(fsig_cuda_get_device_info(0, &info), FSIG_ERROR_NO_DEVICE, why, "device info without a device");
        CHECK(info.compute_capability == int32_t(0xabababab), "a refused device info call wrote into info");
    } else {
        int count = 0;
        fsig_capabilities caps;
        std::memset(&caps, 0, sizeof caps);
        caps.struct_size = sizeof caps;
        fsig_get_capabilities(&caps);
        count = caps.cuda_device_count;
        expect(fsig_cuda_malloc(count, 64, &p), FSIG_ERROR_INVALID_DEVICE, "CUDA device(s) exist", "malloc bad ordinal");
        expect(fsig_cuda_malloc(-1, 64, &p), FSIG_ERROR_INVALID_DEVICE, "device_index is -1", "malloc ordinal -1");
        expect(fsig_cuda_get_device_info(count, &info), FSIG_ERROR_INVALID_DEVICE, "CUDA device(s) exist",
               "device info bad ordinal");
        expect(fsig_cuda_get_device_info(-1, &info), FSIG_ERROR_INVALID_DEVICE, "device_index is -1",
               "device info ordinal -1");
        CHECK(info.compute_capability == int32_t(0xabababab), "a refused device info call wrote into info");
    }
}

// cuda:0's info: plausible values, the head dims its shared memory allows (the kernels need 99 KiB for the
// forward up to d = 256 and the backward up to 128, masks included, and 154-162 KiB for the backward up to
// 256; GPUs allow 99, 163 or 227 KiB), the FSIG_CUDA_SMEM_LIMIT_KIB cap, and on the emulator whether the
// Hopper kernels run (its FSIG_EMU_SM, FSIG_EMU_PTX and the library's FSIG_CUDA_WGMMA say so)
void device_info() {
    fsig_cuda_device_info info;
    std::memset(&info, 0xab, sizeof info);
    info.struct_size = sizeof info;
    CHECK(fsig_cuda_get_device_info(0, &info) == FSIG_OK, "device info: %s", fsig_last_error());
    CHECK(info.struct_size == sizeof info, "struct_size changed to %u", info.struct_size);
    CHECK(info.name[0] != '\0' && std::memchr(info.name, '\0', sizeof info.name) != nullptr, "name not a string");
    CHECK(info.compute_capability >= 80 && info.multiprocessors > 0 && info.memory_bytes > 0,
          "compute capability %d, %d multiprocessors, %lld bytes", info.compute_capability, info.multiprocessors,
          (long long)info.memory_bytes);
    const int kib = info.shared_memory_per_block / 1024;
    std::printf("cuda:0 %s: compute capability %d, %d SMs, %lld MiB, %d KiB per block: head dims up to %d forward, %d "
                "backward; Hopper kernels %s\n", info.name, info.compute_capability, info.multiprocessors,
                (long long)(info.memory_bytes >> 20), kib, info.forward_max_head_dim, info.backward_max_head_dim,
                info.hopper_kernels ? "in use" : "not in use");
    const char* cap = std::getenv("FSIG_CUDA_SMEM_LIMIT_KIB");
    if (cap != nullptr) CHECK(kib <= std::atoi(cap), "%d KiB per block despite FSIG_CUDA_SMEM_LIMIT_KIB=%s", kib, cap);
    if (kib >= 163) {
        CHECK(info.forward_max_head_dim == 256 && info.backward_max_head_dim == 256, "%d KiB: head dims %d/%d", kib,
              info.forward_max_head_dim, info.backward_max_head_dim);
    } else if (kib >= 99 && kib < 128) {  // (the compact 256-wide forward; the backward's pair kernels up to 128)
        CHECK(info.forward_max_head_dim == 256 && info.backward_max_head_dim == 128, "%d KiB: head dims %d/%d", kib,
              info.forward_max_head_dim, info.backward_max_head_dim);
    } else {
        std::printf("  (no expectation recorded for %d KiB per block)\n", kib);
    }
    CHECK(info.hopper_kernels == 0 || info.compute_capability == 90, "Hopper kernels on compute capability %d",
          info.compute_capability);
#if defined(FSIG_TEST_ON_EMULATOR)
    const char* sm = std::getenv("FSIG_EMU_SM");
    const char* ptx = std::getenv("FSIG_EMU_PTX");
    const char* setting = std::getenv("FSIG_CUDA_WGMMA");
    const bool hopper = sm != nullptr && std::strcmp(sm, "90") == 0 && (ptx == nullptr || std::atoi(ptx) >= 90) &&
                        setting != nullptr && (std::strcmp(setting, "1") == 0 || std::strcmp(setting, "require") == 0);
    CHECK(info.hopper_kernels == (hopper ? 1 : 0), "emulated: Hopper kernels %d", info.hopper_kernels);
    CHECK(info.compute_capability == (sm != nullptr ? std::atoi(sm) : 80), "emulated compute capability %d",
          info.compute_capability);
#endif
}

fsig_tensor bshd(void* data, int dtype, int device_type, int64_t b, int64_t n, int64_t h, int64_t d) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data;
    t.capacity_bytes = b * n * h * d * 2;
    t.dtype = dtype;
    t.device_type = device_type;
    t.ndim = 4;
    const int64_t shape[4] = {b, n, h, d}, strides[4] = {n * h * d, h * d, d, 1};
    for (int i = 0; i < 4; ++i) t.shape[i] = shape[i], t.strides[i] = strides[i];
    return t;
}

void on_device() {
    const int64_t B = 1, N = 100, H = 2, D = 64, elems = B * N * H * D, bytes = elems * 2;
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    std::vector<uint16_t> host[3], out_gpu(size_t(elems), 0x7fa5), out_cpu(size_t(elems), 0x7fa5);
    for (auto& h : host) {
        h.resize(size_t(elems));
        for (auto& x : h) x = ref::float_to_bf16(normal(rng));
    }
    void* dev[4] = {};
    for (auto& p : dev) CHECK(fsig_cuda_malloc(0, bytes, &p) == FSIG_OK, "malloc: %s", fsig_last_error());
    void* stream = nullptr;
    CHECK(fsig_cuda_stream_create(0, &stream) == FSIG_OK, "stream_create: %s", fsig_last_error());
    for (int i = 0; i < 3; ++i)
        CHECK(fsig_cuda_memcpy(0, dev[i], host[i].data(), bytes, stream) == FSIG_OK, "H2D: %s", fsig_last_error());

    // copy round trip: bytes come back unchanged
    std::vector<uint16_t> back(size_t(elems), 0);
    CHECK(fsig_cuda_memcpy(0, back.data(), dev[0], bytes, stream) == FSIG_OK, "D2H: %s", fsig_last_error());
    CHECK(fsig_cuda_synchronize(0, stream) == FSIG_OK, "synchronize: %s", fsig_last_error());
    CHECK(back == host[0], "round trip changed the bytes");

    fsig_attention_params p = fsig_attention_params_default();
    p.score = FSIG_SCORE_SIGMOID;
    p.causal = 1;
    fsig_tensor q = bshd(dev[0], FSIG_DTYPE_BF16, FSIG_DEVICE_CUDA, B, N, H, D);
    fsig_tensor k = bshd(dev[1], FSIG_DTYPE_BF16, FSIG_DEVICE_CUDA, B, N, H, D);
    fsig_tensor v = bshd(dev[2], FSIG_DTYPE_BF16, FSIG_DEVICE_CUDA, B, N, H, D);
    fsig_tensor o = bshd(dev[3], FSIG_DTYPE_BF16, FSIG_DEVICE_CUDA, B, N, H, D);
    CHECK(fsig_attention_forward(&p, &q, &k, &v, &o, nullptr, stream) == FSIG_OK, "forward: %s", fsig_last_error());
    CHECK(fsig_cuda_memcpy(0, out_gpu.data(), dev[3], bytes, stream) == FSIG_OK, "D2H out: %s", fsig_last_error());
    CHECK(fsig_cuda_synchronize(0, stream) == FSIG_OK, "synchronize: %s", fsig_last_error());

    fsig_tensor qc = bshd(host[0].data(), FSIG_DTYPE_BF16, FSIG_DEVICE_CPU, B, N, H, D);
    fsig_tensor kc = bshd(host[1].data(), FSIG_DTYPE_BF16, FSIG_DEVICE_CPU, B, N, H, D);
    fsig_tensor vc = bshd(host[2].data(), FSIG_DTYPE_BF16, FSIG_DEVICE_CPU, B, N, H, D);
    fsig_tensor oc = bshd(out_cpu.data(), FSIG_DTYPE_BF16, FSIG_DEVICE_CPU, B, N, H, D);
    CHECK(fsig_attention_forward(&p, &qc, &kc, &vc, &oc, nullptr, nullptr) == FSIG_OK, "cpu: %s", fsig_last_error());
    double worst = 0;
    for (int64_t i = 0; i < elems; ++i) {
        const double g = ref::bf16_to_float(out_gpu[size_t(i)]), c = ref::bf16_to_float(out_cpu[size_t(i)]);
        worst = std::isnan(g) ? INFINITY : std::fmax(worst, std::fabs(g - c) / (1 + std::fabs(c)));
    }
    CHECK(worst <= 2e-2, "forward on a FlashSig stream: worst relative difference to the CPU %.3g", worst);

    CHECK(fsig_cuda_stream_destroy(0, stream) == FSIG_OK, "stream_destroy: %s", fsig_last_error());
    for (auto* d : dev) CHECK(fsig_cuda_free(0, d) == FSIG_OK, "free: %s", fsig_last_error());
    CHECK(fsig_cuda_synchronize(0, nullptr) == FSIG_OK, "device synchronize: %s", fsig_last_error());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--refusals") {
        refusals();
    } else {
        if (!device_present()) {
            std::printf("no CUDA device: skipped\n");
            return 77;
        }
        on_device();
        device_info();
    }
    std::printf(failures ? "%d check(s) failed\n" : "ok\n", failures);
    return failures ? 1 : 0;
}
