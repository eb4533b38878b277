import Foundation
import TensorCore

/// An isotropic Gaussian mixture `X0 ~ sum_k w_k N(mu_k, s^2 I)` in d dimensions: synthetic data
/// with an exact posterior-mean oracle (SPEC, Oracles).
///
/// The oracle `E[X0 | X_sigma = x]`, with `X_sigma = X0 + sigma Z`, is
/// `sum_k r_k(x) (mu_k + s^2/(s^2 + sigma^2) (x - mu_k))`, `r_k(x)` proportional to
/// `w_k N(x; mu_k, (s^2 + sigma^2) I)`. It is what a denoiser trained with DSM on clean samples
/// (SPEC O1), or with ambient DSM on noisy ones (O2), should converge to.
public struct GaussianMixture: Codable, Sendable, Equatable {
    /// Component means, `[K][d]`.
    public let means: [[Double]]
    /// Component weights, normalised to sum to 1.
    public let weights: [Double]
    /// The per-coordinate standard deviation `s` of every component.
    public let std: Double

    /// Number of coordinates d.
    public var dimension: Int { means[0].count }
    /// Number of components K.
    public var components: Int { means.count }

    /// A mixture from explicit parameters; `weights` are normalised. Throws unless there is at
    /// least one component, all means have the same positive dimension and are finite, the
    /// weights are one per component, non-negative and not all zero, and `std` is positive.
    public init(means: [[Double]], weights: [Double], std: Double) throws {
        guard let d = means.first?.count, d > 0, means.allSatisfy({ $0.count == d }),
              means.allSatisfy({ $0.allSatisfy(\.isFinite) }) else {
            throw DatasetError.invalidArgument(what: "Gaussian mixture means", expected: "K >= 1 finite vectors of one dimension d >= 1",
                                               found: "dimensions \(means.map(\.count))")
        }
        let total = weights.reduce(0, +)
        guard weights.count == means.count, weights.allSatisfy({ $0 >= 0 && $0.isFinite }), total > 0, total.isFinite else {
            throw DatasetError.invalidArgument(what: "Gaussian mixture weights", expected: "\(means.count) non-negative finite numbers, not all 0",
                                               found: "\(weights)")
        }
        guard std > 0, std.isFinite else {
            throw DatasetError.invalidArgument(what: "Gaussian mixture std", expected: "a positive finite number", found: "\(std)")
        }
        self.means = means
        self.weights = weights.map { $0 / total }
        self.std = std
    }

    public init(from decoder: Decoder) throws {
        enum Keys: String, CodingKey { case means, weights, std }
        let c = try decoder.container(keyedBy: Keys.self)
        do {
            try self.init(means: c.decode([[Double]].self, forKey: .means), weights: c.decode([Double].self, forKey: .weights),
                          std: c.decode(Double.self, forKey: .std))
        } catch let e as DatasetError {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: e.description))
        }
    }

    /// The component std of `standard(...)` mixtures.
    public static let standardStd = 0.25

    /// The reference synthetic dataset: K means drawn from N(0, I_d), weights uniform in
    /// [0.5, 1.5] then normalised, component std `s = 0.25`.
    ///
    /// With unit-scale means and s = 0.25, neighbouring components in low dimension (d = 2,
    /// K = 8) sit a few s apart: separated, yet they overlap once sigma reaches about s, so the
    /// posterior mean is far from both the identity and a nearest-mean rule over the useful
    /// range of sigma. Means and weights are drawn with `CounterRNG(seed, .syntheticData,
    /// step: 1, sample: k)`: step 1 keeps them apart from the samples (step 0).
    public static func standard(dimension d: Int, components K: Int, seed: UInt64) -> GaussianMixture {
        precondition(d >= 1 && K >= 1, "a mixture needs d >= 1 and K >= 1, got d = \(d), K = \(K)")
        var means: [[Double]] = []
        var weights: [Double] = []
        for k in 0..<K {
            var rng = CounterRNG(seed: seed, purpose: .syntheticData, step: 1, sample: k)
            weights.append(0.5 + rng.uniform())
            means.append((0..<d).map { _ in rng.normal() })
        }
        // Cannot fail: the draws are finite and the weights positive.
        guard let mixture = try? GaussianMixture(means: means, weights: weights, std: standardStd) else {
            preconditionFailure("standard mixture parameters invalid")
        }
        return mixture
    }

    // MARK: Sampling

    /// Samples with indices `indices`: sample i uses `CounterRNG(seed, .syntheticData, sample: i)`,
    /// so it is the same whatever the count or range it is drawn in. Returns `x [N, d]` and the
    /// component of each sample.
    public func sample(indices: Range<Int>, seed: UInt64) -> (x: Tensor<Float>, components: [Int]) {
        let d = dimension
        var x = [Float](repeating: 0, count: indices.count * d)
        var labels: [Int] = []
        labels.reserveCapacity(indices.count)
        for (row, i) in indices.enumerated() {
            var rng = CounterRNG(seed: seed, purpose: .syntheticData, sample: i)
            let u = rng.uniform()
            var k = 0
            var cumulative = weights[0]
            while k < components - 1 && u > cumulative {
                k += 1
                cumulative += weights[k]
            }
            labels.append(k)
            for j in 0..<d { x[row * d + j] = Float(means[k][j] + std * rng.normal()) }
        }
        return (Tensor(shape: [indices.count, d], storage: x), labels)
    }

    /// The first `count` samples (see `sample(indices:seed:)`).
    public func sample(count: Int, seed: UInt64) -> (x: Tensor<Float>, components: [Int]) {
        sample(indices: 0..<count, seed: seed)
    }

    /// The mixture mean `sum_k w_k mu_k`: the posterior mean as sigma goes to infinity.
    public var mean: [Double] {
        (0..<dimension).map { j in zip(weights, means).reduce(0) { $0 + $1.0 * $1.1[j] } }
    }

    // MARK: Oracle

    /// The responsibilities `r_k(x)`: the posterior probability of each component given
    /// `x = X0 + sqrt(sigma^2 + extraVariance) Z`, computed with log-sum-exp so that far-away
    /// points do not underflow.
    public func responsibilities(_ x: [Double], sigma: Double, extraVariance: Double = 0) -> [Double] {
        precondition(x.count == dimension, "x has \(x.count) coordinates, the mixture \(dimension)")
        precondition(sigma >= 0 && extraVariance >= 0, "sigma \(sigma) and extraVariance \(extraVariance) must be >= 0")
        let variance = std * std + extraVariance + sigma * sigma
        // Isotropic components share the normalising constant: only the exponents differ.
        var logits = [Double](repeating: 0, count: components)
        for k in 0..<components {
            var squared = 0.0
            for j in 0..<dimension {
                let delta = x[j] - means[k][j]
                squared += delta * delta
            }
            logits[k] = weights[k] > 0 ? Foundation.log(weights[k]) - squared / (2 * variance) : -.infinity
        }
        let top = logits.max() ?? 0
        var r = logits.map { Foundation.exp($0 - top) }
        let total = r.reduce(0, +)
        for k in 0..<components { r[k] /= total }
        return r
    }

    /// The posterior mean `E[X0 | X_sigma = x]` (SPEC, Oracles):
    /// `sum_k r_k(x) (mu_k + s2/(s2 + sigma^2) (x - mu_k))` with `s2 = s^2 + extraVariance`.
    ///
    /// `extraVariance = sigma_n^2` gives `E[X_n | X_n + sigma Z = x]` for noisy data
    /// `X_n = X0 + sigma_n Z'`: what plain DSM on noisy data learns. Exact up to rounding.
    public func posteriorMean(_ x: [Double], sigma: Double, extraVariance: Double = 0) -> [Double] {
        let s2 = std * std + extraVariance
        let shrink = s2 / (s2 + sigma * sigma)
        let r = responsibilities(x, sigma: sigma, extraVariance: extraVariance)
        var out = [Double](repeating: 0, count: dimension)
        for k in 0..<components where r[k] > 0 {
            for j in 0..<dimension {
                out[j] += r[k] * (means[k][j] + shrink * (x[j] - means[k][j]))
            }
        }
        return out
    }

    /// `posteriorMean` for every row of `x [N, d]`, in the precision of `x`.
    public func posteriorMean<T: Scalar>(_ x: Tensor<T>, sigma: Double, extraVariance: Double = 0) -> Tensor<T> {
        precondition(x.rank == 2 && x.shape[1] == dimension, "expected [N, \(dimension)], got \(x.shape)")
        var out = [T](repeating: 0, count: x.count)
        let d = dimension
        for i in 0..<x.rows {
            let row = x.storage[(i * d)..<((i + 1) * d)].map { Double($0) }
            let m = posteriorMean(row, sigma: sigma, extraVariance: extraVariance)
            for j in 0..<d { out[i * d + j] = T(m[j]) }
        }
        return Tensor(shape: x.shape, storage: out)
    }
}
