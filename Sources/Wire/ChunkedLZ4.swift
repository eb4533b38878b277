import CLZ4

/// A container that compresses a byte stream with the LZ4 block format in fixed-size chunks.
///
/// LZ4's block API takes 32-bit sizes, and one block per chunk bounds every size to the chunk
/// size; chunks also allow pipelining and per-chunk parallelism later. 64 KiB chunks match LZ4's
/// 64 KiB match window (bigger chunks would not compress better) and keep a shuffled chunk in L2.
///
/// Layout (little-endian; docs/protocol.md, "Chunked LZ4"):
///
/// | size | field                                                                      |
/// |-----:|----------------------------------------------------------------------------|
/// |    8 | rawBytes: length of the uncompressed stream                               |
/// |    4 | chunkBytes: uncompressed bytes per chunk (last may be shorter); > 0, multiple of 4, ≤ 16 MiB |
/// |  ... | ceil(rawBytes / chunkBytes) chunks, each: u32 word, then `word & 0x7FFFFFFF` bytes |
///
/// A chunk word with bit 31 set marks a stored chunk (its bytes are the raw chunk, used when LZ4
/// does not save at least 1/64); otherwise the bytes are one LZ4 block that must decompress to
/// exactly the chunk's size. Nothing may follow the last chunk.
enum ChunkedLZ4 {
    static let defaultChunkBytes = 1 << 16
    static let maxChunkBytes = 1 << 24
    static let prefixBytes = 12
    static let storedBit: UInt32 = 0x8000_0000
    /// After this many stored chunks in a row, LZ4 is tried on one chunk in `probeEvery` only,
    /// until one compresses again. Float32 gradients never compress (docs/benchmarks.md, "Codecs
    /// on a real gradient": ratio 1.000), and trying every chunk made lz4 cost 5% of a loopback
    /// step against raw. The container is the same format; only which chunks were tried changes.
    static let storedRunBeforeProbing = 4
    static let probeEvery = 16

    /// The largest container `encode` can write for `rawBytes` bytes.
    static func bound(rawBytes: Int, chunkBytes: Int) -> Int {
        let full = rawBytes / chunkBytes, last = rawBytes % chunkBytes
        var total = prefixBytes + full * (4 + Int(LZ4_compressBound(Int32(chunkBytes))))
        if last > 0 { total += 4 + Int(LZ4_compressBound(Int32(last))) }
        return total
    }

    /// Writes the container for a `rawBytes`-byte stream at `out`, which has room for
    /// `bound(rawBytes:chunkBytes:)` bytes; returns the bytes written.
    ///
    /// `chunk(range, scratch)` returns a pointer to the stream's bytes `range`: either into the
    /// caller's data, or into `scratch` (room for `chunkBytes` bytes) after filling it.
    @inline(__always)
    static func encode(rawBytes: Int, chunkBytes: Int, out: UnsafeMutableRawPointer,
                       scratch: UnsafeMutableRawPointer?,
                       chunk: (Range<Int>, UnsafeMutableRawPointer?) -> UnsafeRawPointer) -> Int {
        precondition(chunkBytes > 0 && chunkBytes <= maxChunkBytes && chunkBytes % 4 == 0, "bad LZ4 chunk size")
        out.storeBytes(of: UInt64(rawBytes).littleEndian, as: UInt64.self)
        out.storeBytes(of: UInt32(chunkBytes).littleEndian, toByteOffset: 8, as: UInt32.self)
        var pos = prefixBytes
        var start = 0
        var storedRun = 0
        while start < rawBytes {
            let n = min(chunkBytes, rawBytes - start)
            let src = chunk(start..<(start + n), scratch)
            let wordAt = out + pos
            let dst = wordAt + 4
            let probe = storedRun < storedRunBeforeProbing || (storedRun - storedRunBeforeProbing) % probeEvery == probeEvery - 1
            let compressed = probe ? LZ4_compress_default(src.assumingMemoryBound(to: CChar.self),
                                                          dst.assumingMemoryBound(to: CChar.self),
                                                          Int32(n), LZ4_compressBound(Int32(n))) : 0
            let word: UInt32
            if compressed > 0 && Int(compressed) < n - n / 64 {
                word = UInt32(compressed)
                pos += 4 + Int(compressed)
                storedRun = 0
            } else {
                dst.copyMemory(from: src, byteCount: n)
                word = storedBit | UInt32(n)
                pos += 4 + n
                storedRun += 1
            }
            wordAt.storeBytes(of: word.littleEndian, as: UInt32.self)
            start += n
        }
        return pos
    }

    /// Validates and decompresses a container that must hold exactly `rawBytes` bytes.
    ///
    /// For each chunk, LZ4 decompresses into `target(range, scratch)` (room for the chunk), then
    /// `consume(range, bytes)` receives the chunk's raw bytes: the target, or for a stored chunk
    /// the payload bytes themselves. `scratch` holds min(chunkBytes, rawBytes) bytes, allocated
    /// here only if `needsScratch`; its size never depends on a length read from the bytes.
    static func decode(_ bytes: UnsafeRawBufferPointer, rawBytes: Int, elementSize: Int, codec: String,
                       needsScratch: Bool,
                       target: (Range<Int>, UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer,
                       consume: (Range<Int>, UnsafeRawPointer) -> Void) throws(WireError) {
        var reader = ByteReader(bytes, context: "\(codec) container")
        let storedRaw = try reader.u64()
        guard storedRaw == UInt64(rawBytes) else {
            throw .elementCountMismatch(expected: rawBytes / elementSize, found: storedRaw / UInt64(elementSize))
        }
        let chunkBytes = try reader.u32()
        guard chunkBytes > 0 && chunkBytes <= UInt32(maxChunkBytes) && chunkBytes % 4 == 0 else {
            throw .corruptPayload(codec: codec, reason: "chunk size \(chunkBytes) is not a positive multiple of 4 up to \(maxChunkBytes)")
        }
        let chunkSize = Int(chunkBytes)
        let scratchBytes = needsScratch ? min(chunkSize, rawBytes) : 0
        let scratch = scratchBytes > 0 ? UnsafeMutableRawPointer.allocate(byteCount: scratchBytes, alignment: 16) : nil
        defer { scratch?.deallocate() }

        var start = 0
        var index = 0
        while start < rawBytes {
            let n = min(chunkSize, rawBytes - start)
            reader.context = "\(codec) chunk \(index)"
            let word = try reader.u32()
            let length = word & ~storedBit
            let data = try reader.take(UInt64(length))
            if word & storedBit != 0 {
                guard Int(length) == n else {
                    throw .corruptPayload(codec: codec, reason: "stored chunk \(index) has \(length) bytes, expected \(n)")
                }
                consume(start..<(start + n), data.baseAddress!)
            } else {
                guard length > 0 else {
                    throw .corruptPayload(codec: codec, reason: "chunk \(index) is empty")
                }
                let dst = target(start..<(start + n), scratch)
                let got = LZ4_decompress_safe(data.baseAddress!.assumingMemoryBound(to: CChar.self),
                                              dst.assumingMemoryBound(to: CChar.self), Int32(length), Int32(n))
                guard got == Int32(n) else {
                    throw .corruptPayload(codec: codec, reason: got < 0
                        ? "chunk \(index) is not a valid LZ4 block"
                        : "chunk \(index) decompresses to \(got) bytes, expected \(n)")
                }
                consume(start..<(start + n), UnsafeRawPointer(dst))
            }
            start += n
            index += 1
        }
        reader.context = "\(codec) container"
        try reader.expectEnd()
    }
}
