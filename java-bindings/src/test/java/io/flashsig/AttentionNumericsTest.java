package io.flashsig;

import io.flashsig.TestSupport.Memory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static io.flashsig.TestSupport.assertClose;
import static io.flashsig.TestSupport.randn;
import static io.flashsig.TestSupport.tensor;
import static io.flashsig.TestSupport.withMemory;

/**
 * Forward and backward against the fp64 reference by the rule of DESIGN.md §6, for every score ×
 * mask × head layout × dtype. Shapes and memory kinds (heap via the critical downcall, heap via the
 * copy path, off-heap) rotate through the matrix so that each score meets every one of them.
 */
class AttentionNumericsTest {
    enum Mask { NONE, CAUSAL, WINDOW }

    enum Heads {
        MHA(2, 2), GQA(4, 2), MQA(3, 1);
        final int hq, hk;

        Heads(int hq, int hk) {
            this.hq = hq;
            this.hk = hk;
        }
    }

    /** B, Nq, Nk, d: ragged tiles, a single query, more queries than keys (rows with no key under causal). */
    private static final int[][] SHAPES = {{1, 113, 203, 59}, {2, 1, 257, 32}, {1, 128, 97, 64}, {1, 40, 72, 128}};

    static Stream<Arguments> cases() {
        List<Arguments> list = new ArrayList<>();
        for (Score score : Score.values())
            if (!score.isLinear())  // the linear scores take no window: LinearAttentionTest
            for (Mask mask : Mask.values())
                for (Heads heads : Heads.values())
                    for (DType dtype : DType.values()) {
                        int m = mask.ordinal(), h = heads.ordinal(), t = dtype.ordinal();
                        Memory memory = Memory.values()[(m + h + t) % 3];
                        int[] shape = SHAPES[(h + t + 2 * m + score.ordinal()) % SHAPES.length];
                        list.add(Arguments.of(score, mask, heads, dtype, memory, shape[0], shape[1], shape[2], shape[3]));
                    }
        return list.stream();
    }

    static AttentionSpec spec(Score score, Mask mask) {
        AttentionSpec s = AttentionSpec.of(score);
        return switch (mask) {
            case NONE -> s;
            case CAUSAL -> s.causal();
            case WINDOW -> s.window(23, 7);
        };
    }

    @ParameterizedTest(name = "{0} {1} {2} {3} {4} B={5} Nq={6} Nk={7} d={8}")
    @MethodSource("cases")
    void matchesReference(Score score, Mask mask, Heads heads, DType dtype, Memory memory, int b, int nq, int nk,
                          int d) {
        AttentionSpec spec = spec(score, mask);
        long seed = 31L * spec.hashCode() + 7L * heads.ordinal() + dtype.ordinal() * 1009L + nq;
        check(spec, heads.hq, heads.hk, dtype, memory, b, nq, nk, d, new Random(seed));
    }

    /** Non-default parameters reach the kernels: scale, sigmoid bias, α, causal + window together. */
    @Test
    void explicitParameters() {
        Random r = new Random(5);
        check(AttentionSpec.of(Score.SIGMOID).scale(0.3f).sigmoidBias(-2f).causal().window(9, -1), 4, 2, DType.FP32,
                Memory.OFF_HEAP, 1, 50, 61, 24, r);
        check(AttentionSpec.of(Score.RELU2).alpha(0.5f).scale(0.2f), 2, 1, DType.BF16, Memory.HEAP_COPY, 1, 33, 47, 16, r);
        check(AttentionSpec.softmax().scale(0.05f).window(0, 0), 2, 2, DType.FP16, Memory.HEAP_CRITICAL, 2, 17, 17, 8, r);
    }

    /** q, k, v as strided views of one packed qkv buffer [B, N, 3, H, d], as fused projections produce them. */
    @Test
    void packedQkvStrides() {
        int b = 2, n = 45, h = 3, d = 40;
        DType dtype = DType.BF16;
        AttentionSpec spec = AttentionSpec.of(Score.SOFTMAX).causal();
        Random r = new Random(11);
        double[] packed = randn(r, dtype, b * n * 3 * h * d);
        double[][] qkv = new double[3][b * n * h * d];
        for (int bb = 0; bb < b; bb++)
            for (int i = 0; i < n; i++)
                for (int w = 0; w < 3; w++)
                    for (int hh = 0; hh < h; hh++)
                        for (int c = 0; c < d; c++)
                            qkv[w][((bb * n + i) * h + hh) * d + c] = packed[((((bb * n + i) * 3 + w) * h + hh) * d) + c];
        try (Arena arena = Arena.ofConfined()) {
            Tensor all = tensor(Memory.OFF_HEAP, arena, dtype, packed, b, n * 3, h, d); // [B, N, 3, H, d] as 4-d
            long[] strides = {(long) n * 3 * h * d, 3L * h * d, d, 1};
            long[] shape = {b, n, h, d};
            Tensor[] views = new Tensor[3];
            for (int w = 0; w < 3; w++) {
                MemorySegment seg = all.segment().asSlice((long) w * h * d * dtype.byteSize());
                views[w] = Tensor.wrap(seg, dtype, shape, strides);
            }
            Tensor out = tensor(Memory.OFF_HEAP, arena, dtype, null, shape);
            FlashSig.forward(spec, views[0], views[1], views[2], out);
            Reference.Problem p = Reference.Problem.of(spec, b, n, n, h, h, d);
            double[] ref = new Reference(p, null).forward(qkv[0], qkv[1], qkv[2]).out();
            double[] naive = new Reference(p, dtype).forward(qkv[0], qkv[1], qkv[2]).out();
            assertClose("out (packed qkv)", out.toFloatArray(), ref, naive);
        }
    }

    static void check(AttentionSpec spec, int hq, int hk, DType dtype, Memory memory, int b, int nq, int nk, int d,
                      Random r) {
        double[] q = randn(r, dtype, b * nq * hq * d);
        double[] k = randn(r, dtype, b * nk * hk * d);
        double[] v = randn(r, dtype, b * nk * hk * d);
        double[] dout = randn(r, dtype, b * nq * hq * d);
        Reference.Problem p = Reference.Problem.of(spec, b, nq, nk, hq, hk, d);
        Reference ref64 = new Reference(p, null), naive = new Reference(p, dtype);
        Reference.Forward f64 = ref64.forward(q, k, v), fNaive = naive.forward(q, k, v);
        Reference.Grads g64 = ref64.backward(q, k, v, f64.out(), dout);
        Reference.Grads gNaive = naive.backward(q, k, v, fNaive.out(), dout);
        boolean softmax = spec.score() == Score.SOFTMAX;
        String name = spec + " " + dtype + " " + memory + " Hq=" + hq + " Hk=" + hk + " B=" + b + " Nq=" + nq
                + " Nk=" + nk + " d=" + d + ": ";

        try (Arena arena = Arena.ofConfined()) {
            long[] qs = {b, nq, hq, d}, ks = {b, nk, hk, d};
            Tensor tq = tensor(memory, arena, dtype, q, qs), tk = tensor(memory, arena, dtype, k, ks);
            Tensor tv = tensor(memory, arena, dtype, v, ks), tdo = tensor(memory, arena, dtype, dout, qs);
            Tensor out = tensor(memory, arena, dtype, null, qs);
            Tensor lse = softmax ? tensor(memory, arena, DType.FP32, null, b, hq, nq) : null;
            Tensor dq = tensor(memory, arena, dtype, null, qs);
            Tensor dk = tensor(memory, arena, dtype, null, ks), dv = tensor(memory, arena, dtype, null, ks);
            withMemory(memory, () -> {
                FlashSig.forward(spec, tq, tk, tv, out, lse);
                FlashSig.backward(spec, tq, tk, tv, softmax ? out : null, tdo, lse, dq, dk, dv);
            });
            assertClose(name + "out", out.toFloatArray(), f64.out(), fNaive.out());
            if (softmax) assertClose(name + "lse", lse.toFloatArray(), f64.lse(), fNaive.lse());
            assertClose(name + "dq", dq.toFloatArray(), g64.dq(), gNaive.dq());
            assertClose(name + "dk", dk.toFloatArray(), g64.dk(), gNaive.dk());
            assertClose(name + "dv", dv.toFloatArray(), g64.dv(), gNaive.dv());
            // inputs are untouched (the copy path must not write them back)
            assertClose(name + "q unchanged", tq.toFloatArray(), q, q);
            assertClose(name + "dout unchanged", tdo.toFloatArray(), dout, dout);
        }
    }
}
