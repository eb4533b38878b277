import Testing
@testable import Wire

@Suite("MessageHeader")
struct MessageHeaderTests {
    @Test("every message type round-trips with every field intact", arguments: MessageType.allCases)
    func roundTrip(type: MessageType) throws {
        var h = sampleHeader(type)
        if !type.carriesTensor { h.encodedLength = 0 }
        let bytes = h.encode()
        #expect(bytes.count == MessageHeader.size)
        #expect(try MessageHeader.decode(bytes) == h)
    }

    @Test("raw values of message types and codecs are stable")
    func stableRawValues() {
        #expect(MessageType.allCases.map(\.rawValue) == Array(1...15))
        #expect(MessageType.hello.rawValue == 1 && MessageType.gradient.rawValue == 6 && MessageType.error.rawValue == 13)
        #expect(CodecID.allCases.map(\.rawValue) == Array(0...8))
        #expect(CodecID.shuffleLZ4.rawValue == 3 && CodecID.topK.rawValue == 8)
    }

    @Test("bytes sit at the documented offsets, little-endian")
    func layout() {
        let h = sampleHeader()
        let b = h.encode()
        func le(_ offset: Int, _ size: Int) -> UInt64 {
            (0..<size).reduce(UInt64(0)) { $0 | UInt64(b[offset + $1]) << (8 * UInt64($1)) }
        }
        #expect(Array(b[0..<4]) == Array("AMBW".utf8))
        #expect(le(4, 2) == 2)
        #expect(le(6, 2) == UInt64(MessageType.gradient.rawValue))
        #expect(le(8, 4) == UInt64(MessageFlags.retransmission.rawValue))
        #expect(le(12, 4) == UInt64(h.generation))
        #expect(le(16, 8) == h.runID)
        #expect(le(24, 8) == h.coordinatorIncarnation)
        #expect(le(32, 4) == UInt64(h.senderID))
        #expect(le(36, 4) == UInt64(h.shard))
        #expect(le(40, 8) == h.senderIncarnation)
        #expect(le(48, 8) == h.step)
        #expect(le(56, 4) == UInt64(h.shardCount))
        #expect(le(60, 2) == UInt64(CodecID.shuffleLZ4.rawValue))
        #expect(le(62, 2) == 0)
        #expect(le(64, 8) == h.parameterVersion)
        #expect(le(72, 8) == h.keyOffset)
        #expect(le(80, 8) == h.keyCount)
        #expect(le(88, 8) == h.rawLength)
        #expect(le(96, 8) == h.encodedLength)
        #expect(le(104, 8) == h.payloadChecksum)
        #expect(le(112, 8) == XXH64.hash(Array(b[0..<112])))
    }

    @Test("every truncation and every extension of a header is rejected")
    func truncation() {
        let bytes = sampleHeader().encode()
        for n in 0..<bytes.count {
            #expect(wireError { _ = try MessageHeader.decode(Array(bytes[..<n])) } == .headerSize(found: n, expected: 120))
        }
        #expect(wireError { _ = try MessageHeader.decode(bytes + [0]) } == .headerSize(found: 121, expected: 120))
    }

    @Test("every single bit flip is rejected")
    func bitFlips() {
        let bytes = sampleHeader().encode()
        for bit in 0..<(bytes.count * 8) {
            var b = bytes
            b[bit / 8] ^= 1 << UInt8(bit % 8)
            let error = wireError { _ = try MessageHeader.decode(b) }
            #expect(error != nil, "flip of bit \(bit) accepted")
            if bit >= 48 {  // past magic and version, the checksum catches it
                #expect(error?.kind == "header_checksum", "bit \(bit): \(String(describing: error))")
            }
        }
    }

    @Test("bad magic, wrong version, unknown type, unknown codec, reserved, flags: distinct errors")
    func invalidFields() throws {
        let h = sampleHeader()
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, magic: 0x5742_4D42)) } == .badMagic(found: 0x5742_4D42))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, version: 1)) } == .unsupportedVersion(found: 1, supported: 2))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, version: 3)) } == .unsupportedVersion(found: 3, supported: 2))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, version: 0)) } == .unsupportedVersion(found: 0, supported: 2))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, type: 0)) } == .unknownMessageType(0))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, type: 16)) } == .unknownMessageType(16))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, type: 0xFFFF)) } == .unknownMessageType(0xFFFF))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, codec: 9)) } == .unknownCodec(9))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, reserved: 1)) } == .reservedNotZero(1))
        // Bit 0 (unchecked payload) is the one must-understand flag of version 2.
        #expect(try MessageHeader.decode(rawHeaderBytes(h, flags: 1)).flags == .uncheckedPayload)
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, flags: 2)) } == .unsupportedFlags(2))
        #expect(wireError { _ = try MessageHeader.decode(rawHeaderBytes(h, flags: 0x8000_8001)) } == .unsupportedFlags(0x8000))
        // Unknown advisory (high) flags are accepted and kept.
        #expect(try MessageHeader.decode(rawHeaderBytes(h, flags: 0xFFFF_0000)).flags.rawValue == 0xFFFF_0000)
    }

    @Test("oversized lengths are rejected before anything is allocated")
    func oversized() throws {
        // A decoder that allocated 2^62 bytes would trap, so passing means nothing was allocated.
        var h = sampleHeader()
        h.encodedLength = 1 << 62
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) } == .payloadTooLarge(length: 1 << 62, limit: WireLimits.default.maxPayloadBytes))
        let limits = WireLimits(maxPayloadBytes: 2999, maxRawBytes: 1 << 20)
        #expect(wireError { _ = try MessageHeader.decode(sampleHeader().encode(), limits: limits) } == .payloadTooLarge(length: 3000, limit: 2999))
        h = sampleHeader()
        h.keyCount = 1 << 61
        h.rawLength = 1 << 63
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) } == .rawTooLarge(length: 1 << 63, limit: WireLimits.default.maxRawBytes))
        let modelLimits = WireLimits.forModel(parameterCount: 1000)
        #expect(modelLimits.maxRawBytes == 4000)
        #expect(throws: Never.self) { try MessageHeader.decode(sampleHeader().encode(), limits: modelLimits) }
        #expect(wireError { _ = try MessageHeader.decode(sampleHeader().encode(), limits: .forModel(parameterCount: 999)) }?.kind == "raw_too_large")
    }

    @Test("key range overflow and contradictory fields are rejected")
    func inconsistent() {
        var h = sampleHeader()
        h.keyOffset = UInt64.max
        h.keyCount = 2
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) } == .invalidKeyRange(offset: .max, count: 2))
        h = sampleHeader()
        h.rawLength = 4001
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) }?.kind == "inconsistent_header")
        h = sampleHeader()
        h.codec = .none
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) }?.kind == "inconsistent_header")
        h = sampleHeader(.hello)
        h.codec = .raw
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) }?.kind == "inconsistent_header")
        h = sampleHeader(.hello)
        h.encodedLength = 3
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) }?.kind == "inconsistent_header")
        h = sampleHeader()
        h.shard = 16
        #expect(wireError { _ = try MessageHeader.decode(h.encode()) }?.kind == "inconsistent_header")
    }

    /// Every counter a receiver holds in an `Int` is at most 2^63 - 1 once decoded: the largest
    /// value passes, the next is rejected (a gradient with step 2^63 once trapped the
    /// coordinator in `Int(step)`).
    @Test("step, parameter version and key range are bounded by 2^63 - 1", arguments: ["step", "parameterVersion", "keyOffset", "keyEnd"])
    func counterRanges(field: String) throws {
        func with(_ v: UInt64) -> MessageHeader {
            var h = sampleHeader()
            switch field {
            case "step": h.step = v
            case "parameterVersion": h.parameterVersion = v
            case "keyOffset": h.keyOffset = v; h.keyCount = 0; h.rawLength = 0
            default: h.keyOffset = v - h.keyCount
            }
            return h
        }
        let max = MessageHeader.maxIndex
        #expect(max == UInt64(Int.max))
        #expect(try MessageHeader.decode(with(max).encode()) == with(max))
        for v in [max + 1, UInt64.max] {
            let h = with(v)
            let expected: WireError = switch field {
            case "step": .fieldOutOfRange(field: "step", value: v, limit: max)
            case "parameterVersion": .fieldOutOfRange(field: "parameterVersion", value: v, limit: max)
            default: .invalidKeyRange(offset: h.keyOffset, count: h.keyCount)
            }
            #expect(wireError { _ = try MessageHeader.decode(h.encode()) } == expected)
        }
    }

    @Test("every error has a kind and a description")
    func descriptions() {
        let errors: [WireError] = [
            .frameCount(found: 1, expected: 2), .headerSize(found: 3, expected: 120), .badMagic(found: 1),
            .unsupportedVersion(found: 2, supported: 1), .unknownMessageType(99), .unknownCodec(99),
            .unsupportedFlags(1), .reservedNotZero(1), .headerChecksumMismatch(stored: 1, computed: 2),
            .payloadTooLarge(length: 1, limit: 0), .rawTooLarge(length: 1, limit: 0),
            .payloadLengthMismatch(header: 1, frame: 0), .payloadChecksumMismatch(stored: 1, computed: 2), .uncheckedPayloadOnOpenLink,
            .invalidKeyRange(offset: 1, count: 2), .inconsistentHeader("x"), .elementCountMismatch(expected: 1, found: 2),
            .truncated(context: "c", needed: 2, available: 1), .trailingBytes(context: "c", count: 1),
            .corruptPayload(codec: "lz4", reason: "r"), .codecMismatch(expected: .raw, found: .lz4),
            .jsonTooLarge(bytes: 2, limit: 1), .jsonEncoding("e"), .jsonDecoding("d"),
            .unknownCodecName("zip", valid: ["raw"]), .invalidCodecParameter("p"), .nonFiniteValue(index: 3),
            .fieldOutOfRange(field: "step", value: 1 << 63, limit: 1),
        ]
        #expect(Set(errors.map(\.kind)).count == errors.count)
        for e in errors { #expect(!e.description.isEmpty && !e.kind.isEmpty) }
    }
}
