/// The 16-bit float formats a `HalfPrecisionCodec` can send.
public enum HalfFormat: Sendable, Equatable {
    /// bfloat16: Float32's exponent range, 8 significant bits.
    case bfloat16
    /// IEEE binary16: 5 exponent bits (±65504), 11 significant bits.
    case binary16
}

/// bf16 / fp16 codecs: each Float32 rounded to a 16-bit float (`HalfPrecision`), optionally
/// byte-shuffled and LZ4-compressed in chunks. Lossy: halves the bytes before LZ4.
///
/// Error contract (per element, normal range; see `HalfPrecision`): relative error ≤ 2^-8 for
/// bfloat16, ≤ 2^-11 for binary16 (the unit roundoffs of 8 and 11 significant bits). binary16
/// rounds |x| ≥ 65520 to ±infinity, which the coordinator rejects as non-finite, and flushes
/// |x| ≤ 2^-25 to ±0: use bf16 for values that may be large or tiny. NaN stays NaN,
/// ±infinity and ±0 are kept.
///
/// Payload: uncompressed, 2 · n bytes of little-endian 16-bit values; compressed, a chunked-LZ4
/// container of those 2 · n bytes, each chunk byte-shuffled (low bytes, then high bytes).
public struct HalfPrecisionCodec: GradientCodec {
    public let format: HalfFormat
    public let compressed: Bool
    /// Uncompressed (16-bit) bytes per LZ4 block.
    public let chunkBytes: Int

    public init(format: HalfFormat, compressed: Bool, chunkBytes: Int = 1 << 16) {
        precondition(chunkBytes > 0 && chunkBytes <= 1 << 24 && chunkBytes % 4 == 0, "chunk size must be a positive multiple of 4 up to 16 MiB")
        self.format = format
        self.compressed = compressed
        self.chunkBytes = chunkBytes
    }

    public var id: CodecID {
        switch (format, compressed) {
        case (.bfloat16, false): .bf16
        case (.binary16, false): .fp16
        case (.bfloat16, true): .bf16LZ4
        case (.binary16, true): .fp16LZ4
        }
    }

    public var name: String { id.description }
    public var isLossless: Bool { false }

    public func encode(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8]) {
        let n = values.count
        let format = format
        if !compressed {
            OutputBuffer.resize(&out, to: 2 * n)
            guard n > 0 else { return }
            out.withUnsafeMutableBytes { o in
                let dst = o.baseAddress!.assumingMemoryBound(to: UInt16.self)
                switch format {
                case .bfloat16: for i in 0..<n { dst[i] = HalfPrecision.bfloat16Bits(values[i]).littleEndian }
                case .binary16: for i in 0..<n { dst[i] = HalfPrecision.binary16Bits(values[i]).littleEndian }
                }
            }
            return
        }
        let rawBytes = 2 * n
        let bound = ChunkedLZ4.bound(rawBytes: rawBytes, chunkBytes: chunkBytes)
        OutputBuffer.resize(&out, to: bound + min(chunkBytes, rawBytes))
        let written = out.withUnsafeMutableBytes { o in
            ChunkedLZ4.encode(rawBytes: rawBytes, chunkBytes: chunkBytes, out: o.baseAddress!,
                              scratch: o.baseAddress! + bound) { range, scratch in
                // Round and shuffle in one pass: low bytes first, then high bytes.
                let m = range.count / 2
                let first = range.lowerBound / 2
                let low = scratch!.assumingMemoryBound(to: UInt8.self)
                let high = low + m
                switch format {
                case .bfloat16:
                    for i in 0..<m {
                        let h = HalfPrecision.bfloat16Bits(values[first + i])
                        low[i] = UInt8(truncatingIfNeeded: h)
                        high[i] = UInt8(truncatingIfNeeded: h >> 8)
                    }
                case .binary16:
                    for i in 0..<m {
                        let h = HalfPrecision.binary16Bits(values[first + i])
                        low[i] = UInt8(truncatingIfNeeded: h)
                        high[i] = UInt8(truncatingIfNeeded: h >> 8)
                    }
                }
                return UnsafeRawPointer(scratch!)
            }
        }
        OutputBuffer.resize(&out, to: written)
    }

    public func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(WireError) {
        let n = values.count
        let format = format
        if !compressed {
            guard bytes.count == 2 * n else {
                if bytes.count % 2 != 0 {
                    throw .corruptPayload(codec: name, reason: "\(bytes.count) bytes is not a whole number of 16-bit values")
                }
                throw .elementCountMismatch(expected: n, found: UInt64(bytes.count / 2))
            }
            switch format {
            case .bfloat16:
                for i in 0..<n {
                    values[i] = HalfPrecision.float(bfloat16Bits: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            case .binary16:
                for i in 0..<n {
                    values[i] = HalfPrecision.float(binary16Bits: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            }
            return
        }
        try ChunkedLZ4.decode(bytes, rawBytes: 2 * n, elementSize: 2, codec: name, needsScratch: true,
                              target: { _, scratch in scratch! },
                              consume: { range, chunk in
                                  let m = range.count / 2
                                  let first = range.lowerBound / 2
                                  let low = chunk.assumingMemoryBound(to: UInt8.self)
                                  let high = low + m
                                  switch format {
                                  case .bfloat16:
                                      for i in 0..<m {
                                          values[first + i] = HalfPrecision.float(bfloat16Bits: UInt16(low[i]) | UInt16(high[i]) << 8)
                                      }
                                  case .binary16:
                                      for i in 0..<m {
                                          values[first + i] = HalfPrecision.float(binary16Bits: UInt16(low[i]) | UInt16(high[i]) << 8)
                                      }
                                  }
                              })
    }
}
