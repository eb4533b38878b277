extension Tape {
    /// Reverse pass from a scalar (1x1) node, seeding its gradient with `seed`.
    /// Gradients accumulate: parameter gradients add to whatever the store already holds.
    public func backward(_ loss: Var, seed: T = 1) {
        precondition(nodes[loss.id].count == 1, "backward(seed:) needs a scalar; use backward(_:gradient:)")
        guard let g = nodes[loss.id].grad else { return }
        g[0] += seed
        runBackward()
    }

    /// Reverse pass from a tensor node whose gradient is given (vector-Jacobian product).
    public func backward(_ v: Var, gradient: UnsafePointer<T>) {
        guard let g = nodes[v.id].grad else { return }
        T.axpy(1, gradient, g, nodes[v.id].count)
        runBackward()
    }

    /// The node indices an operation reads (its differentiable inputs).
    func forEachInput(_ op: Op, _ body: (Int) -> Void) {
        switch op {
        case let .linear(x, w, b, _): body(x); body(w); if b >= 0 { body(b) }
        case let .add(a, b, _), let .sub(a, b, _), let .mul(a, b, _), let .concatColumns(a, b, _): body(a); body(b)
        case let .scaleRows(x, s, _): body(x); body(s)
        case let .silu(x, _), let .sigmoid(x, _), let .channelMean(x, _): body(x)
        case let .avgPool2x2(x, _, _), let .upsample2x(x, _, _): body(x)
        case let .layerNorm(x, g, b, _, _), let .groupNorm(x, g, b, _, _, _): body(x); body(g); body(b)
        case let .weightedSumOfSquares(x, _, _): body(x)
        case let .weightedDot(a, b, _, _): body(a); body(b)
        case let .conv2d(x, w, b, _, _): body(x); body(w); if b >= 0 { body(b) }
        case let .addPerChannel(x, e, _): body(x); body(e)
        case let .sliceRows(x, _, _): body(x)
        case let .binaryCrossEntropyWithLogits(z, _, _, _), let .softmaxCrossEntropy(z, _, _, _, _): body(z)
        }
    }

    /// With `onParameterGradientReady` set: for each parameter slot, the reverse-pass position
    /// after which its gradient is final (the op of its earliest use in the forward pass, over
    /// every node viewing the slot). Fills `gradientReadyAt` (op index -> slots).
    private func planGradientReadiness() -> [Int: [Int]] {
        var firstUse: [Int: Int] = [:]   // slot -> earliest op index reading any of its nodes
        for (i, op) in ops.enumerated() {
            forEachInput(op) { n in
                let s = nodes[n].slot
                if s >= 0, nodes[n].grad != nil, firstUse[s] == nil { firstUse[s] = i }
            }
        }
        var at: [Int: [Int]] = [:]
        for (slot, i) in firstUse { at[i, default: []].append(slot) }
        return at
    }

    /// One derivative rule per primitive.
    private func runBackward() {
        let readiness = onParameterGradientReady == nil ? [:] : planGradientReadiness()
        for (index, op) in ops.enumerated().reversed() {
            defer {
                if let ready = readiness[index], let hook = onParameterGradientReady {
                    for slot in ready.sorted() { hook(slot) }
                }
            }
            let t0 = profile?.now() ?? 0
            defer { profile?.add(op.name, backward: true, since: t0) }
            switch op {
            case let .linear(x, w, b, y):
                let (r, k) = (nodes[x].rows, nodes[x].cols), n = nodes[y].cols
                let dy = nodes[y].grad!
                if let dx = nodes[x].grad {   // dX += dY W^T
                    T.gemm(transA: false, transB: true, m: r, n: k, k: n, alpha: 1, a: dy, lda: n,
                           b: nodes[w].value, ldb: n, beta: 1, c: dx, ldc: k)
                }
                if let dw = nodes[w].grad {   // dW += X^T dY
                    T.gemm(transA: true, transB: false, m: k, n: n, k: r, alpha: 1, a: nodes[x].value, lda: k,
                           b: dy, ldb: n, beta: 1, c: dw, ldc: n)
                }
                if b >= 0, let db = nodes[b].grad { T.accumulateColumnSums(dy, db, rows: r, cols: n) }

            case let .add(a, b, y):
                let dy = nodes[y].grad!, n = nodes[y].count
                if let da = nodes[a].grad { T.axpy(1, dy, da, n) }
                if let db = nodes[b].grad { T.axpy(1, dy, db, n) }

            case let .sub(a, b, y):
                let dy = nodes[y].grad!, n = nodes[y].count
                if let da = nodes[a].grad { T.axpy(1, dy, da, n) }
                if let db = nodes[b].grad { T.axpy(-1, dy, db, n) }

            case let .mul(a, b, y):
                let dy = nodes[y].grad!, n = nodes[y].count
                if let da = nodes[a].grad { T.multiplyAccumulate(dy, nodes[b].value, da, n) }
                if let db = nodes[b].grad { T.multiplyAccumulate(dy, nodes[a].value, db, n) }

            case let .scaleRows(x, s, y):
                let dy = nodes[y].grad!, r = nodes[y].rows, c = nodes[y].cols
                if let dx = nodes[x].grad { T.accumulateScaledRows(dy, nodes[s].value, alpha: 1, dx, rows: r, cols: c) }
                if let ds = nodes[s].grad { T.accumulateRowDots(dy, nodes[x].value, ds, rows: r, cols: c) }

            case let .silu(x, y):
                if let dx = nodes[x].grad { T.siluBackward(nodes[x].value, nodes[y].grad!, dx, nodes[y].count) }

            case let .layerNorm(x, gamma, beta, y, stats):
                let r = nodes[y].rows, c = nodes[y].cols
                T.layerNormBackward(nodes[x].value, nodes[gamma].value, stats, stats + r, nodes[y].grad!,
                                    nodes[x].grad, nodes[gamma].grad, nodes[beta].grad, rows: r, cols: c)

            case let .concatColumns(a, b, y):
                let dy = nodes[y].grad!, r = nodes[y].rows, ca = nodes[a].cols, cb = nodes[b].cols
                for i in 0..<r {
                    if let da = nodes[a].grad { T.axpy(1, dy + i * (ca + cb), da + i * ca, ca) }
                    if let db = nodes[b].grad { T.axpy(1, dy + i * (ca + cb) + ca, db + i * cb, cb) }
                }

            case let .weightedSumOfSquares(x, w, y):
                let g = nodes[y].grad![0]
                if let dx = nodes[x].grad {
                    T.accumulateScaledRows(nodes[x].value, nodes[w].value, alpha: 2 * g, dx,
                                           rows: nodes[x].rows, cols: nodes[x].cols)
                }

            case let .weightedDot(a, b, w, y):
                let g = nodes[y].grad![0], r = nodes[a].rows, c = nodes[a].cols
                if let da = nodes[a].grad { T.accumulateScaledRows(nodes[b].value, nodes[w].value, alpha: g, da, rows: r, cols: c) }
                if let db = nodes[b].grad { T.accumulateScaledRows(nodes[a].value, nodes[w].value, alpha: g, db, rows: r, cols: c) }

            case let .conv2d(x, w, b, y, shape):
                convolutionBackward(x: x, w: w, b: b, y: y, shape: shape)

            case let .groupNorm(x, gamma, beta, y, stats, groups):
                let r = nodes[y].rows, ch = nodes[gamma].count
                T.groupNormBackward(nodes[x].value, nodes[gamma].value, stats, stats + r * groups, nodes[y].grad!,
                                    nodes[x].grad, nodes[gamma].grad, nodes[beta].grad,
                                    rows: r, channels: ch, spatial: nodes[y].cols / ch, groups: groups)

            case let .avgPool2x2(x, y, input):
                if let dx = nodes[x].grad {
                    T.avgPool2x2Backward(nodes[y].grad!, dx, planes: nodes[y].rows * input.channels,
                                         height: input.height, width: input.width)
                }

            case let .upsample2x(x, y, input):
                if let dx = nodes[x].grad {
                    T.upsample2xBackward(nodes[y].grad!, dx, planes: nodes[y].rows * input.channels,
                                         height: input.height, width: input.width)
                }

            case let .addPerChannel(x, e, y):
                let dy = nodes[y].grad!, planes = nodes[e].count
                if let dx = nodes[x].grad { T.axpy(1, dy, dx, nodes[y].count) }
                if let de = nodes[e].grad { T.accumulateRowSums(dy, de, alpha: 1, rows: planes, cols: nodes[y].count / planes) }

            case let .channelMean(x, y):
                if let dx = nodes[x].grad {
                    let planes = nodes[y].count, s = nodes[x].count / planes
                    T.addRowScalars(dx, nodes[y].grad!, alpha: 1 / T(s), dx, rows: planes, cols: s)
                }

            case let .sigmoid(x, y):
                if let dx = nodes[x].grad { T.sigmoidBackward(nodes[y].value, nodes[y].grad!, dx, nodes[y].count) }

            case let .sliceRows(x, start, y):
                let c = nodes[y].cols
                if let dx = nodes[x].grad { T.axpy(1, nodes[y].grad!, dx + start * c, nodes[y].count) }

            case let .binaryCrossEntropyWithLogits(z, t, w, y):
                if let dz = nodes[z].grad {   // d/dz = w (sigmoid(z) - t)
                    T.binaryCrossEntropyWithLogitsBackward(nodes[z].value, nodes[t].value, nodes[w].value,
                                                           alpha: nodes[y].grad![0], dz, rows: nodes[z].rows)
                }

            case let .softmaxCrossEntropy(z, label, w, y, probabilities):
                if let dz = nodes[z].grad {   // d/dz = w (softmax(z) - onehot(label))
                    T.softmaxCrossEntropyBackward(probabilities, nodes[label].value, nodes[w].value, alpha: nodes[y].grad![0],
                                                  dz, rows: nodes[z].rows, classes: nodes[z].cols)
                }
            }
        }
    }
}

extension Tape {
    /// The derivative rule of `conv2d`, per chunk of samples (the im2col matrix is rebuilt
    /// rather than kept from the forward pass: it is Cin k k times larger than the input):
    ///
    ///     dW   += dY col^T              (Cout, Cin k k)
    ///     dcol  = W^T dY;  dx += col2im(dcol)
    ///     db   += sum over samples and pixels of dY
    func convolutionBackward(x: Int, w: Int, b: Int, y: Int, shape: ConvShape) {
        let dy = nodes[y].grad!, rows = nodes[y].rows
        let dx = nodes[x].grad, dw = nodes[w].grad, db = b >= 0 ? nodes[b].grad : nil
        let input = shape.input, cout = shape.outChannels
        let s = input.spatial, k = shape.patchSize
        if let db {
            for n in 0..<rows { T.accumulateRowSums(dy + n * shape.output.count, db, alpha: 1, rows: cout, cols: s) }
        }
        guard dx != nil || dw != nil else { return }
        if usesDirectConvolution(shape) {
            T.directConv3x3Backward(nodes[x].value, nodes[w].value, dy, dx: dx, dw: dw, input: input, outChannels: cout,
                                    samples: rows, workspace: workspace(T.directConv3x3Workspace(input: input, outChannels: cout, samples: rows)))
            return
        }
        let chunk = convolutionChunk(shape, rows: rows)
        // col (K, chunk S) | dY as (Cout, chunk S) | dcol (K, chunk S)
        let col = workspace(chunk * s * (2 * k + cout))
        let dyc = col + chunk * s * k, dcol = dyc + chunk * s * cout
        let xp = nodes[x].value, wp = nodes[w].value
        var n0 = 0
        while n0 < rows {
            let bc = min(chunk, rows - n0), ld = bc * s
            T.samplesToChannels(dy + n0 * shape.output.count, dyc, channels: cout, spatial: s, samples: bc)
            if let dw {
                T.im2col(xp + n0 * input.count, col, channels: input.channels, height: input.height, width: input.width,
                         kernel: shape.kernel, samples: bc)
                T.gemm(transA: false, transB: true, m: cout, n: k, k: ld, alpha: 1, a: dyc, lda: ld,
                       b: col, ldb: ld, beta: 1, c: dw, ldc: k)
            }
            if let dx {
                T.gemm(transA: true, transB: false, m: k, n: ld, k: cout, alpha: 1, a: wp, lda: k,
                       b: dyc, ldb: ld, beta: 0, c: dcol, ldc: ld)
                T.col2imAccumulate(dcol, dx + n0 * input.count, channels: input.channels, height: input.height,
                                   width: input.width, kernel: shape.kernel, samples: bc)
            }
            n0 += bc
        }
    }
}
