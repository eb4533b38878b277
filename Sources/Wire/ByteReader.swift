/// A bounds-checked little-endian cursor over untrusted bytes.
///
/// Every read checks the remaining length first and throws `WireError.truncated` instead of
/// reading past the end; arithmetic on lengths read from the bytes is overflow-checked.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    /// Names the structure being read, for error messages ("lz4 chunk 3", "top-k header").
    var context: String
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer, context: String) {
        self.bytes = bytes
        self.context = context
    }

    var remaining: Int { bytes.count - offset }

    mutating func u32() throws(WireError) -> UInt32 {
        try need(4)
        defer { offset += 4 }
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    mutating func u64() throws(WireError) -> UInt64 {
        try need(8)
        defer { offset += 8 }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// The next `count` bytes, without copying.
    mutating func take(_ count: UInt64) throws(WireError) -> UnsafeRawBufferPointer {
        guard count <= UInt64(remaining) else {
            throw .truncated(context: context, needed: count, available: remaining)
        }
        let n = Int(count)
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    /// An unsigned LEB128 varint of at most 10 bytes whose value fits in 64 bits.
    @inline(__always)
    mutating func varint() throws(WireError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < bytes.count else {
                throw .truncated(context: context, needed: 1, available: 0)
            }
            let byte = bytes[offset]
            offset += 1
            let low = UInt64(byte & 0x7F)
            if shift == 63 && low > 1 {
                throw .corruptPayload(codec: context, reason: "varint overflows 64 bits")
            }
            value |= low << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 {
                throw .corruptPayload(codec: context, reason: "varint longer than 10 bytes")
            }
        }
    }

    /// Throws unless every byte has been read.
    func expectEnd() throws(WireError) {
        guard remaining == 0 else { throw .trailingBytes(context: context, count: remaining) }
    }

    private func need(_ n: Int) throws(WireError) {
        guard remaining >= n else {
            throw .truncated(context: context, needed: UInt64(n), available: remaining)
        }
    }
}

/// Helpers for writing into a reusable `[UInt8]` output buffer.
enum OutputBuffer {
    /// Makes `out.count == n` keeping its storage: bytes kept from the previous use are not
    /// cleared (the caller overwrites them), only growth past the old count is zero-filled.
    /// Once the buffer has reached its working size, this allocates nothing.
    ///
    /// An empty buffer is allocated without the zero fill: every encoder writes each byte it
    /// keeps (0 ..< its final size) before it shrinks the buffer to that size, so the fill was a
    /// wasted pass over every fresh message (2% of a loopback step's CPU, `perf`).
    @inline(__always)
    static func resize(_ out: inout [UInt8], to n: Int) {
        if out.isEmpty && n > 0 {
            out = [UInt8](unsafeUninitializedCapacity: n) { _, initialized in initialized = n }
        } else if out.count < n {
            out.append(contentsOf: repeatElement(0, count: n - out.count))
        } else if out.count > n {
            out.removeLast(out.count - n)
        }
    }

    /// Appends an unsigned LEB128 varint at `p`; returns the bytes written (at most 10).
    @inline(__always)
    static func putVarint(_ value: UInt64, at p: UnsafeMutablePointer<UInt8>) -> Int {
        var v = value
        var i = 0
        while v >= 0x80 {
            p[i] = UInt8(truncatingIfNeeded: v) | 0x80
            v >>= 7
            i += 1
        }
        p[i] = UInt8(truncatingIfNeeded: v)
        return i + 1
    }
}

/// `[UInt8].withUnsafeBytes` whose closure throws `WireError` (the standard one is untyped).
@inline(__always)
func withBytes<T, R>(of array: [T], _ body: (UnsafeRawBufferPointer) throws(WireError) -> R) throws(WireError) -> R {
    let result: Result<R, WireError> = array.withUnsafeBytes { b in
        Result { () throws(WireError) in try body(b) }
    }
    return try result.get()
}
