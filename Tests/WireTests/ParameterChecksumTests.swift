import Dispatch
import Testing
@testable import Wire

/// The parameter checksum of cluster protocol 2 (XXH64 of per-block XXH64s) and the block-hash
/// cache that lets the optimiser take it while it writes.
@Suite("ParameterChecksum")
struct ParameterChecksumTests {
    static func values(_ n: Int) -> [Float] { (0..<n).map { Float($0) * 0.25 - 100 } }

    /// Known answers from the Python worker's own implementation (scripts/python-worker/worker.py,
    /// `parameter_checksum`), so the two sides of the protocol agree on the definition.
    @Test("matches the Python worker's implementation")
    func knownAnswers() {
        let cases: [(Int, UInt64)] = [(0, 0xEF46_DB37_51D8_E999), (1, 0xE0E7_C791_FE12_71F0), (8191, 0x4C0F_4583_68D3_EDDB),
                                      (8192, 0x2A49_CC27_0BFB_045B), (8193, 0xE09F_10AE_ABF2_944F), (20000, 0xC840_C171_05B3_811D)]
        for (n, expected) in cases {
            #expect(ParameterChecksum.of(Self.values(n)) == expected, "n = \(n)")
        }
    }

    @Test("is XXH64 over the little-endian block hashes, blocks of 8192 values, the last shorter")
    func definition() {
        let v = Self.values(3 * 8192 + 5)
        var outer = XXH64()
        for b in 0..<4 {
            let r = (b * 8192)..<min((b + 1) * 8192, v.count)
            let h = v[r].withUnsafeBytes { XXH64.hash($0) }
            withUnsafeBytes(of: h.littleEndian) { outer.update($0) }
        }
        #expect(ParameterChecksum.of(v) == outer.finalize())
        #expect(ParameterChecksum.blockCount(v.count) == 4 && ParameterChecksum.blockRange(3, count: v.count) == 24576..<24581)
    }

    @Test("sees one flipped bit in any block: -0, NaN payloads, the last value")
    func everyBit() {
        let v = Self.values(2 * 8192 + 100)
        let base = ParameterChecksum.of(v)
        for i in [0, 8191, 8192, 12_345, v.count - 1] {
            for bit in [0, 22, 31] {
                var w = v
                w[i] = Float(bitPattern: w[i].bitPattern ^ (1 << UInt32(bit)))
                #expect(ParameterChecksum.of(w) != base, "element \(i), bit \(bit)")
            }
        }
        var z = [Float](repeating: 0, count: 9000), nz = z
        nz[8999] = -0.0
        #expect(ParameterChecksum.of(z) != ParameterChecksum.of(nz))
        z[0] = Float(nan: 1, signaling: false); nz = z; nz[0] = Float(nan: 2, signaling: false)
        #expect(ParameterChecksum.of(z) != ParameterChecksum.of(nz))
    }

    /// Random writes, each announced by `invalidate`, pieces recorded in any order and size: the
    /// cached checksum always equals the whole computation.
    @Test("the cache equals the whole computation after any writes and records")
    func cacheFollowsWrites() {
        var rng = SplitMix(seed: 11)
        for n in [0, 1, 8192, 8193, 40_000] {
            var v = Self.values(n)
            let cache = ParameterChecksumCache(count: n)
            for _ in 0..<60 {
                if n > 0 {
                    let a = rng.below(n), b = a + 1 + rng.below(min(n - a, 20_000))
                    cache.invalidate(a..<b)
                    for i in a..<b where rng.below(3) == 0 { v[i] = Float(rng.below(1000)) }
                    // Record some pieces of the written range (never a stale one).
                    var o = a
                    while o < b {
                        let e = min(b, o + 1 + rng.below(12_000))
                        if rng.below(2) == 0 { v.withUnsafeBufferPointer { cache.record($0.baseAddress!, range: o..<e) } }
                        o = e
                    }
                }
                #expect(v.withUnsafeBufferPointer { cache.checksum($0.baseAddress!) } == ParameterChecksum.of(v), "n = \(n)")
            }
        }
    }

    @Test("record keeps only the blocks wholly inside its range; pieces on two threads")
    func recordWholeBlocksOnly() {
        let n = 5 * 8192 + 17
        let v = Self.values(n)
        let cache = ParameterChecksumCache(count: n)
        v.withUnsafeBufferPointer { cache.record($0.baseAddress!, range: 100..<(3 * 8192 + 1)) }
        #expect(cache.recordedBlocks == 2)   // blocks 1 and 2; 0 and 3 are only partly inside
        cache.invalidateAll()
        #expect(cache.recordedBlocks == 0)
        // Two threads record disjoint halves split inside block 2: every other block is recorded.
        v.withUnsafeBufferPointer { p in
            let split = 2 * 8192 + 4000
            nonisolated(unsafe) let base = p.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 2) { t in
                cache.record(base, range: t == 0 ? 0..<split : split..<n)
            }
            #expect(cache.recordedBlocks == 5)
            #expect(cache.checksum(p.baseAddress!) == ParameterChecksum.of(v))
        }
        // A write that skips invalidate is not seen: the owner must announce every write.
        var w = v
        w[10] += 1
        #expect(w.withUnsafeBufferPointer { cache.checksum($0.baseAddress!) } == ParameterChecksum.of(v))
        cache.invalidate(10..<11)
        #expect(w.withUnsafeBufferPointer { cache.checksum($0.baseAddress!) } == ParameterChecksum.of(w))
    }
}

/// A small deterministic generator for the tests above.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
}
