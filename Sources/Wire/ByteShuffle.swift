/// The byte-shuffle filter (as in Blosc's "shuffle"): a block of `count` elements of `size` bytes
/// is rewritten as all first bytes, then all second bytes, and so on.
///
/// Float gradients compress badly byte by byte (about 1.0-1.1x with LZ4) because sign/exponent and
/// random mantissa bytes alternate; grouped, the exponent bytes form long, repetitive runs.
/// The filter is a permutation of bytes, so it is lossless.
enum ByteShuffle {
    /// `dst[j * count + i] = src[i * 4 + j]` for 4-byte elements.
    @inline(__always)
    static func shuffle4(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, count: Int) {
        let s = src.assumingMemoryBound(to: UInt8.self)
        let d0 = dst.assumingMemoryBound(to: UInt8.self)
        let d1 = d0 + count, d2 = d1 + count, d3 = d2 + count
        var i = 0
        while i < count {
            let p = s + 4 &* i
            d0[i] = p[0]
            d1[i] = p[1]
            d2[i] = p[2]
            d3[i] = p[3]
            i &+= 1
        }
    }

    /// The inverse of `shuffle4`.
    @inline(__always)
    static func unshuffle4(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, count: Int) {
        let s0 = src.assumingMemoryBound(to: UInt8.self)
        let s1 = s0 + count, s2 = s1 + count, s3 = s2 + count
        let d = dst.assumingMemoryBound(to: UInt8.self)
        var i = 0
        while i < count {
            let p = d + 4 &* i
            p[0] = s0[i]
            p[1] = s1[i]
            p[2] = s2[i]
            p[3] = s3[i]
            i &+= 1
        }
    }
}
