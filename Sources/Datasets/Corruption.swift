import TensorCore

/// Simulated Gaussian corruption of a clean dataset: `x_n = x0 + sigma_n z` (SPEC O2, O6).
///
/// The noise `z_i` of sample i is a function of (seed, i) only: it comes from
/// `CounterRNG(seed, .corruption, sample: i)`, where i is the sample's index in the whole
/// dataset. Corrupting a subset, a shard or a batch gives each sample the same noisy copy as
/// corrupting the full dataset: the noisy copy is drawn once and is the data.
public enum GaussianCorruption {
    /// `clean [N, ...]` plus `sigma z_i` on each row; row r is sample `sampleIndices[r]` of the
    /// dataset (default: row r is sample r).
    public static func apply(_ clean: Tensor<Float>, sigma: Double, seed: UInt64,
                             sampleIndices: [Int]? = nil) -> Tensor<Float> {
        apply(clean, sigmas: [Double](repeating: sigma, count: clean.rows), seed: seed, sampleIndices: sampleIndices)
    }

    /// As `apply(_:sigma:seed:sampleIndices:)` with one noise level per row (SPEC O2 allows
    /// per-sample sigma_n; a row with sigma 0 stays clean).
    public static func apply(_ clean: Tensor<Float>, sigmas: [Double], seed: UInt64,
                             sampleIndices: [Int]? = nil) -> Tensor<Float> {
        let n = clean.rows, d = clean.rowSize
        precondition(sigmas.count == n, "\(sigmas.count) noise levels for \(n) samples")
        precondition(sampleIndices == nil || sampleIndices?.count == n, "sampleIndices must name every row")
        var out = clean
        for r in 0..<n {
            let sample = sampleIndices?[r] ?? r
            let z = noise(sample: sample, count: d, seed: seed)
            for j in 0..<d { out.storage[r * d + j] += Float(sigmas[r] * z[j]) }
        }
        return out
    }

    /// The unit-variance noise `z_i` of sample `sample`: `count` standard normals.
    public static func noise(sample: Int, count: Int, seed: UInt64) -> [Double] {
        var rng = CounterRNG(seed: seed, purpose: .corruption, sample: sample)
        return (0..<count).map { _ in rng.normal() }
    }
}
