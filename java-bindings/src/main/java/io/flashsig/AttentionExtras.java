package io.flashsig;

import java.util.Objects;

/**
 * The tensor-valued masks and positions of a call (DESIGN.md §4 "Extensions"), each optional:
 * <ul>
 * <li>{@link #alibi(Tensor) ALiBi slopes}: fp32 {@code [Hq]} or {@code [B, Hq]}; S gets
 * −slope·|i + Nk − Nq − j| ({@link FlashSig#alibiSlopes(int)} gives the standard schedule);</li>
 * <li>{@link #bias(Tensor) bias}: fp32/fp16/bf16 {@code [B|1, Hq|1, Nq|1, Nk]}, added to S; a size-1
 * dimension broadcasts (a key-padding bias is {@code [B, 1, 1, Nk]}), −∞ masks the element;</li>
 * <li>{@link #mask(Mask) mask}: a {@link Mask} with the bias's shape rule, nonzero = allowed;</li>
 * <li>{@link #blockLayout(Mask) block layout}: {@code [1|Hq, ⌈Nq/bm⌉, ⌈Nk/bn⌉]} for the block sizes
 * of {@link AttentionSpec#blockSparse(long, long)}, nonzero = the block is allowed.</li>
 * </ul>
 * The scalar options (block sizes, {@link AttentionSpec#strided(long) strided},
 * {@link AttentionSpec#lognScaling(long) log-n}) live in {@link AttentionSpec}. These are apart from it
 * because a spec is a value — immutable, comparable, shared between threads and calls, with its native
 * params built once — whereas tensors are per-call data whose memory belongs to an arena: a spec holding
 * them would keep stale arenas reachable and make equality meaningless. Like every tensor of a call,
 * these reach the native call as downcall arguments (DESIGN.md §3). Immutable; each method returns a
 * new object.
 *
 * <p>The extension tensors must be on the call's device, q's: host tensors and masks for a CPU call,
 * device ones for a CUDA call ({@link Cuda#allocate(java.lang.foreign.Arena, DType, Device, long...)},
 * {@link Cuda#allocateMask}, filled with {@code Cuda.copy}) — another device gives
 * {@link FlashSigException.Status#INVALID_DEVICE} naming the tensor. On CUDA a bias gradient
 * ({@code dbias} of {@link FlashSig#backward(AttentionSpec, AttentionExtras, Tensor, Tensor, Tensor, Tensor,
 * Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) backward}) broadcast over B, Hq or Nq — any shape but the
 * bias's full {@code [B, Hq, Nq, Nk]}, a key-padding {@code [B, 1, 1, Nk]} for one — needs the
 * {@link #workspace(BackwardWorkspace) workspace} for its partial sums, sized by
 * {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)} (allocated by
 * {@link Cuda#allocateBackwardWorkspace(java.lang.foreign.Arena, AttentionSpec, Tensor, Tensor)}); without
 * it the backward fails with {@link FlashSigException.Status#BUFFER_TOO_SMALL}. The CPU needs none.
 *
 * <p>Besides the tensors, the two things a call runs with: the {@link #stream(CudaStream) stream} of a
 * CUDA call, and the {@link #workspace(BackwardWorkspace) workspace} of the CUDA backward (the fast
 * path's, a broadcast dbias's, the linear scores' in both directions; other forwards ignore it), so that one
 * {@code AttentionExtras}, built once,
 * serves every call of a training step.
 */
public final class AttentionExtras {
    private static final AttentionExtras NONE = new AttentionExtras(null, null, null, null, null, null);

    private final Tensor alibi;
    private final Tensor bias;
    private final Mask mask;
    private final Mask blockLayout;
    private final CudaStream stream;
    private final BackwardWorkspace workspace;

    private AttentionExtras(Tensor alibi, Tensor bias, Mask mask, Mask blockLayout, CudaStream stream,
                            BackwardWorkspace workspace) {
        this.alibi = alibi;
        this.bias = bias;
        this.mask = mask;
        this.blockLayout = blockLayout;
        this.stream = stream;
        this.workspace = workspace;
    }

    /** No extension tensors. */
    public static AttentionExtras none() {
        return NONE;
    }

    /** ALiBi slopes: an fp32 tensor [Hq] (per head) or [B, Hq] (per batch and head), finite (not checked:
     * an inf or NaN slope leaves the outputs undefined); null removes them. */
    public AttentionExtras alibi(Tensor slopes) {
        return new AttentionExtras(slopes, bias, mask, blockLayout, stream, workspace);
    }

    /** ALiBi slopes per head, [Hq] (the array is viewed, not copied). */
    public AttentionExtras alibi(float[] slopes) {
        if (slopes == null) throw new FlashSigException(FlashSigException.Status.NULL_ARGUMENT, "slopes is null");
        return alibi(Tensor.of(slopes, slopes.length));
    }

    /** Additive bias [B|1, Hq|1, Nq|1, Nk]; null removes it. */
    public AttentionExtras bias(Tensor bias) {
        return new AttentionExtras(alibi, bias, mask, blockLayout, stream, workspace);
    }

    /** Boolean mask [B|1, Hq|1, Nq|1, Nk], nonzero = allowed; null removes it. */
    public AttentionExtras mask(Mask mask) {
        return new AttentionExtras(alibi, bias, mask, blockLayout, stream, workspace);
    }

    /** Block-sparse layout [1|Hq, ⌈Nq/bm⌉, ⌈Nk/bn⌉] for {@link AttentionSpec#blockSparse(long, long)}; null removes it. */
    public AttentionExtras blockLayout(Mask layout) {
        return new AttentionExtras(alibi, bias, mask, layout, stream, workspace);
    }

    /**
     * The CUDA stream the call is queued on (CUDA tensors; null = the default stream). A call with a
     * stream returns at once: synchronise the stream before reading results or freeing its tensors.
     */
    public AttentionExtras stream(CudaStream stream) {
        return new AttentionExtras(alibi, bias, mask, blockLayout, stream, workspace);
    }

    public CudaStream stream() {
        return stream;
    }

    /**
     * The workspace of the CUDA backward (see {@link BackwardWorkspace}; null = none: the deterministic
     * kernels run, and a broadcast dbias is refused). It must be on q's device; an empty one (CPU,
     * deterministic spec without a broadcast dbias) changes nothing. The forward ignores it, except that of
     * the linear scores (their segments' partial states).
     */
    public AttentionExtras workspace(BackwardWorkspace workspace) {
        return new AttentionExtras(alibi, bias, mask, blockLayout, stream, workspace);
    }

    public BackwardWorkspace workspace() {
        return workspace;
    }

    public Tensor alibi() {
        return alibi;
    }

    public Tensor bias() {
        return bias;
    }

    public Mask mask() {
        return mask;
    }

    public Mask blockLayout() {
        return blockLayout;
    }

    /** No extension tensors (stream and workspace aside). */
    boolean isEmpty() {
        return alibi == null && bias == null && mask == null && blockLayout == null;
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder("AttentionExtras[");
        String sep = "";
        if (alibi != null) { b.append("alibi=").append(alibi); sep = ", "; }
        if (bias != null) { b.append(sep).append("bias=").append(bias); sep = ", "; }
        if (mask != null) { b.append(sep).append("mask=").append(mask); sep = ", "; }
        if (blockLayout != null) { b.append(sep).append("blockLayout=").append(blockLayout); sep = ", "; }
        if (stream != null) { b.append(sep).append("stream=").append(stream); sep = ", "; }
        if (workspace != null) b.append(sep).append("workspace=").append(workspace);
        return b.append(']').toString();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof AttentionExtras e && Objects.equals(alibi, e.alibi) && Objects.equals(bias, e.bias)
                && Objects.equals(mask, e.mask) && Objects.equals(blockLayout, e.blockLayout)
                && Objects.equals(stream, e.stream) && Objects.equals(workspace, e.workspace);
    }

    @Override
    public int hashCode() {
        return Objects.hash(alibi, bias, mask, blockLayout, stream, workspace);
    }
}
