import TensorCore

/// Which dataset samples shard `k` of step `s` holds: a function of (seed, s, k) only.
///
/// The stream of sample positions `p = s B + offset_k + i` walks through the dataset in
/// epochs, each a fresh seeded permutation. Shard k covers rows `[k B / S, (k+1) B / S)` of
/// the global batch.
public final class ShardPlan: @unchecked Sendable {
    public let datasetSize: Int
    public let globalBatch: Int
    public let shards: Int
    public let seed: UInt64
    private var cache: [(epoch: Int, permutation: [Int])] = []

    public init(datasetSize: Int, globalBatch: Int, shards: Int, seed: UInt64) {
        precondition(datasetSize > 0 && globalBatch > 0 && shards > 0 && shards <= globalBatch)
        self.datasetSize = datasetSize
        self.globalBatch = globalBatch
        self.shards = shards
        self.seed = seed
    }

    /// Rows of the global batch that shard `k` holds.
    public func rows(ofShard k: Int) -> Range<Int> {
        precondition(k >= 0 && k < shards, "shard \(k) out of 0..<\(shards)")
        return (k * globalBatch / shards)..<((k + 1) * globalBatch / shards)
    }

    /// Dataset indices of shard `k` of step `s`, in row order.
    public func indices(step s: Int, shard k: Int) -> [Int] {
        rows(ofShard: k).map { row in sampleIndex(position: s * globalBatch + row) }
    }

    private func sampleIndex(position p: Int) -> Int {
        let epoch = p / datasetSize
        return permutation(epoch)[p % datasetSize]
    }

    private func permutation(_ epoch: Int) -> [Int] {
        if let hit = cache.first(where: { $0.epoch == epoch }) { return hit.permutation }
        var rng = CounterRNG(seed: seed, purpose: .dataOrder, step: epoch)
        let p = rng.permutation(datasetSize)
        cache.append((epoch, p))
        if cache.count > 2 { cache.removeFirst() }
        return p
    }
}
