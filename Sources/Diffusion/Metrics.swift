import Foundation
import TensorCore

/// Evaluation metrics of SPEC "Evaluation": Frechet distance between feature sets, nearest
/// neighbour cosine similarity (memorisation), histograms. Pure computation in Double.
public enum Metrics {
    /// Mean (k) and covariance (k x k, divided by n - 1) of the rows of `features` (n, k).
    public static func meanAndCovariance(_ features: Tensor<Float>) -> (mean: [Double], covariance: [Double]) {
        let n = features.rows, k = features.rowSize
        precondition(n >= 2, "need at least 2 feature rows")
        let x = features.storage.map { Double($0) }
        var mean = [Double](repeating: 0, count: k)
        for r in 0..<n { for j in 0..<k { mean[j] += x[r * k + j] } }
        for j in 0..<k { mean[j] /= Double(n) }
        var centred = x
        for r in 0..<n { for j in 0..<k { centred[r * k + j] -= mean[j] } }
        var cov = [Double](repeating: 0, count: k * k)
        centred.withUnsafeBufferPointer { cp in cov.withUnsafeMutableBufferPointer { op in
            Double.gemm(transA: true, transB: false, m: k, n: k, k: n, alpha: 1 / Double(n - 1), a: cp.baseAddress!, lda: k,
                        b: cp.baseAddress!, ldb: k, beta: 0, c: op.baseAddress!, ldc: k)
        } }
        return (mean, cov)
    }

    /// The Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
    /// `||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^(1/2) S2 S1^(1/2))^(1/2))`, the square roots
    /// by the Jacobi eigen-decomposition (`SymmetricEigen`).
    public static func frechetDistance(_ a: Tensor<Float>, _ b: Tensor<Float>) -> Double {
        precondition(a.rowSize == b.rowSize, "feature sizes differ")
        let (m1, s1) = meanAndCovariance(a), (m2, s2) = meanAndCovariance(b)
        return frechetDistance(mean1: m1, covariance1: s1, mean2: m2, covariance2: s2)
    }

    public static func frechetDistance(mean1: [Double], covariance1 s1: [Double], mean2: [Double], covariance2 s2: [Double]) -> Double {
        let k = mean1.count
        let meanTerm = zip(mean1, mean2).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        let root1 = SymmetricEigen.squareRoot(s1, n: k)
        var tmp = [Double](repeating: 0, count: k * k), inner = tmp
        root1.withUnsafeBufferPointer { r in s2.withUnsafeBufferPointer { s in tmp.withUnsafeMutableBufferPointer { t in
            Double.gemm(transA: false, transB: false, m: k, n: k, k: k, alpha: 1, a: r.baseAddress!, lda: k, b: s.baseAddress!, ldb: k,
                        beta: 0, c: t.baseAddress!, ldc: k)
        } } }
        tmp.withUnsafeBufferPointer { t in root1.withUnsafeBufferPointer { r in inner.withUnsafeMutableBufferPointer { o in
            Double.gemm(transA: false, transB: false, m: k, n: k, k: k, alpha: 1, a: t.baseAddress!, lda: k, b: r.baseAddress!, ldb: k,
                        beta: 0, c: o.baseAddress!, ldc: k)
        } } }
        // Symmetrise against rounding before the eigen-decomposition.
        for i in 0..<k { for j in (i + 1)..<max(k, i + 1) {
            let s = (inner[i * k + j] + inner[j * k + i]) / 2
            inner[i * k + j] = s
            inner[j * k + i] = s
        } }
        let traceRoot = SymmetricEigen.decompose(inner, n: k).values.reduce(0) { $0 + max($1, 0).squareRoot() }
        let trace1 = (0..<k).reduce(0) { $0 + s1[$1 * k + $1] }, trace2 = (0..<k).reduce(0) { $0 + s2[$1 * k + $1] }
        return max(meanTerm + trace1 + trace2 - 2 * traceRoot, 0)
    }

    /// For each row of `queries` (m, d): the largest cosine similarity to any row of
    /// `reference` (n, d), both centred by the mean of `reference` (mean-centred pixel space,
    /// SPEC Evaluation). One GEMM per block of reference rows.
    /// `progress` gets the number of reference rows compared so far.
    public static func nearestNeighbourCosine(_ queries: Tensor<Float>, reference: Tensor<Float>, block: Int = 4096,
                                              progress: ((Int) -> Void)? = nil) -> [Double] {
        let m = queries.rows, n = reference.rows, d = queries.rowSize
        precondition(reference.rowSize == d && n >= 1)
        var mean = [Float](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { mean[j] += reference.storage[r * d + j] } }
        for j in 0..<d { mean[j] /= Float(n) }
        func normalisedRows(_ t: Tensor<Float>, _ range: Range<Int>) -> [Float] {
            var out = [Float](repeating: 0, count: range.count * d)
            for (i, r) in range.enumerated() {
                var norm: Float = 0
                for j in 0..<d {
                    let v = t.storage[r * d + j] - mean[j]
                    out[i * d + j] = v
                    norm += v * v
                }
                let inv = norm > 0 ? 1 / norm.squareRoot() : 0
                for j in 0..<d { out[i * d + j] *= inv }
            }
            return out
        }
        let q = normalisedRows(queries, 0..<m)
        var best = [Float](repeating: -1, count: m)
        var start = 0
        progress?(0)
        while start < n {
            let rows = min(block, n - start)
            let refs = normalisedRows(reference, start..<(start + rows))
            var sims = [Float](repeating: 0, count: m * rows)
            q.withUnsafeBufferPointer { qp in refs.withUnsafeBufferPointer { rp in sims.withUnsafeMutableBufferPointer { sp in
                Float.gemm(transA: false, transB: true, m: m, n: rows, k: d, alpha: 1, a: qp.baseAddress!, lda: d,
                           b: rp.baseAddress!, ldb: d, beta: 0, c: sp.baseAddress!, ldc: rows)
            } } }
            for i in 0..<m { for j in 0..<rows where sims[i * rows + j] > best[i] { best[i] = sims[i * rows + j] } }
            start += rows
            progress?(start)
        }
        return best.map { Double($0) }
    }

    /// Counts of `values` in `bins` equal bins over `range` (values outside are clamped).
    public static func histogram(_ values: [Double], bins: Int, range: ClosedRange<Double>) -> [Int] {
        var counts = [Int](repeating: 0, count: bins)
        let width = (range.upperBound - range.lowerBound) / Double(bins)
        for v in values {
            let i = Int(((v - range.lowerBound) / width).rounded(.down))
            counts[min(max(i, 0), bins - 1)] += 1
        }
        return counts
    }

    /// Residual pixel noise of each image (rows of `images`, one channel of height x width, row-major):
    /// Donoho's estimator on the finest diagonal Haar detail, `median(|HH|) / 0.6745`, where
    /// `HH = (x[2i,2j] - x[2i,2j+1] - x[2i+1,2j] + x[2i+1,2j+1]) / 2` over the 2x2 blocks (an odd last
    /// row or column is left out). For Gaussian noise N(0, s^2) on a smooth image it returns about s;
    /// HH is zero on any image that is linear in the pixel coordinates. The evaluator's Frechet distance
    /// hardly sees such noise (docs/results.md, issue 8), so `ambient eval` reports this beside it.
    /// Nil when the rows are not height x width images or a side is below 2.
    public static func residualNoise(_ images: Tensor<Float>, height: Int, width: Int) -> [Double]? {
        guard height >= 2, width >= 2, images.rows > 0, images.rowSize == height * width else { return nil }
        let bh = height / 2, bw = width / 2
        var result = [Double](repeating: 0, count: images.rows)
        var details = [Double](repeating: 0, count: bh * bw)
        images.storage.withUnsafeBufferPointer { x in
            for r in 0..<images.rows {
                let base = r * height * width
                for i in 0..<bh {
                    for j in 0..<bw {
                        let p = base + 2 * i * width + 2 * j
                        let hh = (Double(x[p]) - Double(x[p + 1]) - Double(x[p + width]) + Double(x[p + width + 1])) / 2
                        details[i * bw + j] = abs(hh)
                    }
                }
                result[r] = median(details) / 0.6745
            }
        }
        return result
    }
}
