package io.flashsig;

import io.flashsig.ffi.FlashSigNative;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;

import static io.flashsig.FlashSigException.Status.INVALID_PARAMS;
import static io.flashsig.FlashSigException.Status.INVALID_SHAPE;
import static io.flashsig.FlashSigException.Status.NULL_ARGUMENT;

/**
 * A boolean tensor, one byte per element, nonzero = allowed ({@code FSIG_DTYPE_BOOL}): the mask
 * {@code [B|1, Hq|1, Nq|1, Nk]} and the block-sparse layout {@code [1|Hq, ⌈Nq/bm⌉, ⌈Nk/bn⌉]} of
 * {@link AttentionExtras}. A separate type from {@link Tensor} because it is not a number type: it
 * takes no part in the attention arithmetic, and {@link DType} stays the set of element types q, k, v
 * may have. Like a tensor it never copies: it views off-heap memory, a {@code byte[]} or any segment,
 * and the native library checks its shape and strides when it is used.
 *
 * <p>Like a tensor it has a {@link Device}: a mask for a CUDA call lives in that device's memory
 * ({@link Cuda#allocateMask}, filled with {@link Cuda#copy(Mask, Mask, CudaStream)}, or another
 * framework's memory through {@link #wrap(MemorySegment, Device, long[], long[])}); its segment then
 * holds a device address, and element access from Java is refused.
 */
public final class Mask {
    private final MemorySegment segment;
    private final Device device;
    private final long[] shape;
    private final long[] strides;
    /** fsig_tensor with data = NULL, as for {@link Tensor#descriptor}. */
    final MemorySegment descriptor;
    private final MemorySegment descriptorOwner;

    private Mask(MemorySegment segment, Device device, long[] shape, long[] strides) {
        this.segment = segment;
        this.device = device;
        this.shape = shape;
        this.strides = strides;
        NativeLibrary.load(); // before FlashSigNative is initialised
        this.descriptorOwner = Tensor.newDescriptor(segment, FlashSigNative.FSIG_DTYPE_BOOL(), device, shape, strides);
        this.descriptor = MemorySegment.ofAddress(descriptorOwner.address()).reinterpret(descriptorOwner.byteSize());
    }

    /** All-false (zero), contiguous, off-heap, owned by {@code arena}. */
    public static Mask allocate(Arena arena, long... shape) {
        Objects.requireNonNull(arena, "arena");
        long[] s = checkShape(shape);
        MemorySegment seg = arena.allocate(Math.max(count(s), 1), 64);
        seg.fill((byte) 0);
        return new Mask(seg, Device.CPU, s, Tensor.contiguousStrides(s));
    }

    /** A contiguous view of {@code data} (nonzero = true), zero-copy: writes go to the array. */
    public static Mask of(byte[] data, long... shape) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        long[] s = checkShape(shape);
        if (count(s) != data.length)
            throw new FlashSigException(INVALID_SHAPE, "data has " + data.length + " elements but shape "
                    + Arrays.toString(s) + " needs " + count(s));
        return new Mask(MemorySegment.ofArray(data), Device.CPU, s, Tensor.contiguousStrides(s));
    }

    /** A copy of {@code data} (row-major) in a new byte[]. */
    public static Mask of(boolean[] data, long... shape) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        byte[] b = new byte[data.length];
        for (int i = 0; i < data.length; i++) b[i] = data[i] ? (byte) 1 : 0;
        return of(b, shape);
    }

    /**
     * The key-padding mask of a batch of sequences of unequal length, right-padded to {@code nk} keys: a
     * contiguous host mask {@code [B, 1, 1, nk]} ({@code B = lengths.length}), off-heap, owned by {@code arena},
     * in which key {@code j} of batch element {@code b} is allowed iff {@code j < lengths[b]}. Masked that way,
     * a non-causal softmax call without window, ALiBi or log-n (which align on the padded Nk) gives each element
     * the output it would have over its own keys alone (a length of 0: rows with no key, O = 0). For a CUDA call,
     * copy it to the device ({@link Cuda#allocateMask},
     * {@link Cuda#copy(Mask, Mask, CudaStream)}). Left padding or other patterns: fill a mask of that shape.
     */
    public static Mask keyPadding(Arena arena, long nk, long... lengths) {
        if (arena == null) throw new FlashSigException(NULL_ARGUMENT, "arena is null");
        if (lengths == null) throw new FlashSigException(NULL_ARGUMENT, "lengths is null");
        if (lengths.length == 0)
            throw new FlashSigException(INVALID_SHAPE, "lengths is empty but must hold one length per batch element");
        if (nk < 0) throw new FlashSigException(INVALID_SHAPE, "nk is " + nk + " but must be >= 0");
        for (int b = 0; b < lengths.length; b++)
            if (lengths[b] < 0 || lengths[b] > nk)
                throw new FlashSigException(INVALID_PARAMS, "lengths[" + b + "] is " + lengths[b] + " but must be in [0, nk = "
                        + nk + "]");
        Mask mask = allocate(arena, lengths.length, 1, 1, nk);
        for (int b = 0; b < lengths.length; b++) mask.segment.asSlice(b * nk, lengths[b]).fill((byte) 1);
        return mask;
    }

    /** A view of any host segment, zero-copy. Strides are in elements (bytes). */
    public static Mask wrap(MemorySegment segment, long[] shape, long[] strides) {
        return wrap(segment, Device.CPU, shape, strides);
    }

    /**
     * A view of a segment on {@code device}, as {@link Tensor#wrap(MemorySegment, DType, Device, long[], long[])}:
     * for CUDA the segment holds a device address and its byte size
     * ({@code MemorySegment.ofAddress(ptr).reinterpret(bytes)}), which bounds every access; not a heap segment.
     */
    public static Mask wrap(MemorySegment segment, Device device, long[] shape, long[] strides) {
        if (segment == null) throw new FlashSigException(NULL_ARGUMENT, "segment is null");
        if (device == null) throw new FlashSigException(NULL_ARGUMENT, "device is null");
        long[] s = checkShape(shape);
        long[] st = Tensor.checkStrides(strides, s);
        Tensor.checkSegmentDevice(segment, device, "mask");
        return new Mask(segment, device, s, st);
    }

    public MemorySegment segment() {
        return segment;
    }

    public Device device() {
        return device;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long[] strides() {
        return strides.clone();
    }

    /** Product of the shape. */
    public long elementCount() {
        return count(shape);
    }

    /** Whether the elements are dense in row-major order. */
    public boolean isContiguous() {
        return Arrays.equals(strides, Tensor.contiguousStrides(shape));
    }

    /** The element at {@code index} (one entry per dimension); host masks only. */
    public boolean get(long... index) {
        long off = Tensor.elementOffset(shape, strides, index);
        Tensor.requireHost(device, "mask");
        return segment.get(ValueLayout.JAVA_BYTE, off) != 0;
    }

    /** Stores {@code value} at {@code index}; host masks only. */
    public void set(boolean value, long... index) {
        long off = Tensor.elementOffset(shape, strides, index);
        Tensor.requireHost(device, "mask");
        segment.set(ValueLayout.JAVA_BYTE, off, value ? (byte) 1 : 0);
    }

    @Override
    public String toString() {
        return "Mask[" + Arrays.toString(shape) + " strides " + Arrays.toString(strides) + " on " + device
                + (segment.isNative() ? ", off-heap" : ", heap") + "]";
    }

    static long[] checkShape(long[] shape) {
        long[] s = Tensor.checkRank(shape, "a mask has 1 to 4 dimensions (4 for a mask, 3 for a block layout)");
        for (long n : s)
            if (n < 0) throw new FlashSigException(INVALID_SHAPE, "shape " + Arrays.toString(s)
                    + " has a negative dimension");
        return s;
    }

    /** Elements (= bytes) of {@code shape}, or an INVALID_SHAPE error past 2^63. */
    static long count(long[] shape) {
        long n = 1;
        try {
            for (long s : shape) n = Math.multiplyExact(n, s);
        } catch (ArithmeticException e) {
            throw new FlashSigException(INVALID_SHAPE, "shape " + Arrays.toString(shape) + " has more than 2^63 elements");
        }
        return n;
    }
}
