package io.flashsig;

/**
 * Naive attention that materialises S and P (DESIGN.md §4), in two precisions (§6):
 * {@code dtype == null} is the fp64 reference; otherwise the computation "as a framework does it" in
 * that dtype — inputs in the dtype, every matmul accumulating in fp32 and rounding its result to the
 * dtype, P (and dS) computed in fp32 from the rounded S and rounded to the dtype.
 * Arrays are contiguous BSHD ({@code [B, N, H, d]}), lse {@code [B, Hq, Nq]}.
 */
final class Reference {
    /** Problem sizes and the spec, with the shape-dependent defaults resolved. */
    record Problem(int b, int nq, int nk, int hq, int hk, int d, Score score, double scale, double bias,
                   double factor, boolean causal, long windowLeft, long windowRight) {
        static Problem of(AttentionSpec s, int b, int nq, int nk, int hq, int hk, int d) {
            double scale = Float.isNaN(s.scale()) ? (float) (1 / Math.sqrt(d)) : s.scale();
            double bias = Float.isNaN(s.sigmoidBias()) ? (float) -Math.log(nk) : s.sigmoidBias();
            double factor = (float) Math.pow(nk, -(double) s.alpha());
            return new Problem(b, nq, nk, hq, hk, d, s.score(), scale, bias, factor, s.isCausal(), s.windowLeft(),
                    s.windowRight());
        }

        boolean allowed(int i, int j) {
            long diag = (long) i + nk - nq;
            if (causal && j > diag) return false;
            long ahead = j - diag; // compared with the windows this way, no window value can overflow
            if (windowLeft >= 0 && -ahead > windowLeft) return false;
            return windowRight < 0 || ahead <= windowRight;
        }
    }

    record Forward(double[] out, double[] lse) {}

    record Grads(double[] dq, double[] dk, double[] dv) {}

    private final Problem p;
    private final DType dtype; // null = fp64

    Reference(Problem p, DType dtype) {
        this.p = p;
        this.dtype = dtype;
    }

    private double rnd(double x) {
        return dtype == null ? x : dtype.round((float) x);
    }

    /** fp32 in the naive computation, exact in fp64. */
    private double f32(double x) {
        return dtype == null ? x : (float) x;
    }

    private int idx(int n, int bb, int pos, int h, int heads) {
        return ((bb * n + pos) * heads + h) * p.d;
    }

    private double dot(double[] a, int ia, double[] b, int ib) {
        if (dtype == null) {
            double s = 0;
            for (int c = 0; c < p.d; c++) s += a[ia + c] * b[ib + c];
            return s;
        }
        float s = 0;
        for (int c = 0; c < p.d; c++) s += (float) (a[ia + c] * b[ib + c]);
        return s;
    }

    /** S for one (batch, query head), rounded as its dtype stores it. */
    private double[][] scores(double[] q, double[] k, int bb, int h) {
        int kh = h / (p.hq / p.hk);
        double[][] s = new double[p.nq][p.nk];
        for (int i = 0; i < p.nq; i++)
            for (int j = 0; j < p.nk; j++)
                s[i][j] = rnd(f32(p.scale * dot(q, idx(p.nq, bb, i, h, p.hq), k, idx(p.nk, bb, j, kh, p.hk))));
        return s;
    }

    /** P from S (masked = 0); for softmax also writes the row LSE into lse[i]. */
    private double[][] probs(double[][] s, double[] lse) {
        double[][] pr = new double[p.nq][p.nk];
        for (int i = 0; i < p.nq; i++) {
            if (p.score == Score.SOFTMAX) {
                double m = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < p.nk; j++) if (p.allowed(i, j)) m = Math.max(m, s[i][j]);
                if (m == Double.NEGATIVE_INFINITY) {
                    lse[i] = Double.POSITIVE_INFINITY; // no allowed key: P = 0, LSE = +inf
                    continue;
                }
                double sum = 0;
                for (int j = 0; j < p.nk; j++) if (p.allowed(i, j)) sum = f32(sum + f32(Math.exp(s[i][j] - m)));
                for (int j = 0; j < p.nk; j++)
                    if (p.allowed(i, j)) pr[i][j] = rnd(f32(Math.exp(s[i][j] - m) / sum));
                lse[i] = f32(m + Math.log(sum));
            } else {
                for (int j = 0; j < p.nk; j++) if (p.allowed(i, j)) pr[i][j] = rnd(f32(pointwise(s[i][j])));
            }
        }
        return pr;
    }

    private double pointwise(double x) {
        double f = p.factor;
        return switch (p.score) {
            case SOFTMAX -> throw new AssertionError();
            case SIGMOID -> sigmoid(x + p.bias);
            case RELU -> Math.max(x, 0) * f;
            case RELU2 -> Math.max(x, 0) * Math.max(x, 0) * f;
            case GELU -> 0.5 * x * (1 + erf(x / Math.sqrt(2))) * f;
            case SOFTPLUS -> (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x))) * f;
            case IDENTITY -> x * f;
            case COSFORMER, LINEAR_ELU -> throw new AssertionError("linear scores: see LinearReference");
        };
    }

    /** dS/dP · dP for the pointwise scores; pr is the stored P (sigmoid differentiates through it). */
    private double pointwiseGrad(double x, double pr, double dp) {
        double f = p.factor;
        return switch (p.score) {
            case SOFTMAX -> throw new AssertionError();
            case SIGMOID -> pr * (1 - pr) * dp;
            case RELU -> x > 0 ? f * dp : 0;
            case RELU2 -> x > 0 ? 2 * x * f * dp : 0;  // where-forms, as the library: 0 whatever dP
            case GELU -> (0.5 * (1 + erf(x / Math.sqrt(2))) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI)) * f * dp;
            case SOFTPLUS -> sigmoid(x) * f * dp;
            case IDENTITY -> f * dp;
            case COSFORMER, LINEAR_ELU -> throw new AssertionError("linear scores: see LinearReference");
        };
    }

    Forward forward(double[] q, double[] k, double[] v) {
        double[] out = new double[p.b * p.nq * p.hq * p.d];
        double[] lse = new double[p.b * p.hq * p.nq];
        double[] rowLse = new double[p.nq];
        int kvGroup = p.hq / p.hk;
        for (int bb = 0; bb < p.b; bb++)
            for (int h = 0; h < p.hq; h++) {
                double[][] pr = probs(scores(q, k, bb, h), rowLse);
                for (int i = 0; i < p.nq; i++) {
                    if (p.score == Score.SOFTMAX) lse[(bb * p.hq + h) * p.nq + i] = rowLse[i];
                    int o = idx(p.nq, bb, i, h, p.hq);
                    for (int c = 0; c < p.d; c++) {
                        double acc = 0;
                        for (int j = 0; j < p.nk; j++)
                            acc = f32(acc + f32(pr[i][j] * v[idx(p.nk, bb, j, h / kvGroup, p.hk) + c]));
                        out[o + c] = rnd(acc);
                    }
                }
            }
        return new Forward(out, lse);
    }

    /** Gradients; {@code out} is this precision's own forward output (softmax needs it for D). */
    Grads backward(double[] q, double[] k, double[] v, double[] out, double[] dout) {
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        double[] rowLse = new double[p.nq];
        int group = p.hq / p.hk;
        for (int bb = 0; bb < p.b; bb++)
            for (int h = 0; h < p.hq; h++) {
                int kh = h / group;
                double[][] s = scores(q, k, bb, h);
                double[][] pr = probs(s, rowLse);
                double[][] ds = new double[p.nq][p.nk];
                for (int i = 0; i < p.nq; i++) {
                    int qi = idx(p.nq, bb, i, h, p.hq);
                    double dsum = p.score == Score.SOFTMAX ? f32(dot(dout, qi, out, qi)) : 0;
                    for (int j = 0; j < p.nk; j++) {
                        if (!p.allowed(i, j)) continue; // dS = 0 where masked
                        double dp = rnd(f32(dot(dout, qi, v, idx(p.nk, bb, j, kh, p.hk))));
                        double g = p.score == Score.SOFTMAX ? pr[i][j] * (dp - dsum) : pointwiseGrad(s[i][j], pr[i][j], dp);
                        ds[i][j] = rnd(f32(g));
                    }
                }
                // dV_j += Σ_i P_ij dO_i; dK_j += scale Σ_i dS_ij q_i; dQ_i = scale Σ_j dS_ij k_j
                for (int j = 0; j < p.nk; j++) {
                    int kj = idx(p.nk, bb, j, kh, p.hk);
                    for (int c = 0; c < p.d; c++) {
                        double av = 0, ak = 0;
                        for (int i = 0; i < p.nq; i++) {
                            int qi = idx(p.nq, bb, i, h, p.hq);
                            av = f32(av + f32(pr[i][j] * dout[qi + c]));
                            ak = f32(ak + f32(ds[i][j] * q[qi + c]));
                        }
                        dv[kj + c] = f32(dv[kj + c] + av);
                        dk[kj + c] = f32(dk[kj + c] + f32(p.scale * ak));
                    }
                }
                for (int i = 0; i < p.nq; i++) {
                    int qi = idx(p.nq, bb, i, h, p.hq);
                    for (int c = 0; c < p.d; c++) {
                        double a = 0;
                        for (int j = 0; j < p.nk; j++) a = f32(a + f32(ds[i][j] * k[idx(p.nk, bb, j, kh, p.hk) + c]));
                        dq[qi + c] = rnd(f32(p.scale * a));
                    }
                }
            }
        for (int i = 0; i < dk.length; i++) {
            dk[i] = rnd(dk[i]);
            dv[i] = rnd(dv[i]);
        }
        return new Grads(dq, dk, dv);
    }

    static double sigmoid(double x) {
        return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
    }

    /** erf to ~1e-15: erf(x) = 2/√π e^{−x²} Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1)); positive terms, no cancellation. */
    static double erf(double x) {
        double ax = Math.abs(x);
        if (ax > 6) return Math.signum(x);
        double term = ax, sum = ax;
        for (int n = 1; n < 200 && term > 1e-17 * sum; n++) {
            term *= 2 * ax * ax / (2 * n + 1);
            sum += term;
        }
        return Math.copySign(2 / Math.sqrt(Math.PI) * Math.exp(-ax * ax) * sum, x);
    }
}
