/// How the flat parameter (and gradient) buffer is cut into the chunks that gradients and
/// updates travel in: contiguous, non-empty, covering `0..<parameterCount` in order. Chunks are
/// the unit of the shard-order reduction (each chunk is summed over shards on its own) and the
/// unit a range owner of the sharded reduction owns (`RangeOwnerMap`).
public struct ChunkPlan: Sendable, Equatable {
    public let ranges: [Range<Int>]
    private let indexByOffset: [Int: Int]

    /// Throws unless `ranges` are non-empty and cover `0..<parameterCount` contiguously.
    public init(ranges: [Range<Int>], parameterCount: Int) throws(ClusterError) {
        guard let first = ranges.first, first.lowerBound == 0, ranges.last!.upperBound == parameterCount,
              zip(ranges, ranges.dropFirst()).allSatisfy({ $0.upperBound == $1.lowerBound }), ranges.allSatisfy({ !$0.isEmpty }) else {
            throw ClusterError("the gradient chunks must cover 0..<\(parameterCount) contiguously, none empty")
        }
        self.ranges = ranges
        indexByOffset = Dictionary(uniqueKeysWithValues: ranges.enumerated().map { ($1.lowerBound, $0) })
    }

    /// The plan of a welcome's `chunkOffsets` (start of each chunk; the last ends at
    /// `parameterCount`), or nil if they do not start at 0 and increase strictly below it.
    public init?(offsets: [Int], parameterCount: Int) {
        guard let last = offsets.last, last < parameterCount, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }) else { return nil }
        let ranges = offsets.indices.map { offsets[$0]..<(($0 + 1 < offsets.count) ? offsets[$0 + 1] : parameterCount) }
        guard let plan = try? ChunkPlan(ranges: ranges, parameterCount: parameterCount) else { return nil }
        self = plan
    }

    public var count: Int { ranges.count }
    public var parameterCount: Int { ranges.last!.upperBound }
    public var offsets: [Int] { ranges.map(\.lowerBound) }
    public subscript(_ c: Int) -> Range<Int> { ranges[c] }

    /// The chunk a tensor message's key range names, or nil unless it is exactly one chunk.
    /// Takes the header's unsigned fields as they are: nothing from the network is converted
    /// before it is known to fit.
    public func chunk(keyOffset: UInt64, keyCount: UInt64) -> Int? {
        guard let offset = Int(exactly: keyOffset), let c = indexByOffset[offset], keyCount == UInt64(ranges[c].count) else { return nil }
        return c
    }
}

extension WelcomeBody {
    /// The chunk plan of this welcome for a model of `parameterCount` parameters (nil if the
    /// offsets do not fit it).
    public func chunkPlan(parameterCount: Int) -> ChunkPlan? {
        guard problem == nil else { return nil }
        return ChunkPlan(offsets: chunkOffsets, parameterCount: parameterCount)
    }

    /// The gradient chunks for a model of `parameterCount` parameters (nil if the offsets do
    /// not fit it).
    public func chunkRanges(parameterCount: Int) -> [Range<Int>]? {
        chunkPlan(parameterCount: parameterCount)?.ranges
    }
}
