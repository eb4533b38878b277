import Datasets
import Diffusion
import Foundation
import TensorCore

/// The training set as the objectives consume it: one row per sample, flattened, plus the
/// noise level each row already carries.
public struct TrainingData: Sendable {
    /// (N, d), the data as stored: noisy where `sigmaN > 0`.
    public var samples: Tensor<Float>
    /// Per-sample noise level of `samples` (0 = clean).
    public var sigmaN: [Double]
    /// (channels, height, width) when the samples are images.
    public var imageShape: [Int]?
    /// For synthetic data: the generating mixture (the test oracle).
    public var mixture: GaussianMixture?
    public var summary: String

    public var count: Int { samples.rows }
    public var dimension: Int { samples.rowSize }

    public init(samples: Tensor<Float>, sigmaN: [Double], imageShape: [Int]? = nil,
                mixture: GaussianMixture? = nil, summary: String) {
        self.samples = samples
        self.sigmaN = sigmaN
        self.imageShape = imageShape
        self.mixture = mixture
        self.summary = summary
    }

    /// Loads and validates the data of `config` and applies its simulated corruption.
    /// Throws (before anything is written) on missing, truncated or non-finite data.
    public static func load(_ config: RunConfig) throws -> TrainingData {
        var samples: Tensor<Float>
        var imageShape: [Int]? = nil
        var mixture: GaussianMixture? = nil
        var summary: String
        switch config.data {
        case .fashionMNIST:
            let set = try FashionMNIST.load(split: .train)
            imageShape = Array(set.images.shape.dropFirst())
            samples = set.images.reshaped([set.images.rows, set.images.rowSize])
            summary = "Fashion-MNIST train, \(samples.rows) images 28x28 in [-1, 1]"
        case let .gaussianMixture(spec):
            let standard = GaussianMixture.standard(dimension: spec.dimension, components: spec.components, seed: spec.seed)
            let gmm = try GaussianMixture(means: standard.means, weights: standard.weights, std: spec.std)
            samples = gmm.sample(count: spec.count, seed: spec.seed).x
            mixture = gmm
            summary = "Gaussian mixture, \(spec.count) samples, d=\(spec.dimension), \(spec.components) components, std \(spec.std)"
        case let .npy(path):
            let t = try NPY.readFloat(path)
            switch t.rank {
            case 2: break
            case 4 where t.shape[1] >= 1: imageShape = Array(t.shape.dropFirst())
            default:
                throw DataError(message: "\(path): expected shape (N, d) or (N, C, H, W), found \(t.shape)")
            }
            guard t.rows >= 1, t.rowSize >= 1 else { throw DataError(message: "\(path): no samples (shape \(t.shape))") }
            samples = t.reshaped([t.rows, t.rowSize])
            summary = "\(path): \(t.rows) samples of shape \(Array(t.shape.dropFirst()))"
        }
        try validateFinite(samples, name: config.data.description)

        var sigmaN = [Double](repeating: 0, count: samples.rows)
        if let s = config.dataSigma {
            sigmaN = [Double](repeating: s, count: samples.rows)
            summary += ", declared noisy at sigma_n = \(s)"
        }
        if case let .noise(s)? = config.corruption {
            samples = GaussianCorruption.apply(samples, sigma: s, seed: config.seed)
            sigmaN = [Double](repeating: s, count: samples.rows)
            summary += ", corrupted with Gaussian noise sigma_n = \(s) (fixed per sample)"
        }
        return TrainingData(samples: samples, sigmaN: sigmaN, imageShape: imageShape, mixture: mixture, summary: summary)
    }
}

/// Training data that cannot be used; the message names the file and the problem.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
