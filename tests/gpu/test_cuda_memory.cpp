// fsig_cuda_* (memory, copies, streams, synchronise) through the C ABI only, as a caller without a
// CUDA runtime of its own (the JVM) uses them.
//   test_cuda_memory --refusals   argument refusals and the no-device answers: runs everywhere
//   test_cuda_memory              on a device: copy round trip, and a forward on device buffers queued
//                                 on a FlashSig stream against the same call on the CPU; exit 77 without one
#include <cmath>
#include <cstdint>
#include <cstdio>
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
    } else {
        int count = 0;
        fsig_capabilities caps;
        std::memset(&caps, 0, sizeof caps);
        caps.struct_size = sizeof caps;
        fsig_get_capabilities(&caps);
        count = caps.cuda_device_count;
        expect(fsig_cuda_malloc(count, 64, &p), FSIG_ERROR_INVALID_DEVICE, "CUDA device(s) exist", "malloc bad ordinal");
        expect(fsig_cuda_malloc(-1, 64, &p), FSIG_ERROR_INVALID_DEVICE, "device_index is -1", "malloc ordinal -1");
    }
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
    }
    std::printf(failures ? "%d check(s) failed\n" : "ok\n", failures);
    return failures ? 1 : 0;
}
