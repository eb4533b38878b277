import Foundation
import Testing
import Diffusion
import TensorCore

/// SPEC O6 against the Gaussian oracle. For data `N(0, sd^2 I)` with sd the schedule's
/// sigma_data, EDM's skip path alone is the posterior mean: `c_skip(sigma) x = E[X0 | X_sigma = x]`,
/// so a network whose output is 0 (all parameters 0) is the exact minimiser of the split at
/// every level. At that oracle the loss of a row is pure target noise, which is what the
/// gradient of training carries; the split's O2 rows must not carry more of it per pixel than a
/// row of plain DSM on data noisy at sigma_n (`lambda (sd^2 + sigma_n^2)`), or the few rows
/// above the split swamp the O1 rows and the denoiser there is learned badly (the divergence
/// of docs/results.md, "Memorisation"). The objective is run row by row, as in training.
@Suite struct MemorizationSplitOracleTests {
    static let (d, sigmaN, draws) = (16, 1.0, 6000)

    /// Per drawn row: its sigma, its loss at the oracle divided by `lambda(sigma) d` (the row's
    /// target noise per pixel in units of lambda), and the gradient of the output bias.
    static func rowsAtTheOracle() -> [(sigma: Double, noise: Double, biasGradient: [Double])] {
        let net = MLPNetwork(MLPConfig(dataDimension: d, width: 8, blocks: 1, embeddingSize: 4))
        let store = ParameterStore<Double>(layout: net.layout)   // all zero: F = 0
        let denoiser = Denoiser(network: net)
        let split = MemorizationSplit(sigmaN: sigmaN)
        let outBias = net.layout.index(of: "output.bias")!
        let sd = denoiser.schedule.sigmaData
        var out: [(Double, Double, [Double])] = []
        for step in 0..<draws {
            var rng = CounterRNG(seed: 41, purpose: .evaluation, step: step)
            let x0 = (0..<d).map { _ in sd * rng.normal() }
            let index = [step]
            let zero = [0.0]
            let tape = Tape<Double>()
            store.zeroGrads()
            let loss: Double = x0.withUnsafeBufferPointer { xp in zero.withUnsafeBufferPointer { sp in index.withUnsafeBufferPointer { ip in
                let batch = ShardBatch(data: xp.baseAddress!, rows: 1, dimension: d, sigmaN: sp.baseAddress!, sampleIndices: ip.baseAddress!,
                                       seed: 5, step: step, shard: 0, globalBatch: 1)
                let r = split.loss(tape, denoiser: denoiser, store: store, batch: batch)
                tape.backward(r.loss)
                return tape.scalar(r.loss)
            } } }
            // The row's sigma, drawn as the objective draws it.
            var srng = CounterRNG(seed: 5, purpose: .trainSigma, step: step, shard: 0, sample: 0)
            let sigma = denoiser.schedule.sampleSigma(&srng)
            out.append((sigma, loss / (denoiser.schedule.lossWeight(sigma) * Double(d)), Array(UnsafeBufferPointer(start: store.grad(outBias), count: d))))
        }
        return out
    }

    @Test func rowsAboveTheSplitCarryNoMoreTargetNoiseThanPlainDSMOnNoisyData() {
        let rows = Self.rowsAtTheOracle()
        let sd = EDMSchedule().sigmaData
        let b = AmbientScoreMatching.buffer(sMax: 4)
        // Plain DSM on data noisy at sigma_n carries sd^2 + sigma_n^2 (per pixel, in units of
        // lambda) at the oracle; the noisy-space weight approaches it from below as sigma grows.
        // 10% slack for the Monte Carlo error (about 4 standard errors of the smallest bin).
        let bound = 1.1 * (sd * sd + Self.sigmaN * Self.sigmaN)
        var lines: [String] = []
        // Levels where the O2 target is noisiest (just above the switch), and all levels above it.
        for (lo, hi) in [(b, 1.3 * b), (1.3 * b, 3.0), (3.0, Double.infinity)] {
            let bin = rows.filter { $0.sigma >= lo * Self.sigmaN && $0.sigma < hi * Self.sigmaN }
            let mean = bin.map(\.noise).reduce(0, +) / Double(bin.count)
            lines.append(String(format: "sigma in [%.2f, %.2f) sigma_n: %d rows, target noise per pixel %.3f lambda (bound %.3f)",
                                lo, hi, bin.count, mean, bound))
            #expect(bin.count > 100, "\(lines.last!)")
            #expect(mean <= bound, "\(lines.joined(separator: "\n"))")
        }
        // Below the split the rows are O1 on clean data: only the posterior variance remains.
        let below = rows.filter { $0.sigma < b * Self.sigmaN }
        let meanBelow = below.map(\.noise).reduce(0, +) / Double(below.count)
        #expect(meanBelow <= sd * sd, "O1 rows at the oracle: \(meanBelow)")
        print(lines.joined(separator: "\n"))
    }

    /// The weighting does not move the minimiser: at the oracle the gradient of the output
    /// bias (the mean residual each level pushes on F) averages to 0 above the split, within
    /// 4 standard errors per coordinate.
    @Test func theOracleIsStationaryAboveTheSplit() {
        let b = AmbientScoreMatching.buffer(sMax: 4)
        let above = Self.rowsAtTheOracle().filter { $0.sigma >= b * Self.sigmaN }
        #expect(above.count > 300)
        for j in 0..<Self.d {
            let g = above.map { $0.biasGradient[j] }
            let mean = g.reduce(0, +) / Double(g.count)
            let sdev = (g.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(g.count - 1)).squareRoot()
            #expect(abs(mean) < 4 * sdev / Double(g.count).squareRoot(), "coordinate \(j): mean gradient \(mean), sd \(sdev), n \(g.count)")
        }
    }
}
