import TensorCore

/// SPEC O6, the memorisation-reducing split (Daras et al. 2025, Algorithm 1) on clean data:
/// every sample i has one fixed noisy copy `y_i + sigma_n z_i` (z_i keyed by its dataset
/// index, `RandomPurpose.corruption`, stream 4). For a training sigma below the split the row
/// is O1 on the clean sample; above it, O2 on the fixed noisy copy.
///
/// The O2 rows are weighted in the noisy space (`AmbientScoreMatching.Weighting.noisy`, as
/// the authors' code does), not by SPEC O2's `sigma^4/(sigma^2 - sigma_n^2)^2`: with that
/// weight the few O2 rows just above the split carry up to 4 lambda sigma_n^2 of target noise
/// per pixel (64 lambda at sigma_n = 4, against about lambda/4 for an O1 row), their gradient
/// swamps the clean rows', the denoiser above the split is learned badly and the sampler's
/// trajectories leave the data range there (docs/objectives.md, O6). The switch happens at
/// `b sigma_n` (b from s_max as in O2); with s_max large, b tends to 1 and this is SPEC's split.
public struct MemorizationSplit: TrainingObjective {
    public static let noiseStream = 4
    public var name: String { "split" }
    public var sigmaN: Double
    public var buffer: Double

    public init(sigmaN: Double, buffer: Double = AmbientScoreMatching.buffer(sMax: 4)) {
        precondition(sigmaN > 0 && buffer >= 1)
        self.sigmaN = sigmaN
        self.buffer = buffer
    }

    public func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>,
                                batch: ShardBatch<T>) -> ObjectiveResult {
        guard let indices = batch.sampleIndices else { preconditionFailure("the split objective needs the dataset index of each row") }
        let (rows, d) = (batch.rows, batch.dimension)
        let sigma = tape.column(rows: rows) { r in
            var rng = batch.rng(.trainSigma, row: r)
            return denoiser.schedule.sampleSigma(&rng)
        }
        let base = tape.scratch(rows * d)
        base.update(from: batch.data, count: rows * d)
        var levels = [Double](repeating: 0, count: rows)
        var above = 0
        for r in 0..<rows where Double(tape.value(sigma)[r]) >= buffer * sigmaN {
            levels[r] = sigmaN
            above += 1
            var rng = CounterRNG(seed: batch.seed, purpose: .corruption, step: Self.noiseStream, sample: indices[r])
            for j in 0..<d { base[r * d + j] += T(sigmaN * rng.normal()) }
        }
        let r = levels.withUnsafeBufferPointer {
            AmbientScoreMatching.loss(tape, denoiser: denoiser, store: store, batch: batch, base: base, sigmaN: $0.baseAddress!, sigma: sigma,
                                      weighting: .noisy)
        }
        return ObjectiveResult(loss: r.loss, terms: ["denoising": Double(tape.scalar(r.loss)), "ambient_rows": Double(above) / Double(batch.globalBatch)])
    }
}
