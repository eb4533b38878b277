import Foundation
import Testing
import TensorCore
import Datasets

@Suite struct GaussianMixtureTests {
    static let oneD = try! GaussianMixture(means: [[-1], [0.3], [1.2]], weights: [0.3, 0.5, 0.2], std: 0.25)

    @Test func standardIsDeterministicAndValid() {
        let a = GaussianMixture.standard(dimension: 3, components: 5, seed: 1)
        #expect(a == GaussianMixture.standard(dimension: 3, components: 5, seed: 1))
        #expect(a != GaussianMixture.standard(dimension: 3, components: 5, seed: 2))
        #expect(a.dimension == 3 && a.components == 5 && a.std == GaussianMixture.standardStd)
        #expect(abs(a.weights.reduce(0, +) - 1) < 1e-12)
        #expect(a.weights.allSatisfy { $0 > 0.5 / 7.5 - 1e-12 && $0 < 1.5 / 2.5 + 1e-12 })
    }

    @Test func sampleDependsOnlyOnIndex() {
        let g = GaussianMixture.standard(dimension: 2, components: 4, seed: 7)
        let small = g.sample(count: 10, seed: 3), large = g.sample(count: 100, seed: 3)
        #expect(small.x.storage == Array(large.x.storage.prefix(20)))
        #expect(small.components == Array(large.components.prefix(10)))
        let middle = g.sample(indices: 40..<45, seed: 3)
        #expect(middle.x == large.x.rows(40..<45) && middle.components == Array(large.components[40..<45]))
        #expect(g.sample(count: 10, seed: 4).x != small.x)
    }

    @Test func sampleStatisticsMatchParameters() {
        let g = Self.oneD
        let n = 40_000
        let s = g.sample(count: n, seed: 1)
        var counts = [0, 0, 0]
        var deviation = [0.0, 0.0, 0.0]
        for i in 0..<n {
            counts[s.components[i]] += 1
            let dx = Double(s.x.storage[i]) - g.means[s.components[i]][0]
            deviation[s.components[i]] += dx * dx
        }
        for k in 0..<3 {
            let p = Double(counts[k]) / Double(n)
            #expect(abs(p - g.weights[k]) < 4 * (g.weights[k] * (1 - g.weights[k]) / Double(n)).squareRoot())
            #expect(abs((deviation[k] / Double(counts[k])).squareRoot() - g.std) < 0.01)
        }
    }

    /// Importance-weighted Monte Carlo: E[X0 | X_sigma = x] = E[X0 N(x; X0, sigma^2)] / E[N(x; X0, sigma^2)].
    static func monteCarloPosteriorMean(_ g: GaussianMixture, x: [Double], sigma: Double, samples: Int)
        -> (mean: [Double], standardError: Double) {
        let s = g.sample(count: samples, seed: 99)
        let d = g.dimension
        var logW = [Double](repeating: 0, count: samples)
        for i in 0..<samples {
            var sq = 0.0
            for j in 0..<d {
                let delta = x[j] - Double(s.x.storage[i * d + j])
                sq += delta * delta
            }
            logW[i] = -sq / (2 * sigma * sigma)
        }
        let top = logW.max()!
        let w = logW.map { exp($0 - top) }
        let total = w.reduce(0, +)
        var mean = [Double](repeating: 0, count: d)
        for i in 0..<samples { for j in 0..<d { mean[j] += w[i] * Double(s.x.storage[i * d + j]) / total } }
        // Delta-method standard error of a self-normalised estimator (largest coordinate).
        var se = 0.0
        for j in 0..<d {
            var v = 0.0
            for i in 0..<samples {
                let r = w[i] * (Double(s.x.storage[i * d + j]) - mean[j])
                v += r * r
            }
            se = max(se, v.squareRoot() / total)
        }
        return (mean, se)
    }

    @Test(arguments: [(-0.8, 0.4), (0.0, 0.4), (0.7, 0.4), (0.5, 1.5), (-0.4, 0.1)])
    func oracleMatchesMonteCarloIn1D(x: Double, sigma: Double) {
        let mc = Self.monteCarloPosteriorMean(Self.oneD, x: [x], sigma: sigma, samples: 200_000)
        let exact = Self.oneD.posteriorMean([x], sigma: sigma)
        #expect(abs(exact[0] - mc.mean[0]) < 5 * mc.standardError + 1e-4, "exact \(exact) mc \(mc)")
    }

    @Test func oracleMatchesMonteCarloIn2D() {
        let g = GaussianMixture.standard(dimension: 2, components: 5, seed: 5)
        for (x, sigma) in [([0.2, -0.3], 0.5), ([1.0, 0.5], 0.3), ([-1.5, 0.0], 1.0)] {
            let mc = Self.monteCarloPosteriorMean(g, x: x, sigma: sigma, samples: 200_000)
            let exact = g.posteriorMean(x, sigma: sigma)
            for j in 0..<2 {
                #expect(abs(exact[j] - mc.mean[j]) < 5 * mc.standardError + 1e-4, "x \(x) exact \(exact) mc \(mc)")
            }
        }
    }

    @Test func limits() {
        let g = GaussianMixture.standard(dimension: 4, components: 6, seed: 2)
        let x = [0.3, -1.2, 2.0, 0.1]
        let small = g.posteriorMean(x, sigma: 1e-5)
        for j in 0..<4 { #expect(abs(small[j] - x[j]) < 1e-6) }
        let large = g.posteriorMean(x, sigma: 1e5)
        let mean = g.mean
        for j in 0..<4 { #expect(abs(large[j] - mean[j]) < 1e-6) }
    }

    /// SPEC, Oracles: E[X_n | X_sigma = x] = (1 - sn^2/sigma^2) E[X0 | X_sigma = x] + (sn^2/sigma^2) x,
    /// where X_sigma = X_n + sqrt(sigma^2 - sn^2) eta, so the left side is
    /// posteriorMean(x, sigma: sqrt(sigma^2 - sn^2), extraVariance: sn^2).
    @Test func noisyPosteriorRelation() {
        let g = GaussianMixture.standard(dimension: 3, components: 4, seed: 8)
        let sigmaN = 0.3
        for sigma in [0.35, 0.6, 2.0] {
            for x in [[0.1, 0.2, -0.4], [1.5, -1.0, 0.3]] {
                let lhs = g.posteriorMean(x, sigma: (sigma * sigma - sigmaN * sigmaN).squareRoot(), extraVariance: sigmaN * sigmaN)
                let clean = g.posteriorMean(x, sigma: sigma)
                let a = sigmaN * sigmaN / (sigma * sigma)
                for j in 0..<3 { #expect(abs(lhs[j] - ((1 - a) * clean[j] + a * x[j])) < 1e-12) }
            }
        }
    }

    /// extraVariance is the same as a wider component std.
    @Test func extraVarianceWidensComponents() throws {
        let g = Self.oneD
        let wide = try GaussianMixture(means: g.means, weights: g.weights, std: (g.std * g.std + 0.09).squareRoot())
        for x in [-1.0, 0.2, 0.9] {
            #expect(abs(g.posteriorMean([x], sigma: 0.5, extraVariance: 0.09)[0] - wide.posteriorMean([x], sigma: 0.5)[0]) < 1e-12)
        }
    }

    @Test func farPointsStayFinite() {
        let g = GaussianMixture.standard(dimension: 2, components: 3, seed: 1)
        let m = g.posteriorMean([1e4, -1e4], sigma: 0.01)
        #expect(m.allSatisfy { $0.isFinite })
        let r = g.responsibilities([1e4, -1e4], sigma: 0.01)
        #expect(abs(r.reduce(0, +) - 1) < 1e-12)
    }

    @Test func batchAgreesWithSingle() {
        let g = GaussianMixture.standard(dimension: 2, components: 3, seed: 4)
        let x = g.sample(count: 20, seed: 2).x
        let batch = g.posteriorMean(x, sigma: 0.4, extraVariance: 0.01)
        let batch64 = g.posteriorMean(x.converted(to: Double.self), sigma: 0.4, extraVariance: 0.01)
        for i in 0..<20 {
            let single = g.posteriorMean(x[row: i].map { Double($0) }, sigma: 0.4, extraVariance: 0.01)
            for j in 0..<2 {
                #expect(abs(Double(batch.storage[i * 2 + j]) - single[j]) < 1e-6)
                #expect(abs(batch64.storage[i * 2 + j] - single[j]) < 1e-15)
            }
        }
    }

    @Test func codableRoundTripAndValidation() throws {
        let g = GaussianMixture.standard(dimension: 2, components: 3, seed: 4)
        let json = try JSONEncoder().encode(g)
        #expect(try JSONDecoder().decode(GaussianMixture.self, from: json) == g)
        let bad = Data(#"{"means": [[0, 1], [2]], "weights": [1, 1], "std": 0.2}"#.utf8)
        #expect(throws: DecodingError.self) { _ = try JSONDecoder().decode(GaussianMixture.self, from: bad) }
        #expect(throws: DatasetError.self) { _ = try GaussianMixture(means: [[0]], weights: [1, 2], std: 0.1) }
        #expect(throws: DatasetError.self) { _ = try GaussianMixture(means: [[0]], weights: [1], std: 0) }
        #expect(throws: DatasetError.self) { _ = try GaussianMixture(means: [[.nan]], weights: [1], std: 1) }
        #expect(throws: DatasetError.self) { _ = try GaussianMixture(means: [], weights: [], std: 1) }
        #expect(throws: DatasetError.self) { _ = try GaussianMixture(means: [[0], [1]], weights: [0, 0], std: 1) }
    }
}
