import Testing
@testable import Wire

/// Bad input to every decoder: a `WireError`, never a trap, never an allocation from a length field.
@Suite("Decoder robustness")
struct DecoderRobustnessTests {
    @Test("every truncation and every extension of every codec's payload is rejected")
    func truncationsAndExtensions() {
        let g = gaussianGradient(700) + specialValues
        for codec in allCodecs() {
            let bytes = codec.encode(g)
            for n in 0..<bytes.count {
                #expect(wireError { _ = try codec.decode(Array(bytes[..<n]), count: g.count) } != nil,
                        "\(codec.name): truncation to \(n) of \(bytes.count) accepted")
            }
            #expect(wireError { _ = try codec.decode(bytes + [0], count: g.count) } != nil, "\(codec.name): extension accepted")
            #expect(wireError { _ = try codec.decode(bytes, count: g.count - 1) } != nil, "\(codec.name): count - 1 accepted")
            #expect(wireError { _ = try codec.decode(bytes, count: g.count + 1) } != nil, "\(codec.name): count + 1 accepted")
        }
    }

    @Test("decoders accept payloads at any alignment, whole or as a slice of a larger buffer")
    func alignment() throws {
        let g = gaussianGradient(333) + specialValues
        for codec in allCodecs() {
            let bytes = codec.encode(g)
            let expected = try codec.decode(bytes, count: g.count)
            for shift in 1..<8 {
                let padded = [UInt8](repeating: 0xAB, count: shift) + bytes + [0xCD]
                var out = [Float](repeating: 0, count: g.count)
                let error = padded.withUnsafeBytes { all in
                    out.withUnsafeMutableBufferPointer { dst in
                        wireError { try codec.decode(UnsafeRawBufferPointer(rebasing: all[shift..<(shift + bytes.count)]), into: dst) }
                    }
                }
                #expect(error == nil)
                #expect(bits(out) == bits(expected), "\(codec.name) shift \(shift)")
            }
        }
    }

    @Test("hostile length fields are rejected without allocating")
    func hostileLengths() throws {
        // If any of these lengths were allocated the process would trap: passing proves none was.
        func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        let n = 100
        // Container claiming a huge raw size, or a huge chunk size, or a huge chunk length.
        for codec in [LZ4Codec(), ShuffleLZ4Codec()] as [any GradientCodec] {
            #expect(wireError { _ = try codec.decode(le64(1 << 62) + le32(65536), count: n) }?.kind == "element_count")
            #expect(wireError { _ = try codec.decode(le64(400) + le32(0xFFFF_FFFC), count: n) }?.kind == "corrupt_payload")
            #expect(wireError { _ = try codec.decode(le64(400) + le32(0), count: n) }?.kind == "corrupt_payload")
            #expect(wireError { _ = try codec.decode(le64(400) + le32(6), count: n) }?.kind == "corrupt_payload")
            #expect(wireError { _ = try codec.decode(le64(400) + le32(65536) + le32(0x7FFF_FFFF), count: n) }?.kind == "truncated")
            #expect(wireError { _ = try codec.decode(le64(400) + le32(65536) + le32(0x8000_0010) + [UInt8](repeating: 0, count: 16), count: n) }?.kind
                == "corrupt_payload")  // stored chunk of the wrong size
            #expect(wireError { _ = try codec.decode(le64(400) + le32(65536) + le32(0), count: n) }?.kind == "corrupt_payload")
            #expect(wireError { _ = try codec.decode(le64(400) + le32(65536) + le32(4) + [0xFF, 0xFF, 0xFF, 0xFF], count: n) }?.kind
                == "corrupt_payload")  // not an LZ4 block
        }
        let topk = TopKCodec(fraction: 0.1)
        #expect(wireError { _ = try topk.decode(le64(UInt64(n)) + le64(1 << 60), count: n) }?.kind == "corrupt_payload")
        #expect(wireError { _ = try topk.decode(le64(1 << 62) + le64(1), count: n) }?.kind == "element_count")
        #expect(wireError { _ = try topk.decode(le64(UInt64(n)) + le64(10) + le64(1 << 62) + le32(65536), count: n) }?.kind
            == "corrupt_payload")  // body length impossible for k = 10
        // A varint running past the index space, and a varint longer than 10 bytes.
        let overflow = topk.encode([Float](repeating: 1, count: n))
        #expect(wireError { _ = try topk.decode(overflow, count: n) } == nil)
        let tooFar = TopKCodec(fraction: 0.01)  // k = 1: body = varint + 4 bytes
        var body = [UInt8(n)] + [0, 0, 0x80, 0x3F]  // index 100 of 100 elements
        let payload = le64(UInt64(n)) + le64(1) + le64(UInt64(body.count)) + le32(65536) + le32(0x8000_0000 | UInt32(body.count)) + body
        #expect(wireError { _ = try tooFar.decode(payload, count: n) }?.kind == "corrupt_payload")
        body = [UInt8](repeating: 0xFF, count: 11) + [0, 0, 0x80, 0x3F]  // longer than any index of n needs
        let longVarint = le64(UInt64(n)) + le64(1) + le64(UInt64(body.count)) + le32(65536) + le32(0x8000_0000 | UInt32(body.count)) + body
        #expect(wireError { _ = try tooFar.decode(longVarint, count: n) }?.kind == "corrupt_payload")
        // A non-canonical (two-byte) varint for gap 0 still names a valid index: accepted, as
        // integrity is the payload checksum's job, not the codec's.
        body = [0x80, 0x00, 0, 0, 0x80, 0x3F]
        let nonCanonical = le64(1000) + le64(1) + le64(UInt64(body.count)) + le32(65536) + le32(0x8000_0000 | UInt32(body.count)) + body
        let decoded = try TopKCodec(fraction: 0.01).decode(nonCanonical, count: 1000)
        #expect(decoded[0] == 1 && decoded[1...].allSatisfy { $0 == 0 })
    }

    @Test("varints: round trip at the edges; overlong, overflowing and truncated ones rejected")
    func varints() throws {
        func read(_ bytes: [UInt8]) -> Result<UInt64, WireError> {
            bytes.withUnsafeBytes { b in
                var r = ByteReader(b, context: "test")
                return Result { () throws(WireError) in
                    let v = try r.varint()
                    try r.expectEnd()
                    return v
                }
            }
        }
        for v: UInt64 in [0, 1, 127, 128, 16383, 16384, 1 << 35, .max - 1, .max] {
            var buffer = [UInt8](repeating: 0, count: 10)
            let n = buffer.withUnsafeMutableBufferPointer { OutputBuffer.putVarint(v, at: $0.baseAddress!) }
            #expect(try read(Array(buffer[..<n])).get() == v)
            for cut in 0..<n { #expect(throws: WireError.self) { try read(Array(buffer[..<cut])).get() } }
        }
        // 10th byte may only carry the top bit; an 11th byte is never valid.
        #expect(throws: WireError.self) { try read([UInt8](repeating: 0xFF, count: 9) + [0x02]).get() }
        #expect(throws: WireError.self) { try read([UInt8](repeating: 0x80, count: 10) + [0x00]).get() }
    }

    @Test("10,000+ random byte strings and mutations never crash any decoder; mutated messages always throw")
    func fuzz() {
        var rng = FuzzRNG(seed: 2024)
        let codecs = allCodecs()
        let g = gaussianGradient(200) + specialValues
        let valid = codecs.map { $0.encode(g) }
        let messages: [[[UInt8]]] = [
            g.withUnsafeBufferPointer { Message(header: sampleHeader(), tensor: $0, codec: ShuffleLZ4Codec(chunkBytes: 64)) }.frames(),
            g.withUnsafeBufferPointer { Message(header: sampleHeader(.parameters), tensor: $0, codec: TopKCodec(fraction: 0.2)) }.frames(),
            try! Message.control(sampleHeader(.assign), body: ["shards": [0, 1, 2], "version": [7]]).frames(),
            Message(header: sampleHeader(.heartbeat)).frames(),
        ]
        let limits = WireLimits(maxPayloadBytes: 1 << 16, maxRawBytes: 1 << 16, maxJSONBytes: 1 << 12)
        var out = [Float](repeating: 0, count: g.count)
        var accepted = 0

        func mutate(_ bytes: [UInt8]) -> [UInt8] {
            var b = bytes
            switch rng.below(6) {
            case 0 where !b.isEmpty: // flip 1-3 bits
                for _ in 0...rng.below(3) { let i = rng.below(b.count); b[i] ^= 1 << UInt8(rng.below(8)) }
            case 1 where !b.isEmpty: // overwrite a byte with an interesting value
                b[rng.below(b.count)] = [0, 0xFF, 0x7F, 0x80, 1][rng.below(5)]
            case 2: // truncate
                b = Array(b.prefix(rng.below(b.count + 1)))
            case 3: // append junk
                b += rng.bytes(1 + rng.below(16))
            case 4 where b.count >= 8: // overwrite a 4-byte word (lengths) with a large value
                let i = rng.below(b.count - 3)
                for j in 0..<4 { b[i + j] = [0xFF, 0xFF, 0xFF, 0x7F][j] }
            default: // splice a random span
                if !b.isEmpty { let i = rng.below(b.count); b.replaceSubrange(i..<min(b.count, i + 4), with: rng.bytes(rng.below(8))) }
            }
            return b
        }

        for iteration in 0..<12_000 {
            // Codec decoders: random strings and mutations; success is allowed (no checksum at
            // this level), crashing is not, and success must fill exactly the destination.
            let c = iteration % codecs.count
            let input = iteration % 3 == 0 ? rng.bytes(rng.below(64)) : mutate(valid[c])
            let error = input.withUnsafeBytes { b in
                out.withUnsafeMutableBufferPointer { dst in wireError { try codecs[c].decode(b, into: dst) } }
            }
            if error == nil { accepted += 1 }

            // Messages: a mutation of a valid message or random frames must always be rejected.
            let m = messages[iteration % messages.count]
            var frames = m
            switch rng.below(4) {
            case 0: frames[0] = mutate(frames[0])
            case 1: frames[1] = mutate(frames[1])
            case 2: frames = [rng.bytes(rng.below(2) == 0 ? 120 : rng.below(200)), rng.bytes(rng.below(100))]
            default: frames = (0..<rng.below(4)).map { _ in rng.bytes(rng.below(150)) }
            }
            if frames == m { continue }
            #expect(wireError { _ = try Message.decode(frames: frames, limits: limits) } != nil, "iteration \(iteration)")
            #expect(wireError { _ = try MessageHeader.decode(rng.bytes(120), limits: limits) } != nil)
        }
        // Most codec mutations are caught structurally; the rest decode to some values (raw and
        // bf16/fp16 payloads have no redundancy), which the message checksum guards against.
        #expect(accepted < 12_000)
    }

    @Test("fuzzed JSON control payloads never crash")
    func jsonFuzz() {
        struct Assign: Codable { var shards: [UInt32]; var version: UInt64; var note: String? }
        var rng = FuzzRNG(seed: 77)
        let valid = Array(#"{"note":"x","shards":[0,1,2],"version":7}"#.utf8)
        for _ in 0..<3000 {
            var b = valid
            for _ in 0...rng.below(4) { b[rng.below(b.count)] = rng.byte() }
            _ = wireError { _ = try Message.decodeJSON(Assign.self, from: b, maxBytes: 1 << 12) }
            _ = wireError { _ = try Message.decodeJSON(Assign.self, from: rng.bytes(rng.below(50)), maxBytes: 1 << 12) }
        }
    }
}
