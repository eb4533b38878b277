import CZlib

/// The 64-bit checksum of the wire protocol: payloads, headers, state sections (and, in blocks,
/// `ParameterChecksum`: "are the parameters bitwise identical on every worker").
///
/// It is XXH64 with seed 0 (see `XXH64`). Measured on the development machine (AMD EPYC, one core,
/// release build, 40 MB buffer, `bench codecs --source synthetic`): XXH64 here about 21,000 MB/s, zlib 1.2.13
/// `crc32` about 7,000 MB/s; both clear the 3 GB/s bar, XXH64 is faster and 64 bits wide, so it
/// was chosen (`CodecBenchmark.checksums` repeats the measurement). A checksum
/// detects corruption and bugs; it is not a MAC: authenticity comes from CURVE on the transport.
public enum Checksum {
    /// XXH64 (seed 0) of `bytes`.
    @inlinable
    public static func of(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXH64.hash(bytes)
    }

    /// XXH64 (seed 0) of `bytes`.
    public static func of(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { XXH64.hash($0) }
    }

    /// XXH64 (seed 0) of the little-endian bytes of `values` (a state section, a reduced range).
    /// Equal checksums mean (up to a 2^-64 collision) bitwise-equal values, NaN payloads and the
    /// sign of zero included. The parameter checksum of the protocol is `ParameterChecksum`.
    public static func of(_ values: UnsafeBufferPointer<Float>) -> UInt64 {
        XXH64.hash(UnsafeRawBufferPointer(values))
    }

    /// zlib's CRC-32 of `bytes`, kept for comparison in benchmarks (and for formats that need it).
    public static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt = CZlib.crc32(0, nil, 0)
        var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var left = bytes.count
        // zlib takes a 32-bit length (uInt): feed the buffer in pieces of at most 1 GiB.
        while left > 0, let base = p {
            let n = min(left, 1 << 30)
            crc = CZlib.crc32(crc, base, UInt32(n))
            p = base + n
            left -= n
        }
        return UInt32(truncatingIfNeeded: crc)
    }
}

/// XXH64, the 64-bit xxHash, written from its published specification (Yann Collet,
/// "xxHash fast digest algorithm", xxhash_spec.md, version 0.1.1), usable whole or streamed.
///
/// Hashing a buffer whole (`hash`) and feeding the same bytes to `update` in any pieces give the
/// same value (tested). The input is read as little-endian 64-bit lanes, so the value is the same
/// on every machine.
public struct XXH64: Sendable {
    @usableFromInline static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    @usableFromInline static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    @usableFromInline static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    @usableFromInline static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    @usableFromInline static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    private let seed: UInt64
    private var acc: (UInt64, UInt64, UInt64, UInt64)
    /// Bytes not yet consumed as a full 32-byte stripe (fewer than 32).
    private var pending: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var pendingCount = 0
    private var totalLength: UInt64 = 0

    /// A hasher with the given seed.
    public init(seed: UInt64 = 0) {
        self.seed = seed
        acc = XXH64.initialAccumulators(seed)
    }

    @inline(__always) @usableFromInline
    static func initialAccumulators(_ seed: UInt64) -> (UInt64, UInt64, UInt64, UInt64) {
        (seed &+ prime1 &+ prime2, seed &+ prime2, seed, seed &- prime1)
    }

    @inline(__always) @usableFromInline
    static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    /// The per-lane round of the specification (step 2).
    @inline(__always) @usableFromInline
    static func round(_ acc: UInt64, _ lane: UInt64) -> UInt64 {
        rotl(acc &+ lane &* prime2, 31) &* prime1
    }

    @inline(__always) @usableFromInline
    static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 {
        (acc ^ round(0, v)) &* prime1 &+ prime4
    }

    @inline(__always) @usableFromInline
    static func lane(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// Consumes every full 32-byte stripe of `count` bytes at `p`; returns the bytes consumed.
    @inline(__always) @usableFromInline
    static func stripes(_ p: UnsafeRawPointer, _ count: Int,
                        _ acc: inout (UInt64, UInt64, UInt64, UInt64)) -> Int {
        var (v1, v2, v3, v4) = acc
        var i = 0
        while i &+ 32 <= count {
            v1 = round(v1, lane(p, i))
            v2 = round(v2, lane(p, i &+ 8))
            v3 = round(v3, lane(p, i &+ 16))
            v4 = round(v4, lane(p, i &+ 24))
            i &+= 32
        }
        acc = (v1, v2, v3, v4)
        return i
    }

    /// Steps 3 to 6 of the specification: converge the accumulators, add the length, consume the
    /// last fewer-than-32 bytes, avalanche.
    @inline(__always) @usableFromInline
    static func finish(acc: (UInt64, UInt64, UInt64, UInt64), seed: UInt64, total: UInt64,
                       tail p: UnsafeRawPointer?, tailCount: Int) -> UInt64 {
        var h: UInt64
        if total >= 32 {
            h = rotl(acc.0, 1) &+ rotl(acc.1, 7) &+ rotl(acc.2, 12) &+ rotl(acc.3, 18)
            h = merge(h, acc.0)
            h = merge(h, acc.1)
            h = merge(h, acc.2)
            h = merge(h, acc.3)
        } else {
            h = seed &+ prime5
        }
        h &+= total
        var i = 0
        if let p {
            while i &+ 8 <= tailCount {
                h ^= round(0, lane(p, i))
                h = rotl(h, 27) &* prime1 &+ prime4
                i &+= 8
            }
            if i &+ 4 <= tailCount {
                let w = UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
                h ^= w &* prime1
                h = rotl(h, 23) &* prime2 &+ prime3
                i &+= 4
            }
            while i < tailCount {
                h ^= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) &* prime5
                h = rotl(h, 11) &* prime1
                i &+= 1
            }
        }
        h ^= h >> 33
        h &*= prime2
        h ^= h >> 29
        h &*= prime3
        h ^= h >> 32
        return h
    }

    /// XXH64 of `bytes` in one pass.
    @inlinable
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        guard let p = bytes.baseAddress, bytes.count > 0 else {
            return finish(acc: initialAccumulators(seed), seed: seed, total: 0, tail: nil, tailCount: 0)
        }
        var acc = initialAccumulators(seed)
        let done = stripes(p, bytes.count, &acc)
        return finish(acc: acc, seed: seed, total: UInt64(bytes.count),
                      tail: p + done, tailCount: bytes.count - done)
    }

    /// XXH64 of `bytes` in one pass.
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// Feeds more bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress, bytes.count > 0 else { return }
        var count = bytes.count
        totalLength &+= UInt64(count)
        if pendingCount > 0 {
            let take = min(32 - pendingCount, count)
            let offset = pendingCount
            withUnsafeMutableBytes(of: &pending) { buf in
                buf.baseAddress!.advanced(by: offset).copyMemory(from: p, byteCount: take)
            }
            pendingCount += take
            p += take
            count -= take
            if pendingCount < 32 { return }
            withUnsafeBytes(of: pending) { buf in _ = XXH64.stripes(buf.baseAddress!, 32, &acc) }
            pendingCount = 0
        }
        let done = XXH64.stripes(p, count, &acc)
        let rest = count - done
        if rest > 0 {
            withUnsafeMutableBytes(of: &pending) { buf in
                buf.baseAddress!.copyMemory(from: p + done, byteCount: rest)
            }
            pendingCount = rest
        }
    }

    /// Feeds more bytes.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The hash of everything fed so far (the hasher may be fed further afterwards).
    public func finalize() -> UInt64 {
        withUnsafeBytes(of: pending) { buf in
            XXH64.finish(acc: acc, seed: seed, total: totalLength,
                         tail: buf.baseAddress!, tailCount: pendingCount)
        }
    }
}
