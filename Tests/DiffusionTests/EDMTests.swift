import Foundation
import Testing
import Diffusion
import TensorCore

@Suite struct EDMTests {
    let edm = EDMSchedule()

    @Test func preconditioningIdentities() {
        for sigma in [0.002, 0.1, 0.5, 2, 80] {
            // c_skip + c_out^2 / sd^2 ... EDM: c_skip^2 sd^2 + ... ; check the defining variance identity
            // Var(c_in x) = 1 for x ~ data (var sd^2) + noise (var sigma^2).
            let vIn = edm.cIn(sigma) * edm.cIn(sigma) * (sigma * sigma + 0.25)
            #expect(abs(vIn - 1) < 1e-12)
            // The effective training target of F has unit variance: (sd^2 + sigma^2 ... ) -> lambda c_out^2 = 1.
            #expect(abs(edm.lossWeight(sigma) * edm.cOut(sigma) * edm.cOut(sigma) - 1) < 1e-9)
        }
    }

    @Test func gridIsDescendingFromSigmaMaxToSigmaMin() {
        let g = edm.samplingGrid(steps: 18)
        #expect(g.count == 18)
        #expect(abs(g[0] - 80) < 1e-9 && abs(g[17] - 0.002) < 1e-12)
        #expect(zip(g, g.dropFirst()).allSatisfy { $0 > $1 })
        let s = edm.samplingGrid(steps: 10, stop: 0.6)
        #expect(abs(s.last! - 0.6) < 1e-12)
    }

    /// The truncated draw has the distribution of rejection sampling from the log-normal:
    /// compare quantiles of both on 40,000 draws.
    @Test(arguments: [0.3, 0.577, 2.0, 20.0])
    func truncatedSigmaMatchesRejectionSampling(bound: Double) {
        let n = 40_000
        var direct: [Double] = [], rejected: [Double] = []
        for i in 0..<n {
            var r = CounterRNG(seed: 1, purpose: .trainSigma, sample: i)
            direct.append(edm.sampleSigma(above: bound, &r))
        }
        var r = CounterRNG(seed: 2, purpose: .trainSigma)
        var tries = 0
        while rejected.count < n && tries < 200_000_000 {
            let s = edm.sampleSigma(&r)
            tries += 1
            if s > bound { rejected.append(s) }
        }
        #expect(direct.allSatisfy { $0 > bound })
        direct.sort(); rejected.sort()
        for q in [0.1, 0.5, 0.9] {
            let a = direct[Int(q * Double(n))], b = rejected[Int(q * Double(rejected.count - 1))]
            #expect(abs(log(a) - log(b)) < 0.03, "quantile \(q): \(a) vs \(b)")
        }
    }

    @Test func normalQuantileIsAccurateInTheTails() {
        for z in [-5.0, -1, 0, 0.5, 2, 8, 20, 35] {
            let p = NormalDistribution.upperTail(z)
            let back = NormalDistribution.upperTailQuantile(p)
            #expect(abs(back - z) < 1e-7 * max(1, abs(z)), "z \(z): \(back)")
        }
    }
}

@Suite struct HeunSamplerTests {
    /// With the exact denoiser of N(0, s^2 I), D(x, sigma) = s^2/(s^2+sigma^2) x, the sampler
    /// must transport N(0, sigma_max^2) to N(0, s^2).
    @Test func samplesAGaussianWithItsExactDenoiser() {
        let s = 0.7, rows = 4000, d = 1
        let sampler = HeunSampler(steps: 40)
        let grid = EDMSchedule().samplingGrid(steps: 40)
        var x = [Double](repeating: 0, count: rows)
        var rng = CounterRNG(seed: 1, purpose: .sampling)
        for i in 0..<rows { x[i] = grid[0] * rng.normal() }
        x.withUnsafeMutableBufferPointer { xp in
            sampler.integrate(x: xp.baseAddress!, rows: rows, dimension: d, grid: grid) { at, sigma, out in
                for i in 0..<rows { out[i] = s * s / (s * s + sigma * sigma) * at[i] }
            }
        }
        let std = (x.map { $0 * $0 }.reduce(0, +) / Double(rows)).squareRoot()
        #expect(abs(std - s) < 0.03, "sample std \(std), expected \(s)")
    }

    /// With a stop level the result is D(x, stop).
    @Test func stopReturnsTheOneStepDenoisedSample() {
        let sampler = HeunSampler(steps: 5, stop: 0.6)
        let grid = EDMSchedule().samplingGrid(steps: 5, stop: 0.6)
        var x = [2.0]
        var lastSigma = -1.0
        x.withUnsafeMutableBufferPointer { xp in
            sampler.integrate(x: xp.baseAddress!, rows: 1, dimension: 1, grid: grid) { at, sigma, out in
                lastSigma = sigma
                out[0] = 0.5 * at[0]
            }
        }
        #expect(abs(lastSigma - 0.6) < 1e-12)
    }

    /// A denoiser that runs off (D = 1e4 x) sends the unclamped trajectory to huge values; with
    /// `clip` every estimate, and so the stopped sample, stays in range. A denoiser inside the
    /// range gives bitwise the same samples with and without the clamp.
    @Test func clipKeepsEstimatesInRangeAndChangesNothingInside() {
        let grid = EDMSchedule().samplingGrid(steps: 8, stop: 0.5)
        func run(_ sampler: HeunSampler, _ d: @escaping (Double, Double) -> Double) -> ([Double], Double) {
            var x = [-3.0, 0.2, 7.5, 40]
            var largest = 0.0
            x.withUnsafeMutableBufferPointer { xp in
                sampler.integrate(x: xp.baseAddress!, rows: 4, dimension: 1, grid: grid) { at, sigma, out in
                    for i in 0..<4 { out[i] = d(at[i], sigma) }
                }
            }
            largest = x.map(abs).max()!
            return (x, largest)
        }
        let wild = { (x: Double, _: Double) in 1e4 * x }
        #expect(run(HeunSampler(steps: 8, stop: 0.5), wild).1 > 1e10)
        let clipped = run(HeunSampler(steps: 8, stop: 0.5, clip: -1...1), wild)
        #expect(clipped.1 <= 1 && clipped.0.allSatisfy { $0.isFinite })
        let tame = { (x: Double, sigma: Double) in tanh(x / (1 + sigma)) * 0.9 }
        #expect(run(HeunSampler(steps: 8, stop: 0.5), tame).0 == run(HeunSampler(steps: 8, stop: 0.5, clip: -1...1), tame).0)
    }
}
