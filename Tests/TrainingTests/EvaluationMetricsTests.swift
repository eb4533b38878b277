import Datasets
import Foundation
import TensorCore
import Testing
@testable import Training

/// The inpainting PSNR's arithmetic and masks, and the noise-aware evaluator's training inputs.
@Suite struct EvaluationMetricsTests {
    static func images(_ n: Int) -> Tensor<Float> {
        var rng = CounterRNG(seed: 4, purpose: .syntheticData)
        return Tensor(shape: [n, 16], storage: (0..<(n * 16)).map { _ in Float(2 * rng.uniform() - 1) })
    }

    @Test func inpaintingPSNRAgainstKnownDenoisers() {
        let x0 = Self.images(300)
        let zeroMean = [Float](repeating: 0, count: 16)
        // A denoiser that returns 0 everywhere: PSNR 10 log10(4 / E[x0^2]), E[x0^2] = 1/3 for U(-1, 1).
        let zero = Evaluation.inpainting(images: x0, keep: 0.4, meanImage: zeroMean, seed: 1) { _, _, rows, out in
            out.update(repeating: 0, count: rows * 16)
        }
        let meanSquare = x0.storage.reduce(0.0) { $0 + Double($1 * $1) } / Double(x0.count)
        #expect(abs(zero.psnr - 10 * log10(4 / meanSquare)) < 1e-9)
        // The mean-image fill with mean 0 equals it on hidden pixels.
        #expect(abs(zero.psnrHidden - zero.psnrHiddenMeanImage) < 0.01)
        // A denoiser that copies what the mask shows and fills the rest with the truth: hidden
        // pixels exact (PSNR capped at 10 log10(4 / 1e-12)), all pixels limited by the noise
        // sigma = 0.05 on the shown 40%: about 10 log10(4 / (0.4 * 0.0025)) = 36 dB.
        var offset = 0
        let oracle = Evaluation.inpainting(images: x0, keep: 0.4, meanImage: zeroMean, seed: 1, batchSize: 100) { x, m, rows, out in
            for k in 0..<(rows * 16) { out[k] = m[k] > 0 ? x[k] : x0.storage[offset + k] }
            offset += rows * 16
        }
        #expect(oracle.psnrHidden > 100)
        #expect(abs(oracle.psnr - 10 * log10(4 / (0.4 * 0.0025))) < 0.3, "\(oracle.psnr)")
        // Fresh masks keep about 40% of the pixels, and the same seed draws the same masks.
        var kept = 0.0
        _ = Evaluation.inpainting(images: x0, keep: 0.4, meanImage: zeroMean, seed: 1) { _, m, rows, out in
            for k in 0..<(rows * 16) { kept += Double(m[k]) }
            out.update(repeating: 0, count: rows * 16)
        }
        #expect(abs(kept / Double(x0.count) - 0.4) < 0.02)
        let again = Evaluation.inpainting(images: x0, keep: 0.4, meanImage: zeroMean, seed: 1) { _, _, rows, out in
            out.update(repeating: 0, count: rows * 16)
        }
        #expect(again.psnrHidden == zero.psnrHidden)
    }

    @Test func noiseAwareTrainingInputsCarryTheirTargets() {
        var noisy = 0, blurred = 0, clean = 0
        for i in 0..<300 {
            var rng = CounterRNG(seed: 9, purpose: .evaluation, sample: i)
            var x = [Float](repeating: 0, count: 784)
            for j in 0..<784 { x[j] = (j / 28 + j % 28) % 2 == 0 ? 0.5 : -0.5 }   // a checkerboard: blur flattens it
            let original = x
            let t = FashionEvaluator.corruptForTraining(&x, rng: &rng)
            let diff = zip(x, original).map { Double($0 - $1) }
            let rms = (diff.reduce(0) { $0 + $1 * $1 } / 784).squareRoot()
            if t.noise > 0 {
                noisy += 1
                #expect(abs(rms - t.noise * 0.1) < 0.02 + 0.1 * t.noise * 0.1, "noise target \(t.noise), pixel rms \(rms)")
                #expect(t.blur == 0)
            } else if t.blur > 0 {
                blurred += 1
                #expect(t.blur >= 0.6 - 1e-9 && t.blur <= 3 + 1e-9)
                #expect(rms > 0.005)
            } else {
                clean += 1
                #expect(rms == 0)
            }
        }
        #expect(noisy > 70 && blurred > 70 && clean > 70)
    }
}
