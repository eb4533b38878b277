import Wire

/// A range owner's side of the sharded reduction for one step: one `ShardOrderReducer` per
/// range it owns in a `RangeOwnerMap`, each over the range's own chunks (rebased to 0). A chunk
/// is summed over shards in shard order 0..<S exactly as the coordinator's whole-buffer reducer
/// does, so the reduced gradient is bitwise the same wherever (and by how many owners) it is
/// reduced. No sockets, threads or clock.
public final class RangeReducer {
    public let map: RangeOwnerMap
    public let owner: UInt32
    public let shardCount: Int
    /// The owned ranges (chunk ranges of the map's plan), in chunk order, and their reducers.
    public let ranges: [Range<Int>]
    private let reducers: [ShardOrderReducer]
    /// Per chunk of the plan: (index in `ranges`, chunk within it), nil when not owned here.
    private let local: [(range: Int, chunk: Int)?]

    public init(map: RangeOwnerMap, owner: UInt32, shardCount: Int) {
        self.map = map
        self.owner = owner
        self.shardCount = shardCount
        ranges = map.chunks(ownedBy: owner)
        var local = [(range: Int, chunk: Int)?](repeating: nil, count: map.plan.count)
        reducers = ranges.enumerated().map { i, chunks in
            let base = map.plan[chunks.lowerBound].lowerBound
            let rebased = chunks.map { (map.plan[$0].lowerBound - base)..<(map.plan[$0].upperBound - base) }
            for (j, c) in chunks.enumerated() { local[c] = (i, j) }
            // Cannot throw: whole chunks of a valid plan, rebased, are contiguous from 0.
            let plan = try! ChunkPlan(ranges: rebased, parameterCount: map.elements(chunks))
            return ShardOrderReducer(plan: plan, shardCount: shardCount)
        }
        self.local = local
    }

    /// Chunk c of the plan is reduced here.
    public func owns(chunk c: Int) -> Bool { c >= 0 && c < local.count && local[c] != nil }

    /// Forgets the step (every owned range starts empty).
    public func reset() { reducers.forEach { $0.reset() } }

    public func contains(shard k: Int, chunk c: Int) -> Bool {
        let (r, j) = local[c]!
        return reducers[r].contains(shard: k, chunk: j)
    }

    /// Adds chunk c (owned here) of shard k; true when this completed chunk c's sum.
    @discardableResult
    public func add(shard k: Int, chunk c: Int, _ values: UnsafeBufferPointer<Float>) -> Bool {
        let (r, j) = local[c]!
        return reducers[r].add(shard: k, chunk: j, values)
    }

    public func isReduced(chunk c: Int) -> Bool {
        let (r, j) = local[c]!
        return reducers[r].isReduced(chunk: j)
    }

    /// Every chunk of owned range r is reduced.
    public func isDone(range r: Int) -> Bool { reducers[r].isDone }

    /// Every owned chunk is reduced (true at once for an owner of nothing).
    public var isDone: Bool { reducers.allSatisfy(\.isDone) }

    /// Shards with a chunk still missing in some owned range.
    public var incompleteShards: [Int] {
        Array(Set(reducers.flatMap(\.incompleteShards))).sorted()
    }

    /// The sum of chunk c (final once `isReduced`); writable, so a lossy broadcast can be
    /// replaced by what the workers will decode.
    public func reduced(chunk c: Int) -> UnsafeMutableBufferPointer<Float> {
        let (r, j) = local[c]!
        return reducers[r].reduced(chunk: j)
    }

    /// XXH64 of owned range r's reduced values (once `isDone(range:)`): what an owner reports
    /// to the coordinator's step barrier, equal for the same range whoever reduced it.
    public func checksum(range r: Int) -> UInt64 {
        Checksum.of(UnsafeBufferPointer(start: reducers[r].total, count: reducers[r].plan.parameterCount))
    }

    /// The update message of reduced chunk c, encoded by `codec` under `header` (its key range
    /// is set here). With a lossy codec the sum is replaced by what the receivers decode, so
    /// the owner's own replica applies the same update as everyone else's.
    public func updateMessage(chunk c: Int, header: MessageHeader, codec: any GradientCodec) -> Message {
        var h = header
        h.keyOffset = UInt64(map.plan[c].lowerBound)
        let sum = reduced(chunk: c)
        let message = Message(header: h, tensor: UnsafeBufferPointer(sum), codec: codec)
        if !codec.isLossless { try? message.decodeTensor(into: sum, codec: codec) }
        return message
    }
}
