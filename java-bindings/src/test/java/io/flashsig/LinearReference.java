package io.flashsig;

/**
 * The naive quadratic form of linear attention (cosFormer, elu + 1), for tests: every pair (i, j) with
 * the cosine of the position difference written out, cos(π(p_i − p_j)/2M). With a dtype it is the
 * "naive same dtype" computation of DESIGN.md §6 (features, S, num, den, O and each gradient product
 * accumulated in fp32 and rounded to the dtype); without, everything in fp64. Dense BSHD arrays.
 */
final class LinearReference {
    final Score score;
    final boolean causal;
    final int b, nq, nk, hq, hk, d;
    final double length, epsilon;
    private final DType dtype;  // null: fp64

    LinearReference(AttentionSpec spec, int b, int nq, int nk, int hq, int hk, int d, DType dtype) {
        this.score = spec.score();
        this.causal = spec.isCausal();
        this.b = b;
        this.nq = nq;
        this.nk = nk;
        this.hq = hq;
        this.hk = hk;
        this.d = d;
        this.length = spec.linearLength() != 0 ? spec.linearLength() : Math.max(nq, nk);
        this.epsilon = Float.isNaN(spec.linearEpsilon()) ? 1e-6 : spec.linearEpsilon();
        this.dtype = dtype;
    }

    record Grads(double[] dq, double[] dk, double[] dv) {}

    private double rnd(double x) {
        if (dtype == null) return x;
        float r = dtype.round((float) x);
        return Float.isInfinite(r) && Double.isFinite(x) ? (float) x : r;  // beyond the dtype: stays fp32
    }

    private double add(double acc, double x) {
        return dtype == null ? acc + x : (float) (acc + x);
    }

    private double phi(double x) {
        return score == Score.COSFORMER ? Math.max(x, 0) : x > 0 ? x + 1 : Math.exp(x);
    }

    private double phiGrad(double x) {
        return score == Score.COSFORMER ? (x > 0 ? 1 : 0) : x > 0 ? 1 : Math.exp(x);
    }

    private double weight(int i, int j) {
        return score == Score.COSFORMER ? Math.cos(Math.PI * (i + nk - nq - j) / (2 * length)) : 1;
    }

    private boolean allowed(int i, int j) {
        return !causal || j <= i + nk - nq;
    }

    private int qi(int bb, int i, int h, int c) {
        return ((bb * nq + i) * hq + h) * d + c;
    }

    private int ki(int bb, int j, int h, int c) {
        return ((bb * nk + j) * hk + h) * d + c;
    }

    private double s(double[] q, double[] k, int bb, int h, int i, int j) {
        if (!allowed(i, j)) return 0;
        double dot = 0;
        for (int c = 0; c < d; c++)
            dot = add(dot, rnd(phi(q[qi(bb, i, h, c)])) * rnd(phi(k[ki(bb, j, h / (hq / hk), c)])));
        return rnd(rnd(dot) * weight(i, j));
    }

    double[] forward(double[] q, double[] k, double[] v) {
        return run(q, k, v, null, null);
    }

    Grads backward(double[] q, double[] k, double[] v, double[] dout) {
        Grads g = new Grads(new double[q.length], new double[k.length], new double[v.length]);
        run(q, k, v, dout, g);
        return g;
    }

    private double[] run(double[] q, double[] k, double[] v, double[] dout, Grads g) {
        double[] out = new double[b * nq * hq * d];
        int group = hq / hk;
        for (int bb = 0; bb < b; bb++)
            for (int h = 0; h < hq; h++) {
                int kh = h / group;
                double[][] S = new double[nq][nk];
                double[] den = new double[nq], n = new double[nq];
                for (int i = 0; i < nq; i++) {
                    double sum = 0;
                    for (int j = 0; j < nk; j++) sum = add(sum, S[i][j] = s(q, k, bb, h, i, j));
                    den[i] = rnd(sum);
                    n[i] = Math.max(den[i], epsilon);
                    for (int c = 0; c < d; c++) {
                        double acc = 0;
                        for (int j = 0; j < nk; j++) acc = add(acc, S[i][j] * v[ki(bb, j, kh, c)]);
                        out[qi(bb, i, h, c)] = rnd(rnd(acc) / n[i]);
                    }
                }
                if (g == null) continue;
                // ∂L/∂S_ij = (dO_i·v_j)/n_i − [den_i > ε](dO_i·O_i)/n_i; S_ij = φ(q_i)·φ(k_j)·w_ij
                for (int i = 0; i < nq; i++) {
                    double u = 0;
                    for (int c = 0; c < d; c++) u = add(u, dout[qi(bb, i, h, c)] * out[qi(bb, i, h, c)]);
                    double r = den[i] > epsilon ? rnd(rnd(u) / n[i]) : 0;
                    double[] dnum = new double[d];
                    for (int c = 0; c < d; c++) dnum[c] = rnd(dout[qi(bb, i, h, c)] / n[i]);
                    for (int j = 0; j < nk; j++) {
                        if (!allowed(i, j)) continue;
                        double dp = 0;
                        for (int c = 0; c < d; c++) dp = add(dp, dnum[c] * v[ki(bb, j, kh, c)]);
                        double ds = rnd(rnd(dp) - r) * weight(i, j);
                        for (int c = 0; c < d; c++) {
                            double x = q[qi(bb, i, h, c)], y = k[ki(bb, j, kh, c)];
                            g.dq()[qi(bb, i, h, c)] = add(g.dq()[qi(bb, i, h, c)], ds * phi(y) * phiGrad(x));
                            g.dk()[ki(bb, j, kh, c)] = add(g.dk()[ki(bb, j, kh, c)], ds * phi(x) * phiGrad(y));
                            g.dv()[ki(bb, j, kh, c)] = add(g.dv()[ki(bb, j, kh, c)], S[i][j] * dnum[c]);
                        }
                    }
                }
            }
        if (g != null)
            for (double[] a : new double[][] {g.dq(), g.dk(), g.dv()})
                for (int e = 0; e < a.length; e++) a[e] = rnd(a[e]);
        return out;
    }
}
