// flashsig-bench: times fsig_attention_forward / _backward through the public C ABI, the way a C/C++
// user calls them. Protocol of DESIGN.md §7: fixed-seed random inputs (never zeros), warm-up, median
// of N timed runs (steady_clock on the CPU; CUDA events on the GPU), every status checked.
//   flashsig-bench --device cpu --dtype fp32 --d 64 --seq 1024 --heads 8 --batch 1 --score all --pass fwd
//   flashsig-bench --protocol design --device cuda          (bf16, hidden 2048, batch 16384/seq)
//   flashsig-bench --overhead                               (ns per tiny call, for the JMH comparison)
// `flashsig-bench --help` lists every option.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "flashsig.h"
#include "parallel_chunks.h"

#ifdef FSIG_BENCH_CUDA
#include <cuda_runtime.h>
#endif
#ifdef FSIG_BENCH_REFERENCE
#include "linear_reference.h"
#include "reference.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;

const char* const kScoreNames[] = {"softmax", "sigmoid", "relu",     "relu2",     "gelu",
                                   "softplus", "identity", "cosformer", "linear_elu"};
constexpr int kScoreCount = 9;
bool is_linear(int score) { return score == FSIG_SCORE_COSFORMER || score == FSIG_SCORE_LINEAR_ELU; }
const char* const kDtypeNames[] = {"fp32", "fp16", "bf16"};
enum Pass { kFwd = 0, kBwd = 1, kFwdBwd = 2 };
const char* const kPassNames[] = {"fwd", "bwd", "fwdbwd"};
// Memory order of q, k, v, out and the gradients (the logical shape stays [B, N, H, d]): bshd is
// contiguous rows, bhsd head-major, bhdn features before positions (a JVM framework's [B, H, d, N]).
const char* const kLayoutNames[] = {"bshd", "bhsd", "bhdn"};
// Work of each pass in units of the forward's 4·Nq·Nk·d per head (FlashAttention's convention:
// backward = 2.5 × forward — five matmuls of the forward's size, counting recomputation of S as one).
const double kPassFactor[] = {1.0, 2.5, 3.5};

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "flashsig-bench: %s (try --help)\n", msg.c_str());
    std::exit(2);
}

void print_help() {
    std::printf(
        "flashsig-bench: time FlashSig attention through its C ABI\n"
        "  --score S        softmax|sigmoid|relu|relu2|gelu|softplus|identity|cosformer|linear_elu, a comma\n"
        "                   list, or all (softmax); the last two are linear attention\n"
        "  --dtype T        fp32|fp16|bf16 or a comma list (fp32; bf16 with --protocol design)\n"
        "  --causal C       0|1|both (0)\n"
        "  --d LIST         head dims, e.g. 64,128 (64)\n"
        "  --seq LIST       sequence lengths, Nq = Nk (1024)\n"
        "  --nk LIST        key lengths when they differ from --seq (then Nq = --seq)\n"
        "  --batch B        batch (1; with --hidden and no --batch: 16384/seq)\n"
        "  --heads H        query heads (8)\n"
        "  --hidden D       heads = D/d per head dim (DESIGN §7 uses 2048)\n"
        "  --gqa-kv-heads K key/value heads, H %% K == 0 (= H)\n"
        "  --window L,R     sliding window (-1 = unbounded side)\n"
        "  --layout LIST    bshd|bhsd|bhdn, a comma list (bshd): memory order of q, k, v, out, dout, dq, dk, dv\n"
        "                   (bhdn = [B, H, d, N], positions contiguous)\n"
        "  --strided LIST   strided (atrous) mask |i - j| mod s == 0, a comma list (0 = off); with --window\n"
        "                   the union window u strided; GFLOP/s still counts the work without it\n"
        "  --device DEV     cpu|cuda (cpu)\n"
        "  --pass P         fwd|bwd|fwdbwd, a comma list, or all (fwd)\n"
        "  --bwd-path P     CUDA backward: fast (a workspace, dQ by atomics), deterministic, or both (fast);\n"
        "                   the linear scores, both directions: with a workspace (fast) or without (deterministic)\n"
        "  --threads N      CPU backend threads (library default: all CPUs of the process)\n"
        "  --warmup N       untimed runs first (1)\n"
        "  --iters N        timed runs (0 = as many as fit in --min-time, at least 3, at most 1000)\n"
        "  --min-time S     seconds of timed runs per case when --iters is 0 (1.0)\n"
        "  --seed N         input seed (42)\n"
        "  --protocol design  DESIGN §7 sweep: bf16, hidden 2048, batch 16384/seq, seq 512..16384,\n"
        "                   d 64,128, causal both, pass fwd,fwdbwd (each can be overridden)\n"
        "  --csv FILE       also append one CSV row per case to FILE\n"
        "  --check          before timing, compare one call per case (shape cut to <= 256 keys/queries)\n"
        "                   against the fp64 reference of tests/ with the DESIGN §6 rule\n"
        "  --overhead       ns per call of a tiny call (B=H=Nq=Nk=1, d=8, fp32), for the JMH comparison\n");
}

std::vector<std::string> split(const std::string& s, char sep = ',') {
    std::vector<std::string> r;
    size_t start = 0;
    while (true) {
        size_t p = s.find(sep, start);
        r.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
        if (p == std::string::npos) break;
        start = p + 1;
    }
    return r;
}

int64_t parse_int(const std::string& s, const char* what) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno != 0) usage_error(std::string(what) + ": not an integer: '" + s + "'");
    return v;
}

std::vector<int64_t> parse_int_list(const std::string& s, const char* what, int64_t min_value) {
    std::vector<int64_t> r;
    for (const auto& x : split(s)) {
        int64_t v = parse_int(x, what);
        if (v < min_value) usage_error(std::string(what) + ": " + x + " is below " + std::to_string(min_value));
        r.push_back(v);
    }
    return r;
}

int index_of(const char* const* names, int n, const std::string& s) {
    for (int i = 0; i < n; ++i)
        if (s == names[i]) return i;
    return -1;
}

std::vector<int> parse_names(const std::string& s, const char* const* names, int n, const char* what) {
    if (s == "all") {
        std::vector<int> all(n);
        for (int i = 0; i < n; ++i) all[i] = i;
        return all;
    }
    std::vector<int> r;
    for (const auto& x : split(s)) {
        int i = index_of(names, n, x);
        if (i < 0) usage_error(std::string("unknown ") + what + " '" + x + "'");
        r.push_back(i);
    }
    return r;
}

struct Options {
    std::vector<int> scores{0}, dtypes{0}, causals{0}, passes{kFwd}, layouts{0};
    std::vector<int64_t> ds{64}, seqs{1024}, nks, strides{0};
    std::vector<int> bwd_paths{0};  // 0 = fast (workspace), 1 = deterministic
    int64_t batch = 0, heads = 8, hidden = 0, kv_heads = 0;
    int64_t window_left = -1, window_right = -1;
    bool cuda = false, check = false, overhead = false;
    int threads = -1, warmup = 1, iters = 0;
    double min_time = 1.0;
    uint64_t seed = 42;
    std::string csv;
};

Options parse_args(int argc, char** argv) {
    Options o;
    bool design = false, have[32] = {};
    enum { kScore, kDtype, kCausal, kD, kSeq, kBatch, kHeads, kHidden, kPassOpt };
    std::vector<std::pair<std::string, std::string>> kv;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            print_help();
            std::exit(0);
        }
        if (a.rfind("--", 0) != 0) usage_error("unexpected argument '" + a + "'");
        std::string key = a.substr(2), val;
        size_t eq = key.find('=');
        bool flag = key == "check" || key == "overhead";
        if (eq != std::string::npos) {
            val = key.substr(eq + 1);
            key = key.substr(0, eq);
        } else if (!flag) {
            if (i + 1 >= argc) usage_error("--" + key + " needs a value");
            val = argv[++i];
        }
        if (key == "protocol") {
            if (val != "design") usage_error("--protocol: only 'design' is known");
            design = true;
        } else {
            kv.emplace_back(key, val);
        }
    }
    if (design) {  // DESIGN.md §7; explicit options below override
        o.dtypes = {2};
        o.hidden = 2048;
        o.seqs = {512, 1024, 2048, 4096, 8192, 16384};
        o.ds = {64, 128};
        o.causals = {0, 1};
        o.passes = {kFwd, kFwdBwd};
    }
    for (const auto& [key, val] : kv) {
        if (key == "score") o.scores = parse_names(val, kScoreNames, kScoreCount, "score"), have[kScore] = true;
        else if (key == "dtype") o.dtypes = parse_names(val, kDtypeNames, 3, "dtype"), have[kDtype] = true;
        else if (key == "causal") {
            if (val == "both") o.causals = {0, 1};
            else if (val == "0" || val == "1") o.causals = {val == "1"};
            else usage_error("--causal: 0, 1 or both");
        } else if (key == "d") o.ds = parse_int_list(val, "--d", 1);
        else if (key == "seq") o.seqs = parse_int_list(val, "--seq", 1);
        else if (key == "nk") o.nks = parse_int_list(val, "--nk", 1);
        else if (key == "strided") o.strides = parse_int_list(val, "--strided", 0);
        else if (key == "batch") o.batch = parse_int(val, "--batch"), have[kBatch] = true;
        else if (key == "heads") o.heads = parse_int(val, "--heads"), have[kHeads] = true;
        else if (key == "hidden") o.hidden = parse_int(val, "--hidden"), have[kHidden] = true;
        else if (key == "gqa-kv-heads") o.kv_heads = parse_int(val, "--gqa-kv-heads");
        else if (key == "window") {
            auto w = split(val);
            if (w.size() != 2) usage_error("--window: L,R");
            o.window_left = parse_int(w[0], "--window"), o.window_right = parse_int(w[1], "--window");
        } else if (key == "device") {
            if (val != "cpu" && val != "cuda") usage_error("--device: cpu or cuda");
            o.cuda = val == "cuda";
        } else if (key == "pass") o.passes = parse_names(val, kPassNames, 3, "pass");
        else if (key == "layout") o.layouts = parse_names(val, kLayoutNames, 3, "layout");
        else if (key == "bwd-path") {
            if (val == "both") o.bwd_paths = {0, 1};
            else if (val == "fast" || val == "deterministic") o.bwd_paths = {val == "deterministic"};
            else usage_error("--bwd-path: fast, deterministic or both");
        }
        else if (key == "threads") o.threads = int(parse_int(val, "--threads"));
        else if (key == "warmup") o.warmup = int(parse_int(val, "--warmup"));
        else if (key == "iters") o.iters = int(parse_int(val, "--iters"));
        else if (key == "min-time") o.min_time = std::atof(val.c_str());
        else if (key == "seed") o.seed = uint64_t(parse_int(val, "--seed"));
        else if (key == "csv") o.csv = val;
        else if (key == "check") o.check = true;
        else if (key == "overhead") o.overhead = true;
        else usage_error("unknown option --" + key);
    }
    if (have[kHeads] && have[kHidden]) usage_error("give --heads or --hidden, not both");
    if (have[kHeads]) o.hidden = 0;
    if (o.batch < 0 || o.heads < 1 || o.hidden < 0 || o.kv_heads < 0 || o.warmup < 0 || o.iters < 0)
        usage_error("batch, heads, hidden, kv heads, warmup and iters must be non-negative");
    if (!o.nks.empty() && o.nks.size() != o.seqs.size() && o.nks.size() != 1)
        usage_error("--nk: one value or one per --seq value");
    return o;
}

// ---- inputs --------------------------------------------------------------------------------------

// splitmix64 + Box–Muller: fixed-seed normal inputs, the same on every machine.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }
    // both of Box–Muller's values, the sine one kept for the next call: half the logs and roots
    float normal() {
        if (has_spare) return has_spare = false, spare;
        double u1 = uniform(), u2 = uniform(), r = std::sqrt(-2.0 * std::log1p(-u1));
        spare = float(r * std::sin(6.283185307179586 * u2)), has_spare = true;
        return float(r * std::cos(6.283185307179586 * u2));
    }

  private:
    float spare = 0;
    bool has_spare = false;
};

uint16_t to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);                                          // round to nearest even
    return uint16_t(x >> 16);
}

float from_bf16(uint16_t h) {
    uint32_t x = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

uint16_t to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u);
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (ax < 0x38800000u) {                                   // subnormal half: round f / 2^-24
        float a;
        std::memcpy(&a, &ax, 4);
        return uint16_t(sign | uint32_t(std::nearbyint(a * 16777216.0f)));
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u) - (112u << 23);
    return uint16_t(sign | (r >> 13));
}

float from_half(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float f;
    if (e == 0) {
        f = std::ldexp(float(m), -24);
        if (sign) f = -f;
        return f;
    }
    uint32_t x = e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e + 112) << 23) | (m << 13));
    std::memcpy(&f, &x, 4);
    return f;
}

size_t esize(int dtype) { return dtype == FSIG_DTYPE_FP32 ? 4 : 2; }

void store(void* base, int dtype, size_t i, float v) {
    if (dtype == FSIG_DTYPE_FP32) static_cast<float*>(base)[i] = v;
    else if (dtype == FSIG_DTYPE_FP16) static_cast<uint16_t*>(base)[i] = to_half(v);
    else static_cast<uint16_t*>(base)[i] = to_bf16(v);
}

float load(const void* base, int dtype, size_t i) {
    if (dtype == FSIG_DTYPE_FP32) return static_cast<const float*>(base)[i];
    uint16_t h = static_cast<const uint16_t*>(base)[i];
    return dtype == FSIG_DTYPE_FP16 ? from_half(h) : from_bf16(h);
}

// ---- buffers (host, or device with a host staging copy) ------------------------------------------

#ifdef FSIG_BENCH_CUDA
void check_cuda_call(int err, const char* what);
#endif

struct Buffer {
    size_t bytes = 0;
    void* host = nullptr;  // always present: inputs are generated and results read back here
    void* dev = nullptr;   // CUDA only
    bool cuda = false;

    Buffer() = default;
    Buffer(size_t n, bool on_cuda) : bytes(n), cuda(on_cuda) {
        host = std::aligned_alloc(64, (n + 63) / 64 * 64);
        if (!host) usage_error("out of host memory (" + std::to_string(n) + " bytes)");
#ifdef FSIG_BENCH_CUDA
        if (cuda) check_cuda_call(cudaMalloc(&dev, n), "cudaMalloc");
#endif
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& o) noexcept { *this = std::move(o); }
    Buffer& operator=(Buffer&& o) noexcept {
        std::swap(bytes, o.bytes), std::swap(host, o.host), std::swap(dev, o.dev), std::swap(cuda, o.cuda);
        return *this;
    }
    ~Buffer() {
        std::free(host);
#ifdef FSIG_BENCH_CUDA
        if (dev) cudaFree(dev);
#endif
    }
    void* data() const { return cuda ? dev : host; }
    void upload() const {
#ifdef FSIG_BENCH_CUDA
        if (cuda) check_cuda_call(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
#endif
    }
    void download() const {
#ifdef FSIG_BENCH_CUDA
        if (cuda) check_cuda_call(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
#endif
    }
    // NaN in every element, so an element the call does not write shows up in --check.
    void poison(int dtype) const {
        for_chunks(bytes / esize(dtype), [&](size_t begin, size_t end, size_t) {
            for (size_t i = begin; i < end; ++i) store(host, dtype, i, std::numeric_limits<float>::quiet_NaN());
        });
        upload();
    }
};

#ifdef FSIG_BENCH_CUDA
void check_cuda_call(int err, const char* what) {
    if (err != 0) {
        std::fprintf(stderr, "flashsig-bench: %s failed: %s\n", what, cudaGetErrorString(cudaError_t(err)));
        std::exit(1);
    }
}
#endif

fsig_tensor bshd(const Buffer& b, int dtype, bool cuda, int64_t B, int64_t N, int64_t H, int64_t d, int layout) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = b.data();
    t.capacity_bytes = int64_t(b.bytes);
    t.dtype = dtype;
    t.device_type = cuda ? FSIG_DEVICE_CUDA : FSIG_DEVICE_CPU;
    t.ndim = 4;
    t.shape[0] = B, t.shape[1] = N, t.shape[2] = H, t.shape[3] = d;
    t.strides[0] = N * H * d;
    if (layout == 0) t.strides[1] = H * d, t.strides[2] = d, t.strides[3] = 1;
    else if (layout == 1) t.strides[1] = d, t.strides[2] = N * d, t.strides[3] = 1;
    else t.strides[1] = 1, t.strides[2] = d * N, t.strides[3] = N;
    return t;
}

fsig_tensor lse_tensor(const Buffer& b, bool cuda, int64_t B, int64_t H, int64_t N) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = b.data();
    t.capacity_bytes = int64_t(b.bytes);
    t.dtype = FSIG_DTYPE_FP32;
    t.device_type = cuda ? FSIG_DEVICE_CUDA : FSIG_DEVICE_CPU;
    t.ndim = 3;
    t.shape[0] = B, t.shape[1] = H, t.shape[2] = N;
    t.strides[0] = H * N, t.strides[1] = N, t.strides[2] = 1;
    return t;
}

// ---- one benchmark case ----------------------------------------------------------------------------

struct Case {
    int score, dtype, causal, pass, layout = 0;
    int64_t B, H, Hk, Nq, Nk, d, wl, wr, strided = 0;
    bool cuda;
    bool deterministic = false;  // backward: params.deterministic (CUDA: no workspace, two kernels)

    std::string describe() const {
        char s[256];
        std::snprintf(s, sizeof s, "%s %s B=%lld H=%lld Hk=%lld Nq=%lld Nk=%lld d=%lld causal=%d window=%lld,%lld%s %s %s",
                      kScoreNames[score], kDtypeNames[dtype], (long long)B, (long long)H, (long long)Hk,
                      (long long)Nq, (long long)Nk, (long long)d, causal, (long long)wl, (long long)wr,
                      strided > 0 ? (" strided=" + std::to_string(strided)).c_str() : "", kLayoutNames[layout],
                      kPassNames[pass]);
        return s;
    }

    bool allowed(int64_t i, int64_t j) const {
        int64_t diag = i + Nk - Nq;
        if (causal && j > diag) return false;
        if (wl >= 0 && j < diag - wl) return false;
        if (wr >= 0 && j > diag + wr) return false;
        return true;
    }

    // Forward FLOPs: 4·B·H·Nq·Nk·d, halved for causal with Nq == Nk (FlashAttention's count). With a
    // window or a causal mask on Nq != Nk, 4·B·H·d per allowed (i, j) pair instead (work actually due).
    // Linear attention counts the work its algorithm does (native/cpu/linear.inc), per query head:
    // the state Σ k̃ ⊗ [v, 1] (2·Nk·F·(d+1)) and its product with every q̃ (2·Nq·F·(d+1)), F = 2d for
    // cosFormer (sin and cos halves), d for elu+1; causal adds the intra-chunk quadratic part of
    // chunks of C = 64 keys, P = q̃ k̃ᵀ and P·[v, 1] over whole C×C blocks: 2·Nq·C·(F + d + 1).
    // Non-causal cosFormer with Nq = Nk = N: ≈ 8·N·d² per head. Backward: the same 2.5× as softmax.
    double forward_flops() const {
        if (is_linear(score)) {
            const double F = score == FSIG_SCORE_COSFORMER ? 2.0 * double(d) : double(d), dv = double(d + 1);
            double per_head = 2.0 * F * dv * double(Nq + Nk);
            if (causal) per_head += 2.0 * double(Nq) * 64.0 * (F + dv);
            return double(B) * double(H) * per_head;
        }
        double full = 4.0 * double(B) * double(H) * double(Nq) * double(Nk) * double(d);
        if (wl < 0 && wr < 0 && (!causal || Nq == Nk)) return causal ? full / 2 : full;
        double pairs = 0;
        for (int64_t i = 0; i < Nq; ++i) {
            int64_t diag = i + Nk - Nq;
            int64_t lo = wl >= 0 ? std::max<int64_t>(0, diag - wl) : 0;
            int64_t hi = Nk - 1;
            if (causal) hi = std::min(hi, diag);
            if (wr >= 0) hi = std::min(hi, diag + wr);
            if (hi >= lo) pairs += double(hi - lo + 1);
        }
        return 4.0 * double(B) * double(H) * pairs * double(d);
    }
};

struct Problem {
    Case c;
    Buffer q, k, v, out, lse, dout, dq, dk, dv, workspace;
    fsig_tensor tq, tk, tv, tout, tlse, tdout, tdq, tdk, tdv;
    fsig_attention_params params;
    bool softmax;

    explicit Problem(const Case& cs, uint64_t seed) : c(cs) {
        const size_t es = esize(c.dtype);
        const size_t nq = size_t(c.B * c.Nq * c.H * c.d), nkv = size_t(c.B * c.Nk * c.Hk * c.d);
        softmax = c.score == FSIG_SCORE_SOFTMAX;
        const bool bwd = c.pass != kFwd;
        q = Buffer(nq * es, c.cuda), k = Buffer(nkv * es, c.cuda), v = Buffer(nkv * es, c.cuda);
        out = Buffer(nq * es, c.cuda);
        if (softmax) lse = Buffer(size_t(c.B * c.H * c.Nq) * 4, c.cuda);
        if (bwd) {
            dout = Buffer(nq * es, c.cuda), dq = Buffer(nq * es, c.cuda);
            dk = Buffer(nkv * es, c.cuda), dv = Buffer(nkv * es, c.cuda);
        }
        uint64_t stream = seed * 4;  // q, k, v, dout: four streams of chunk seeds
        for (const Buffer* b : {&q, &k, &v, &dout}) {
            ++stream;
            if (!b->host) continue;
            for_chunks(b->bytes / es, [&](size_t begin, size_t end, size_t chunk) {
                Rng rng(stream * 0x100000001B3ull + chunk);
                for (size_t i = begin; i < end; ++i) store(b->host, c.dtype, i, rng.normal());
            });
            b->upload();
        }
        // outputs start as NaN, never zeros (zeros hide unwritten elements)
        for (const Buffer* b : {&out, &dq, &dk, &dv})
            if (b->host) b->poison(c.dtype);
        if (softmax) lse.poison(FSIG_DTYPE_FP32);

        tq = bshd(q, c.dtype, c.cuda, c.B, c.Nq, c.H, c.d, c.layout);
        tk = bshd(k, c.dtype, c.cuda, c.B, c.Nk, c.Hk, c.d, c.layout);
        tv = bshd(v, c.dtype, c.cuda, c.B, c.Nk, c.Hk, c.d, c.layout);
        tout = bshd(out, c.dtype, c.cuda, c.B, c.Nq, c.H, c.d, c.layout);
        if (softmax) tlse = lse_tensor(lse, c.cuda, c.B, c.H, c.Nq);
        if (bwd) {
            tdout = bshd(dout, c.dtype, c.cuda, c.B, c.Nq, c.H, c.d, c.layout);
            tdq = bshd(dq, c.dtype, c.cuda, c.B, c.Nq, c.H, c.d, c.layout);
            tdk = bshd(dk, c.dtype, c.cuda, c.B, c.Nk, c.Hk, c.d, c.layout);
            tdv = bshd(dv, c.dtype, c.cuda, c.B, c.Nk, c.Hk, c.d, c.layout);
        }
        params = fsig_attention_params_default();
        params.score = c.score;
        params.causal = c.causal;
        params.window_left = c.wl;
        params.window_right = c.wr;
        params.strided = c.strided;
        params.deterministic = c.deterministic;
        // the fast CUDA backward's workspace (0 on the CPU, or when deterministic); the linear scores' in both
        // directions (their segments' partial states), unless the deterministic path (without one) is asked for
        const bool linear = c.score == FSIG_SCORE_COSFORMER || c.score == FSIG_SCORE_LINEAR_ELU;
        int64_t ws_bytes = 0;
        if ((linear ? !c.deterministic : bwd) &&
            fsig_attention_backward_workspace_size(&params, &tq, &ws_bytes) == FSIG_OK && ws_bytes > 0) {
            workspace = Buffer(size_t(ws_bytes), c.cuda);
            params.workspace = workspace.dev, params.workspace_bytes = ws_bytes;
        }
    }

    // Softmax forward also writes LSE, as training does (backward needs it).
    int forward() const {
        return fsig_attention_forward(&params, &tq, &tk, &tv, &tout, softmax ? &tlse : nullptr, nullptr);
    }
    int backward() const {
        return fsig_attention_backward(&params, &tq, &tk, &tv, softmax ? &tout : nullptr, &tdout,
                                       softmax ? &tlse : nullptr, &tdq, &tdk, &tdv, nullptr);
    }
    int run(int pass) const {
        if (pass == kBwd) return backward();
        int st = forward();
        if (st != FSIG_OK || pass == kFwd) return st;
        return backward();
    }
};

bool report_failure(int status, const char* what, const Case& c) {
    if (status == FSIG_OK) return false;
    std::fprintf(stderr, "FAILED %s [%s]: %s: %s\n", what, c.describe().c_str(), fsig_status_string(status),
                 fsig_last_error());
    return true;
}

#ifdef FSIG_BENCH_CUDA
// A CUDA call's status is returned before its kernels finish: synchronise to surface errors.
int cuda_sync() {
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
        return FSIG_ERROR_CUDA;
    }
    return FSIG_OK;
}
#endif

struct Timing {
    double median_ms = 0, min_ms = 0;
    int iters = 0;
    bool ok = false;
    bool unsupported = false;  // the library has no kernel for this case (e.g. backward on CUDA): skipped
};

// A case the library refuses as unsupported (FSIG_ERROR_UNSUPPORTED, e.g. the CUDA backward of this
// version, or fp32 on CUDA) is reported and skipped, not counted as a failure.
bool report_unsupported(int status, const Case& c) {
    if (status != FSIG_ERROR_UNSUPPORTED) return false;
    std::printf("skipped [%s]: %s\n", c.describe().c_str(), fsig_last_error());
    return true;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Timing time_case(const Problem& p, const Options& o) {
    Timing t;
    const Case& c = p.c;
    if (c.pass == kBwd && p.softmax) {  // backward needs a real O and LSE
        const int st = p.forward();
        if ((t.unsupported = report_unsupported(st, c)) || report_failure(st, "forward (for backward's O, LSE)", c))
            return t;
    }
    for (int i = 0; i < o.warmup; ++i) {
        const int st = p.run(c.pass);
        if ((t.unsupported = report_unsupported(st, c)) || report_failure(st, "warm-up", c)) return t;
    }
#ifdef FSIG_BENCH_CUDA
    if (c.cuda && report_failure(cuda_sync(), "warm-up sync", c)) return t;
#endif
    std::vector<double> ms;
    const int max_iters = o.iters > 0 ? o.iters : 1000;
    const auto start = Clock::now();
#ifdef FSIG_BENCH_CUDA
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    if (c.cuda) check_cuda_call(cudaEventCreate(&e0), "cudaEventCreate"), check_cuda_call(cudaEventCreate(&e1), "cudaEventCreate");
#endif
    while (int(ms.size()) < max_iters) {
        if (o.iters == 0 && ms.size() >= 3 &&
            std::chrono::duration<double>(Clock::now() - start).count() >= o.min_time)
            break;
        int st;
        double elapsed;
#ifdef FSIG_BENCH_CUDA
        if (c.cuda) {
            cudaEventRecord(e0, nullptr);
            st = p.run(c.pass);
            cudaEventRecord(e1, nullptr);
            if (st == FSIG_OK && cudaEventSynchronize(e1) != cudaSuccess) st = cuda_sync();
            float f = 0;
            cudaEventElapsedTime(&f, e0, e1);
            elapsed = f;
        } else
#endif
        {
            auto t0 = Clock::now();
            st = p.run(c.pass);
            elapsed = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        }
        if ((t.unsupported = report_unsupported(st, c)) || report_failure(st, "timed run", c)) return t;
        ms.push_back(elapsed);
    }
#ifdef FSIG_BENCH_CUDA
    if (c.cuda) cudaEventDestroy(e0), cudaEventDestroy(e1);
#endif
    t.median_ms = median(ms);
    t.min_ms = *std::min_element(ms.begin(), ms.end());
    t.iters = int(ms.size());
    t.ok = true;
    return t;
}

// ---- --check: one call against the fp64 reference of tests/ ----------------------------------------

#ifdef FSIG_BENCH_REFERENCE
std::vector<float> host_values(const Buffer& b, int dtype) {
    b.download();
    size_t n = b.bytes / esize(dtype);
    std::vector<float> r(n);
    for (size_t i = 0; i < n; ++i) r[i] = load(b.host, dtype, i);
    return r;
}

// cosFormer / linear_elu: the library's outputs of p against the quadratic form of tests/linear_reference.h.
bool check_linear(const Case& c, const Problem& p, const std::string& name) {
    lref::Spec s;
    s.B = c.B, s.Nq = c.Nq, s.Nk = c.Nk, s.Hq = c.H, s.Hk = c.Hk, s.d = c.d;
    s.map = c.score == FSIG_SCORE_COSFORMER ? lref::kCosformer : lref::kLinearElu, s.causal = c.causal != 0;
    auto qf = host_values(p.q, c.dtype), kf = host_values(p.k, c.dtype), vf = host_values(p.v, c.dtype);
    std::vector<double> q64(qf.begin(), qf.end()), k64(kf.begin(), kf.end()), v64(vf.begin(), vf.end());
    std::vector<int64_t> oshape{c.B, c.Nq, c.H, c.d}, kshape{c.B, c.Nk, c.Hk, c.d};
    bool ok = true;
    std::string line;
    auto rep = [&](const char* what, const ref::RuleResult& r) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "%s%s %.2g/%.2g%s", line.empty() ? "" : ", ", what, r.our_err, r.bound,
                      r.ok ? "" : " FAIL");
        line += buf;
        ok = ok && r.ok;
    };
    auto out = host_values(p.out, c.dtype);
    auto o64 = lref::forward64(s, q64.data(), k64.data(), v64.data());
    auto on = lref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data());
    rep("out", ref::check_rule(name, "out", out.data(), o64.data(), on.data(), out.size(), oshape));
    if (c.pass != kFwd) {
        auto dof = host_values(p.dout, c.dtype);
        std::vector<double> do64(dof.begin(), dof.end());
        auto g64 = lref::backward64(s, q64.data(), k64.data(), v64.data(), do64.data());
        auto gn = lref::backward_naive(s, c.dtype, qf.data(), kf.data(), vf.data(), dof.data());
        auto dq = host_values(p.dq, c.dtype), dk = host_values(p.dk, c.dtype), dv = host_values(p.dv, c.dtype);
        rep("dq", ref::check_rule(name, "dq", dq.data(), g64.dq.data(), gn.dq.data(), dq.size(), oshape));
        rep("dk", ref::check_rule(name, "dk", dk.data(), g64.dk.data(), gn.dk.data(), dk.size(), kshape));
        rep("dv", ref::check_rule(name, "dv", dv.data(), g64.dv.data(), gn.dv.data(), dv.size(), kshape));
    }
    std::printf("  check %s (Nq=%lld Nk=%lld, error/bound): %s%s\n", ok ? "ok" : "FAILED", (long long)c.Nq,
                (long long)c.Nk, line.c_str(), ok ? "" : "  <-- DESIGN §6 rule broken");
    return ok;
}

// The case with its lengths cut to <= 256 and B = 1, Hk <= 2 (the GQA ratio kept), so the fp64
// reference stays fast; score, dtype, d, masks and pass are the case's own.
bool check_case(const Case& full, uint64_t seed) {
    Case c = full;
    c.B = 1;
    c.layout = 0;  // the reference reads bshd; the other layouts are test_attention's (tests/lib_util.h)
    const int64_t ratio = c.H / c.Hk;
    c.Hk = std::min<int64_t>(c.Hk, 2), c.H = c.Hk * ratio;
    c.Nq = std::min<int64_t>(c.Nq, 256), c.Nk = std::min<int64_t>(c.Nk, 256);
    Problem p(c, seed + 1);
    std::string name = "check " + c.describe();
    int st = p.forward();
    if (st == FSIG_OK && c.pass != kFwd) st = p.backward();
#ifdef FSIG_BENCH_CUDA
    if (st == FSIG_OK && c.cuda) st = cuda_sync();
#endif
    if (report_unsupported(st, c)) return true;  // time_case reports it skipped too
    if (report_failure(st, "check call", c)) return false;

    if (is_linear(c.score)) return check_linear(c, p, name);
    ref::Spec s;
    s.B = c.B, s.Nq = c.Nq, s.Nk = c.Nk, s.Hq = c.H, s.Hk = c.Hk, s.d = c.d;
    s.score = c.score, s.causal = c.causal != 0, s.window_left = c.wl, s.window_right = c.wr, s.strided = c.strided;
    auto qf = host_values(p.q, c.dtype), kf = host_values(p.k, c.dtype), vf = host_values(p.v, c.dtype);
    std::vector<double> q64(qf.begin(), qf.end()), k64(kf.begin(), kf.end()), v64(vf.begin(), vf.end());
    bool ok = true;
    std::vector<int64_t> oshape{c.B, c.Nq, c.H, c.d}, kshape{c.B, c.Nk, c.Hk, c.d};
    auto out = host_values(p.out, c.dtype);
    auto r64 = ref::forward64(s, q64.data(), k64.data(), v64.data());
    auto rn = ref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data());
    std::string line;  // one line per case: "out err/bound, dq err/bound, ..."
    auto rep = [&](const char* what, const ref::RuleResult& r) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "%s%s %.2g/%.2g%s", line.empty() ? "" : ", ", what, r.our_err, r.bound,
                      r.ok ? "" : " FAIL");
        line += buf;
        ok = ok && r.ok;
    };
    rep("out", ref::check_rule(name, "out", out.data(), r64.out.data(), rn.out.data(), out.size(), oshape));
    if (c.pass != kFwd) {
        auto dof = host_values(p.dout, c.dtype);
        std::vector<double> do64(dof.begin(), dof.end());
        auto g64 = ref::backward64(s, q64.data(), k64.data(), v64.data(), do64.data());
        auto gn = ref::backward_naive(s, c.dtype, qf.data(), kf.data(), vf.data(), rn.out.data(), dof.data());
        auto dq = host_values(p.dq, c.dtype), dk = host_values(p.dk, c.dtype), dv = host_values(p.dv, c.dtype);
        rep("dq", ref::check_rule(name, "dq", dq.data(), g64.dq.data(), gn.dq.data(), dq.size(), oshape));
        rep("dk", ref::check_rule(name, "dk", dk.data(), g64.dk.data(), gn.dk.data(), dk.size(), kshape));
        rep("dv", ref::check_rule(name, "dv", dv.data(), g64.dv.data(), gn.dv.data(), dv.size(), kshape));
    }
    std::printf("  check %s (Nq=%lld Nk=%lld, error/bound): %s%s\n", ok ? "ok" : "FAILED", (long long)c.Nq,
                (long long)c.Nk, line.c_str(), ok ? "" : "  <-- DESIGN §6 rule broken");
    return ok;
}
#endif

// ---- --overhead ------------------------------------------------------------------------------------

// ns per call for the smallest attention call (B=H=Nq=Nk=1, d=8, fp32, host memory): the number the
// JMH benchmark's Java call is compared with. Median over 15 batches of 200k calls.
int run_overhead() {
    alignas(64) float q[8], k[8], v[8], out[8];
    Rng rng(7);
    for (int i = 0; i < 8; ++i) q[i] = rng.normal(), k[i] = rng.normal(), v[i] = rng.normal(), out[i] = NAN;
    auto mk = [](float* p) {
        fsig_tensor t;
        std::memset(&t, 0, sizeof t);
        t.data = p, t.capacity_bytes = 32, t.dtype = FSIG_DTYPE_FP32, t.device_type = FSIG_DEVICE_CPU;
        t.ndim = 4;
        t.shape[0] = t.shape[1] = t.shape[2] = 1, t.shape[3] = 8;
        t.strides[0] = t.strides[1] = t.strides[2] = 8, t.strides[3] = 1;
        return t;
    };
    fsig_tensor tq = mk(q), tk = mk(k), tv = mk(v), to = mk(out);
    fsig_attention_params prm = fsig_attention_params_default();
    prm.score = FSIG_SCORE_SIGMOID;
    const int batch = 200000, rounds = 15;
    auto bench = [&](const char* label, auto&& call) {
        for (int i = 0; i < batch / 10; ++i)
            if (call() != FSIG_OK) {
                std::fprintf(stderr, "FAILED %s: %s\n", label, fsig_last_error());
                std::exit(1);
            }
        std::vector<double> ns;
        for (int r = 0; r < rounds; ++r) {
            int bad = 0;
            auto t0 = Clock::now();
            for (int i = 0; i < batch; ++i) bad |= call();
            double e = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
            if (bad) {
                std::fprintf(stderr, "FAILED %s: %s\n", label, fsig_last_error());
                std::exit(1);
            }
            ns.push_back(e / batch);
        }
        std::printf("%-52s median %7.1f ns/call  min %7.1f\n", label, median(ns), *std::min_element(ns.begin(), ns.end()));
    };
    std::printf("tiny call: B=1 H=1 Nq=1 Nk=1 d=8 fp32 sigmoid, host memory, %d rounds x %d calls\n", rounds, batch);
    bench("fsig_attention_forward", [&] { return fsig_attention_forward(&prm, &tq, &tk, &tv, &to, nullptr, nullptr); });
    bench("fsig_attention_forward_ex_buffers (the Java path)", [&] {
        return fsig_attention_forward_ex_buffers(&prm, &tq, &tk, &tv, &to, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                 nullptr, q, k, v, out, nullptr, nullptr, nullptr, nullptr, nullptr);
    });
    bench("fsig_get_num_threads (library call floor)", [&] { return fsig_get_num_threads() > 0 ? FSIG_OK : 1; });
    if (std::isnan(out[0])) {
        std::fprintf(stderr, "FAILED: the tiny call did not write out\n");
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse_args(argc, argv);
    if (o.threads >= 0) {
        int st = fsig_set_num_threads(o.threads);
        if (st != FSIG_OK) {
            std::fprintf(stderr, "fsig_set_num_threads(%d): %s: %s\n", o.threads, fsig_status_string(st), fsig_last_error());
            return 1;
        }
    }
    if (o.overhead) return run_overhead();

    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    if (int st = fsig_get_capabilities(&caps); st != FSIG_OK) {
        std::fprintf(stderr, "fsig_get_capabilities: %s: %s\n", fsig_status_string(st), fsig_last_error());
        return 1;
    }
    if (o.cuda) {
        if (caps.cuda_device_count < 1) {
            std::fprintf(stderr, "flashsig-bench: --device cuda, but the library reports no CUDA device (%s).\n",
                         caps.cuda_compiled ? "built with CUDA; no device or driver found"
                                            : "this build of libflashsig has no CUDA support");
            return 3;
        }
#ifndef FSIG_BENCH_CUDA
        std::fprintf(stderr, "flashsig-bench: --device cuda, but this flashsig-bench was built without the CUDA "
                             "runtime (configure where CMake finds the CUDA toolkit)\n");
        return 3;
#endif
    }
#ifndef FSIG_BENCH_REFERENCE
    if (o.check) {
        std::fprintf(stderr, "flashsig-bench: --check needs the reference of tests/ (this build has none)\n");
        return 2;
    }
#endif
    const char* isa = caps.cpu_isa == FSIG_CPU_ISA_AMX           ? "amx"
                      : caps.cpu_isa == FSIG_CPU_ISA_AVX512_BF16 ? "avx512bf16"
                      : caps.cpu_isa == FSIG_CPU_ISA_AVX512  ? "avx512"
                      : caps.cpu_isa == FSIG_CPU_ISA_AVX2    ? "avx2"
                                                             : "?";
    std::printf("flashsig %s, device %s, cpu isa %s, %d threads; median of timed runs after %d warm-up\n",
                fsig_version_string(), o.cuda ? "cuda" : "cpu", isa, caps.cpu_threads, o.warmup);

    FILE* csv = nullptr;
    if (!o.csv.empty()) {
        const std::string header = "device,isa,threads,score,dtype,B,H,Hk,Nq,Nk,d,causal,window_left,window_right,"
                                   "pass,iters,median_ms,min_ms,gflop,rate,strided,bwd_path,layout";
        // Rows are appended only under this version's header: a file from a version with other columns
        // would get rows that do not match its header.
        std::string existing;
        if (FILE* f = std::fopen(o.csv.c_str(), "r")) {
            for (int ch; (ch = std::fgetc(f)) != EOF && ch != '\n';) existing += char(ch);
            std::fclose(f);
            while (!existing.empty() && std::isspace(static_cast<unsigned char>(existing.back()))) existing.pop_back();
        }
        if (!existing.empty() && existing != header)
            usage_error("--csv file " + o.csv + " has other columns (written by another flashsig-bench version?): "
                        "name a new file");
        csv = std::fopen(o.csv.c_str(), "a");
        if (!csv) usage_error("cannot open --csv file " + o.csv);
        if (existing.empty()) std::fprintf(csv, "%s\n", header.c_str());
    }
    const char* unit = o.cuda ? "TFLOP/s" : "GFLOP/s";
    const double unit_div = o.cuda ? 1e12 : 1e9;
    const bool show_strided = o.strides.size() > 1 || o.strides[0] != 0;
    const bool show_path = o.bwd_paths.size() > 1 || o.bwd_paths[0] != 0;
    const bool show_layout = o.layouts.size() > 1 || o.layouts[0] != 0;
    std::printf("%-8s %-4s %5s %4s %6s %6s %4s %6s %-6s %10s %10s %9s%s%s%s\n", "score", "type", "B", "H", "Nq", "Nk",
                "d", "causal", "pass", "median ms", "min ms", unit, show_strided ? "  strided" : "",
                show_layout ? "  layout" : "", show_path ? "  bwd path" : "");
    int failures = 0;
    for (size_t si = 0; si < o.seqs.size(); ++si)
        for (int64_t d : o.ds)
            for (int dtype : o.dtypes)
                for (int causal : o.causals)
                    for (int score : o.scores)
                        for (int64_t strided : o.strides)
                            for (int layout : o.layouts)
                                for (int pass : o.passes)
                                    for (int bwd_path : o.bwd_paths) {
                                        // a forward has no backward path (the linear scores' takes the path's workspace or not)
                                        const bool path_matters =
                                            pass != kFwd || score == FSIG_SCORE_COSFORMER || score == FSIG_SCORE_LINEAR_ELU;
                                        if (!path_matters && bwd_path != o.bwd_paths[0]) continue;
                                        Case c;
                                        c.score = score, c.dtype = dtype, c.causal = causal, c.pass = pass, c.d = d;
                                        c.Nq = o.seqs[si];
                                        c.Nk = o.nks.empty() ? c.Nq : o.nks[o.nks.size() == 1 ? 0 : si];
                                        if (o.hidden > 0) {
                                            if (o.hidden % d) usage_error("--hidden " + std::to_string(o.hidden) + " is not a multiple of d " + std::to_string(d));
                                            c.H = o.hidden / d;
                                        } else {
                                            c.H = o.heads;
                                        }
                                        c.B = o.batch > 0 ? o.batch : (o.hidden > 0 ? std::max<int64_t>(1, 16384 / c.Nq) : 1);
                                        c.Hk = o.kv_heads > 0 ? o.kv_heads : c.H;
                                        if (c.H % c.Hk) usage_error("heads " + std::to_string(c.H) + " not a multiple of --gqa-kv-heads");
                                        c.wl = o.window_left, c.wr = o.window_right;
                                        c.strided = strided;
                                        c.layout = layout;
                                        c.cuda = o.cuda;
                                        c.deterministic = bwd_path == 1;
    #ifdef FSIG_BENCH_REFERENCE
                                        if (o.check && !check_case(c, o.seed)) {
                                            ++failures;
                                            continue;
                                        }
    #endif
                                        Timing t;
                                        {
                                            Problem p(c, o.seed);
                                            t = time_case(p, o);
                                        }
                                        if (!t.ok) {
                                            failures += !t.unsupported;
                                            continue;
                                        }
                                        double flops = c.forward_flops() * kPassFactor[pass];
                                        double rate = flops / (t.median_ms * 1e-3) / unit_div;
                                        std::printf("%-8s %-4s %5lld %4lld %6lld %6lld %4lld %6d %-6s %10.3f %10.3f %9.2f",
                                                    kScoreNames[score], kDtypeNames[dtype], (long long)c.B, (long long)c.H,
                                                    (long long)c.Nq, (long long)c.Nk, (long long)d, causal, kPassNames[pass],
                                                    t.median_ms, t.min_ms, rate);
                                        if (show_strided) std::printf(" %8lld", (long long)strided);
                                        if (show_layout) std::printf("  %6s", kLayoutNames[layout]);
                                        if (show_path && path_matters) std::printf("  %s", bwd_path ? "deterministic" : "fast");
                                        std::printf("\n");
                                        std::fflush(stdout);
                                        if (csv) {
                                            std::fprintf(csv, "%s,%s,%d,%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%d,%lld,%lld,%s,%d,%.6f,%.6f,%.4f,%.4f,%lld,%s,%s\n",
                                                         o.cuda ? "cuda" : "cpu", isa, caps.cpu_threads, kScoreNames[score],
                                                         kDtypeNames[dtype], (long long)c.B, (long long)c.H, (long long)c.Hk,
                                                         (long long)c.Nq, (long long)c.Nk, (long long)d, causal, (long long)c.wl,
                                                         (long long)c.wr, kPassNames[pass], t.iters, t.median_ms, t.min_ms,
                                                         flops / 1e9, rate, (long long)strided,
                                                         !path_matters ? "" : bwd_path ? "deterministic" : "fast",
                                                         kLayoutNames[layout]);
                                            std::fflush(csv);
                                        }
                                    }
    if (csv) std::fclose(csv);
    if (failures) std::fprintf(stderr, "flashsig-bench: %d case(s) failed\n", failures);
    return failures ? 1 : 0;
}
