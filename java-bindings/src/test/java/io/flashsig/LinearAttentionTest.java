package io.flashsig;

import io.flashsig.TestSupport.Memory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static io.flashsig.TestSupport.assertClose;
import static io.flashsig.TestSupport.randn;
import static io.flashsig.TestSupport.tensor;
import static io.flashsig.TestSupport.withMemory;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * cosFormer and elu+1 linear attention through the Java API: forward and backward against the fp64
 * quadratic form of {@link LinearReference} by the §6 rule, causal and not, Nq ≠ Nk, GQA, every dtype,
 * heap (critical and copied) and off-heap memory, M and ε given; and the spec's validation.
 */
class LinearAttentionTest {

    static Stream<Arguments> cases() {
        int[][] shapes = {{1, 7, 33, 8}, {2, 70, 45, 16}, {1, 1, 1, 5}, {1, 130, 130, 12}};  // B, Nq, Nk, d
        List<Arguments> list = new ArrayList<>();
        int idx = 0;
        for (Score score : new Score[] {Score.COSFORMER, Score.LINEAR_ELU})
            for (boolean causal : new boolean[] {false, true})
                for (DType dtype : DType.values()) {
                    int[] s = shapes[idx % shapes.length];
                    int hk = 1 + idx % 2, hq = hk * (1 + (idx / 2) % 2);
                    list.add(Arguments.of(score, causal, dtype, Memory.values()[idx % 3], hq, hk, s[0], s[1], s[2], s[3]));
                    idx++;
                }
        return list.stream();
    }

    @ParameterizedTest(name = "{0} causal={1} {2} {3} Hq={4} Hk={5} B={6} Nq={7} Nk={8} d={9}")
    @MethodSource("cases")
    void matchesReference(Score score, boolean causal, DType dtype, Memory memory, int hq, int hk, int b, int nq,
                          int nk, int d) {
        check(AttentionSpec.of(score).causal(causal), hq, hk, dtype, memory, b, nq, nk, d, new Random(nq * 31L + d));
    }

    @Test
    void lengthAndEpsilonGiven() {
        Random r = new Random(5);
        check(AttentionSpec.of(Score.COSFORMER).linearLength(200), 2, 1, DType.FP32, Memory.OFF_HEAP, 1, 40, 60, 8, r);
        check(AttentionSpec.of(Score.COSFORMER).causal().linearLength(60), 2, 2, DType.BF16, Memory.HEAP_CRITICAL, 1,
                40, 60, 8, r);
        // a floor that binds on some rows (denominators of 8-dim relu features over ≤ 33 keys are ~0…40)
        check(AttentionSpec.of(Score.COSFORMER).causal().linearEpsilon(12f), 1, 1, DType.FP32, Memory.HEAP_COPY, 1, 9,
                33, 8, r);
        check(AttentionSpec.of(Score.LINEAR_ELU).linearEpsilon(150f), 2, 1, DType.FP32, Memory.OFF_HEAP, 1, 9, 33, 8, r);
    }

    static void check(AttentionSpec spec, int hq, int hk, DType dtype, Memory memory, int b, int nq, int nk, int d,
                      Random r) {
        double[] q = randn(r, dtype, b * nq * hq * d), k = randn(r, dtype, b * nk * hk * d);
        double[] v = randn(r, dtype, b * nk * hk * d), dout = randn(r, dtype, b * nq * hq * d);
        LinearReference ref64 = new LinearReference(spec, b, nq, nk, hq, hk, d, null);
        LinearReference naive = new LinearReference(spec, b, nq, nk, hq, hk, d, dtype);
        String name = spec + " " + dtype + " " + memory + " Hq=" + hq + " Hk=" + hk + " B=" + b + " Nq=" + nq + " Nk="
                + nk + " d=" + d + ": ";
        LinearReference.Grads g64 = ref64.backward(q, k, v, dout), gNaive = naive.backward(q, k, v, dout);
        try (Arena arena = Arena.ofConfined()) {
            long[] qs = {b, nq, hq, d}, ks = {b, nk, hk, d};
            Tensor tq = tensor(memory, arena, dtype, q, qs), tk = tensor(memory, arena, dtype, k, ks);
            Tensor tv = tensor(memory, arena, dtype, v, ks), tdo = tensor(memory, arena, dtype, dout, qs);
            Tensor out = tensor(memory, arena, dtype, null, qs), dq = tensor(memory, arena, dtype, null, qs);
            Tensor dk = tensor(memory, arena, dtype, null, ks), dv = tensor(memory, arena, dtype, null, ks);
            withMemory(memory, () -> {
                FlashSig.forward(spec, tq, tk, tv, out);
                FlashSig.backward(spec, tq, tk, tv, null, tdo, null, dq, dk, dv);  // no O or LSE needed
            });
            assertClose(name + "out", out.toFloatArray(), ref64.forward(q, k, v), naive.forward(q, k, v));
            assertClose(name + "dq", dq.toFloatArray(), g64.dq(), gNaive.dq());
            assertClose(name + "dk", dk.toFloatArray(), g64.dk(), gNaive.dk());
            assertClose(name + "dv", dv.toFloatArray(), g64.dv(), gNaive.dv());
            assertClose(name + "q unchanged", tq.toFloatArray(), q, q);
        }
    }

    @Test
    void specValidatesLengthAndEpsilon() {
        AttentionSpec s = AttentionSpec.of(Score.COSFORMER);
        assertEquals(0, s.linearLength());
        assertTrue(Float.isNaN(s.linearEpsilon()));
        assertEquals(FlashSigException.Status.INVALID_PARAMS, assertThrows(FlashSigException.class,
                () -> s.linearLength(-1)).status());
        for (float bad : new float[] {0f, -1f, Float.POSITIVE_INFINITY})
            assertEquals(FlashSigException.Status.INVALID_PARAMS, assertThrows(FlashSigException.class,
                    () -> s.linearEpsilon(bad)).status());
        AttentionSpec a = s.linearLength(64).linearEpsilon(1e-3f).causal();
        assertEquals(a, AttentionSpec.of(Score.COSFORMER).causal().linearEpsilon(1e-3f).linearLength(64));
        assertEquals(a.hashCode(), AttentionSpec.of(Score.COSFORMER).causal().linearEpsilon(1e-3f).linearLength(64).hashCode());
        assertNotEquals(a, a.linearLength(65));
        assertTrue(a.toString().contains("linearLength=64") && a.toString().contains("linearEpsilon=0.001"), a.toString());
        assertEquals(64, a.scale(0.5f).linearLength());  // every with-method keeps the linear fields
        assertTrue(Score.COSFORMER.isLinear() && Score.LINEAR_ELU.isLinear() && !Score.IDENTITY.isLinear());
        assertEquals(7, Score.COSFORMER.nativeCode());
        assertEquals(8, Score.LINEAR_ELU.nativeCode());
    }

    @Test
    void nativeRefusesWhatMakesNoSense() {
        try (Arena arena = Arena.ofConfined()) {
            Tensor q = Tensor.allocate(arena, DType.FP32, 1, 6, 2, 8), k = Tensor.allocate(arena, DType.FP32, 1, 9, 1, 8);
            Tensor v = Tensor.allocate(arena, DType.FP32, 1, 9, 1, 8), out = Tensor.allocate(arena, DType.FP32, 1, 6, 2, 8);
            Tensor lse = Tensor.allocate(arena, DType.FP32, 1, 2, 6);
            AttentionSpec cos = AttentionSpec.of(Score.COSFORMER);
            expect("linear_length", () -> FlashSig.forward(cos.linearLength(8), q, k, v, out));   // M < max(Nq, Nk)
            expect("window", () -> FlashSig.forward(cos.window(3, 0), q, k, v, out));
            expect("scale", () -> FlashSig.forward(cos.scale(0.5f), q, k, v, out));
            expect("lse", () -> FlashSig.forward(cos, q, k, v, out, lse));
            expect("linear_length", () -> FlashSig.forward(AttentionSpec.of(Score.LINEAR_ELU).linearLength(20), q, k, v, out));
            expect("linear_epsilon", () -> FlashSig.forward(AttentionSpec.of(Score.SIGMOID).linearEpsilon(1e-3f), q, k, v, out));
            FlashSig.forward(cos.linearLength(9), q, k, v, out);  // M = max(Nq, Nk) is fine
        }
    }

    private static void expect(String needle, Runnable call) {
        FlashSigException e = assertThrows(FlashSigException.class, call::run);
        assertEquals(FlashSigException.Status.INVALID_PARAMS, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains(needle), e.getMessage());
    }
}
