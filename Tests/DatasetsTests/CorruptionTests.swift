import Testing
import TensorCore
import Datasets

@Suite struct CorruptionTests {
    static let clean: Tensor<Float> = {
        var rng = CounterRNG(seed: 1, purpose: .evaluation)
        return Tensor(shape: [12, 1, 2, 3], storage: rng.normals(72))
    }()

    /// The noise of a sample is fixed by its index: a subset, in any order, gets the same rows.
    @Test func subsetAgreesWithFullDataset() {
        let full = GaussianCorruption.apply(Self.clean, sigma: 0.3, seed: 5)
        let picked = [7, 2, 11, 0]
        let subset = GaussianCorruption.apply(Self.clean.gather(rows: picked), sigma: 0.3, seed: 5, sampleIndices: picked)
        #expect(subset == full.gather(rows: picked))
        let prefix = GaussianCorruption.apply(Self.clean.rows(0..<5), sigma: 0.3, seed: 5)
        #expect(prefix == full.rows(0..<5))
    }

    @Test func noiseIsScaledPerSampleAndSeeded() {
        let a = GaussianCorruption.apply(Self.clean, sigma: 0.3, seed: 5)
        #expect(a != GaussianCorruption.apply(Self.clean, sigma: 0.3, seed: 6))
        #expect(GaussianCorruption.apply(Self.clean, sigma: 0, seed: 5) == Self.clean)
        var sigmas = [Double](repeating: 0.3, count: 12)
        sigmas[4] = 0
        let mixed = GaussianCorruption.apply(Self.clean, sigmas: sigmas, seed: 5)
        #expect(mixed[row: 4] == Self.clean[row: 4])
        #expect(mixed[row: 3] == a[row: 3])
        // x_n - x0 = sigma z_i with z_i from the sample's own stream.
        let z = GaussianCorruption.noise(sample: 9, count: 6, seed: 5)
        for j in 0..<6 {
            #expect(abs(Double(a.storage[9 * 6 + j] - Self.clean.storage[9 * 6 + j]) - 0.3 * z[j]) < 1e-6)
        }
        #expect(GaussianCorruption.noise(sample: 8, count: 6, seed: 5) != z)
    }

    @Test func noiseHasUnitVariance() {
        let n = 4000, d = 10
        let zeros = Tensor<Float>(zeros: [n, d])
        let noisy = GaussianCorruption.apply(zeros, sigma: 2, seed: 1)
        let mean = noisy.storage.reduce(0) { $0 + Double($1) } / Double(n * d)
        let variance = noisy.storage.reduce(0) { $0 + Double($1) * Double($1) } / Double(n * d) - mean * mean
        #expect(abs(mean) < 0.05 && abs(variance - 4) < 0.15)
    }
}
