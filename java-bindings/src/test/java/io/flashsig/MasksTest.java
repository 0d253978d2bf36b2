package io.flashsig;

import io.flashsig.FlashSigException.Status;
import io.flashsig.TestSupport.Memory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Masks and positions (DESIGN.md §4 "Extensions") through the Java API: {@link AttentionExtras} (ALiBi
 * slopes, bias, mask, block layout), the spec's block sizes, strided and log-n options, dbias, the
 * slope helper, and refusals with exact messages. The numerics matrix is the C++ suite's
 * (tests/test_masks.cpp); here each option is checked against a small fp64 computation in every kind
 * of memory.
 */
class MasksTest {
    static final int B = 2, NQ = 37, NK = 70, HQ = 4, HK = 2, D = 16;

    /** fp64 forward with every extension of §4, for the small shapes above (BSHD, dense). */
    static final class Ref {
        double[] q, k, v;
        double[] slopes;          // [HQ] or [B*HQ]
        boolean slopesPerBatch;
        double[] bias;            // [bb, bh, bq, NK]
        long[] biasShape;
        byte[] mask;              // [mb, mh, mq, NK]
        long[] maskShape;
        long blockM, blockN;
        byte[] layout;            // [lh, rows, cols]
        long layoutHeads;
        long strided, lognTrain;
        boolean causal;
        long wl = -1, wr = -1;
        Score score = Score.SOFTMAX;

        static int idx(long[] shape, long b, long h, long i, long j) {
            return (int) ((((shape[0] == 1 ? 0 : b) * shape[1] + (shape[1] == 1 ? 0 : h)) * shape[2]
                    + (shape[2] == 1 ? 0 : i)) * shape[3] + j);
        }

        boolean inWindow(long i, long j) {
            long diag = i + NK - NQ;
            if (causal && j > diag) return false;
            if (wl >= 0 && j < diag - wl) return false;
            return wr < 0 || j <= diag + wr;
        }

        boolean allowed(long b, long h, long i, long j) {
            long diag = i + NK - NQ;
            if (causal && j > diag) return false;
            if (strided > 0) {
                boolean window = wl >= 0 || wr >= 0;
                if (!(Math.abs(diag - j) % strided == 0 || (window && inWindow(i, j)))) return false;
            } else if (!inWindow(i, j)) {
                return false;
            }
            if (layout != null) {
                long rows = (NQ + blockM - 1) / blockM, cols = (NK + blockN - 1) / blockN;
                if (layout[(int) (((layoutHeads == 1 ? 0 : h) * rows + i / blockM) * cols + j / blockN)] == 0) return false;
            }
            if (mask != null && mask[idx(maskShape, b, h, i, j)] == 0) return false;
            return bias == null || bias[idx(biasShape, b, h, i, j)] != Double.NEGATIVE_INFINITY;
        }

        double lambda(long i) {
            if (lognTrain <= 0) return 1;
            long n = 0;
            for (long j = 0; j < NK; j++) if (inWindow(i, j)) n++;
            return n <= 1 ? 1 : Math.max(1, Math.log(n) / Math.log(lognTrain));
        }

        double[] forward() {
            double[] out = new double[B * NQ * HQ * D];
            double scale = 1 / Math.sqrt(D);
            for (int b = 0; b < B; b++)
                for (int h = 0; h < HQ; h++)
                    for (int i = 0; i < NQ; i++) {
                        double[] s = new double[NK];
                        double mx = Double.NEGATIVE_INFINITY;
                        for (int j = 0; j < NK; j++) {
                            double dot = 0;
                            for (int c = 0; c < D; c++)
                                dot += q[((b * NQ + i) * HQ + h) * D + c] * k[((b * NK + j) * HK + h / (HQ / HK)) * D + c];
                            double x = scale * lambda(i) * dot;
                            if (slopes != null) x -= slopes[slopesPerBatch ? b * HQ + h : h] * Math.abs(i + NK - NQ - j);
                            if (bias != null) x += bias[idx(biasShape, b, h, i, j)];
                            s[j] = allowed(b, h, i, j) ? x : Double.NaN;
                            if (!Double.isNaN(s[j])) mx = Math.max(mx, x);
                        }
                        double sum = 0;
                        double[] p = new double[NK];
                        for (int j = 0; j < NK; j++) {
                            if (Double.isNaN(s[j])) continue;
                            p[j] = score == Score.SOFTMAX ? Math.exp(s[j] - mx) : 1 / (1 + Math.exp(-(s[j] - Math.log(NK))));
                            sum += p[j];
                        }
                        for (int j = 0; j < NK; j++) {
                            double pj = score == Score.SOFTMAX ? (sum > 0 ? p[j] / sum : 0) : p[j];
                            if (pj == 0) continue;
                            for (int c = 0; c < D; c++)
                                out[((b * NQ + i) * HQ + h) * D + c] += pj * v[((b * NK + j) * HK + h / (HQ / HK)) * D + c];
                        }
                    }
            return out;
        }
    }

    static void assertNear(String what, float[] ours, double[] ref, double tol) {
        for (int i = 0; i < ref.length; i++)
            if (!(Math.abs(ours[i] - ref[i]) <= tol))
                fail(what + "[" + i + "] = " + ours[i] + " but the fp64 reference is " + ref[i]);
    }

    enum Option { ALIBI_HEADS, ALIBI_BATCH_HEADS, BIAS_KEY_PADDING, BIAS_PER_HEAD_FP16, MASK, BLOCKS, STRIDED_WINDOW, LOGN, ALL }

    @ParameterizedTest
    @EnumSource(Option.class)
    void forwardMatchesReference(Option option) {
        for (Memory m : Memory.values())
            for (Score score : new Score[] {Score.SOFTMAX, Score.SIGMOID})
                TestSupport.withMemory(m, () -> runForward(option, m, score));
    }

    private void runForward(Option option, Memory m, Score score) {
        Random r = new Random(option.ordinal() * 31 + m.ordinal() * 7 + score.ordinal());
        Ref ref = new Ref();
        ref.score = score;
        ref.causal = option.ordinal() % 2 == 0;
        try (Arena arena = Arena.ofConfined()) {
            ref.q = TestSupport.randn(r, DType.FP32, B * NQ * HQ * D);
            ref.k = TestSupport.randn(r, DType.FP32, B * NK * HK * D);
            ref.v = TestSupport.randn(r, DType.FP32, B * NK * HK * D);
            Tensor q = TestSupport.tensor(m, arena, DType.FP32, ref.q, B, NQ, HQ, D);
            Tensor k = TestSupport.tensor(m, arena, DType.FP32, ref.k, B, NK, HK, D);
            Tensor v = TestSupport.tensor(m, arena, DType.FP32, ref.v, B, NK, HK, D);
            Tensor out = TestSupport.tensor(m, arena, DType.FP32, null, B, NQ, HQ, D);
            AttentionSpec spec = AttentionSpec.of(score).causal(ref.causal);
            AttentionExtras x = AttentionExtras.none();
            boolean all = option == Option.ALL;
            if (option == Option.ALIBI_HEADS || all) {
                float[] s = FlashSig.alibiSlopes(HQ);
                ref.slopes = TestSupport.toDoubles(s);
                x = x.alibi(s);
            }
            if (option == Option.ALIBI_BATCH_HEADS) {
                ref.slopes = new double[B * HQ];
                for (int e = 0; e < B * HQ; e++) ref.slopes[e] = 0.05 * (e + 1);
                ref.slopesPerBatch = true;
                x = x.alibi(TestSupport.tensor(m, arena, DType.FP32, ref.slopes, B, HQ));
            }
            if (option == Option.BIAS_KEY_PADDING || all) {
                ref.biasShape = new long[] {B, 1, 1, NK};
                ref.bias = TestSupport.randn(r, DType.FP32, B * NK);
                for (int j = NK - 5; j < NK; j++) ref.bias[j] = Double.NEGATIVE_INFINITY;  // batch 0: last 5 keys padded
                x = x.bias(TestSupport.tensor(m, arena, DType.FP32, ref.bias, ref.biasShape));
            }
            if (option == Option.BIAS_PER_HEAD_FP16) {
                ref.biasShape = new long[] {1, HQ, NQ, NK};
                ref.bias = TestSupport.randn(r, DType.FP16, HQ * NQ * NK);
                x = x.bias(TestSupport.tensor(m, arena, DType.FP16, ref.bias, ref.biasShape));
            }
            if (option == Option.MASK || all) {
                ref.maskShape = new long[] {1, HQ, NQ, NK};
                ref.mask = new byte[HQ * NQ * NK];
                for (int e = 0; e < ref.mask.length; e++) ref.mask[e] = (byte) (r.nextDouble() < 0.7 ? 1 + r.nextInt(200) : 0);
                x = x.mask(m == Memory.OFF_HEAP ? copyOffHeap(arena, ref.mask, ref.maskShape) : Mask.of(ref.mask.clone(), ref.maskShape));
            }
            if (option == Option.BLOCKS || all) {
                ref.blockM = 16;
                ref.blockN = 32;
                ref.layoutHeads = HQ;
                long rows = (NQ + 15) / 16, cols = (NK + 31) / 32;
                ref.layout = new byte[(int) (HQ * rows * cols)];
                for (int e = 0; e < ref.layout.length; e++) ref.layout[e] = (byte) (r.nextBoolean() ? 1 : 0);
                spec = spec.blockSparse(16, 32);
                x = x.blockLayout(Mask.of(ref.layout.clone(), HQ, rows, cols));
            }
            if (option == Option.STRIDED_WINDOW || all) {
                ref.strided = 3;
                ref.wl = 4;
                spec = spec.strided(3).window(4, all ? 0 : 2);
                ref.wr = all ? 0 : 2;
            }
            if (option == Option.LOGN || all) {
                ref.lognTrain = 8;
                spec = spec.lognScaling(8);
            }
            FlashSig.forward(spec, x, q, k, v, out, null);
            assertNear(option + " " + m + " " + score + " out", out.toFloatArray(), ref.forward(), 2e-4);
        }
    }

    static Mask copyOffHeap(Arena arena, byte[] data, long... shape) {
        Mask mk = Mask.allocate(arena, shape);
        mk.segment().copyFrom(java.lang.foreign.MemorySegment.ofArray(data));
        return mk;
    }

    /**
     * Identity score with alpha 0: P = S and dS = dP = dO·vᵀ, so dbias is a plain sum the test can form —
     * for a bias per head and query row, a key-padding bias [B, 1, 1, Nk] and one bias row for everything
     * [1, 1, 1, Nk] (the last two broadcast over Nq: dbias sums dS over every query row too).
     */
    @ParameterizedTest
    @EnumSource(Memory.class)
    void dbiasIsdSSummedOverBroadcastDims(Memory m) {
        for (long[] shape : new long[][] {{1, HQ, NQ, NK}, {B, 1, 1, NK}, {1, 1, 1, NK}})
            TestSupport.withMemory(m, () -> runDbias(m, shape));
    }

    private void runDbias(Memory m, long[] shape) {
        Random r = new Random(5);
        try (Arena arena = Arena.ofConfined()) {
            double[] qv = TestSupport.randn(r, DType.FP32, B * NQ * HQ * D), kv = TestSupport.randn(r, DType.FP32, B * NK * HK * D),
                    vv = TestSupport.randn(r, DType.FP32, B * NK * HK * D), gv = TestSupport.randn(r, DType.FP32, B * NQ * HQ * D);
            Tensor q = TestSupport.tensor(m, arena, DType.FP32, qv, B, NQ, HQ, D);
            Tensor k = TestSupport.tensor(m, arena, DType.FP32, kv, B, NK, HK, D);
            Tensor v = TestSupport.tensor(m, arena, DType.FP32, vv, B, NK, HK, D);
            Tensor dout = TestSupport.tensor(m, arena, DType.FP32, gv, B, NQ, HQ, D);
            Tensor dq = TestSupport.tensor(m, arena, DType.FP32, null, B, NQ, HQ, D);
            Tensor dk = TestSupport.tensor(m, arena, DType.FP32, null, B, NK, HK, D);
            Tensor dv = TestSupport.tensor(m, arena, DType.FP32, null, B, NK, HK, D);
            int n = (int) (shape[0] * shape[1] * shape[2] * shape[3]);
            double[] bias = TestSupport.randn(r, DType.FP32, n);
            bias[7] = Double.NEGATIVE_INFINITY;  // masked: dbias 0 there
            Tensor biasT = TestSupport.tensor(m, arena, DType.FP32, bias, shape);
            Tensor dbias = TestSupport.tensor(m, arena, DType.FP32, null, shape);
            AttentionSpec spec = AttentionSpec.of(Score.IDENTITY).alpha(0).causal();
            FlashSig.backward(spec, AttentionExtras.none().bias(biasT), q, k, v, null, dout, null, dq, dk, dv, dbias);
            double[] want = new double[n];
            for (int b = 0; b < B; b++)
                for (int h = 0; h < HQ; h++)
                    for (int i = 0; i < NQ; i++)
                        for (int j = 0; j < NK; j++) {
                            int e = Ref.idx(shape, b, h, i, j);
                            if (j > i + NK - NQ || bias[e] == Double.NEGATIVE_INFINITY) continue;
                            double dp = 0;
                            for (int c = 0; c < D; c++)
                                dp += gv[((b * NQ + i) * HQ + h) * D + c] * vv[((b * NK + j) * HK + h / 2) * D + c];
                            want[e] += dp;
                        }
            // each element sums dS over (B·HQ·NQ·NK / n) entries: fp32 rounding grows with its square root
            double tol = 1e-4 * Math.sqrt((double) B * HQ * NQ * NK / n);
            assertNear("dbias " + Arrays.toString(shape) + " " + m, dbias.toFloatArray(), want, tol);
        }
    }

    /** Options that allow everything change nothing, bit for bit. */
    @Test
    void neutralOptionsAreIdentities() {
        Random r = new Random(9);
        try (Arena arena = Arena.ofConfined()) {
            Tensor q = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.BF16, TestSupport.randn(r, DType.BF16, B * NQ * HQ * D), B, NQ, HQ, D);
            Tensor k = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.BF16, TestSupport.randn(r, DType.BF16, B * NK * HK * D), B, NK, HK, D);
            Tensor v = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.BF16, TestSupport.randn(r, DType.BF16, B * NK * HK * D), B, NK, HK, D);
            AttentionSpec base = AttentionSpec.softmax().causal();
            float[] plain = run(base, AttentionExtras.none(), arena, q, k, v);
            Mask allTrue = Mask.allocate(arena, B, 1, 1, NK);
            allTrue.segment().fill((byte) 1);
            assertArrayEquals(plain, run(base, AttentionExtras.none().mask(allTrue), arena, q, k, v), "all-true mask");
            assertArrayEquals(plain, run(base.strided(1), AttentionExtras.none(), arena, q, k, v), "strided(1)");
            assertArrayEquals(plain, run(base.lognScaling(1 << 20), AttentionExtras.none(), arena, q, k, v), "lognScaling(2^20)");
            Mask ones = Mask.allocate(arena, 1, 3, 3);
            ones.segment().fill((byte) 1);
            assertArrayEquals(plain, run(base.blockSparse(16, 32), AttentionExtras.none().blockLayout(ones), arena, q, k, v),
                    "all-ones block layout");
            assertArrayEquals(plain, run(base, null, arena, q, k, v), "null extras");
        }
    }

    private static float[] run(AttentionSpec spec, AttentionExtras x, Arena arena, Tensor q, Tensor k, Tensor v) {
        Tensor out = Tensor.allocate(arena, q.dtype(), B, NQ, HQ, D);
        FlashSig.forward(spec, x, q, k, v, out, null);
        return out.toFloatArray();
    }

    /**
     * Mask.keyPadding: key j of element b allowed iff j < lengths[b]; a masked softmax call gives each element the
     * output of a call over its own keys alone (non-causal: the bottom-right alignment moves with Nk), and a length
     * of 0 rows with no key (O = 0). Bad arguments are refused by name.
     */
    @Test
    void keyPaddingIsEachSequenceAlone() {
        long[] lengths = {NK, 33, 0, 1};
        int batch = lengths.length;
        Random r = new Random(12);
        try (Arena arena = Arena.ofConfined()) {
            Mask mask = Mask.keyPadding(arena, NK, lengths);
            assertArrayEquals(new long[] {batch, 1, 1, NK}, mask.shape());
            for (int b = 0; b < batch; b++)
                for (int j = 0; j < NK; j++) assertEquals(j < lengths[b], mask.get(b, 0, 0, j), "mask[" + b + ", " + j + "]");
            double[] q = TestSupport.randn(r, DType.FP32, batch * NQ * HQ * D);
            double[] k = TestSupport.randn(r, DType.FP32, batch * NK * HK * D);
            double[] v = TestSupport.randn(r, DType.FP32, batch * NK * HK * D);
            Tensor out = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, batch, NQ, HQ, D);
            FlashSig.forward(AttentionSpec.softmax(), AttentionExtras.none().mask(mask),
                    TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, q, batch, NQ, HQ, D),
                    TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, k, batch, NK, HK, D),
                    TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, v, batch, NK, HK, D), out, null);
            float[] masked = out.toFloatArray();
            int rowsOfOne = NQ * HQ * D, keysOfOne = NK * HK * D;
            for (int b = 0; b < batch; b++) {
                int n = (int) lengths[b];
                double[] alone = new double[rowsOfOne];
                if (n > 0) {
                    Tensor o = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, 1, NQ, HQ, D);
                    FlashSig.forward(AttentionSpec.softmax(), null,
                            TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32,
                                    Arrays.copyOfRange(q, b * rowsOfOne, (b + 1) * rowsOfOne), 1, NQ, HQ, D),
                            TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32,
                                    Arrays.copyOfRange(k, b * keysOfOne, b * keysOfOne + n * HK * D), 1, n, HK, D),
                            TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32,
                                    Arrays.copyOfRange(v, b * keysOfOne, b * keysOfOne + n * HK * D), 1, n, HK, D), o, null);
                    alone = TestSupport.toDoubles(o.toFloatArray());
                }
                assertNear("element " + b + " (length " + n + ")",
                        Arrays.copyOfRange(masked, b * rowsOfOne, (b + 1) * rowsOfOne), alone, 2e-5);
            }
            assertMessage(Status.NULL_ARGUMENT, "arena is null", () -> Mask.keyPadding(null, NK, 3));
            assertMessage(Status.NULL_ARGUMENT, "lengths is null", () -> Mask.keyPadding(arena, NK, (long[]) null));
            assertMessage(Status.INVALID_SHAPE, "lengths is empty but must hold one length per batch element",
                    () -> Mask.keyPadding(arena, NK));
            assertMessage(Status.INVALID_SHAPE, "nk is -1 but must be >= 0", () -> Mask.keyPadding(arena, -1, 0));
            assertMessage(Status.INVALID_PARAMS, "lengths[1] is 71 but must be in [0, nk = 70]",
                    () -> Mask.keyPadding(arena, NK, 5, NK + 1));
            assertMessage(Status.INVALID_PARAMS, "lengths[0] is -2 but must be in [0, nk = 70]", () -> Mask.keyPadding(arena, NK, -2));
        }
    }

    @Test
    void alibiSlopesHelper() {
        float[] s = FlashSig.alibiSlopes(8);
        for (int h = 0; h < 8; h++) assertEquals(Math.scalb(1f, -(h + 1)), s[h], "slope " + h);
        float[] s6 = FlashSig.alibiSlopes(6);
        assertEquals(0.0625f, s6[1]);  // 4 heads: 2^-2, 2^-4, ...
        assertEquals((float) Math.pow(2, -1), s6[4]);  // then 2^-1, 2^-3 of the 8-head schedule
        assertEquals((float) Math.pow(2, -3), s6[5]);
        FlashSigException e = assertThrows(FlashSigException.class, () -> FlashSig.alibiSlopes(0));
        assertEquals("heads is 0 but must be >= 1", e.getMessage());
    }

    @Test
    void specRefusesBadValues() {
        AttentionSpec s = AttentionSpec.softmax();
        assertMessage(Status.INVALID_PARAMS, "strided is -1 but must be >= 1, or 0 for no strided mask", () -> s.strided(-1));
        assertMessage(Status.INVALID_PARAMS, "lognScaling nTrain is 1 but must be >= 2 (lambda divides by ln nTrain), or 0 for off",
                () -> s.lognScaling(1));
        assertMessage(Status.INVALID_PARAMS, "lognScaling nTrain is -3 but must be >= 2 (lambda divides by ln nTrain), or 0 for off",
                () -> s.lognScaling(-3));
        assertMessage(Status.INVALID_PARAMS, "blockSparse block sizes are 0 x 16 but both must be >= 1 (or both 0 for no block-sparse layout)", () -> s.blockSparse(0, 16));
        assertMessage(Status.INVALID_PARAMS, "blockSparse block sizes are 16 x -2 but both must be >= 1 (or both 0 for no block-sparse layout)", () -> s.blockSparse(16, -2));
        assertEquals(s, s.strided(0).lognScaling(0), "0 switches the options off");
        assertTrue(s.strided(4).toString().contains("strided=4"));
    }

    /** Native refusals: status, exact message, outputs untouched. */
    @Test
    void nativeRefusalsWriteNothing() {
        try (Arena arena = Arena.ofConfined()) {
            Random r = new Random(2);
            Tensor q = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NQ * HQ * D), B, NQ, HQ, D);
            Tensor k = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NK * HK * D), B, NK, HK, D);
            Tensor v = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NK * HK * D), B, NK, HK, D);
            Tensor out = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, B, NQ, HQ, D);
            Tensor dq = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, B, NQ, HQ, D);
            Tensor dk = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, B, NK, HK, D);
            Tensor dv = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, B, NK, HK, D);
            Tensor dbias = TestSupport.tensor(Memory.OFF_HEAP, arena, DType.FP32, null, 1, HQ, NQ, NK);
            AttentionSpec sig = AttentionSpec.of(Score.SIGMOID);
            assertMessage(Status.NULL_ARGUMENT,
                    "block_layout is NULL but params.sparse_block_m/n are 16/32: pass the layout [1 or Hq, ceil(Nq/bm), ceil(Nk/bn)]",
                    () -> FlashSig.forward(sig.blockSparse(16, 32), AttentionExtras.none(), q, k, v, out, null));
            assertMessage(Status.INVALID_SHAPE,
                    "block_layout.shape[2] is 2 but must be ceil(Nk / sparse_block_n) = ceil(70 / 32) = 3",
                    () -> FlashSig.forward(sig.blockSparse(16, 32), AttentionExtras.none().blockLayout(Mask.allocate(arena, 1, 3, 2)),
                            q, k, v, out, null));
            assertMessage(Status.INVALID_SHAPE,
                    "bias.shape[1] is 2 but must be 1 (broadcast) or heads_q = 4: bias is [B|1, Hq|1, Nq|1, Nk]",
                    () -> FlashSig.forward(sig, AttentionExtras.none().bias(Tensor.allocate(arena, DType.FP32, 1, 2, NQ, NK)), q, k,
                            v, out, null));
            assertMessage(Status.INVALID_SHAPE, "alibi_slopes.shape[0] is 3 but must be heads_q = 4",
                    () -> FlashSig.forward(sig, AttentionExtras.none().alibi(new float[3]), q, k, v, out, null));
            assertMessage(Status.INVALID_PARAMS, "dbias is given but bias is NULL: dbias is the gradient of the bias",
                    () -> FlashSig.backward(sig, AttentionExtras.none(), q, k, v, null, out, null, dq, dk, dv, dbias));
            assertMessage(Status.INVALID_PARAMS,
                    "params.score = linear_elu takes none of the masks-and-positions extensions (alibi_slopes, bias, mask, "
                            + "block_layout, params.sparse_block_m/n, params.strided, params.logn_train): they are for the "
                            + "softmax and pointwise scores",
                    () -> FlashSig.forward(AttentionSpec.of(Score.LINEAR_ELU).strided(2), AttentionExtras.none(), q, k, v, out, null));
            for (Tensor t : new Tensor[] {out, dq, dk, dv, dbias})
                for (float f : t.toFloatArray()) assertTrue(Float.isNaN(f), "an output was written by a failing call");
        }
    }

    static void assertMessage(Status status, String message, org.junit.jupiter.api.function.Executable call) {
        FlashSigException e = assertThrows(FlashSigException.class, call);
        assertEquals(status, e.status(), e.getMessage());
        assertEquals(message, e.getMessage());
    }
}
