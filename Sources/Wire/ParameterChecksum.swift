/// The parameter checksum of the cluster protocol (version 2): "are the parameters bitwise identical
/// on every replica at this version".
///
/// The buffer is cut into blocks of `blockElements` Float32 values (the last may be shorter); each
/// block's little-endian bytes are hashed with XXH64 (seed 0), and the checksum is the XXH64 (seed 0)
/// of those block hashes written as little-endian UInt64s, in block order. An empty buffer has no
/// blocks: its checksum is XXH64 of no bytes.
///
/// Why blocks instead of one XXH64 over the whole buffer (protocol version 1): a whole-buffer hash
/// must stream the bytes in order on one thread, so it ran as a separate pass over the replica
/// (40 MB for the reference model) after the optimiser had written it. Block hashes can be taken by
/// whichever optimiser thread just wrote a block, while it is still in cache (`ParameterChecksumCache`);
/// the loopback benchmark spent about 9% of its step on the separate passes (docs/benchmarks.md).
public enum ParameterChecksum {
    /// Values per block (32 KiB of Float32): the optimiser's fused block (`Adam.fusedBlock`).
    public static let blockElements = 8192

    /// Blocks of a buffer of `count` values.
    public static func blockCount(_ count: Int) -> Int {
        (count + blockElements - 1) / blockElements
    }

    /// The elements of block `b` of a buffer of `count` values.
    public static func blockRange(_ b: Int, count: Int) -> Range<Int> {
        (b * blockElements)..<min((b + 1) * blockElements, count)
    }

    /// XXH64 of one block's values.
    @inlinable
    public static func hash(block values: UnsafePointer<Float>, count: Int) -> UInt64 {
        XXH64.hash(UnsafeRawBufferPointer(start: UnsafeRawPointer(values), count: count * MemoryLayout<Float>.size))
    }

    /// The checksum from the block hashes, in block order (about 1,200 of them for 10 M values).
    public static func combine(_ blockHashes: UnsafeBufferPointer<UInt64>) -> UInt64 {
        blockHashes.map(\.littleEndian).withUnsafeBytes { XXH64.hash($0) }
    }

    /// The checksum of `values`, computed whole (every block hashed now).
    public static func of(_ values: UnsafeBufferPointer<Float>) -> UInt64 {
        guard let base = values.baseAddress, !values.isEmpty else { return combine(UnsafeBufferPointer(start: nil, count: 0)) }
        return ParameterChecksumCache(count: values.count).checksum(base)
    }

    /// The checksum of `values`, computed whole.
    public static func of(_ values: [Float]) -> UInt64 {
        values.withUnsafeBufferPointer { of($0) }
    }
}

/// The block hashes of one parameter buffer, taken as the buffer is written, so the parameter
/// checksum needs no pass of its own.
///
/// The owner of the buffer calls `invalidate` before it writes a range and `record` on pieces it
/// has just written (the blocks wholly inside a piece are hashed then, from cache); `checksum`
/// hashes whatever blocks are not recorded and combines. Pieces recorded at once on different
/// threads must not share a block (a block only partly inside a piece is left for `checksum`).
/// A write that skips `invalidate` leaves a stale hash: the owner must route every write of the
/// buffer through itself (tests compare against `ParameterChecksum.of`).
public final class ParameterChecksumCache: @unchecked Sendable {
    /// Values in the buffer.
    public let count: Int
    private let hashes: UnsafeMutablePointer<UInt64>
    private let recorded: UnsafeMutablePointer<Bool>
    private let blocks: Int

    public init(count: Int) {
        precondition(count >= 0)
        self.count = count
        blocks = ParameterChecksum.blockCount(count)
        hashes = .allocate(capacity: max(blocks, 1))
        recorded = .allocate(capacity: max(blocks, 1))
        recorded.initialize(repeating: false, count: max(blocks, 1))
        hashes.initialize(repeating: 0, count: max(blocks, 1))
    }

    deinit {
        hashes.deallocate()
        recorded.deallocate()
    }

    /// Blocks whose hash is recorded now (tests check the optimiser really hashed as it wrote).
    public var recordedBlocks: Int { (0..<blocks).reduce(0) { $0 + (recorded[$1] ? 1 : 0) } }

    /// Forgets the hash of every block that overlaps `range`.
    public func invalidate(_ range: Range<Int>) {
        guard !range.isEmpty else { return }
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "range \(range) outside 0..<\(count)")
        let b = ParameterChecksum.blockElements
        let first = range.lowerBound / b, last = (range.upperBound - 1) / b
        (recorded + first).update(repeating: false, count: last - first + 1)
    }

    /// Forgets every block's hash.
    public func invalidateAll() {
        recorded.update(repeating: false, count: max(blocks, 1))
    }

    /// Hashes the blocks of `values` (the whole buffer) that lie wholly inside `range`.
    public func record(_ values: UnsafePointer<Float>, range: Range<Int>) {
        guard !range.isEmpty else { return }
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "range \(range) outside 0..<\(count)")
        let b = ParameterChecksum.blockElements
        var block = (range.lowerBound + b - 1) / b
        while block < blocks {
            let r = ParameterChecksum.blockRange(block, count: count)
            guard r.upperBound <= range.upperBound else { return }
            hashes[block] = ParameterChecksum.hash(block: values + r.lowerBound, count: r.count)
            recorded[block] = true
            block += 1
        }
    }

    /// The parameter checksum of `values` (the whole buffer): hashes the blocks not recorded
    /// (and records them), then combines.
    public func checksum(_ values: UnsafePointer<Float>) -> UInt64 {
        for block in 0..<blocks where !recorded[block] {
            let r = ParameterChecksum.blockRange(block, count: count)
            hashes[block] = ParameterChecksum.hash(block: values + r.lowerBound, count: r.count)
            recorded[block] = true
        }
        return ParameterChecksum.combine(UnsafeBufferPointer(start: hashes, count: blocks))
    }
}
