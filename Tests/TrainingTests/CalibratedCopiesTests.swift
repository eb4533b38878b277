import Datasets
import Foundation
import TensorCore
import Testing
import Training

/// The calibrated copy share (issue 15) on synthetic copies with known noise.
@Suite struct CalibratedCopiesTests {
    /// `count` smooth 28x28 images: random combinations of the 16 lowest cosine modes, so the
    /// residual-noise estimator sees almost nothing of them and two different images are far
    /// apart in cosine.
    static func smoothImages(_ count: Int, seed: UInt64) -> Tensor<Float> {
        var out = [Float](repeating: 0, count: count * 784)
        for k in 0..<count {
            var rng = CounterRNG(seed: seed, purpose: .syntheticData, sample: k)
            let c = (0..<16).map { _ in 0.3 * rng.normal() }
            for i in 0..<28 { for j in 0..<28 {
                var v = 0.0
                for a in 0..<4 { for b in 0..<4 {
                    v += c[a * 4 + b] * cos(Double.pi * Double(a) * (Double(i) + 0.5) / 28) * cos(Double.pi * Double(b) * (Double(j) + 0.5) / 28)
                } }
                out[k * 784 + i * 28 + j] = Float(v)
            } }
        }
        return Tensor(shape: [count, 784], storage: out)
    }

    /// Half the samples are exact copies of training images, half fresh images, all with
    /// N(0, 0.4^2) noise. Uncalibrated, no copy passes 0.95 (noise 0.4 on images of std ~0.6
    /// gives cosine ~0.83); calibrated, the share is the copies' half, the matched noise is the
    /// one added, and noisy fresh images stay below the threshold.
    @Test func noisyCopiesCountAsCopies() throws {
        let reference = Self.smoothImages(300, seed: 1)
        let fresh = Self.smoothImages(100, seed: 2)
        let clean = Tensor.concatenate([reference.gather(rows: Array(0..<100)), fresh])
        let samples = GaussianCorruption.apply(clean, sigma: 0.4, seed: 3)
        let test = Self.smoothImages(200, seed: 4)
        let c = try #require(Evaluation.calibratedCopies(samples, reference: reference, testImages: test, height: 28, width: 28, seed: 5, copies: 300))
        let raw = Evaluation.memorization(samples, reference: reference, referenceName: "synthetic", testImages: nil)
        let report = "raw > 0.95 \(raw.fractionAbove_0_95); matched noise \(c.matchedNoise) (residual \(c.samplesResidualNoise) vs \(c.trainingResidualNoise)); threshold \(c.threshold); calibrated share \(c.samplesAboveThreshold); noisy copies above 0.95 \(c.noisyCopiesAbove_0_95); noisy test images above threshold \(c.noisyTestImagesAboveThreshold ?? -1)"
        print(report)
        #expect(raw.fractionAbove_0_95 < 0.05, "\(report)")
        #expect(abs(c.matchedNoise - 0.4) < 0.05, "\(report)")
        #expect(c.noisyCopiesAbove_0_95 < 0.05 && c.threshold < 0.95, "\(report)")
        #expect(abs(c.samplesAboveThreshold - 0.5) < 0.05, "\(report)")
        #expect((c.noisyTestImagesAboveThreshold ?? 1) < 0.05, "\(report)")
        // Without noise the calibration changes nothing: the threshold is 0.95.
        let exact = try #require(Evaluation.calibratedCopies(clean, reference: reference, testImages: nil, height: 28, width: 28, seed: 5, copies: 300))
        #expect(exact.threshold == 0.95 && abs(exact.samplesAboveThreshold - 0.5) < 0.01, "\(exact)")
    }
}
