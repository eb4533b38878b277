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

    /// One derivative rule per primitive.
    private func runBackward() {
        for op in ops.reversed() {
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
