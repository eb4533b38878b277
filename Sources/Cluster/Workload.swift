import TensorCore
import Wire

/// State that the coordinator and every worker hold bitwise-identically at each parameter
/// version: parameters and optimiser moments. Each replica applies the same reduced gradient
/// with the same code (DESIGN: replicated optimiser), so only gradients travel per step.
public protocol ReplicatedState: AnyObject {
    /// Parameter count n (the length of every gradient).
    var parameterCount: Int { get }
    /// The parameters, n elements.
    var parameters: UnsafePointer<Float> { get }
    /// Optimiser steps applied so far = the version of the parameters = the next step to run.
    var version: Int { get }
    /// Applies the part `range` of a step's batch-mean gradient; `gradient` points at the value
    /// for `range.lowerBound`. The optimiser is elementwise, so applying a step range by range
    /// (as its chunks arrive) gives the same bits as applying it whole.
    func apply(gradient: UnsafePointer<Float>, range: Range<Int>)
    /// Ends a step whose ranges have all been applied: version += 1.
    func finishStep()
    /// `ParameterChecksum` of the parameters: equal on every replica at the same version. The
    /// default computes it whole; a replica may keep block hashes as it writes (`OptimizerState`).
    var parameterChecksum: UInt64 { get }
    /// What a joining worker needs: parameters, optimiser moments, counters.
    func replicaSnapshot() -> StateSnapshot
    func restore(replica: StateSnapshot) throws
}

/// A replica whose optimiser can run on one range into the caller's buffers, so each range's owner
/// applies it once and sends the others the new parameters (the optimiser sharded across the range
/// owners, stage A of docs/design-optimizer-sharding.md). Elementwise, like `apply`: a range
/// updated here and assigned back has the bits `apply(gradient:range:)` would have given it.
public protocol RangeOwnerOptimizer: ReplicatedState {
    /// Per-parameter optimiser state vectors (Adam: the two moments).
    var momentCount: Int { get }
    /// Update number `version + 1` of `range` with `gradient` (the range's values), written to
    /// `parameters` (`range.count` values) and `moments` (`momentCount` consecutive vectors of
    /// `range.count`); the replica itself is unchanged.
    func update(range: Range<Int>, gradient: UnsafePointer<Float>, parameters: UnsafeMutablePointer<Float>,
                moments: UnsafeMutablePointer<Float>)
    /// Sets the parameters of `range`, and its moments when given (laid out as `update` writes them).
    func assign(range: Range<Int>, parameters: UnsafePointer<Float>, moments: UnsafePointer<Float>?)
}

/// The coordinator's side of a run (implemented by Training).
public protocol CoordinatorWorkload: ReplicatedState {
    /// Steps of the whole run.
    var totalSteps: Int { get }
    /// Fixed shards per step.
    var shardCount: Int { get }
    /// What workers must build: opaque to the cluster (Training puts the run config here).
    var workloadSpec: [UInt8] { get }
    /// Content hash of the training data; a worker whose data differs is refused.
    var datasetHash: String { get }
    /// The gradient travels, is reduced and is applied in these contiguous ranges of the
    /// parameter buffer (covering 0..<parameterCount in order), so transfer overlaps compute.
    var chunkRanges: [Range<Int>] { get }
    /// Everything needed to resume exactly: replica state plus EMA and counters.
    func checkpointSnapshot() -> StateSnapshot
    func restore(checkpoint: StateSnapshot) throws
    /// Called after each step is applied (metrics, logs).
    func stepCompleted(_ summary: StepSummary) throws
    /// Called once after the last step (final weights).
    func finish() throws
}

/// A worker's side of a run (implemented by Training).
public protocol WorkerWorkload: ReplicatedState {
    var datasetHash: String { get }
    /// Shards this workload can compute at once (one compute slot each, one BLAS thread each,
    /// so the bits never depend on it).
    var parallelism: Int { get }
    /// The buffer `computeShard` on `slot` writes the gradient into (valid until that slot's
    /// next call).
    func gradientBuffer(slot: Int) -> UnsafeBufferPointer<Float>
    /// Computes the gradient of one shard with the current parameters on compute slot `slot`
    /// (0..<parallelism; different slots may run concurrently), calling `onChunkReady(i)` as
    /// soon as the values of `chunks[i]` are final (during the backward pass, in whatever order
    /// they complete; every chunk exactly once).
    func computeShard(step: Int, shard: Int, slot: Int, chunks: [Range<Int>], onChunkReady: (Int) -> Void) -> GradientMeta
}

/// What a worker reports beside a shard gradient.
public struct GradientMeta: Codable, Sendable, Equatable {
    public var loss: Double
    public var terms: [String: Double]
    public var rows: Int
    public var computeSeconds: Double

    public init(loss: Double, terms: [String: Double], rows: Int, computeSeconds: Double) {
        self.loss = loss
        self.terms = terms
        self.rows = rows
        self.computeSeconds = computeSeconds
    }
}

/// One finished step, as the coordinator saw it.
public struct StepSummary: Sendable {
    public var step: Int
    public var loss: Double
    public var terms: [String: Double]
    public var gradientNorm: Double
    /// Wall time of the step at the coordinator (assign to update sent).
    public var seconds: Double
    /// Mean over shards of the workers' compute time, and the rest of the step.
    public var computeSeconds: Double
    public var workers: Int
    /// Bytes of gradients received and updates sent in this step.
    public var bytesIn: Int
    public var bytesOut: Int
}

extension ReplicatedState {
    /// One whole optimiser step.
    public func apply(gradient: UnsafePointer<Float>) {
        apply(gradient: gradient, range: 0..<parameterCount)
        finishStep()
    }

    public var parameterChecksum: UInt64 {
        ParameterChecksum.of(UnsafeBufferPointer(start: parameters, count: parameterCount))
    }
}

/// A workload whose replicated state is one `ReplicatedState` object: every member of the
/// protocol forwards to `replica` (a type may still implement one itself, e.g. a `restore` that
/// also refreshes a derived copy).
public protocol ForwardsReplicatedState: ReplicatedState {
    associatedtype Replica: ReplicatedState
    var replica: Replica { get }
}

extension ForwardsReplicatedState {
    public var parameterCount: Int { replica.parameterCount }
    public var parameters: UnsafePointer<Float> { replica.parameters }
    public var version: Int { replica.version }
    public func apply(gradient: UnsafePointer<Float>, range: Range<Int>) { replica.apply(gradient: gradient, range: range) }
    public func finishStep() { replica.finishStep() }
    public var parameterChecksum: UInt64 { replica.parameterChecksum }
    public func replicaSnapshot() -> StateSnapshot { replica.replicaSnapshot() }
    public func restore(replica snapshot: StateSnapshot) throws { try replica.restore(replica: snapshot) }
}

extension ForwardsReplicatedState where Replica: RangeOwnerOptimizer {
    public var momentCount: Int { replica.momentCount }
    public func update(range: Range<Int>, gradient: UnsafePointer<Float>, parameters: UnsafeMutablePointer<Float>,
                       moments: UnsafeMutablePointer<Float>) {
        replica.update(range: range, gradient: gradient, parameters: parameters, moments: moments)
    }
    public func assign(range: Range<Int>, parameters: UnsafePointer<Float>, moments: UnsafePointer<Float>?) {
        replica.assign(range: range, parameters: parameters, moments: moments)
    }
}
