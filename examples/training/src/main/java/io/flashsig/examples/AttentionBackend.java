package io.flashsig.examples;

import io.flashsig.AttentionSpec;

/**
 * Where and in what precision {@link AttentionModel}'s attention runs. The model computes Q, K, V in fp32 on
 * the heap and hands them over; a backend returns A, and later dQ, dK, dV from dA, all as fp32 arrays of
 * shape [B, N, H, d] (BSHD). {@link #forward} keeps what {@link #backward} needs (the inputs, and for
 * softmax the output and its log-sum-exp), so a backward always refers to the forward just before it.
 * <ul>
 * <li>{@link Fp32Attention}: fp32 on the CPU, zero-copy over the model's arrays;</li>
 * <li>{@link Bf16Attention}: bf16 on a given device — a CUDA device in the GPU run, the CPU in the tests —
 * converting and copying the arrays each call.</li>
 * </ul>
 */
interface AttentionBackend {
    /** A = attention(Q, K, V); {@code a} is written. */
    void forward(float[] q, float[] k, float[] v, float[] a);

    /** dQ, dK, dV (written) from dA, for the inputs of the last {@link #forward}. */
    void backward(float[] da, float[] dq, float[] dk, float[] dv);

    /** One line for the log: precision, device, backward path. */
    String describe();

    /** Makes the backend of one model: its spec (score) and the shape [B, N, H, d] of every call. */
    @FunctionalInterface
    interface Factory {
        AttentionBackend create(AttentionSpec spec, long[] shape);
    }
}
