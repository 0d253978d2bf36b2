package io.flashsig.examples;

import io.flashsig.AttentionSpec;
import io.flashsig.Score;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * One attention layer in plain Java, trained with FlashSig's forward and backward:
 * <pre>
 *   X = E[token] + P[position]                      embeddings, [B·N, D], D = H·d
 *   Q = X Wq,  K = X Wk,  V = X Wv                  [B, N, H, d] (BSHD, what FlashSig takes)
 *   A = attention(Q, K, V)                           FlashSig forward, softmax or sigmoid (an AttentionBackend)
 *   Y = X + A Wo                                     residual
 *   logits = Y Wu + bu,  loss = cross-entropy       mean over B·N positions
 * </pre>
 * Backward is written out here, with FlashSig's backward for the attention (dQ, dK, dV from dA);
 * the parameters are updated with Adam. All arrays are fp32 float[] on the heap; the attention runs where
 * its {@link AttentionBackend} puts it (fp32 on the CPU over these arrays, or bf16 on a GPU).
 */
final class AttentionModel {
    /** The model's sizes: vocabulary, sequence length, batch, heads and head dim (D = heads · headDim). */
    record Dims(int vocab, int n, int batch, int heads, int headDim) {
        /** [B, N, H, d]: the shape of every attention call. */
        long[] attentionShape() {
            return new long[] {batch, n, heads, headDim};
        }
    }

    final int vocab, n, batch, heads, headDim, dim;
    final Score score;
    private final AttentionBackend attention;
    private final List<Param> params = new ArrayList<>();
    private final Param emb, pos, wq, wk, wv, wo, wu, bu;
    private final float lr;
    private int t; // Adam step

    /** A parameter with its gradient and Adam moments. */
    static final class Param {
        final float[] w, g, m, v;

        Param(int size) {
            w = new float[size];
            g = new float[size];
            m = new float[size];
            v = new float[size];
        }
    }

    /** A model with weights drawn from {@code seed}, its attention from {@code backends}. */
    AttentionModel(Score score, Dims dims, float lr, long seed, AttentionBackend.Factory backends) {
        this.score = score;
        this.vocab = dims.vocab();
        this.n = dims.n();
        this.batch = dims.batch();
        this.heads = dims.heads();
        this.headDim = dims.headDim();
        this.dim = heads * headDim;
        this.attention = backends.create(AttentionSpec.of(score), dims.attentionShape());
        this.lr = lr;
        Random r = new Random(seed);
        emb = param(vocab * dim, 0.5, r);
        pos = param(n * dim, 0.5, r);
        wq = param(dim * dim, 1 / Math.sqrt(dim), r);
        wk = param(dim * dim, 1 / Math.sqrt(dim), r);
        wv = param(dim * dim, 1 / Math.sqrt(dim), r);
        wo = param(dim * dim, 1 / Math.sqrt(dim), r);
        wu = param(dim * vocab, 1 / Math.sqrt(dim), r);
        bu = param(vocab, 0, r);
    }

    private Param param(int size, double std, Random r) {
        Param p = new Param(size);
        for (int i = 0; i < size; i++) p.w[i] = (float) (std * r.nextGaussian());
        params.add(p);
        return p;
    }

    /** Where the attention runs, for the log. */
    String attentionDescription() {
        return attention.describe();
    }

    /**
     * One training step on {@code tokens} → {@code targets} (both [batch][n]); returns the mean
     * cross-entropy before the update.
     */
    float step(int[][] tokens, int[][] targets) {
        if (tokens.length != batch) throw new IllegalArgumentException(tokens.length + " sequences, not " + batch);
        int b = batch, rows = b * n;

        // ---- forward ----
        float[] x = new float[rows * dim];
        for (int s = 0; s < b; s++)
            for (int i = 0; i < n; i++)
                for (int c = 0; c < dim; c++)
                    x[(s * n + i) * dim + c] = emb.w[tokens[s][i] * dim + c] + pos.w[i * dim + c];
        float[] q = matmul(x, wq.w, rows, dim, dim), k = matmul(x, wk.w, rows, dim, dim),
                v = matmul(x, wv.w, rows, dim, dim);
        float[] a = new float[rows * dim];
        attention.forward(q, k, v, a);
        float[] y = matmul(a, wo.w, rows, dim, dim);
        for (int i = 0; i < y.length; i++) y[i] += x[i];
        float[] logits = matmul(y, wu.w, rows, dim, vocab);

        // ---- loss and dlogits ----
        double loss = 0;
        float[] dlogits = new float[rows * vocab];
        for (int r = 0; r < rows; r++) {
            int o = r * vocab;
            float max = Float.NEGATIVE_INFINITY;
            for (int c = 0; c < vocab; c++) {
                logits[o + c] += bu.w[c];
                max = Math.max(max, logits[o + c]);
            }
            double sum = 0;
            for (int c = 0; c < vocab; c++) sum += Math.exp(logits[o + c] - max);
            int target = targets[r / n][r % n];
            loss += Math.log(sum) + max - logits[o + target];
            for (int c = 0; c < vocab; c++) {
                double p = Math.exp(logits[o + c] - max) / sum;
                dlogits[o + c] = (float) ((p - (c == target ? 1 : 0)) / rows);
            }
        }

        // ---- backward ----
        for (Param p : params) java.util.Arrays.fill(p.g, 0);
        addMatmulTA(y, dlogits, wu.g, rows, dim, vocab);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < vocab; c++) bu.g[c] += dlogits[r * vocab + c];
        float[] dy = matmulTB(dlogits, wu.w, rows, vocab, dim);
        addMatmulTA(a, dy, wo.g, rows, dim, dim);
        float[] da = matmulTB(dy, wo.w, rows, dim, dim);
        float[] dq = new float[rows * dim], dk = new float[rows * dim], dv = new float[rows * dim];
        attention.backward(da, dq, dk, dv);
        addMatmulTA(x, dq, wq.g, rows, dim, dim);
        addMatmulTA(x, dk, wk.g, rows, dim, dim);
        addMatmulTA(x, dv, wv.g, rows, dim, dim);
        float[] dx = dy; // the residual path, then the three projections
        addMatmulTB(dq, wq.w, dx, rows, dim, dim);
        addMatmulTB(dk, wk.w, dx, rows, dim, dim);
        addMatmulTB(dv, wv.w, dx, rows, dim, dim);
        for (int s = 0; s < b; s++)
            for (int i = 0; i < n; i++)
                for (int c = 0; c < dim; c++) {
                    float g = dx[(s * n + i) * dim + c];
                    emb.g[tokens[s][i] * dim + c] += g;
                    pos.g[i * dim + c] += g;
                }

        adam();
        return (float) (loss / rows);
    }

    /** Adam (β1 0.9, β2 0.999, ε 1e-8), no weight decay. */
    private void adam() {
        t++;
        double c1 = 1 - Math.pow(0.9, t), c2 = 1 - Math.pow(0.999, t);
        for (Param p : params)
            for (int i = 0; i < p.w.length; i++) {
                float g = p.g[i];
                p.m[i] = 0.9f * p.m[i] + 0.1f * g;
                p.v[i] = 0.999f * p.v[i] + 0.001f * g * g;
                p.w[i] -= (float) (lr * (p.m[i] / c1) / (Math.sqrt(p.v[i] / c2) + 1e-8));
            }
    }

    // ---- small dense matmuls, row-major ------------------------------------------------------------

    /** C[m×n] = A[m×k] B[k×n]. */
    static float[] matmul(float[] a, float[] b, int m, int k, int n) {
        float[] c = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) {
                float aip = a[i * k + p];
                for (int j = 0; j < n; j++) c[i * n + j] += aip * b[p * n + j];
            }
        return c;
    }

    /** C[k×n] += Aᵀ B, A [m×k], B [m×n]. */
    static void addMatmulTA(float[] a, float[] b, float[] c, int m, int k, int n) {
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) {
                float aip = a[i * k + p];
                for (int j = 0; j < n; j++) c[p * n + j] += aip * b[i * n + j];
            }
    }

    /** A[m×k] Bᵀ with B [n×k]: a new [m×n]. */
    static float[] matmulTB(float[] a, float[] b, int m, int k, int n) {
        float[] c = new float[m * n];
        addMatmulTB(a, b, c, m, k, n);
        return c;
    }

    /** C[m×n] += A[m×k] Bᵀ with B [n×k]. */
    static void addMatmulTB(float[] a, float[] b, float[] c, int m, int k, int n) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float s = 0;
                for (int p = 0; p < k; p++) s += a[i * k + p] * b[j * k + p];
                c[i * n + j] += s;
            }
    }

    /** A random batch of the task: targets are the tokens reversed. {@code [0]} tokens, {@code [1]} targets. */
    static int[][][] reverseBatch(Random r, int batch, int n, int vocab) {
        int[][] tok = new int[batch][n], tgt = new int[batch][n];
        for (int s = 0; s < batch; s++) {
            for (int i = 0; i < n; i++) tok[s][i] = r.nextInt(vocab);
            for (int i = 0; i < n; i++) tgt[s][i] = tok[s][n - 1 - i];
        }
        return new int[][][] {tok, tgt};
    }
}
