import TensorCore

/// SPEC O2, ambient denoising score matching for Gaussian-noisy data ("double Tweedie",
/// Daras et al. 2024, Thm 3.1):
///
///     sigma > b sigma_n,   x = x_n + sqrt(sigma^2 - sigma_n^2) eta
///     xhat_n = (1 - sigma_n^2/sigma^2) D(x, sigma) + (sigma_n^2/sigma^2) x
///     loss   = lambda(sigma) sigma^4/(sigma^2 - sigma_n^2)^2 ||xhat_n - x_n||^2
///
/// Its minimiser is `D(x, sigma) = E[X0 | X_sigma = x]` for every sigma > sigma_n although no
/// clean sample is seen. Rows with sigma_n = 0 reduce exactly to O1 (clean samples in
/// annotated training, SPEC O5).
public struct AmbientScoreMatching: TrainingObjective {
    public var name: String { "ambient" }
    /// `b = sqrt(1 + 1/(s_max - 1))`: sigma is drawn above `b sigma_n`, keeping the weight
    /// `sigma^4/(sigma^2 - sigma_n^2)^2` at most `s_max^2`.
    public var buffer: Double

    public init(buffer: Double = AmbientScoreMatching.buffer(sMax: 4)) {
        precondition(buffer >= 1, "the sigma buffer must be >= 1")
        self.buffer = buffer
    }

    /// SPEC O2: `b = sqrt(1 + 1/(s_max - 1))` (s_max = 4 gives b ~= 1.155).
    public static func buffer(sMax: Double) -> Double { (1 + 1 / (sMax - 1)).squareRoot() }

    public func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>,
                                batch: ShardBatch<T>) -> ObjectiveResult {
        let (rows, d) = (batch.rows, batch.dimension)
        let edm = denoiser.schedule
        let xn = tape.constant(batch.data, rows: rows, cols: d)
        let sigma = tape.column(rows: rows) { r in
            var rng = batch.rng(.trainSigma, row: r)
            return edm.sampleSigma(above: buffer * batch.sigmaN[r], &rng)
        }
        // Noise added on top of the data: sqrt(sigma^2 - sigma_n^2).
        let extra = tape.column(rows: rows) { r in
            let s = Double(tape.value(sigma)[r]), sn = batch.sigmaN[r]
            return max(s * s - sn * sn, 0).squareRoot()
        }
        let x = tape.constant(rows: rows, cols: d)
        addNoise(tape, to: x, from: batch.data, sigma: extra, batch: batch)
        let dx = denoiser(tape, store, x: x, sigma: sigma, conditioning: nil)

        // xhat_n = (1 - r) D + r x, with r = sigma_n^2 / sigma^2.
        let ratio = tape.column(rows: rows) { r in
            let s = Double(tape.value(sigma)[r]), sn = batch.sigmaN[r]
            return sn * sn / (s * s)
        }
        let keep = tape.column(rows: rows) { r in 1 - Double(tape.value(ratio)[r]) }
        let xhat = tape.add(tape.scaleRows(dx, keep), tape.scaleRows(x, ratio))
        let weight = tape.column(rows: rows) { r in
            let s = Double(tape.value(sigma)[r]), sn = batch.sigmaN[r]
            let gap = s * s - sn * sn
            return edm.lossWeight(s) * (s * s * s * s) / (gap * gap) / Double(batch.globalBatch)
        }
        let loss = tape.weightedSumOfSquares(tape.sub(xhat, xn), weights: weight)
        return ObjectiveResult(loss: loss, terms: ["denoising": Double(tape.scalar(loss))])
    }
}
