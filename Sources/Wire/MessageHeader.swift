/// The fixed-size header frame of every wire message: who sent it, for which run, membership
/// epoch, step, shard and key range, and how its payload is encoded and checksummed.
///
/// Layout, version 2 (version 1 had no must-understand flags): 120 bytes, every integer
/// little-endian (also in docs/protocol.md).
///
/// | offset | size | field                    | notes                                              |
/// |-------:|-----:|--------------------------|----------------------------------------------------|
/// |      0 |    4 | magic                    | ASCII "AMBW" (41 4D 42 57)                         |
/// |      4 |    2 | version                  | 2                                                  |
/// |      6 |    2 | type                     | `MessageType` raw value                            |
/// |      8 |    4 | flags                    | `MessageFlags`; low 16 bits must be understood     |
/// |     12 |    4 | generation               | assignment epoch (a new one per assign)            |
/// |     16 |    8 | runID                    |                                                    |
/// |     24 |    8 | coordinatorIncarnation   | bumps when the coordinator restarts                |
/// |     32 |    4 | senderID                 | worker id; 0 = coordinator                         |
/// |     36 |    4 | shard                    | shard index within the step                        |
/// |     40 |    8 | senderIncarnation        | bumps when the sender process restarts             |
/// |     48 |    8 | step                     | at most 2^63 - 1 (`maxIndex`)                      |
/// |     56 |    4 | shardCount               | S; if nonzero, shard < S                           |
/// |     60 |    2 | codec                    | `CodecID` raw value; 0 (none) for control messages |
/// |     62 |    2 | reserved                 | must be 0                                          |
/// |     64 |    8 | parameterVersion         | version computed from / leading to; ≤ 2^63 - 1     |
/// |     72 |    8 | keyOffset                | first element of the flat buffer covered           |
/// |     80 |    8 | keyCount                 | elements covered; offset + count ≤ 2^63 - 1        |
/// |     88 |    8 | rawLength                | payload bytes before encoding (4 · keyCount for tensors) |
/// |     96 |    8 | encodedLength            | payload frame bytes                                |
/// |    104 |    8 | payloadChecksum          | XXH64 (seed 0) of the payload frame; 0 when unchecked |
/// |    112 |    8 | headerChecksum           | XXH64 (seed 0) of bytes 0..<112                    |
///
/// `decode` is a pure function of its bytes and limits: it never traps and never allocates from a
/// length it read. Freshness (run, generation, incarnations, step, version) is for the receiver's
/// state machine to judge; the header only carries it.
public struct MessageHeader: Sendable, Equatable {
    /// Bytes in an encoded header.
    public static let size = 120
    /// The protocol version this build writes and reads.
    public static let currentVersion: UInt16 = 2
    /// "AMBW" as the little-endian UInt32 read from bytes 0..<4.
    public static let magic: UInt32 = 0x5742_4D41
    /// Offset of the header checksum: it covers every byte before it.
    static let checksumOffset = 112

    public var version: UInt16
    public var type: MessageType
    public var flags: MessageFlags
    /// Membership / assignment epoch: bumps when the set of workers or the shard assignment changes.
    public var generation: UInt32
    public var runID: UInt64
    public var coordinatorIncarnation: UInt64
    /// Worker id of the sender; 0 is the coordinator.
    public var senderID: UInt32
    public var senderIncarnation: UInt64
    public var step: UInt64
    public var shard: UInt32
    public var shardCount: UInt32
    public var parameterVersion: UInt64
    public var codec: CodecID
    /// First element of the flat parameter / gradient buffer this message covers.
    public var keyOffset: UInt64
    /// Number of elements covered (0 for control messages).
    public var keyCount: UInt64
    /// Payload bytes before encoding.
    public var rawLength: UInt64
    /// Payload bytes as sent (the payload frame's size).
    public var encodedLength: UInt64
    /// `Checksum.of(payload)`.
    public var payloadChecksum: UInt64

    public init(type: MessageType, flags: MessageFlags = [], generation: UInt32 = 0, runID: UInt64 = 0,
                coordinatorIncarnation: UInt64 = 0, senderID: UInt32 = 0, senderIncarnation: UInt64 = 0,
                step: UInt64 = 0, shard: UInt32 = 0, shardCount: UInt32 = 0, parameterVersion: UInt64 = 0,
                codec: CodecID = .none, keyOffset: UInt64 = 0, keyCount: UInt64 = 0,
                rawLength: UInt64 = 0, encodedLength: UInt64 = 0, payloadChecksum: UInt64 = 0,
                version: UInt16 = MessageHeader.currentVersion) {
        self.version = version
        self.type = type
        self.flags = flags
        self.generation = generation
        self.runID = runID
        self.coordinatorIncarnation = coordinatorIncarnation
        self.senderID = senderID
        self.senderIncarnation = senderIncarnation
        self.step = step
        self.shard = shard
        self.shardCount = shardCount
        self.parameterVersion = parameterVersion
        self.codec = codec
        self.keyOffset = keyOffset
        self.keyCount = keyCount
        self.rawLength = rawLength
        self.encodedLength = encodedLength
        self.payloadChecksum = payloadChecksum
    }

    /// The 120 header bytes, header checksum included.
    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: MessageHeader.size)
        bytes.withUnsafeMutableBytes { b in
            MessageHeader.write(b,
                                fields: RawFields(magic: MessageHeader.magic, version: version, type: type.rawValue,
                                                  flags: flags.rawValue, codec: codec.rawValue, reserved: 0),
                                header: self)
        }
        return bytes
    }

    /// The header fields whose raw form may be invalid; separate so tests can write invalid ones.
    struct RawFields {
        var magic: UInt32
        var version: UInt16
        var type: UInt16
        var flags: UInt32
        var codec: UInt16
        var reserved: UInt16
    }

    /// Writes a header with the given raw fields and a correct header checksum.
    static func write(_ b: UnsafeMutableRawBufferPointer, fields: RawFields, header h: MessageHeader) {
        precondition(b.count == size)
        func put<T: FixedWidthInteger>(_ v: T, _ offset: Int) {
            b.storeBytes(of: v.littleEndian, toByteOffset: offset, as: T.self)
        }
        put(fields.magic, 0)
        put(fields.version, 4)
        put(fields.type, 6)
        put(fields.flags, 8)
        put(h.generation, 12)
        put(h.runID, 16)
        put(h.coordinatorIncarnation, 24)
        put(h.senderID, 32)
        put(h.shard, 36)
        put(h.senderIncarnation, 40)
        put(h.step, 48)
        put(h.shardCount, 56)
        put(fields.codec, 60)
        put(fields.reserved, 62)
        put(h.parameterVersion, 64)
        put(h.keyOffset, 72)
        put(h.keyCount, 80)
        put(h.rawLength, 88)
        put(h.encodedLength, 96)
        put(h.payloadChecksum, 104)
        put(XXH64.hash(UnsafeRawBufferPointer(rebasing: b[0..<checksumOffset])), checksumOffset)
    }

    /// Decodes and validates a header frame.
    ///
    /// Checks, in order: size, magic, version, header checksum, reserved field, must-understand
    /// flags, message type, codec, key range and counter ranges, length limits, and consistency of the
    /// lengths with the type and codec. Each failure is its own `WireError` case.
    public static func decode(_ bytes: UnsafeRawBufferPointer, limits: WireLimits = .default) throws(WireError) -> MessageHeader {
        guard bytes.count == size else { throw .headerSize(found: bytes.count, expected: size) }
        func get<T: FixedWidthInteger>(_ offset: Int, _: T.Type = T.self) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        let magicValue: UInt32 = get(0)
        guard magicValue == magic else { throw .badMagic(found: magicValue) }
        let versionValue: UInt16 = get(4)
        guard versionValue == currentVersion else {
            throw .unsupportedVersion(found: versionValue, supported: currentVersion)
        }
        let stored: UInt64 = get(checksumOffset)
        let computed = XXH64.hash(UnsafeRawBufferPointer(rebasing: bytes[0..<checksumOffset]))
        guard stored == computed else { throw .headerChecksumMismatch(stored: stored, computed: computed) }
        let reserved: UInt16 = get(62)
        guard reserved == 0 else { throw .reservedNotZero(reserved) }
        let flags = MessageFlags(rawValue: get(8))
        let unknown = flags.rawValue & MessageFlags.mustUnderstandMask & ~MessageFlags.understood.rawValue
        guard unknown == 0 else { throw .unsupportedFlags(unknown) }
        let typeRaw: UInt16 = get(6)
        guard let type = MessageType(rawValue: typeRaw) else { throw .unknownMessageType(typeRaw) }
        let codecRaw: UInt16 = get(60)
        guard let codec = CodecID(rawValue: codecRaw) else { throw .unknownCodec(codecRaw) }

        let header = MessageHeader(
            type: type, flags: flags, generation: get(12), runID: get(16), coordinatorIncarnation: get(24),
            senderID: get(32), senderIncarnation: get(40), step: get(48), shard: get(36), shardCount: get(56),
            parameterVersion: get(64), codec: codec, keyOffset: get(72), keyCount: get(80),
            rawLength: get(88), encodedLength: get(96), payloadChecksum: get(104), version: versionValue)
        try header.validate(limits: limits)
        return header
    }

    /// Decodes and validates a header frame.
    public static func decode(_ bytes: [UInt8], limits: WireLimits = .default) throws(WireError) -> MessageHeader {
        try withBytes(of: bytes) { b throws(WireError) in try decode(b, limits: limits) }
    }

    /// The largest step, parameter version and key range end a header may carry: 2^63 - 1, so
    /// every receiver can hold them in a signed 64-bit integer (Swift's `Int`) without a check
    /// of its own. (A gradient with step 2^63 once trapped the coordinator in `Int(step)`.)
    public static let maxIndex = UInt64(Int64.max)

    /// The checks on field values that do not depend on the encoding: ranges of the counters and
    /// the key range, limits, and consistency of lengths with the message type and codec.
    /// Every field a receiver converts to `Int` is range-checked here, the one place.
    public func validate(limits: WireLimits) throws(WireError) {
        let end = keyOffset.addingReportingOverflow(keyCount)
        guard !end.overflow && end.partialValue <= MessageHeader.maxIndex else {
            throw .invalidKeyRange(offset: keyOffset, count: keyCount)
        }
        guard step <= MessageHeader.maxIndex else {
            throw .fieldOutOfRange(field: "step", value: step, limit: MessageHeader.maxIndex)
        }
        guard parameterVersion <= MessageHeader.maxIndex else {
            throw .fieldOutOfRange(field: "parameterVersion", value: parameterVersion, limit: MessageHeader.maxIndex)
        }
        guard encodedLength <= UInt64(limits.maxPayloadBytes) else {
            throw .payloadTooLarge(length: encodedLength, limit: limits.maxPayloadBytes)
        }
        guard rawLength <= UInt64(limits.maxRawBytes) else {
            throw .rawTooLarge(length: rawLength, limit: limits.maxRawBytes)
        }
        if shardCount != 0 && shard >= shardCount {
            throw .inconsistentHeader("shard \(shard) is not below shard count \(shardCount)")
        }
        if type.carriesTensor {
            guard codec != .none else {
                throw .inconsistentHeader("\(type) message without a tensor codec")
            }
            let bytes = keyCount.multipliedReportingOverflow(by: 4)
            guard !bytes.overflow && bytes.partialValue == rawLength else {
                throw .inconsistentHeader("raw length \(rawLength) is not 4 x key count \(keyCount)")
            }
        } else {
            guard codec == .none else {
                throw .inconsistentHeader("\(type) is a control message but names codec \(codec)")
            }
            guard keyCount == 0 else {
                throw .inconsistentHeader("\(type) is a control message but covers \(keyCount) keys")
            }
        }
        if codec == .none && rawLength != encodedLength {
            throw .inconsistentHeader("unencoded payload with raw length \(rawLength) != encoded length \(encodedLength)")
        }
    }
}

/// Flag bits of the header. The low 16 bits are must-understand: a receiver rejects a message
/// with a must-understand bit it does not know. The high 16 bits are advisory and ignored when
/// unknown, so a sender may add them without a version bump.
public struct MessageFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Advisory: the sender resent this message after a timeout; duplicates are dropped by tag.
    public static let retransmission = MessageFlags(rawValue: 1 << 16)

    /// Must-understand (version 2): the sender did not checksum the payload (`payloadChecksum`
    /// is 0) because the link authenticates every message (CURVE's Poly1305 tag) or never leaves
    /// the host (ipc://, loopback TCP, in-process). A receiver accepts it only on such a link of its own
    /// (`Message.decode(frames:limits:sealedLink:)`); control and tensor messages alike.
    public static let uncheckedPayload = MessageFlags(rawValue: 1 << 0)

    /// Bits a receiver must understand to process the message.
    public static let mustUnderstandMask: UInt32 = 0x0000_FFFF
    /// Must-understand bits this version defines.
    public static let understood: MessageFlags = [.uncheckedPayload]
}
