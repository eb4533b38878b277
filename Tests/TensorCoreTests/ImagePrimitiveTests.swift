import Foundation
import Testing
import TensorCore

/// The image primitives (Tape+Image.swift) against central finite differences in Double, and
/// the im2col convolution against the direct reference.
@Suite struct ImagePrimitiveTests {
    static let tolerance = TapeGradientTests.tolerance
    let checks = TapeGradientTests()

    func leaf(_ name: String, _ rows: Int, _ cols: Int, seed: UInt64, scale: Double = 1) -> GradientCheck.Leaf {
        checks.randomLeaf(name, rows, cols, seed: seed, scale: scale)
    }

    /// Convolutions of several geometries (kernel 1, 3, 5; a kernel wider than the image;
    /// non-square images) and workspace limits that split the batch into chunks with a
    /// remainder, so every boundary case of im2col/col2im is differentiated.
    @Test(arguments: [
        (ImageShape(channels: 2, height: 5, width: 4), 3, 3, true, 1 << 20),
        (ImageShape(channels: 2, height: 5, width: 4), 3, 3, true, 1),       // one sample per chunk
        (ImageShape(channels: 3, height: 4, width: 4), 2, 3, false, 2 * 27 * 16),  // chunks of 2, rows 3
        (ImageShape(channels: 2, height: 3, width: 4), 4, 1, true, 1 << 20),
        (ImageShape(channels: 1, height: 3, width: 2), 2, 5, true, 1 << 20),  // kernel wider than the image
    ])
    func conv2dGradients(input: ImageShape, cout: Int, k: Int, bias: Bool, limit: Int) {
        let rows = 3
        var leaves = [leaf("x", rows, input.count, seed: 30), leaf("w", cout, input.channels * k * k, seed: 31, scale: 0.5)]
        if bias { leaves.append(leaf("b", 1, cout, seed: 32)) }
        let r = GradientCheck.run(leaves: leaves) { t, v in
            t.convolutionWorkspaceLimit = limit
            return checks.head(t, t.conv2d(v[0], v[1], bias ? v[2] : nil, input: input, outChannels: cout, kernel: k))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(input) cout \(cout) k \(k): \(r)")
    }

    /// The im2col + GEMM convolution equals the direct convolution, in Float and Double, for
    /// several shapes and chunkings.
    @Test(arguments: [
        (ImageShape(channels: 1, height: 28, width: 28), 8, 3),
        (ImageShape(channels: 3, height: 7, width: 5), 4, 3),
        (ImageShape(channels: 4, height: 6, width: 6), 5, 5),
        (ImageShape(channels: 5, height: 2, width: 3), 3, 3),
        (ImageShape(channels: 6, height: 4, width: 4), 7, 1),
    ])
    func im2colMatchesNaive(input: ImageShape, cout: Int, k: Int) {
        for limit in [1, 2 * input.channels * k * k * input.spatial, 1 << 20] {
            let f: Double = convolutionError(Float.self, input: input, cout: cout, k: k, limit: limit)
            let d: Double = convolutionError(Double.self, input: input, cout: cout, k: k, limit: limit)
            #expect(f < 1e-5, "Float \(input) k \(k) limit \(limit): \(f)")
            #expect(d < 1e-12, "Double \(input) k \(k) limit \(limit): \(d)")
        }
    }

    /// Largest `|fast - naive| / (1 + |naive|)` over a batch of 5.
    func convolutionError<T: Scalar>(_: T.Type, input: ImageShape, cout: Int, k: Int, limit: Int) -> Double {
        let rows = 5
        let shape = ConvShape(input: input, outChannels: cout, kernel: k)
        var rng = CounterRNG(seed: 40, purpose: .evaluation)
        let x: [T] = (0..<(rows * input.count)).map { _ in T(rng.normal()) }
        let w: [T] = (0..<shape.weightCount).map { _ in T(rng.normal()) }
        let b: [T] = (0..<cout).map { _ in T(rng.normal()) }
        let tape = Tape<T>(recordsGradients: false)
        tape.convolutionWorkspaceLimit = limit
        tape.usesDirectConvolution = false   // this test is about im2col; DirectConvolutionTests has the other
        let xv = x.withUnsafeBufferPointer { tape.constant($0.baseAddress!, rows: rows, cols: input.count) }
        let wv = w.withUnsafeBufferPointer { tape.constant($0.baseAddress!, rows: cout, cols: shape.patchSize) }
        let bv = b.withUnsafeBufferPointer { tape.constant($0.baseAddress!, rows: 1, cols: cout) }
        let y = tape.conv2d(xv, wv, bv, input: input, outChannels: cout, kernel: k)
        var ref = [T](repeating: 0, count: rows * shape.output.count)
        x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in b.withUnsafeBufferPointer { bp in
            ref.withUnsafeMutableBufferPointer {
                naiveConv2d(xp.baseAddress!, wp.baseAddress!, bp.baseAddress!, $0.baseAddress!, rows: rows, shape: shape)
            }
        } } }
        let fast = tape.value(y)
        return ref.indices.map { Double(abs(fast[$0] - ref[$0])) / (1 + Double(abs(ref[$0]))) }.max()!
    }

    @Test(arguments: [1, 2, 4])
    func groupNormGradients(groups: Int) {
        let (rows, channels, spatial) = (3, 4, 6)
        let r = GradientCheck.run(leaves: [leaf("x", rows, channels * spatial, seed: 50, scale: 2),
                                           leaf("gamma", 1, channels, seed: 51), leaf("beta", 1, channels, seed: 52)]) { t, v in
            checks.head(t, t.groupNorm(v[0], gamma: v[1], beta: v[2], channels: channels, groups: groups))
        }
        #expect(r.maxRelativeError < Self.tolerance, "groups \(groups): \(r)")
    }

    /// Each group of each sample is normalised: mean 0, variance 1 with gamma 1, beta 0.
    @Test func groupNormNormalises() {
        let (rows, channels, spatial, groups) = (2, 6, 5, 3)
        let x = leaf("x", rows, channels * spatial, seed: 53, scale: 3)
        let tape = Tape<Double>(recordsGradients: false)
        let xv = x.values.withUnsafeBufferPointer { tape.constant($0.baseAddress!, rows: rows, cols: channels * spatial) }
        let g = tape.constant(rows: 1, cols: channels), b = tape.constant(rows: 1, cols: channels)
        tape.value(g).update(repeating: 1, count: channels)
        tape.value(b).update(repeating: 0, count: channels)
        let y = tape.value(tape.groupNorm(xv, gamma: g, beta: b, channels: channels, groups: groups, eps: 0))
        let len = channels / groups * spatial
        for seg in 0..<(rows * groups) {
            let v = (0..<len).map { y[seg * len + $0] }
            let mean = v.reduce(0, +) / Double(len)
            let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(len)
            #expect(abs(mean) < 1e-12 && abs(variance - 1) < 1e-12)
        }
    }

    @Test func poolingAndUpsamplingGradients() {
        let input = ImageShape(channels: 2, height: 4, width: 6)
        let pool = GradientCheck.run(leaves: [leaf("x", 3, input.count, seed: 60)]) { t, v in
            checks.head(t, t.avgPool2x2(v[0], input: input))
        }
        #expect(pool.maxRelativeError < Self.tolerance, "\(pool)")
        let small = ImageShape(channels: 2, height: 3, width: 5)
        let up = GradientCheck.run(leaves: [leaf("x", 3, small.count, seed: 61)]) { t, v in
            checks.head(t, t.upsample2x(v[0], input: small))
        }
        #expect(up.maxRelativeError < Self.tolerance, "\(up)")
    }

    /// Known values: 2x2 means, and up-sampling then pooling is the identity.
    @Test func poolingAndUpsamplingValues() {
        let input = ImageShape(channels: 1, height: 2, width: 4)
        let tape = Tape<Double>(recordsGradients: false)
        let x = [1.0, 2, 3, 4, 5, 6, 7, 8].withUnsafeBufferPointer { tape.constant($0.baseAddress!, rows: 1, cols: 8) }
        let p = tape.avgPool2x2(x, input: input)
        #expect(tape.value(p)[0] == 3.5 && tape.value(p)[1] == 5.5)
        let u = tape.upsample2x(x, input: input)
        #expect(tape.shape(u) == (1, 32))
        #expect(tape.value(u)[0] == 1 && tape.value(u)[1] == 1 && tape.value(u)[8] == 1 && tape.value(u)[10] == 2)
        let back = tape.avgPool2x2(u, input: input.doubled)
        #expect((0..<8).allSatisfy { tape.value(back)[$0] == tape.value(x)[$0] })
    }

    @Test func addPerChannelAndChannelMeanGradients() {
        let (rows, channels, spatial) = (3, 4, 5)
        let add = GradientCheck.run(leaves: [leaf("x", rows, channels * spatial, seed: 70), leaf("e", rows, channels, seed: 71)]) { t, v in
            checks.head(t, t.addPerChannel(v[0], v[1]))
        }
        #expect(add.maxRelativeError < Self.tolerance, "\(add)")
        let mean = GradientCheck.run(leaves: [leaf("x", rows, channels * spatial, seed: 72)]) { t, v in
            checks.head(t, t.channelMean(v[0], channels: channels))
        }
        #expect(mean.maxRelativeError < Self.tolerance, "\(mean)")
    }

    @Test func sigmoidAndGatedConvolutionGradients() {
        let s = GradientCheck.run(leaves: [leaf("x", 4, 7, seed: 80, scale: 3)]) { t, v in checks.head(t, t.sigmoid(v[0])) }
        #expect(s.maxRelativeError < Self.tolerance, "\(s)")
        let input = ImageShape(channels: 2, height: 4, width: 3)
        let g = GradientCheck.run(leaves: [leaf("x", 2, input.count, seed: 81), leaf("w", 3, 18, seed: 82, scale: 0.5),
                                           leaf("b", 1, 3, seed: 83), leaf("wg", 3, 18, seed: 84, scale: 0.5),
                                           leaf("bg", 1, 3, seed: 85)]) { t, v in
            checks.head(t, t.gatedConv2d(v[0], v[1], v[2], gate: v[3], v[4], input: input, outChannels: 3, kernel: 3))
        }
        #expect(g.maxRelativeError < Self.tolerance, "\(g)")
    }

    /// A small conv block (conv, GroupNorm, SiLU, pool, up-sample, skip concat, conv) sharing
    /// its input along two paths: the rules compose and accumulate.
    @Test func convBlockComposition() {
        let input = ImageShape(channels: 2, height: 4, width: 4)
        let r = GradientCheck.run(leaves: [leaf("x", 2, input.count, seed: 90), leaf("w1", 4, 18, seed: 91, scale: 0.5),
                                           leaf("g", 1, 4, seed: 92), leaf("b", 1, 4, seed: 93),
                                           leaf("w2", 2, 54, seed: 94, scale: 0.3)]) { t, v in
            let h = t.silu(t.groupNorm(t.conv2d(v[0], v[1], nil, input: input, outChannels: 4, kernel: 3),
                                       gamma: v[2], beta: v[3], channels: 4, groups: 2))
            let down = t.avgPool2x2(h, input: input.with(channels: 4))
            let up = t.upsample2x(down, input: input.with(channels: 4).halved)
            let cat = t.concatColumns(up, v[0])   // per-sample channel concat: (4 + 2, 4, 4)
            return checks.head(t, t.conv2d(cat, v[4], nil, input: input.with(channels: 6), outChannels: 2, kernel: 3))
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    /// After the first step, a convolution step with the same shapes allocates nothing more.
    @Test func convolutionStepsReuseTheArena() {
        let input = ImageShape(channels: 3, height: 8, width: 8)
        let tape = Tape<Float>()
        tape.convolutionWorkspaceLimit = 3 * 9 * 64 * 2
        var capacities: [Int] = []
        let x = [Float](repeating: 0.5, count: 5 * input.count), w = [Float](repeating: 0.1, count: 4 * 27)
        for _ in 0..<3 {
            tape.reset()
            let xv = x.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 5, cols: input.count) }
            let wv = w.withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 4, cols: 27) }
            let y = tape.conv2d(xv, wv, nil, input: input, outChannels: 4, kernel: 3)
            let ones = tape.constant(rows: 5, cols: 1)
            tape.value(ones).update(repeating: 1, count: 5)
            tape.backward(tape.weightedSumOfSquares(y, weights: ones))
            capacities.append(tape.arenaCapacity)
        }
        #expect(capacities[1] == capacities[2], "\(capacities)")
    }

    /// The profile sees every primitive that ran, forward and backward.
    @Test func profileRecordsPrimitives() {
        let tape = Tape<Double>()
        tape.profile = TapeProfile()
        let input = ImageShape(channels: 1, height: 4, width: 4)
        let x = [Double](repeating: 1, count: 16).withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 1, cols: 16) }
        let w = [Double](repeating: 0.1, count: 18).withUnsafeBufferPointer { tape.variable($0.baseAddress!, rows: 2, cols: 9) }
        let y = tape.sigmoid(tape.conv2d(x, w, nil, input: input, outChannels: 2, kernel: 3))
        let one = tape.constant(rows: 1, cols: 1)
        tape.value(one)[0] = 1
        tape.backward(tape.weightedSumOfSquares(y, weights: one))
        let names = Set(tape.profile!.primitivesByCost.map(\.name))
        #expect(names == ["conv2d", "sigmoid", "weightedSumOfSquares"])
        #expect(tape.profile!.backward["conv2d"]?.calls == 1 && tape.profile!.forward["conv2d"]?.calls == 1)
    }
}

/// The Float fast paths (vectorised exp) against Double libm, over the whole range including
/// the clamped tails and a length that leaves a scalar remainder.
@Suite struct FloatKernelTests {
    @Test func siluAndSigmoidMatchDouble() {
        let xs: [Float] = (0..<2003).map { Float($0 - 1001) * 0.1 } + [-200, -88, -87.5, 87.5, 88.5, 200, 0]
        let n = xs.count
        var y = [Float](repeating: 0, count: n), sg = [Float](repeating: 0, count: n)
        var dx = [Float](repeating: 0.5, count: n)
        let dy = [Float](repeating: 1.5, count: n)
        Float.siluForward(xs, &y, n)
        Float.sigmoidForward(xs, &sg, n)
        Float.siluBackward(xs, dy, &dx, n)
        for i in 0..<n {
            let x = Double(xs[i]), s = 1 / (1 + exp(-x))
            let silu = x * s, grad = 0.5 + 1.5 * s * (1 + x * (1 - s))
            #expect(abs(Double(y[i]) - silu) <= 1e-6 * max(1, abs(silu)), "silu(\(x)) = \(y[i]), expected \(silu)")
            #expect(abs(Double(sg[i]) - s) <= 1e-6, "sigmoid(\(x)) = \(sg[i]), expected \(s)")
            #expect(abs(Double(dx[i]) - grad) <= 1e-6 * max(1, abs(grad)), "silu'(\(x)): \(dx[i]) vs \(grad)")
        }
    }
}
