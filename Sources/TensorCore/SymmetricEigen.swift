import Foundation

/// Eigen-decomposition of a real symmetric matrix by the cyclic Jacobi method (Golub and Van
/// Loan, section 8.5), in Double: rotations zero the off-diagonal elements one pair at a time
/// until their norm is below `tolerance` times the matrix norm. Accurate to a few ulps of the
/// norm for any symmetric input; O(n^3) per sweep, about 6-10 sweeps.
public enum SymmetricEigen {
    /// Eigenvalues (ascending) and eigenvectors (column j of the row-major n x n `vectors`
    /// belongs to `values[j]`) of the symmetric row-major n x n matrix `a`.
    public static func decompose(_ a: [Double], n: Int, tolerance: Double = 1e-14, maxSweeps: Int = 100)
        -> (values: [Double], vectors: [Double]) {
        precondition(a.count == n * n, "matrix has \(a.count) elements, expected \(n * n)")
        var m = a
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        let norm = a.reduce(0) { $0 + $1 * $1 }.squareRoot()
        for _ in 0..<maxSweeps {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(n, p + 1) { off += m[p * n + q] * m[p * n + q] } }
            if off.squareRoot() <= tolerance * max(norm, .leastNormalMagnitude) { break }
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) {
                    let apq = m[p * n + q]
                    if apq == 0 { continue }
                    let theta = (m[q * n + q] - m[p * n + p]) / (2 * apq)
                    let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    // A <- J^T A J on rows and columns p, q.
                    for k in 0..<n {
                        let akp = m[k * n + p], akq = m[k * n + q]
                        m[k * n + p] = c * akp - s * akq
                        m[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = m[p * n + k], aqk = m[q * n + k]
                        m[p * n + k] = c * apk - s * aqk
                        m[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { m[$0 * n + $0] < m[$1 * n + $1] }
        var vectors = [Double](repeating: 0, count: n * n)
        for (j, src) in order.enumerated() { for k in 0..<n { vectors[k * n + j] = v[k * n + src] } }
        return (order.map { m[$0 * n + $0] }, vectors)
    }

    /// The symmetric positive semi-definite square root `V diag(sqrt(max(lambda, 0))) V^T`.
    public static func squareRoot(_ a: [Double], n: Int) -> [Double] {
        let (values, vectors) = decompose(a, n: n)
        var scaled = vectors
        for j in 0..<n {
            let s = max(values[j], 0).squareRoot()
            for k in 0..<n { scaled[k * n + j] *= s }
        }
        var out = [Double](repeating: 0, count: n * n)
        scaled.withUnsafeBufferPointer { sp in vectors.withUnsafeBufferPointer { vp in out.withUnsafeMutableBufferPointer { op in
            Double.gemm(transA: false, transB: true, m: n, n: n, k: n, alpha: 1, a: sp.baseAddress!, lda: n,
                        b: vp.baseAddress!, ldb: n, beta: 0, c: op.baseAddress!, ldc: n)
        } } }
        return out
    }
}
