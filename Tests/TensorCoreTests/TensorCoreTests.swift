import Foundation
import Testing
import TensorCore

@Suite struct GemmTests {
    /// cblas (Float and Double) against the naive reference for every transpose combination
    /// and odd sizes.
    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func blasMatchesNaive(ta: Bool, tb: Bool) {
        let (m, n, k) = (7, 13, 29)
        var rng = CounterRNG(seed: 1, purpose: .evaluation)
        let a: [Float] = rng.normals(m * k), b: [Float] = rng.normals(k * n), c0: [Float] = rng.normals(m * n)
        var fast = c0, slow = c0
        let lda = ta ? m : k, ldb = tb ? k : n
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in
            fast.withUnsafeMutableBufferPointer { cp in
                Float.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: ap.baseAddress!, lda: lda,
                           b: bp.baseAddress!, ldb: ldb, beta: 2, c: cp.baseAddress!, ldc: n)
            }
            slow.withUnsafeMutableBufferPointer { cp in
                naiveGemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: Float(0.5), a: ap.baseAddress!, lda: lda,
                          b: bp.baseAddress!, ldb: ldb, beta: 2, c: cp.baseAddress!, ldc: n)
            }
        } }
        let err = zip(fast, slow).map { abs($0 - $1) / (1 + abs($1)) }.max()!
        #expect(err < 1e-5, "max relative error \(err)")
    }
}

@Suite struct PhiloxTests {
    /// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    @Test func knownAnswers() {
        let z = CounterRNG.philox(counter: (0, 0, 0, 0), key: (0, 0))
        #expect(z == (0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8))
        let f = CounterRNG.philox(counter: (.max, .max, .max, .max), key: (.max, .max))
        #expect(f == (0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd))
        let p = CounterRNG.philox(counter: (0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344),
                                  key: (0xa409_3822, 0x299f_31d0))
        #expect(p == (0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1))
    }

    @Test func streamsDependOnlyOnTheirKey() {
        var a = CounterRNG(seed: 7, purpose: .trainNoise, step: 3, shard: 2, sample: 11)
        var b = CounterRNG(seed: 7, purpose: .trainNoise, step: 3, shard: 2, sample: 11)
        var c = CounterRNG(seed: 7, purpose: .trainNoise, step: 3, shard: 2, sample: 12)
        var d = CounterRNG(seed: 7, purpose: .trainSigma, step: 3, shard: 2, sample: 11)
        let xa: [Double] = (0..<10).map { _ in a.normal() }
        #expect(xa == (0..<10).map { _ in b.normal() })
        #expect(xa != (0..<10).map { _ in c.normal() })
        #expect(xa != (0..<10).map { _ in d.normal() })
    }

    @Test func normalMoments() {
        var r = CounterRNG(seed: 3, purpose: .evaluation)
        let n = 200_000
        var s = 0.0, s2 = 0.0, s4 = 0.0
        for _ in 0..<n { let x = r.normal(); s += x; s2 += x * x; s4 += x * x * x * x }
        #expect(abs(s / Double(n)) < 0.01)
        #expect(abs(s2 / Double(n) - 1) < 0.01)
        #expect(abs(s4 / Double(n) - 3) < 0.05)
    }

    @Test func permutationIsAPermutation() {
        var r = CounterRNG(seed: 9, purpose: .dataOrder)
        let p = r.permutation(1000)
        #expect(Set(p).count == 1000 && p.min() == 0 && p.max() == 999)
        #expect(p != Array(0..<1000))
        var q = CounterRNG(seed: 9, purpose: .dataOrder)
        #expect(q.permutation(1000) == p)
    }

    @Test func uniformIntegersAreUnbiased() {
        var r = CounterRNG(seed: 4, purpose: .evaluation)
        var counts = [Int](repeating: 0, count: 3)
        for _ in 0..<30_000 { counts[r.int(below: 3)] += 1 }
        #expect(counts.allSatisfy { abs($0 - 10_000) < 400 })
    }
}

@Suite struct OptimizerTests {
    /// Adam minimises a quadratic; its first step has size lr in every coordinate (bias correction).
    @Test func adamFirstStepAndConvergence() {
        let n = 4
        let p = UnsafeMutablePointer<Float>.allocate(capacity: n); defer { p.deallocate() }
        let g = UnsafeMutablePointer<Float>.allocate(capacity: n); defer { g.deallocate() }
        let target: [Float] = [1, -2, 3, 0.5]
        p.initialize(repeating: 0, count: n)
        let adam = Adam<Float>(count: n, options: .init(learningRate: 0.1))
        for i in 0..<n { g[i] = 2 * (p[i] - target[i]) }
        adam.update(params: p, grads: g)
        for i in 0..<n { #expect(abs(abs(p[i]) - 0.1) < 1e-5) }
        for _ in 0..<2000 {
            for i in 0..<n { g[i] = 2 * (p[i] - target[i]) }
            adam.update(params: p, grads: g)
        }
        for i in 0..<n { #expect(abs(p[i] - target[i]) < 1e-2) }
    }

    /// AdamW: with a zero gradient the Adam step is zero, so one update only shrinks the
    /// parameters by 1 - lr * decay; split into ranges and threads it gives the same bits; with
    /// decay 0 the update is the plain Adam one.
    @Test func weightDecayIsDecoupledAndElementwise() {
        let n = 20_000
        let start = (0..<n).map { Float(($0 % 97) - 48) / 10 }
        func step(_ adam: Adam<Float>, _ x: inout [Float], _ g: [Float]) {
            x.withUnsafeMutableBufferPointer { xp in g.withUnsafeBufferPointer { adam.update(params: xp.baseAddress!, grads: $0.baseAddress!) } }
        }
        var p = start, q = start, r = start
        let zero = [Float](repeating: 0, count: n)
        let grads = (0..<n).map { Float(($0 % 13) - 6) / 7 }
        step(Adam<Float>(count: n, options: .init(learningRate: 0.1, weightDecay: 0.5)), &p, zero)
        for i in 0..<n { #expect(p[i] == start[i] * Float(1 - 0.1 * 0.5)) }
        let whole = Adam<Float>(count: n, options: .init(learningRate: 0.1, weightDecay: 0.5))
        step(whole, &q, grads)
        let split = Adam<Float>(count: n, options: .init(learningRate: 0.1, weightDecay: 0.5))
        r.withUnsafeMutableBufferPointer { rp in
            grads.withUnsafeBufferPointer { gp in
                split.update(params: rp.baseAddress!, range: 0..<7_000, grads: gp.baseAddress!, threads: 2)
                split.update(params: rp.baseAddress!, range: 7_000..<n, grads: gp.baseAddress! + 7_000, threads: 3)
            }
        }
        split.advance()
        #expect(q == r)
        var plain = start, zeroDecay = start
        step(Adam<Float>(count: n, options: .init(learningRate: 0.1)), &plain, grads)
        step(Adam<Float>(count: n, options: .init(learningRate: 0.1, weightDecay: 0)), &zeroDecay, grads)
        #expect(plain == zeroDecay && plain != q)
    }

    @Test func emaTracksWithWarmup() {
        var x: [Float] = [0, 0]
        let ema = x.withUnsafeBufferPointer { ParameterEMA<Float>(copying: $0.baseAddress!, count: 2, decay: 0.9) }
        x = [1, 2]
        // First update uses d = min(0.9, 1/10) = 0.1.
        x.withUnsafeBufferPointer { ema.update(from: $0.baseAddress!) }
        #expect(abs(ema.values[0] - 0.9) < 1e-6 && abs(ema.values[1] - 1.8) < 1e-6)
    }

    /// The fused pass (each block's EMA update right after its Adam update) gives the bits of
    /// the two separate passes, for any thread count and an odd-sized range.
    @Test(arguments: [1, 2, 3])
    func fusedAdamAndEMAMatchSeparatePasses(threads: Int) {
        let n = 300_001
        var rng = CounterRNG(seed: 5, purpose: .evaluation)
        let p0 = (0..<n).map { _ in Float(rng.normal()) }
        let grads = (0..<5).map { _ in (0..<n).map { _ in Float(rng.normal()) } }
        func run(fused: Bool) -> ([Float], [Float]) {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n); defer { p.deallocate() }
            p0.withUnsafeBufferPointer { p.initialize(from: $0.baseAddress!, count: n) }
            let adam = Adam<Float>(count: n, options: .init(learningRate: 0.01))
            let ema = ParameterEMA<Float>(copying: p, count: n, decay: 0.99)
            let range = 7..<(n - 3)
            for g in grads {
                g.withUnsafeBufferPointer { gb in
                    let gp = gb.baseAddress! + range.lowerBound
                    if fused {
                        adam.update(params: p, range: range, grads: gp, threads: threads) { ema.updateBlock(from: p, range: $0) }
                    } else {
                        adam.update(params: p, range: range, grads: gp, threads: threads)
                        ema.update(from: p, range: range, threads: threads)
                    }
                }
                adam.advance()
                ema.advance()
            }
            return (Array(UnsafeBufferPointer(start: p, count: n)), ema.snapshot())
        }
        let (a, b) = (run(fused: false), run(fused: true))
        #expect(a.0.map(\.bitPattern) == b.0.map(\.bitPattern))
        #expect(a.1.map(\.bitPattern) == b.1.map(\.bitPattern))
    }

    /// The parallel gradient norm adds the same block partials in the same order: the bits of
    /// the one-thread norm.
    @Test func parallelNormMatchesSerial() {
        var rng = CounterRNG(seed: 6, purpose: .evaluation)
        for n in [0, 1, 4095, 4097, 300_000, 1_000_003] {
            let g = (0..<n).map { _ in Float(rng.normal()) }
            g.withUnsafeBufferPointer { b in
                let base = b.baseAddress ?? UnsafePointer(bitPattern: 16)!
                let one = euclideanNorm(base, n)
                for t in [2, 3] { #expect(euclideanNorm(base, n, threads: t).bitPattern == one.bitPattern, "n \(n), \(t) threads") }
            }
        }
    }
}

@Suite struct ArenaTests {
    /// After the first round the arena is one chunk that fits the whole round: no growth.
    @Test func steadyStateDoesNotGrow() {
        let arena = Arena<Float>(initialCapacity: 1024)
        for _ in 0..<3 {
            for _ in 0..<10 { _ = arena.allocate(1000) }
            arena.reset()
        }
        let cap = arena.capacity
        for _ in 0..<10 { _ = arena.allocate(1000) }
        arena.reset()
        #expect(arena.capacity == cap)
    }
}
