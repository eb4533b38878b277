/// Image primitives. A batch of images is a 2-D node (rows, C H W), channel-major per sample
/// (NCHW flattened); the (C, H, W) geometry travels in each op's payload. A per-sample
/// concatenation along channels is `concatColumns` (the channels of a sample are contiguous).
extension Tape {
    /// Whether a convolution of this shape runs the direct kernel instead of im2col + GEMM.
    func usesDirectConvolution(_ shape: ConvShape) -> Bool {
        usesDirectConvolution && shape.kernel == 3 && T.hasDirectConv3x3
    }

    /// Samples per im2col chunk for a convolution: as many as fit `convolutionWorkspaceLimit`.
    func convolutionChunk(_ shape: ConvShape, rows: Int) -> Int {
        let perSample = shape.patchSize * shape.input.spatial
        return max(1, min(rows, convolutionWorkspaceLimit / max(perSample, 1)))
    }

    /// 2-D convolution, stride 1, 'same' zero padding, odd kernel, with optional bias:
    /// x (R, Cin H W), w (Cout, Cin k k), b (1, Cout) -> (R, Cout H W).
    ///
    /// Computed per chunk of samples as one GEMM `Y = W col` over the im2col patch matrix
    /// col (Cin k k, chunk H W), built in the tape's workspace (no per-step allocation once
    /// shapes repeat). `naiveConv2d` is the reference it is tested against.
    public func conv2d(_ x: Var, _ w: Var, _ b: Var?, input: ImageShape, outChannels: Int, kernel: Int) -> Var {
        let t0 = startTimer()
        let shape = ConvShape(input: input, outChannels: outChannels, kernel: kernel)
        let (rows, cols) = self.shape(x)
        precondition(kernel >= 1 && kernel % 2 == 1, "conv2d: kernel \(kernel) must be odd")
        precondition(cols == input.count, "conv2d: x has \(cols) columns, input shape \(input) needs \(input.count)")
        precondition(nodes[w.id].count == shape.weightCount,
                     "conv2d: weight has \(nodes[w.id].count) elements, (\(outChannels), \(input.channels), \(kernel), \(kernel)) needs \(shape.weightCount)")
        if let b { precondition(nodes[b.id].count == outChannels, "conv2d: bias size \(nodes[b.id].count), expected \(outChannels)") }
        let y = b.map { output(rows: rows, cols: shape.output.count, inputs: x, w, $0) }
            ?? output(rows: rows, cols: shape.output.count, inputs: x, w)
        let xp = value(x), wp = value(w), yp = value(y), bp = b.map { UnsafePointer(value($0)) }
        if usesDirectConvolution(shape) {
            T.directConv3x3Forward(xp, wp, bias: bp, yp, input: input, outChannels: outChannels, samples: rows,
                                   workspace: workspace(T.directConv3x3Workspace(input: input, outChannels: outChannels, samples: rows)))
            stopTimer("conv2d", t0)
            record(.conv2d(x: x.id, w: w.id, b: b?.id ?? -1, y: y.id, shape: shape), output: y)
            return y
        }
        let s = input.spatial, k = shape.patchSize
        let chunk = convolutionChunk(shape, rows: rows)
        let col = workspace(chunk * s * (k + outChannels))
        let out = col + chunk * s * k            // (Cout, chunk S)
        var n0 = 0
        while n0 < rows {
            let bc = min(chunk, rows - n0), ld = bc * s
            T.im2col(xp + n0 * input.count, col, channels: input.channels, height: input.height, width: input.width,
                     kernel: kernel, samples: bc)
            T.gemm(transA: false, transB: false, m: outChannels, n: ld, k: k, alpha: 1, a: wp, lda: k,
                   b: col, ldb: ld, beta: 0, c: out, ldc: ld)
            T.channelsToSamples(out, yp + n0 * shape.output.count, bias: bp, channels: outChannels, spatial: s, samples: bc)
            n0 += bc
        }
        stopTimer("conv2d", t0)
        record(.conv2d(x: x.id, w: w.id, b: b?.id ?? -1, y: y.id, shape: shape), output: y)
        return y
    }

    /// GroupNorm (Wu & He 2018): each sample's C channels in `groups` groups of C/groups,
    /// normalised over (C/groups, H, W), then `gamma[c] xhat + beta[c]`; gamma, beta (1, C).
    public func groupNorm(_ x: Var, gamma: Var, beta: Var, channels: Int, groups: Int, eps: T = 1e-5) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(channels >= 1 && c % channels == 0, "groupNorm: \(c) columns are not \(channels) channels")
        precondition(groups >= 1 && channels % groups == 0, "groupNorm: \(channels) channels do not split into \(groups) groups")
        precondition(nodes[gamma.id].count == channels && nodes[beta.id].count == channels, "groupNorm: gain/bias size")
        let y = output(rows: r, cols: c, inputs: x, gamma, beta)
        let stats = arena.allocate(2 * r * groups)
        T.groupNormForward(value(x), value(gamma), value(beta), value(y), stats, stats + r * groups,
                           rows: r, channels: channels, spatial: c / channels, groups: groups, eps: eps)
        stopTimer("groupNorm", t0)
        record(.groupNorm(x: x.id, gamma: gamma.id, beta: beta.id, y: y.id, stats: stats, groups: groups), output: y)
        return y
    }

    /// 2x2 average pooling, (C, H, W) -> (C, H/2, W/2); H and W must be even.
    public func avgPool2x2(_ x: Var, input: ImageShape) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(c == input.count, "avgPool2x2: x has \(c) columns, input shape \(input) needs \(input.count)")
        precondition(input.height % 2 == 0 && input.width % 2 == 0, "avgPool2x2: \(input) has an odd side")
        let y = output(rows: r, cols: input.halved.count, inputs: x)
        T.avgPool2x2Forward(value(x), value(y), planes: r * input.channels, height: input.height, width: input.width)
        stopTimer("avgPool2x2", t0)
        record(.avgPool2x2(x: x.id, y: y.id, input: input), output: y)
        return y
    }

    /// Nearest-neighbour 2x up-sampling, (C, H, W) -> (C, 2H, 2W).
    public func upsample2x(_ x: Var, input: ImageShape) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(c == input.count, "upsample2x: x has \(c) columns, input shape \(input) needs \(input.count)")
        let y = output(rows: r, cols: input.doubled.count, inputs: x)
        T.upsample2xForward(value(x), value(y), planes: r * input.channels, height: input.height, width: input.width)
        stopTimer("upsample2x", t0)
        record(.upsample2x(x: x.id, y: y.id, input: input), output: y)
        return y
    }

    /// `y[n, c, :] = x[n, c, :] + e[n, c]`: a per-sample, per-channel vector (the noise-level
    /// embedding) broadcast over the pixels. x (R, C S), e (R, C).
    public func addPerChannel(_ x: Var, _ e: Var) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x), (re, ch) = shape(e)
        precondition(r == re && ch >= 1 && c % ch == 0, "addPerChannel: x \(shape(x)) and e \(shape(e))")
        let y = output(rows: r, cols: c, inputs: x, e)
        T.addRowScalars(value(x), value(e), alpha: 1, value(y), rows: r * ch, cols: c / ch)
        stopTimer("addPerChannel", t0)
        record(.addPerChannel(x: x.id, e: e.id, y: y.id), output: y)
        return y
    }

    /// Global average pooling: (R, C S) -> (R, C), the mean of each channel's pixels.
    public func channelMean(_ x: Var, channels: Int) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(channels >= 1 && c % channels == 0, "channelMean: \(c) columns are not \(channels) channels")
        let y = output(rows: r, cols: channels, inputs: x)
        let s = c / channels
        T.fill(value(y), 0, r * channels)
        T.accumulateRowSums(value(x), value(y), alpha: 1 / T(s), rows: r * channels, cols: s)
        stopTimer("channelMean", t0)
        record(.channelMean(x: x.id, y: y.id), output: y)
        return y
    }

    /// The logistic function `1 / (1 + exp(-x))`, elementwise.
    public func sigmoid(_ x: Var) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        let y = output(rows: r, cols: c, inputs: x)
        T.sigmoidForward(value(x), value(y), r * c)
        stopTimer("sigmoid", t0)
        record(.sigmoid(x: x.id, y: y.id), output: y)
        return y
    }

    /// Gated convolution (Yu et al. 2019, as ambient-diffusion uses for masked inputs):
    /// `conv(x; w, b) * sigmoid(conv(x; wGate, bGate))`, composed from primitives.
    public func gatedConv2d(_ x: Var, _ w: Var, _ b: Var?, gate wGate: Var, _ bGate: Var?,
                            input: ImageShape, outChannels: Int, kernel: Int) -> Var {
        let feature = conv2d(x, w, b, input: input, outChannels: outChannels, kernel: kernel)
        let gate = conv2d(x, wGate, bGate, input: input, outChannels: outChannels, kernel: kernel)
        return mul(feature, sigmoid(gate))
    }
}
