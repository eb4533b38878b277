/// Top-k sparsification: sends only the k = ceil(fraction · n) entries of largest magnitude,
/// exactly (Float32), and zero for every other entry. Lossy; use it through `ErrorFeedback` so the
/// entries not sent are carried to later steps instead of lost.
///
/// Selection is exact and deterministic: the k-th largest magnitude T is found by a three-pass
/// radix select on the 31 magnitude bits of each Float32 (11 + 11 + 9 bits, a histogram per pass,
/// O(n), no sort and no scratch beyond a 2048-bin histogram), then every entry with |g| > T is
/// kept and entries with |g| = T are kept in index order until there are k. Magnitudes are ordered
/// by their bit patterns, which orders finite values and infinity as numbers and puts NaN above
/// infinity, so NaN and infinite entries are always sent (and then rejected by the receiver's
/// finiteness check, never silently dropped).
///
/// Payload (little-endian; docs/protocol.md, "Top-k"):
///
/// | size | field                                                                  |
/// |-----:|------------------------------------------------------------------------|
/// |    8 | n: element count (must equal the destination's)                        |
/// |    8 | k: entries sent, k ≤ n                                                 |
/// |  ... | chunked-LZ4 container of the body:                                     |
/// |      |   k unsigned LEB128 varints: the first index, then each gap − 1 (indices strictly increase) |
/// |      |   4 · k bytes: the k Float32 values, byte-shuffled as one block       |
public struct TopKCodec: GradientCodec {
    /// Fraction of entries sent, in (0, 1].
    public let fraction: Double
    /// Uncompressed bytes per LZ4 block.
    public let chunkBytes: Int

    public init(fraction: Double, chunkBytes: Int = 1 << 16) {
        precondition(fraction > 0 && fraction <= 1, "top-k fraction must be in (0, 1]")
        precondition(chunkBytes > 0 && chunkBytes <= 1 << 24 && chunkBytes % 4 == 0, "chunk size must be a positive multiple of 4 up to 16 MiB")
        self.fraction = fraction
        self.chunkBytes = chunkBytes
    }

    public var id: CodecID { .topK }
    public var name: String { "topk:\(fraction)" }
    public var isLossless: Bool { false }

    /// The number of entries sent for `n` values: ceil(fraction · n), at least 1 when n > 0.
    public func keptCount(for n: Int) -> Int {
        guard n > 0 else { return 0 }
        return min(n, max(1, Int((fraction * Double(n)).rounded(.up))))
    }

    private static let prefixBytes = 16

    /// The largest body k entries out of n can need: no gap exceeds n − 1.
    static func maxBodyBytes(n: Int, k: Int) -> Int {
        var varintBytes = 1
        var rest = UInt64(max(n - 1, 0)) >> 7
        while rest > 0 { varintBytes += 1; rest >>= 7 }
        return k * (varintBytes + 4)
    }
    private static let magnitudeMask: UInt32 = 0x7FFF_FFFF

    public func encode(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8]) {
        let n = values.count
        let k = keptCount(for: n)
        // Regions of `out`: [prefix][container bound][body (varints + values)][unshuffled values].
        let bodyMax = TopKCodec.maxBodyBytes(n: n, k: k)
        let bound = ChunkedLZ4.bound(rawBytes: bodyMax, chunkBytes: chunkBytes)
        OutputBuffer.resize(&out, to: TopKCodec.prefixBytes + bound + bodyMax + 4 * k)
        let (threshold, ties) = k == n ? (0, n) : TopKCodec.select(values, k: k)
        let chunkBytes = chunkBytes
        let written = out.withUnsafeMutableBytes { o -> Int in
            let base = o.baseAddress!
            base.storeBytes(of: UInt64(n).littleEndian, as: UInt64.self)
            base.storeBytes(of: UInt64(k).littleEndian, toByteOffset: 8, as: UInt64.self)
            let body = (base + TopKCodec.prefixBytes + bound).assumingMemoryBound(to: UInt8.self)
            let kept = (base + TopKCodec.prefixBytes + bound + bodyMax).assumingMemoryBound(to: UInt32.self)
            var pos = 0, j = 0, previous = -1, tiesLeft = ties
            if k == n {
                for i in 0..<n {
                    pos += OutputBuffer.putVarint(UInt64(i - previous - 1), at: body + pos)
                    kept[j] = values[i].bitPattern
                    j += 1
                    previous = i
                }
            } else {
                for i in 0..<n {
                    let bits = values[i].bitPattern
                    let key = bits & TopKCodec.magnitudeMask
                    guard key >= threshold else { continue }
                    if key == threshold {
                        guard tiesLeft > 0 else { continue }
                        tiesLeft -= 1
                    }
                    pos += OutputBuffer.putVarint(UInt64(i - previous - 1), at: body + pos)
                    kept[j] = bits
                    j += 1
                    previous = i
                }
            }
            precondition(j == k, "top-k selected \(j) entries, expected \(k)")
            if k > 0 { ByteShuffle.shuffle4(UnsafeRawPointer(kept), body + pos, count: k) }
            let bodyBytes = pos + 4 * k
            return TopKCodec.prefixBytes + ChunkedLZ4.encode(
                rawBytes: bodyBytes, chunkBytes: chunkBytes, out: base + TopKCodec.prefixBytes, scratch: nil
            ) { range, _ in UnsafeRawPointer(body + range.lowerBound) }
        }
        OutputBuffer.resize(&out, to: written)
    }

    /// The k-th largest magnitude key T (radix select over 11 + 11 + 9 bits) and how many entries
    /// with key exactly T belong to the top k (the rest of the top k have keys above T).
    static func select(_ values: UnsafeBufferPointer<Float>, k: Int) -> (threshold: UInt32, ties: Int) {
        precondition(k >= 1 && k <= values.count)
        var prefix: UInt32 = 0
        var prefixMask: UInt32 = 0
        var wanted = k  // entries still to choose among those matching the prefix, largest first
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2048) { histogram in
            radixPass(values, shift: 20, width: 11, histogram, &prefix, &prefixMask, &wanted)
            radixPass(values, shift: 9, width: 11, histogram, &prefix, &prefixMask, &wanted)
            radixPass(values, shift: 0, width: 9, histogram, &prefix, &prefixMask, &wanted)
        }
        return (prefix, wanted)
    }

    /// One radix-select pass: histograms the `width`-bit digit at `shift` of the keys matching
    /// the prefix so far, picks the digit that holds the `wanted`-th largest, extends the prefix
    /// with it, and subtracts from `wanted` the entries above that digit.
    @inline(__always)
    private static func radixPass(_ values: UnsafeBufferPointer<Float>, shift: UInt32, width: UInt32,
                                  _ histogram: UnsafeMutableBufferPointer<Int>,
                                  _ prefix: inout UInt32, _ prefixMask: inout UInt32, _ wanted: inout Int) {
        let bins = 1 << Int(width)
        let digitMask = UInt32(bins - 1)
        let (p, m) = (prefix, prefixMask)
        histogram.initialize(repeating: 0)
        for v in values {
            let key = v.bitPattern & magnitudeMask
            if key & m == p {
                histogram[Int((key >> shift) & digitMask)] &+= 1
            }
        }
        var above = 0
        var bin = bins - 1
        while bin > 0 && above + histogram[bin] < wanted {
            above += histogram[bin]
            bin -= 1
        }
        wanted -= above
        prefix |= UInt32(bin) << shift
        prefixMask |= digitMask << shift
    }

    public func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(WireError) {
        let n = values.count
        var reader = ByteReader(bytes, context: "top-k header")
        let storedN = try reader.u64()
        guard storedN == UInt64(n) else { throw .elementCountMismatch(expected: n, found: storedN) }
        let storedK = try reader.u64()
        guard storedK <= storedN else {
            throw .corruptPayload(codec: "topk", reason: "k = \(storedK) exceeds n = \(storedN)")
        }
        let k = Int(storedK)
        // The body's length, read ahead from the container and bounded by the destination's size
        // before anything is allocated: each gap varint takes 1 to varintLength(n - 1) bytes and
        // each value 4.
        var peek = reader
        peek.context = "top-k container"
        let bodyLength = try peek.u64()
        guard bodyLength >= UInt64(5 * k) && bodyLength <= UInt64(TopKCodec.maxBodyBytes(n: n, k: k)) else {
            throw .corruptPayload(codec: "topk", reason: "body of \(bodyLength) bytes cannot hold \(k) entries")
        }
        let bodyBytes = Int(bodyLength)
        let body = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bodyBytes, 1), alignment: 16)
        defer { body.deallocate() }
        let container = try reader.take(UInt64(reader.remaining))
        let bodyBase = body.baseAddress!
        try ChunkedLZ4.decode(container, rawBytes: bodyBytes, elementSize: 1, codec: "topk", needsScratch: false,
                              target: { range, _ in bodyBase + range.lowerBound },
                              consume: { range, chunk in
                                  let dst = bodyBase + range.lowerBound
                                  if UnsafeRawPointer(dst) != chunk { dst.copyMemory(from: chunk, byteCount: range.count) }
                              })

        let varintBytes = bodyBytes - 4 * k
        var indices = ByteReader(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(body)[0..<varintBytes]),
                                 context: "top-k indices")
        let shuffled = UnsafeRawPointer(bodyBase + varintBytes).assumingMemoryBound(to: UInt8.self)
        if n > 0 { values.update(repeating: 0) }
        var next: UInt64 = 0  // smallest index the next entry may have
        for j in 0..<k {
            let gap = try indices.varint()
            guard gap < UInt64(n) - next else {
                throw .corruptPayload(codec: "topk", reason: "entry \(j) points past the \(n) elements")
            }
            let index = Int(next + gap)
            let bits = UInt32(shuffled[j]) | UInt32(shuffled[k + j]) << 8
                | UInt32(shuffled[2 * k + j]) << 16 | UInt32(shuffled[3 * k + j]) << 24
            values[index] = Float(bitPattern: bits)
            next = UInt64(index) + 1
        }
        try indices.expectEnd()
    }
}
