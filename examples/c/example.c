/* The C example of the README: sigmoid attention, causal, on the CPU, with error handling.
 * Build: part of the CMake build (target flashsig-example-c); run: target/native/flashsig-example-c */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "flashsig.h"

/* A contiguous BSHD tensor over caller-owned fp32 memory. */
static fsig_tensor bshd_fp32(float* data, int64_t b, int64_t n, int64_t h, int64_t d) {
    fsig_tensor t = {0};
    t.data = data;
    t.capacity_bytes = b * n * h * d * (int64_t)sizeof(float);
    t.dtype = FSIG_DTYPE_FP32;
    t.device_type = FSIG_DEVICE_CPU;
    t.ndim = 4;
    t.shape[0] = b, t.shape[1] = n, t.shape[2] = h, t.shape[3] = d;
    t.strides[0] = n * h * d, t.strides[1] = h * d, t.strides[2] = d, t.strides[3] = 1;
    return t;
}

int main(void) {
    enum { B = 2, N = 256, H = 4, D = 64 };
    size_t count = (size_t)B * N * H * D;
    float* q = malloc(count * sizeof(float));
    float* k = malloc(count * sizeof(float));
    float* v = malloc(count * sizeof(float));
    float* out = malloc(count * sizeof(float));
    if (!q || !k || !v || !out) return 1;
    for (size_t i = 0; i < count; ++i) {
        q[i] = sinf(0.001f * (float)i);
        k[i] = cosf(0.002f * (float)i);
        v[i] = (float)(i % 17) / 17.0f;
    }
    fsig_tensor tq = bshd_fp32(q, B, N, H, D), tk = bshd_fp32(k, B, N, H, D);
    fsig_tensor tv = bshd_fp32(v, B, N, H, D), to = bshd_fp32(out, B, N, H, D);

    fsig_attention_params params = fsig_attention_params_default();
    params.score = FSIG_SCORE_SIGMOID; /* bias defaults to -ln(Nk), scale to 1/sqrt(d) */
    params.causal = 1;

    int status = fsig_attention_forward(&params, &tq, &tk, &tv, &to, NULL, NULL);
    if (status != FSIG_OK) {
        fprintf(stderr, "forward failed: %s: %s\n", fsig_status_string(status), fsig_last_error());
        return 1;
    }
    printf("flashsig %s: out[0,0,0,0:4] = %.5f %.5f %.5f %.5f\n", fsig_version_string(), out[0], out[1], out[2], out[3]);

    /* A bad call is refused with a message naming the argument; nothing is written. */
    tk.shape[3] = 32;
    status = fsig_attention_forward(&params, &tq, &tk, &tv, &to, NULL, NULL);
    printf("bad call: %s: %s\n", fsig_status_string(status), fsig_last_error());

    free(q), free(k), free(v), free(out);
    return status == FSIG_ERROR_INVALID_SHAPE ? 0 : 1;
}
