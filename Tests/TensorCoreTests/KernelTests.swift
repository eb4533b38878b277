import Testing
import TensorCore

/// The SIMD Float kernels against the generic bodies (as Double-free scalar references), bit for bit.
@Suite struct KernelTests {
    func data(_ n: Int, _ seed: UInt64, scale: Double = 1) -> [Float] {
        var r = CounterRNG(seed: seed, purpose: .evaluation)
        return (0..<n).map { _ in Float(r.normal() * scale) }
    }

    @Test(arguments: [0, 1, 15, 16, 17, 1000])
    func adamEmaAxpyMatchScalarLoops(n: Int) {
        var p = data(n, 1), m = data(n, 2, scale: 0.1), v = data(n, 3, scale: 0.01).map(abs)
        let g = data(n, 4)
        var p2 = p, m2 = m, v2 = v
        p.withUnsafeMutableBufferPointer { pp in m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
            g.withUnsafeBufferPointer { gp in
                Float.adamUpdate(pp.baseAddress!, gp.baseAddress!, mp.baseAddress!, vp.baseAddress!, n,
                                 beta1: 0.9, beta2: 0.999, stepSize: 0.01, invSqrtC2: 3, eps: 1e-8)
            } } } }
        for i in 0..<n {
            let mi = 0.9 * m2[i] + (1 - 0.9) * g[i]
            let vi = 0.999 * v2[i] + (1 - 0.999) * g[i] * g[i]
            m2[i] = mi; v2[i] = vi
            p2[i] -= 0.01 * mi / (vi.squareRoot() * 3 + 1e-8)
        }
        #expect(p.map(\.bitPattern) == p2.map(\.bitPattern))
        #expect(m.map(\.bitPattern) == m2.map(\.bitPattern) && v.map(\.bitPattern) == v2.map(\.bitPattern))

        var e = data(n, 5), e2 = e
        e.withUnsafeMutableBufferPointer { ep in p.withUnsafeBufferPointer { Float.emaUpdate(ep.baseAddress!, $0.baseAddress!, decay: 0.99, n) } }
        for i in 0..<n { e2[i] = 0.99 * e2[i] + (1 - 0.99) * p[i] }
        #expect(e.map(\.bitPattern) == e2.map(\.bitPattern))

        var y = data(n, 6), y2 = y
        y.withUnsafeMutableBufferPointer { yp in g.withUnsafeBufferPointer { Float.axpy(0.5, $0.baseAddress!, yp.baseAddress!, n) } }
        for i in 0..<n { y2[i] += 0.5 * g[i] }
        #expect(y.map(\.bitPattern) == y2.map(\.bitPattern))
    }

    @Test func normAndNonFinite() {
        let x = data(10_007, 7)
        let ref = x.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let got = x.withUnsafeBufferPointer { euclideanNorm($0.baseAddress!, $0.count) }
        #expect(abs(got - ref) / ref < 1e-5)
        var y = x
        #expect(y.withUnsafeBufferPointer { firstNonFinite($0.baseAddress!, $0.count) } == nil)
        y[9000] = .infinity
        #expect(y.withUnsafeBufferPointer { firstNonFinite($0.baseAddress!, $0.count) } == 9000)
        y[5] = .nan
        #expect(y.withUnsafeBufferPointer { firstNonFinite($0.baseAddress!, $0.count) } == 5)
    }
}
