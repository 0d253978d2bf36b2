package io.flashsig.nd4j;

import io.flashsig.AttentionSpec;
import io.flashsig.DType;
import io.flashsig.Score;

/**
 * Naive attention (DESIGN.md §4, no mask but causal) that materialises S and P, in two precisions
 * (§6): {@code dtype == null} is the fp64 reference, otherwise the computation as a framework does it
 * in that dtype (inputs in the dtype, matmuls accumulating in fp32 and rounded to the dtype, P and dS in
 * fp32 from the rounded S, rounded to the dtype). Arrays are contiguous BSHD {@code [B, N, H, d]}.
 */
final class Ref {
    record Problem(int b, int nq, int nk, int hq, int hk, int d, Score score, double scale, double bias,
                   double factor, boolean causal) {
        static Problem of(AttentionSpec s, int b, int nq, int nk, int hq, int hk, int d) {
            double scale = Float.isNaN(s.scale()) ? (float) (1 / Math.sqrt(d)) : s.scale();
            double bias = Float.isNaN(s.sigmoidBias()) ? (float) -Math.log(nk) : s.sigmoidBias();
            double factor = (float) Math.pow(nk, -(double) s.alpha());
            return new Problem(b, nq, nk, hq, hk, d, s.score(), scale, bias, factor, s.isCausal());
        }

        boolean allowed(int i, int j) {
            return !causal || j <= i + nk - nq;
        }
    }

    private final Problem p;
    private final DType dtype;

    Ref(Problem p, DType dtype) {
        this.p = p;
        this.dtype = dtype;
    }

    private double rnd(double x) {
        return dtype == null ? x : dtype.round((float) x);
    }

    private double f32(double x) {
        return dtype == null ? x : (float) x;
    }

    private int at(int n, int bb, int pos, int h, int heads) {
        return ((bb * n + pos) * heads + h) * p.d;
    }

    /** Σ a[ia + c·sa] b[ib + c·sb] over c < n, fp32 accumulation in the naive precision. */
    private double dot(double[] a, int ia, int sa, double[] b, int ib, int sb, int n) {
        if (dtype == null) {
            double s = 0;
            for (int c = 0; c < n; c++) s += a[ia + c * sa] * b[ib + c * sb];
            return s;
        }
        float s = 0;
        for (int c = 0; c < n; c++) s += (float) (a[ia + c * sa] * b[ib + c * sb]);
        return s;
    }

    private double[][] scores(double[] q, double[] k, int bb, int h) {
        int kh = h / (p.hq / p.hk);
        double[][] s = new double[p.nq][p.nk];
        for (int i = 0; i < p.nq; i++)
            for (int j = 0; j < p.nk; j++)
                s[i][j] = rnd(f32(p.scale * dot(q, at(p.nq, bb, i, h, p.hq), 1, k, at(p.nk, bb, j, kh, p.hk), 1, p.d)));
        return s;
    }

    private double[][] probs(double[][] s, double[] lse, int lseAt) {
        double[][] pr = new double[p.nq][p.nk];
        for (int i = 0; i < p.nq; i++) {
            if (p.score == Score.SOFTMAX) {
                double m = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < p.nk; j++) if (p.allowed(i, j)) m = Math.max(m, s[i][j]);
                double sum = 0;
                for (int j = 0; j < p.nk; j++) if (p.allowed(i, j)) sum = f32(sum + f32(Math.exp(s[i][j] - m)));
                double l = m + Math.log(sum);
                if (lse != null) lse[lseAt + i] = sum == 0 ? Double.POSITIVE_INFINITY : l;
                for (int j = 0; j < p.nk; j++) pr[i][j] = p.allowed(i, j) ? rnd(f32(Math.exp(s[i][j] - l))) : 0;
            } else {
                for (int j = 0; j < p.nk; j++) pr[i][j] = p.allowed(i, j) ? rnd(f32(pointwise(s[i][j]))) : 0;
            }
        }
        return pr;
    }

    private double pointwise(double x) {
        double f = p.factor;
        return switch (p.score) {
            case SIGMOID -> 1 / (1 + Math.exp(-(x + p.bias)));
            case RELU -> Math.max(x, 0) * f;
            case RELU2 -> Math.max(x, 0) * Math.max(x, 0) * f;
            case GELU -> 0.5 * x * (1 + erf(x / Math.sqrt(2))) * f;
            case SOFTPLUS -> (x > 30 ? x : Math.log1p(Math.exp(x))) * f;
            case IDENTITY -> x * f;
            default -> throw new AssertionError("not a pointwise score: " + p.score);
        };
    }

    /** dS/dP' factor: dS = grad(S, P) · dP for the pointwise scores. */
    private double pointwiseGrad(double x, double pr) {
        double f = p.factor;
        return switch (p.score) {
            case SIGMOID -> pr * (1 - pr);
            case RELU -> x > 0 ? f : 0;
            case RELU2 -> x > 0 ? 2 * x * f : 0;
            case GELU -> (0.5 * (1 + erf(x / Math.sqrt(2))) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI)) * f;
            case SOFTPLUS -> 1 / (1 + Math.exp(-x)) * f;
            case IDENTITY -> f;
            default -> throw new AssertionError("not a pointwise score: " + p.score);
        };
    }

    /** out (BSHD like q) and lse ([B, Hq, Nq]). */
    double[][] forward(double[] q, double[] k, double[] v) {
        double[] out = new double[p.b * p.nq * p.hq * p.d];
        double[] lse = new double[p.b * p.hq * p.nq];
        for (int bb = 0; bb < p.b; bb++)
            for (int h = 0; h < p.hq; h++) {
                int kh = h / (p.hq / p.hk);
                double[][] pr = probs(scores(q, k, bb, h), lse, (bb * p.hq + h) * p.nq);
                for (int i = 0; i < p.nq; i++)
                    for (int c = 0; c < p.d; c++) {
                        double acc = 0;
                        float accF = 0;
                        for (int j = 0; j < p.nk; j++) {
                            double t = pr[i][j] * v[at(p.nk, bb, j, kh, p.hk) + c];
                            acc += t;
                            accF += (float) t;
                        }
                        out[at(p.nq, bb, i, h, p.hq) + c] = rnd(dtype == null ? acc : accF);
                    }
            }
        return new double[][] {out, lse};
    }

    /** dq, dk, dv (dk, dv summed over the query heads of a group). */
    double[][] backward(double[] q, double[] k, double[] v, double[] dout) {
        double[] out = forward(q, k, v)[0];
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        float[] dkF = new float[k.length], dvF = new float[v.length];
        for (int bb = 0; bb < p.b; bb++)
            for (int h = 0; h < p.hq; h++) {
                int kh = h / (p.hq / p.hk);
                double[][] s = scores(q, k, bb, h);
                double[][] pr = probs(s, null, 0);
                double[][] ds = new double[p.nq][p.nk];
                for (int i = 0; i < p.nq; i++) {
                    int oi = at(p.nq, bb, i, h, p.hq);
                    double di = f32(dot(dout, oi, 1, out, oi, 1, p.d));
                    for (int j = 0; j < p.nk; j++) {
                        if (!p.allowed(i, j)) continue;
                        double dp = rnd(f32(dot(dout, oi, 1, v, at(p.nk, bb, j, kh, p.hk), 1, p.d)));
                        ds[i][j] = rnd(f32(p.score == Score.SOFTMAX ? pr[i][j] * (dp - di)
                                : pointwiseGrad(s[i][j], pr[i][j]) * dp));
                    }
                }
                for (int i = 0; i < p.nq; i++)
                    for (int c = 0; c < p.d; c++) {
                        double acc = 0;
                        float accF = 0;
                        for (int j = 0; j < p.nk; j++) {
                            double t = ds[i][j] * k[at(p.nk, bb, j, kh, p.hk) + c];
                            acc += t;
                            accF += (float) t;
                        }
                        dq[at(p.nq, bb, i, h, p.hq) + c] = rnd(f32(p.scale * (dtype == null ? acc : accF)));
                    }
                for (int j = 0; j < p.nk; j++)
                    for (int c = 0; c < p.d; c++) {
                        double accK = 0, accV = 0;
                        float fK = 0, fV = 0;
                        for (int i = 0; i < p.nq; i++) {
                            double tk = ds[i][j] * q[at(p.nq, bb, i, h, p.hq) + c];
                            double tv = pr[i][j] * dout[at(p.nq, bb, i, h, p.hq) + c];
                            accK += tk;
                            accV += tv;
                            fK += (float) tk;
                            fV += (float) tv;
                        }
                        int kj = at(p.nk, bb, j, kh, p.hk) + c;
                        dk[kj] += p.scale * accK;
                        dv[kj] += accV;
                        dkF[kj] += (float) (p.scale * fK);
                        dvF[kj] += fV;
                    }
            }
        if (dtype != null)
            for (int i = 0; i < dk.length; i++) {
                dk[i] = rnd(dkF[i]);
                dv[i] = rnd(dvF[i]);
            }
        return new double[][] {dq, dk, dv};
    }

    /** erf to ~1e-15: Taylor series below 2.5, Lentz's continued fraction for erfc above. */
    static double erf(double x) {
        double ax = Math.abs(x);
        if (ax < 2.5) {
            double term = x, sum = x, x2 = x * x;
            for (int n = 1; n < 80; n++) {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
            }
            return 2 / Math.sqrt(Math.PI) * sum;
        }
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        double tiny = 1e-300, f = ax, c = ax, d = 0;
        for (int n = 1; n < 200; n++) {
            double an = n / 2.0;
            d = ax + an * d;
            d = Math.abs(d) < tiny ? tiny : d;
            c = ax + an / c;
            c = Math.abs(c) < tiny ? tiny : c;
            d = 1 / d;
            double delta = c * d;
            f *= delta;
            if (Math.abs(delta - 1) < 1e-16) break;
        }
        double erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
        return Math.signum(x) * (1 - erfc);
    }
}
