package io.flashsig.nd4j;

import io.flashsig.AttentionSpec;
import io.flashsig.DType;
import io.flashsig.FlashSig;
import io.flashsig.FlashSigException;
import io.flashsig.FlashSigException.Status;
import io.flashsig.Score;
import io.flashsig.nd4j.FlashSigNd4j.Layout;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.impl.transforms.custom.DotProductAttention;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static io.flashsig.nd4j.Nd4jSupport.array;
import static io.flashsig.nd4j.Nd4jSupport.assertClose;
import static io.flashsig.nd4j.Nd4jSupport.fsig;
import static io.flashsig.nd4j.Nd4jSupport.poisoned;
import static io.flashsig.nd4j.Nd4jSupport.randn;
import static io.flashsig.nd4j.Nd4jSupport.values;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class FlashSigNd4jTest {
    private static final DataType[] DTYPES = {DataType.FLOAT, DataType.HALF, DataType.BFLOAT16};
    /** The scores of DESIGN.md §4's table (Ref computes these). */
    private static final Score[] SCORES = {Score.SOFTMAX, Score.SIGMOID, Score.RELU, Score.RELU2, Score.GELU,
            Score.SOFTPLUS, Score.IDENTITY};

    /** One random problem in BSHD double[]s, with its arrays in a layout. */
    record Case(int b, int nq, int nk, int hq, int hk, int d, double[] q, double[] k, double[] v) {
        static Case random(long seed, DataType t, int b, int nq, int nk, int hq, int hk, int d) {
            Random r = new Random(seed);
            return new Case(b, nq, nk, hq, hk, d, randn(r, t, b * nq * hq * d), randn(r, t, b * nk * hk * d),
                    randn(r, t, b * nk * hk * d));
        }

        Ref.Problem problem(AttentionSpec s) {
            return Ref.Problem.of(s, b, nq, nk, hq, hk, d);
        }
    }

    // ---- zero copy -----------------------------------------------------------------------------

    @Test
    void forwardWritesTheCallersArrayInPlace() {
        Case c = Case.random(1, DataType.FLOAT, 1, 17, 23, 2, 2, 16);
        Layout l = Layout.BHDN;
        INDArray q = array(l, DataType.FLOAT, 'c', c.q, 1, 17, 2, 16);
        INDArray k = array(l, DataType.FLOAT, 'c', c.k, 1, 23, 2, 16);
        INDArray v = array(l, DataType.FLOAT, 'c', c.v, 1, 23, 2, 16);
        INDArray out = poisoned(l, DataType.FLOAT, 'c', 1, 17, 2, 16);
        INDArray before = out;
        long address = out.data().address();
        long qAddress = q.data().address();
        double[] qBefore = values(l, q);

        FlashSigNd4j.forward(AttentionSpec.softmax(), l, q, k, v, out);

        assertSame(before, out);
        assertEquals(address, out.data().address(), "out's buffer moved");
        assertEquals(qAddress, q.data().address(), "q's buffer moved");
        assertArrayEquals(qBefore, values(l, q), "q changed");
        double[] ref = new Ref(c.problem(AttentionSpec.softmax()), null).forward(c.q, c.k, c.v)[0];
        double[] ours = values(l, out); // through the INDArray's own accessors
        for (int i = 0; i < ref.length; i++) assertEquals(ref[i], ours[i], 1e-5, "out[" + i + "]");
        // and through ND4J's ops on the same object
        assertEquals(Arrays.stream(ref).sum(), out.sumNumber().doubleValue(), 1e-3);
    }

    // ---- against ND4J's own op --------------------------------------------------------------------

    @Test
    void softmaxAgreesWithNd4jDotProductAttention() {
        int b = 2, h = 3, d = 37, nq = 53, nk = 71;
        Case c = Case.random(2, DataType.FLOAT, b, nq, nk, h, h, d);
        Layout l = Layout.BHDN;
        INDArray q = array(l, DataType.FLOAT, 'c', c.q, b, nq, h, d);
        INDArray k = array(l, DataType.FLOAT, 'c', c.k, b, nk, h, d);
        INDArray v = array(l, DataType.FLOAT, 'c', c.v, b, nk, h, d);
        INDArray out = poisoned(l, DataType.FLOAT, 'c', b, nq, h, d);

        FlashSigNd4j.forward(AttentionSpec.softmax(), l, q, k, v, out);
        INDArray nd4j = Nd4j.exec(new DotProductAttention(q, k, v, null, true, false))[0];

        assertArrayEquals(out.shape(), nd4j.shape());
        double[] ref64 = new Ref(c.problem(AttentionSpec.softmax()), null).forward(c.q, c.k, c.v)[0];
        double[] theirs = values(l, nd4j);
        // ND4J's op is the "naive computation in the dtype" of §6; it must itself be close to fp64
        assertClose("nd4j vs ref64", theirs, ref64, new Ref(c.problem(AttentionSpec.softmax()), DType.FP32)
                .forward(c.q, c.k, c.v)[0]);
        assertClose("out", values(l, out), ref64, theirs);
    }

    // ---- ND4J's key mask --------------------------------------------------------------------------

    /** A random key mask [B, Nk] with at least one allowed key per batch, as 0/1 doubles. */
    static double[][] keyMask(long seed, int b, int nk) {
        Random r = new Random(seed);
        double[][] m = new double[b][nk];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < nk; j++) m[i][j] = r.nextInt(3) == 0 ? 0 : 1;
            m[i][r.nextInt(nk)] = 1;
        }
        return m;
    }

    @ParameterizedTest(name = "mask {0}")
    @EnumSource(value = DataType.class, names = {"BOOL", "FLOAT", "INT"})
    void keyMaskAgreesWithNd4jDotProductAttention(DataType maskType) {
        int b = 2, h = 3, d = 24, nq = 19, nk = 45;
        Case c = Case.random(5, DataType.FLOAT, b, nq, nk, h, h, d);
        Layout l = Layout.BHDN;
        INDArray q = array(l, DataType.FLOAT, 'c', c.q, b, nq, h, d);
        INDArray k = array(l, DataType.FLOAT, 'c', c.k, b, nk, h, d);
        INDArray v = array(l, DataType.FLOAT, 'c', c.v, b, nk, h, d);
        INDArray mask = Nd4j.createFromArray(keyMask(7, b, nk)).castTo(maskType);
        INDArray maskBefore = mask.dup();
        INDArray out = poisoned(l, DataType.FLOAT, 'c', b, nq, h, d);

        FlashSigNd4j.forward(AttentionSpec.softmax(), l, q, k, v, mask, out, null);
        INDArray nd4j = Nd4j.exec(new DotProductAttention(q, k, v, mask.castTo(DataType.FLOAT), true, false))[0];

        assertEquals(maskBefore, mask, "the mask changed");
        double[] ours = values(l, out), theirs = values(l, nd4j);
        for (int i = 0; i < ours.length; i++)
            assertEquals(theirs[i], ours[i], 2e-5 * (1 + Math.abs(theirs[i])), "out[" + i + "]");
    }

    /** With B = 1 a key mask equals dropping the masked keys: out and dq agree, dk and dv of masked keys are 0. */
    @Test
    void keyMaskEqualsDroppingTheKeysForwardAndBackward() {
        int h = 2, d = 16, nq = 13, nk = 30;
        Case c = Case.random(9, DataType.FLOAT, 1, nq, nk, h, h, d);
        Layout l = Layout.BHND;
        INDArray q = array(l, DataType.FLOAT, 'c', c.q, 1, nq, h, d);
        INDArray k = array(l, DataType.FLOAT, 'c', c.k, 1, nk, h, d);
        INDArray v = array(l, DataType.FLOAT, 'c', c.v, 1, nk, h, d);
        double[] m = keyMask(11, 1, nk)[0];
        long[] kept = java.util.stream.IntStream.range(0, nk).filter(j -> m[j] != 0).asLongStream().toArray();
        INDArray mask = Nd4j.createFromArray(new double[][] {m}).castTo(DataType.BOOL);
        INDArray ks = k.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.indices(kept), NDArrayIndex.all()).dup();
        INDArray vs = v.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.indices(kept), NDArrayIndex.all()).dup();
        INDArray dout = Nd4j.rand(DataType.FLOAT, q.shape()).subi(0.5);
        AttentionSpec sm = AttentionSpec.softmax();

        INDArray out = Nd4j.create(DataType.FLOAT, q.shape()), lse = Nd4j.create(DataType.FLOAT, 1, h, nq);
        INDArray dq = Nd4j.create(DataType.FLOAT, q.shape()), dk = Nd4j.create(DataType.FLOAT, k.shape());
        INDArray dv = Nd4j.create(DataType.FLOAT, v.shape());
        FlashSigNd4j.forward(sm, l, q, k, v, mask, out, lse);
        FlashSigNd4j.backward(sm, l, q, k, v, mask, out, dout, lse, dq, dk, dv);

        INDArray out2 = Nd4j.create(DataType.FLOAT, q.shape()), lse2 = Nd4j.create(DataType.FLOAT, 1, h, nq);
        INDArray dq2 = Nd4j.create(DataType.FLOAT, q.shape()), dk2 = Nd4j.create(DataType.FLOAT, ks.shape());
        INDArray dv2 = Nd4j.create(DataType.FLOAT, vs.shape());
        FlashSigNd4j.forward(sm, l, q, ks, vs, null, out2, lse2);
        FlashSigNd4j.backward(sm, l, q, ks, vs, null, out2, dout, lse2, dq2, dk2, dv2);

        assertTrue(out.equalsWithEps(out2, 1e-5), "out");
        assertTrue(dq.equalsWithEps(dq2, 1e-5), "dq");
        INDArray dkKept = dk.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.indices(kept), NDArrayIndex.all());
        INDArray dvKept = dv.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.indices(kept), NDArrayIndex.all());
        assertTrue(dkKept.equalsWithEps(dk2, 1e-5), "dk of kept keys");
        assertTrue(dvKept.equalsWithEps(dv2, 1e-5), "dv of kept keys");
        double masked = 0;
        for (int j = 0; j < nk; j++)
            if (m[j] == 0)
                masked += dk.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.point(j), NDArrayIndex.all())
                        .amaxNumber().doubleValue()
                        + dv.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.point(j), NDArrayIndex.all())
                        .amaxNumber().doubleValue();
        assertEquals(0.0, masked, "dk, dv of masked keys");
    }

    // ---- every score, dtype, layout -----------------------------------------------------------------

    static Stream<Arguments> scoresDtypesLayouts() {
        List<Arguments> a = new ArrayList<>();
        int i = 0;
        for (Score s : SCORES)
            for (DataType t : DTYPES) a.add(Arguments.of(s, t, Layout.values()[i++ % 3], i % 2 == 0 ? 'c' : 'f'));
        return a.stream();
    }

    @ParameterizedTest(name = "{0} {1} {2} {3}-order")
    @MethodSource("scoresDtypesLayouts")
    void forwardAndBackwardMatchTheReference(Score score, DataType t, Layout l, char order) {
        int b = 2, nq = 29, nk = 41, hq = 4, hk = 2, d = 24;
        AttentionSpec spec = AttentionSpec.of(score).causal(score == Score.RELU);
        Case c = Case.random(31L * score.ordinal() + t.ordinal(), t, b, nq, nk, hq, hk, d);
        INDArray q = array(l, t, order, c.q, b, nq, hq, d);
        INDArray k = array(l, t, order, c.k, b, nk, hk, d);
        INDArray v = array(l, t, order, c.v, b, nk, hk, d);
        INDArray out = poisoned(l, t, order, b, nq, hq, d);
        INDArray lse = score == Score.SOFTMAX ? Nd4j.create(DataType.FLOAT, b, hq, nq).assign(Double.NaN) : null;

        FlashSigNd4j.forward(spec, l, q, k, v, null, out, lse);

        Ref ref64 = new Ref(c.problem(spec), null), naive = new Ref(c.problem(spec), fsig(t));
        double[][] f64 = ref64.forward(c.q, c.k, c.v), fn = naive.forward(c.q, c.k, c.v);
        assertClose("out", values(l, out), f64[0], fn[0]);
        if (lse != null) assertClose("lse", lse.dup().data().asDouble(), f64[1], fn[1]);

        double[] g = randn(new Random(7), t, c.q.length);
        INDArray dout = array(l, t, order, g, b, nq, hq, d);
        INDArray dq = poisoned(l, t, order, b, nq, hq, d);
        INDArray dk = poisoned(l, t, order, b, nk, hk, d);
        INDArray dv = poisoned(l, t, order, b, nk, hk, d);
        FlashSigNd4j.backward(spec, l, q, k, v, null, lse == null ? null : out, dout, lse, dq, dk, dv);

        // the reference differentiates the exact forward; ours used its own (rounded) out, as training does
        double[][] g64 = ref64.backward(c.q, c.k, c.v, g), gn = naive.backward(c.q, c.k, c.v, g);
        assertClose("dq", values(l, dq), g64[0], gn[0]);
        assertClose("dk", values(l, dk), g64[1], gn[1]);
        assertClose("dv", values(l, dv), g64[2], gn[2]);
    }

    @Test
    void backwardAgreesWithFiniteDifferences() {
        // fp32 kernel, central differences of L = Σ out·g in fp64 over the kernel's own forward
        int b = 1, nq = 7, nk = 9, h = 2, d = 8;
        Layout l = Layout.BHDN;
        for (Score score : new Score[] {Score.SOFTMAX, Score.SIGMOID, Score.GELU}) {
            AttentionSpec spec = AttentionSpec.of(score);
            Case c = Case.random(11 + score.ordinal(), DataType.FLOAT, b, nq, nk, h, h, d);
            double[] g = randn(new Random(5), DataType.FLOAT, c.q.length);
            INDArray q = array(l, DataType.FLOAT, 'c', c.q, b, nq, h, d);
            INDArray k = array(l, DataType.FLOAT, 'c', c.k, b, nk, h, d);
            INDArray v = array(l, DataType.FLOAT, 'c', c.v, b, nk, h, d);
            INDArray out = poisoned(l, DataType.FLOAT, 'c', b, nq, h, d);
            INDArray lse = Nd4j.create(DataType.FLOAT, b, h, nq);
            FlashSigNd4j.forward(spec, l, q, k, v, null, out, score == Score.SOFTMAX ? lse : null);
            INDArray dout = array(l, DataType.FLOAT, 'c', g, b, nq, h, d);
            INDArray dq = poisoned(l, DataType.FLOAT, 'c', b, nq, h, d);
            INDArray dk = poisoned(l, DataType.FLOAT, 'c', b, nk, h, d);
            INDArray dv = poisoned(l, DataType.FLOAT, 'c', b, nk, h, d);
            boolean sm = score == Score.SOFTMAX;
            FlashSigNd4j.backward(spec, l, q, k, v, null, sm ? out : null, dout, sm ? lse : null, dq, dk, dv);

            assertFiniteDifferences(spec, l, q, k, v, g, dq, dk, dv, 6, new Random(3), score.toString());
        }
    }

    /**
     * {@code probes} random elements of q, k, v in turn ([B, H, d, N] arrays, batch 0): the gradients
     * against central differences (step 1e-2) of L = Σ out·g over the kernel's own fp32 forward.
     */
    private static void assertFiniteDifferences(AttentionSpec spec, Layout l, INDArray q, INDArray k, INDArray v,
                                                double[] g, INDArray dq, INDArray dk, INDArray dv, int probes,
                                                Random r, String what) {
        for (int probe = 0; probe < probes; probe++) {
            INDArray x = probe % 3 == 0 ? q : probe % 3 == 1 ? k : v;
            INDArray dx = probe % 3 == 0 ? dq : probe % 3 == 1 ? dk : dv;
            long[] idx = {0, r.nextInt((int) x.size(1)), r.nextInt((int) x.size(2)), r.nextInt((int) x.size(3))};
            double x0 = x.getDouble(idx), eps = 1e-2;
            x.putScalar(idx, x0 + eps);
            double lp = loss(spec, l, q, k, v, g);
            x.putScalar(idx, x0 - eps);
            double lm = loss(spec, l, q, k, v, g);
            x.putScalar(idx, x0);
            double fd = (lp - lm) / (2 * eps), an = dx.getDouble(idx);
            assertEquals(fd, an, 2e-3 + 2e-2 * Math.abs(fd), what + " d" + "qkv".charAt(probe % 3) + Arrays.toString(idx));
        }
    }

    private static double loss(AttentionSpec spec, Layout l, INDArray q, INDArray k, INDArray v, double[] g) {
        INDArray out = Nd4j.create(DataType.FLOAT, q.shape());
        FlashSigNd4j.forward(spec, l, q, k, v, out);
        double[] o = values(l, out);
        double s = 0;
        for (int i = 0; i < o.length; i++) s += o[i] * g[i];
        return s;
    }

    // ---- linear attention: cosFormer and elu+1 on ND4J arrays -----------------------------------------

    static Stream<Arguments> linearScores() {
        List<Arguments> a = new ArrayList<>();
        int i = 0;
        for (Score s : new Score[] {Score.COSFORMER, Score.LINEAR_ELU})
            for (boolean causal : new boolean[] {false, true})
                for (DataType t : new DataType[] {DataType.FLOAT, DataType.BFLOAT16})
                    a.add(Arguments.of(s, causal, t, Layout.values()[i++ % 3]));
        return a.stream();
    }

    /**
     * The linear scores through the adapter: forward against the quadratic form (DESIGN.md §4) by the §6
     * rule, GQA, Nq ≠ Nk (bottom-right aligned positions), lengths spanning several 64-row chunks.
     */
    @ParameterizedTest(name = "{0} causal={1} {2} {3}")
    @MethodSource("linearScores")
    void linearScoresMatchTheirQuadraticForm(Score score, boolean causal, DataType t, Layout l) {
        int b = 2, nq = 77, nk = 150, hq = 4, hk = 2, d = 12;
        AttentionSpec spec = AttentionSpec.of(score).causal(causal);
        Case c = Case.random(17L * score.ordinal() + (causal ? 1 : 0), t, b, nq, nk, hq, hk, d);
        INDArray q = array(l, t, 'c', c.q, b, nq, hq, d);
        INDArray k = array(l, t, 'c', c.k, b, nk, hk, d);
        INDArray v = array(l, t, 'c', c.v, b, nk, hk, d);
        INDArray out = poisoned(l, t, 'c', b, nq, hq, d);

        FlashSigNd4j.forward(spec, l, q, k, v, out);

        assertClose("out", values(l, out), linearForward(score, causal, c, null), linearForward(score, causal, c, fsig(t)));
    }

    @Test
    void linearBackwardAgreesWithFiniteDifferences() {
        // fp32 kernel, ND4J's [B, H, d, N] layout, central differences of L = Σ out·g over the kernel's forward
        int b = 1, nq = 9, nk = 11, h = 2, d = 8;
        Layout l = Layout.BHDN;
        for (Score score : new Score[] {Score.COSFORMER, Score.LINEAR_ELU})
            for (boolean causal : new boolean[] {false, true}) {
                AttentionSpec spec = AttentionSpec.of(score).causal(causal);
                Case c = Case.random(21 + score.ordinal(), DataType.FLOAT, b, nq, nk, h, h, d);
                double[] g = randn(new Random(6), DataType.FLOAT, c.q.length);
                INDArray q = array(l, DataType.FLOAT, 'c', c.q, b, nq, h, d);
                INDArray k = array(l, DataType.FLOAT, 'c', c.k, b, nk, h, d);
                INDArray v = array(l, DataType.FLOAT, 'c', c.v, b, nk, h, d);
                INDArray dout = array(l, DataType.FLOAT, 'c', g, b, nq, h, d);
                INDArray dq = poisoned(l, DataType.FLOAT, 'c', b, nq, h, d);
                INDArray dk = poisoned(l, DataType.FLOAT, 'c', b, nk, h, d);
                INDArray dv = poisoned(l, DataType.FLOAT, 'c', b, nk, h, d);
                FlashSigNd4j.backward(spec, l, q, k, v, dout, dq, dk, dv);

                assertFiniteDifferences(spec, l, q, k, v, g, dq, dk, dv, 9, new Random(4),
                        score + (causal ? " causal" : ""));
            }
    }

    /**
     * O_i = Σ_j w_ij v_j / max(Σ_j w_ij, 1e-6) over the allowed j (causal: j ≤ i + Nk − Nq), with
     * w_ij = relu(q_i)·relu(k_j) cos(π (p_i − p_j) / 2M) (cosFormer; p_i = i + Nk − Nq, p_j = j,
     * M = max(Nq, Nk)) or φ(q_i)·φ(k_j) with φ = elu + 1. BSHD values; {@code dtype == null} is the fp64
     * reference, otherwise fp32 arithmetic with the output rounded to the dtype (the §6 naive computation).
     */
    private static double[] linearForward(Score score, boolean causal, Case c, DType dtype) {
        boolean cosformer = score == Score.COSFORMER, naive = dtype != null;
        int off = c.nk - c.nq, group = c.hq / c.hk, d = c.d;
        double length = Math.max(c.nq, c.nk);
        java.util.function.DoubleUnaryOperator phi = x -> cosformer ? Math.max(x, 0) : x > 0 ? x + 1 : Math.exp(x);
        java.util.function.DoubleUnaryOperator f32 = x -> naive ? (float) x : x;
        double[] out = new double[c.q.length];
        for (int bb = 0; bb < c.b; bb++)
            for (int i = 0; i < c.nq; i++)
                for (int h = 0; h < c.hq; h++) {
                    int qi = ((bb * c.nq + i) * c.hq + h) * d;
                    double[] num = new double[d];
                    double den = 0;
                    for (int j = 0; j < c.nk; j++) {
                        if (causal && j > i + off) continue;
                        int kj = ((bb * c.nk + j) * c.hk + h / group) * d;
                        double w = 0;
                        for (int e = 0; e < d; e++)
                            w = f32.applyAsDouble(w + phi.applyAsDouble(c.q[qi + e]) * phi.applyAsDouble(c.k[kj + e]));
                        if (cosformer) w = f32.applyAsDouble(w * Math.cos(Math.PI * (i + off - j) / (2 * length)));
                        den = f32.applyAsDouble(den + w);
                        for (int e = 0; e < d; e++) num[e] = f32.applyAsDouble(num[e] + w * c.v[kj + e]);
                    }
                    double n = Math.max(den, 1e-6);
                    for (int e = 0; e < d; e++)
                        out[qi + e] = naive ? dtype.round((float) (num[e] / n)) : num[e] / n;
                }
        return out;
    }

    // ---- strides: views, f-order, mixed -------------------------------------------------------------

    @Test
    void stridedViewsAndMixedOrdersGiveTheSameResult() {
        int b = 1, nq = 19, nk = 33, h = 3, d = 20;
        Layout l = Layout.BHND;
        Case c = Case.random(4, DataType.FLOAT, b, nq, nk, h, h, d);
        AttentionSpec spec = AttentionSpec.of(Score.SIGMOID);
        INDArray q = array(l, DataType.FLOAT, 'f', c.q, b, nq, h, d);
        INDArray k = array(l, DataType.FLOAT, 'c', c.k, b, nk, h, d);
        // v as every other row of a bigger array: a view with a sequence stride of 2 rows and an offset
        INDArray big = Nd4j.create(DataType.FLOAT, b, h, 2 * nk + 1, d).assign(1e6);
        INDArray v = big.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.interval(1, 2, 2 * nk + 1),
                NDArrayIndex.all());
        assertTrue(v.isView());
        v.assign(array(l, DataType.FLOAT, 'c', c.v, b, nk, h, d));
        // out: the transpose of a c-order [B, d, N, H] array (strides of no standard order)
        INDArray outBase = Nd4j.create(DataType.FLOAT, b, d, nq, h).assign(Double.NaN);
        INDArray out = outBase.permute(0, 3, 2, 1);
        assertArrayEquals(new long[] {b, h, nq, d}, out.shape());

        FlashSigNd4j.forward(spec, l, q, k, v, out);

        Ref.Problem p = c.problem(spec);
        assertClose("out", values(l, out), new Ref(p, null).forward(c.q, c.k, c.v)[0],
                new Ref(p, DType.FP32).forward(c.q, c.k, c.v)[0]);
        // the elements between v's rows were not touched
        assertEquals(1e6, big.getDouble(0, 0, 0, 0));
        assertEquals(1e6, big.getDouble(0, 2, 2 * nk, d - 1));
    }

    // ---- bad inputs ------------------------------------------------------------------------------

    @Test
    void badInputsFailClearlyAndWriteNothing() {
        int b = 1, n = 8, h = 2, d = 16;
        Layout l = Layout.BHDN;
        Case c = Case.random(9, DataType.FLOAT, b, n, n, h, h, d);
        INDArray q = array(l, DataType.FLOAT, 'c', c.q, b, n, h, d);
        INDArray k = array(l, DataType.FLOAT, 'c', c.k, b, n, h, d);
        INDArray v = array(l, DataType.FLOAT, 'c', c.v, b, n, h, d);
        INDArray out = Nd4j.create(DataType.FLOAT, q.shape()).assign(42);
        AttentionSpec sm = AttentionSpec.softmax();

        expect(Status.INVALID_SHAPE, "rank 3", out,
                () -> FlashSigNd4j.forward(sm, l, q.reshape(b * h, d, n), k, v, out));
        expect(Status.INVALID_SHAPE, "v has shape", out,
                () -> FlashSigNd4j.forward(sm, l, q, k, Nd4j.create(DataType.FLOAT, b, h, d, n + 1), out));
        expect(Status.INVALID_SHAPE, "head dim", out,
                () -> FlashSigNd4j.forward(sm, l, q, Nd4j.create(DataType.FLOAT, b, h, d + 1, n),
                        Nd4j.create(DataType.FLOAT, b, h, d + 1, n), out));
        expect(Status.INVALID_SHAPE, "multiple", out,
                () -> FlashSigNd4j.forward(sm, l, q, Nd4j.create(DataType.FLOAT, b, 3, d, n),
                        Nd4j.create(DataType.FLOAT, b, 3, d, n), out));
        expect(Status.INVALID_SHAPE, "out has shape", out,
                () -> FlashSigNd4j.forward(sm, l, q, k, v, out.reshape(b, h, n, d)));
        expect(Status.INVALID_DTYPE, "DOUBLE", out,
                () -> FlashSigNd4j.forward(sm, l, q.castTo(DataType.DOUBLE), k, v, out));
        expect(Status.INVALID_DTYPE, "INT", out,
                () -> FlashSigNd4j.forward(sm, l, q, k.castTo(DataType.INT), v, out));
        expect(Status.INVALID_DTYPE, "", out,
                () -> FlashSigNd4j.forward(sm, l, q, k.castTo(DataType.HALF), v, out)); // native: dtypes differ
        expect(Status.INVALID_SHAPE, "mask has shape", out,
                () -> FlashSigNd4j.forward(sm, l, q, k, v, Nd4j.ones(DataType.BOOL, b, n + 1), out, null));
        expect(Status.INVALID_SHAPE, "mask has shape", out,
                () -> FlashSigNd4j.forward(sm, l, q, k, v, Nd4j.ones(DataType.BOOL, b, 1, n), out, null));
        expect(Status.NULL_ARGUMENT, "k is null", out, () -> FlashSigNd4j.forward(sm, l, q, null, v, out));
        expect(Status.INVALID_SHAPE, "lse", out, () -> FlashSigNd4j.forward(sm, l, q, k, v, null, out,
                Nd4j.create(DataType.FLOAT, b, h, n + 1)));

        // an output whose strides write elements twice: a zero stride over the sequence
        INDArray flat = Nd4j.create(DataType.FLOAT, b * h * d).assign(42);
        INDArray broadcastOut = Nd4j.create(flat.data(), new long[] {b, h, d, n}, new long[] {h * d, d, 1, 0}, 0, 'c');
        expect(Status.INVALID_STRIDE, "overlap", broadcastOut,
                () -> FlashSigNd4j.forward(sm, l, q, k, v, broadcastOut));
        assertTrue(Arrays.stream(flat.data().asDouble()).allMatch(x -> x == 42), "broadcast out was written");

        // backward: a mask of the wrong shape, and softmax without out/lse
        INDArray dq = Nd4j.create(DataType.FLOAT, q.shape()).assign(42);
        expect(Status.INVALID_SHAPE, "mask has shape", dq, () -> FlashSigNd4j.backward(sm, l, q, k, v,
                Nd4j.ones(DataType.BOOL, b + 1, n), out, out, null, dq, k.dup(), v.dup()));
        expect(null, "", dq, () -> FlashSigNd4j.backward(sm, l, q, k, v, out, dq, k.dup(), v.dup()));
    }

    private static void expect(Status status, String words, INDArray untouched, Executable call) {
        double[] before = untouched.dup().data().asDouble();
        FlashSigException e = assertThrows(FlashSigException.class, call::run);
        if (status != null) assertEquals(status, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains(words), "'" + e.getMessage() + "' should mention '" + words + "'");
        double[] after = untouched.dup().data().asDouble();
        for (int i = 0; i < before.length; i++)
            if (Double.compare(before[i], after[i]) != 0) throw new AssertionError("output written at " + i);
    }

    @FunctionalInterface
    interface Executable {
        void run();
    }

    // ---- threads ---------------------------------------------------------------------------------

    @Test
    void shareCoresSplitsThePools() {
        int cores = Runtime.getRuntime().availableProcessors();
        try {
            if (cores > 1) {
                FlashSigNd4j.shareCores(1);
                assertEquals(1, FlashSig.numThreads());
                assertEquals(cores - 1, Nd4j.getEnvironment().maxMasterThreads());
                assertEquals(cores - 1, Nd4j.factory().blas().getMaxThreads());
            }
            assertThrows(FlashSigException.class, () -> FlashSigNd4j.shareCores(0));
            if (cores > 1) assertThrows(FlashSigException.class, () -> FlashSigNd4j.shareCores(cores));
        } finally {
            FlashSigNd4j.restoreThreadDefaults();
        }
        assertEquals(cores, FlashSig.numThreads());
        assertEquals(cores, Nd4j.getEnvironment().maxMasterThreads());
        assertEquals(cores, Nd4j.factory().blas().getMaxThreads());
    }

    @ParameterizedTest
    @EnumSource(Layout.class)
    void tensorViewHasThePermutedStrides(Layout l) {
        INDArray a = Nd4j.create(DataType.FLOAT, 2, 3, 5, 7);
        var t = FlashSigNd4j.tensor(a, l);
        long[] st = a.stride();
        long[] want = switch (l) {
            case BHDN -> new long[] {st[0], st[3], st[1], st[2]};
            case BNHD -> st;
            case BHND -> new long[] {st[0], st[2], st[1], st[3]};
        };
        assertArrayEquals(want, t.strides());
        assertEquals(a.data().address(), t.segment().address());
    }
}
