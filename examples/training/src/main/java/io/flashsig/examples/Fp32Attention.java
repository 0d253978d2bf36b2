package io.flashsig.examples;

import io.flashsig.AttentionSpec;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.Tensor;

/**
 * The attention in fp32 on the CPU, on the model's own heap arrays: {@link Tensor#of(float[], long...)}
 * views them without a copy. Any head dim.
 */
final class Fp32Attention implements AttentionBackend {
    private final AttentionSpec spec;
    private final long[] shape;
    private final boolean softmax;
    private final Tensor lse; // [B, H, N], softmax only: the forward's log-sum-exp, for its backward
    private Tensor q, k, v, out; // the last forward's

    Fp32Attention(AttentionSpec spec, long[] shape) {
        this.spec = spec;
        this.shape = shape.clone();
        this.softmax = spec.score() == Score.SOFTMAX;
        long b = shape[0], n = shape[1], h = shape[2];
        this.lse = softmax ? Tensor.of(new float[Math.toIntExact(b * h * n)], b, h, n) : null;
    }

    @Override
    public void forward(float[] q, float[] k, float[] v, float[] a) {
        this.q = Tensor.of(q, shape);
        this.k = Tensor.of(k, shape);
        this.v = Tensor.of(v, shape);
        this.out = Tensor.of(a, shape);
        FlashSig.forward(spec, this.q, this.k, this.v, out, lse);
    }

    @Override
    public void backward(float[] da, float[] dq, float[] dk, float[] dv) {
        if (q == null) throw new IllegalStateException("backward before forward");
        // softmax's backward needs the forward's out and LSE; a pointwise score's needs neither
        FlashSig.backward(spec, q, k, v, softmax ? out : null, Tensor.of(da, shape), lse, Tensor.of(dq, shape),
                Tensor.of(dk, shape), Tensor.of(dv, shape));
    }

    @Override
    public String describe() {
        return "fp32 on the CPU";
    }
}
