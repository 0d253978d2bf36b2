package io.flashsig;

/** Element type of a {@link Tensor}. Accumulation inside the kernels is always fp32. */
public enum DType {
    /** IEEE binary32. */
    FP32(0, 4),
    /** IEEE binary16. */
    FP16(1, 2),
    /** bfloat16: the upper half of a binary32. */
    BF16(2, 2);

    private final int nativeCode;
    private final int byteSize;

    DType(int nativeCode, int byteSize) {
        this.nativeCode = nativeCode;
        this.byteSize = byteSize;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }

    /** The {@code fsig_dtype} value. */
    public int nativeCode() {
        return nativeCode;
    }

    static DType fromNative(int code) {
        for (DType t : values()) if (t.nativeCode == code) return t;
        throw new IllegalArgumentException("unknown fsig_dtype " + code);
    }

    /** Rounds {@code x} to this type (round to nearest even) and back, as storing it would. */
    public float round(float x) {
        return switch (this) {
            case FP32 -> x;
            case FP16 -> Float.float16ToFloat(Float.floatToFloat16(x));
            case BF16 -> bf16ToFloat(floatToBf16(x));
        };
    }

    static short floatToBf16(float x) {
        int bits = Float.floatToRawIntBits(x);
        if (Float.isNaN(x)) return (short) ((bits >>> 16) | 0x40); // keep it a (quiet) NaN
        int rounding = 0x7FFF + ((bits >>> 16) & 1);                // nearest, ties to even
        return (short) ((bits + rounding) >>> 16);
    }

    static float bf16ToFloat(short h) {
        return Float.intBitsToFloat((h & 0xFFFF) << 16);
    }
}
