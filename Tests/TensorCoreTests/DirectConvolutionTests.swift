import Foundation
import Testing
import TensorCore

/// The direct 3x3 convolution (DirectConvolution, C kernels) against the naive convolution and
/// naive gradient formulas, in both of its code paths (AVX2 where the CPU has it, and the
/// portable loops), and against the im2col path through the tape.
@Suite struct DirectConvolutionTests {
    /// Shapes of the U-Net (1 -> 16 at 28x28, 16 -> 16, 96 -> 32 at 14x14, 32 -> 64 at 7x7), and
    /// the edge cases of the padded-plane layout: output counts not a multiple of 4, 1x1 and
    /// 2x3 images, non-square images, an odd side.
    static let shapes: [(ImageShape, Int)] = [
        (ImageShape(channels: 1, height: 28, width: 28), 16),
        (ImageShape(channels: 16, height: 28, width: 28), 16),
        (ImageShape(channels: 96, height: 14, width: 14), 32),
        (ImageShape(channels: 32, height: 7, width: 7), 64),
        (ImageShape(channels: 3, height: 7, width: 9), 5),
        (ImageShape(channels: 5, height: 1, width: 1), 6),
        (ImageShape(channels: 8, height: 2, width: 3), 4),
        (ImageShape(channels: 2, height: 5, width: 4), 7),
    ]

    struct Case {
        let input: ImageShape, cout: Int, samples: Int
        let x: [Float], w: [Float], b: [Float], dy: [Float]
        var shape: ConvShape { ConvShape(input: input, outChannels: cout, kernel: 3) }

        init(_ input: ImageShape, _ cout: Int, samples: Int = 3, seed: UInt64 = 50) {
            self.input = input
            self.cout = cout
            self.samples = samples
            var rng = CounterRNG(seed: seed, purpose: .evaluation)
            x = (0..<(samples * input.count)).map { _ in Float(rng.normal()) }
            w = (0..<(cout * input.channels * 9)).map { _ in Float(rng.normal()) }
            b = (0..<cout).map { _ in Float(rng.normal()) }
            dy = (0..<(samples * cout * input.spatial)).map { _ in Float(rng.normal()) }
        }

        func workspace() -> [Float] {
            [Float](repeating: .nan, count: Float.directConv3x3Workspace(input: input, outChannels: cout, samples: samples))
        }

        func direct(_ kernel: DirectConvolution.Kernel) -> [Float] {
            var y = [Float](repeating: .nan, count: samples * cout * input.spatial), ws = workspace()
            DirectConvolution.forward(x, w, bias: b, &y, input: input, outChannels: cout, samples: samples, workspace: &ws,
                                      kernel: kernel)
            return y
        }

        /// (dx, dw) accumulated onto the starting values 1 (so "accumulates" is checked too).
        func directGradients(_ kernel: DirectConvolution.Kernel) -> ([Float], [Float]) {
            var dx = [Float](repeating: 1, count: x.count), dw = [Float](repeating: 1, count: w.count), ws = workspace()
            DirectConvolution.backward(x, w, dy, dx: &dx, dw: &dw, input: input, outChannels: cout, samples: samples,
                                       workspace: &ws, kernel: kernel)
            return (dx, dw)
        }

        func naiveForward() -> [Double] {
            var y = [Double](repeating: 0, count: samples * cout * input.spatial)
            let xd = x.map(Double.init), wd = w.map(Double.init), bd = b.map(Double.init)
            naiveConv2d(xd, wd, bd, &y, rows: samples, shape: shape)
            return y
        }

        /// dx = sum over co, taps of w dy (shifted back), dw = sum over samples, pixels of dy x (shifted), plus 1.
        func naiveGradients() -> ([Double], [Double]) {
            let (cin, h, wd) = (input.channels, input.height, input.width)
            var dx = [Double](repeating: 1, count: x.count), dw = [Double](repeating: 1, count: w.count)
            for n in 0..<samples {
                for co in 0..<cout {
                    for y in 0..<h {
                        for xx in 0..<wd {
                            let g = Double(dy[((n * cout + co) * h + y) * wd + xx])
                            for ci in 0..<cin {
                                for ky in 0..<3 {
                                    for kx in 0..<3 {
                                        let sy = y + ky - 1, sx = xx + kx - 1
                                        guard sy >= 0, sy < h, sx >= 0, sx < wd else { continue }
                                        let xi = ((n * cin + ci) * h + sy) * wd + sx, wi = ((co * cin + ci) * 3 + ky) * 3 + kx
                                        dx[xi] += Double(w[wi]) * g
                                        dw[wi] += Double(x[xi]) * g
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return (dx, dw)
        }
    }

    /// Float rounding of a sum of `terms` products of N(0, 1) values grows with the term count.
    static func tolerance(terms: Int) -> Double { 1e-5 + 2e-6 * Double(terms).squareRoot() }

    /// Largest `|a - b| / (1 + |b|)`.
    static func error(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        return a.indices.map { abs(Double(a[$0]) - b[$0]) / (1 + abs(b[$0])) }.max() ?? 0
    }

    /// The paths this CPU can run (a path above the CPU's would silently run a lower one).
    static let kernels = DirectConvolution.Kernel.allCases.filter { $0.rawValue <= DirectConvolution.fastest.rawValue }

    /// AVX2 and AVX-512 give the same bits, forward and both gradients (what lets machines with
    /// and without AVX-512 train bitwise the same weights). Needs an AVX-512 CPU to compare
    /// anything; elsewhere it is skipped (and says so), since CI runs on whichever CPU it gets.
    @Test(.enabled(if: DirectConvolution.fastest == .avx512,
                   "this CPU has no AVX-512 (or AMBIENT_CONV3X3_AVX512=0): nothing to compare"),
          arguments: shapes)
    func avx512MatchesAVX2Bitwise(input: ImageShape, cout: Int) throws {
        let c = Case(input, cout, samples: 20)
        /// nil when bitwise equal, else how many values differ and the first of them.
        func difference(_ a: [Float], _ b: [Float]) -> String? {
            let differing = a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }
            guard let i = differing.first else { return nil }
            return "\(differing.count) of \(a.count) values differ, first at \(i): \(a[i]) vs \(b[i])"
        }
        let forward = difference(c.direct(.avx512), c.direct(.avx2))
        #expect(forward == nil, "forward \(input) -> \(cout): \(forward ?? "")")
        let (dx512, dw512) = c.directGradients(.avx512), (dx2, dw2) = c.directGradients(.avx2)
        let dx = difference(dx512, dx2), dw = difference(dw512, dw2)
        #expect(dx == nil, "dx \(input) -> \(cout): \(dx ?? "")")
        #expect(dw == nil, "dw \(input) -> \(cout): \(dw ?? "")")
    }

    @Test(arguments: shapes)
    func forwardMatchesNaive(input: ImageShape, cout: Int) {
        let c = Case(input, cout)
        let reference = c.naiveForward()
        let tolerance = Self.tolerance(terms: 9 * input.channels)
        for kernel in Self.kernels {
            let e = Self.error(c.direct(kernel), reference)
            #expect(e < tolerance, "\(input) -> \(cout), \(kernel): \(e)")
        }
    }

    @Test(arguments: shapes)
    func gradientsMatchNaive(input: ImageShape, cout: Int) {
        let c = Case(input, cout)
        let (dxRef, dwRef) = c.naiveGradients()
        for kernel in Self.kernels {
            let (dx, dw) = c.directGradients(kernel)
            let ex = Self.error(dx, dxRef), ew = Self.error(dw, dwRef)
            #expect(ex < Self.tolerance(terms: 9 * cout), "dx \(input) -> \(cout), \(kernel): \(ex)")
            // dw sums samples x H x W products.
            #expect(ew < Self.tolerance(terms: c.samples * input.spatial), "dw \(input) -> \(cout), \(kernel): \(ew)")
        }
    }

    /// More samples than one backward chunk (17 of these fit one): the weight gradient sums
    /// over chunks 17 + 3 and still matches.
    @Test func gradientsOverSeveralChunks() {
        let c = Case(ImageShape(channels: 8, height: 28, width: 28), 8, samples: 20)
        let (dxRef, dwRef) = c.naiveGradients()
        for kernel in Self.kernels {
            let (dx, dw) = c.directGradients(kernel)
            #expect(Self.error(dx, dxRef) < Self.tolerance(terms: 9 * 8), "\(kernel)")
            #expect(Self.error(dw, dwRef) < Self.tolerance(terms: 20 * 784), "\(kernel)")
        }
    }

    /// Only one of dx and dw requested: the other stays untouched.
    @Test func oneGradientOnly() {
        let c = Case(ImageShape(channels: 3, height: 5, width: 6), 5)
        var ws = c.workspace()
        var dx = [Float](repeating: 0, count: c.x.count), dw = [Float](repeating: 0, count: c.w.count)
        DirectConvolution.backward(c.x, c.w, c.dy, dx: &dx, dw: nil, input: c.input, outChannels: c.cout, samples: c.samples,
                                   workspace: &ws)
        DirectConvolution.backward(c.x, c.w, c.dy, dx: nil, dw: &dw, input: c.input, outChannels: c.cout, samples: c.samples,
                                   workspace: &ws)
        let (dxRef, dwRef) = c.naiveGradients()
        #expect(Self.error(dx, dxRef.map { $0 - 1 }) < Self.tolerance(terms: 9 * 5))
        #expect(Self.error(dw, dwRef.map { $0 - 1 }) < Self.tolerance(terms: 3 * 30))
    }

    /// Through the tape, a Float convolution takes the direct kernel when the CPU has it and
    /// agrees with the im2col path in value and in every gradient.
    @Test(arguments: [(ImageShape(channels: 16, height: 28, width: 28), 16), (ImageShape(channels: 3, height: 7, width: 9), 5)])
    func tapeDirectAndIm2colAgree(input: ImageShape, cout: Int) {
        let c = Case(input, cout, samples: 4)
        func run(direct: Bool) -> (y: [Float], dx: [Float], dw: [Float], db: [Float]) {
            let tape = Tape<Float>()
            tape.usesDirectConvolution = direct
            let x = c.x.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: c.samples, cols: input.count) }
            let w = c.w.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: cout, cols: input.channels * 9) }
            let b = c.b.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 1, cols: cout) }
            let y = tape.conv2d(x, w, b, input: input, outChannels: cout, kernel: 3)
            c.dy.withUnsafeBufferPointer { tape.backward(y, gradient: $0.baseAddress!) }
            func read(_ v: Var, _ n: Int, grad: Bool) -> [Float] {
                let p = grad ? tape.grad(v)! : tape.value(v)
                return (0..<n).map { p[$0] }
            }
            return (read(y, c.dy.count, grad: false), read(x, c.x.count, grad: true), read(w, c.w.count, grad: true),
                    read(b, cout, grad: true))
        }
        let direct = run(direct: true), im2col = run(direct: false)
        for (name, a, b) in [("y", direct.y, im2col.y), ("dx", direct.dx, im2col.dx), ("dw", direct.dw, im2col.dw),
                             ("db", direct.db, im2col.db)] {
            let e = Self.error(a, b.map(Double.init))
            #expect(e < 2 * Self.tolerance(terms: c.samples * input.spatial), "\(name) \(input) -> \(cout): \(e)")
        }
        if !DirectConvolution.isAvailable { return }
        // Both paths ran (they are not bitwise equal: their additions happen in other orders).
        #expect(direct.y != im2col.y)
    }
}
