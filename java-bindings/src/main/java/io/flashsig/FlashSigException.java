package io.flashsig;

/**
 * The one exception FlashSig throws. {@link #status()} says which rule was broken; the message
 * names the argument and the rule ("q.shape[3] (head_dim) is 300 but the CPU backend supports ...").
 * Whenever it is thrown by an attention call, no output element has been written.
 */
public final class FlashSigException extends RuntimeException {
    /** Mirrors {@code fsig_status} (same codes), plus one Java-only state for unusable segments. */
    public enum Status {
        NULL_ARGUMENT(1),
        INVALID_SHAPE(2),
        INVALID_DTYPE(3),
        INVALID_STRIDE(4),
        INVALID_DEVICE(5),
        BUFFER_TOO_SMALL(6),
        MISALIGNED(7),
        ALIASING(8),
        INVALID_PARAMS(9),
        UNSUPPORTED(10),
        NO_DEVICE(11),
        OUT_OF_MEMORY(12),
        CUDA(13),
        INTERNAL(14),
        /**
         * Java only: a tensor's segment is not usable here (its arena is closed, it is confined to another
         * thread, or it is read-only and passed as an output).
         */
        SEGMENT_NOT_ACCESSIBLE(-1),
        /** Java only: the native library could not be found or loaded. */
        LIBRARY_NOT_LOADED(-2);

        private final int code;

        Status(int code) {
            this.code = code;
        }

        /** The {@code fsig_status} code (negative for the Java-only states). */
        public int code() {
            return code;
        }

        /** The status of a native code; unknown codes map to {@link #INTERNAL}. */
        public static Status of(int code) {
            for (Status s : values()) if (s.code == code) return s;
            return INTERNAL;
        }
    }

    private static final long serialVersionUID = 1L;

    private final Status status;

    public FlashSigException(Status status, String message) {
        super(message);
        this.status = status;
    }

    FlashSigException(Status status, String message, Throwable cause) {
        super(message, cause);
        this.status = status;
    }

    public Status status() {
        return status;
    }
}
