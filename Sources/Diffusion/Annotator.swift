import Foundation
import TensorCore

/// Ambient-Omni annotation (SPEC O5): for each corrupted sample w_i, the lowest noise level at
/// which the classifier can no longer tell it from clean data.
///
/// On a sorted grid of sigma values, `p(sigma)` is the mean over `draws` noise draws of
/// `P(clean | w_i + sigma n)`; it is smoothed along the grid by an exponential moving average
/// of span `span` as the authors do (ambient-omni pixel-diffusion/training/training_loop.py:39,
/// pandas `ewm(span, adjust=False)`): `m_0 = p_0`, `m_k = (1 - a) m_{k-1} + a p_k`,
/// `a = 2/(span + 1)`. (The normalised form, `adjust=True`, used here before, gives the first
/// level less weight and so lags less; the two differ only for rises within the first few
/// spans of the grid, sigma below about 0.01 on the default grid; beyond, a rise from 0 to 1
/// crosses tau = 0.45 after 10 levels with either.) Then `sigma_i^min` is the first grid sigma where the smoothed p exceeds
/// `tau = 0.5 - eps`. A sample that never crosses gets `sigmaMax` (effectively unused).
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

    /// sigma_min of each row of `samples` (N, d); row r is dataset sample `indices[r]`.
    /// Stops evaluating a chunk of samples once all of them crossed.
    public func annotate(_ classifier: NoiseConditionedClassifier, _ store: ParameterStore<Float>, samples: Tensor<Float>,
                         indices: [Int], seed: UInt64, chunk: Int = 128, progress: ((Int) -> Void)? = nil) -> [Double] {
        let n = samples.rows, d = samples.rowSize
        precondition(indices.count == n && d == classifier.dimension)
        let a = 2 / (span + 1)
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
                    smoothed[r] = k == 0 ? p : (1 - a) * smoothed[r] + a * p
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
