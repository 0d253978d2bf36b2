package io.flashsig;

/**
 * Where a tensor's memory lives: the host ({@link #CPU}) or a CUDA device by ordinal.
 *
 * @param type  CPU or CUDA
 * @param index the CUDA ordinal; 0 for the CPU
 */
public record Device(Type type, int index) {
    /** Kinds of device, mirroring {@code fsig_device_type}. */
    public enum Type {
        CPU(0), CUDA(1);

        private final int nativeCode;

        Type(int nativeCode) {
            this.nativeCode = nativeCode;
        }

        /** The {@code fsig_device_type} value. */
        public int nativeCode() {
            return nativeCode;
        }
    }

    /** Host memory. */
    public static final Device CPU = new Device(Type.CPU, 0);

    public Device {
        if (type == null) throw new FlashSigException(FlashSigException.Status.NULL_ARGUMENT, "device type is null");
        if (index < 0 || (type == Type.CPU && index != 0))
            throw new FlashSigException(FlashSigException.Status.INVALID_DEVICE,
                    "device index " + index + " is invalid (0 for the CPU, a CUDA ordinal >= 0)");
    }

    /** The CUDA device with this ordinal. */
    public static Device cuda(int ordinal) {
        return new Device(Type.CUDA, ordinal);
    }

    public boolean isCpu() {
        return type == Type.CPU;
    }

    @Override
    public String toString() {
        return type == Type.CPU ? "cpu" : "cuda:" + index;
    }
}
