import Datasets
import Diffusion
import Foundation
import TensorCore
import Testing
import Training

/// Solves `A x = b` for a small symmetric positive definite A by Gaussian elimination (Double).
func solveSmall(_ a: [[Double]], _ b: [Double]) -> [Double] {
    var m = a, v = b
    let n = b.count
    for i in 0..<n {
        for k in (i + 1)..<max(n, i + 1) {
            let f = m[k][i] / m[i][i]
            for j in i..<n { m[k][j] -= f * m[i][j] }
            v[k] -= f * v[i]
        }
    }
    var x = [Double](repeating: 0, count: n)
    for i in stride(from: n - 1, through: 0, by: -1) {
        var s = v[i]
        for j in (i + 1)..<max(n, i + 1) { s -= m[i][j] * x[j] }
        x[i] = s / m[i][i]
    }
    return x
}

/// SPEC O3 against the Gaussian-conditioning oracle: on masked Gaussian data the minimiser
/// of the further-corruption loss is `E[x0 | Atil x_sigma, Atil] = mu + S_{:,o} (S_oo +
/// sigma^2 I)^{-1} (x_o - mu_o)` over the observed coordinates o of Atil.
///
/// Tolerance: at every sigma the mean squared distance to the oracle is below 0.004 (under 2%
/// of the per-coordinate data variance 0.25) and below 0.2 of the prior mean's distance; on the
/// coordinates Atil hides, below 0.006 at sigma 0.05 and 0.2.
/// Measured (6000 steps): 0.0015, 0.0005, 0.0004, 0.0003 at sigma 0.05, 0.2, 0.5, 1.0 (with
/// EDM's lambda(sigma) on the hidden coordinates, before issue 14: 0.0056, 0.0073, 0.0060, 0.0099).
@Suite(.serialized) struct MaskedOracleTests {
    static let d = 6
    static let missing = 0.3
    static let delta = 0.2
    /// An AR(1) covariance: neighbouring coordinates correlate at 0.8, so what is hidden is
    /// predictable from what is seen, and mean 0.3 * (-1)^i.
    static let mu = (0..<d).map { 0.3 * ($0 % 2 == 0 ? 1.0 : -1.0) }
    static let cov = (0..<d).map { i in (0..<d).map { j in 0.25 * pow(0.8, Double(abs(i - j))) } }

    static func draw(_ n: Int, seed: UInt64) -> Tensor<Float> {
        // Cholesky factor of cov.
        var l = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for i in 0..<d { for j in 0...i {
            var s = cov[i][j]
            for k in 0..<j { s -= l[i][k] * l[j][k] }
            l[i][j] = i == j ? s.squareRoot() : s / l[j][j]
        } }
        var out = [Float](repeating: 0, count: n * d)
        for r in 0..<n {
            var rng = CounterRNG(seed: seed, purpose: .syntheticData, sample: r)
            let z = (0..<d).map { _ in rng.normal() }
            for i in 0..<d { out[r * d + i] = Float(mu[i] + (0...i).reduce(0.0) { $0 + l[i][$1] * z[$1] }) }
        }
        return Tensor(shape: [n, d], storage: out)
    }

    static func oracle(_ x: [Double], mask: [Double], sigma: Double) -> [Double] {
        let o = (0..<d).filter { mask[$0] > 0 }
        if o.isEmpty { return mu }
        let soo = o.map { i in o.map { j in cov[i][j] + (i == j ? sigma * sigma : 0) } }
        let alpha = solveSmall(soo, o.map { x[$0] - mu[$0] })
        return (0..<d).map { i in mu[i] + zip(o, alpha).reduce(0.0) { $0 + cov[i][$1.0] * $1.1 } }
    }

    @Test func furtherCorruptionMatchesGaussianConditioning() throws {
        let d = Self.d
        let clean = Self.draw(20_000, seed: 1)
        let corrupted = try CorruptionSpec.pixelMask(Self.missing).apply(clean, imageShape: nil, seed: 2)
        let data = TrainingData(samples: corrupted.samples, sigmaN: [Double](repeating: 0, count: clean.rows),
                                masks: corrupted.masks, summary: "masked Gaussian")
        var config = RunConfig(data: .npy(path: "-"), objective: .masked, steps: 6000, batch: 256, seed: 3, learningRate: 1e-3,
                               warmupSteps: 100, emaDecay: 0.998,
                               model: .mlp(MLPConfig(dataDimension: d, conditioningChannels: 1, width: 128, blocks: 2, embeddingSize: 32)))
        config.furtherDelta = Self.delta
        let session = try TrainingSession(config: config, data: data)
        for _ in 0..<config.steps { try session.step() }
        let denoiser = session.denoiser, store = session.emaStore()

        let keep = (1 - Self.missing) * (1 - Self.delta)
        let n = 4000
        let test = Self.draw(n, seed: 99)
        var lines: [String] = []
        var worst = 0.0, worstAbsolute = 0.0
        var hiddenMSE: [Double: Double] = [:], shownMSE: [Double: Double] = [:]
        for sigma in [0.05, 0.2, 0.5, 1.0] {
            var x = [Float](repeating: 0, count: n * d), masks = x, input = x, out = x
            var truth = [Double](repeating: 0, count: n * d)
            for r in 0..<n {
                var rng = CounterRNG(seed: 7, purpose: .evaluation, step: Int(sigma * 1000), sample: r)
                var m = [Double](repeating: 0, count: d), xs = m
                for i in 0..<d {
                    xs[i] = Double(test.storage[r * d + i]) + sigma * rng.normal()
                    m[i] = rng.uniform() <= keep ? 1 : 0
                    x[r * d + i] = Float(xs[i])
                    masks[r * d + i] = Float(m[i])
                    input[r * d + i] = Float(xs[i] * m[i])
                }
                let o = Self.oracle(xs, mask: m, sigma: sigma)
                for i in 0..<d { truth[r * d + i] = o[i] }
            }
            let tape = Tape<Float>(recordsGradients: false)
            let sig = [Double](repeating: sigma, count: n)
            input.withUnsafeBufferPointer { ip in masks.withUnsafeBufferPointer { mp in out.withUnsafeMutableBufferPointer { op in
                sig.withUnsafeBufferPointer { sp in
                    denoiser.evaluate(tape, store, x: ip.baseAddress!, rows: n, sigma: sp.baseAddress!, conditioning: mp.baseAddress!,
                                      into: op.baseAddress!)
                }
            } } }
            // Error of the model against the oracle, relative to the error of the prior mean mu,
            // and split by whether the mask showed the coordinate.
            var model = 0.0, prior = 0.0
            var split = [0.0, 0.0], counts = [0, 0]   // [hidden, shown]
            for r in 0..<n { for i in 0..<d {
                let t = truth[r * d + i]
                let e = (Double(out[r * d + i]) - t) * (Double(out[r * d + i]) - t)
                model += e
                prior += (Self.mu[i] - t) * (Self.mu[i] - t)
                let k = masks[r * d + i] > 0 ? 1 : 0
                split[k] += e
                counts[k] += 1
            } }
            let ratio = model / prior
            worst = max(worst, ratio)
            worstAbsolute = max(worstAbsolute, model / Double(n * d))
            hiddenMSE[sigma] = split[0] / Double(max(counts[0], 1))
            shownMSE[sigma] = split[1] / Double(max(counts[1], 1))
            lines.append(String(format: "sigma %.2f: MSE(model, oracle) %.5f (hidden %.5f, shown %.5f), MSE(prior mean, oracle) %.5f, ratio %.4f",
                                sigma, model / Double(n * d), hiddenMSE[sigma]!, shownMSE[sigma]!, prior / Double(n * d), ratio))
        }
        print(lines.joined(separator: "\n"))
        #expect(worstAbsolute < 0.004 && worst < 0.2, "\(lines.joined(separator: "\n"))")
        // The pixels Atil hides, at low sigma: with EDM's lambda(sigma) on them (before issue 14)
        // 0.0116 and 0.0121 at sigma 0.05 and 0.2; with 1/sd^2, 0.0034 and 0.0011. The shown ones must
        // not get worse (0.00086 before, 0.00001 after, at sigma 0.05).
        #expect(hiddenMSE[0.05]! < 0.006 && hiddenMSE[0.2]! < 0.006, "\(lines.joined(separator: "\n"))")
        #expect(shownMSE[0.05]! < 0.001, "\(lines.joined(separator: "\n"))")
    }
}
