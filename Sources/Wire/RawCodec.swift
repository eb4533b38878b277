#if !_endian(little)
#error("The wire format is little-endian and the codecs copy Float32 memory as is: port them first.")
#endif

/// Float32 values as they are in memory: 4 little-endian bytes each. Lossless; the reference
/// every other codec is compared against.
///
/// Payload: exactly 4 · n bytes.
public struct RawCodec: GradientCodec {
    public init() {}
    public var id: CodecID { .raw }
    public var name: String { "raw" }
    public var isLossless: Bool { true }

    public func encode(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8]) {
        let n = values.count * 4
        OutputBuffer.resize(&out, to: n)
        guard n > 0 else { return }
        out.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: values.baseAddress!, byteCount: n) }
    }

    public func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(WireError) {
        guard bytes.count == values.count * 4 else {
            if bytes.count % 4 != 0 {
                throw .corruptPayload(codec: name, reason: "\(bytes.count) bytes is not a whole number of Float32 values")
            }
            throw .elementCountMismatch(expected: values.count, found: UInt64(bytes.count / 4))
        }
        guard bytes.count > 0 else { return }
        UnsafeMutableRawPointer(values.baseAddress!).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }
}
