import Datasets
import Diffusion
import Foundation
import TensorCore

/// What `ambient eval` writes (JSON, snake case): image quality, memorisation and denoising
/// error, each present when it applies to the run's data (SPEC "Evaluation").
public struct EvaluationReport: Codable, Sendable {
    public struct ImageQuality: Codable, Sendable {
        /// Frechet distance of generated samples to the Fashion-MNIST test set in evaluator features.
        public var frechetDistance: Double
        /// The same for as many real training images as samples: the floor at this sample count.
        public var frechetDistanceOfTrainingImages: Double
        public var evaluatorPath: String
        public var evaluatorVersion: Int
        public var evaluatorTestAccuracy: Double
        /// Fraction of generated samples the evaluator puts in each class.
        public var classFractions: [Double]
        /// Total variation distance of `classFractions` from uniform (0 = balanced).
        public var classBalanceTotalVariation: Double
        /// Samples with a value beyond +-`divergedThreshold` (the data lies in [-1, 1]): a sampler
        /// trajectory that diverged. One such sample can make the Frechet distance meaningless,
        /// so it is counted here rather than hidden (nil in reports written before it existed).
        public var samplesDiverged: Int?
        /// The Frechet distance of the other samples, present only when some diverged: a
        /// diagnostic of what the rest look like, not a replacement for `frechetDistance`.
        public var frechetDistanceWithoutDiverged: Double?
        /// Median over samples of the residual pixel noise (`Metrics.residualNoise`: about s for
        /// images carrying N(0, s^2) noise), which the Frechet distance hardly sees (nil in reports
        /// written before it existed).
        public var residualNoise: Double?
        /// The same for the test images the samples are compared with: the floor (their own fine
        /// detail, about 0.01 for Fashion-MNIST).
        public var residualNoiseOfTestImages: Double?
        /// The Frechet distance in the noise-aware evaluator's features (Evaluator+NoiseAware.swift),
        /// which sees noise and blur; `frechetDistance` above is the class-only evaluator's (nil in
        /// reports written before it existed).
        public var noiseAwareFrechetDistance: Double?
        public var noiseAwareFrechetDistanceOfTrainingImages: Double?
        public var noiseAwareEvaluatorPath: String?
    }

    /// The magnitude past which a generated 28x28 sample counts as diverged.
    public static let divergedThreshold: Float = 10
    public struct Memorization: Codable, Sendable {
        /// What the samples were compared with.
        public var reference: String
        public var fractionAbove_0_95: Double
        public var fractionAbove_0_90: Double
        public var meanSimilarity: Double
        /// Edges of the histogram bins (count + 1 values) and counts.
        public var histogramEdges: [Double]
        public var histogramCounts: [Int]
        /// Fresh test images against the same reference, for calibration (SPEC: about 1% above 0.95
        /// for the full training set).
        public var testImagesFractionAbove_0_95: Double?
        public var testImagesFractionAbove_0_90: Double?
        /// The copy share calibrated for the samples' residual noise (nil in reports written before it existed).
        public var calibratedCopies: CalibratedCopies?
    }
    public struct Denoising: Codable, Sendable {
        public var sigma: Double
        /// Mean squared error per coordinate of D(x, sigma) against the GMM posterior mean.
        public var mseToOracle: Double
        /// The same for the naive solution (what plain DSM on the noisy data would learn), when
        /// the run's data is noisy.
        public var naiveMSEToOracle: Double?
    }

    /// Denoising error on held-out clean images (image runs): what separates two models per noise
    /// level, where the Frechet distance only sees the end of sampling.
    public struct TestDenoising: Codable, Sendable {
        public var sigma: Double
        /// Mean squared error per pixel of D(x0 + sigma z, sigma) against the clean test image x0.
        /// E[X0 | X_sigma] minimises it, so lower is closer to the posterior mean; the floor is the
        /// minimum MSE of the data distribution at sigma, not 0.
        public var mse: Double
    }

    public var run: String
    public var objective: ObjectiveKind
    public var samples: Int
    public var samplerSteps: Int
    public var samplerStop: Double?
    public var samplerMaskKeep: Double?
    /// The range every denoised estimate was clamped to while sampling (`--clip-denoised`), nil
    /// when the sampler did not clamp (the default) or the samples came from a file.
    public var samplerClip: [Double]?
    public var imageQuality: ImageQuality?
    public var memorization: Memorization?
    public var denoising: [Denoising]?
    /// Absent for masked runs (D needs masks there) and in reports written before it existed.
    public var testDenoising: [TestDenoising]?
    /// Masked runs only (Evaluation+Inpainting.swift).
    public var inpainting: Inpainting?

    public init(run: String, objective: ObjectiveKind, samples: Int, samplerSteps: Int, samplerStop: Double?, samplerMaskKeep: Double?) {
        self.run = run
        self.objective = objective
        self.samples = samples
        self.samplerSteps = samplerSteps
        self.samplerStop = samplerStop
        self.samplerMaskKeep = samplerMaskKeep
    }

    public func json() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return Array(try encoder.encode(self)) + [10]
    }
}

public enum Evaluation {
    /// Image quality of 28x28 samples (N, 784) in the evaluator's features.
    public static func imageQuality(_ samples: Tensor<Float>, evaluator: FashionEvaluator, seed: UInt64) throws -> EvaluationReport.ImageQuality {
        let test = try FashionMNIST.load(split: .test), train = try FashionMNIST.load(split: .train)
        let testImages = test.images.reshaped([test.images.rows, 784])
        let testFeatures = evaluator.features(testImages)
        let generated = evaluator.features(samples)
        var rng = CounterRNG(seed: seed, purpose: .evaluation, step: 1)
        let realPick = Array(rng.permutation(train.images.rows).prefix(samples.rows))
        let realFeatures = evaluator.features(train.images.reshaped([train.images.rows, 784]).gather(rows: realPick))
        let classes = evaluator.classify(samples)
        var fractions = [Double](repeating: 0, count: 10)
        for c in classes { fractions[c] += 1 / Double(classes.count) }
        let diverged = divergedRows(samples)
        let kept = (0..<samples.rows).filter { !diverged.contains($0) }
        return .init(frechetDistance: Metrics.frechetDistance(generated, testFeatures),
                     frechetDistanceOfTrainingImages: Metrics.frechetDistance(realFeatures, testFeatures),
                     evaluatorPath: evaluator.path, evaluatorVersion: FashionEvaluator.version, evaluatorTestAccuracy: evaluator.testAccuracy,
                     classFractions: fractions, classBalanceTotalVariation: fractions.reduce(0) { $0 + abs($1 - 0.1) } / 2,
                     samplesDiverged: diverged.count,
                     frechetDistanceWithoutDiverged: diverged.isEmpty || kept.count < 2 ? nil
                        : Metrics.frechetDistance(evaluator.features(samples.gather(rows: kept)), testFeatures),
                     residualNoise: Metrics.residualNoise(samples, height: 28, width: 28).map(median),
                     residualNoiseOfTestImages: Metrics.residualNoise(testImages, height: 28, width: 28).map(median))
    }

    /// Rows of `samples` with a value beyond +-`EvaluationReport.divergedThreshold` (or not finite).
    public static func divergedSamples(_ samples: Tensor<Float>) -> Int { divergedRows(samples).count }

    /// The indices of those rows.
    public static func divergedRows(_ samples: Tensor<Float>) -> Set<Int> {
        let d = samples.storage.count / max(samples.rows, 1)
        guard d > 0 else { return [] }
        var rows = Set<Int>()
        for r in 0..<samples.rows {
            let row = samples.storage[(r * d)..<((r + 1) * d)]
            if row.contains(where: { !(abs($0) <= EvaluationReport.divergedThreshold) }) { rows.insert(r) }
        }
        return rows
    }

    /// Nearest-neighbour cosine similarity of samples to `reference` (mean-centred pixel space).
    /// `progress(done, total)` counts reference rows compared (twice over with test images).
    public static func memorization(_ samples: Tensor<Float>, reference: Tensor<Float>, referenceName: String,
                                    testImages: Tensor<Float>?, progress: ((Int, Int) -> Void)? = nil) -> EvaluationReport.Memorization {
        let total = reference.rows * (testImages == nil ? 1 : 2)
        let s = Metrics.nearestNeighbourCosine(samples, reference: reference) { progress?($0, total) }
        let t = testImages.map { Metrics.nearestNeighbourCosine($0, reference: reference) { progress?(reference.rows + $0, total) } }
        func above(_ v: [Double], _ x: Double) -> Double { Double(v.filter { $0 > x }.count) / Double(max(v.count, 1)) }
        let bins = 20
        return .init(reference: referenceName, fractionAbove_0_95: above(s, 0.95), fractionAbove_0_90: above(s, 0.9),
                     meanSimilarity: s.reduce(0, +) / Double(max(s.count, 1)),
                     histogramEdges: (0...bins).map { Double($0) / Double(bins) },
                     histogramCounts: Metrics.histogram(s, bins: bins, range: 0...1),
                     testImagesFractionAbove_0_95: t.map { above($0, 0.95) }, testImagesFractionAbove_0_90: t.map { above($0, 0.9) })
    }

    /// Noise levels of `testDenoising`: a fixed grid from 0.05 to 50, only those at or above the
    /// level the model was trained down to (its sampler stop), which is itself included.
    public static func testDenoisingSigmas(floor: Double?) -> [Double] {
        let grid = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]
        guard let floor, floor > 0 else { return grid }
        return [floor] + grid.filter { $0 > floor * 1.0001 }
    }

    /// MSE per pixel of D(x0 + sigma z, sigma) against clean held-out images x0 at each sigma
    /// (noise keyed by `seed` and the sigma's index, so two models see the same noisy inputs).
    public static func testDenoising(_ model: TrainedModel, images: Tensor<Float>, sigmas: [Double],
                                     seed: UInt64) -> [EvaluationReport.TestDenoising] {
        sigmas.enumerated().map { i, sigma in
            let x = GaussianCorruption.apply(images, sigma: sigma, seed: seed &+ 1000 &+ UInt64(i))
            let d = model.denoise(x, sigma: sigma)
            var sum = 0.0
            for (a, b) in zip(d.storage, images.storage) { sum += Double((a - b) * (a - b)) }
            return .init(sigma: sigma, mse: sum / Double(max(images.count, 1)))
        }
    }

    /// MSE of the model's D against the mixture's posterior mean on fresh points at each sigma.
    public static func denoising(_ model: TrainedModel, mixture: GaussianMixture, sigmas: [Double], dataSigma: Double,
                                 count: Int = 4000) -> [EvaluationReport.Denoising] {
        sigmas.map { sigma in
            let clean = mixture.sample(indices: 2_000_000..<(2_000_000 + count), seed: 77).x
            let x = GaussianCorruption.apply(clean, sigma: sigma, seed: 78)
            let truth = mixture.posteriorMean(x, sigma: sigma)
            let d = model.denoise(x, sigma: sigma)
            func mse(_ a: Tensor<Float>) -> Double {
                zip(a.storage, truth.storage).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } / Double(a.count)
            }
            let naive = dataSigma > 0 ? mse(mixture.posteriorMean(x, sigma: sigma, extraVariance: dataSigma * dataSigma)) : nil
            return .init(sigma: sigma, mseToOracle: mse(d), naiveMSEToOracle: naive)
        }
    }
}
