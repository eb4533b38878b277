import Wire

/// The coordinator's record of the step in flight: who owns each shard and under which
/// assignment, how often each shard was rejected, and the step's running totals. The shard
/// gradients themselves are in the `ShardOrderReducer`.
struct StepState {
    let step: Int
    let startedAt: Double
    var deadline: Double
    /// Current owner of each shard, and the generation of the `assign` that gave it to them.
    var owner: [PeerID?]
    var assignedGeneration: [UInt32]
    var attempts: [Int]
    var metaCounted: [Bool]
    /// When each shard was last assigned (for its turnaround time).
    var assignedAt: [Double]
    var loss = 0.0
    var terms: [String: Double] = [:]
    var computeSeconds = 0.0
    var bytesIn = 0
    var bytesOut = 0
    var sumOfSquares = 0.0
    /// Sharded reduction: the owner map of the step (nil: the coordinator reduces), as sent,
    /// and the reduced chunks received from the owners so far.
    var ownerMap: RangeOwnerMap?
    var ownersBody: RangeOwnersBody?
    var updates: [Message?] = []

    init(step: Int, shards n: Int, now: Double, deadline: Double) {
        self.step = step
        startedAt = now
        self.deadline = deadline
        owner = [PeerID?](repeating: nil, count: n)
        assignedGeneration = [UInt32](repeating: 0, count: n)
        attempts = [Int](repeating: 0, count: n)
        metaCounted = [Bool](repeating: false, count: n)
        assignedAt = [Double](repeating: now, count: n)
    }

    /// What to do with a gradient message.
    enum Verdict: Equatable {
        /// Another step, version or shard count, a shard out of range, or an answer to an
        /// earlier assignment of the shard (its generation is not the current assignment's).
        case stale
        /// Its key range is not exactly one chunk of the plan.
        case keyRange
        /// The chunk is in already, or the sender does not own the shard.
        case duplicate
        case accept(shard: Int, chunk: Int)
    }

    /// Judges a gradient header from `peer` against this step (whose parameters are at
    /// `version`). Compares the header's unsigned fields as they are: nothing that came from
    /// the network is converted before it is known to fit.
    func classify(_ h: MessageHeader, from peer: PeerID, version: Int, plan: ChunkPlan, reducer: ShardOrderReducer) -> Verdict {
        guard h.step == UInt64(step), h.parameterVersion == UInt64(version), h.shardCount == UInt64(owner.count),
              h.shard < UInt32(owner.count) else { return .stale }
        let k = Int(h.shard)
        guard let c = plan.chunk(keyOffset: h.keyOffset, keyCount: h.keyCount) else { return .keyRange }
        guard !reducer.contains(shard: k, chunk: c), owner[k] == peer else { return .duplicate }
        // The same worker can be given the same shard again within a step (its gradient was
        // rejected and it is the only worker): chunks still on their way from the first
        // computation answer the earlier assignment and must not count again.
        guard h.generation == assignedGeneration[k] else { return .stale }
        return .accept(shard: k, chunk: c)
    }
}
