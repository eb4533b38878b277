/// A value on the tape: an index into its node table.
public struct Var: Hashable, Sendable {
    public let id: Int
}

/// A small reverse-mode automatic differentiation tape over 2-D (rows, cols) tensors.
///
/// Few primitives, one derivative rule each (in `Tape+Backward.swift`); networks and losses are
/// compositions of them. Values and gradients live in an `Arena`: `reset()` between steps
/// makes a step allocation-free once shapes repeat. Parameters are views into a
/// `ParameterStore`, so their gradients accumulate straight into its flat gradient buffer.
///
/// With `recordsGradients == false` (inference, sampler passes, no-grad branches) nothing is
/// recorded and no gradient memory is allocated.
public final class Tape<T: Scalar> {
    struct Node {
        let value: UnsafeMutablePointer<T>
        let grad: UnsafeMutablePointer<T>?
        let rows: Int
        let cols: Int
        /// The ParameterStore slot this node views, or -1.
        var slot: Int = -1
        var count: Int { rows * cols }
    }

    enum Op {
        case linear(x: Int, w: Int, b: Int, y: Int)          // b == -1: no bias
        case add(a: Int, b: Int, y: Int)
        case sub(a: Int, b: Int, y: Int)
        case mul(a: Int, b: Int, y: Int)
        case scaleRows(x: Int, s: Int, y: Int)
        case silu(x: Int, y: Int)
        case layerNorm(x: Int, gamma: Int, beta: Int, y: Int, stats: UnsafeMutablePointer<T>)
        case concatColumns(a: Int, b: Int, y: Int)
        case weightedSumOfSquares(x: Int, w: Int, y: Int)
        case weightedDot(a: Int, b: Int, w: Int, y: Int)
        // Image primitives (Tape+Image.swift); images are rows of (C, H, W), channel-major.
        case conv2d(x: Int, w: Int, b: Int, y: Int, shape: ConvShape)   // b == -1: no bias
        case groupNorm(x: Int, gamma: Int, beta: Int, y: Int, stats: UnsafeMutablePointer<T>, groups: Int)
        case avgPool2x2(x: Int, y: Int, input: ImageShape)
        case upsample2x(x: Int, y: Int, input: ImageShape)
        case addPerChannel(x: Int, e: Int, y: Int)
        case channelMean(x: Int, y: Int)
        case sigmoid(x: Int, y: Int)

        case sliceRows(x: Int, start: Int, y: Int)
        case binaryCrossEntropyWithLogits(z: Int, target: Int, w: Int, y: Int)
        case softmaxCrossEntropy(z: Int, label: Int, w: Int, y: Int, probabilities: UnsafeMutablePointer<T>)

        /// The primitive's name in profiles.
        var name: String {
            switch self {
            case .linear: "linear"
            case .add: "add"
            case .sub: "sub"
            case .mul: "mul"
            case .scaleRows: "scaleRows"
            case .silu: "silu"
            case .layerNorm: "layerNorm"
            case .concatColumns: "concatColumns"
            case .weightedSumOfSquares: "weightedSumOfSquares"
            case .weightedDot: "weightedDot"
            case .conv2d: "conv2d"
            case .groupNorm: "groupNorm"
            case .avgPool2x2: "avgPool2x2"
            case .upsample2x: "upsample2x"
            case .addPerChannel: "addPerChannel"
            case .channelMean: "channelMean"
            case .sigmoid: "sigmoid"
            case .sliceRows: "sliceRows"
            case .binaryCrossEntropyWithLogits: "binaryCrossEntropyWithLogits"
            case .softmaxCrossEntropy: "softmaxCrossEntropy"
            }
        }
    }

    var nodes: [Node] = []
    var ops: [Op] = []
    let arena: Arena<T>
    /// Record operations and allocate gradients (training); false for inference.
    public var recordsGradients: Bool
    /// Called during `backward` with a parameter slot as soon as its gradient is final (no
    /// later rule adds to it), so it can be sent while the rest of the pass runs.
    public var onParameterGradientReady: ((Int) -> Void)?
    /// When set, every primitive's forward and backward time is added to it.
    public var profile: TapeProfile?
    /// Largest im2col patch matrix (elements) a convolution builds at once; a convolution
    /// processes as many samples per GEMM as fit (at least one).
    public var convolutionWorkspaceLimit = 1 << 20
    /// 3x3 convolutions use the direct kernel (`DirectConvolution`) where the scalar type and
    /// the CPU have one; false forces the im2col + GEMM path (the reference; `bench conv`
    /// compares the two).
    public var usesDirectConvolution = true
    /// Scratch shared by the primitives that need temporary buffers (im2col), reused by
    /// each of them in turn and released by `reset()`.
    var workspaceBase: UnsafeMutablePointer<T>?
    var workspaceCapacity = 0

    public init(recordsGradients: Bool = true, initialCapacity: Int = 1 << 16) {
        self.recordsGradients = recordsGradients
        arena = Arena(initialCapacity: initialCapacity)
        nodes.reserveCapacity(256)
        ops.reserveCapacity(256)
    }

    /// Forgets every node; the memory is reused by the next step.
    public func reset() {
        nodes.removeAll(keepingCapacity: true)
        ops.removeAll(keepingCapacity: true)
        arena.reset()
        workspaceBase = nil
        workspaceCapacity = 0
    }

    /// `count` elements of scratch from the arena, valid until the next `workspace` call.
    func workspace(_ count: Int) -> UnsafeMutablePointer<T> {
        if count > workspaceCapacity || workspaceBase == nil {
            workspaceBase = arena.allocate(count)
            workspaceCapacity = count
        }
        return workspaceBase!
    }

    @inline(__always) func startTimer() -> UInt64 { profile?.now() ?? 0 }
    @inline(__always) func stopTimer(_ name: String, _ start: UInt64) { profile?.add(name, backward: false, since: start) }

    // MARK: Access

    /// Elements the arena has reserved (memory reports; a repeated step must not grow it).
    public var arenaCapacity: Int { arena.capacity }

    public func shape(_ v: Var) -> (rows: Int, cols: Int) { (nodes[v.id].rows, nodes[v.id].cols) }
    public func value(_ v: Var) -> UnsafeMutablePointer<T> { nodes[v.id].value }
    /// The gradient of the last `backward` with respect to `v` (nil if `v` needs none).
    public func grad(_ v: Var) -> UnsafeMutablePointer<T>? { nodes[v.id].grad }
    public func requiresGrad(_ v: Var) -> Bool { nodes[v.id].grad != nil }

    /// A copy of `v`'s value as a tensor of shape (rows, cols).
    public func tensor(_ v: Var) -> Tensor<T> {
        let n = nodes[v.id]
        return Tensor(shape: [n.rows, n.cols], storage: Array(UnsafeBufferPointer(start: n.value, count: n.count)))
    }

    /// The value of a 1x1 node.
    public func scalar(_ v: Var) -> T { nodes[v.id].value[0] }

    // MARK: Leaves

    /// Scratch memory for the caller, valid until `reset()` (e.g. per-row constants).
    public func scratch(_ count: Int) -> UnsafeMutablePointer<T> { arena.allocate(count) }

    /// A constant (no gradient) of the given shape, uninitialised: the caller fills `value(v)`.
    public func constant(rows: Int, cols: Int) -> Var {
        addNode(rows: rows, cols: cols, needsGrad: false)
    }

    /// A constant (rows, 1) column filled by `f(row)` (per-row sigmas, loss weights, labels).
    public func column(rows: Int, _ f: (Int) -> Double) -> Var {
        let v = constant(rows: rows, cols: 1)
        let p = value(v)
        for r in 0..<rows { p[r] = T(f(r)) }
        return v
    }

    /// A constant copied from `source` (rows * cols elements).
    public func constant(_ source: UnsafePointer<T>, rows: Int, cols: Int) -> Var {
        let v = constant(rows: rows, cols: cols)
        value(v).update(from: source, count: rows * cols)
        return v
    }

    public func constant(_ t: Tensor<T>) -> Var {
        let rows = t.rows, cols = t.rowSize
        return t.storage.withUnsafeBufferPointer { constant($0.baseAddress!, rows: rows, cols: cols) }
    }

    /// A leaf whose gradient is wanted (gradient checks, inputs to be differentiated).
    public func variable(_ source: UnsafePointer<T>, rows: Int, cols: Int) -> Var {
        let v = addNode(rows: rows, cols: cols, needsGrad: true)
        value(v).update(from: source, count: rows * cols)
        return v
    }

    /// A parameter of `store` viewed as (rows, cols); its gradient accumulates into `store.grads`.
    public func parameter(_ store: ParameterStore<T>, _ slot: Int, rows: Int, cols: Int) -> Var {
        precondition(store.layout.slots[slot].count == rows * cols,
                     "parameter \(store.layout.slots[slot].name) has \(store.layout.slots[slot].count) elements, viewed as \(rows)x\(cols)")
        nodes.append(Node(value: store.value(slot), grad: recordsGradients ? store.grad(slot) : nil, rows: rows, cols: cols, slot: slot))
        return Var(id: nodes.count - 1)
    }

    func addNode(rows: Int, cols: Int, needsGrad: Bool) -> Var {
        let n = rows * cols
        let value = arena.allocate(n)
        let grad = (needsGrad && recordsGradients) ? arena.allocateZeroed(n) : nil
        nodes.append(Node(value: value, grad: grad, rows: rows, cols: cols))
        return Var(id: nodes.count - 1)
    }

    /// A node that needs a gradient when any input does. (Fixed arities: a variadic parameter
    /// would allocate an array per primitive per step.)
    func output(rows: Int, cols: Int, inputs a: Var) -> Var {
        addNode(rows: rows, cols: cols, needsGrad: recordsGradients && nodes[a.id].grad != nil)
    }

    func output(rows: Int, cols: Int, inputs a: Var, _ b: Var) -> Var {
        addNode(rows: rows, cols: cols, needsGrad: recordsGradients && (nodes[a.id].grad != nil || nodes[b.id].grad != nil))
    }

    func output(rows: Int, cols: Int, inputs a: Var, _ b: Var, _ c: Var) -> Var {
        addNode(rows: rows, cols: cols,
                needsGrad: recordsGradients && (nodes[a.id].grad != nil || nodes[b.id].grad != nil || nodes[c.id].grad != nil))
    }

    func record(_ op: Op, output y: Var) {
        if nodes[y.id].grad != nil { ops.append(op) }
    }

    // MARK: Primitives (forward)

    /// `y = x W + b` with x (R, in), W (in, out), b (1, out) or none.
    public func linear(_ x: Var, _ w: Var, _ b: Var?) -> Var {
        let t0 = startTimer()
        let (r, k) = shape(x), (wk, n) = shape(w)
        precondition(k == wk, "linear: x has \(k) columns, W has \(wk) rows")
        if let b { precondition(shape(b) == (1, n) || nodes[b.id].count == n, "linear: bias shape") }
        let y = b.map { output(rows: r, cols: n, inputs: x, w, $0) } ?? output(rows: r, cols: n, inputs: x, w)
        let yp = value(y)
        if let b { T.broadcastRows(value(b), yp, rows: r, cols: n) }
        T.gemm(transA: false, transB: false, m: r, n: n, k: k, alpha: 1, a: value(x), lda: k,
               b: value(w), ldb: n, beta: b == nil ? 0 : 1, c: yp, ldc: n)
        stopTimer("linear", t0)
        record(.linear(x: x.id, w: w.id, b: b?.id ?? -1, y: y.id), output: y)
        return y
    }

    public func add(_ a: Var, _ b: Var) -> Var {
        let t0 = startTimer()
        precondition(shape(a) == shape(b), "add: shapes \(shape(a)) and \(shape(b))")
        let (r, c) = shape(a)
        let y = output(rows: r, cols: c, inputs: a, b)
        T.addScaled(value(a), value(b), alpha: 1, value(y), r * c)
        stopTimer("add", t0)
        record(.add(a: a.id, b: b.id, y: y.id), output: y)
        return y
    }

    public func sub(_ a: Var, _ b: Var) -> Var {
        let t0 = startTimer()
        precondition(shape(a) == shape(b), "sub: shapes \(shape(a)) and \(shape(b))")
        let (r, c) = shape(a)
        let y = output(rows: r, cols: c, inputs: a, b)
        T.addScaled(value(a), value(b), alpha: -1, value(y), r * c)
        stopTimer("sub", t0)
        record(.sub(a: a.id, b: b.id, y: y.id), output: y)
        return y
    }

    /// Elementwise product.
    public func mul(_ a: Var, _ b: Var) -> Var {
        let t0 = startTimer()
        precondition(shape(a) == shape(b), "mul: shapes \(shape(a)) and \(shape(b))")
        let (r, c) = shape(a)
        let y = output(rows: r, cols: c, inputs: a, b)
        T.multiply(value(a), value(b), value(y), r * c)
        stopTimer("mul", t0)
        record(.mul(a: a.id, b: b.id, y: y.id), output: y)
        return y
    }

    /// `y[i, j] = s[i] x[i, j]` with s of shape (R, 1).
    public func scaleRows(_ x: Var, _ s: Var) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(shape(s) == (r, 1), "scaleRows: scale shape \(shape(s)), expected (\(r), 1)")
        let y = output(rows: r, cols: c, inputs: x, s)
        T.scaleRows(value(x), value(s), value(y), rows: r, cols: c)
        stopTimer("scaleRows", t0)
        record(.scaleRows(x: x.id, s: s.id, y: y.id), output: y)
        return y
    }

    /// SiLU, `x sigmoid(x)`.
    public func silu(_ x: Var) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        let y = output(rows: r, cols: c, inputs: x)
        T.siluForward(value(x), value(y), r * c)
        stopTimer("silu", t0)
        record(.silu(x: x.id, y: y.id), output: y)
        return y
    }

    /// Layer normalisation over each row, with gain and bias of shape (1, cols).
    public func layerNorm(_ x: Var, gamma: Var, beta: Var, eps: T = 1e-5) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(nodes[gamma.id].count == c && nodes[beta.id].count == c, "layerNorm: gain/bias size")
        let y = output(rows: r, cols: c, inputs: x, gamma, beta)
        let stats = arena.allocate(2 * r)
        T.layerNormForward(value(x), value(gamma), value(beta), value(y), stats, stats + r, rows: r, cols: c, eps: eps)
        stopTimer("layerNorm", t0)
        record(.layerNorm(x: x.id, gamma: gamma.id, beta: beta.id, y: y.id, stats: stats), output: y)
        return y
    }

    /// `[a | b]` along columns (same row count).
    public func concatColumns(_ a: Var, _ b: Var) -> Var {
        let t0 = startTimer()
        let (r, ca) = shape(a), (rb, cb) = shape(b)
        precondition(r == rb, "concatColumns: row counts \(r) and \(rb)")
        let y = output(rows: r, cols: ca + cb, inputs: a, b)
        let yp = value(y), ap = value(a), bp = value(b)
        for i in 0..<r {
            (yp + i * (ca + cb)).update(from: ap + i * ca, count: ca)
            (yp + i * (ca + cb) + ca).update(from: bp + i * cb, count: cb)
        }
        stopTimer("concatColumns", t0)
        record(.concatColumns(a: a.id, b: b.id, y: y.id), output: y)
        return y
    }

    /// The scalar `sum_i w[i] ||x[i, :]||^2`, with w of shape (R, 1) (loss weights).
    public func weightedSumOfSquares(_ x: Var, weights w: Var) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(x)
        precondition(shape(w) == (r, 1), "weightedSumOfSquares: weight shape \(shape(w))")
        precondition(nodes[w.id].grad == nil, "weightedSumOfSquares: weights must be constants")
        let y = output(rows: 1, cols: 1, inputs: x)
        value(y)[0] = T(T.weightedSumOfSquares(value(x), value(w), rows: r, cols: c))
        stopTimer("weightedSumOfSquares", t0)
        record(.weightedSumOfSquares(x: x.id, w: w.id, y: y.id), output: y)
        return y
    }

    /// The scalar `sum_i w[i] <a[i, :], b[i, :]>`, with w of shape (R, 1) (loss weights).
    public func weightedDot(_ a: Var, _ b: Var, weights w: Var) -> Var {
        let t0 = startTimer()
        let (r, c) = shape(a)
        precondition(shape(a) == shape(b), "weightedDot: shapes \(shape(a)) and \(shape(b))")
        precondition(shape(w) == (r, 1), "weightedDot: weight shape \(shape(w))")
        precondition(nodes[w.id].grad == nil, "weightedDot: weights must be constants")
        let y = output(rows: 1, cols: 1, inputs: a, b)
        value(y)[0] = T(T.weightedDot(value(a), value(b), value(w), rows: r, cols: c))
        stopTimer("weightedDot", t0)
        record(.weightedDot(a: a.id, b: b.id, w: w.id, y: y.id), output: y)
        return y
    }

    /// Rows `start ..< start + count` of x.
    public func sliceRows(_ x: Var, start: Int, count: Int) -> Var {
        let (r, c) = shape(x)
        precondition(start >= 0 && count >= 0 && start + count <= r, "sliceRows: rows \(start)..<\(start + count) of \(r)")
        let y = output(rows: count, cols: c, inputs: x)
        value(y).update(from: value(x) + start * c, count: count * c)
        record(.sliceRows(x: x.id, start: start, y: y.id), output: y)
        return y
    }

    /// The scalar `sum_i w[i] BCE(z[i], t[i])` with `BCE(z, t) = max(z, 0) - z t + log(1 + exp(-|z|))`,
    /// the binary cross-entropy of the logit z against the target probability t, computed
    /// without overflow. z, t, w are (R, 1); t and w are constants.
    public func binaryCrossEntropyWithLogits(_ z: Var, targets t: Var, weights w: Var) -> Var {
        let (r, c) = shape(z)
        precondition(c == 1 && shape(t) == (r, 1) && shape(w) == (r, 1), "binaryCrossEntropyWithLogits: shapes \(shape(z)), \(shape(t)), \(shape(w))")
        precondition(nodes[t.id].grad == nil && nodes[w.id].grad == nil, "binaryCrossEntropyWithLogits: targets and weights must be constants")
        let y = output(rows: 1, cols: 1, inputs: z)
        value(y)[0] = T(T.binaryCrossEntropyWithLogits(value(z), value(t), value(w), rows: r))
        record(.binaryCrossEntropyWithLogits(z: z.id, target: t.id, w: w.id, y: y.id), output: y)
        return y
    }

    /// The scalar `sum_i w[i] (logsumexp(z[i, :]) - z[i, label[i]])`: softmax cross-entropy of
    /// (R, K) logits against class labels stored as values of the (R, 1) constant `labels`.
    public func softmaxCrossEntropy(_ z: Var, labels: Var, weights w: Var) -> Var {
        let (r, k) = shape(z)
        precondition(shape(labels) == (r, 1) && shape(w) == (r, 1), "softmaxCrossEntropy: shapes \(shape(z)), \(shape(labels)), \(shape(w))")
        precondition(nodes[labels.id].grad == nil && nodes[w.id].grad == nil, "softmaxCrossEntropy: labels and weights must be constants")
        let lp = value(labels)
        for i in 0..<r { precondition(lp[i] >= 0 && Int(lp[i]) < k, "softmaxCrossEntropy: label \(lp[i]) outside 0..<\(k)") }
        let y = output(rows: 1, cols: 1, inputs: z)
        let probabilities = arena.allocate(r * k)
        value(y)[0] = T(T.softmaxCrossEntropy(value(z), lp, value(w), probabilities, rows: r, classes: k))
        record(.softmaxCrossEntropy(z: z.id, label: labels.id, w: w.id, y: y.id, probabilities: probabilities), output: y)
        return y
    }
}
