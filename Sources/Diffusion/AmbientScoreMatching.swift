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
        let sigma = drawSigma(tape, denoiser: denoiser, batch: batch)
        let r = Self.loss(tape, denoiser: denoiser, store: store, batch: batch, base: batch.data, sigmaN: batch.sigmaN, sigma: sigma)
        return ObjectiveResult(loss: r.loss, terms: ["denoising": Double(tape.scalar(r.loss))])
    }

    /// Per-row training sigma: the one drawn with the row when the batch has them (SPEC O5
    /// "Draw order", annotated data), else drawn here above `b sigma_n` (purpose trainSigma),
    /// and at most the row's ceiling when it has one (SPEC O5 crops: the low-noise part of the
    /// donut). For rows that all share one sigma_n the two orders are the same distribution.
    func drawSigma<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, batch: ShardBatch<T>) -> Var {
        tape.column(rows: batch.rows) { r in
            if let drawn = batch.sigma {
                precondition(drawn[r] > buffer * batch.sigmaN[r], "row \(r) drawn at sigma \(drawn[r]), not above b sigma_n")
                return drawn[r]
            }
            var rng = batch.rng(.trainSigma, row: r)
            if let ceiling = batch.sigmaCeiling?[r], ceiling.isFinite {
                return denoiser.schedule.sampleSigma(above: buffer * batch.sigmaN[r], below: ceiling, &rng)
            }
            return denoiser.schedule.sampleSigma(above: buffer * batch.sigmaN[r], &rng)
        }
    }

    /// How an O2 row's squared error is weighted. Both keep the minimiser `E[X0 | X_sigma]`
    /// (the weight depends on sigma and sigma_n only); they differ in how much target noise
    /// a row carries. The target `x0*` has per-pixel noise variance `sigma_n^2 sigma^2 /
    /// (sigma^2 - sigma_n^2)` around `x0` (4 sigma_n^2 at the buffer).
    public enum Weighting: String, Sendable, Codable {
        /// SPEC O2: `lambda(sigma) sigma^4/(sigma^2 - sigma_n^2)^2 ||xhat_n - x_n||^2`, i.e.
        /// `lambda ||D - x0*||^2`: every level's denoiser error counts as in O1, and the rows
        /// just above the buffer carry up to `4 lambda sigma_n^2` of target noise per pixel.
        case clean
        /// `lambda(sigma) ||xhat_n - x_n||^2 = lambda (1 - sigma_n^2/sigma^2)^2 ||D - x0*||^2`,
        /// the authors' memorisation code (kulinshah98/memorization_noisy_data,
        /// `AmbientHighNoise_EDMLowNoise_Loss`): target noise `lambda sigma_n^2 (1 -
        /// sigma_n^2/sigma^2)` per pixel, at most that of plain DSM on data noisy at sigma_n and
        /// falling to 0 at the split, so O2 rows mixed with O1 rows (SPEC O6) do not swamp them.
        case noisy
    }

    /// The O2 loss of rows `base` (the noisy data x_n) at noise levels `sigmaN`, with the
    /// training sigma already drawn (rows, 1), every `sigma > sigma_n`. Returns the loss, the
    /// noisy input x and D(x, sigma) (SPEC O4 and O6 build on them).
    static func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>, batch: ShardBatch<T>,
                                base: UnsafePointer<T>, sigmaN: UnsafePointer<Double>, sigma: Var,
                                weighting: Weighting = .clean) -> (loss: Var, x: Var, denoised: Var) {
        let (rows, d) = (batch.rows, batch.dimension)
        let edm = denoiser.schedule
        let xn = tape.constant(base, rows: rows, cols: d)
        // Noise added on top of the data: sqrt(sigma^2 - sigma_n^2).
        let extra = tape.column(rows: rows) { r in
            let s = Double(tape.value(sigma)[r]), sn = sigmaN[r]
            return max(s * s - sn * sn, 0).squareRoot()
        }
        let x = tape.constant(rows: rows, cols: d)
        addNoise(tape, to: x, from: base, sigma: extra, batch: batch)
        let dx = denoiser(tape, store, x: x, sigma: sigma, conditioning: nil)

        // xhat_n = (1 - r) D + r x, with r = sigma_n^2 / sigma^2.
        let ratio = tape.column(rows: rows) { r in
            let s = Double(tape.value(sigma)[r]), sn = sigmaN[r]
            return sn * sn / (s * s)
        }
        let keep = tape.column(rows: rows) { r in 1 - Double(tape.value(ratio)[r]) }
        let xhat = tape.add(tape.scaleRows(dx, keep), tape.scaleRows(x, ratio))
        let weight = tape.column(rows: rows) { r in
            let s = Double(tape.value(sigma)[r]), sn = sigmaN[r]
            let gap = s * s - sn * sn
            let scale = weighting == .clean ? (s * s * s * s) / (gap * gap) : 1
            return edm.lossWeight(s) * scale / Double(batch.globalBatch)
        }
        return (tape.weightedSumOfSquares(tape.sub(xhat, xn), weights: weight), x, dx)
    }
}
