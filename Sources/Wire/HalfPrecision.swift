/// Conversions between Float32 and the two 16-bit float formats, by bit manipulation, written
/// from the format definitions (IEEE 754-2008 binary16; bfloat16 = the top half of a binary32).
///
/// Both round to nearest, ties to even, and keep NaN a NaN (quiet, sign and top payload bits
/// kept). Contract, for finite x in each format's normal range:
/// - bfloat16 (8 significant bits): |decode(encode(x)) − x| ≤ 2^-8 · |x|; values beyond the
///   largest bfloat16 round to ±infinity exactly as the rounding rule says.
/// - binary16 (11 significant bits): |decode(encode(x)) − x| ≤ 2^-11 · |x| for
///   2^-14 ≤ |x| ≤ 65504; |x| ≥ 65520 becomes ±infinity; below 2^-14, subnormals with absolute
///   error ≤ 2^-25; at or below 2^-25, ±0.
/// The naive reference is Swift's `Float16` conversion; tests check the two agree.
public enum HalfPrecision {
    /// The bfloat16 bits nearest to `x` (ties to even).
    @inline(__always)
    public static func bfloat16Bits(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if u & 0x7FFF_FFFF > 0x7F80_0000 {
            // NaN: truncating could leave an all-zero significand (infinity); force the quiet bit.
            return UInt16(truncatingIfNeeded: u >> 16) | 0x0040
        }
        // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; a carry into
        // the exponent is the correct rounding up (to infinity past the largest finite value).
        return UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
    }

    /// The Float32 value of bfloat16 bits (exact).
    @inline(__always)
    public static func float(bfloat16Bits h: UInt16) -> Float {
        Float(bitPattern: UInt32(h) << 16)
    }

    /// The binary16 bits nearest to `x` (ties to even).
    @inline(__always)
    public static func binary16Bits(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        let sign = UInt16(truncatingIfNeeded: u >> 16) & 0x8000
        let a = u & 0x7FFF_FFFF
        if a >= 0x3880_0000 && a < 0x477F_F000 {
            // Normal binary16 (2^-14 ≤ |x| < 65520): rebias the exponent (127 → 15, i.e. subtract
            // 112 << 23) and round the 13 dropped significand bits to nearest even.
            let r = a &- 0x3800_0000
            return sign | UInt16(truncatingIfNeeded: (r &+ 0x0FFF &+ ((r >> 13) & 1)) >> 13)
        }
        if a < 0x3880_0000 {
            // Subnormal or zero: adding 0.5 puts the FPU's rounding point at 2^-24, the binary16
            // subnormal step, so the low bits of the sum are |x| / 2^-24 rounded to nearest even
            // (1024 = 0x400 is the smallest normal, reached by rounding up: also correct).
            let s = Float(bitPattern: a) + 0.5
            return sign | UInt16(truncatingIfNeeded: s.bitPattern &- 0x3F00_0000)
        }
        if a > 0x7F80_0000 {
            // NaN: keep the top payload bits, set the quiet bit.
            return sign | 0x7E00 | UInt16(truncatingIfNeeded: (a >> 13) & 0x03FF)
        }
        return sign | 0x7C00  // |x| ≥ 65520 or infinity
    }

    /// The Float32 value of binary16 bits (exact).
    @inline(__always)
    public static func float(binary16Bits h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let significand = UInt32(h & 0x03FF)
        if exponent == 0 {
            // Subnormal or zero: significand · 2^-24, exact in Float32.
            return Float(bitPattern: sign | (Float(significand) * 0x1p-24).bitPattern)
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | significand << 13)
        }
        return Float(bitPattern: sign | (exponent + 112) << 23 | significand << 13)
    }
}
