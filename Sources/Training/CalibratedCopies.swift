import Datasets
import Diffusion
import Foundation
import TensorCore

extension EvaluationReport {
    /// The memorisation metric calibrated for the samples' own pixel noise (issue 15). A
    /// sample that copies a training image but keeps some noise (an O2 model stopped at
    /// b sigma_n, or any imperfect sampler) has a nearest-neighbour cosine below 1, and from a
    /// residual noise of about 0.3 an exact copy falls below 0.95. So the training images
    /// themselves are given noise matched to the samples' residual noise, and the threshold is
    /// lowered to what 95% of these noisy exact copies pass (never raised above 0.95).
    /// Everything here is fixed before any result is seen: the 5% quantile, the 0.95 cap, the
    /// matching rule and the count of noisy copies.
    public struct CalibratedCopies: Codable, Sendable {
        /// Median residual noise (`Metrics.residualNoise`) of the samples and of the training images.
        public var samplesResidualNoise: Double
        public var trainingResidualNoise: Double
        /// The Gaussian noise added to the training images: `sqrt(max(r_s^2 - r_t^2, 0))`, so
        /// that the noisy copies carry the samples' residual noise.
        public var matchedNoise: Double
        /// Noisy copies made (training images, the first ones of a seeded permutation).
        public var noisyCopies: Int
        /// Share of the noisy copies whose nearest training image is above 0.95 (1 without noise).
        public var noisyCopiesAbove_0_95: Double
        /// `min(0.95, 5% quantile of the noisy copies' similarity)`.
        public var threshold: Double
        /// The calibrated copy share: samples whose nearest training image is above `threshold`.
        public var samplesAboveThreshold: Double
        /// The same for fresh test images with the same noise: the false-positive rate of the
        /// threshold (should stay near the uncalibrated ~1%; nil without test images).
        public var noisyTestImagesAboveThreshold: Double?
    }
}

extension Evaluation {
    /// Quantile of the noisy copies' similarity that sets the threshold.
    public static let copyQuantile = 0.05

    /// The calibrated copy share of `samples` (m, height x width) against `reference` (the
    /// training images), with noise keyed by `seed`. Nil when the rows are not images.
    public static func calibratedCopies(_ samples: Tensor<Float>, reference: Tensor<Float>, testImages: Tensor<Float>?,
                                        height: Int, width: Int, seed: UInt64, copies: Int = 1000) -> EvaluationReport.CalibratedCopies? {
        guard let rs = Metrics.residualNoise(samples, height: height, width: width).map(median),
              let rt = Metrics.residualNoise(reference, height: height, width: width).map(median) else { return nil }
        let s = max(rs * rs - rt * rt, 0).squareRoot()
        var rng = CounterRNG(seed: seed, purpose: .evaluation, step: 2)
        let pick = Array(rng.permutation(reference.rows).prefix(min(copies, reference.rows)))
        let noisy = GaussianCorruption.apply(reference.gather(rows: pick), sigma: s, seed: seed &+ 2)
        let copySim = Metrics.nearestNeighbourCosine(noisy, reference: reference)
        let sorted = copySim.sorted()
        let q = sorted[min(Int(copyQuantile * Double(sorted.count)), sorted.count - 1)]
        let threshold = min(0.95, q)
        func above(_ v: [Double], _ x: Double) -> Double { Double(v.filter { $0 > x }.count) / Double(max(v.count, 1)) }
        let sampleSim = Metrics.nearestNeighbourCosine(samples, reference: reference)
        let testSim = testImages.map { t in
            Metrics.nearestNeighbourCosine(GaussianCorruption.apply(t, sigma: s, seed: seed &+ 3), reference: reference)
        }
        return .init(samplesResidualNoise: rs, trainingResidualNoise: rt, matchedNoise: s, noisyCopies: pick.count,
                     noisyCopiesAbove_0_95: above(copySim, 0.95), threshold: threshold,
                     samplesAboveThreshold: above(sampleSim, threshold), noisyTestImagesAboveThreshold: testSim.map { above($0, threshold) })
    }
}
