package io.flashsig;

import io.flashsig.ffi.FlashSigNative;
import io.flashsig.ffi.fsig_tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;

import static io.flashsig.FlashSigException.Status.INVALID_SHAPE;
import static io.flashsig.FlashSigException.Status.NULL_ARGUMENT;

/**
 * A boolean tensor, one byte per element, nonzero = allowed ({@code FSIG_DTYPE_BOOL}): the mask
 * {@code [B|1, Hq|1, Nq|1, Nk]} and the block-sparse layout {@code [1|Hq, ⌈Nq/bm⌉, ⌈Nk/bn⌉]} of
 * {@link AttentionExtras}. A separate type from {@link Tensor} because it is not a number type: it
 * takes no part in the attention arithmetic, and {@link DType} stays the set of element types q, k, v
 * may have. Like a tensor it never copies: it views off-heap memory, a {@code byte[]} or any segment,
 * and the native library checks its shape and strides when it is used.
 */
public final class Mask {
    private final MemorySegment segment;
    private final long[] shape;
    private final long[] strides;
    /** fsig_tensor with data = NULL, as for {@link Tensor#descriptor}. */
    final MemorySegment descriptor;
    private final MemorySegment descriptorOwner;

    private Mask(MemorySegment segment, long[] shape, long[] strides) {
        this.segment = segment;
        this.shape = shape;
        this.strides = strides;
        NativeLibrary.load();
        MemorySegment d = Arena.ofAuto().allocate(fsig_tensor.layout());
        fsig_tensor.data(d, MemorySegment.NULL);
        fsig_tensor.capacity_bytes(d, segment.byteSize());
        fsig_tensor.dtype(d, FlashSigNative.FSIG_DTYPE_BOOL());
        fsig_tensor.device_type(d, FlashSigNative.FSIG_DEVICE_CPU());
        fsig_tensor.device_index(d, 0);
        fsig_tensor.ndim(d, shape.length);
        for (int i = 0; i < shape.length; i++) {
            fsig_tensor.shape(d, i, shape[i]);
            fsig_tensor.strides(d, i, strides[i]);
        }
        this.descriptorOwner = d;
        this.descriptor = MemorySegment.ofAddress(d.address()).reinterpret(d.byteSize());
    }

    /** All-false (zero), contiguous, off-heap, owned by {@code arena}. */
    public static Mask allocate(Arena arena, long... shape) {
        Objects.requireNonNull(arena, "arena");
        long[] s = checkShape(shape);
        MemorySegment seg = arena.allocate(Math.max(count(s), 1), 64);
        seg.fill((byte) 0);
        return new Mask(seg, s, Tensor.contiguousStrides(s));
    }

    /** A contiguous view of {@code data} (nonzero = true), zero-copy: writes go to the array. */
    public static Mask of(byte[] data, long... shape) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        long[] s = checkShape(shape);
        if (count(s) != data.length)
            throw new FlashSigException(INVALID_SHAPE, "data has " + data.length + " elements but shape "
                    + Arrays.toString(s) + " needs " + count(s));
        return new Mask(MemorySegment.ofArray(data), s, Tensor.contiguousStrides(s));
    }

    /** A copy of {@code data} (row-major) in a new byte[]. */
    public static Mask of(boolean[] data, long... shape) {
        if (data == null) throw new FlashSigException(NULL_ARGUMENT, "data is null");
        byte[] b = new byte[data.length];
        for (int i = 0; i < data.length; i++) b[i] = data[i] ? (byte) 1 : 0;
        return of(b, shape);
    }

    /** A view of any host segment, zero-copy. Strides are in elements (bytes). */
    public static Mask wrap(MemorySegment segment, long[] shape, long[] strides) {
        if (segment == null) throw new FlashSigException(NULL_ARGUMENT, "segment is null");
        long[] s = checkShape(shape);
        if (strides == null) throw new FlashSigException(NULL_ARGUMENT, "strides is null");
        if (strides.length != s.length)
            throw new FlashSigException(INVALID_SHAPE, "strides has " + strides.length + " entries but shape has "
                    + s.length);
        return new Mask(segment, s, strides.clone());
    }

    public MemorySegment segment() {
        return segment;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long[] strides() {
        return strides.clone();
    }

    public boolean get(long... index) {
        return segment.get(ValueLayout.JAVA_BYTE, offsetOf(index)) != 0;
    }

    public void set(boolean value, long... index) {
        segment.set(ValueLayout.JAVA_BYTE, offsetOf(index), value ? (byte) 1 : 0);
    }

    @Override
    public String toString() {
        return "Mask[" + Arrays.toString(shape) + " strides " + Arrays.toString(strides)
                + (segment.isNative() ? ", off-heap" : ", heap") + "]";
    }

    private long offsetOf(long[] index) {
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

    private static long[] checkShape(long[] shape) {
        if (shape == null) throw new FlashSigException(NULL_ARGUMENT, "shape is null");
        if (shape.length < 1 || shape.length > 4)
            throw new FlashSigException(INVALID_SHAPE, "rank is " + shape.length
                    + " but a mask has 1 to 4 dimensions (4 for a mask, 3 for a block layout)");
        for (long s : shape)
            if (s < 0) throw new FlashSigException(INVALID_SHAPE, "shape " + Arrays.toString(shape)
                    + " has a negative dimension");
        return shape.clone();
    }

    private static long count(long[] shape) {
        long n = 1;
        try {
            for (long s : shape) n = Math.multiplyExact(n, s);
        } catch (ArithmeticException e) {
            throw new FlashSigException(INVALID_SHAPE, "shape " + Arrays.toString(shape) + " has more than 2^63 elements");
        }
        return n;
    }
}
