import TensorCore

/// SPEC O3, training on masked data with further corruption (Daras et al. 2023, "Ambient
/// Diffusion", eq. 3.2). The data is `y = A x0` with A a fixed 0/1 mask per sample; each step
/// draws a further mask B (`B_ii ~ Bern(1 - delta)`, purpose furtherMask) and `Atil = B A`:
///
///     input  [Atil (y + sigma n), Atil]              (the mask as extra input channels)
///     loss   sum_i w_i(sigma, Atil) A_ii (D(Atil (y + sigma n), Atil, sigma)_i - y_i)^2
///
/// The loss covers every pixel A observed, including those Atil hid, so the minimiser is
/// `E[x0 | Atil x_sigma, Atil]`: any per-pixel weight that depends only on (sigma, Atil) keeps
/// it (Theorem 4.1). The paper and the authors' code weight every pixel by EDM's lambda(sigma)
/// (ambient-diffusion training/loss.py:98,110). Here a pixel Atil shows keeps lambda(sigma); a
/// pixel Atil hides, which the denoiser outputs as `sd F` (Denoiser), is weighted 1/sd^2, a unit
/// weight on F: with lambda(sigma) its weight relative to that would be 1 + sd^2/sigma^2 (mean
/// about 51 over the training sigmas, RMS about 1,000), so the rare draws at sigma < 0.05, whose
/// inpainting target is as uncertain as at any sigma, would make up nearly all of its gradient. delta = 0 gives plain masked training (the baseline that
/// cannot learn to fill in what it never has to predict). The network needs one
/// conditioning channel.
public struct FurtherCorruption: TrainingObjective {
    public static let defaultDelta = 0.1
    public var name: String { "masked" }
    public var delta: Double

    public init(delta: Double = FurtherCorruption.defaultDelta) {
        precondition(delta >= 0 && delta < 1, "delta must be in [0, 1)")
        self.delta = delta
    }

    public func loss<T: Scalar>(_ tape: Tape<T>, denoiser: Denoiser, store: ParameterStore<T>,
                                batch: ShardBatch<T>) -> ObjectiveResult {
        guard let maskPointer = batch.mask else { preconditionFailure("the masked objective needs masks in the batch") }
        precondition(denoiser.network.conditioningChannels == 1, "the masked objective needs a network with one mask channel")
        let (rows, d) = (batch.rows, batch.dimension)
        let edm = denoiser.schedule
        let y = tape.constant(batch.data, rows: rows, cols: d)
        let sigma = tape.column(rows: rows) { r in
            var rng = batch.rng(.trainSigma, row: r)
            return edm.sampleSigma(&rng)
        }
        // Atil = B A, B redrawn every step from the counter RNG.
        let aTilde = tape.constant(rows: rows, cols: d)
        let ap = tape.value(aTilde)
        for r in 0..<rows {
            var rng = batch.rng(.furtherMask, row: r)
            for j in 0..<d { ap[r * d + j] = rng.uniform() > delta ? maskPointer[r * d + j] : 0 }
        }
        let noisy = tape.constant(rows: rows, cols: d)
        addNoise(tape, to: noisy, from: batch.data, sigma: sigma, batch: batch)
        let x = tape.mul(noisy, aTilde)
        let dx = denoiser(tape, store, x: x, sigma: sigma, conditioning: aTilde)
        // Per-pixel weights (square roots, so the squared error carries them): lambda(sigma) where
        // Atil shows the pixel (EDM's output c_skip x + c_out F), 1/sd^2 where A observed it and
        // Atil hid it (output sd F, so a unit weight on F), 0 where A never observed it.
        let rootWeight = tape.constant(rows: rows, cols: d)
        let rw = tape.value(rootWeight), sv = tape.value(sigma), at = tape.value(aTilde)
        let hidden = T(1 / edm.sigmaData)
        for r in 0..<rows {
            let shown = T(edm.lossWeight(Double(sv[r])).squareRoot())
            for j in 0..<d {
                let k = r * d + j
                rw[k] = at[k] > 0 ? shown : (maskPointer[k] > 0 ? hidden : 0)
            }
        }
        let perRow = tape.column(rows: rows) { _ in 1 / Double(batch.globalBatch) }
        let loss = tape.weightedSumOfSquares(tape.mul(rootWeight, tape.sub(dx, y)), weights: perRow)
        return ObjectiveResult(loss: loss, terms: ["denoising": Double(tape.scalar(loss))])
    }

    /// The fixed-mask sampler's mask of generated sample `sample`: `Atil_ii ~ Bern(keep)` with
    /// `keep = (1 - p)(1 - delta)`, drawn once and kept for all steps (SPEC O3, sampling).
    public static func samplingMask<T: Scalar>(sample: Int, keep: Double, seed: UInt64, into p: UnsafeMutablePointer<T>, count: Int) {
        var rng = CounterRNG(seed: seed, purpose: .sampling, step: 1, sample: sample)
        for j in 0..<count { p[j] = rng.uniform() <= keep ? 1 : 0 }
    }
}
