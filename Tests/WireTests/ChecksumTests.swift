import Testing
@testable import Wire

@Suite("Checksum")
struct ChecksumTests {
    /// Known answers from the xxHash reference implementation (python-xxhash 3.x, XXH64).
    @Test("XXH64 matches the reference implementation")
    func knownAnswers() {
        let seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        let cases: [([UInt8], UInt64, UInt64)] = [
            ([], 0xEF46_DB37_51D8_E999, 0xC434_9FC9_3C01_0000),
            (Array("a".utf8), 0xD24E_C4F1_A98C_6E5B, 0x9A7C_6D2E_A455_68C9),
            (Array("abc".utf8), 0x44BC_2CF5_AD77_0999, 0x2ED0_F59D_6B43_AC8B),
            (Array("Nobody inspects the spammish repetition".utf8), 0xFBCE_A83C_8A37_8BF1, 0xEB8B_157C_A26C_BF34),
            ((0..<768).map { UInt8($0 % 256) }, 0x8E03_C838_C596_036F, 0x919E_1C78_9D52_2E91),
        ]
        for (input, expected, expectedSeeded) in cases {
            #expect(XXH64.hash(input) == expected, "len \(input.count)")
            #expect(XXH64.hash(input, seed: seed) == expectedSeeded, "len \(input.count) seeded")
        }
    }

    @Test("XXH64 fed in pieces equals XXH64 of the whole, for every split")
    func streaming() {
        var rng = FuzzRNG(seed: 3)
        let data = rng.bytes(300)
        let whole = XXH64.hash(data)
        for split in 0...data.count {
            var h = XXH64()
            h.update(Array(data[..<split]))
            h.update(Array(data[split...]))
            #expect(h.finalize() == whole, "split at \(split)")
        }
        // Byte by byte, and in random pieces.
        var h = XXH64()
        for b in data { h.update([b]) }
        #expect(h.finalize() == whole)
        for _ in 0..<50 {
            var h = XXH64()
            var i = 0
            while i < data.count {
                let n = min(data.count - i, rng.below(70))
                h.update(Array(data[i..<(i + n)]))
                i += n
            }
            #expect(h.finalize() == whole)
        }
    }

    @Test("zlib CRC-32 check value")
    func crc32() {
        let input = Array("123456789".utf8)
        #expect(input.withUnsafeBytes { Checksum.crc32($0) } == 0xCBF4_3926)
    }

    @Test("the parameter checksum sees every bit: -0.0, NaN payloads")
    func parameterChecksum() {
        let a: [Float] = [0, 1, .nan]
        let b: [Float] = [-0.0, 1, .nan]
        let c: [Float] = [0, 1, Float(bitPattern: 0x7FC0_0001)]
        let ha = a.withUnsafeBufferPointer { Checksum.of($0) }
        #expect(ha != b.withUnsafeBufferPointer { Checksum.of($0) })
        #expect(ha != c.withUnsafeBufferPointer { Checksum.of($0) })
        #expect(ha == a.withUnsafeBytes { Checksum.of($0) })
    }

    @Test("a replica digest sees every value bit, name, length and counter, not the counters' order")
    func replicaDigest() {
        let base = StateSnapshot(sections: [.init(name: "params", values: [0, 1, 2]), .init(name: "adam.m", values: [0, 0])],
                                 counters: ["step": 3, "adam.step": 3])
        let d = base.digest
        var reordered = StateSnapshot(sections: base.sections)
        reordered.counters["adam.step"] = 3
        reordered.counters["step"] = 3
        #expect(reordered.digest == d)
        var withMetadata = base
        withMetadata.metadata["created"] = "now"
        #expect(withMetadata.digest == d)
        var variants: [StateSnapshot] = []
        var v = base; v.sections[0].values[0] = -0.0; variants.append(v)
        v = base; v.sections[1].name = "adam.v"; variants.append(v)
        v = base; v.counters["step"] = 4; variants.append(v)
        v = base; v.counters["ema.updates"] = 0; variants.append(v)
        v = base; v.sections.reverse(); variants.append(v)
        // The same values split differently between sections.
        v = base; v.sections[0].values = [0, 1]; v.sections[1].values = [2, 0, 0]; variants.append(v)
        v = base; v.sections[0].name = "param"; v.sections[1].name = "sadam.m"; variants.append(v)
        let digests = variants.map(\.digest)
        #expect(!digests.contains(d))
        #expect(Set(digests).count == variants.count)
    }
}
