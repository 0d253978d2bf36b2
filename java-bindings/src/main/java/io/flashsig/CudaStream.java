package io.flashsig;

import io.flashsig.FlashSigException.Status;
import io.flashsig.ffi.FlashSigNative;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * A CUDA stream: FlashSig's own ({@link #create}, destroyed by {@link #close}) or another framework's
 * ({@link #wrap}, never destroyed here). Calls given a stream (through
 * {@link AttentionExtras#stream(CudaStream)} or {@link Cuda#copy}) are queued on it and return at once;
 * {@link #synchronize()} waits and reports asynchronous errors.
 */
public final class CudaStream implements AutoCloseable {
    private final Device device;
    private final MemorySegment handle;
    private final boolean owned;
    private volatile boolean closed;

    private CudaStream(Device device, MemorySegment handle, boolean owned) {
        this.device = device;
        this.handle = handle;
        this.owned = owned;
    }

    /** A new non-blocking stream on {@code device}. */
    public static CudaStream create(Device device) {
        requireCuda(device);
        NativeLibrary.load();
        try (Arena tmp = Arena.ofConfined()) {
            MemorySegment out = tmp.allocate(ValueLayout.ADDRESS);
            int status = FlashSigNative.fsig_cuda_stream_create(device.index(), out);
            if (status != 0) throw FlashSig.nativeError(status);
            return new CudaStream(device, out.get(ValueLayout.ADDRESS, 0), true);
        }
    }

    /** Another framework's stream (its {@code cudaStream_t} as an address); {@link #close} leaves it alone. */
    public static CudaStream wrap(Device device, long cudaStream) {
        requireCuda(device);
        if (cudaStream == 0)
            throw new FlashSigException(Status.NULL_ARGUMENT, "cudaStream is 0: pass null for the default stream");
        return new CudaStream(device, MemorySegment.ofAddress(cudaStream), false);
    }

    public Device device() {
        return device;
    }

    /** The {@code cudaStream_t}. */
    public MemorySegment handle() {
        if (closed) throw new FlashSigException(Status.INVALID_PARAMS, "stream is closed");
        return handle;
    }

    /** Waits for the stream's work; throws {@link Status#CUDA} for an asynchronous error of it. */
    public void synchronize() {
        int status = FlashSigNative.fsig_cuda_synchronize(device.index(), handle());
        if (status != 0) throw FlashSig.nativeError(status);
    }

    /** Destroys a stream made by {@link #create} (after its queued work); a wrapped one is left alone. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        if (!owned) return;
        int status = FlashSigNative.fsig_cuda_stream_destroy(device.index(), handle);
        if (status != 0) throw FlashSig.nativeError(status);
    }

    @Override
    public String toString() {
        return "CudaStream[" + device + ", 0x" + Long.toHexString(handle.address()) + (owned ? "" : ", wrapped")
                + (closed ? ", closed" : "") + "]";
    }

    private static void requireCuda(Device device) {
        if (device == null) throw new FlashSigException(Status.NULL_ARGUMENT, "device is null");
        if (device.isCpu()) throw new FlashSigException(Status.INVALID_DEVICE, "a CUDA stream needs a CUDA device, not cpu");
    }
}
