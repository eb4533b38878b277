import Foundation

/// One wire message: a header, a payload and optional metadata, sent as the ZeroMQ multipart
/// frames [header (120 bytes), payload (encodedLength bytes, possibly empty), meta (optional,
/// JSON, at most `maxJSONBytes`)]. The header's payload checksum covers payload then meta, so
/// the small JSON that travels beside a tensor (a shard's loss, a parameter checksum) is
/// protected too.
///
/// A `Message` is always consistent: building one seals the header (payload length and checksum,
/// and for control messages the raw length), and `decode(frames:limits:)` only returns messages
/// that verify. Routing frames a ROUTER socket prepends are the transport's business and must be
/// stripped before decoding.
public struct Message: Sendable, Equatable {
    public private(set) var header: MessageHeader
    public private(set) var payload: [UInt8]
    /// Metadata beside the payload (JSON); empty when absent.
    public private(set) var meta: [UInt8]

    /// A message carrying `payload`, with the header's `encodedLength` and `payloadChecksum` set
    /// from it (and `rawLength` too when the codec is `.none`). Under `MessageFlags.uncheckedPayload`
    /// (a sender on a sealed link) the checksum is not computed and stays 0.
    public init(header: MessageHeader, payload: [UInt8] = [], meta: [UInt8] = []) {
        var h = header
        h.encodedLength = UInt64(payload.count)
        h.payloadChecksum = h.flags.contains(.uncheckedPayload) ? 0 : Message.checksum(payload, meta)
        if h.codec == .none { h.rawLength = UInt64(payload.count) }
        self.header = h
        self.payload = payload
        self.meta = meta
    }

    /// XXH64 of the payload followed by the meta bytes.
    static func checksum(_ payload: [UInt8], _ meta: [UInt8]) -> UInt64 {
        if meta.isEmpty { return Checksum.of(payload) }
        var h = XXH64()
        h.update(payload)
        h.update(meta)
        return h.finalize()
    }

    /// A tensor message (gradient, parameters, update): `values` encoded by `codec`, covering
    /// `header.keyOffset ..< header.keyOffset + values.count`. Sets the header's codec, key count
    /// and lengths. `buffer` is reused as the payload's storage (pass the previous message's
    /// payload back to avoid allocating).
    public init(header: MessageHeader, tensor values: UnsafeBufferPointer<Float>, codec: any GradientCodec,
                buffer: consuming [UInt8] = [], meta: [UInt8] = []) {
        precondition(header.type.carriesTensor, "\(header.type) does not carry a tensor")
        var h = header
        h.codec = codec.id
        h.keyCount = UInt64(values.count)
        h.rawLength = UInt64(values.count) * 4
        var bytes = buffer
        codec.encode(values, into: &bytes)
        self.init(header: h, payload: bytes, meta: meta)
    }

    /// The multipart frames [header, payload] or [header, payload, meta]. The payload array is
    /// shared, not copied.
    public func frames() -> [[UInt8]] {
        meta.isEmpty ? [header.encode(), payload] : [header.encode(), payload, meta]
    }

    /// Decodes and verifies a message from its frames. `sealedLink`: the frames came through a
    /// link of this receiver's that authenticates every message or never leaves the host (CURVE,
    /// ipc://, loopback TCP, in-process); only there is a payload without a checksum accepted.
    ///
    /// Rejects, each with its own `WireError`: a frame count other than 2 or 3, meta over
    /// `maxJSONBytes`, any header error
    /// (`MessageHeader.decode`), a payload frame whose size differs from the header's encoded
    /// length, a payload checksum mismatch, and an unchecked payload (a nonzero checksum under the
    /// flag, or the flag on an open link). Lengths are checked before the payload is read.
    public static func decode(frames: [[UInt8]], limits: WireLimits = .default, sealedLink: Bool = false) throws(WireError) -> Message {
        guard frames.count == 2 || frames.count == 3 else { throw .frameCount(found: frames.count, expected: 2) }
        let header = try MessageHeader.decode(frames[0], limits: limits)
        let payload = frames[1]
        guard UInt64(payload.count) == header.encodedLength else {
            throw .payloadLengthMismatch(header: header.encodedLength, frame: payload.count)
        }
        let meta = frames.count == 3 ? frames[2] : []
        guard meta.count <= limits.maxJSONBytes else { throw .jsonTooLarge(bytes: meta.count, limit: limits.maxJSONBytes) }
        if header.flags.contains(.uncheckedPayload) {
            guard sealedLink else { throw .uncheckedPayloadOnOpenLink }
            guard header.payloadChecksum == 0 else { throw .payloadChecksumMismatch(stored: header.payloadChecksum, computed: 0) }
        } else {
            let computed = Message.checksum(payload, meta)
            guard computed == header.payloadChecksum else {
                throw .payloadChecksumMismatch(stored: header.payloadChecksum, computed: computed)
            }
        }
        return Message(verified: header, payload: payload, meta: meta)
    }

    private init(verified header: MessageHeader, payload: [UInt8], meta: [UInt8]) {
        self.header = header
        self.payload = payload
        self.meta = meta
    }

    /// The meta frame decoded from JSON as `type` (nil when the message has none).
    public func decodeMeta<T: Decodable>(_ type: T.Type, limits: WireLimits = .default) throws(WireError) -> T? {
        if meta.isEmpty { return nil }
        return try Message.decodeJSON(type, from: meta, maxBytes: limits.maxJSONBytes)
    }

    /// Decodes the tensor payload into `values`, which must have `header.keyCount` elements.
    ///
    /// Uses `codec` if given (its id must match the header's), otherwise the registry's decoder
    /// for the header's codec. On error the contents of `values` are unspecified.
    public func decodeTensor(into values: UnsafeMutableBufferPointer<Float>,
                             codec: (any GradientCodec)? = nil) throws(WireError) {
        guard header.type.carriesTensor else {
            throw .inconsistentHeader("\(header.type) message carries no tensor")
        }
        guard header.keyCount == UInt64(values.count) else {
            throw .elementCountMismatch(expected: values.count, found: header.keyCount)
        }
        let decoder: any GradientCodec
        if let codec {
            guard codec.id == header.codec else { throw .codecMismatch(expected: codec.id, found: header.codec) }
            decoder = codec
        } else {
            decoder = try CodecRegistry.decoder(for: header.codec)
        }
        try withBytes(of: payload) { bytes throws(WireError) in try decoder.decode(bytes, into: values) }
    }

    /// The tensor payload decoded into a new array of `header.keyCount` elements (bounded by the
    /// limits the header was decoded with: rawLength = 4 · keyCount ≤ maxRawBytes).
    public func decodeTensor(codec: (any GradientCodec)? = nil) throws(WireError) -> [Float] {
        guard header.type.carriesTensor else {
            throw .inconsistentHeader("\(header.type) message carries no tensor")
        }
        guard header.keyCount <= UInt64(Int.max / 4) else {
            throw .rawTooLarge(length: header.rawLength, limit: Int.max)
        }
        var values = [Float](repeating: 0, count: Int(header.keyCount))
        let result: Result<Void, WireError> = values.withUnsafeMutableBufferPointer { v in
            Result { () throws(WireError) in try decodeTensor(into: v, codec: codec) }
        }
        try result.get()
        return values
    }

    // MARK: JSON control payloads

    /// A control message whose payload is `body` as JSON (sorted keys, so equal bodies give equal
    /// bytes). Throws `jsonTooLarge` past `maxBytes`.
    public static func control<T: Encodable>(_ header: MessageHeader, body: T,
                                             maxBytes: Int = WireLimits.default.maxJSONBytes) throws(WireError) -> Message {
        precondition(!header.type.carriesTensor, "\(header.type) carries a tensor, not JSON")
        var h = header
        h.codec = .none
        h.keyCount = 0
        return Message(header: h, payload: try jsonPayload(body, maxBytes: maxBytes))
    }

    /// `value` encoded as JSON bytes (sorted keys), at most `maxBytes` long.
    public static func jsonPayload<T: Encodable>(_ value: T, maxBytes: Int = WireLimits.default.maxJSONBytes) throws(WireError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data: Data
        do {
            data = try encoder.encode(value)
        } catch {
            throw .jsonEncoding(String(describing: error))
        }
        guard data.count <= maxBytes else { throw .jsonTooLarge(bytes: data.count, limit: maxBytes) }
        return [UInt8](data)
    }

    /// The payload decoded from JSON as `type`; throws `jsonTooLarge` past `limits.maxJSONBytes`
    /// (checked before parsing) and `jsonDecoding` for anything the decoder refuses.
    public func decodeJSON<T: Decodable>(_ type: T.Type, limits: WireLimits = .default) throws(WireError) -> T {
        guard header.codec == .none else {
            throw .inconsistentHeader("\(header.type) payload is a \(header.codec) tensor, not JSON")
        }
        return try Message.decodeJSON(type, from: payload, maxBytes: limits.maxJSONBytes)
    }

    /// `bytes` decoded from JSON as `type`, refusing more than `maxBytes` before parsing.
    public static func decodeJSON<T: Decodable>(_ type: T.Type, from bytes: [UInt8], maxBytes: Int) throws(WireError) -> T {
        guard bytes.count <= maxBytes else { throw .jsonTooLarge(bytes: bytes.count, limit: maxBytes) }
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch let error as DecodingError {
            throw .jsonDecoding(Message.describe(error))
        } catch {
            throw .jsonDecoding(String(describing: error))
        }
    }

    /// A one-line description of a decoding error: what was wrong and at which key path.
    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }
            return keys.isEmpty ? "top level" : keys.joined(separator: ".")
        }
        switch error {
        case let .typeMismatch(type, context):
            return "expected \(type) at \(path(context)): \(context.debugDescription)"
        case let .valueNotFound(type, context):
            return "missing \(type) value at \(path(context))"
        case let .keyNotFound(key, context):
            return "missing key \"\(key.stringValue)\" at \(path(context))"
        case let .dataCorrupted(context):
            return "invalid JSON at \(path(context)): \(context.debugDescription)"
        @unknown default:
            return String(describing: error)
        }
    }
}
