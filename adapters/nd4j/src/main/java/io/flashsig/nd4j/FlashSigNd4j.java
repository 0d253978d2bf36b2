package io.flashsig.nd4j;

import io.flashsig.AttentionExtras;
import io.flashsig.AttentionSpec;
import io.flashsig.DType;
import io.flashsig.FlashSig;
import io.flashsig.FlashSigException;
import io.flashsig.FlashSigException.Status;
import io.flashsig.Mask;
import io.flashsig.Tensor;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import java.lang.foreign.MemorySegment;
import java.lang.ref.Reference;
import java.util.Arrays;

/**
 * FlashSig attention on ND4J {@link INDArray}s, in place: q, k, v are read from, and out (or dq, dk, dv)
 * written to, the arrays' own off-heap buffers — no copy, no {@code dup()}, no new array.
 * <pre>{@code
 * // ND4J's DotProductAttention layout: [B, H, d, N]
 * INDArray q = ..., k = ..., v = ...;                       // FLOAT, HALF or BFLOAT16
 * INDArray out = Nd4j.createUninitialized(q.dataType(), q.shape());
 * FlashSigNd4j.forward(AttentionSpec.softmax(), Layout.BHDN, q, k, v, out);
 * }</pre>
 *
 * <h2>Layouts</h2>
 * FlashSig's logical layout is BSHD ({@code [B, N, H, d]}) with an element stride per dimension, and
 * its CPU kernels accept any non-negative strides, the head-dim stride included. So each {@link Layout}
 * is a permutation of the array's own shape and strides; c-order, f-order and strided views all work
 * as they are. A head-dim stride other than 1 — {@link Layout#BHDN} in c-order has stride N, its
 * positions contiguous — is read and written along positions: forward and backward run at the rate of
 * a contiguous head dim (benchmarks/NOTES.md). An output needs strides that never write one element
 * twice.
 *
 * <h2>Lifetime</h2>
 * The arrays' buffers are wrapped as {@link MemorySegment}s from their native address and byte length
 * ({@code MemorySegment.ofAddress(address).reinterpret(bytes)}). Such a segment does not keep the
 * INDArray alive: ND4J frees the buffer when the INDArray becomes unreachable (or its workspace closes).
 * The calls here keep every array reachable until the native call has returned
 * ({@link Reference#reachabilityFence}), so they are safe as they are. A {@link Tensor} from
 * {@link #tensor} is valid only while its INDArray is reachable and its workspace open: keep the
 * INDArray in a variable and fence it yourself after the last FlashSig call that uses the tensor.
 *
 * <h2>Threads</h2>
 * FlashSig's CPU pool ({@link FlashSig#setNumThreads}) and ND4J's pools (libnd4j's thread pool,
 * {@code Nd4j.getEnvironment().setMaxMasterThreads}, and OpenBLAS's, {@code Nd4j.factory().blas()
 * .setMaxThreads}) each default to one thread per core. Calls made from one Java thread run one after
 * the other, so only one library computes at a time and nothing is oversubscribed; this adapter
 * changes no pool by itself. When ND4J ops and FlashSig calls run at the same time on different Java
 * threads, call {@link #shareCores(int)} once to split the cores between them.
 *
 * <h2>Errors</h2>
 * Every failure is a {@link FlashSigException} naming the argument in the caller's layout, and no output
 * element is written.
 *
 * <h2>Masks</h2>
 * The {@code mask} argument is ND4J's key mask of {@code DotProductAttention}: shape {@code [B, Nk]},
 * nonzero = the key takes part. It becomes FlashSig's boolean mask {@code [B, 1, 1, Nk]} (broadcast over
 * heads and queries). A BOOL, BYTE or UBYTE mask is read in place; a mask of any other type is first
 * turned into B·Nk bytes (its values compared with 0) — small beside q, k, v. A query row whose keys
 * are all masked gives 0 (softmax: LSE = +inf). Causal and sliding-window masks are
 * {@link AttentionSpec} options and combine with it.
 */
public final class FlashSigNd4j {
    private FlashSigNd4j() {}

    /** How the four dimensions of q, k, v (and out and the gradients, like q or k) are ordered. */
    public enum Layout {
        /**
         * {@code [B, H, d, N]}: features before timesteps, the layout of ND4J's {@code DotProductAttention}
         * and {@code MultiHeadDotProductAttention} ops.
         */
        BHDN(new int[] {0, 3, 1, 2}, "[B, H, d, N]"),
        /** {@code [B, N, H, d]}: FlashSig's and FlashAttention's own (BSHD), the usual one after a projection. */
        BNHD(new int[] {0, 1, 2, 3}, "[B, N, H, d]"),
        /** {@code [B, H, N, d]}: heads before timesteps, as PyTorch's scaled_dot_product_attention. */
        BHND(new int[] {0, 2, 1, 3}, "[B, H, N, d]");

        /** bshd[i] = the array dimension that holds BSHD dimension i. */
        private final int[] bshd;
        private final String names;

        Layout(int[] bshd, String names) {
            this.bshd = bshd;
            this.names = names;
        }

        /** The dimension names, e.g. "[B, H, d, N]". */
        public String dims() {
            return names;
        }

        int batchDim() {
            return bshd[0];
        }

        int seqDim() {
            return bshd[1];
        }

        int headDim() {
            return bshd[2];
        }

        int featureDim() {
            return bshd[3];
        }
    }

    // ---- calls -------------------------------------------------------------------------------------

    /** {@code out = attention(q, k, v)}, written into {@code out}'s buffer. */
    public static void forward(AttentionSpec spec, Layout layout, INDArray q, INDArray k, INDArray v, INDArray out) {
        forward(spec, layout, q, k, v, null, out, null);
    }

    /**
     * {@code out = attention(q, k, v)}; for softmax, also the row log-sum-exp into {@code lse} (FLOAT,
     * {@code [B, H, Nq]}, any strides), which {@link #backward} needs. {@code lse} may be null, and
     * must be null for the other scores. {@code mask} is ND4J's key mask {@code [B, Nk]} or null (see the
     * class comment).
     */
    public static void forward(AttentionSpec spec, Layout layout, INDArray q, INDArray k, INDArray v, INDArray mask,
                               INDArray out, INDArray lse) {
        try {
            checkCall(spec, layout);
            checkShapes(layout, q, k, v, out, "out");
            Tensor tq = tensor(q, layout, "q"), tk = tensor(k, layout, "k"), tv = tensor(v, layout, "v");
            Tensor tout = tensor(out, layout, "out");
            Tensor tlse = lse == null ? null : lseTensor(lse, layout, q);
            AttentionExtras extras = extras(mask, layout, q, k);
            FlashSig.forward(spec, extras, tq, tk, tv, tout, tlse);
        } finally {
            Reference.reachabilityFence(mask);
            Reference.reachabilityFence(q);
            Reference.reachabilityFence(k);
            Reference.reachabilityFence(v);
            Reference.reachabilityFence(out);
            Reference.reachabilityFence(lse);
        }
    }

    /** Gradients of {@code out = attention(q, k, v)} for the pointwise scores (softmax needs out and lse). */
    public static void backward(AttentionSpec spec, Layout layout, INDArray q, INDArray k, INDArray v, INDArray dout,
                                INDArray dq, INDArray dk, INDArray dv) {
        backward(spec, layout, q, k, v, null, null, dout, null, dq, dk, dv);
    }

    /**
     * {@code dq, dk, dv} from {@code dout}, by recomputation, written into the given arrays. Softmax needs
     * the forward's {@code out} and {@code lse}; the pointwise scores need neither (null). dq is laid
     * out like q, dk and dv like k. {@code mask}: the forward's key mask {@code [B, Nk]}, or null.
     */
    public static void backward(AttentionSpec spec, Layout layout, INDArray q, INDArray k, INDArray v, INDArray mask,
                                INDArray out, INDArray dout, INDArray lse, INDArray dq, INDArray dk, INDArray dv) {
        try {
            checkCall(spec, layout);
            checkShapes(layout, q, k, v, dout, "dout");
            if (out != null) sameShape(q, out, "out", layout);
            sameShape(q, dq, "dq", layout);
            sameShape(k, dk, "dk", layout);
            sameShape(v, dv, "dv", layout);
            Tensor tq = tensor(q, layout, "q"), tk = tensor(k, layout, "k"), tv = tensor(v, layout, "v");
            Tensor tout = out == null ? null : tensor(out, layout, "out");
            Tensor tdout = tensor(dout, layout, "dout");
            Tensor tlse = lse == null ? null : lseTensor(lse, layout, q);
            Tensor tdq = tensor(dq, layout, "dq"), tdk = tensor(dk, layout, "dk"), tdv = tensor(dv, layout, "dv");
            AttentionExtras extras = extras(mask, layout, q, k);
            FlashSig.backward(spec, extras, tq, tk, tv, tout, tdout, tlse, tdq, tdk, tdv, null);
        } finally {
            Reference.reachabilityFence(mask);
            Reference.reachabilityFence(q);
            Reference.reachabilityFence(k);
            Reference.reachabilityFence(v);
            Reference.reachabilityFence(out);
            Reference.reachabilityFence(dout);
            Reference.reachabilityFence(lse);
            Reference.reachabilityFence(dq);
            Reference.reachabilityFence(dk);
            Reference.reachabilityFence(dv);
        }
    }

    // ---- views -------------------------------------------------------------------------------------

    /**
     * A FlashSig {@link Tensor} (BSHD) over {@code a}'s buffer, zero-copy, for direct {@link FlashSig}
     * calls. Valid only while {@code a} is reachable and its workspace open (see the class comment).
     */
    public static Tensor tensor(INDArray a, Layout layout) {
        if (layout == null) throw new FlashSigException(Status.NULL_ARGUMENT, "layout is null");
        return tensor(a, layout, "array");
    }

    /** The FlashSig dtype of an ND4J one: FLOAT, HALF, BFLOAT16; anything else is an INVALID_DTYPE error. */
    public static DType dtype(DataType t, String name) {
        if (t == null) throw new FlashSigException(Status.NULL_ARGUMENT, name + ": data type is null");
        return switch (t) {
            case FLOAT -> DType.FP32;
            case HALF -> DType.FP16;
            case BFLOAT16 -> DType.BF16;
            default -> throw new FlashSigException(Status.INVALID_DTYPE, name + " is " + t
                    + " but FlashSig takes FLOAT, HALF or BFLOAT16 (all of q, k, v, out the same)");
        };
    }

    // ---- threads -----------------------------------------------------------------------------------

    /**
     * Splits the cores between the pools for programs that run ND4J ops and FlashSig calls at the same
     * time on different Java threads: FlashSig gets {@code flashSigThreads}, and ND4J the remaining
     * cores (at least 1) — both of its pools: libnd4j's own thread pool
     * ({@code Environment.setMaxMasterThreads}, which its parallel loops use) and OpenBLAS's
     * ({@code Nd4j.factory().blas().setMaxThreads}, which its matmuls use). ({@code Environment.setMaxThreads}
     * is not the knob: in 1.0.0-M2.1 it can only raise the count.) Process-wide;
     * {@link #restoreThreadDefaults()} undoes it.
     */
    public static void shareCores(int flashSigThreads) {
        int cores = Runtime.getRuntime().availableProcessors();
        if (flashSigThreads < 1 || flashSigThreads >= cores && cores > 1)
            throw new FlashSigException(Status.INVALID_PARAMS, "flashSigThreads is " + flashSigThreads
                    + " but it must be in [1, " + Math.max(1, cores - 1) + "] on this " + cores + "-core machine");
        setNd4jThreads(Math.max(1, cores - flashSigThreads));
        FlashSig.setNumThreads(flashSigThreads);
    }

    /** Both libraries back to one thread per core (right when the calls come from one Java thread). */
    public static void restoreThreadDefaults() {
        setNd4jThreads(Runtime.getRuntime().availableProcessors());
        FlashSig.setNumThreads(0);
    }

    private static void setNd4jThreads(int n) {
        Nd4j.getEnvironment().setMaxMasterThreads(n);
        Nd4j.factory().blas().setMaxThreads(n);
    }

    // ---- internals ---------------------------------------------------------------------------------

    private static void checkCall(AttentionSpec spec, Layout layout) {
        if (spec == null) throw new FlashSigException(Status.NULL_ARGUMENT, "spec is null");
        if (layout == null) throw new FlashSigException(Status.NULL_ARGUMENT, "layout is null");
    }

    /** No extras, or ND4J's key mask {@code [B, Nk]} as FlashSig's mask {@code [B, 1, 1, Nk]}. */
    private static AttentionExtras extras(INDArray mask, Layout l, INDArray q, INDArray k) {
        if (mask == null) return AttentionExtras.none();
        long b = q.size(l.batchDim()), nk = k.size(l.seqDim());
        if (mask.rank() != 2 || mask.size(0) != b || mask.size(1) != nk)
            throw new FlashSigException(Status.INVALID_SHAPE, "mask has shape " + Arrays.toString(mask.shape())
                    + " but a key mask must be [B, Nk] = [" + b + ", " + nk + "] (layout " + l + " " + l.dims() + ")");
        long[] shape = {b, 1, 1, nk};
        DataType t = mask.dataType();
        if (t == DataType.BOOL || t == DataType.BYTE || t == DataType.UBYTE) // one byte per key: in place
            return AttentionExtras.none().mask(Mask.wrap(segment(mask, "mask"), shape,
                    new long[] {mask.stride(0), 0, 0, mask.stride(1)}));
        byte[] bytes = new byte[Math.toIntExact(b * nk)];
        for (long i = 0; i < b; i++)
            for (long j = 0; j < nk; j++) bytes[(int) (i * nk + j)] = mask.getDouble(i, j) != 0 ? (byte) 1 : 0;
        return AttentionExtras.none().mask(Mask.of(bytes, shape));
    }

    /** q, k, v and q's twin (out or dout) in the caller's layout: rank 4, same B and d, k like v, heads divide. */
    private static void checkShapes(Layout l, INDArray q, INDArray k, INDArray v, INDArray twin, String twinName) {
        rank4(q, "q", l);
        rank4(k, "k", l);
        rank4(v, "v", l);
        rank4(twin, twinName, l);
        sameShape(k, v, "v", l);
        sameShape(q, twin, twinName, l);
        if (q.size(l.batchDim()) != k.size(l.batchDim()))
            throw shapeError("q has batch " + q.size(l.batchDim()) + " but k has " + k.size(l.batchDim()), q, k, l);
        if (q.size(l.featureDim()) != k.size(l.featureDim()))
            throw shapeError("q has head dim d = " + q.size(l.featureDim()) + " but k has " + k.size(l.featureDim()),
                    q, k, l);
        long hq = q.size(l.headDim()), hk = k.size(l.headDim());
        if (hk == 0 || hq % hk != 0)
            throw shapeError("q has " + hq + " heads and k " + hk + ": the heads of q must be a multiple of k's"
                    + " (GQA/MQA)", q, k, l);
    }

    private static void rank4(INDArray a, String name, Layout l) {
        if (a == null) throw new FlashSigException(Status.NULL_ARGUMENT, name + " is null");
        if (a.rank() != 4)
            throw new FlashSigException(Status.INVALID_SHAPE, name + " has rank " + a.rank() + " (shape "
                    + Arrays.toString(a.shape()) + ") but layout " + l + " needs rank 4, " + l.dims());
    }

    private static void sameShape(INDArray ref, INDArray a, String name, Layout l) {
        if (a == null) throw new FlashSigException(Status.NULL_ARGUMENT, name + " is null");
        if (!Arrays.equals(ref.shape(), a.shape()))
            throw new FlashSigException(Status.INVALID_SHAPE, name + " has shape " + Arrays.toString(a.shape())
                    + " but must have " + Arrays.toString(ref.shape()) + " (layout " + l + " " + l.dims() + ")");
    }

    private static FlashSigException shapeError(String what, INDArray q, INDArray k, Layout l) {
        return new FlashSigException(Status.INVALID_SHAPE, what + " (q " + Arrays.toString(q.shape()) + ", k "
                + Arrays.toString(k.shape()) + ", layout " + l + " " + l.dims() + ")");
    }

    /** The BSHD view of a rank-4 array in layout {@code l}. */
    private static Tensor tensor(INDArray a, Layout l, String name) {
        if (a == null) throw new FlashSigException(Status.NULL_ARGUMENT, name + " is null");
        rank4(a, name, l);
        long[] shape = a.shape(), stride = a.stride();
        long[] s = new long[4], st = new long[4];
        for (int i = 0; i < 4; i++) {
            s[i] = shape[l.bshd[i]];
            st[i] = stride[l.bshd[i]];
        }
        return Tensor.wrap(segment(a, name), dtype(a.dataType(), name), s, st);
    }

    /** lse: FLOAT [B, H, Nq] in any strides; the same for every layout. */
    private static Tensor lseTensor(INDArray lse, Layout l, INDArray q) {
        long[] want = {q.size(l.batchDim()), q.size(l.headDim()), q.size(l.seqDim())};
        if (lse.rank() != 3 || !Arrays.equals(lse.shape(), want))
            throw new FlashSigException(Status.INVALID_SHAPE, "lse has shape " + Arrays.toString(lse.shape())
                    + " but must be [B, H, Nq] = " + Arrays.toString(want));
        if (lse.dataType() != DataType.FLOAT)
            throw new FlashSigException(Status.INVALID_DTYPE, "lse is " + lse.dataType() + " but must be FLOAT");
        return Tensor.wrap(segment(lse, "lse"), DType.FP32, lse.shape(), lse.stride());
    }

    /**
     * The bytes of {@code a}'s buffer from its first element to the end of the underlying buffer, as an
     * unscoped segment: FlashSig then checks that the shape and strides stay inside it.
     */
    private static MemorySegment segment(INDArray a, String name) {
        if (a.isEmpty())
            throw new FlashSigException(Status.INVALID_SHAPE, name + " is an empty array (shape "
                    + Arrays.toString(a.shape()) + ")");
        long esz = a.data().getElementSize();
        long base = a.data().address();
        if (base == 0)
            throw new FlashSigException(Status.NULL_ARGUMENT, name + ": its buffer has no native address"
                    + " (closed workspace or released buffer?)");
        for (long st : a.stride())
            if (st < 0)
                throw new FlashSigException(Status.INVALID_STRIDE, name + " has strides " + Arrays.toString(a.stride())
                        + ": negative strides are not supported");
        long offset = a.offset();
        long available = a.data().underlyingLength() - offset;
        if (offset < 0 || available <= 0)
            throw new FlashSigException(Status.BUFFER_TOO_SMALL, name + ": view offset " + offset
                    + " lies outside its buffer of " + a.data().underlyingLength() + " elements");
        return MemorySegment.ofAddress(base + offset * esz).reinterpret(available * esz);
    }
}
