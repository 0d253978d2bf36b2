package io.flashsig;

import io.flashsig.FlashSigException.Status;
import io.flashsig.ffi.FlashSigNative;
import io.flashsig.ffi.fsig_cuda_device_info;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;
import java.util.function.LongSupplier;

/**
 * CUDA memory, copies, streams and synchronisation for Java programs, which have no CUDA runtime of
 * their own: the device half of FlashSig's Java API. Everything here goes through the C ABI's
 * {@code fsig_cuda_*} functions, so it works without any other CUDA binding on the class path.
 *
 * <pre>{@code
 * Device gpu = Device.cuda(0);
 * try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(gpu)) {
 *     Tensor q = Cuda.allocate(arena, DType.BF16, gpu, B, N, H, d);   // freed when the arena closes
 *     ...
 *     Cuda.copy(hostQ, q, stream);                                     // host -> device
 *     FlashSig.forward(spec, AttentionExtras.none().stream(stream), q, k, v, out, lse);
 *     Cuda.copy(out, hostOut, stream);                                 // device -> host
 *     stream.synchronize();                                            // asynchronous errors surface here
 * }
 * }</pre>
 *
 * <p>A device tensor's {@link Tensor#segment()} holds a device address: never read or write it from
 * Java (element access on a CUDA tensor is refused). Device memory of another framework is wrapped with
 * {@link Tensor#wrap(MemorySegment, DType, Device, long[], long[])}: the byte size given bounds every
 * access, and the memory must stay allocated until the stream has finished the calls that use it.
 * Masks and block layouts of a CUDA call are device {@link Mask}s, the same way:
 * {@link #allocateMask}, {@link #copy(Mask, Mask, CudaStream)} and
 * {@link Mask#wrap(MemorySegment, Device, long[], long[])}.
 */
public final class Cuda {
    private Cuda() {}

    /**
     * A zero-filled, contiguous tensor in the memory of {@code device} (a CUDA device), freed when
     * {@code arena} closes. The arena's close must come after the last call that uses the tensor has
     * finished on its stream (synchronise first).
     */
    public static Tensor allocate(Arena arena, DType dtype, Device device, long... shape) {
        Objects.requireNonNull(arena, "arena");
        if (dtype == null) throw new FlashSigException(Status.NULL_ARGUMENT, "dtype is null");
        if (device == null) throw new FlashSigException(Status.NULL_ARGUMENT, "device is null");
        if (device.isCpu()) return Tensor.allocate(arena, dtype, shape);
        long[] s = checkDeviceShape(Tensor.checkShape(shape));
        MemorySegment segment = zeroedDeviceMemory(arena, device, Tensor.byteSize(dtype, s));
        return Tensor.wrap(segment, dtype, device, s, Tensor.contiguousStrides(s));
    }

    /**
     * A zero-filled (all-false), contiguous {@link Mask} in the memory of {@code device}, freed when
     * {@code arena} closes — as {@link #allocate(Arena, DType, Device, long...)}, for a mask or block
     * layout of a CUDA call; fill it with {@link #copy(Mask, Mask, CudaStream)}.
     */
    public static Mask allocateMask(Arena arena, Device device, long... shape) {
        Objects.requireNonNull(arena, "arena");
        if (device == null) throw new FlashSigException(Status.NULL_ARGUMENT, "device is null");
        if (device.isCpu()) return Mask.allocate(arena, shape);
        long[] s = checkDeviceShape(Mask.checkShape(shape));
        MemorySegment segment = zeroedDeviceMemory(arena, device, Mask.count(s));
        return Mask.wrap(segment, device, s, Tensor.contiguousStrides(s));
    }

    /**
     * A workspace for the fast CUDA backward of problems like {@code q}'s under {@code spec} (see
     * {@link BackwardWorkspace}): {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor)} bytes on
     * q's device, freed when {@code arena} closes. An empty one (0 bytes, nothing allocated on the device)
     * where the call needs none: a CPU q, a deterministic spec, a linear score. The same as
     * {@link #allocateBackwardWorkspace(Arena, AttentionSpec, Tensor, Tensor)} with {@code dbias} null.
     */
    public static BackwardWorkspace allocateBackwardWorkspace(Arena arena, AttentionSpec spec, Tensor q) {
        return allocateBackwardWorkspace(arena, spec, q, null);
    }

    /**
     * A workspace for CUDA backwards with the bias gradient {@code dbias} of problems like {@code q}'s under
     * {@code spec} ({@code dbias} null: {@link #allocateBackwardWorkspace(Arena, AttentionSpec, Tensor)}):
     * {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)} bytes on q's device, freed when
     * {@code arena} closes — the partial sums of a dbias broadcast over B, Hq or Nq, which needs one. An
     * empty one where the call needs none: a CPU q, a full-shaped dbias {@code [B, Hq, Nq, Nk]}. A call
     * without dbias given it (a non-deterministic spec) takes the fast backward, which needs
     * {@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor)} bytes and fails with
     * {@link Status#BUFFER_TOO_SMALL} on fewer: for both kinds of call allocate the larger of the two sizes
     * ({@link #allocateBackwardWorkspace(Arena, Device, long)}).
     */
    public static BackwardWorkspace allocateBackwardWorkspace(Arena arena, AttentionSpec spec, Tensor q,
                                                              Tensor dbias) {
        Objects.requireNonNull(arena, "arena");
        long bytes = FlashSig.backwardWorkspaceBytes(spec, q, dbias);
        return allocateBackwardWorkspace(arena, q.device(), bytes);
    }

    /**
     * A workspace of {@code bytes} on {@code device}, freed when {@code arena} closes: one sized for the
     * largest problem ({@link FlashSig#backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)}) serves every
     * smaller one. The CPU needs none: {@link Device#CPU} (or {@code bytes} 0) gives an empty workspace,
     * which every call accepts and ignores. Its content is undefined (each call overwrites it).
     */
    public static BackwardWorkspace allocateBackwardWorkspace(Arena arena, Device device, long bytes) {
        Objects.requireNonNull(arena, "arena");
        if (device == null) throw new FlashSigException(Status.NULL_ARGUMENT, "device is null");
        if (bytes < 0) throw new FlashSigException(Status.INVALID_PARAMS, "bytes is " + bytes + " but must be >= 0");
        MemorySegment params = BackwardWorkspace.newParams(arena); // first: a closed arena fails before cudaMalloc
        MemorySegment memory = device.isCpu() || bytes == 0 ? MemorySegment.NULL : deviceMemory(arena, device, bytes);
        return BackwardWorkspace.of(device, memory, params);
    }

    /**
     * Copies {@code src} into {@code dst}: the same dtype and shape, both contiguous, at least one of
     * them on a CUDA device, host tensors off-heap (not heap arrays). In stream order ({@code stream}
     * null = the default stream); with ordinary off-heap host memory the call returns once the host side
     * is done with it.
     */
    public static void copy(Tensor src, Tensor dst, CudaStream stream) {
        if (src == null) throw new FlashSigException(Status.NULL_ARGUMENT, "src is null");
        if (dst == null) throw new FlashSigException(Status.NULL_ARGUMENT, "dst is null");
        if (src.dtype() != dst.dtype())
            throw new FlashSigException(Status.INVALID_DTYPE, "src is " + src.dtype() + " but dst is " + dst.dtype());
        copy("tensor", new End(src.segment(), src.device(), src.shape(), src.isContiguous()),
                new End(dst.segment(), dst.device(), dst.shape(), dst.isContiguous()),
                () -> Tensor.byteSize(src.dtype(), src.shape()), stream);
    }

    /**
     * Copies the mask {@code src} into {@code dst}, with the rules of
     * {@link #copy(Tensor, Tensor, CudaStream)}: the same shape, both contiguous, at least one of them on
     * a CUDA device, a host mask off-heap (not a {@code byte[]}: copy one into {@link Mask#allocate}
     * first); in stream order.
     */
    public static void copy(Mask src, Mask dst, CudaStream stream) {
        if (src == null) throw new FlashSigException(Status.NULL_ARGUMENT, "src is null");
        if (dst == null) throw new FlashSigException(Status.NULL_ARGUMENT, "dst is null");
        copy("mask", new End(src.segment(), src.device(), src.shape(), src.isContiguous()),
                new End(dst.segment(), dst.device(), dst.shape(), dst.isContiguous()),
                () -> Mask.count(src.shape()), stream);
    }

    /** One end of a copy: the memory of a tensor or mask, as the checks of copy see it. */
    private record End(MemorySegment segment, Device device, long[] shape, boolean contiguous) {}

    /** The checks and the copy shared by tensors and masks ({@code what}); {@code size}: src's bytes. */
    private static void copy(String what, End src, End dst, LongSupplier size, CudaStream stream) {
        if (!Arrays.equals(src.shape(), dst.shape()))
            throw new FlashSigException(Status.INVALID_SHAPE, "src has shape " + Arrays.toString(src.shape())
                    + " but dst has " + Arrays.toString(dst.shape()));
        if (!src.contiguous() || !dst.contiguous())
            throw new FlashSigException(Status.INVALID_STRIDE, (src.contiguous() ? "dst" : "src")
                    + " is not contiguous: copies take whole contiguous " + what + "s");
        if (src.device().isCpu() && dst.device().isCpu())
            throw new FlashSigException(Status.INVALID_DEVICE, "src and dst are both host " + what
                    + "s: use MemorySegment.copy");
        if (!src.device().isCpu() && !dst.device().isCpu() && src.device().index() != dst.device().index())
            throw new FlashSigException(Status.INVALID_DEVICE, "src is on " + src.device() + " but dst on "
                    + dst.device() + ": copies between devices are not supported");
        for (End e : new End[] {src, dst}) {
            String name = e == src ? "src" : "dst";
            FlashSig.usableSegment(e.segment(), name);
            if (e.device().isCpu() && !e.segment().isNative())
                throw new FlashSigException(Status.INVALID_DEVICE, name + " is a heap " + what
                        + ": host ends of a device copy must be off-heap (Arena) memory");
        }
        Device device = src.device().isCpu() ? dst.device() : src.device();
        if (stream != null && !stream.device().equals(device))
            throw new FlashSigException(Status.INVALID_DEVICE, "stream is on " + stream.device() + " but the copy on "
                    + device);
        long bytes = size.getAsLong();
        if (bytes > src.segment().byteSize() || bytes > dst.segment().byteSize())
            throw new FlashSigException(Status.BUFFER_TOO_SMALL, (bytes > src.segment().byteSize() ? "src" : "dst")
                    + "'s segment is smaller than its " + bytes + " bytes");
        NativeLibrary.load();
        int status = FlashSigNative.fsig_cuda_memcpy(device.index(), dst.segment(), src.segment(), bytes,
                stream == null ? MemorySegment.NULL : stream.handle());
        if (status != 0) throw FlashSig.nativeError(status);
    }

    /** Device memory of 0 bytes does not exist: every dimension of a device allocation is >= 1. */
    private static long[] checkDeviceShape(long[] s) {
        for (long n : s)
            if (n < 1) throw new FlashSigException(Status.INVALID_SHAPE, "shape " + Arrays.toString(s)
                    + " has a dimension < 1");
        return s;
    }

    /** {@code bytes} of memory on {@code device} (CUDA), uninitialised, freed when {@code arena} closes. */
    private static MemorySegment deviceMemory(Arena arena, Device device, long bytes) {
        NativeLibrary.load();
        int ordinal = device.index();
        MemorySegment address;
        try (Arena tmp = Arena.ofConfined()) {
            MemorySegment out = tmp.allocate(ValueLayout.ADDRESS);
            int status = FlashSigNative.fsig_cuda_malloc(ordinal, bytes, out);
            if (status != 0) throw FlashSig.nativeError(status);
            address = out.get(ValueLayout.ADDRESS, 0);
        }
        // the arena owns the allocation: its close frees it (a failed free is reported to nobody, as
        // with any close-time cleanup; fsig_cuda_synchronize reports the device's errors)
        return address.reinterpret(bytes, arena, seg -> FlashSigNative.fsig_cuda_free(ordinal, seg));
    }

    /** {@code bytes} of zeroed memory on {@code device} (CUDA), freed when {@code arena} closes. */
    private static MemorySegment zeroedDeviceMemory(Arena arena, Device device, long bytes) {
        MemorySegment segment = deviceMemory(arena, device, bytes);
        int ordinal = device.index();
        try (Arena tmp = Arena.ofConfined()) {
            // zero it, as Tensor.allocate does on the host: a host buffer of zeros copied over
            MemorySegment zeros = tmp.allocate(Math.min(bytes, 1 << 20));
            for (long off = 0; off < bytes; off += zeros.byteSize()) {
                long n = Math.min(zeros.byteSize(), bytes - off);
                int status = FlashSigNative.fsig_cuda_memcpy(ordinal, MemorySegment.ofAddress(segment.address() + off),
                        zeros, n, MemorySegment.NULL);
                if (status != 0) throw FlashSig.nativeError(status);
            }
            // The copies from pageable memory return once staged, on the legacy default stream, which the
            // non-blocking streams (CudaStream) do not wait for: a late chunk of zeros could land over
            // data that a later copy or kernel on such a stream wrote. Wait for them here.
            int status = FlashSigNative.fsig_cuda_synchronize(ordinal, MemorySegment.NULL);
            if (status != 0) throw FlashSig.nativeError(status);
        }
        return segment;
    }

    /**
     * What one CUDA device is and what runs on it ({@link FlashSig#capabilities()} lists what the build has).
     *
     * @param name                 the device's name
     * @param computeCapability    major × 10 + minor: 80 (A100), 86/89 (A10, L4, L40S, RTX), 90 (H100/H200)
     * @param multiprocessors      streaming multiprocessors
     * @param sharedMemoryPerBlock bytes a kernel may take per block (the opt-in limit; the environment variable
     *                             {@code FSIG_CUDA_SMEM_LIMIT_KIB} caps it)
     * @param memoryBytes          global memory
     * @param forwardMaxHeadDim    every call (softmax and pointwise scores, masks and positions included) with a
     *                             head dim that is a multiple of 8 up to this runs forward on this device; larger
     *                             ones are refused
     * @param backwardMaxHeadDim   the same for the backward
     * @param hopperKernels        whether calls take the Hopper (wgmma) kernels here where they apply (a 9.0
     *                             device, sm_90a code in the library, {@code FSIG_CUDA_WGMMA=1} or {@code require})
     */
    public record DeviceInfo(String name, int computeCapability, int multiprocessors, int sharedMemoryPerBlock,
                             long memoryBytes, int forwardMaxHeadDim, int backwardMaxHeadDim, boolean hopperKernels) {
        /** Whether the forward and the backward of head dim {@code d} run on this device (a multiple of 8). */
        public boolean trainsHeadDim(int d) {
            return d > 0 && d % 8 == 0 && d <= forwardMaxHeadDim && d <= backwardMaxHeadDim;
        }
    }

    /**
     * The {@link DeviceInfo} of {@code device}, a CUDA device; a {@link FlashSigException} without CUDA or
     * such a device ({@link Status#NO_DEVICE}, {@link Status#INVALID_DEVICE}).
     */
    public static DeviceInfo deviceInfo(Device device) {
        if (device == null) throw new FlashSigException(Status.NULL_ARGUMENT, "device is null");
        if (device.isCpu())
            throw new FlashSigException(Status.INVALID_DEVICE, "device is " + device + " but must be a CUDA device");
        NativeLibrary.load();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment info = arena.allocate(fsig_cuda_device_info.layout());
            fsig_cuda_device_info.struct_size(info, (int) fsig_cuda_device_info.sizeof());
            int status = FlashSigNative.fsig_cuda_get_device_info(device.index(), info);
            if (status != 0) throw FlashSig.nativeError(status);
            return new DeviceInfo(fsig_cuda_device_info.name(info).getString(0),
                    fsig_cuda_device_info.compute_capability(info), fsig_cuda_device_info.multiprocessors(info),
                    fsig_cuda_device_info.shared_memory_per_block(info), fsig_cuda_device_info.memory_bytes(info),
                    fsig_cuda_device_info.forward_max_head_dim(info), fsig_cuda_device_info.backward_max_head_dim(info),
                    fsig_cuda_device_info.hopper_kernels(info) != 0);
        }
    }

    /**
     * Waits until the work queued on {@code device} (every stream) has finished, and throws a
     * {@link FlashSigException} ({@link Status#CUDA}) for an asynchronous error of that work.
     */
    public static void synchronize(Device device) {
        if (device == null) throw new FlashSigException(Status.NULL_ARGUMENT, "device is null");
        if (device.isCpu()) return; // CPU calls are synchronous
        NativeLibrary.load();
        int status = FlashSigNative.fsig_cuda_synchronize(device.index(), MemorySegment.NULL);
        if (status != 0) throw FlashSig.nativeError(status);
    }
}
