import TensorCore

/// Sums the shard gradients of one step, chunk by chunk, always in shard order 0..<S whatever
/// order they arrive in: chunk c's sum is `((g0 + g1) + g2) + ...` of that chunk. Float addition
/// is not associative, so this fixed order is what makes the reduced gradient (and the weights)
/// bitwise independent of the number of workers and of the network's timing. A shard chunk that
/// arrives before its turn waits in a buffer; each chunk is complete as soon as its S shards are
/// in, while other chunks may still be on their way.
///
/// Pure bookkeeping over one buffer of the plan's size: no threads, sockets or clocks. The
/// coordinator owns one; a range owner of the sharded reduction will own one per range.
public final class ShardOrderReducer {
    public let plan: ChunkPlan
    public let shardCount: Int
    private let sum: UnsafeMutablePointer<Float>
    /// received[k * C + c]: chunk c of shard k is in.
    private var received: [Bool]
    /// Chunks still missing per shard (0: the shard is complete).
    private var missing: [Int]
    /// Per chunk: the next shard to add into the sum (S: the chunk is reduced).
    private var nextShard: [Int]
    /// Chunks that arrived before their turn, by k * C + c.
    private var early: [Int: [Float]] = [:]
    public private(set) var chunksDone = 0

    public init(plan: ChunkPlan, shardCount: Int) {
        precondition(shardCount >= 1)
        self.plan = plan
        self.shardCount = shardCount
        sum = .allocate(capacity: plan.parameterCount)
        sum.initialize(repeating: 0, count: plan.parameterCount)
        received = [Bool](repeating: false, count: shardCount * plan.count)
        missing = [Int](repeating: plan.count, count: shardCount)
        nextShard = [Int](repeating: 0, count: plan.count)
    }

    deinit { sum.deallocate() }

    /// Forgets everything for the next step (the sum's values stay until overwritten).
    public func reset() {
        for i in received.indices { received[i] = false }
        for k in missing.indices { missing[k] = plan.count }
        for c in nextShard.indices { nextShard[c] = 0 }
        early = [:]
        chunksDone = 0
    }

    public func contains(shard k: Int, chunk c: Int) -> Bool { received[k * plan.count + c] }
    public func isComplete(shard k: Int) -> Bool { missing[k] == 0 }
    public func isReduced(chunk c: Int) -> Bool { nextShard[c] == shardCount }
    /// Every chunk is reduced: the step's gradient is complete.
    public var isDone: Bool { chunksDone == plan.count }
    /// Shards some of whose chunks are still missing.
    public var incompleteShards: [Int] { (0..<shardCount).filter { missing[$0] > 0 } }

    /// Adds chunk c of shard k (its values, `plan[c].count` of them). Each (shard, chunk) is
    /// added once (`contains` says whether it was). Returns true when this completed chunk c.
    @discardableResult
    public func add(shard k: Int, chunk c: Int, _ values: UnsafeBufferPointer<Float>) -> Bool {
        let range = plan[c]
        precondition(values.count == range.count && !contains(shard: k, chunk: c))
        received[k * plan.count + c] = true
        missing[k] -= 1
        guard k == nextShard[c] else {
            early[k * plan.count + c] = Array(values)
            return false
        }
        accumulate(values.baseAddress!, range: range, first: k == 0)
        nextShard[c] += 1
        while nextShard[c] < shardCount, let b = early.removeValue(forKey: nextShard[c] * plan.count + c) {
            b.withUnsafeBufferPointer { accumulate($0.baseAddress!, range: range, first: false) }
            nextShard[c] += 1
        }
        guard nextShard[c] == shardCount else { return false }
        chunksDone += 1
        return true
    }

    private func accumulate(_ g: UnsafePointer<Float>, range: Range<Int>, first: Bool) {
        let dst = sum + range.lowerBound
        if first { dst.update(from: g, count: range.count) } else { Float.axpy(1, g, dst, range.count) }
    }

    /// The sum of chunk c (final once `isReduced(chunk: c)`); writable, so a lossy broadcast
    /// can be replaced by what the workers will decode.
    public func reduced(chunk c: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: sum + plan[c].lowerBound, count: plan[c].count)
    }

    /// The whole reduced gradient (final once `isDone`).
    public var total: UnsafePointer<Float> { UnsafePointer(sum) }
}
