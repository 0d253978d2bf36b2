package io.flashsig;

/**
 * The score function P = f(S) of an attention call (DESIGN.md §4). Softmax normalises each row;
 * the others are pointwise, the ones after sigmoid scaled by Nk^-alpha.
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
    IDENTITY(6);

    private final int nativeCode;

    Score(int nativeCode) {
        this.nativeCode = nativeCode;
    }

    /** The {@code fsig_score} value. */
    public int nativeCode() {
        return nativeCode;
    }
}
