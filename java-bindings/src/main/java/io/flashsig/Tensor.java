package io.flashsig;

import io.flashsig.ffi.fsig_tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;

import static io.flashsig.FlashSigException.Status.INVALID_DTYPE;
import static io.flashsig.FlashSigException.Status.INVALID_SHAPE;
import static io.flashsig.FlashSigException.Status.NULL_ARGUMENT;

/**
 * A strided view of a {@link MemorySegment} as an n-d array: dtype, device, shape and element strides.
 * Attention tensors are BSHD: q and out {@code [B, Nq, Hq, d]}, k and v {@code [B, Nk, Hk, d]}, the
 * gradients like their primals, and lse {@code [B, Hq, Nq]} fp32.
 *
 * <p>A tensor never copies: it views off-heap memory from an {@link Arena}, a heap array
 * ({@link #of(float[], long...)}), or any other segment ({@link #wrap}). The segment's lifetime is the
 * caller's: calls check that it is still alive and accessible from the calling thread. Shapes and
 * strides are validated by the native library when the tensor is used, so a tensor can describe an
 * invalid layout and the call reports exactly what is wrong.
 *
 * <p>The native descriptor ({@code fsig_tensor}) is built once here, so a call allocates nothing per
 * tensor. Shape and strides are fixed; the data are mutable.
 */
public final class Tensor {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    private final MemorySegment segment;
    private final DType dtype;
    private final Device device;
    private final long[] shape;
    private final long[] strides;
    /**
     * fsig_tensor with data = NULL (the data travel as call arguments), as an unscoped view: passing an
     * arena-scoped segment would cost the downcall an atomic acquire/release of the automatic arena
     * per argument. The memory belongs to {@link #descriptorOwner}; FlashSig keeps this Tensor reachable
     * (Reference.reachabilityFence) until the call returns.
     */
    final MemorySegment descriptor;
    private final MemorySegment descriptorOwner;

    private Tensor(MemorySegment segment, DType dtype, Device device, long[] shape, long[] strides) {
        this.segment = segment;
        this.dtype = dtype;
        this.device = device;
        this.shape = shape;
        this.strides = strides;
        this.descriptorOwner = newDescriptor(segment, dtype.nativeCode(), device, shape, strides);
        this.descriptor = MemorySegment.ofAddress(descriptorOwner.address()).reinterpret(descriptorOwner.byteSize());
    }

    /**
     * A new fsig_tensor (owned by an automatic arena) with data = NULL describing {@code segment} as
     * {@code dtypeCode} elements on {@code device}; shared with {@link Mask}.
     */
    static MemorySegment newDescriptor(MemorySegment segment, int dtypeCode, Device device, long[] shape,
                                       long[] strides) {
        NativeLibrary.load(); // before any io.flashsig.ffi class is initialised
        MemorySegment d = Arena.ofAuto().allocate(fsig_tensor.layout());
        fsig_tensor.data(d, MemorySegment.NULL);
        fsig_tensor.capacity_bytes(d, segment.byteSize());
        fsig_tensor.dtype(d, dtypeCode);
        fsig_tensor.device_type(d, device.type().nativeCode());
        fsig_tensor.device_index(d, device.index());
        fsig_tensor.ndim(d, shape.length);
        for (int i = 0; i < shape.length; i++) {
            fsig_tensor.shape(d, i, shape[i]);
            fsig_tensor.strides(d, i, strides[i]);
        }
        return d;
    }

    /** Zero-filled, contiguous, off-heap tensor owned by {@code arena}. */
    public static Tensor allocate(Arena arena, DType dtype, long... shape) {
        Objects.requireNonNull(arena, "arena");
        requireDtype(dtype);
        long[] s = checkShape(shape);
        MemorySegment seg = arena.allocate(byteSize(dtype, s), 64);
        seg.fill((byte) 0); // JDK arenas zero already; a custom arena may not
        return new Tensor(seg, dtype, Device.CPU, s, contiguousStrides(s));
    }

    /** A view of any host segment (off-heap or heap), zero-copy. Strides are in elements. */
    public static Tensor wrap(MemorySegment segment, DType dtype, long[] shape, long[] strides) {
        return wrap(segment, dtype, Device.CPU, shape, strides);
    }

    /**
     * A view of a segment on {@code device}. For CUDA, the segment holds a device address and its byte
     * size ({@code MemorySegment.ofAddress(ptr).reinterpret(bytes)}); it must not be a heap segment.
     */
    public static Tensor wrap(MemorySegment segment, DType dtype, Device device, long[] shape, long[] strides) {
        if (segment == null) throw new FlashSigException(NULL_ARGUMENT, "segment is null");
        requireDtype(dtype);
        if (device == null) throw new FlashSigException(NULL_ARGUMENT, "device is null");
        long[] s = checkShape(shape);
        long[] st = checkStrides(strides, s);
        checkSegmentDevice(segment, device, "tensor");
        return new Tensor(segment, dtype, device, s, st);
    }

    /** A contiguous fp32 tensor over {@code data}, zero-copy (writes go to the array). */
    public static Tensor of(float[] data, long... shape) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        long[] s = checkShape(shape);
        checkLength(data.length, s);
        return new Tensor(MemorySegment.ofArray(data), DType.FP32, Device.CPU, s, contiguousStrides(s));
    }

    /** A contiguous fp16 or bf16 tensor over the raw 16-bit values in {@code data}, zero-copy. */
    public static Tensor of(short[] data, DType dtype, long... shape) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        requireDtype(dtype);
        if (dtype.byteSize() != 2)
            throw new FlashSigException(INVALID_DTYPE, "a short[] holds FP16 or BF16, not " + dtype);
        long[] s = checkShape(shape);
        checkLength(data.length, s);
        return new Tensor(MemorySegment.ofArray(data), dtype, Device.CPU, s, contiguousStrides(s));
    }

    /** Row-major strides (in elements) for {@code shape}. */
    public static long[] contiguousStrides(long... shape) {
        long[] st = new long[shape.length];
        long acc = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            st[i] = acc;
            acc *= Math.max(shape[i], 1);
        }
        return st;
    }

    public MemorySegment segment() {
        return segment;
    }

    public DType dtype() {
        return dtype;
    }

    public Device device() {
        return device;
    }

    public int rank() {
        return shape.length;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long shape(int dim) {
        return shape[dim];
    }

    /** Strides in elements. */
    public long[] strides() {
        return strides.clone();
    }

    public long stride(int dim) {
        return strides[dim];
    }

    /** Product of the shape. */
    public long elementCount() {
        return elementCount(shape);
    }

    /** Whether the elements are dense in row-major order. */
    public boolean isContiguous() {
        return Arrays.equals(strides, contiguousStrides(shape));
    }

    /** The element at {@code index} (one entry per dimension), converted to float. */
    public float get(long... index) {
        return load(offsetOf(index));
    }

    /** Stores {@code value}, rounded to the dtype, at {@code index}. */
    public void set(float value, long... index) {
        store(offsetOf(index), value);
    }

    /** All elements in row-major order of the shape (strides honoured), as floats. */
    public float[] toFloatArray() {
        long n = elementCount();
        if (n > Integer.MAX_VALUE - 8) throw new FlashSigException(INVALID_SHAPE, "too many elements for a float[]: " + n);
        float[] r = new float[(int) n];
        forEachOffset((i, off) -> r[i] = load(off));
        return r;
    }

    /** Writes {@code data} (row-major order of the shape, strides honoured), rounding to the dtype. */
    public void copyFrom(float[] data) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        if (data.length != elementCount())
            throw new FlashSigException(INVALID_SHAPE, "data has " + data.length + " elements but shape "
                    + Arrays.toString(shape) + " has " + elementCount());
        forEachOffset((i, off) -> store(off, data[i]));
    }

    @Override
    public String toString() {
        return "Tensor[" + dtype + " " + Arrays.toString(shape) + " strides " + Arrays.toString(strides) + " on "
                + device + (segment.isNative() ? ", off-heap" : ", heap") + "]";
    }

    // ---- internals -------------------------------------------------------------------------------

    /** Byte offset of the last addressable element + its size, or -1 when that overflows or a stride is negative. */
    long extentBytes() {
        try {
            long last = 0;
            for (int i = 0; i < shape.length; i++) {
                if (strides[i] < 0) return -1;
                last = Math.addExact(last, Math.multiplyExact(shape[i] - 1, strides[i]));
            }
            return Math.multiplyExact(last + 1, dtype.byteSize());
        } catch (ArithmeticException e) {
            return -1;
        }
    }

    /** Visits each element's byte offset in row-major order; runs along the last dim are contiguous when stride is 1. */
    void forEachOffset(OffsetVisitor v) {
        int r = shape.length;
        long[] idx = new long[r];
        long n = elementCount();
        int esz = dtype.byteSize();
        for (long i = 0; i < n; i++) {
            long off = 0;
            for (int k = 0; k < r; k++) off += idx[k] * strides[k];
            v.visit((int) i, off * esz);
            for (int k = r - 1; k >= 0; k--) {
                if (++idx[k] < shape[k]) break;
                idx[k] = 0;
            }
        }
    }

    /**
     * Copies every element this tensor addresses from {@code src} (a segment laid out like this tensor's
     * own, e.g. a scratch copy of it) to {@code dst}. Elements only: gaps between them are untouched.
     */
    void copyElements(MemorySegment src, MemorySegment dst) {
        int r = shape.length;
        int esz = dtype.byteSize();
        long runLen = r > 0 && strides[r - 1] == 1 ? shape[r - 1] : 1;
        long runs = runLen == 0 ? 0 : elementCount() / runLen;
        int outer = runLen == 1 ? r : r - 1;
        long[] idx = new long[Math.max(outer, 0)];
        for (long i = 0; i < runs; i++) {
            long off = 0;
            for (int k = 0; k < outer; k++) off += idx[k] * strides[k];
            MemorySegment.copy(src, off * esz, dst, off * esz, runLen * esz);
            for (int k = outer - 1; k >= 0; k--) {
                if (++idx[k] < shape[k]) break;
                idx[k] = 0;
            }
        }
    }

    @FunctionalInterface
    interface OffsetVisitor {
        void visit(int index, long byteOffset);
    }

    private long offsetOf(long[] index) {
        return elementOffset(shape, strides, index) * dtype.byteSize();
    }

    /** Offset in elements of {@code index} (checked against {@code shape}); shared with {@link Mask}. */
    static long elementOffset(long[] shape, long[] strides, long[] index) {
        if (index == null || index.length != shape.length)
            throw new FlashSigException(INVALID_SHAPE, "index needs " + shape.length + " entries, got "
                    + (index == null ? "null" : Arrays.toString(index)));
        long off = 0;
        for (int i = 0; i < shape.length; i++) {
            if (index[i] < 0 || index[i] >= shape[i])
                throw new FlashSigException(INVALID_SHAPE, "index " + Arrays.toString(index) + " is outside shape "
                        + Arrays.toString(shape));
            off += index[i] * strides[i];
        }
        return off;
    }

    private float load(long byteOffset) {
        requireHost();
        return switch (dtype) {
            case FP32 -> segment.get(F32, byteOffset);
            case FP16 -> Float.float16ToFloat(segment.get(I16, byteOffset));
            case BF16 -> DType.bf16ToFloat(segment.get(I16, byteOffset));
        };
    }

    private void store(long byteOffset, float value) {
        requireHost();
        switch (dtype) {
            case FP32 -> segment.set(F32, byteOffset, value);
            case FP16 -> segment.set(I16, byteOffset, Float.floatToFloat16(value));
            case BF16 -> segment.set(I16, byteOffset, DType.floatToBf16(value));
        }
    }

    private void requireHost() {
        requireHost(device, "tensor");
    }

    /** Element access from Java: refused for device memory ({@code what}: "tensor" or "mask"). */
    static void requireHost(Device device, String what) {
        if (!device.isCpu())
            throw new FlashSigException(FlashSigException.Status.INVALID_DEVICE,
                    "element access needs host memory but this " + what + " is on " + device);
    }

    private static void requireDtype(DType dtype) {
        if (dtype == null) throw new FlashSigException(NULL_ARGUMENT, "dtype is null");
    }

    /** Bytes of a contiguous tensor of {@code shape}, or an INVALID_SHAPE error past 2^63. */
    static long byteSize(DType dtype, long[] shape) {
        try {
            return Math.multiplyExact(elementCount(shape), dtype.byteSize());
        } catch (ArithmeticException e) {
            throw new FlashSigException(INVALID_SHAPE, "shape " + Arrays.toString(shape) + " has more than 2^63 bytes");
        }
    }

    /** A copy of {@code strides}, which must have one entry per dimension of {@code shape}. */
    static long[] checkStrides(long[] strides, long[] shape) {
        if (strides == null) throw new FlashSigException(NULL_ARGUMENT, "strides is null");
        if (strides.length != shape.length)
            throw new FlashSigException(INVALID_SHAPE, "strides has " + strides.length + " entries but shape has "
                    + shape.length);
        return strides.clone();
    }

    /** A device view must hold an address: a heap segment cannot ({@code what}: "tensor" or "mask"). */
    static void checkSegmentDevice(MemorySegment segment, Device device, String what) {
        if (!device.isCpu() && !segment.isNative())
            throw new FlashSigException(FlashSigException.Status.INVALID_DEVICE, "a heap segment cannot be a "
                    + device + " " + what + ": CUDA " + what + "s wrap device addresses");
    }

    static long[] checkShape(long[] shape) {
        return checkRank(shape, "a tensor has 1 to 4 dimensions (4 for q, k, v, out and gradients; 3 for lse)");
    }

    /** A copy of {@code shape}, which must have 1 to 4 entries ({@code rule} says so in the error); shared with {@link Mask}. */
    static long[] checkRank(long[] shape, String rule) {
        if (shape == null) throw new FlashSigException(NULL_ARGUMENT, "shape is null");
        if (shape.length < 1 || shape.length > 4)
            throw new FlashSigException(INVALID_SHAPE, "rank is " + shape.length + " but " + rule);
        return shape.clone();
    }

    private static long elementCount(long[] shape) {
        long n = 1;
        for (long s : shape) {
            if (s < 0) throw new FlashSigException(INVALID_SHAPE, "shape " + Arrays.toString(shape)
                    + " has a negative dimension");
            n = Math.multiplyExact(n, s);
        }
        return n;
    }

    private static void checkLength(int length, long[] shape) {
        long n;
        try {
            n = elementCount(shape);
        } catch (ArithmeticException e) {
            n = -1;
        }
        if (n != length)
            throw new FlashSigException(INVALID_SHAPE, "data has " + length + " elements but shape "
                    + Arrays.toString(shape) + " needs " + n);
    }
}
