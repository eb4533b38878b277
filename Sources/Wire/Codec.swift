/// The encoding of a message payload, as written in the header. Raw values are part of the
/// protocol: never renumber a case (docs/protocol.md, "Codecs").
public enum CodecID: UInt16, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// Not a tensor: a JSON control body, or empty.
    case none = 0
    /// Float32 little-endian, as is.
    case raw = 1
    /// Chunked LZ4 of the Float32 bytes.
    case lz4 = 2
    /// Byte-shuffled Float32 bytes, chunked LZ4.
    case shuffleLZ4 = 3
    /// bfloat16 (round to nearest even), 2 bytes per element.
    case bf16 = 4
    /// IEEE binary16 (round to nearest even), 2 bytes per element.
    case fp16 = 5
    /// bfloat16, byte-shuffled, chunked LZ4.
    case bf16LZ4 = 6
    /// IEEE binary16, byte-shuffled, chunked LZ4.
    case fp16LZ4 = 7
    /// Top-k sparsification: delta-varint indices and Float32 values, chunked LZ4.
    case topK = 8

    public var description: String {
        switch self {
        case .none: "none"
        case .raw: "raw"
        case .lz4: "lz4"
        case .shuffleLZ4: "shuffle-lz4"
        case .bf16: "bf16"
        case .fp16: "fp16"
        case .bf16LZ4: "bf16-lz4"
        case .fp16LZ4: "fp16-lz4"
        case .topK: "topk"
        }
    }
}

/// Turns a Float32 buffer (a gradient, parameters, an update) into payload bytes and back.
///
/// Contract for every codec:
/// - `encode` replaces the contents of `out`; it reuses `out`'s capacity, so encoding buffers of
///   the same size again and again allocates nothing after the first call.
/// - `decode` takes the element count from the destination and throws unless the bytes encode
///   exactly that many elements. It is a pure function of the bytes: truncated, extended or
///   garbage input gives a `WireError`, never a trap, and it allocates at most a bounded amount
///   that depends on the destination size, never on a length read from the bytes.
/// - Lossless codecs reproduce every bit (NaN payloads, infinities, subnormals, -0.0).
/// - Lossy codecs document their error bound next to their type.
public protocol GradientCodec: Sendable {
    /// The id written in the message header.
    var id: CodecID { get }
    /// The name `CodecRegistry.codec(named:)` accepts for this codec (with its parameter, if any).
    var name: String { get }
    /// True when `decode(encode(x))` is bitwise equal to `x` for every `x`.
    var isLossless: Bool { get }
    /// Encodes `values` into `out`, replacing its contents. Every byte of the result is written
    /// (a fresh `out` is not zero-filled: `OutputBuffer.resize`).
    func encode(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8])
    /// Decodes `bytes` into `values`, which must have exactly the encoded element count.
    func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(WireError)
}

extension GradientCodec {
    /// Encodes an array (convenience; allocates the result).
    public func encode(_ values: [Float]) -> [UInt8] {
        var out: [UInt8] = []
        values.withUnsafeBufferPointer { encode($0, into: &out) }
        return out
    }

    /// Decodes `count` elements into a new array (convenience; allocates the result).
    public func decode(_ bytes: [UInt8], count: Int) throws(WireError) -> [Float] {
        var values = [Float](repeating: 0, count: count)
        let result: Result<Void, WireError> = bytes.withUnsafeBytes { b in
            values.withUnsafeMutableBufferPointer { v in
                Result { () throws(WireError) in try decode(b, into: v) }
            }
        }
        try result.get()
        return values
    }
}

/// Builds codecs from their names (command line, run configuration) and from header ids.
///
/// Stateless: codecs are values, and this only maps names to them.
public enum CodecRegistry {
    /// Every name `codec(named:)` accepts; "topk:FRACTION" takes a fraction in (0, 1], e.g. "topk:0.01".
    public static let validNames = ["raw", "lz4", "shuffle-lz4", "bf16", "fp16", "bf16-lz4", "fp16-lz4",
                                    "topk:FRACTION"]

    /// The codec with this name, or `WireError.unknownCodecName` listing the valid names.
    public static func codec(named name: String) throws(WireError) -> any GradientCodec {
        switch name {
        case "raw": return RawCodec()
        case "lz4": return LZ4Codec()
        case "shuffle-lz4": return ShuffleLZ4Codec()
        case "bf16": return HalfPrecisionCodec(format: .bfloat16, compressed: false)
        case "fp16": return HalfPrecisionCodec(format: .binary16, compressed: false)
        case "bf16-lz4": return HalfPrecisionCodec(format: .bfloat16, compressed: true)
        case "fp16-lz4": return HalfPrecisionCodec(format: .binary16, compressed: true)
        default:
            if name.hasPrefix("topk:") {
                let text = name.dropFirst("topk:".count)
                guard let fraction = Double(text), fraction > 0, fraction <= 1 else {
                    throw .invalidCodecParameter("top-k fraction \"\(text)\" must be a number in (0, 1], e.g. topk:0.01")
                }
                return TopKCodec(fraction: fraction)
            }
            throw .unknownCodecName(name, valid: validNames)
        }
    }

    /// A codec that can decode any payload written with `id` (for top-k, any fraction).
    public static func decoder(for id: CodecID) throws(WireError) -> any GradientCodec {
        switch id {
        case .none: throw .inconsistentHeader("codec none carries no tensor")
        case .raw: return RawCodec()
        case .lz4: return LZ4Codec()
        case .shuffleLZ4: return ShuffleLZ4Codec()
        case .bf16: return HalfPrecisionCodec(format: .bfloat16, compressed: false)
        case .fp16: return HalfPrecisionCodec(format: .binary16, compressed: false)
        case .bf16LZ4: return HalfPrecisionCodec(format: .bfloat16, compressed: true)
        case .fp16LZ4: return HalfPrecisionCodec(format: .binary16, compressed: true)
        case .topK: return TopKCodec(fraction: 1)
        }
    }
}
