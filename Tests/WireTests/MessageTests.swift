import Testing
@testable import Wire

/// A control body like the cluster's registration message.
private struct Hello: Codable, Equatable {
    var workerID: UInt32
    var incarnation: UInt64
    var codecs: [String]
    var host: String
}

@Suite("Message")
struct MessageTests {
    @Test("every message type round-trips through frames", arguments: MessageType.allCases)
    func roundTrip(type: MessageType) throws {
        var header = sampleHeader(type)
        let message: Message
        if type.carriesTensor {
            let values = gaussianGradient(1000)
            message = values.withUnsafeBufferPointer {
                Message(header: header, tensor: $0, codec: ShuffleLZ4Codec())
            }
            let back = try Message.decode(frames: message.frames())
            #expect(back == message)
            #expect(bits(try back.decodeTensor()) == bits(values))
        } else {
            header.codec = .none
            message = try Message.control(header, body: Hello(workerID: 3, incarnation: 9, codecs: ["raw"], host: "n1"))
            let back = try Message.decode(frames: message.frames())
            #expect(back == message)
            #expect(try back.decodeJSON(Hello.self) == Hello(workerID: 3, incarnation: 9, codecs: ["raw"], host: "n1"))
        }
        let frames = message.frames()
        #expect(frames.count == 2 && frames[0].count == MessageHeader.size)
        #expect(message.header.encodedLength == UInt64(frames[1].count))
    }

    @Test("an empty payload (heartbeat) is a valid empty second frame")
    func emptyPayload() throws {
        let m = Message(header: MessageHeader(type: .heartbeat, senderID: 4))
        #expect(m.frames()[1].isEmpty)
        #expect(try Message.decode(frames: m.frames()) == m)
    }

    @Test("wrong frame counts are rejected")
    func frameCount() {
        let frames = Message(header: MessageHeader(type: .heartbeat)).frames()
        #expect(wireError { _ = try Message.decode(frames: []) } == .frameCount(found: 0, expected: 2))
        #expect(wireError { _ = try Message.decode(frames: [frames[0]]) } == .frameCount(found: 1, expected: 2))
        #expect(wireError { _ = try Message.decode(frames: frames + [[], []]) } == .frameCount(found: 4, expected: 2))
        // A third frame is metadata covered by the checksum: an unexpected one fails it.
        #expect(wireError { _ = try Message.decode(frames: frames + [[1]]) } != nil)
    }

    @Test("metadata travels beside the payload and is covered by the checksum")
    func metadata() throws {
        struct Meta: Codable, Equatable { var loss: Double }
        let values = gaussianGradient(50)
        let meta = try Message.jsonPayload(Meta(loss: 1.5))
        let m = values.withUnsafeBufferPointer { Message(header: sampleHeader(), tensor: $0, codec: RawCodec(), meta: meta) }
        let frames = m.frames()
        #expect(frames.count == 3)
        let back = try Message.decode(frames: frames)
        #expect(try back.decodeMeta(Meta.self) == Meta(loss: 1.5))
        #expect(try back.decodeTensor() == values)
        var flipped = frames
        flipped[2][0] ^= 1
        #expect(wireError { _ = try Message.decode(frames: flipped) } != nil)
        #expect(wireError { _ = try Message.decode(frames: Array(frames.prefix(2))) } != nil)
        let big = [UInt8](repeating: 32, count: WireLimits.default.maxJSONBytes + 1)
        #expect(wireError { _ = try Message.decode(frames: [frames[0], frames[1], big]) } == .jsonTooLarge(bytes: big.count, limit: WireLimits.default.maxJSONBytes))
    }

    @Test("every truncation of either frame, and an extended payload, is rejected")
    func truncations() throws {
        let values = gaussianGradient(300)
        let m = values.withUnsafeBufferPointer {
            Message(header: sampleHeader(), tensor: $0, codec: HalfPrecisionCodec(format: .bfloat16, compressed: true))
        }
        let frames = m.frames()
        for n in 0..<frames[0].count {
            #expect(wireError { _ = try Message.decode(frames: [Array(frames[0][..<n]), frames[1]]) }?.kind == "header_size")
        }
        for n in 0..<frames[1].count {
            #expect(wireError { _ = try Message.decode(frames: [frames[0], Array(frames[1][..<n])]) }
                == .payloadLengthMismatch(header: UInt64(frames[1].count), frame: n))
        }
        #expect(wireError { _ = try Message.decode(frames: [frames[0], frames[1] + [0]]) }?.kind == "payload_length")
        // The concatenation of the frames is not a message either (the frame boundary matters).
        #expect(wireError { _ = try Message.decode(frames: [frames[0] + frames[1], []]) }?.kind == "header_size")
    }

    @Test("every single bit flip of the payload is rejected by the payload checksum")
    func payloadBitFlips() {
        let m = try! Message.control(MessageHeader(type: .assign), body: ["shards": [1, 2, 3]])
        let frames = m.frames()
        for bit in 0..<(frames[1].count * 8) {
            var p = frames[1]
            p[bit / 8] ^= 1 << UInt8(bit % 8)
            #expect(wireError { _ = try Message.decode(frames: [frames[0], p]) }?.kind == "payload_checksum")
        }
    }

    /// A sender on a sealed link (CURVE, ipc, in-process) leaves the payload checksum out; only a
    /// receiver whose own link is sealed takes such a message, and a checked message is still
    /// checked there.
    @Test("an unchecked payload: accepted on a sealed link only, with a zero checksum")
    func uncheckedPayload() throws {
        let values: [Float] = [1, -2, 0.5, .infinity]
        let m = values.withUnsafeBufferPointer {
            Message(header: MessageHeader(type: .update, flags: .uncheckedPayload), tensor: $0, codec: RawCodec())
        }
        #expect(m.header.payloadChecksum == 0)
        let back = try Message.decode(frames: m.frames(), sealedLink: true)
        #expect(back.header.flags.contains(.uncheckedPayload))
        var out = [Float](repeating: 0, count: 4)
        try out.withUnsafeMutableBufferPointer { try back.decodeTensor(into: $0, codec: RawCodec()) }
        #expect(out.map(\.bitPattern) == values.map(\.bitPattern))
        // On a link that is not sealed (neither CURVE nor loopback) it is refused.
        #expect(wireError { _ = try Message.decode(frames: m.frames()) } == .uncheckedPayloadOnOpenLink)
        // Under the flag the checksum must be 0: a header (with its own valid checksum) carrying another is refused.
        var h = m.header
        h.payloadChecksum = 7
        #expect(wireError { _ = try Message.decode(frames: [h.encode(), m.payload], sealedLink: true) }?.kind == "payload_checksum")
        // A checked message on a sealed link is still checked.
        let checked = try Message.control(MessageHeader(type: .assign), body: ["shards": [1, 2]])
        var p = checked.frames()[1]
        p[0] ^= 1
        #expect(wireError { _ = try Message.decode(frames: [checked.frames()[0], p], sealedLink: true) }?.kind == "payload_checksum")
    }

    @Test("decodeTensor checks type, element count and codec")
    func tensorChecks() throws {
        let values: [Float] = [1, 2, 3]
        let m = values.withUnsafeBufferPointer { Message(header: MessageHeader(type: .update), tensor: $0, codec: RawCodec()) }
        var two = [Float](repeating: 0, count: 2)
        #expect(two.withUnsafeMutableBufferPointer { p in wireError { try m.decodeTensor(into: p) } }
            == .elementCountMismatch(expected: 2, found: 3))
        #expect(wireError { _ = try m.decodeTensor(codec: LZ4Codec()) } == .codecMismatch(expected: .lz4, found: .raw))
        #expect(try m.decodeTensor() == values)
        let control = Message(header: MessageHeader(type: .heartbeat))
        #expect(wireError { _ = try control.decodeTensor() }?.kind == "inconsistent_header")
        #expect(wireError { _ = try m.decodeJSON([String].self) }?.kind == "inconsistent_header")
    }

    @Test("JSON control payloads: size limit on both sides, garbage and wrong shapes rejected")
    func json() throws {
        let big = Hello(workerID: 1, incarnation: 1, codecs: Array(repeating: "raw", count: 100), host: "h")
        #expect(wireError { _ = try Message.control(MessageHeader(type: .hello), body: big, maxBytes: 100) }?.kind == "json_too_large")
        let m = try Message.control(MessageHeader(type: .hello), body: big)
        #expect(wireError { _ = try m.decodeJSON(Hello.self, limits: WireLimits(maxJSONBytes: 100)) }?.kind == "json_too_large")
        for garbage in ["", "{", "nul", "[1,2", "{\"workerID\": -1}", "{\"workerID\": \"x\"}", "[[[[[[[[[[[[[[[[[[[[[[[[",
                        String(repeating: "[", count: 100_000)] {
            #expect(wireError { _ = try Message.decodeJSON(Hello.self, from: Array(garbage.utf8), maxBytes: 1 << 20) }?.kind
                == "json_decoding", "\(garbage.prefix(20))")
        }
        // Deterministic bytes: sorted keys.
        #expect(try Message.jsonPayload(["b": 1, "a": 2]) == Array("{\"a\":2,\"b\":1}".utf8))
    }
}
