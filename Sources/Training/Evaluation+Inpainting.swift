import Datasets
import Diffusion
import Foundation
import TensorCore

extension EvaluationReport {
    /// Inpainting on held-out images (runs trained with SPEC O3): what a masked-data model has
    /// learned about the pixels its data never shows, which its samples show only indirectly.
    public struct Inpainting: Codable, Sendable {
        /// Test images used (the first ones of the Fashion-MNIST test set).
        public var images: Int
        /// Keep probability of the fresh masks: the training data's observed fraction 1 - p.
        public var maskKeep: Double
        /// Noise level of the denoiser's input `A (x0 + sigma z)`.
        public var sigma: Double
        /// PSNR (peak-to-peak 2, the range of [-1, 1] images) of D(A (x0 + sigma z), A, sigma)
        /// against x0 over all pixels, and over the hidden pixels alone.
        public var psnr: Double
        public var psnrHidden: Double
        /// The same for a fill of the hidden pixels with the mean training image: a floor any
        /// model that learned something beats.
        public var psnrMeanImage: Double
        public var psnrHiddenMeanImage: Double
    }
}

extension Evaluation {
    /// The noise level of the inpainting evaluation: small, so the result is about the hidden
    /// pixels, not about denoising the shown ones.
    public static let inpaintingSigma = 0.05

    /// Inpainting PSNR of a masked model (`model.samplingMaskKeep != nil`) on `images` (N, d)
    /// under fresh masks `A_ii ~ Bern(keep)` keyed by `seed`, at `sigma`: one denoiser call
    /// `D(A (x0 + sigma z), A, sigma)` with the mask as the network's input channel.
    /// `meanImage` (d values) is the baseline fill.
    public static func inpainting(_ model: TrainedModel, images: Tensor<Float>, keep: Double, sigma: Double = inpaintingSigma,
                                  meanImage: [Float], seed: UInt64, batchSize: Int = 256) -> EvaluationReport.Inpainting {
        precondition(model.denoiser.network.conditioningChannels == 1, "inpainting needs a model with a mask channel")
        let tape = Tape<Float>(recordsGradients: false)
        let sig = [Double](repeating: sigma, count: batchSize)
        return inpainting(images: images, keep: keep, sigma: sigma, meanImage: meanImage, seed: seed, batchSize: batchSize) { x, m, rows, out in
            sig.withUnsafeBufferPointer { sp in
                model.denoiser.evaluate(tape, model.store, x: x, rows: rows, sigma: sp.baseAddress!, conditioning: m, into: out)
            }
        }
    }

    /// The same with any denoiser: `denoise(x, mask, rows, out)` writes `D(x, mask, sigma)` for
    /// `rows` rows (at most `batchSize`).
    public static func inpainting(images: Tensor<Float>, keep: Double, sigma: Double = inpaintingSigma, meanImage: [Float],
                                  seed: UInt64, batchSize: Int = 256,
                                  denoise: (UnsafePointer<Float>, UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void)
        -> EvaluationReport.Inpainting {
        let (n, d) = (images.rows, images.rowSize)
        precondition(meanImage.count == d)
        var masks = [Float](repeating: 0, count: n * d), input = masks, out = masks
        for r in 0..<n {
            var rng = CounterRNG(seed: seed &+ 2000, purpose: .evaluation, step: 2, sample: r)
            for j in 0..<d {
                let k = r * d + j
                let m: Float = rng.uniform() <= keep ? 1 : 0
                masks[k] = m
                input[k] = m * (images.storage[k] + Float(sigma * rng.normal()))
            }
        }
        var start = 0
        while start < n {
            let rows = min(batchSize, n - start)
            input.withUnsafeBufferPointer { ip in masks.withUnsafeBufferPointer { mp in out.withUnsafeMutableBufferPointer { op in
                denoise(ip.baseAddress! + start * d, mp.baseAddress! + start * d, rows, op.baseAddress! + start * d)
            } } }
            start += rows
        }
        var err = (all: 0.0, hidden: 0.0, meanAll: 0.0, meanHidden: 0.0), hiddenCount = 0
        for r in 0..<n {
            for j in 0..<d {
                let k = r * d + j
                let x0 = Double(images.storage[k])
                let e = (Double(out[k]) - x0) * (Double(out[k]) - x0)
                let fill = masks[k] > 0 ? Double(input[k]) : Double(meanImage[j])
                let em = (fill - x0) * (fill - x0)
                err.all += e
                err.meanAll += em
                if masks[k] == 0 { err.hidden += e; err.meanHidden += em; hiddenCount += 1 }
            }
        }
        func psnr(_ sum: Double, _ count: Int) -> Double { 10 * log10(4 / max(sum / Double(max(count, 1)), 1e-12)) }
        return .init(images: n, maskKeep: keep, sigma: sigma, psnr: psnr(err.all, n * d), psnrHidden: psnr(err.hidden, hiddenCount),
                     psnrMeanImage: psnr(err.meanAll, n * d), psnrHiddenMeanImage: psnr(err.meanHidden, hiddenCount))
    }
}
