/// Why bytes from the wire were rejected, or why a value could not be put on the wire.
///
/// Every decoder in this module throws only `WireError` (typed throws), so the coordinator can
/// count rejections by `kind` and log `description` without a catch-all. The associated values
/// are what was found and what was expected, never the offending bytes themselves.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A message did not have exactly the frames [header, payload].
    case frameCount(found: Int, expected: Int)
    /// The header frame was not exactly `MessageHeader.size` bytes long.
    case headerSize(found: Int, expected: Int)
    /// The header did not start with "AMBW".
    case badMagic(found: UInt32)
    /// The sender speaks a protocol version this build does not.
    case unsupportedVersion(found: UInt16, supported: UInt16)
    /// The header's message type is not one of `MessageType`.
    case unknownMessageType(UInt16)
    /// The header's codec is not one of `CodecID`.
    case unknownCodec(UInt16)
    /// Must-understand flag bits (the low 16) that this version does not define were set.
    case unsupportedFlags(UInt32)
    /// The reserved header field was not zero.
    case reservedNotZero(UInt16)
    /// The header checksum does not match the header bytes: corruption or a bug in the sender.
    case headerChecksumMismatch(stored: UInt64, computed: UInt64)
    /// The encoded payload length is above the configured maximum.
    case payloadTooLarge(length: UInt64, limit: Int)
    /// The decoded (raw) length is above the configured maximum.
    case rawTooLarge(length: UInt64, limit: Int)
    /// The payload frame's size differs from the header's encoded length.
    case payloadLengthMismatch(header: UInt64, frame: Int)
    /// The payload checksum does not match the payload bytes.
    case payloadChecksumMismatch(stored: UInt64, computed: UInt64)
    /// A message with `MessageFlags.uncheckedPayload` arrived on a link the receiver does not count
    /// as sealed (neither CURVE nor loopback): its payload cannot be trusted.
    case uncheckedPayloadOnOpenLink
    /// The key range [offset, offset + count) ends past `MessageHeader.maxIndex` (2^63 - 1).
    case invalidKeyRange(offset: UInt64, count: UInt64)
    /// A header counter (step, parameter version) is above `MessageHeader.maxIndex` (2^63 - 1),
    /// so it could not be a signed 64-bit index on the receiver.
    case fieldOutOfRange(field: String, value: UInt64, limit: UInt64)
    /// Header fields that contradict each other (the reason says which).
    case inconsistentHeader(String)
    /// The number of elements in an encoded tensor differs from the destination's.
    case elementCountMismatch(expected: Int, found: UInt64)
    /// The bytes end before the structure they describe does.
    case truncated(context: String, needed: UInt64, available: Int)
    /// Bytes were left over after the structure ended.
    case trailingBytes(context: String, count: Int)
    /// The payload is structurally invalid for its codec (the reason says how).
    case corruptPayload(codec: String, reason: String)
    /// The payload was encoded by another codec than the one asked to decode it.
    case codecMismatch(expected: CodecID, found: CodecID)
    /// A JSON control payload is larger than the configured maximum.
    case jsonTooLarge(bytes: Int, limit: Int)
    /// A value could not be encoded as JSON.
    case jsonEncoding(String)
    /// A JSON control payload could not be decoded into the expected type.
    case jsonDecoding(String)
    /// No codec has this name; `valid` lists the names that exist.
    case unknownCodecName(String, valid: [String])
    /// A codec name had an invalid parameter (for example "topk:2").
    case invalidCodecParameter(String)
    /// A value to be encoded was NaN or infinite where only finite values are accepted.
    case nonFiniteValue(index: Int)

    /// A short, stable identifier of the case, for counters and log fields.
    public var kind: String {
        switch self {
        case .frameCount: "frame_count"
        case .headerSize: "header_size"
        case .badMagic: "bad_magic"
        case .unsupportedVersion: "unsupported_version"
        case .unknownMessageType: "unknown_message_type"
        case .unknownCodec: "unknown_codec"
        case .unsupportedFlags: "unsupported_flags"
        case .reservedNotZero: "reserved_not_zero"
        case .headerChecksumMismatch: "header_checksum"
        case .payloadTooLarge: "payload_too_large"
        case .rawTooLarge: "raw_too_large"
        case .payloadLengthMismatch: "payload_length"
        case .payloadChecksumMismatch: "payload_checksum"
        case .uncheckedPayloadOnOpenLink: "unchecked_payload"
        case .invalidKeyRange: "invalid_key_range"
        case .fieldOutOfRange: "field_out_of_range"
        case .inconsistentHeader: "inconsistent_header"
        case .elementCountMismatch: "element_count"
        case .truncated: "truncated"
        case .trailingBytes: "trailing_bytes"
        case .corruptPayload: "corrupt_payload"
        case .codecMismatch: "codec_mismatch"
        case .jsonTooLarge: "json_too_large"
        case .jsonEncoding: "json_encoding"
        case .jsonDecoding: "json_decoding"
        case .unknownCodecName: "unknown_codec_name"
        case .invalidCodecParameter: "invalid_codec_parameter"
        case .nonFiniteValue: "non_finite_value"
        }
    }

    public var description: String {
        switch self {
        case let .frameCount(found, expected):
            "message has \(found) frames, expected \(expected) ([header, payload]) or \(expected + 1) ([header, payload, meta])"
        case let .headerSize(found, expected):
            "header frame is \(found) bytes, expected exactly \(expected)"
        case let .badMagic(found):
            "bad magic 0x\(String(found, radix: 16)) (expected \"AMBW\"): not an Ambient wire message"
        case let .unsupportedVersion(found, supported):
            "protocol version \(found) is not supported (this build speaks version \(supported))"
        case let .unknownMessageType(raw):
            "unknown message type \(raw)"
        case let .unknownCodec(raw):
            "unknown codec id \(raw)"
        case let .unsupportedFlags(bits):
            "unsupported must-understand flags 0x\(String(bits, radix: 16))"
        case let .reservedNotZero(value):
            "reserved header field is \(value), must be 0"
        case let .headerChecksumMismatch(stored, computed):
            "header checksum mismatch: stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))"
        case let .payloadTooLarge(length, limit):
            "encoded payload of \(length) bytes exceeds the limit of \(limit) bytes"
        case let .rawTooLarge(length, limit):
            "decoded payload of \(length) bytes exceeds the limit of \(limit) bytes"
        case let .payloadLengthMismatch(header, frame):
            "header announces a \(header)-byte payload but the payload frame has \(frame) bytes"
        case let .payloadChecksumMismatch(stored, computed):
            "payload checksum mismatch: stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))"
        case .uncheckedPayloadOnOpenLink:
            "a payload without a checksum (flag unchecked_payload) arrived on a link that is not sealed; only CURVE or loopback links may carry one"
        case let .invalidKeyRange(offset, count):
            "key range offset \(offset) + count \(count) ends past 2^63 - 1"
        case let .fieldOutOfRange(field, value, limit):
            "header field \(field) is \(value), above the limit \(limit)"
        case let .inconsistentHeader(reason):
            "inconsistent header: \(reason)"
        case let .elementCountMismatch(expected, found):
            "encoded tensor has \(found) elements, destination has \(expected)"
        case let .truncated(context, needed, available):
            "\(context): truncated, needs \(needed) bytes but only \(available) are left"
        case let .trailingBytes(context, count):
            "\(context): \(count) unexpected trailing bytes"
        case let .corruptPayload(codec, reason):
            "corrupt \(codec) payload: \(reason)"
        case let .codecMismatch(expected, found):
            "payload was encoded with codec \(found) but decoded with \(expected)"
        case let .jsonTooLarge(bytes, limit):
            "JSON control payload of \(bytes) bytes exceeds the limit of \(limit) bytes"
        case let .jsonEncoding(reason):
            "could not encode JSON control payload: \(reason)"
        case let .jsonDecoding(reason):
            "could not decode JSON control payload: \(reason)"
        case let .unknownCodecName(name, valid):
            "unknown codec \"\(name)\"; valid codecs: \(valid.joined(separator: ", "))"
        case let .invalidCodecParameter(reason):
            "invalid codec parameter: \(reason)"
        case let .nonFiniteValue(index):
            "non-finite value (NaN or infinity) at element \(index)"
        }
    }
}
