import Testing
@testable import Wire

private func roundTrip(_ codec: any GradientCodec, _ values: [Float]) throws -> [Float] {
    try codec.decode(codec.encode(values), count: values.count)
}

@Suite("Codecs")
struct CodecTests {
    @Test("lossless codecs are bitwise exact on gradients, specials and awkward sizes",
          arguments: ["raw", "lz4", "shuffle-lz4"])
    func lossless(name: String) throws {
        let codecs = [try CodecRegistry.codec(named: name), LZ4Codec(chunkBytes: 64), ShuffleLZ4Codec(chunkBytes: 4)]
        for codec in codecs {
            #expect(codec.isLossless)
            for n in [0, 1, 2, 3, 15, 16, 17, 1000, 16383, 16384, 16385, 40_000] {
                let g = gaussianGradient(n, seed: UInt64(n))
                #expect(bits(try roundTrip(codec, g)) == bits(g), "\(codec.name) n=\(n)")
            }
            let specials = specialValues + specialValues.reversed() + [Float](repeating: 0, count: 500) + specialValues
            #expect(bits(try roundTrip(codec, specials)) == bits(specials), "\(codec.name) specials")
            for v in specialValues { #expect(bits(try roundTrip(codec, [v])) == bits([v]), "\(codec.name) \(v)") }
        }
    }

    @Test("every codec handles n = 0 and n = 1, and each truncation of those payloads is rejected")
    func tinyBuffers() throws {
        for codec in allCodecs() {
            let empty = codec.encode([])
            #expect(try codec.decode(empty, count: 0) == [], "\(codec.name)")
            for n in 0..<empty.count {
                #expect(wireError { _ = try codec.decode(Array(empty[..<n]), count: 0) } != nil, "\(codec.name) n=0 cut \(n)")
            }
            for v in [Float(1.5), -0.0, .infinity] {
                let one = codec.encode([v])
                #expect(try codec.decode(one, count: 1) == [v], "\(codec.name) \(v)")
                #expect(wireError { _ = try codec.decode(one, count: 0) } != nil)
                #expect(wireError { _ = try codec.decode(one, count: 2) } != nil)
            }
        }
    }

    @Test("shuffle-lz4 compresses gradients better than plain lz4 and raw is exactly 4 bytes per value")
    func ratios() {
        let g = gaussianGradient(200_000)
        let raw = RawCodec().encode(g).count, lz4 = LZ4Codec().encode(g).count, shuffled = ShuffleLZ4Codec().encode(g).count
        #expect(raw == 800_000)
        #expect(shuffled < lz4)
        #expect(HalfPrecisionCodec(format: .bfloat16, compressed: false).encode(g).count == 400_000)
        // Exact zeros (masked or frozen parameters) compress with every LZ4 codec.
        let zeros = [Float](repeating: 0, count: 100_000)
        #expect(LZ4Codec().encode(zeros).count < 4000)
    }

    @Test("lz4 stops trying chunks that never compress, and finds compressible ones again within a probe interval")
    func lz4ProbesAfterStoredRuns() throws {
        let chunk = 1 << 16, perChunk = chunk / 4
        // 40 chunks of noise, then 40 of zeros, then 40 of noise again.
        let noise = gaussianGradient(40 * perChunk, seed: 7)
        let values = noise + [Float](repeating: 0, count: 40 * perChunk) + gaussianGradient(40 * perChunk, seed: 8)
        let bytes = LZ4Codec(chunkBytes: chunk).encode(values)
        #expect(bits(try LZ4Codec().decode(bytes, count: values.count)) == bits(values))
        // The container's chunk words: which chunks were stored.
        var stored: [Bool] = [], at = 12
        while at < bytes.count {
            let word = UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
            stored.append(word & 0x8000_0000 != 0)
            at += 4 + Int(word & 0x7FFF_FFFF)
        }
        #expect(at == bytes.count && stored.count == 120)
        #expect(stored[0..<40].allSatisfy { $0 }, "noise is stored")
        let zerosStored = stored[40..<80].filter { $0 }.count
        #expect(zerosStored <= ChunkedLZ4.probeEvery, "the zeros were found within one probe interval: \(zerosStored) stored")
        #expect(stored[(40 + zerosStored)..<80].allSatisfy { !$0 }, "once found, every zero chunk is compressed")
        #expect(stored[80..<120].allSatisfy { $0 })
        #expect(bytes.count < (80 + ChunkedLZ4.probeEvery + 1) * (chunk + 4), "\(bytes.count) bytes")
    }

    @Test("bf16 and fp16 stay within their relative error bounds in the normal range", arguments: [false, true])
    func halfPrecisionBounds(compressed: Bool) throws {
        let g = gaussianGradient(50_000) + specialValues
        let bf = try roundTrip(HalfPrecisionCodec(format: .bfloat16, compressed: compressed), g)
        let fp = try roundTrip(HalfPrecisionCodec(format: .binary16, compressed: compressed), g)
        for (i, x) in g.enumerated() {
            if x.isNaN {
                #expect(bf[i].isNaN && fp[i].isNaN)
                #expect(bf[i].sign == x.sign && fp[i].sign == x.sign)
                continue
            }
            if x.isInfinite {
                #expect(bf[i] == x && fp[i] == x)
                continue
            }
            if x.magnitude >= Float.leastNormalMagnitude && x.magnitude <= 0x1.FEp127 {
                #expect(abs(bf[i] - x) <= 0x1p-8 * x.magnitude, "bf16 \(x) -> \(bf[i])")
            }
            if x.magnitude >= 0x1p-14 && x.magnitude <= 65504 {
                #expect(abs(fp[i] - x) <= 0x1p-11 * x.magnitude, "fp16 \(x) -> \(fp[i])")
            } else if x.magnitude < 0x1p-14 {
                #expect(abs(fp[i] - x) <= 0x1p-25, "fp16 subnormal \(x) -> \(fp[i])")
            } else if x.magnitude >= 65520 {
                #expect(fp[i] == (x > 0 ? Float.infinity : -.infinity), "fp16 overflow \(x)")
            }
            #expect(bf[i].sign == x.sign && fp[i].sign == x.sign, "sign of \(x)")
        }
    }

    @Test("fp16 conversion agrees with Swift's Float16 on every half and on many floats")
    func binary16Reference() {
        for h in 0...UInt16.max {
            let reference = Float(Float16(bitPattern: h))
            let fast = HalfPrecision.float(binary16Bits: h)
            if reference.isNaN {
                #expect(fast.isNaN && fast.sign == reference.sign)
                #expect(HalfPrecision.binary16Bits(fast) == h | 0x0200, "NaN payload of \(h)")
            } else {
                #expect(fast.bitPattern == reference.bitPattern, "half \(h)")
                #expect(HalfPrecision.binary16Bits(fast) == h, "round trip of half \(h)")
            }
        }
        var rng = FuzzRNG(seed: 11)
        var samples = specialValues
        for _ in 0..<200_000 { samples.append(Float(bitPattern: rng.rng.next())) }
        // Dense around the binary16 range: exponents 100...145 (subnormal to overflow).
        for _ in 0..<200_000 {
            let e = UInt32(100 + rng.below(46))
            samples.append(Float(bitPattern: UInt32(rng.below(2)) << 31 | e << 23 | rng.rng.next() & 0x7F_FFFF))
        }
        // Exact ties: 13 dropped bits equal to 0x1000.
        for _ in 0..<20_000 {
            let e = UInt32(103 + rng.below(40))
            samples.append(Float(bitPattern: e << 23 | (rng.rng.next() & 0x7F_E000) | 0x1000))
        }
        var mismatches = 0
        for x in samples where !x.isNaN {
            if HalfPrecision.binary16Bits(x) != Float16(x).bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test("bf16 rounds to nearest even, overflows to infinity and keeps NaN a NaN")
    func bfloat16Rounding() {
        #expect(HalfPrecision.bfloat16Bits(1) == 0x3F80)
        #expect(HalfPrecision.bfloat16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie, even stays
        #expect(HalfPrecision.bfloat16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie, odd rounds up
        #expect(HalfPrecision.bfloat16Bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(HalfPrecision.bfloat16Bits(.greatestFiniteMagnitude) == 0x7F80)
        #expect(HalfPrecision.bfloat16Bits(-.infinity) == 0xFF80)
        #expect(HalfPrecision.bfloat16Bits(-0.0) == 0x8000)
        let nan = Float(bitPattern: 0x7F80_0001)  // payload only in the dropped bits
        #expect(HalfPrecision.float(bfloat16Bits: HalfPrecision.bfloat16Bits(nan)).isNaN)
        // Against a naive reference: the nearer of the two truncations, ties to even.
        var rng = FuzzRNG(seed: 5)
        for _ in 0..<100_000 {
            let x = Float(bitPattern: rng.rng.next())
            guard x.isFinite else { continue }
            let down = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
            let up = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
            let dDown = abs(Double(x) - Double(down)), dUp = abs(Double(x) - Double(up))
            let expected = dDown < dUp ? down : dUp < dDown ? up : ((down.bitPattern >> 16) & 1 == 0 ? down : up)
            let got = HalfPrecision.float(bfloat16Bits: HalfPrecision.bfloat16Bits(x))
            #expect(got.bitPattern == expected.bitPattern, "\(x)")
        }
    }

    @Test("top-k keeps exactly k entries, exact, and they are the largest")
    func topK() throws {
        for (n, fraction) in [(1, 0.01), (2, 0.5), (1000, 0.01), (10_000, 0.05), (65_537, 0.001), (5000, 1.0)] {
            let codec = TopKCodec(fraction: fraction)
            let g = gaussianGradient(n, seed: UInt64(n))
            let d = try roundTrip(codec, g)
            let k = codec.keptCount(for: n)
            #expect(k == max(1, Int((fraction * Double(n)).rounded(.up))))
            let kept = (0..<n).filter { d[$0].bitPattern != 0 }
            #expect(kept.count == k, "n=\(n)")
            for i in kept { #expect(d[i].bitPattern == g[i].bitPattern) }
            let smallestKept = kept.map { g[$0].magnitude }.min() ?? .infinity
            let largestDropped = (0..<n).filter { d[$0].bitPattern == 0 }.map { g[$0].magnitude }.max() ?? 0
            #expect(largestDropped <= smallestKept, "n=\(n)")
        }
    }

    @Test("top-k breaks ties by index, sends NaN and infinity, handles all-zero input")
    func topKTies() throws {
        let ties: [Float] = [1, -2, 2, 0.5, -2, 2, 3]
        let d = try roundTrip(TopKCodec(fraction: 3.0 / 7.0), ties)  // k = 3: 3, then the first two of |2|
        #expect(d == [0, -2, 2, 0, 0, 0, 3])
        let special: [Float] = [1, .nan, 2, -.infinity, 3]
        let s = try roundTrip(TopKCodec(fraction: 0.4), special)  // k = 2
        #expect(s[1].isNaN && s[3] == -.infinity && s[0] == 0 && s[2] == 0 && s[4] == 0)
        let zeros = [Float](repeating: 0, count: 100)
        #expect(try roundTrip(TopKCodec(fraction: 0.1), zeros) == zeros)
        #expect(try roundTrip(TopKCodec(fraction: 0.1), []) == [])
    }

    @Test("radix select agrees with a sort")
    func radixSelect() {
        var rng = FuzzRNG(seed: 9)
        for trial in 0..<40 {
            let n = 1 + rng.below(3000)
            // Few distinct magnitudes on some trials, to exercise ties.
            let g: [Float] = (0..<n).map { _ in
                trial % 2 == 0 ? Float(rng.below(7)) - 3 : Float(bitPattern: rng.rng.next() & 0xBFFF_FFFF)
            }
            let k = 1 + rng.below(n)
            let (threshold, ties) = g.withUnsafeBufferPointer { TopKCodec.select($0, k: k) }
            let keys = g.map { $0.bitPattern & 0x7FFF_FFFF }.sorted(by: >)
            #expect(threshold == keys[k - 1])
            #expect(ties == k - keys.filter { $0 > threshold }.count)
        }
    }

    @Test("encoding again into a warm buffer does not reallocate it")
    func bufferReuse() {
        let g = gaussianGradient(50_000)
        for codec in allCodecs() {
            var out: [UInt8] = []
            g.withUnsafeBufferPointer { codec.encode($0, into: &out) }
            g.withUnsafeBufferPointer { codec.encode($0, into: &out) }
            let address = out.withUnsafeBytes { $0.baseAddress }
            let capacity = out.capacity
            for _ in 0..<3 {
                g.withUnsafeBufferPointer { codec.encode($0, into: &out) }
                #expect(out.withUnsafeBytes { $0.baseAddress } == address, "\(codec.name)")
                #expect(out.capacity == capacity, "\(codec.name)")
            }
        }
    }

    @Test("every codec writes each byte it keeps: a fresh buffer and one full of stale bytes encode alike")
    func everyByteWritten() {
        // A fresh buffer is not zero-filled (OutputBuffer.resize); a byte an encoder skipped would
        // carry whatever the allocator left there. Here the stale bytes are 0xA5 and the lengths vary.
        for (i, n) in [1, 7, 1000, 70_000].enumerated() {
            let g = gaussianGradient(n, seed: UInt64(40 + i))
            for codec in allCodecs() {
                var fresh: [UInt8] = []
                g.withUnsafeBufferPointer { codec.encode($0, into: &fresh) }
                var stale = [UInt8](repeating: 0xA5, count: 4 * fresh.count + 4096)
                g.withUnsafeBufferPointer { codec.encode($0, into: &stale) }
                #expect(fresh == stale, "\(codec.name), \(n) values")
            }
        }
    }

    @Test("the registry builds every codec by name and lists valid names for an unknown one")
    func registry() throws {
        for name in ["raw", "lz4", "shuffle-lz4", "bf16", "fp16", "bf16-lz4", "fp16-lz4"] {
            let codec = try CodecRegistry.codec(named: name)
            #expect(codec.name == name)
            #expect(try CodecRegistry.decoder(for: codec.id).id == codec.id)
        }
        let topk = try CodecRegistry.codec(named: "topk:0.01")
        #expect(topk.id == .topK && topk.name == "topk:0.01" && !topk.isLossless)
        let error = wireError { _ = try CodecRegistry.codec(named: "zstd") }
        #expect(error == .unknownCodecName("zstd", valid: CodecRegistry.validNames))
        #expect(error?.description.contains("shuffle-lz4") == true)
        for bad in ["topk:", "topk:0", "topk:1.5", "topk:-0.1", "topk:abc", "topk:nan"] {
            #expect(wireError { _ = try CodecRegistry.codec(named: bad) }?.kind == "invalid_codec_parameter", "\(bad)")
        }
        #expect(wireError { _ = try CodecRegistry.decoder(for: .none) }?.kind == "inconsistent_header")
    }
}
