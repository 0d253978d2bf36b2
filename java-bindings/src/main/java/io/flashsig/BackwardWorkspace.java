package io.flashsig;

import io.flashsig.ffi.fsig_attention_params;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Scratch memory in the memory of the call's device for the fast CUDA backward (and for a broadcast bias
 * gradient, and for the linear scores' forward and backward; below). For the fast backward it is an fp32 dQ of
 * B·Hq·Nq·w floats (w = 64, 128 or 256: the narrowest kernel width ≥ d), into which one
 * dK/dV kernel adds each key tile's share of dQ with atomics (the header's {@code params.workspace}; DESIGN.md
 * §5). Without one, or with {@link AttentionSpec#deterministic(boolean) deterministic} specs, or when
 * {@code dbias} is asked for, the CUDA backward runs its two deterministic kernels instead. dK and dV are the
 * same bits either way; dQ may differ in its last bits from run to run on the fast path (the order of the
 * atomic additions varies), within DESIGN.md §6 of the deterministic one.
 *
 * <p>It also holds the partial sums of a bias gradient broadcast over B, Hq or Nq (a {@code dbias} of any
 * shape but the full {@code [B, Hq, Nq, Nk]}, such as a key-padding {@code [B, 1, 1, Nk]}): on CUDA such a
 * dbias is summed in two deterministic steps through the workspace, and a backward asking for one without
 * a workspace of {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)} bytes fails with
 * {@link FlashSigException.Status#BUFFER_TOO_SMALL} naming that size query, deterministic spec or not;
 * {@link Cuda#allocateBackwardWorkspace(Arena, AttentionSpec, Tensor, Tensor)} allocates one.
 *
 * <p>The linear scores ({@link Score#COSFORMER}, {@link Score#LINEAR_ELU}) on CUDA split a long sequence into
 * segments that run in parallel; with a workspace each segment's state sum is written there once and the
 * segments after it start from those sums, without one each segment recomputes the state before it (more
 * work as the sequence grows: 2.3× the minimum at 5 segments without causal). Their forward and backward both
 * use it; its size is fixed by the head dim and the score ({@link FlashSig#backwardWorkspaceBytes(AttentionSpec,
 * Tensor)}: ≈ 17.8 MB at most). Both ways are deterministic; their results differ in the last bits. A workspace
 * sized for another score's backward is refused by a linear call when it is smaller than that.
 *
 * <p>Allocate one once, outside the training loop, and pass it with every backward through
 * {@link AttentionExtras#workspace(BackwardWorkspace)}; a call then allocates nothing:
 * <pre>{@code
 * BackwardWorkspace ws = Cuda.allocateBackwardWorkspace(arena, spec, q);   // B·Hq·Nq·w·4 bytes on q's device
 * AttentionExtras x = AttentionExtras.none().stream(stream).workspace(ws);
 * for (...) {
 *     FlashSig.forward(spec, x, q, k, v, out, lse);                          // the forward ignores it
 *     FlashSig.backward(spec, x, q, k, v, out, dout, lse, dq, dk, dv, null);
 * }
 * }</pre>
 *
 * <ul>
 * <li><b>Size.</b> {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor)}: B·Hq·Nq·w·4 for a CUDA q,
 * a softmax or pointwise score and a non-deterministic spec; 0 for CPU tensors and deterministic specs of those
 * scores; the linear scores' fixed size above for a CUDA q, deterministic or not. With a broadcast dbias,
 * {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)}: B·Hq·G·Nk·4, G = Nq when dbias
 * keeps Nq and ⌈Nq/16⌉ when it broadcasts Nq; 0 for a full-shaped dbias or CPU tensors. A larger
 * workspace serves smaller problems too, so one sized for the largest batch and sequence length — and,
 * where calls with and without dbias share it, the larger of the two sizes — serves them all
 * ({@link Cuda#allocateBackwardWorkspace(Arena, Device, long)}); a smaller one fails the call with
 * {@link FlashSigException.Status#BUFFER_TOO_SMALL} naming {@code params.workspace_bytes}.</li>
 * <li><b>Empty workspaces.</b> A workspace of 0 bytes (what a CPU device or a deterministic softmax or pointwise
 * spec gets) is accepted by every call and changes nothing: the call runs as without one. So code that runs on
 * the CPU or the GPU can allocate and pass a workspace either way.</li>
 * <li><b>Device.</b> A workspace serves calls on its own device (q's): another device gives
 * {@link FlashSigException.Status#INVALID_DEVICE} naming {@code workspace}, before the native call.</li>
 * <li><b>Sharing.</b> Calls queued one after another on one stream may share a workspace (each call
 * overwrites it); calls that can run at the same time — on different streams — need one each. Java
 * threads may share one: the calls that use it are made one at a time.</li>
 * <li><b>Lifetime.</b> The workspace belongs to the arena it was allocated in and is freed when that closes;
 * close it only after the stream has finished the calls that used it (synchronise first). A call with a
 * non-empty workspace holds the arena open while it runs, so a shared arena closed by another thread fails
 * that close instead of freeing memory under the call; a workspace whose arena is closed is refused.</li>
 * </ul>
 * The forward ignores a workspace (the linear scores' uses it), so one {@link AttentionExtras} can serve both
 * directions.
 */
public final class BackwardWorkspace {
    private final Device device;
    private final MemorySegment memory;   // backwardWorkspaceBytes (or more) on device; NULL when empty
    private final long bytes;
    /**
     * This workspace's own fsig_attention_params (in its arena): a call copies its spec's params here and
     * sets workspace and workspace_bytes, under {@code this} lock (a spec's params are shared and
     * immutable). It is the downcall's params argument, so the downcall holds the arena open.
     */
    private final MemorySegment params;

    private BackwardWorkspace(Device device, MemorySegment memory, long bytes, MemorySegment params) {
        this.device = device;
        this.memory = memory;
        this.bytes = bytes;
        this.params = params;
    }

    /**
     * A workspace over {@code memory} ({@code memory.byteSize()} bytes; NULL or empty for none) on
     * {@code device}, with {@code params} from {@link #newParams} of the arena that owns {@code memory}, so
     * that one scope covers both. For {@link Cuda}; tests make host ones (which CPU calls ignore).
     */
    static BackwardWorkspace of(Device device, MemorySegment memory, MemorySegment params) {
        long bytes = memory.byteSize();
        return new BackwardWorkspace(device, bytes == 0 ? MemorySegment.NULL : memory, bytes, params);
    }

    /** A workspace's params slot, in {@code arena}. */
    static MemorySegment newParams(Arena arena) {
        NativeLibrary.load(); // before fsig_attention_params is initialised
        return arena.allocate(fsig_attention_params.layout());
    }

    /** The device whose calls this workspace serves. */
    public Device device() {
        return device;
    }

    /** Its size in bytes; 0 for an empty workspace (which changes nothing). */
    public long byteSize() {
        return bytes;
    }

    /** Whether its arena is still open. */
    public boolean isAlive() {
        return params.scope().isAlive();
    }

    /** The segment whose scope is the workspace's arena, for the liveness and thread checks of a call. */
    MemorySegment scopeSegment() {
        return params;
    }

    /**
     * {@code specParams} with this workspace in it, in this workspace's params slot; the caller holds the
     * lock on {@code this} from here until the native call has returned.
     */
    MemorySegment params(MemorySegment specParams) {
        MemorySegment.copy(specParams, 0, params, 0, params.byteSize());
        fsig_attention_params.workspace(params, memory);
        fsig_attention_params.workspace_bytes(params, bytes);
        return params;
    }

    @Override
    public String toString() {
        return "BackwardWorkspace[" + device + ", " + bytes + " bytes" + (isAlive() ? "" : ", closed") + "]";
    }
}
