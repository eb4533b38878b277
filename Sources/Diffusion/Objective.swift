import TensorCore

/// The samples of one shard of one training step, as an objective sees them.
///
/// `data` holds the training data as stored: noisy where `sigmaN[r] > 0` (SPEC O2: the noisy
/// copy is the data), clean where it is 0. Every random draw of the objective is keyed by
/// (seed, purpose, step, shard, row), so the loss of a shard does not depend on which process
/// computes it or how many shards other processes hold.
public struct ShardBatch<T: Scalar> {
    public var data: UnsafePointer<T>
    public var rows: Int
    public var dimension: Int
    /// Per-row noise level of the stored data (0: clean).
    public var sigmaN: UnsafePointer<Double>
    /// Per-row mask (1 observed, 0 missing), rows x dimension, for masked data (SPEC O3).
    public var mask: UnsafePointer<T>?
    /// Dataset index of each row: keys per-sample draws that must stay fixed across steps
    /// (a sample's one noisy copy, SPEC O5/O6), with `RandomPurpose.corruption`.
    public var sampleIndices: UnsafePointer<Int>?
    /// Per-row upper bound of the training sigma (infinity: none): an out-of-distribution
    /// sample used as clean only up to its crops annotation sigma_max (SPEC O5 crops).
    public var sigmaCeiling: UnsafePointer<Double>?
    /// Per-row training sigma drawn together with the row (SPEC O5 "Draw order": sigma first,
    /// then a row usable at it); nil: the objective draws it per row.
    public var sigma: UnsafePointer<Double>?
    public var seed: UInt64
    public var step: Int
    public var shard: Int
    /// Size of the whole step's batch: losses are divided by it, so summing shard losses
    /// (and gradients) gives the batch mean.
    public var globalBatch: Int
    /// A no-gradient tape the objective may use for sampler passes (SPEC O4), reused across
    /// steps by the caller so that they allocate nothing; nil: the objective makes its own.
    public var inferenceTape: Tape<T>?

    public init(data: UnsafePointer<T>, rows: Int, dimension: Int, sigmaN: UnsafePointer<Double>,
                mask: UnsafePointer<T>? = nil, sampleIndices: UnsafePointer<Int>? = nil, sigmaCeiling: UnsafePointer<Double>? = nil,
                sigma: UnsafePointer<Double>? = nil, seed: UInt64, step: Int, shard: Int, globalBatch: Int, inferenceTape: Tape<T>? = nil) {
        precondition(inferenceTape?.recordsGradients != true, "the inference tape must not record gradients")
        self.inferenceTape = inferenceTape
        self.data = data
        self.rows = rows
        self.dimension = dimension
        self.sigmaN = sigmaN
        self.mask = mask
        self.sampleIndices = sampleIndices
        self.sigmaCeiling = sigmaCeiling
        self.sigma = sigma
        self.seed = seed
        self.step = step
        self.shard = shard
        self.globalBatch = globalBatch
    }

    /// The RNG stream of `row` for `purpose`.
    public func rng(_ purpose: RandomPurpose, row: Int) -> CounterRNG {
        CounterRNG(seed: seed, purpose: purpose, step: step, shard: shard, sample: row)
    }
}

/// What an objective returns: the scalar loss on the tape (already divided by the global
/// batch) and named terms for the metrics log (sums over the shard, also divided).
public struct ObjectiveResult {
    public var loss: Var
    public var terms: [String: Double]
}

/// A training objective of SPEC (O1, O2, ...), written in paper notation.
public protocol TrainingObjective: Sendable {
    /// Short name used in configs and logs ("dsm", "ambient", ...).
    var name: String { get }
    func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>,
                         batch: ShardBatch<T>) -> ObjectiveResult
}
