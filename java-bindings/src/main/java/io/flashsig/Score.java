package io.flashsig;

/**
 * The score function P = f(S) of an attention call (DESIGN.md §4). Softmax normalises each row;
 * the others up to {@link #IDENTITY} are pointwise, the ones after sigmoid scaled by Nk^-alpha.
 * {@link #COSFORMER} and {@link #LINEAR_ELU} are linear attention (O(N) time and memory): scale-free,
 * no window, no LSE, CPU tensors only; see {@link AttentionSpec#linearLength(long)} and
 * {@link AttentionSpec#linearEpsilon(float)}.
 */
public enum Score {
    /** exp(S − LSE) over the allowed keys; writes LSE on request. */
    SOFTMAX(0),
    /** σ(S + b), b = {@link AttentionSpec#sigmoidBias(float) sigmoidBias}, default −ln Nk. */
    SIGMOID(1),
    /** relu(S) · Nk^−α. */
    RELU(2),
    /** relu(S)² · Nk^−α. */
    RELU2(3),
    /** gelu(S) · Nk^−α, erf form. */
    GELU(4),
    /** softplus(S) · Nk^−α. */
    SOFTPLUS(5),
    /** S · Nk^−α (linear attention without a feature map). */
    IDENTITY(6),
    /**
     * cosFormer: O_i = Σ_j (q̃_i·k̃_j) v_j / max(Σ_j q̃_i·k̃_j, ε) with q̃_i = relu(q_i)·[sin, cos](π p_i / 2M),
     * p_i = i + Nk − Nq, and k̃_j likewise with p_j = j; over all keys, or j ≤ p_i when causal.
     */
    COSFORMER(7),
    /** Linear attention with φ = elu + 1 and the same normaliser: O_i = Σ_j (φ(q_i)·φ(k_j)) v_j / max(Σ_j …, ε). */
    LINEAR_ELU(8);

    private final int nativeCode;

    Score(int nativeCode) {
        this.nativeCode = nativeCode;
    }

    /** True for the linear-attention scores ({@link #COSFORMER}, {@link #LINEAR_ELU}). */
    public boolean isLinear() {
        return this == COSFORMER || this == LINEAR_ELU;
    }

    /** The {@code fsig_score} value. */
    public int nativeCode() {
        return nativeCode;
    }
}
