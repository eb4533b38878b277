/// LZ4 on the Float32 bytes as they are, in chunks (see `ChunkedLZ4`). Lossless.
///
/// Float gradients barely compress this way (about 1.0-1.1x: mantissa bytes are noise and break
/// every match); it is here as the baseline that `ShuffleLZ4Codec` improves on, and for
/// buffers with many exact zeros or repeats (masked or frozen parameters).
///
/// Payload: a chunked-LZ4 container of the 4 · n raw bytes.
public struct LZ4Codec: GradientCodec {
    /// Uncompressed bytes per LZ4 block.
    public let chunkBytes: Int

    public init(chunkBytes: Int = 1 << 16) {
        precondition(chunkBytes > 0 && chunkBytes <= 1 << 24 && chunkBytes % 4 == 0, "chunk size must be a positive multiple of 4 up to 16 MiB")
        self.chunkBytes = chunkBytes
    }

    public var id: CodecID { .lz4 }
    public var name: String { "lz4" }
    public var isLossless: Bool { true }

    public func encode(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8]) {
        let rawBytes = values.count * 4
        OutputBuffer.resize(&out, to: ChunkedLZ4.bound(rawBytes: rawBytes, chunkBytes: chunkBytes))
        let source = UnsafeRawPointer(values.baseAddress)
        let written = out.withUnsafeMutableBytes { o in
            ChunkedLZ4.encode(rawBytes: rawBytes, chunkBytes: chunkBytes, out: o.baseAddress!, scratch: nil) { range, _ in
                source! + range.lowerBound
            }
        }
        OutputBuffer.resize(&out, to: written)
    }

    public func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(WireError) {
        let destination = UnsafeMutableRawPointer(values.baseAddress)
        try ChunkedLZ4.decode(bytes, rawBytes: values.count * 4, elementSize: 4, codec: name, needsScratch: false,
                              target: { range, _ in destination! + range.lowerBound },
                              consume: { range, chunk in
                                  let dst = destination! + range.lowerBound
                                  if UnsafeRawPointer(dst) != chunk { dst.copyMemory(from: chunk, byteCount: range.count) }
                              })
    }
}
