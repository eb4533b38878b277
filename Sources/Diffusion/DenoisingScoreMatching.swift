import TensorCore

/// SPEC O1, denoising score matching on clean data: `x = x0 + sigma n`,
/// loss `lambda(sigma) ||D(x, sigma) - x0||^2` (EDM, Karras et al. 2022, eq. 2 and table 1).
///
/// Applied to noisy data it is the "plain DSM" baseline, which learns `E[X_n | X_sigma]`
/// instead of `E[X0 | X_sigma]` (SPEC O2, last paragraph).
public struct DenoisingScoreMatching: TrainingObjective {
    public var name: String { "dsm" }
    public init() {}

    public func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>,
                                batch: ShardBatch<T>) -> ObjectiveResult {
        let (rows, d) = (batch.rows, batch.dimension)
        let edm = denoiser.schedule
        let x0 = tape.constant(batch.data, rows: rows, cols: d)
        let sigma = tape.column(rows: rows) { r in
            var rng = batch.rng(.trainSigma, row: r)
            return edm.sampleSigma(&rng)
        }
        let x = tape.constant(rows: rows, cols: d)
        addNoise(tape, to: x, from: batch.data, sigma: sigma, batch: batch)
        let dx = denoiser(tape, store, x: x, sigma: sigma, conditioning: nil)
        let weight = tape.column(rows: rows) { r in edm.lossWeight(Double(tape.value(sigma)[r])) / Double(batch.globalBatch) }
        let loss = tape.weightedSumOfSquares(tape.sub(dx, x0), weights: weight)
        return ObjectiveResult(loss: loss, terms: ["denoising": Double(tape.scalar(loss))])
    }
}

/// `x[r] = base[r] + scale[r] n_r` with `n_r` the training noise of row r (purpose trainNoise).
func addNoise<T: Scalar>(_ tape: Tape<T>, to x: Var, from base: UnsafePointer<T>, sigma scale: Var, batch: ShardBatch<T>) {
    let d = batch.dimension
    let xp = tape.value(x), s = tape.value(scale)
    for r in 0..<batch.rows {
        var rng = batch.rng(.trainNoise, row: r)
        let sr = Double(s[r])
        for j in 0..<d {
            xp[r * d + j] = base[r * d + j] + T(sr * rng.normal())
        }
    }
}
