import Foundation
import Testing
import TensorCore

@Suite struct SymmetricEigenTests {
    /// [[2, 1], [1, 2]] has eigenvalues 1 and 3 with eigenvectors (1, -1)/sqrt 2 and (1, 1)/sqrt 2.
    @Test func knownTwoByTwo() {
        let (values, vectors) = SymmetricEigen.decompose([2, 1, 1, 2], n: 2)
        #expect(abs(values[0] - 1) < 1e-14 && abs(values[1] - 3) < 1e-14)
        #expect(abs(abs(vectors[0]) - 0.5.squareRoot()) < 1e-14 && abs(vectors[0] + vectors[2]) < 1e-14)
        // The square root of [[5, 4], [4, 5]] is [[2, 1], [1, 2]].
        let root = SymmetricEigen.squareRoot([5, 4, 4, 5], n: 2)
        #expect(zip(root, [2.0, 1, 1, 2]).allSatisfy { abs($0 - $1) < 1e-12 }, "\(root)")
    }

    /// A random symmetric 40 x 40 matrix: V diag(lambda) V^T reproduces it and V is orthogonal.
    @Test func reconstructsRandomMatrices() {
        let n = 40
        var rng = CounterRNG(seed: 1, purpose: .evaluation)
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n {
            let v = rng.normal()
            a[i * n + j] = v
            a[j * n + i] = v
        } }
        let (values, v) = SymmetricEigen.decompose(a, n: n)
        #expect(zip(values, values.dropFirst()).allSatisfy { $0 <= $1 })
        var worst = 0.0, worstOrtho = 0.0
        for i in 0..<n { for j in 0..<n {
            var s = 0.0, o = 0.0
            for k in 0..<n {
                s += v[i * n + k] * values[k] * v[j * n + k]
                o += v[k * n + i] * v[k * n + j]
            }
            worst = max(worst, abs(s - a[i * n + j]))
            worstOrtho = max(worstOrtho, abs(o - (i == j ? 1 : 0)))
        } }
        #expect(worst < 1e-11 && worstOrtho < 1e-12, "reconstruction \(worst), orthogonality \(worstOrtho)")
    }
}
