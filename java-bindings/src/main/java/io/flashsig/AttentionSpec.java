package io.flashsig;

import io.flashsig.ffi.FlashSigNative;
import io.flashsig.ffi.fsig_attention_params;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Objects;

/**
 * What an attention call computes (DESIGN.md §4): the score function, scale, sigmoid bias, α, and
 * the mask (causal, sliding window). Immutable; each {@code with}-style method returns a new spec:
 * <pre>{@code
 * AttentionSpec spec = AttentionSpec.of(Score.SIGMOID).causal().window(256, 0);
 * AttentionSpec linear = AttentionSpec.of(Score.COSFORMER).causal().linearLength(8192);
 * }</pre>
 * Values are checked by the native library when the spec is used, so an out-of-range value (a
 * window of −5, an infinite scale) fails the call with a message naming the parameter.
 *
 * <p>The native {@code fsig_attention_params} is built once per spec, on first use, and reused.
 */
public final class AttentionSpec {
    private final Score score;
    private final float scale;
    private final float sigmoidBias;
    private final float alpha;
    private final boolean causal;
    private final long windowLeft;
    private final long windowRight;
    private final boolean deterministic;
    private final long linearLength;
    private final float linearEpsilon;
    private volatile MemorySegment params;      // unscoped view of paramsOwner (see Tensor.descriptor)
    private MemorySegment paramsOwner;          // written before params is published
    private final Positions positions;          // block-sparse sizes, strided, log-n (DESIGN.md §4 Extensions)

    /** The scalar masks-and-positions options; the tensors travel in {@link AttentionExtras}. */
    private record Positions(long blockM, long blockN, long strided, long lognTrain) {
        static final Positions NONE = new Positions(0, 0, 0, 0);
    }

    private AttentionSpec(Score score, float scale, float sigmoidBias, float alpha, boolean causal, long windowLeft,
                          long windowRight, boolean deterministic) {
        this(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic, 0, Float.NaN,
                Positions.NONE);
    }

    private AttentionSpec(Score score, float scale, float sigmoidBias, float alpha, boolean causal, long windowLeft,
                          long windowRight, boolean deterministic, long linearLength, float linearEpsilon,
                          Positions positions) {
        this.positions = positions;
        this.linearLength = linearLength;
        this.linearEpsilon = linearEpsilon;
        this.score = score;
        this.scale = scale;
        this.sigmoidBias = sigmoidBias;
        this.alpha = alpha;
        this.causal = causal;
        this.windowLeft = windowLeft;
        this.windowRight = windowRight;
        this.deterministic = deterministic;
    }

    /**
     * Defaults for {@code score}: scale 1/√d, sigmoid bias −ln Nk, α = 1, no mask; for the linear
     * scores M = max(Nq, Nk) and ε = 1e-6 (they take no scale, bias, α or window: leave those unset).
     */
    public static AttentionSpec of(Score score) {
        if (score == null) throw new FlashSigException(FlashSigException.Status.NULL_ARGUMENT, "score is null");
        return new AttentionSpec(score, Float.NaN, Float.NaN, 1f, false, -1, -1, false);
    }

    /** Standard softmax attention. */
    public static AttentionSpec softmax() {
        return of(Score.SOFTMAX);
    }

    /** S = scale · q·k; NaN restores the default 1/√d. */
    public AttentionSpec scale(float scale) {
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic,
                linearLength, linearEpsilon, positions);
    }

    /** The b of σ(S + b) (sigmoid only); NaN restores the default −ln Nk. */
    public AttentionSpec sigmoidBias(float bias) {
        return new AttentionSpec(score, scale, bias, alpha, causal, windowLeft, windowRight, deterministic, linearLength,
                linearEpsilon, positions);
    }

    /** Pointwise scores (relu … identity) are multiplied by Nk^−α; default 1. */
    public AttentionSpec alpha(float alpha) {
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic,
                linearLength, linearEpsilon, positions);
    }

    /** Key j allowed for query i iff j ≤ i + Nk − Nq (bottom-right aligned, as FlashAttention ≥ 2.1). */
    public AttentionSpec causal(boolean causal) {
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic,
                linearLength, linearEpsilon, positions);
    }

    /** Same as {@code causal(true)}. */
    public AttentionSpec causal() {
        return causal(true);
    }

    /** Sliding window: key j allowed iff δ−left ≤ j ≤ δ+right, δ = i + Nk − Nq; −1 = unbounded on that side. */
    public AttentionSpec window(long left, long right) {
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, left, right, deterministic, linearLength,
                linearEpsilon, positions);
    }

    /**
     * Backward gives the same bits on every run (the CPU always does): on CUDA the two deterministic
     * kernels run even when a {@link BackwardWorkspace} is given (a broadcast dbias still sums its partial
     * sums there, deterministically).
     */
    public AttentionSpec deterministic(boolean deterministic) {
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic,
                linearLength, linearEpsilon, positions);
    }

    /**
     * cosFormer's M, the length its position angles π p / 2M are relative to; 0 (the default) means
     * max(Nq, Nk). A call fails unless M ≥ max(Nq, Nk), so every cos(π(p_i − p_j)/2M) stays > 0.
     * Only {@link Score#COSFORMER} may set it.
     *
     * @throws FlashSigException INVALID_PARAMS when {@code length < 0}
     */
    public AttentionSpec linearLength(long length) {
        if (length < 0)
            throw new FlashSigException(FlashSigException.Status.INVALID_PARAMS,
                    "linearLength (M) is " + length + " but must be >= max(Nq, Nk), or 0 for that default");
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic, length,
                linearEpsilon, positions);
    }

    /**
     * The floor ε of the linear scores' normaliser max(Σ_j q̃_i·k̃_j, ε); NaN restores the default 1e-6.
     * Only {@link Score#COSFORMER} and {@link Score#LINEAR_ELU} may set it.
     *
     * @throws FlashSigException INVALID_PARAMS unless {@code epsilon} is NaN or finite and &gt; 0
     */
    public AttentionSpec linearEpsilon(float epsilon) {
        if (!Float.isNaN(epsilon) && !(Float.isFinite(epsilon) && epsilon > 0))
            throw new FlashSigException(FlashSigException.Status.INVALID_PARAMS,
                    "linearEpsilon is " + epsilon + " but must be finite and > 0 (or NaN for 1e-6)");
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic,
                linearLength, epsilon, positions);
    }

    /**
     * Block-sparse attention: query rows and keys fall into blocks of {@code blockM} × {@code blockN};
     * the layout of allowed blocks, {@code [1 or Hq, ⌈Nq/blockM⌉, ⌈Nk/blockN⌉]}, is the call's
     * {@link AttentionExtras#blockLayout(Mask)}. Key tiles with no allowed block are skipped, so time
     * falls with density. (0, 0) switches it off.
     *
     * @throws FlashSigException INVALID_PARAMS unless both are ≥ 1 (or both 0)
     */
    public AttentionSpec blockSparse(long blockM, long blockN) {
        if (!(blockM == 0 && blockN == 0) && (blockM < 1 || blockN < 1))
            throw new FlashSigException(FlashSigException.Status.INVALID_PARAMS, "blockSparse block sizes are " + blockM
                    + " x " + blockN + " but both must be >= 1 (or both 0 for no block-sparse layout)");
        return withPositions(new Positions(blockM, blockN, positions.strided(), positions.lognTrain()));
    }

    /**
     * Strided (atrous) mask: key j allowed for query i iff |i + Nk − Nq − j| mod {@code stride} = 0.
     * With a {@link #window window}, window ∪ strided is the one mask (Sparse Transformer's local +
     * strided); causal still applies. Key tiles without an allowed element are skipped, so time falls
     * with the stride once it exceeds a kernel tile. 0 switches it off.
     *
     * @throws FlashSigException INVALID_PARAMS when {@code stride < 0}
     */
    public AttentionSpec strided(long stride) {
        if (stride < 0)
            throw new FlashSigException(FlashSigException.Status.INVALID_PARAMS,
                    "strided is " + stride + " but must be >= 1, or 0 for no strided mask");
        return withPositions(new Positions(positions.blockM(), positions.blockN(), stride, positions.lognTrain()));
    }

    /**
     * log-n scaling: S = scale·λ_i·q·k with λ_i = max(1, ln n_i / ln {@code nTrain}), n_i the keys that
     * causal and the window alone allow query i; the gradients include λ_i. 0 switches it off.
     *
     * @throws FlashSigException INVALID_PARAMS when {@code nTrain} is negative or 1 (ln 1 = 0)
     */
    public AttentionSpec lognScaling(long nTrain) {
        if (nTrain < 0 || nTrain == 1)
            throw new FlashSigException(FlashSigException.Status.INVALID_PARAMS, "lognScaling nTrain is " + nTrain
                    + " but must be >= 2 (lambda divides by ln nTrain), or 0 for off");
        return withPositions(new Positions(positions.blockM(), positions.blockN(), positions.strided(), nTrain));
    }

    private AttentionSpec withPositions(Positions p) {
        return new AttentionSpec(score, scale, sigmoidBias, alpha, causal, windowLeft, windowRight, deterministic,
                linearLength, linearEpsilon, p);
    }

    /** Block-sparse rows per block; 0 when off. */
    public long blockM() {
        return positions.blockM();
    }

    /** Block-sparse keys per block; 0 when off. */
    public long blockN() {
        return positions.blockN();
    }

    /** The strided mask's stride; 0 when off. */
    public long strided() {
        return positions.strided();
    }

    /** log-n scaling's n_train; 0 when off. */
    public long lognTrain() {
        return positions.lognTrain();
    }

    public Score score() {
        return score;
    }

    /** NaN when the default 1/√d applies. */
    public float scale() {
        return scale;
    }

    /** NaN when the default −ln Nk applies. */
    public float sigmoidBias() {
        return sigmoidBias;
    }

    public float alpha() {
        return alpha;
    }

    public boolean isCausal() {
        return causal;
    }

    public long windowLeft() {
        return windowLeft;
    }

    public long windowRight() {
        return windowRight;
    }

    public boolean isDeterministic() {
        return deterministic;
    }

    /** cosFormer's M; 0 when the default max(Nq, Nk) applies. */
    public long linearLength() {
        return linearLength;
    }

    /** NaN when the default 1e-6 applies. */
    public float linearEpsilon() {
        return linearEpsilon;
    }

    /**
     * The native params, built on first use (racing threads build identical copies; either is fine).
     * The caller keeps this spec reachable until its native call returns: the memory is freed with it.
     */
    MemorySegment nativeParams() {
        MemorySegment p = params;
        if (p == null) {
            NativeLibrary.load();
            p = Arena.ofAuto().allocate(fsig_attention_params.layout());
            int status = FlashSigNative.fsig_attention_params_init(p); // defaults for fields a newer header adds
            if (status != 0)
                throw new FlashSigException(FlashSigException.Status.of(status), "fsig_attention_params_init failed");
            fsig_attention_params.score(p, score.nativeCode());
            fsig_attention_params.scale(p, scale);
            fsig_attention_params.sigmoid_bias(p, sigmoidBias);
            fsig_attention_params.alpha(p, alpha);
            fsig_attention_params.causal(p, causal ? 1 : 0);
            fsig_attention_params.window_left(p, windowLeft);
            fsig_attention_params.window_right(p, windowRight);
            fsig_attention_params.deterministic(p, deterministic ? 1 : 0);
            fsig_attention_params.linear_length(p, linearLength);
            fsig_attention_params.linear_epsilon(p, linearEpsilon);
            fsig_attention_params.sparse_block_m(p, positions.blockM());
            fsig_attention_params.sparse_block_n(p, positions.blockN());
            fsig_attention_params.strided(p, positions.strided());
            fsig_attention_params.logn_train(p, positions.lognTrain());
            paramsOwner = p;
            p = MemorySegment.ofAddress(p.address()).reinterpret(p.byteSize());
            params = p;
        }
        return p;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof AttentionSpec s && score == s.score
                && Float.floatToIntBits(scale) == Float.floatToIntBits(s.scale)
                && Float.floatToIntBits(sigmoidBias) == Float.floatToIntBits(s.sigmoidBias)
                && Float.floatToIntBits(alpha) == Float.floatToIntBits(s.alpha)
                && causal == s.causal && windowLeft == s.windowLeft && windowRight == s.windowRight
                && deterministic == s.deterministic && linearLength == s.linearLength
                && Float.floatToIntBits(linearEpsilon) == Float.floatToIntBits(s.linearEpsilon)
                && positions.equals(s.positions);
    }

    @Override
    public int hashCode() {
        return Objects.hash(score, Float.floatToIntBits(scale), Float.floatToIntBits(sigmoidBias),
                Float.floatToIntBits(alpha), causal, windowLeft, windowRight, deterministic, linearLength,
                Float.floatToIntBits(linearEpsilon), positions);
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder("AttentionSpec[").append(score);
        if (!Float.isNaN(scale)) b.append(", scale=").append(scale);
        if (!Float.isNaN(sigmoidBias)) b.append(", sigmoidBias=").append(sigmoidBias);
        if (alpha != 1f) b.append(", alpha=").append(alpha);
        if (causal) b.append(", causal");
        if (windowLeft != -1 || windowRight != -1) b.append(", window=(").append(windowLeft).append(", ")
                .append(windowRight).append(')');
        if (deterministic) b.append(", deterministic");
        if (linearLength != 0) b.append(", linearLength=").append(linearLength);
        if (!Float.isNaN(linearEpsilon)) b.append(", linearEpsilon=").append(linearEpsilon);
        if (positions.blockM() != 0) b.append(", blockSparse=").append(positions.blockM()).append('x').append(positions.blockN());
        if (positions.strided() != 0) b.append(", strided=").append(positions.strided());
        if (positions.lognTrain() != 0) b.append(", lognTrain=").append(positions.lognTrain());
        return b.append(']').toString();
    }
}
