/// Byte-shuffle then LZ4, chunk by chunk (as Blosc does). Lossless.
///
/// Within each chunk of m values the 4m bytes are regrouped as m first bytes, m second bytes,
/// m third bytes, m fourth bytes (`ByteShuffle`); the sign/exponent bytes of a gradient, whose
/// values share a scale, then form runs that LZ4 finds.
///
/// Payload: a chunked-LZ4 container of the 4 · n bytes, each chunk shuffled on its own.
public struct ShuffleLZ4Codec: GradientCodec {
    /// Uncompressed bytes per LZ4 block (and per shuffle block).
    public let chunkBytes: Int

    public init(chunkBytes: Int = 1 << 16) {
        precondition(chunkBytes > 0 && chunkBytes <= 1 << 24 && chunkBytes % 4 == 0, "chunk size must be a positive multiple of 4 up to 16 MiB")
        self.chunkBytes = chunkBytes
    }

    public var id: CodecID { .shuffleLZ4 }
    public var name: String { "shuffle-lz4" }
    public var isLossless: Bool { true }

    public func encode(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8]) {
        let rawBytes = values.count * 4
        let bound = ChunkedLZ4.bound(rawBytes: rawBytes, chunkBytes: chunkBytes)
        // The shuffle scratch lives past the container's bound in `out` itself, so that a warm
        // buffer needs no allocation.
        let scratchBytes = min(chunkBytes, rawBytes)
        OutputBuffer.resize(&out, to: bound + scratchBytes)
        let source = UnsafeRawPointer(values.baseAddress)
        let written = out.withUnsafeMutableBytes { o in
            ChunkedLZ4.encode(rawBytes: rawBytes, chunkBytes: chunkBytes, out: o.baseAddress!,
                              scratch: o.baseAddress! + bound) { range, scratch in
                ByteShuffle.shuffle4(source! + range.lowerBound, scratch!, count: range.count / 4)
                return UnsafeRawPointer(scratch!)
            }
        }
        OutputBuffer.resize(&out, to: written)
    }

    public func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(WireError) {
        let destination = UnsafeMutableRawPointer(values.baseAddress)
        try ChunkedLZ4.decode(bytes, rawBytes: values.count * 4, elementSize: 4, codec: name, needsScratch: true,
                              target: { _, scratch in scratch! },
                              consume: { range, chunk in
                                  ByteShuffle.unshuffle4(chunk, destination! + range.lowerBound, count: range.count / 4)
                              })
    }
}
