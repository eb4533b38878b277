import Foundation
import TensorCore

/// Ambient-Omni annotation (SPEC O5): for each corrupted sample w_i, the lowest noise level at
/// which the classifier can no longer tell it from clean data.
///
/// On a sorted grid of sigma values, `p(sigma)` is the mean over `draws` noise draws of
/// `P(clean | w_i + sigma n)`; it is smoothed along the grid by an exponential moving average
/// of span `span` as the authors do (ambient-omni pixel-diffusion/training/training_loop.py:39,
/// pandas `ewm(span, adjust=False)`): `m_0 = p_0`, `m_k = (1 - a) m_{k-1} + a p_k`,
/// `a = 2/(span + 1)`. Then `sigma_i^min` is the first grid sigma where the smoothed p exceeds
/// `tau = 0.5 - eps`. A sample that never crosses gets `sigmaMax` (effectively unused).
///
/// The smoothing lags by grid levels, so the grid sets how far in sigma it lags. A corrupted
/// sample's p rises from 0 towards the classifier's prior (0.5 for balanced training), not to 1:
/// the smoothed p crosses 0.45 about 37 levels after the raw p reached 0.5 (`0.94^37 = 0.1`).
/// On 256 levels log-spaced over [0.002, 80] that is a factor 4.6 in sigma at every level. The
/// authors annotate on 2,048 sorted draws of the training log-normal (ambient-omni
/// pixel-diffusion/annotate.py, `num_sigmas`), dense where the classifier trained: 37 levels are a
/// factor 1.06 at sigma 0.3 and 1.2 at sigma 2. `logNormalGrid` is that grid, with quantiles
/// instead of random draws; it is the default (`AnnotationGrid`).
///
/// Noise draw j of sample i at grid level k comes from (seed, annotation, step k, sample i)
/// with i the dataset index, so annotations do not depend on batching.
public struct Annotator: Sendable {
    public var grid: [Double]
    public var draws: Int
    public var span: Double
    public var tau: Double
    public var sigmaMax: Double

    public init(grid: [Double] = Annotator.logGrid(count: 256, from: 0.002, to: 80), draws: Int = 4, span: Double = 32,
                tau: Double = 0.45, sigmaMax: Double = 80) {
        precondition(!grid.isEmpty && zip(grid, grid.dropFirst()).allSatisfy { $0 < $1 }, "the sigma grid must be sorted ascending")
        precondition(draws >= 1 && span >= 1)
        self.grid = grid
        self.draws = draws
        self.span = span
        self.tau = tau
        self.sigmaMax = sigmaMax
    }

    /// `count` log-spaced levels from `lo` to `hi`.
    public static func logGrid(count: Int, from lo: Double, to hi: Double) -> [Double] {
        precondition(count >= 2 && lo > 0 && hi > lo)
        return (0..<count).map { exp(log(lo) + Double($0) / Double(count - 1) * (log(hi) - log(lo))) }
    }

    /// `count` quantiles of the training log-normal `exp(pMean + pStd N)`, at probabilities
    /// `(k + 1/2) / count`, ascending.
    public static func logNormalGrid(count: Int, schedule: EDMSchedule) -> [Double] {
        precondition(count >= 2)
        return (0..<count).map { k in
            let z = NormalDistribution.upperTailQuantile(1 - (Double(k) + 0.5) / Double(count))
            return exp(schedule.pMean + schedule.pStd * z)
        }
    }

    /// The smoothing step: the moving average after level `k` with raw probability `p`.
    @inline(__always)
    func smooth(_ previous: Double, _ p: Double, level k: Int) -> Double {
        let a = 2 / (span + 1)
        return k == 0 ? p : (1 - a) * previous + a * p
    }

    /// sigma_min of one sample from its raw `p(sigma)` on the grid (the rule `annotate` applies).
    public func sigmaMin(trajectory p: [Double]) -> Double {
        precondition(p.count == grid.count)
        var m = 0.0
        for k in grid.indices {
            m = smooth(m, p[k], level: k)
            if m > tau { return grid[k] }
        }
        return sigmaMax
    }

    /// sigma_min of each row of `samples` (N, d); row r is dataset sample `indices[r]`.
    /// Stops evaluating a chunk of samples once all of them crossed.
    public func annotate(_ classifier: NoiseConditionedClassifier, _ store: ParameterStore<Float>, samples: Tensor<Float>,
                         indices: [Int], seed: UInt64, chunk: Int = 128, progress: ((Int) -> Void)? = nil) -> [Double] {
        let n = samples.rows, d = samples.rowSize
        precondition(indices.count == n && d == classifier.dimension)
        var result = [Double](repeating: sigmaMax, count: n)
        let tape = Tape<Float>(recordsGradients: false)
        var x = [Float](repeating: 0, count: chunk * draws * d)
        var logits = [Float](repeating: 0, count: chunk * draws)
        var start = 0
        while start < n {
            let rows = min(chunk, n - start)
            var smoothed = [Double](repeating: 0, count: rows)
            var done = [Bool](repeating: false, count: rows)
            var open = rows
            for (k, sigma) in grid.enumerated() where open > 0 {
                let pending = (0..<rows).filter { !done[$0] }   // only samples still below tau
                samples.storage.withUnsafeBufferPointer { src in
                    for (slot, r) in pending.enumerated() {
                        var rng = CounterRNG(seed: seed, purpose: .annotation, step: k, sample: indices[start + r])
                        for j in 0..<draws {
                            let row = (slot * draws + j) * d
                            for i in 0..<d { x[row + i] = src[(start + r) * d + i] + Float(sigma * rng.normal()) }
                        }
                    }
                }
                let m = pending.count * draws
                let sig = [Double](repeating: sigma, count: m)
                x.withUnsafeBufferPointer { xp in logits.withUnsafeMutableBufferPointer { lp in sig.withUnsafeBufferPointer { sp in
                    classifier.evaluate(tape, store, x: xp.baseAddress!, rows: m, sigma: sp.baseAddress!, into: lp.baseAddress!)
                } } }
                for (slot, r) in pending.enumerated() {
                    var p = 0.0
                    for j in 0..<draws { p += 1 / (1 + exp(-Double(logits[slot * draws + j]))) }
                    p /= Double(draws)
                    smoothed[r] = smooth(smoothed[r], p, level: k)
                    if smoothed[r] > tau {
                        result[start + r] = sigma
                        done[r] = true
                        open -= 1
                    }
                }
            }
            start += rows
            progress?(start)
        }
        return result
    }
}

/// Where the annotation grid's levels lie (`Annotator`): the classifier's training log-normal
/// (the authors'; the default) or log-spaced over [0.002, sigma_max] (before December 2026).
public enum AnnotationGrid: String, Codable, Sendable, CaseIterable {
    case lognormal
    case loguniform

    /// The default number of levels: 2,048 as the authors (`num_sigmas`), 256 log-spaced.
    public var defaultCount: Int { self == .lognormal ? 2048 : 256 }

    /// The grid's `count` levels (nil: `defaultCount`).
    public func levels(count: Int?, schedule: EDMSchedule, sigmaMax: Double) -> [Double] {
        switch self {
        case .lognormal: Annotator.logNormalGrid(count: count ?? defaultCount, schedule: schedule)
        case .loguniform: Annotator.logGrid(count: count ?? defaultCount, from: 0.002, to: sigmaMax)
        }
    }

    /// How the levels lie, for the note a dataset manifest records.
    public var description: String {
        switch self {
        case .lognormal: "quantiles of the classifier's training log-normal"
        case .loguniform: "log-spaced in [0.002, sigma_max]"
        }
    }
}
