package io.flashsig.examples;

import io.flashsig.AttentionExtras;
import io.flashsig.AttentionSpec;
import io.flashsig.BackwardWorkspace;
import io.flashsig.Cuda;
import io.flashsig.CudaStream;
import io.flashsig.DType;
import io.flashsig.Device;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * The attention in bf16 through FlashSig on {@code device}, the way a GPU run does it. Each call rounds the
 * model's fp32 arrays to bf16 into off-heap host tensors (round to nearest even), copies them to the
 * device's tensors, runs the forward (with the LSE for softmax) or the backward there, copies the results
 * back and widens them to fp32:
 * <pre>
 *   forward:  q, k, v ──bf16──▶ host ──copy──▶ device ─ forward ─▶ out (+ lse, kept) ──copy──▶ host ──fp32──▶ a
 *   backward: da ──bf16──▶ host ──copy──▶ device ─ backward (q, k, v, out, lse kept) ─▶ dq, dk, dv ──▶ host ──fp32──▶
 * </pre>
 * On a CUDA device the copies are {@link Cuda#copy} on one {@link CudaStream}, the backward takes the fast
 * path with a {@link BackwardWorkspace}, and the stream is synchronised before the results are read. On
 * the CPU (which takes bf16 at any head dim) the same steps run with host memory standing in for device
 * memory and {@link MemorySegment#copy} for the copies — so the conversions and copies are tested without
 * a GPU; there the workspace is empty and every call is synchronous.
 *
 * <p>Every tensor, the workspace included, is allocated once, in the constructor, in the caller's arena
 * (which must outlive this backend and be closed only after the stream has finished): a step allocates no
 * device memory. Its CUDA backward wants d a multiple of 8 up to 256 (see
 * {@link FlashSig.Capabilities#cudaRunsBackwardHeadDim(int)}).
 */
final class Bf16Attention implements AttentionBackend {
    private final AttentionSpec spec;
    private final Device device;
    private final CudaStream stream;      // null on the CPU
    private final AttentionExtras extras; // the stream and the fast backward's workspace, for every call
    private final BackwardWorkspace workspace;
    private final boolean softmax;
    // host staging, off-heap bf16: what goes up (q, k, v, dout) and what comes back (out, dq, dk, dv)
    private final Tensor hostQ, hostK, hostV, hostDout, hostOut, hostDq, hostDk, hostDv;
    // on the device: the operands, the forward's out and lse (kept for the backward), the gradients
    private final Tensor q, k, v, out, lse, dout, dq, dk, dv;
    private boolean forwardDone;

    /**
     * A backend for calls of {@code shape} [B, N, H, d] under {@code spec} on {@code device}, its memory in
     * {@code arena}; {@code stream} is the CUDA stream of every call and copy (null on the CPU).
     */
    Bf16Attention(Arena arena, Device device, CudaStream stream, AttentionSpec spec, long[] shape) {
        if (device.isCpu() != (stream == null))
            throw new IllegalArgumentException("a CUDA device needs a stream and the CPU none; got " + device
                    + " and " + stream);
        this.spec = spec;
        this.device = device;
        this.stream = stream;
        this.softmax = spec.score() == Score.SOFTMAX;
        hostQ = Tensor.allocate(arena, DType.BF16, shape);
        hostK = Tensor.allocate(arena, DType.BF16, shape);
        hostV = Tensor.allocate(arena, DType.BF16, shape);
        hostDout = Tensor.allocate(arena, DType.BF16, shape);
        hostOut = Tensor.allocate(arena, DType.BF16, shape);
        hostDq = Tensor.allocate(arena, DType.BF16, shape);
        hostDk = Tensor.allocate(arena, DType.BF16, shape);
        hostDv = Tensor.allocate(arena, DType.BF16, shape);
        // Cuda.allocate on Device.CPU gives host tensors: the same code serves both
        q = Cuda.allocate(arena, DType.BF16, device, shape);
        k = Cuda.allocate(arena, DType.BF16, device, shape);
        v = Cuda.allocate(arena, DType.BF16, device, shape);
        out = Cuda.allocate(arena, DType.BF16, device, shape);
        lse = softmax ? Cuda.allocate(arena, DType.FP32, device, shape[0], shape[2], shape[1]) : null; // [B, H, N]
        dout = Cuda.allocate(arena, DType.BF16, device, shape);
        dq = Cuda.allocate(arena, DType.BF16, device, shape);
        dk = Cuda.allocate(arena, DType.BF16, device, shape);
        dv = Cuda.allocate(arena, DType.BF16, device, shape);
        workspace = Cuda.allocateBackwardWorkspace(arena, spec, q); // empty on the CPU
        extras = AttentionExtras.none().stream(stream).workspace(workspace);
    }

    /** The factory for {@link AttentionModel}: backends on {@code device}, sharing {@code arena} and {@code stream}. */
    static AttentionBackend.Factory on(Arena arena, Device device, CudaStream stream) {
        return (spec, shape) -> new Bf16Attention(arena, device, stream, spec, shape);
    }

    @Override
    public void forward(float[] q, float[] k, float[] v, float[] a) {
        up(q, hostQ, this.q);
        up(k, hostK, this.k);
        up(v, hostV, this.v);
        FlashSig.forward(spec, extras, this.q, this.k, this.v, out, lse);
        copy(out, hostOut);
        sync();
        widen(hostOut, a);
        forwardDone = true;
    }

    @Override
    public void backward(float[] da, float[] dq, float[] dk, float[] dv) {
        if (!forwardDone) throw new IllegalStateException("backward before forward");
        up(da, hostDout, dout);
        // softmax's backward needs the forward's out and LSE (still on the device); a pointwise score's neither
        FlashSig.backward(spec, extras, q, k, v, softmax ? out : null, dout, lse, this.dq, this.dk, this.dv, null);
        copy(this.dq, hostDq);
        copy(this.dk, hostDk);
        copy(this.dv, hostDv);
        sync();
        widen(hostDq, dq);
        widen(hostDk, dk);
        widen(hostDv, dv);
    }

    @Override
    public String describe() {
        return "bf16 on " + device + (device.isCpu() ? "" : ", fast backward (workspace " + workspace.byteSize()
                + " bytes)");
    }

    /** fp32 {@code src} rounded to bf16 into {@code host}, then copied to {@code dev}. */
    private void up(float[] src, Tensor host, Tensor dev) {
        host.copyFrom(src);
        copy(host, dev);
    }

    /** A whole-tensor copy: in stream order on CUDA, at once on the CPU. */
    private void copy(Tensor src, Tensor dst) {
        if (device.isCpu()) MemorySegment.copy(src.segment(), 0, dst.segment(), 0,
                src.elementCount() * src.dtype().byteSize());
        else Cuda.copy(src, dst, stream);
    }

    /** Waits for the stream (CUDA): the copies back have landed, and an asynchronous error is thrown here. */
    private void sync() {
        if (stream != null) stream.synchronize();
    }

    /** The bf16 host tensor's values, widened to fp32, into {@code dst}. */
    private static void widen(Tensor host, float[] dst) {
        float[] values = host.toFloatArray();
        System.arraycopy(values, 0, dst, 0, dst.length);
    }
}
