import Foundation
import Testing
import TensorCore
import Diffusion

@Suite struct MetricsTests {
    /// Frechet distance of Gaussians in closed form: for diagonal covariances it is
    /// `||mu1 - mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2`; and a full-covariance case against a
    /// commuting pair (S2 = 4 S1 gives tr(S1) + tr(S2) - 2 tr(2 S1) = tr(S1)).
    @Test func frechetDistanceClosedForms() {
        let d = Metrics.frechetDistance(mean1: [0, 1], covariance1: [4, 0, 0, 1], mean2: [1, 1], covariance2: [1, 0, 0, 9])
        #expect(abs(d - (1 + 1 + 4)) < 1e-10, "\(d)")
        let s1: [Double] = [2, 0.5, 0.1, 0.5, 1, 0.2, 0.1, 0.2, 0.7]
        let d2 = Metrics.frechetDistance(mean1: [0, 0, 0], covariance1: s1, mean2: [0, 0, 0], covariance2: s1.map { 4 * $0 })
        #expect(abs(d2 - 3.7) < 1e-10, "\(d2)")
        // Sample version: two draws of the same distribution are close; a shifted one is not.
        var rng = CounterRNG(seed: 3, purpose: .evaluation)
        let a = Tensor<Float>(shape: [4000, 3], storage: rng.normals(12000))
        let b = Tensor<Float>(shape: [4000, 3], storage: rng.normals(12000))
        let c = Tensor<Float>(shape: [4000, 3], storage: rng.normals(12000).map { $0 + 1 })
        #expect(Metrics.frechetDistance(a, b) < 0.02)
        #expect(abs(Metrics.frechetDistance(a, c) - 3) < 0.15)
    }

    @Test func nearestNeighbourCosineFindsCopies() {
        var rng = CounterRNG(seed: 4, purpose: .evaluation)
        let train = Tensor<Float>(shape: [500, 16], storage: rng.normals(8000))
        let copies = train.gather(rows: [3, 77])
        let fresh = Tensor<Float>(shape: [2, 16], storage: rng.normals(32))
        let s = Metrics.nearestNeighbourCosine(Tensor.concatenate([copies, fresh]), reference: train, block: 128)
        #expect(abs(s[0] - 1) < 1e-5 && abs(s[1] - 1) < 1e-5)
        #expect(s[2] < 0.9 && s[3] < 0.9)
        #expect(Metrics.histogram([0.1, 0.5, 0.95, 1.0, -2], bins: 4, range: 0...1) == [2, 0, 1, 2])
    }

    /// Residual noise: zero on constant and linear images (the diagonal Haar detail vanishes there),
    /// about s for N(0, s^2) noise added to them, and nil for rows that are not the stated image size.
    @Test func residualNoiseRecoversGaussianNoise() throws {
        var rng = CounterRNG(seed: 5, purpose: .evaluation)
        let n = 300, side = 28
        var smooth = [Float](repeating: 0, count: n * side * side)
        for r in 0..<n { for i in 0..<side { for j in 0..<side {
            smooth[(r * side + i) * side + j] = Float(r % 7) * 0.1 - 0.3 + 0.02 * Float(i) - 0.03 * Float(j)
        } } }
        let clean = try #require(Metrics.residualNoise(Tensor<Float>(shape: [n, side * side], storage: smooth), height: side, width: side))
        #expect(clean.allSatisfy { $0 < 1e-6 }, "\(clean.max()!)")
        for s: Float in [0.05, 0.2, 0.5] {
            let z: [Float] = rng.normals(n * side * side)
            let noisy = Tensor<Float>(shape: [n, side * side], storage: zip(smooth, z).map { $0 + s * $1 })
            let est = median(try #require(Metrics.residualNoise(noisy, height: side, width: side)))
            #expect(abs(est - Double(s)) < 0.02 * Double(s), "noise \(s): estimated \(est)")
        }
        // Odd sides leave the last row and column out; wrong sizes are refused.
        #expect(Metrics.residualNoise(Tensor<Float>(shape: [2, 15], storage: [Float](repeating: 1, count: 30)), height: 3, width: 5) == [0, 0])
        #expect(Metrics.residualNoise(Tensor<Float>(shape: [2, 784], storage: [Float](repeating: 0, count: 1568)), height: 28, width: 27) == nil)
        #expect(Metrics.residualNoise(Tensor<Float>(shape: [1, 1], storage: [0]), height: 1, width: 1) == nil)
        #expect(median([3, 1, 2]) == 2 && median([4, 1, 2, 3]) == 2.5 && median([]).isNaN)
    }
}
