// The bad-input catalogue of the C ABI (issue "Hardening"; the C counterpart of the Java
// BadInputCatalogueTest). One table of invalid calls: each case is a valid baseline call plus one
// mutation, and states the exact status and the exact fsig_last_error() text (copied from
// native/api.cpp). Every buffer of a call — inputs, outputs (filled with a poison byte) and the guard
// bytes around them — is compared byte for byte after the call: a refused call writes nothing.
// Cases that describe astronomically large tensors use tiny real buffers of exactly their size, so
// under ASan any access before the refusal would be reported.
// Also: every baseline call succeeds and leaves fsig_last_error() == "", errors are per thread, and
// fsig_status_string names every code. Exit 0 when all pass, 1 otherwise (with a diff per mismatch).
#include <atomic>
#include <cstdarg>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "flashsig.h"

namespace {

constexpr int64_t B = 2, NQ = 5, NK = 7, HQ = 4, HK = 2, D = 8;
constexpr size_t kGuard = 64;
constexpr unsigned char kPoison = 0xCD;
constexpr int64_t kI64Max = INT64_MAX, kI64Min = INT64_MIN;

int g_failures = 0;

// FlashSig 0.2 grows fsig_attention_params (linear-attention fields after reserved0) and the score
// enum (cosformer = 7, linear_elu = 8), and accepts the 0.1 struct (48 bytes). The catalogue follows
// whichever header it is compiled against.
template <class T, class = void>
struct HasLinearFields : std::false_type {};
template <class T>
struct HasLinearFields<T, std::void_t<decltype(&T::linear_length)>> : std::true_type {};
constexpr bool kParamsV02 = HasLinearFields<fsig_attention_params>::value;
constexpr int kMaxScore = kParamsV02 ? 8 : 6;
constexpr size_t kParamsSizeV01 = 48;
constexpr size_t kParamsSizeV02 = 64;  // with the linear-attention fields
constexpr size_t kParamsSizeMasks = 96;  // with masks and positions, before the backward's workspace
constexpr size_t kMinParamsSize = kParamsV02 ? kParamsSizeV01 : sizeof(fsig_attention_params);

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

int64_t esize(int dtype) { return dtype == FSIG_DTYPE_FP32 ? 4 : 2; }
const char* dname(int dtype) { return dtype == FSIG_DTYPE_FP32 ? "fp32" : dtype == FSIG_DTYPE_FP16 ? "fp16" : "bf16"; }

// One allocation: [guard | payload | guard] (guards poisoned), or exactly the payload (tiny = true,
// for descriptors that claim far more than exists: ASan reports any access past it).
struct Block {
    std::string label;
    unsigned char* mem = nullptr;
    size_t total = 0;
    unsigned char* payload = nullptr;
    Block(std::string l, size_t bytes, bool guarded) : label(std::move(l)) {
        total = bytes + (guarded ? 2 * kGuard : 0);
        mem = static_cast<unsigned char*>(std::malloc(total ? total : 1));
        std::memset(mem, kPoison, total);
        payload = mem + (guarded ? kGuard : 0);
    }
    ~Block() { std::free(mem); }
};

enum Slot { Q, K, V, OUT, LSE, DOUT, DQ, DK, DV, kSlots };
const char* const kSlotName[kSlots] = {"q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"};

// The tensors of one call, each in a block of its own; inputs hold finite random values, outputs poison.
struct Fx {
    int dt;
    std::vector<std::unique_ptr<Block>> blocks;
    uint64_t rng = 0x2545F4914F6CDD1Dull;

    explicit Fx(int dtype) : dt(dtype) {}

    unsigned next() {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        return unsigned(rng >> 11);
    }
    void fill_input(unsigned char* p, size_t bytes, int dtype) {
        if (dtype == FSIG_DTYPE_FP32) {
            for (size_t i = 0; i + 4 <= bytes; i += 4) {
                const float x = float(int(next() % 2001) - 1000) / 1000.f;
                std::memcpy(p + i, &x, 4);
            }
        } else {
            for (size_t i = 0; i + 2 <= bytes; i += 2) {  // moderate finite fp16 / bf16 values of either sign
                uint16_t h = dtype == FSIG_DTYPE_FP16 ? uint16_t(0x3000 + next() % 0x0800) : uint16_t(0x3E00 + next() % 0x0100);
                h = uint16_t(h | ((next() & 1u) << 15));
                std::memcpy(p + i, &h, 2);
            }
        }
    }
    Block* block(const std::string& label, size_t bytes, bool input, int dtype, bool guarded = true) {
        blocks.push_back(std::make_unique<Block>(label, bytes, guarded));
        Block* b = blocks.back().get();
        if (input) fill_input(b->payload, bytes, dtype);
        return b;
    }
    // A contiguous tensor of its own; skew > 0 places the data pointer that many bytes into the block.
    fsig_tensor make(const char* label, int dtype, std::vector<int64_t> shape, bool input, size_t skew = 0) {
        fsig_tensor t;
        std::memset(&t, 0, sizeof t);
        t.dtype = dtype;
        t.device_type = FSIG_DEVICE_CPU;
        t.ndim = int32_t(shape.size());
        int64_t n = 1;
        for (int i = t.ndim - 1; i >= 0; --i) t.shape[i] = shape[size_t(i)], t.strides[i] = n, n *= shape[size_t(i)];
        const size_t bytes = size_t(n * esize(dtype));
        Block* b = block(label, bytes + skew, input, dtype);
        t.data = b->payload + skew;
        t.capacity_bytes = int64_t(bytes);
        return t;
    }
    // A real buffer of `bytes` bytes (no guards) behind a descriptor whose shape/strides the case sets.
    void* tiny(const char* label, size_t bytes, bool input) { return block(label, bytes, input, dt, false)->payload; }
};

enum Api { kFwd, kFwdBuf, kBwd, kBwdBuf, kOther };
const char* const kApiName[] = {"forward", "forward_buffers", "backward", "backward_buffers", "other"};

struct ParamsExt {  // a caller compiled against a newer header with 16 more bytes of params
    fsig_attention_params p;
    unsigned char tail[16];
};

struct Call {
    Api api = kFwd;
    fsig_attention_params params{};
    ParamsExt ext{};
    const fsig_attention_params* pp = nullptr;  // what is passed (&params unless a case changes it)
    fsig_tensor t[kSlots]{};
    bool present[kSlots]{};
    void* data[kSlots]{};  // the _buffers variants' data arguments
    void* stream = nullptr;
    std::function<int()> other;        // kOther: the call itself
    std::function<std::string()> post;  // kOther: an extra check after the call ("" = fine)
    const void* msg_ptr = nullptr;      // replaces "{ptr}" in the expected message
};

// Sets a tensor's data for both forms of the call.
void set_data(Call& c, int s, void* p) {
    c.t[s].data = p;
    c.data[s] = p;
}
// Replaces a slot's tensor (and its data argument).
void set_tensor(Call& c, int s, const fsig_tensor& t) {
    c.t[s] = t;
    c.present[s] = true;
    c.data[s] = t.data;
}
void drop(Call& c, int s) {
    c.present[s] = false;
    c.data[s] = nullptr;
}

// The valid call a case mutates: softmax forward with lse / softmax backward with out and lse
// (pointwise scores: no lse, and backward without out).
void baseline(Fx& f, Call& c, Api api, int score) {
    c.api = api;
    fsig_attention_params_init(&c.params);
    c.params.score = score;
    c.pp = &c.params;
    if (api == kOther) return;
    const bool softmax = score == FSIG_SCORE_SOFTMAX, bwd = api == kBwd || api == kBwdBuf;
    const std::vector<int64_t> qs = {B, NQ, HQ, D}, ks = {B, NK, HK, D}, ls = {B, HQ, NQ};
    set_tensor(c, Q, f.make("q", f.dt, qs, true));
    set_tensor(c, K, f.make("k", f.dt, ks, true));
    set_tensor(c, V, f.make("v", f.dt, ks, true));
    if (!bwd) {
        set_tensor(c, OUT, f.make("out", f.dt, qs, false));
        if (softmax) set_tensor(c, LSE, f.make("lse", FSIG_DTYPE_FP32, ls, false));
        return;
    }
    if (softmax) {
        set_tensor(c, OUT, f.make("out", f.dt, qs, true));
        set_tensor(c, LSE, f.make("lse", FSIG_DTYPE_FP32, ls, true));
    }
    set_tensor(c, DOUT, f.make("dout", f.dt, qs, true));
    set_tensor(c, DQ, f.make("dq", f.dt, qs, false));
    set_tensor(c, DK, f.make("dk", f.dt, ks, false));
    set_tensor(c, DV, f.make("dv", f.dt, ks, false));
}

int invoke(Call& c) {
    if (c.api == kOther) return c.other();
    const fsig_tensor* d[kSlots];
    fsig_tensor copy[kSlots];
    const bool buffers = c.api == kFwdBuf || c.api == kBwdBuf;
    for (int s = 0; s < kSlots; ++s) {
        copy[s] = c.t[s];
        if (buffers) copy[s].data = nullptr;  // the _buffers variants ignore the descriptors' data
        d[s] = c.present[s] ? &copy[s] : nullptr;
    }
    switch (c.api) {
        case kFwd: return fsig_attention_forward(c.pp, d[Q], d[K], d[V], d[OUT], d[LSE], c.stream);
        case kFwdBuf:
            return fsig_attention_forward_buffers(c.pp, d[Q], d[K], d[V], d[OUT], d[LSE], c.stream, c.data[Q],
                                                  c.data[K], c.data[V], c.data[OUT], c.data[LSE]);
        case kBwd:
            return fsig_attention_backward(c.pp, d[Q], d[K], d[V], d[OUT], d[DOUT], d[LSE], d[DQ], d[DK], d[DV],
                                           c.stream);
        case kBwdBuf:
            return fsig_attention_backward_buffers(c.pp, d[Q], d[K], d[V], d[OUT], d[DOUT], d[LSE], d[DQ], d[DK],
                                                   d[DV], c.stream, c.data[Q], c.data[K], c.data[V], c.data[OUT],
                                                   c.data[DOUT], c.data[LSE], c.data[DQ], c.data[DK], c.data[DV]);
        default: return -1;
    }
}

using Mutation = std::function<void(Fx&, Call&)>;

struct Case {
    std::string name;
    Api api;
    int dtype;
    int score;
    Mutation mutate;
    int status;
    std::string msg;  // exact; "{ptr}" stands for the call's data address (printed with %p)
    std::string skip;  // non-empty: not applicable on this machine, and why
};

std::string expand(std::string msg, const void* p) {
    const size_t at = msg.find("{ptr}");
    if (at != std::string::npos) msg.replace(at, 5, fmt("%p", p));
    return msg;
}

// The message a case wants: exactly, but "{reason}" stands for any non-empty text (what the machine
// itself says, such as why it has no CUDA device)
bool message_matches(const std::string& want, const std::string& msg) {
    const size_t at = want.find("{reason}");
    if (at == std::string::npos) return msg == want;
    const std::string head = want.substr(0, at), tail = want.substr(at + 8);
    return msg.size() > head.size() + tail.size() && msg.compare(0, head.size(), head) == 0 &&
           msg.compare(msg.size() - tail.size(), tail.size(), tail) == 0;
}

// Runs one case; prints a diff and returns false on any mismatch.
bool run_case(const Case& cs) {
    Fx f(cs.dtype);
    Call c;
    baseline(f, c, cs.api, cs.score);
    cs.mutate(f, c);
    std::vector<std::vector<unsigned char>> before;
    for (const auto& b : f.blocks) before.emplace_back(b->mem, b->mem + b->total);
    fsig_set_num_threads(-12345);  // leaves a stale message that the call under test must replace
    const int threads_before = fsig_get_num_threads();
    const int status = invoke(c);
    const std::string msg = fsig_last_error();
    const std::string post = c.post ? c.post() : "";
    const std::string want = expand(cs.msg, c.msg_ptr);
    std::vector<std::string> diffs;
    if (status != cs.status)
        diffs.push_back(fmt("- status %d (%s)\n    + status %d (%s)", cs.status, fsig_status_string(cs.status), status,
                            fsig_status_string(status)));
    if (!message_matches(want, msg)) diffs.push_back("- message \"" + want + "\"\n    + message \"" + msg + "\"");
    if (!post.empty()) diffs.push_back(post);
    if (fsig_get_num_threads() != threads_before)
        diffs.push_back(fmt("thread count changed from %d to %d", threads_before, fsig_get_num_threads()));
    for (size_t i = 0; i < f.blocks.size(); ++i) {
        const Block& b = *f.blocks[i];
        size_t changed = 0, first = 0;
        for (size_t j = 0; j < b.total; ++j)
            if (b.mem[j] != before[i][j] && changed++ == 0) first = j;
        if (changed)
            diffs.push_back(fmt("block '%s' (%zu bytes with guards): %zu byte(s) changed, first at %zu: 0x%02x -> 0x%02x",
                                b.label.c_str(), b.total, changed, first, before[i][first], b.mem[first]));
    }
    if (diffs.empty()) return true;
    std::fprintf(stderr, "FAIL case \"%s\" (%s, %s, score %d):\n", cs.name.c_str(), kApiName[cs.api], dname(cs.dtype),
                 cs.score);
    for (const std::string& d : diffs) std::fprintf(stderr, "    %s\n", d.c_str());
    return false;
}

// ---- the catalogue ---------------------------------------------------------------------------------

std::vector<Case> catalogue(const fsig_capabilities& caps) {
    std::vector<Case> cs;
    const int F32 = FSIG_DTYPE_FP32, F16 = FSIG_DTYPE_FP16, BF = FSIG_DTYPE_BF16;
    const int SM = FSIG_SCORE_SOFTMAX, SIG = FSIG_SCORE_SIGMOID, RELU = FSIG_SCORE_RELU, GELU = FSIG_SCORE_GELU;
    auto add = [&](const std::string& name, Api api, int dtype, int score, Mutation m, int status, std::string msg,
                   std::string skip = "") {
        cs.push_back({name, api, dtype, score, std::move(m), status, std::move(msg), std::move(skip)});
    };
    const int NUL = FSIG_ERROR_NULL_ARGUMENT, SHAPE = FSIG_ERROR_INVALID_SHAPE, DTYPE = FSIG_ERROR_INVALID_DTYPE,
              STRIDE = FSIG_ERROR_INVALID_STRIDE, DEVICE = FSIG_ERROR_INVALID_DEVICE,
              SMALL = FSIG_ERROR_BUFFER_TOO_SMALL, ALIGN = FSIG_ERROR_MISALIGNED, ALIAS = FSIG_ERROR_ALIASING,
              PARAMS = FSIG_ERROR_INVALID_PARAMS, UNSUP = FSIG_ERROR_UNSUPPORTED, NODEV = FSIG_ERROR_NO_DEVICE;
    const size_t psize = sizeof(fsig_attention_params);

    // ---- params ----
    add("params NULL", kFwd, F32, SM, [](Fx&, Call& c) { c.pp = nullptr; }, NUL, "params is NULL");
    add("params NULL (backward)", kBwd, F32, SM, [](Fx&, Call& c) { c.pp = nullptr; }, NUL, "params is NULL");
    add("params NULL (forward_buffers)", kFwdBuf, F32, SM, [](Fx&, Call& c) { c.pp = nullptr; }, NUL, "params is NULL");
    add("params NULL (backward_buffers)", kBwdBuf, F32, RELU, [](Fx&, Call& c) { c.pp = nullptr; }, NUL, "params is NULL");
    const std::string ss = "but this library needs at least " + std::to_string(kMinParamsSize) +
                           ": initialise params with fsig_attention_params_default()";
    add("struct_size 0", kFwd, F32, SM, [](Fx&, Call& c) { c.params.struct_size = 0; }, PARAMS,
        "params.struct_size is 0 " + ss);
    add("struct_size one byte short of the oldest layout", kFwd, F32, SM,
        [=](Fx&, Call& c) { c.params.struct_size = uint32_t(kMinParamsSize - 1); }, PARAMS,
        "params.struct_size is " + std::to_string(kMinParamsSize - 1) + " " + ss);
    add("struct_size 4 (backward)", kBwd, F32, SM, [](Fx&, Call& c) { c.params.struct_size = 4; }, PARAMS,
        "params.struct_size is 4 " + ss);
    if (kParamsV02)  // between the 0.1 size and the current one: no layout has that size
        add("struct_size one byte short of the current layout", kBwd, F32, SM,
            [=](Fx&, Call& c) { c.params.struct_size = uint32_t(psize - 1); }, PARAMS,
            fmt("params.struct_size is %zu, which is no version of fsig_attention_params (%zu, %zu or %zu before, "
                "%zu now): initialise params with fsig_attention_params_default()",
                psize - 1, kParamsSizeV01, kParamsSizeV02, kParamsSizeMasks, psize));
    // the fast CUDA backward's workspace: size and pointer given together, size >= 0 (checked on every device)
    add("workspace_bytes -16 (backward)", kBwd, F32, SM, [](Fx&, Call& c) { c.params.workspace_bytes = -16; }, PARAMS,
        "params.workspace_bytes is -16 but must be >= 0");
    add("workspace_bytes without workspace (backward)", kBwd, F32, RELU,
        [](Fx&, Call& c) { c.params.workspace_bytes = 4096; }, PARAMS,
        "params.workspace is (nil) but params.workspace_bytes is 4096: give both (the CUDA workspace's memory and "
        "its size) or neither");
    add("workspace without workspace_bytes (forward)", kFwd, F32, SM,
        [](Fx& f, Call& c) { c.msg_ptr = c.params.workspace = f.block("ws", 64, false, FSIG_DTYPE_FP32)->payload; },
        PARAMS,
        "params.workspace is {ptr} but params.workspace_bytes is 0: give both (the CUDA workspace's memory and "
        "its size) or neither");
    for (size_t at : {size_t(0), size_t(15)}) {
        add(fmt("newer header sets unknown byte %zu", psize + at), kFwd, F32, SM,
            [=](Fx&, Call& c) {
                c.ext.p = c.params;
                c.ext.p.struct_size = uint32_t(sizeof(ParamsExt));
                c.ext.tail[at] = 1;
                c.pp = &c.ext.p;
            },
            UNSUP, fmt("params sets a field at byte %zu that this library version (%s) does not know", psize + at,
                       fsig_version_string()));
    }
    for (int s : {-1, kMaxScore + 1, INT32_MAX, INT32_MIN})
        add(fmt("score %d", s), s == INT32_MAX ? kBwd : kFwd, F32, SM, [=](Fx&, Call& c) { c.params.score = s; },
            PARAMS, fmt("params.score %d is not a fsig_score (0..%d)", s, kMaxScore));
    const std::string scale_msg = "params.scale must be finite (or NaN for 1/sqrt(d))";
    add("scale +inf", kFwd, F32, SM, [](Fx&, Call& c) { c.params.scale = INFINITY; }, PARAMS, scale_msg);
    add("scale -inf", kFwd, F32, SIG, [](Fx&, Call& c) { c.params.scale = -INFINITY; }, PARAMS, scale_msg);
    add("scale +inf (backward)", kBwd, F32, SM, [](Fx&, Call& c) { c.params.scale = INFINITY; }, PARAMS, scale_msg);
    const std::string bias_msg = "params.sigmoid_bias must be finite (or NaN for -ln Nk)";
    add("sigmoid_bias +inf", kFwd, F32, SIG, [](Fx&, Call& c) { c.params.sigmoid_bias = INFINITY; }, PARAMS, bias_msg);
    add("sigmoid_bias -inf (backward)", kBwd, F32, SIG, [](Fx&, Call& c) { c.params.sigmoid_bias = -INFINITY; }, PARAMS,
        bias_msg);
    add("sigmoid_bias -inf refused for softmax too", kFwd, F32, SM,
        [](Fx&, Call& c) { c.params.sigmoid_bias = -INFINITY; }, PARAMS, bias_msg);
    const std::string alpha_msg = "params.alpha must be finite (default 1)";
    add("alpha NaN", kFwd, F32, RELU, [](Fx&, Call& c) { c.params.alpha = NAN; }, PARAMS, alpha_msg);
    add("alpha +inf", kFwd, F32, GELU, [](Fx&, Call& c) { c.params.alpha = INFINITY; }, PARAMS, alpha_msg);
    add("alpha -inf (backward)", kBwd, F32, RELU, [](Fx&, Call& c) { c.params.alpha = -INFINITY; }, PARAMS, alpha_msg);
    add("alpha -1000: Nk^-alpha overflows", kFwd, F32, RELU, [](Fx&, Call& c) { c.params.alpha = -1000.f; }, PARAMS,
        "params.alpha -1000 makes Nk^-alpha overflow for Nk = 7");
    add("alpha -50 (backward, fp16): Nk^-alpha overflows", kBwd, F16, FSIG_SCORE_IDENTITY,
        [](Fx&, Call& c) { c.params.alpha = -50.f; }, PARAMS, "params.alpha -50 makes Nk^-alpha overflow for Nk = 7");
    add("alpha -1000 refused for softmax too (alpha unused there)", kFwd, F32, SM,
        [](Fx&, Call& c) { c.params.alpha = -1000.f; }, PARAMS, "params.alpha -1000 makes Nk^-alpha overflow for Nk = 7");
    for (int v : {2, -1, INT32_MIN})
        add(fmt("causal %d", v), v == -1 ? kBwd : kFwd, F32, SM, [=](Fx&, Call& c) { c.params.causal = v; }, PARAMS,
            fmt("params.causal is %d but must be 0 or 1", v));
    for (int64_t w : {int64_t(-2), kI64Min}) {
        add(fmt("window_left %lld", (long long)w), kFwd, F32, SM, [=](Fx&, Call& c) { c.params.window_left = w; },
            PARAMS, fmt("params.window_left is %lld but must be >= 0, or -1 for unbounded", (long long)w));
        add(fmt("window_right %lld (backward)", (long long)w), kBwd, F32, SIG,
            [=](Fx&, Call& c) { c.params.window_right = w; }, PARAMS,
            fmt("params.window_right is %lld but must be >= 0, or -1 for unbounded", (long long)w));
    }
    add("window_left -2 with a valid window_right", kBwdBuf, F32, SM,
        [](Fx&, Call& c) { c.params.window_left = -2, c.params.window_right = 3; }, PARAMS,
        "params.window_left is -2 but must be >= 0, or -1 for unbounded");
    for (int v : {2, -1})
        add(fmt("deterministic %d", v), v == 2 ? kBwd : kFwd, F32, SM, [=](Fx&, Call& c) { c.params.deterministic = v; },
            PARAMS, fmt("params.deterministic is %d but must be 0 or 1", v));
    for (int v : {1, -1})
        add(fmt("reserved0 %d", v), v == 1 ? kFwd : kBwd, F32, SM, [=](Fx&, Call& c) { c.params.reserved0 = v; },
            PARAMS, fmt("params.reserved0 is %d but must be 0", v));

    // ---- NULL tensors and data pointers ----
    for (int s : {Q, K, V, OUT})
        add(fmt("%s NULL", kSlotName[s]), kFwd, F32, SM, [=](Fx&, Call& c) { drop(c, s); }, NUL,
            fmt("%s is NULL", kSlotName[s]));
    for (int s : {Q, K, V, OUT, LSE})
        add(fmt("%s.data NULL", kSlotName[s]), kFwd, F32, SM, [=](Fx&, Call& c) { set_data(c, s, nullptr); }, NUL,
            fmt("%s: data pointer is NULL", kSlotName[s]));
    for (int s : {DOUT, DQ, DK, DV})
        add(fmt("%s NULL (backward)", kSlotName[s]), kBwd, F32, SM, [=](Fx&, Call& c) { drop(c, s); }, NUL,
            fmt("%s is NULL", kSlotName[s]));
    add("dv.data NULL (backward)", kBwd, F32, RELU, [](Fx&, Call& c) { set_data(c, DV, nullptr); }, NUL,
        "dv: data pointer is NULL");
    add("q_data NULL (forward_buffers)", kFwdBuf, F32, SM,
        [](Fx&, Call& c) { c.data[Q] = nullptr; }, NUL, "q: data pointer is NULL");
    add("out_data NULL (forward_buffers)", kFwdBuf, F16, SM, [](Fx&, Call& c) { c.data[OUT] = nullptr; }, NUL,
        "out: data pointer is NULL");
    add("lse_data without an lse descriptor (forward_buffers)", kFwdBuf, F32, SM,
        [](Fx&, Call& c) { c.present[LSE] = false; }, NUL, "lse is NULL");
    add("lse descriptor without lse_data (forward_buffers)", kFwdBuf, F32, SM, [](Fx&, Call& c) { c.data[LSE] = nullptr; },
        NUL, "lse: data pointer is NULL");
    add("dq_data NULL (backward_buffers)", kBwdBuf, BF, SM, [](Fx&, Call& c) { c.data[DQ] = nullptr; }, NUL,
        "dq: data pointer is NULL");
    const std::string need_out = "out is NULL but softmax backward needs the forward output";
    const std::string need_lse = "lse is NULL but softmax backward needs the forward LSE";
    add("softmax backward without out", kBwd, F32, SM, [](Fx&, Call& c) { drop(c, OUT); }, NUL, need_out);
    add("softmax backward without lse", kBwd, F32, SM, [](Fx&, Call& c) { drop(c, LSE); }, NUL, need_lse);
    add("softmax backward with out.data NULL", kBwd, F16, SM, [](Fx&, Call& c) { set_data(c, OUT, nullptr); }, NUL,
        need_out);
    add("softmax backward_buffers with out_data NULL", kBwdBuf, F32, SM, [](Fx&, Call& c) { c.data[OUT] = nullptr; },
        NUL, need_out);
    add("softmax backward_buffers with lse_data NULL", kBwdBuf, F32, SM, [](Fx&, Call& c) { c.data[LSE] = nullptr; },
        NUL, need_lse);
    add("pointwise backward_buffers: out descriptor without out_data", kBwdBuf, F32, RELU,
        [](Fx& f, Call& c) {
            set_tensor(c, OUT, f.make("out", F32, {B, NQ, HQ, D}, true));
            c.data[OUT] = nullptr;
        },
        NUL, "out: data pointer is NULL");
    const std::string lse_sm = "lse is given but params.score is not softmax (only softmax has an LSE)";
    add("lse for relu", kFwd, F32, RELU,
        [](Fx& f, Call& c) { set_tensor(c, LSE, f.make("lse", F32, {B, HQ, NQ}, false)); }, PARAMS, lse_sm);
    add("lse_data only, for gelu (forward_buffers)", kFwdBuf, F32, GELU,
        [](Fx& f, Call& c) { c.data[LSE] = f.make("lse", F32, {B, HQ, NQ}, false).data; }, PARAMS, lse_sm);
    add("lse for sigmoid backward", kBwd, F32, SIG,
        [](Fx& f, Call& c) { set_tensor(c, LSE, f.make("lse", F32, {B, HQ, NQ}, true)); }, PARAMS, lse_sm);

    // ---- dtypes ----
    const std::string not_dtype = ".dtype %d is not a fsig_dtype (fp32 = 0, fp16 = 1, bf16 = 2)";
    const struct { int slot; int32_t value; Api api; } bad_dtypes[] = {
        {Q, 3, kFwd}, {K, -1, kFwd}, {OUT, 99, kFwd}, {LSE, 3, kFwd}, {DQ, INT32_MIN, kBwd}, {DOUT, 4, kBwdBuf}};
    for (const auto& b : bad_dtypes)
        add(fmt("%s.dtype %d", kSlotName[b.slot], b.value), b.api, F32, SM,
            [=](Fx&, Call& c) { c.t[b.slot].dtype = b.value; }, DTYPE,
            fmt(("%s" + not_dtype).c_str(), kSlotName[b.slot], b.value));
    const std::string share = ": q, k, v, out and the gradients share one dtype";
    auto retype = [](int s, int dtype) { return [=](Fx&, Call& c) { c.t[s].dtype = dtype; }; };
    add("v fp16 in an fp32 call", kFwd, F32, SM, retype(V, F16), DTYPE, "v is fp16 but q is fp32" + share);
    add("k bf16 in an fp32 call", kFwd, F32, SM, retype(K, BF), DTYPE, "k is bf16 but q is fp32" + share);
    add("q fp16, the others fp32", kFwd, F32, SM, retype(Q, F16), DTYPE, "k is fp32 but q is fp16" + share);
    add("out fp16 in a bf16 call", kFwd, BF, SM, retype(OUT, F16), DTYPE, "out is fp16 but q is bf16" + share);
    add("k fp32 in a bf16 call", kFwd, BF, SM,
        [](Fx& f, Call& c) { set_tensor(c, K, f.make("k32", F32, {B, NK, HK, D}, true)); }, DTYPE,
        "k is fp32 but q is bf16" + share);
    add("lse fp16", kFwd, F32, SM, retype(LSE, F16), DTYPE, "lse is fp16 but must be fp32");
    add("lse bf16 in a bf16 call", kFwd, BF, SM, retype(LSE, BF), DTYPE, "lse is bf16 but must be fp32");
    add("dout fp32 in an fp16 call", kBwd, F16, SM,
        [](Fx& f, Call& c) { set_tensor(c, DOUT, f.make("dout32", F32, {B, NQ, HQ, D}, true)); }, DTYPE,
        "dout is fp32 but q is fp16" + share);
    add("dq bf16 in an fp16 call", kBwd, F16, SM, retype(DQ, BF), DTYPE, "dq is bf16 but q is fp16" + share);
    add("dk fp16 in an fp32 call", kBwd, F32, SIG, retype(DK, F16), DTYPE, "dk is fp16 but k is fp32" + share);
    add("dv bf16 in an fp16 call", kBwd, F16, SIG, retype(DV, BF), DTYPE, "dv is bf16 but k is fp16" + share);
    add("backward out bf16 in an fp32 call", kBwd, F32, SM, retype(OUT, BF), DTYPE, "out is bf16 but q is fp32" + share);
    add("backward lse bf16 in a bf16 call", kBwd, BF, SM, retype(LSE, BF), DTYPE, "lse is bf16 but must be fp32");

    // ---- devices ----
    const std::string not_dev = ".device_type %d is not a fsig_device_type (CPU = 0, CUDA = 1)";
    const std::string bad_idx = ".device_index %d is invalid (0 for the CPU, a CUDA ordinal >= 0)";
    const struct { int slot; int32_t value; Api api; } bad_devs[] = {{Q, 2, kFwd}, {OUT, -1, kFwd}, {LSE, 7, kFwd}, {DK, 2, kBwd}};
    for (const auto& b : bad_devs)
        add(fmt("%s.device_type %d", kSlotName[b.slot], b.value), b.api, F32, SM,
            [=](Fx&, Call& c) { c.t[b.slot].device_type = b.value; }, DEVICE,
            fmt(("%s" + not_dev).c_str(), kSlotName[b.slot], b.value));
    add("q on cpu:1", kFwd, F32, SM, [](Fx&, Call& c) { c.t[Q].device_index = 1; }, DEVICE,
        fmt(("q" + bad_idx).c_str(), 1));
    add("dk on cpu:-1 (backward)", kBwd, F32, SM, [](Fx&, Call& c) { c.t[DK].device_index = -1; }, DEVICE,
        fmt(("dk" + bad_idx).c_str(), -1));
    add("k on cuda:-1", kFwd, F32, SM,
        [](Fx&, Call& c) { c.t[K].device_type = FSIG_DEVICE_CUDA, c.t[K].device_index = -1; }, DEVICE,
        fmt(("k" + bad_idx).c_str(), -1));
    auto on_cuda = [](int s, int idx) {
        return [=](Fx&, Call& c) { c.t[s].device_type = FSIG_DEVICE_CUDA, c.t[s].device_index = idx; };
    };
    const std::string shared_dev = ": all tensors of a call share a device";
    add("k on cuda:0, q on the CPU", kFwd, F32, SM, on_cuda(K, 0), DEVICE, "k is on cuda:0 but q is on cpu:0" + shared_dev);
    add("out on cuda:0, the rest on the CPU", kFwd, F32, SM, on_cuda(OUT, 0), DEVICE,
        "out is on cuda:0 but q is on cpu:0" + shared_dev);
    add("lse on cuda:1, the rest on the CPU", kFwd, F32, SM, on_cuda(LSE, 1), DEVICE,
        "lse is on cuda:1 but q is on cpu:0" + shared_dev);
    add("dv on cuda:0, the rest on the CPU (backward)", kBwd, F32, SM, on_cuda(DV, 0), DEVICE,
        "dv is on cuda:0 but k is on cpu:0" + shared_dev);
    // every tensor on CUDA (host memory behind it): refused before anything is touched where no GPU exists
    std::string nodev_msg, nodev_skip;
    if (!caps.cuda_compiled)
        nodev_msg = "q is a CUDA tensor but this build of libflashsig has no CUDA support";
    else if (caps.cuda_device_count == 0)
        nodev_msg = "q is on cuda:%d but no CUDA device or driver is present ({reason})";
    else
        nodev_skip = "a CUDA device is present";
    for (int idx : {0, 3}) {
        for (Api api : {kFwd, kBwd}) {
            add(fmt("all tensors on cuda:%d without a GPU (%s)", idx, kApiName[api]), api, F16, SM,
                [=](Fx&, Call& c) {
                    for (int s = 0; s < kSlots; ++s) c.t[s].device_type = FSIG_DEVICE_CUDA, c.t[s].device_index = idx;
                },
                NODEV, fmt(nodev_msg.c_str(), idx), nodev_skip);
        }
    }
    const std::string stream_msg = "stream must be NULL for CPU tensors";
    auto with_stream = [](Fx&, Call& c) { c.stream = reinterpret_cast<void*>(uintptr_t(0x1000)); };
    add("stream for CPU tensors", kFwd, F32, SM, with_stream, DEVICE, stream_msg);
    add("stream for CPU tensors (forward_buffers)", kFwdBuf, BF, SIG, with_stream, DEVICE, stream_msg);
    add("stream for CPU tensors (backward)", kBwd, F32, SM, with_stream, DEVICE, stream_msg);

    // ---- rank and shapes ----
    const struct { int slot; int32_t value; Api api; } bad_ranks[] = {
        {Q, 3, kFwd}, {K, 5, kFwd}, {OUT, 0, kFwd}, {LSE, 4, kFwd}, {DOUT, -1, kBwd}, {DK, 2, kBwd}, {LSE, 2, kBwdBuf}};
    for (const auto& b : bad_ranks)
        add(fmt("%s.ndim %d (%s)", kSlotName[b.slot], b.value, kApiName[b.api]), b.api, F32, SM,
            [=](Fx&, Call& c) { c.t[b.slot].ndim = b.value; }, SHAPE,
            fmt("%s.ndim is %d but must be %d", kSlotName[b.slot], b.value, b.slot == LSE ? 3 : 4));
    const struct { int slot, dim; int64_t value; Api api; } bad_dims[] = {
        {Q, 0, 0, kFwd},  {K, 1, 0, kFwd},       {V, 2, -1, kFwd},  {OUT, 3, 0, kFwd},
        {Q, 3, kI64Min, kFwd}, {LSE, 2, 0, kFwd}, {DQ, 1, -5, kBwd}, {DV, 0, 0, kBwdBuf}};
    for (const auto& b : bad_dims)
        add(fmt("%s.shape[%d] = %lld", kSlotName[b.slot], b.dim, (long long)b.value), b.api, F32, SM,
            [=](Fx&, Call& c) { c.t[b.slot].shape[b.dim] = b.value; }, SHAPE,
            fmt("%s.shape[%d] is %lld but every dimension must be >= 1", kSlotName[b.slot], b.dim, (long long)b.value));
    // a dimension that disagrees (the smaller shape fits in the baseline buffer)
    const struct { int slot, dim; int64_t value; const char* what; int64_t want; const char* src; Api api; int score; } mism[] = {
        {K, 0, 1, "batch", B, "q", kFwd, SM},        {K, 3, 4, "head_dim", D, "q", kFwd, SM},
        {V, 0, 1, "batch", B, "k", kFwd, SM},        {V, 1, 6, "seq_k", NK, "k", kFwd, SM},
        {V, 2, 1, "heads_k", HK, "k", kFwd, SM},     {V, 3, 4, "head_dim", D, "k", kFwd, SM},
        {OUT, 0, 1, "batch", B, "q", kFwd, SM},      {OUT, 1, 4, "seq_q", NQ, "q", kFwd, SM},
        {OUT, 2, 2, "heads_q", HQ, "q", kFwd, SM},   {OUT, 3, 4, "head_dim", D, "q", kFwd, SM},
        {LSE, 0, 1, "batch", B, "q", kFwd, SM},      {LSE, 1, 2, "heads_q", HQ, "q", kFwd, SM},
        {LSE, 2, 4, "seq_q", NQ, "q", kFwd, SM},     {DOUT, 1, 4, "seq_q", NQ, "q", kBwd, SM},
        {DQ, 3, 7, "head_dim", D, "q", kBwd, SM},    {DK, 1, 5, "seq_k", NK, "k", kBwd, SM},
        {DV, 2, 1, "heads_k", HK, "k", kBwd, RELU},  {OUT, 1, 4, "seq_q", NQ, "q", kBwd, SM},
        {LSE, 1, 1, "heads_q", HQ, "q", kBwd, SM},   {DK, 0, 1, "batch", B, "k", kBwdBuf, SIG}};
    for (const auto& m : mism)
        add(fmt("%s.shape[%d] (%s) %lld instead of %lld (%s)", kSlotName[m.slot], m.dim, m.what, (long long)m.value,
                (long long)m.want, kApiName[m.api]),
            m.api, F32, m.score, [=](Fx&, Call& c) { c.t[m.slot].shape[m.dim] = m.value; }, SHAPE,
            fmt("%s.shape[%d] (%s) is %lld but must be %lld, as in %s", kSlotName[m.slot], m.dim, m.what,
                (long long)m.value, (long long)m.want, m.src));
    auto q_heads = [](int64_t h) {
        return [=](Fx&, Call& c) { c.t[Q].shape[2] = h, c.t[OUT].shape[2] = h, c.t[LSE].shape[1] = h; };
    };
    add("heads_q 3 not a multiple of heads_k 2", kFwd, F32, SM, q_heads(3), SHAPE,
        "q.shape[2] (heads_q = 3) must be a multiple of k.shape[2] (heads_k = 2) for GQA/MQA");
    add("heads_k 2 > heads_q 1", kFwd, F32, SM, q_heads(1), SHAPE,
        "q.shape[2] (heads_q = 1) must be a multiple of k.shape[2] (heads_k = 2) for GQA/MQA");
    const int64_t dmax = caps.cpu_max_head_dim;
    for (Api api : {kFwd, kBwd}) {
        add(fmt("head_dim %lld beyond the CPU maximum (%s)", (long long)(dmax + 1), kApiName[api]), api, BF, SM,
            [=](Fx& f, Call& c) {
                for (int s = 0; s < kSlots; ++s) {
                    if (!c.present[s]) continue;
                    const bool input = s == Q || s == K || s == V || s == DOUT || (api == kBwd && (s == OUT || s == LSE));
                    set_tensor(c, s, s == LSE ? f.make("lse", F32, {1, 1, 1}, input)
                                              : f.make(kSlotName[s], BF, {1, 1, 1, dmax + 1}, input));
                }
            },
            UNSUP, fmt("q.shape[3] (head_dim) is %lld but the CPU backend supports 1..%lld", (long long)(dmax + 1),
                       (long long)dmax));
    }

    // ---- strides, extents, capacity ----
    const struct { int slot, dim; int64_t value; Api api; } neg[] = {
        {K, 0, -1, kFwd}, {OUT, 3, -1, kFwd}, {LSE, 2, -1, kFwd}, {DQ, 1, kI64Min, kBwd}, {DOUT, 2, -8, kBwdBuf}};
    for (const auto& n : neg)
        add(fmt("%s.strides[%d] = %lld", kSlotName[n.slot], n.dim, (long long)n.value), n.api, F32, SM,
            [=](Fx&, Call& c) { c.t[n.slot].strides[n.dim] = n.value; }, STRIDE,
            fmt("%s.strides[%d] is %lld but strides must be >= 0", kSlotName[n.slot], n.dim, (long long)n.value));
    const std::string overlap_tail =
        " makes elements overlap: an output needs strides that step over the smaller dimensions (dense or sliced layouts)";
    const struct { const char* name; int slot; int64_t s[4]; int bad_dim; Api api; int score; } self[] = {
        {"out writes an element twice (heads stride 0)", OUT, {NQ * HQ * D, HQ * D, 0, 1}, 2, kFwd, SM},
        {"out rows interleaved (heads stride 4 < head_dim 8)", OUT, {NQ * HQ * D, HQ * D, 4, 1}, 2, kFwd, SM},
        {"lse broadcast over batch as an output", LSE, {0, NQ, 1, 0}, 0, kFwd, SM},
        {"dk seq stride 0", DK, {NK * HK * D, 0, D, 1}, 1, kBwd, SM},
        {"dv heads overlap the sequence", DV, {NK * HK * D, D, D, 1}, 2, kBwd, RELU},
        {"dq heads stride 6 < head_dim 8 (backward_buffers)", DQ, {120, 24, 6, 1}, 2, kBwdBuf, SIG}};
    for (const auto& o : self)
        add(o.name, o.api, F32, o.score,
            [=](Fx&, Call& c) {
                for (int i = 0; i < 4; ++i) c.t[o.slot].strides[i] = o.s[i];
            },
            STRIDE, fmt("%s.strides[%d] = %lld", kSlotName[o.slot], o.bad_dim, (long long)o.s[o.bad_dim]) + overlap_tail);
    const std::string elems = ": shape and strides address more than 2^63 elements";
    const std::string bytes = ": shape and strides address more than 2^63 bytes";
    auto tensor_with = [](Fx& f, Call& c, int s, std::vector<int64_t> shape, std::vector<int64_t> strides, bool input,
                          size_t real_bytes, int dtype) {
        fsig_tensor t = c.t[s];
        t.dtype = dtype;
        t.ndim = int32_t(shape.size());
        for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i], t.strides[i] = strides[i];
        t.data = f.tiny(kSlotName[s], real_bytes, input);
        t.capacity_bytes = int64_t(real_bytes);
        set_tensor(c, s, t);
    };
    const int64_t T40 = int64_t(1) << 40;
    add("k 2^40 x 2^40 rows, contiguous: element count overflows", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, K, {T40, T40, HK, D}, {T40 * 16, HK * D, D, 1}, true, 64, F32); },
        STRIDE, "k" + elems);
    add("out batch stride INT64_MAX", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, OUT, {B, NQ, HQ, D}, {kI64Max, HQ * D, D, 1}, false, 64, F32); }, STRIDE,
        "out" + elems);
    add("v head_dim stride INT64_MAX", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, V, {B, NK, HK, D}, {NK * HK * D, HK * D, D, kI64Max}, true, 64, F32); },
        STRIDE, "v" + elems);
    add("q head_dim INT64_MAX with unit stride: the sum overflows", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, Q, {B, NQ, HQ, kI64Max}, {NQ * HQ * D, HQ * D, D, 1}, true, 64, F32); },
        STRIDE, "q" + elems);
    add("dq batch 2^62, contiguous (backward)", kBwd, F32, SM,
        [=](Fx& f, Call& c) {
            tensor_with(f, c, DQ, {int64_t(1) << 62, NQ, HQ, D}, {NQ * HQ * D, HQ * D, D, 1}, false, 64, F32);
        },
        STRIDE, "dq" + elems);
    add("q batch stride 2^61 (fp32): the byte count overflows", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, Q, {B, NQ, HQ, D}, {int64_t(1) << 61, HQ * D, D, 1}, true, 64, F32); },
        STRIDE, "q" + bytes);
    add("dout batch stride 2^62 (fp16): the byte count overflows", kBwd, F16, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, DOUT, {B, NQ, HQ, D}, {int64_t(1) << 62, HQ * D, D, 1}, true, 64, F16); },
        STRIDE, "dout" + bytes);
    add("lse extent exactly INT64_MAX elements: bytes overflow", kFwd, F32, SM,
        [=](Fx& f, Call& c) {
            tensor_with(f, c, LSE, {B, HQ, NQ}, {kI64Max - 1 - ((HQ - 1) * NQ + NQ - 1), NQ, 1}, false, 64, F32);
        },
        STRIDE, "lse" + bytes);
    add("lse last element at INT64_MAX: extent + 1 overflows", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, LSE, {B, HQ, NQ}, {kI64Max - ((HQ - 1) * NQ + NQ - 1), NQ, 1}, false, 64, F32); },
        STRIDE, "lse" + bytes);
    add("q data address wraps around", kFwd, F32, SM,
        [](Fx&, Call& c) { set_data(c, Q, reinterpret_cast<void*>(~uintptr_t(0xFF))); }, STRIDE,
        "q: data address plus extent wraps around");
    add("dk data address wraps around (backward_buffers)", kBwdBuf, F32, SM,
        [](Fx&, Call& c) { c.data[DK] = reinterpret_cast<void*>(~uintptr_t(0x3F)); }, STRIDE,
        "dk: data address plus extent wraps around");
    // 2^40 x 2^40 problems whose every tensor is valid on its own (zero strides on inputs): refused
    add("2^40 query rows of zero-stride q: out disagrees", kFwd, F32, SM,
        [=](Fx& f, Call& c) { tensor_with(f, c, Q, {B, T40, HQ, D}, {0, 0, 0, 0}, true, 4, F32); }, SHAPE,
        "out.shape[1] (seq_q) is 5 but must be 1099511627776, as in q");
    add("2^40 x 2^40 zero-stride out writes one element 2^40 times", kFwd, F32, SIG,
        [=](Fx& f, Call& c) {
            tensor_with(f, c, Q, {1, T40, 1, 1}, {0, 0, 0, 0}, true, 4, F32);
            tensor_with(f, c, K, {1, T40, 1, 1}, {0, 0, 0, 0}, true, 4, F32);
            tensor_with(f, c, V, {1, T40, 1, 1}, {0, 0, 0, 0}, true, 4, F32);
            tensor_with(f, c, OUT, {1, T40, 1, 1}, {0, 0, 0, 0}, false, 4, F32);
        },
        STRIDE, "out.strides[1] = 0" + overlap_tail);
    add("2^40 x 2^40 zero-stride dq (backward)", kBwd, F16, RELU,
        [=](Fx& f, Call& c) {
            for (int s : {Q, K, V, DOUT}) tensor_with(f, c, s, {1, T40, 1, 1}, {0, 0, 0, 0}, true, 2, F16);
            for (int s : {DQ, DK, DV}) tensor_with(f, c, s, {1, T40, 1, 1}, {0, 0, 0, 0}, false, 2, F16);
        },
        STRIDE, "dq.strides[1] = 0" + overlap_tail);
    {
        // out of 2^40 rows, contiguous: no overflow, but 2^48 bytes are not there
        const __int128 last = __int128(B - 1) * (T40 * HQ * D) + __int128(T40 - 1) * (HQ * D) + (HQ - 1) * D + (D - 1);
        const long long reach = (long long)((last + 1) * 4);
        add("out of 2^40 rows behind a 64-byte buffer", kFwd, F32, SM,
            [=](Fx& f, Call& c) {
                tensor_with(f, c, Q, {B, T40, HQ, D}, {0, 0, 0, 0}, true, 4, F32);
                tensor_with(f, c, OUT, {B, T40, HQ, D}, {T40 * HQ * D, HQ * D, D, 1}, false, 64, F32);
            },
            SMALL, fmt("out: shape and strides reach %lld bytes but capacity_bytes is 64", reach));
        const __int128 lastq = __int128((1 << 20) - 1) * ((int64_t(1) << 20) * HQ * D) +
                               __int128((1 << 20) - 1) * (HQ * D) + (HQ - 1) * D + (D - 1);
        add("q of 2^20 x 2^20 rows behind a 64-byte buffer", kFwd, F16, SM,
            [=](Fx& f, Call& c) {
                tensor_with(f, c, Q, {1 << 20, 1 << 20, HQ, D}, {(int64_t(1) << 20) * HQ * D, HQ * D, D, 1}, true, 64, F16);
            },
            SMALL, fmt("q: shape and strides reach %lld bytes but capacity_bytes is 64", (long long)((lastq + 1) * 2)));
    }
    auto cap = [](int s, int64_t v) { return [=](Fx&, Call& c) { c.t[s].capacity_bytes = v; }; };
    auto reach = [](const char* n, long long r, long long capv) {
        return fmt("%s: shape and strides reach %lld bytes but capacity_bytes is %lld", n, r, capv);
    };
    add("q one byte short", kFwd, F32, SM, cap(Q, 1279), SMALL, reach("q", 1280, 1279));
    add("k one byte short (fp16)", kFwd, F16, SM, cap(K, 447), SMALL, reach("k", 448, 447));
    add("out one byte short (bf16)", kFwd, BF, SM, cap(OUT, 639), SMALL, reach("out", 640, 639));
    add("lse one byte short", kFwd, F32, SM, cap(LSE, 159), SMALL, reach("lse", 160, 159));
    add("dv one byte short (backward)", kBwd, F32, RELU, cap(DV, 895), SMALL, reach("dv", 896, 895));
    add("dout one byte short (backward_buffers, bf16)", kBwdBuf, BF, SM, cap(DOUT, 639), SMALL, reach("dout", 640, 639));
    add("backward lse one byte short", kBwd, F32, SM, cap(LSE, 159), SMALL, reach("lse", 160, 159));
    add("out capacity 0", kFwd, F32, SM, cap(OUT, 0), SMALL, reach("out", 1280, 0));
    add("q capacity -1", kFwd, F32, SM, cap(Q, -1), SMALL, reach("q", 1280, -1));
    add("lse capacity INT64_MIN", kFwd, F32, SM, cap(LSE, kI64Min), SMALL, reach("lse", 160, (long long)kI64Min));
    add("dk capacity -896 (backward)", kBwd, F32, SM, cap(DK, -896), SMALL, reach("dk", 896, -896));
    add("v batch stride steps past the end", kFwd, F32, SM, [](Fx&, Call& c) { c.t[V].strides[0] = 200; }, SMALL,
        reach("v", (200 + 6 * 16 + 8 + 7 + 1) * 4, 896));
    add("out padded rows past the end", kFwd, F32, SM, [](Fx&, Call& c) { c.t[OUT].strides[1] = HQ * D + 1; }, SMALL,
        reach("out", (NQ * HQ * D + 4 * (HQ * D + 1) + 3 * D + 7 + 1) * 4, 1280));

    // ---- alignment ----
    auto skewed = [](int s, int dtype, std::vector<int64_t> shape, bool input, size_t skew) {
        return [=](Fx& f, Call& c) {
            set_tensor(c, s, f.make(kSlotName[s], dtype, shape, input, skew));
            c.msg_ptr = c.t[s].data;
        };
    };
    const std::string unaligned = ": data address {ptr} is not aligned to its %s element size (%d bytes)";
    const std::vector<int64_t> qs = {B, NQ, HQ, D}, ks = {B, NK, HK, D}, ls = {B, HQ, NQ};
    add("q at +1 byte (fp32)", kFwd, F32, SM, skewed(Q, F32, qs, true, 1), ALIGN, fmt(("q" + unaligned).c_str(), "fp32", 4));
    add("out at +2 bytes (fp32)", kFwd, F32, SM, skewed(OUT, F32, qs, false, 2), ALIGN,
        fmt(("out" + unaligned).c_str(), "fp32", 4));
    add("lse at +1 byte", kFwd, F16, SM, skewed(LSE, F32, ls, false, 1), ALIGN, fmt(("lse" + unaligned).c_str(), "fp32", 4));
    add("v at +1 byte (fp16)", kFwd, F16, SM, skewed(V, F16, ks, true, 1), ALIGN, fmt(("v" + unaligned).c_str(), "fp16", 2));
    add("dk at +3 bytes (backward)", kBwd, F32, SM, skewed(DK, F32, ks, false, 3), ALIGN,
        fmt(("dk" + unaligned).c_str(), "fp32", 4));
    add("dq at +1 byte (bf16, backward)", kBwd, BF, RELU, skewed(DQ, BF, qs, false, 1), ALIGN,
        fmt(("dq" + unaligned).c_str(), "bf16", 2));
    add("k_data at +2 bytes (forward_buffers, fp32)", kFwdBuf, F32, SM,
        [](Fx& f, Call& c) {
            Block* b = f.block("k+2", size_t(B * NK * HK * D * 4 + 2), true, F32);
            c.data[K] = b->payload + 2;
            c.msg_ptr = c.data[K];
        },
        ALIGN, fmt(("k" + unaligned).c_str(), "fp32", 4));

    // ---- aliasing ----
    const std::string alias_tail = " in memory: outputs must not share bytes with any other tensor";
    auto alias = [](int out_slot, int in_slot) {  // the output's data is the other tensor's data
        return [=](Fx&, Call& c) { set_data(c, out_slot, c.t[in_slot].data); };
    };
    // The output's first bytes are the last `overlap` bytes of the other tensor (one block holds both).
    auto tail_overlap = [](int out_slot, int other, int64_t overlap) {
        return [=](Fx& f, Call& c) {
            const int64_t a = c.t[other].capacity_bytes, b = c.t[out_slot].capacity_bytes;
            Block* blk = f.block(std::string(kSlotName[other]) + "+" + kSlotName[out_slot], size_t(a + b - overlap), true,
                                 c.t[other].dtype);
            std::memcpy(blk->payload, c.t[other].data, size_t(a));
            std::memset(blk->payload + a, kPoison, size_t(b - overlap));  // the output's own bytes: poison
            set_data(c, other, blk->payload);
            set_data(c, out_slot, blk->payload + a - overlap);
        };
    };
    add("out is q", kFwd, F32, SM, alias(OUT, Q), ALIAS, "out overlaps q" + alias_tail);
    add("out overlaps the last 4 bytes of k", kFwd, F32, SM, tail_overlap(OUT, K, 4), ALIAS, "out overlaps k" + alias_tail);
    add("out overlaps the last 2 bytes of v (fp16)", kFwd, F16, SIG, tail_overlap(OUT, V, 2), ALIAS,
        "out overlaps v" + alias_tail);
    add("lse overlaps the end of out", kFwd, F32, SM, tail_overlap(LSE, OUT, 4), ALIAS, "lse overlaps out" + alias_tail);
    add("lse inside q", kFwd, F32, SM, alias(LSE, Q), ALIAS, "lse overlaps q" + alias_tail);
    add("out_data is q_data (forward_buffers)", kFwdBuf, BF, SM, [](Fx&, Call& c) { c.data[OUT] = c.data[Q]; }, ALIAS,
        "out overlaps q" + alias_tail);
    add("dq is q", kBwd, F32, SM, alias(DQ, Q), ALIAS, "dq overlaps q" + alias_tail);
    add("dq is dout", kBwd, F32, SM, alias(DQ, DOUT), ALIAS, "dq overlaps dout" + alias_tail);
    add("dk is v", kBwd, F32, SM, alias(DK, V), ALIAS, "dk overlaps v" + alias_tail);
    add("dv is the forward out", kBwd, F16, SM, alias(DV, OUT), ALIAS, "dv overlaps out" + alias_tail);
    add("dv overlaps the end of lse", kBwd, F32, SM, tail_overlap(DV, LSE, 4), ALIAS, "dv overlaps lse" + alias_tail);
    add("dq overlaps dk", kBwd, F32, SM, tail_overlap(DK, DQ, 4), ALIAS, "dq overlaps dk" + alias_tail);
    add("dk is dv", kBwd, F32, RELU, alias(DV, DK), ALIAS, "dk overlaps dv" + alias_tail);
    add("dq overlaps dv", kBwdBuf, BF, SIG, tail_overlap(DV, DQ, 2), ALIAS, "dq overlaps dv" + alias_tail);
    add("dk overlaps k (backward_buffers)", kBwdBuf, F32, SM, [](Fx&, Call& c) { c.data[DK] = c.data[K]; }, ALIAS,
        "dk overlaps k" + alias_tail);

    // ---- the other entry points ----
    add("fsig_attention_params_init(NULL)", kOther, F32, SM,
        [](Fx&, Call& c) { c.other = [] { return fsig_attention_params_init(nullptr); }; }, NUL, "params is NULL");
    add("fsig_get_capabilities(NULL)", kOther, F32, SM,
        [](Fx&, Call& c) { c.other = [] { return fsig_get_capabilities(nullptr); }; }, NUL, "caps is NULL");
    // a struct up to cuda_backward_max_head_dim (before that field) is the smallest accepted
    constexpr uint32_t kCapsOldSize = uint32_t(offsetof(fsig_capabilities, cuda_backward_max_head_dim));
    for (uint32_t size : {uint32_t(0), kCapsOldSize - 1, uint32_t(4)}) {
        add(fmt("fsig_get_capabilities struct_size %u", size), kOther, F32, SM,
            [=](Fx& f, Call& c) {
                Block* b = f.block("caps", sizeof(fsig_capabilities), false, F32);
                std::memcpy(b->payload, &size, sizeof size);
                c.other = [b] { return fsig_get_capabilities(reinterpret_cast<fsig_capabilities*>(b->payload)); };
            },
            PARAMS, fmt("caps->struct_size is %u but must be at least %u (set it to sizeof(fsig_capabilities))", size,
                        kCapsOldSize));
    }
    {  // fsig_attention_backward_workspace_size: q is read for its shape and device only. Each case changes
       // valid arguments (default params, a bf16 CUDA q of shape 8^4, an output) and makes the call.
        using Args = std::function<void(fsig_attention_params*&, fsig_tensor*&, int64_t*&)>;
        auto ws_case = [&](const std::string& name, Args change, int status, const std::string& msg) {
            add("fsig_attention_backward_workspace_size: " + name, kOther, F32, SM,
                [=](Fx&, Call& c) {
                    c.other = [=] {
                        fsig_attention_params params = fsig_attention_params_default();
                        fsig_tensor q{};
                        q.ndim = 4, q.dtype = FSIG_DTYPE_BF16, q.device_type = FSIG_DEVICE_CUDA;
                        for (int i = 0; i < 4; ++i) q.shape[i] = 8;
                        int64_t bytes = 0;
                        fsig_attention_params* pp = &params;
                        fsig_tensor* qp = &q;
                        int64_t* bp = &bytes;
                        change(pp, qp, bp);
                        return fsig_attention_backward_workspace_size(pp, qp, bp);
                    };
                },
                status, msg);
        };
        ws_case("bytes NULL", [](auto&, auto&, auto*& b) { b = nullptr; }, NUL, "bytes is NULL");
        ws_case("params NULL", [](auto*& p, auto&, auto&) { p = nullptr; }, NUL, "params is NULL");
        ws_case("q NULL", [](auto&, auto*& q, auto&) { q = nullptr; }, NUL, "q is NULL");
        ws_case("q.ndim 3", [](auto&, auto* q, auto&) { q->ndim = 3; }, SHAPE, "q.ndim is 3 but must be 4 ([B, Nq, Hq, d])");
        ws_case("q.shape[2] 0", [](auto&, auto* q, auto&) { q->shape[2] = 0; }, SHAPE, "q.shape[2] is 0 but must be >= 1");
        ws_case("q.device_type 7", [](auto&, auto* q, auto&) { q->device_type = 7; }, DEVICE,
                "q.device_type 7 is not a fsig_device_type");
        ws_case("params.deterministic 2", [](auto* p, auto&, auto&) { p->deterministic = 2; }, PARAMS,
                "params.deterministic is 2 but must be 0 or 1");
        ws_case("shape overflowing int64 bytes",
                [](auto&, auto* q, auto&) { q->shape[0] = int64_t(1) << 40, q->shape[1] = int64_t(1) << 22; }, SHAPE,
                "q's shape has more elements than int64 can count in workspace bytes");
    }
    {  // fsig_attention_backward_workspace_size_ex: the same checks first, then dbias's shape against q's
        // (q: a bf16 CUDA q of shape 8^4; dbias: a [1, 8, 1, 8] descriptor)
        auto ws_ex_case = [&](const std::string& name, std::function<void(fsig_tensor*)> change, int status,
                              const std::string& msg) {
            add("fsig_attention_backward_workspace_size_ex: " + name, kOther, F32, SM,
                [=](Fx&, Call& c) {
                    c.other = [=] {
                        fsig_attention_params params = fsig_attention_params_default();
                        fsig_tensor q{}, dbias{};
                        q.ndim = 4, q.dtype = FSIG_DTYPE_BF16, q.device_type = FSIG_DEVICE_CUDA;
                        for (int i = 0; i < 4; ++i) q.shape[i] = 8;
                        dbias.ndim = 4, dbias.dtype = FSIG_DTYPE_FP32, dbias.device_type = FSIG_DEVICE_CUDA;
                        dbias.shape[0] = 1, dbias.shape[1] = 8, dbias.shape[2] = 1, dbias.shape[3] = 8;
                        change(&dbias);
                        int64_t bytes = 0;
                        return fsig_attention_backward_workspace_size_ex(&params, &q, &dbias, &bytes);
                    };
                },
                status, msg);
        };
        ws_ex_case("dbias.ndim 3", [](fsig_tensor* t) { t->ndim = 3; }, SHAPE,
                   "dbias.ndim is 3 but must be 4 ([B|1, Hq|1, Nq|1, Nk])");
        ws_ex_case("dbias.shape[1] 3", [](fsig_tensor* t) { t->shape[1] = 3; }, SHAPE,
                   "dbias.shape[1] is 3 but must be 1 or Hq = 8 (from q)");
        ws_ex_case("dbias.shape[2] 0", [](fsig_tensor* t) { t->shape[2] = 0; }, SHAPE,
                   "dbias.shape[2] is 0 but must be 1 or Nq = 8 (from q)");
        ws_ex_case("dbias.shape[3] 0", [](fsig_tensor* t) { t->shape[3] = 0; }, SHAPE,
                   "dbias.shape[3] (Nk) is 0 but must be >= 1");
        ws_ex_case("partial sums overflowing int64 bytes", [](fsig_tensor* t) { t->shape[3] = int64_t(1) << 60; }, SHAPE,
                   "dbias's partial sums have more bytes than int64 can count");
    }
    for (int n : {-1, 4097, INT_MIN, INT_MAX})
        add(fmt("fsig_set_num_threads(%d)", n), kOther, F32, SM,
            [=](Fx&, Call& c) { c.other = [=] { return fsig_set_num_threads(n); }; }, PARAMS,
            fmt("n is %d but must be in 1..4096, or 0 for the default", n));
    return cs;
}

// ---- checks outside the table ------------------------------------------------------------------

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            ++g_failures;                                                    \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);        \
            std::fprintf(stderr, __VA_ARGS__);                               \
            std::fprintf(stderr, "\n");                                      \
        }                                                                    \
    } while (0)

// Every baseline the table mutates is a valid call: OK, and fsig_last_error() is "" afterwards (even
// right after a failed call on the same thread).
void check_baselines(const std::vector<Case>& cases) {
    std::vector<std::string> done;
    for (const Case& cs : cases) {
        if (cs.api == kOther) continue;
        const std::string key = fmt("%d/%d/%d", cs.api, cs.dtype, cs.score);
        bool seen = false;
        for (const std::string& d : done) seen |= d == key;
        if (seen) continue;
        done.push_back(key);
        Fx f(cs.dtype);
        Call c;
        baseline(f, c, cs.api, cs.score);
        fsig_set_num_threads(-1);  // leaves an error behind
        const int st = invoke(c);
        CHECK(st == FSIG_OK, "baseline %s %s score %d: status %d, \"%s\"", kApiName[cs.api], dname(cs.dtype), cs.score,
              st, fsig_last_error());
        CHECK(std::strcmp(fsig_last_error(), "") == 0, "baseline %s %s score %d: fsig_last_error() is \"%s\" after OK",
              kApiName[cs.api], dname(cs.dtype), cs.score, fsig_last_error());
    }
    // valid calls the rules could be mistaken to refuse: inputs sharing memory, zero-stride (broadcast)
    // inputs, a longer params struct whose extra bytes are zero, struct_size larger for capabilities
    {
        Fx f(FSIG_DTYPE_FP32);
        Call c;
        baseline(f, c, kFwd, FSIG_SCORE_SOFTMAX);
        set_data(c, V, c.t[K].data);                      // k and v are one buffer
        c.t[Q].strides[0] = 0;                            // q broadcast over the batch
        c.ext.p = c.params;
        c.ext.p.struct_size = uint32_t(sizeof(ParamsExt));  // newer caller, extension fields off
        c.pp = &c.ext.p;
        const int st = invoke(c);
        CHECK(st == FSIG_OK && std::strcmp(fsig_last_error(), "") == 0, "valid unusual call refused: %d \"%s\"", st,
              fsig_last_error());
        // callers compiled against older headers (the 0.1 params, then with the linear-attention fields,
        // then with masks and positions) keep working
        for (size_t size : {kParamsSizeV01, kParamsSizeV02, kParamsSizeMasks}) {
            Fx f1(FSIG_DTYPE_FP32);
            Call c1;
            baseline(f1, c1, kBwd, FSIG_SCORE_SOFTMAX);
            c1.params.struct_size = uint32_t(size);
            const int st1 = invoke(c1);
            CHECK(st1 == FSIG_OK && std::strcmp(fsig_last_error(), "") == 0, "%zu-byte params refused: %d \"%s\"", size,
                  st1, fsig_last_error());
        }
        {  // a workspace on CPU tensors is allowed and unused (the CPU backward needs none)
            Fx f1(FSIG_DTYPE_FP32);
            Call c1;
            baseline(f1, c1, kBwd, FSIG_SCORE_SIGMOID);
            std::vector<float> ws(64);
            c1.params.workspace = ws.data();
            c1.params.workspace_bytes = int64_t(ws.size() * sizeof(float));
            const int st1 = invoke(c1);
            CHECK(st1 == FSIG_OK && std::strcmp(fsig_last_error(), "") == 0, "CPU backward with a workspace: %d \"%s\"",
                  st1, fsig_last_error());
        }
        {  // the workspace size: 0 for CPU tensors and wherever the fast CUDA path does not apply (linear: fixed)
            fsig_attention_params p = fsig_attention_params_default();
            fsig_tensor q{};
            q.ndim = 4, q.dtype = FSIG_DTYPE_FP16, q.device_type = FSIG_DEVICE_CUDA;
            const int64_t shape[4] = {3, 5, 4, 64};
            for (int i = 0; i < 4; ++i) q.shape[i] = shape[i];
            int64_t bytes = -1;
            CHECK(fsig_attention_backward_workspace_size(&p, &q, &bytes) == FSIG_OK && bytes == 3 * 5 * 4 * 64 * 4,
                  "workspace size of a CUDA fp16 problem: %lld (%s)", (long long)bytes, fsig_last_error());
            // dQ rows as long as the kernel that runs d (widths 64, 128, 256)
            const int64_t widths[][2] = {{40, 64}, {96, 128}, {136, 256}, {256, 256}};
            for (const auto& w : widths) {
                q.shape[3] = w[0];
                CHECK(fsig_attention_backward_workspace_size(&p, &q, &bytes) == FSIG_OK && bytes == 3 * 5 * 4 * w[1] * 4,
                      "workspace size at d = %lld: %lld (%s)", (long long)w[0], (long long)bytes, fsig_last_error());
            }
            q.shape[3] = 64;
            p.deterministic = 1;
            CHECK(fsig_attention_backward_workspace_size(&p, &q, &bytes) == FSIG_OK && bytes == 0,
                  "workspace size when deterministic: %lld (%s)", (long long)bytes, fsig_last_error());
            p = fsig_attention_params_default();
            // the linear scores: the partial states of up to 526 blocks, 33 K + 32 floats each (K = 2d, d),
            // deterministic or not
            p.score = FSIG_SCORE_COSFORMER;
            CHECK(fsig_attention_backward_workspace_size(&p, &q, &bytes) == FSIG_OK && bytes == 526 * (33 * 128 + 32) * 4,
                  "workspace size of cosformer: %lld (%s)", (long long)bytes, fsig_last_error());
            p.score = FSIG_SCORE_LINEAR_ELU, p.deterministic = 1;
            CHECK(fsig_attention_backward_workspace_size(&p, &q, &bytes) == FSIG_OK && bytes == 526 * (33 * 64 + 32) * 4,
                  "workspace size of linear_elu: %lld (%s)", (long long)bytes, fsig_last_error());
            p = fsig_attention_params_default();
            q.device_type = FSIG_DEVICE_CPU;
            CHECK(fsig_attention_backward_workspace_size(&p, &q, &bytes) == FSIG_OK && bytes == 0,
                  "workspace size on the CPU: %lld (%s)", (long long)bytes, fsig_last_error());
        }
        {  // with dbias (q [B 3, Nq 5, Hq 4, 64], Nk 7): the partial sums of a broadcast dbias on CUDA, else 0
            fsig_attention_params p = fsig_attention_params_default();
            fsig_tensor q{}, dbias{};
            q.ndim = 4, q.dtype = FSIG_DTYPE_FP16, q.device_type = FSIG_DEVICE_CUDA;
            const int64_t shape[4] = {3, 5, 4, 64};
            for (int i = 0; i < 4; ++i) q.shape[i] = shape[i];
            dbias.ndim = 4, dbias.dtype = FSIG_DTYPE_FP32, dbias.device_type = FSIG_DEVICE_CUDA;
            struct {
                int64_t b, h, n;
                int64_t want;
            } cases[] = {{3, 4, 5, 0},                   // full shape: written directly
                         {1, 4, 5, 3 * 4 * 5 * 7 * 4},   // over the batch: a partial row per query row
                         {3, 1, 1, 3 * 4 * 1 * 7 * 4},   // key padding: a partial row per 16 query rows
                         {1, 1, 1, 3 * 4 * 1 * 7 * 4}};
            for (const auto& k : cases) {
                dbias.shape[0] = k.b, dbias.shape[1] = k.h, dbias.shape[2] = k.n, dbias.shape[3] = 7;
                for (int det : {0, 1}) {
                    p.deterministic = det;
                    int64_t bytes = -1;
                    CHECK(fsig_attention_backward_workspace_size_ex(&p, &q, &dbias, &bytes) == FSIG_OK && bytes == k.want,
                          "workspace size with dbias [%lld, %lld, %lld, 7], deterministic %d: %lld, want %lld (%s)",
                          (long long)k.b, (long long)k.h, (long long)k.n, det, (long long)bytes, (long long)k.want,
                          fsig_last_error());
                }
            }
            int64_t bytes = -1;
            p.deterministic = 0;
            CHECK(fsig_attention_backward_workspace_size_ex(&p, &q, nullptr, &bytes) == FSIG_OK &&
                      bytes == 3 * 5 * 4 * 64 * 4,
                  "workspace size without dbias is the fast path's: %lld (%s)", (long long)bytes, fsig_last_error());
            q.device_type = FSIG_DEVICE_CPU;
            CHECK(fsig_attention_backward_workspace_size_ex(&p, &q, &dbias, &bytes) == FSIG_OK && bytes == 0,
                  "workspace size with dbias on the CPU: %lld (%s)", (long long)bytes, fsig_last_error());
            q.device_type = FSIG_DEVICE_CUDA;
            p.score = FSIG_SCORE_COSFORMER;  // the linear scores take no bias (the call refuses it): their own size
            CHECK(fsig_attention_backward_workspace_size_ex(&p, &q, &dbias, &bytes) == FSIG_OK &&
                      bytes == 526 * (33 * 128 + 32) * 4,
                  "workspace size with dbias for cosformer: %lld (%s)", (long long)bytes, fsig_last_error());
        }
        struct {
            fsig_capabilities c;
            unsigned char tail[8];
        } big;
        std::memset(&big, 0xCD, sizeof big);
        big.c.struct_size = uint32_t(sizeof big);
        CHECK(fsig_get_capabilities(&big.c) == FSIG_OK && big.tail[0] == 0 && big.tail[7] == 0,
              "fsig_get_capabilities with a longer struct: %s", fsig_last_error());
        CHECK(big.c.cuda_backward_max_head_dim == (big.c.cuda_compiled ? 256 : 0),
              "cuda_backward_max_head_dim %d", big.c.cuda_backward_max_head_dim);
        // a caller built before cuda_backward_max_head_dim: the fields it has are filled, nothing past them
        fsig_capabilities old;
        std::memset(&old, 0xCD, sizeof old);
        old.struct_size = uint32_t(offsetof(fsig_capabilities, cuda_backward_max_head_dim));
        CHECK(fsig_get_capabilities(&old) == FSIG_OK && old.cpu_max_head_dim == big.c.cpu_max_head_dim &&
                  old.cuda_head_dim_count == big.c.cuda_head_dim_count && old.cuda_backward_max_head_dim == int32_t(0xCDCDCDCD),
              "fsig_get_capabilities with the struct before cuda_backward_max_head_dim: %s", fsig_last_error());
        fsig_attention_params p;
        std::memset(&p, 0xCD, sizeof p);
        CHECK(fsig_attention_params_init(&p) == FSIG_OK && p.struct_size == sizeof p && std::isnan(p.scale) &&
                  p.window_left == -1 && p.reserved0 == 0 && std::strcmp(fsig_last_error(), "") == 0,
              "fsig_attention_params_init");
    }
}

void check_status_strings() {
    fsig_set_num_threads(-3);
    const std::string err = fsig_last_error();
    for (int s = FSIG_OK; s <= FSIG_ERROR_INTERNAL; ++s) {
        const char* m = fsig_status_string(s);
        CHECK(m != nullptr && *m != '\0' && std::strcmp(m, "unknown status") != 0, "fsig_status_string(%d)", s);
    }
    for (int s : {-1, FSIG_ERROR_INTERNAL + 1, 1000, INT_MIN, INT_MAX})
        CHECK(std::strcmp(fsig_status_string(s), "unknown status") == 0, "fsig_status_string(%d) = \"%s\"", s,
              fsig_status_string(s));
    (void)fsig_version(), (void)fsig_version_string(), (void)fsig_get_num_threads();
    CHECK(err == fsig_last_error(), "calls that cannot fail changed fsig_last_error(): \"%s\" -> \"%s\"", err.c_str(),
          fsig_last_error());
}

// fsig_last_error() belongs to the calling thread.
void check_per_thread_errors() {
    fsig_set_num_threads(-7);
    const std::string mine = "n is -7 but must be in 1..4096, or 0 for the default";
    CHECK(mine == fsig_last_error(), "main thread error: \"%s\"", fsig_last_error());
    std::string seen_a_before, seen_a_after, seen_b_before, seen_b_after;
    std::thread a([&] {
        seen_a_before = fsig_last_error();
        fsig_attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
        seen_a_after = fsig_last_error();
    });
    a.join();
    CHECK(seen_a_before.empty(), "a new thread sees another thread's error: \"%s\"", seen_a_before.c_str());
    CHECK(seen_a_after == "params is NULL", "thread A's own error: \"%s\"", seen_a_after.c_str());
    CHECK(mine == fsig_last_error(), "thread A's error leaked into the main thread: \"%s\"", fsig_last_error());
    std::thread b([&] {
        seen_b_before = fsig_last_error();
        fsig_attention_params p;
        seen_b_after = fsig_attention_params_init(&p) == FSIG_OK ? fsig_last_error() : "init failed";
    });
    b.join();
    CHECK(seen_b_before.empty() && seen_b_after.empty(), "thread B sees \"%s\" / \"%s\"", seen_b_before.c_str(),
          seen_b_after.c_str());
    CHECK(mine == fsig_last_error(), "thread B's success cleared the main thread's error: \"%s\"", fsig_last_error());

    // two threads failing differently at the same time, each reading back only its own message
    std::atomic<int> ready{0}, wrong{0};
    auto worker = [&](int n) {
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        const std::string want = fmt("n is %d but must be in 1..4096, or 0 for the default", n);
        for (int i = 0; i < 20000; ++i) {
            if (i % 2 == 0) {
                fsig_set_num_threads(n);
                if (want != fsig_last_error()) wrong.fetch_add(1);
            } else {
                fsig_capabilities caps;
                caps.struct_size = 0;
                fsig_get_capabilities(&caps);
                if (fmt("caps->struct_size is 0 but must be at least %zu (set it to sizeof(fsig_capabilities))",
                        offsetof(fsig_capabilities, cuda_backward_max_head_dim)) != fsig_last_error())
                    wrong.fetch_add(1);
            }
        }
    };
    std::thread t1(worker, -100), t2(worker, 5000);
    t1.join(), t2.join();
    CHECK(wrong.load() == 0, "%d message(s) read back on a thread were not that thread's own", wrong.load());
}

}  // namespace

int main() {
    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    if (fsig_get_capabilities(&caps) != FSIG_OK) {
        std::fprintf(stderr, "fsig_get_capabilities failed: %s\n", fsig_last_error());
        return 1;
    }
    const int threads = fsig_get_num_threads();
    const std::vector<Case> cases = catalogue(caps);
    int failed = 0, skipped = 0;
    std::vector<std::string> names;
    for (const Case& cs : cases) {
        for (const std::string& n : names)
            if (n == cs.name) {
                std::fprintf(stderr, "FAIL duplicate case name \"%s\"\n", cs.name.c_str());
                ++failed;
            }
        names.push_back(cs.name);
        if (!cs.skip.empty()) {
            std::printf("skip %s (%s)\n", cs.name.c_str(), cs.skip.c_str());
            ++skipped;
            continue;
        }
        if (!run_case(cs)) ++failed;
    }
    fsig_set_num_threads(threads);
    check_baselines(cases);
    check_status_strings();
    check_per_thread_errors();
    std::printf("bad-input catalogue: %zu cases, %d failed, %d skipped; %d other check(s) failed\n", cases.size(),
                failed, skipped, g_failures);
    return failed == 0 && g_failures == 0 ? 0 : 1;
}
