/// Adam (Kingma & Ba 2015) with bias correction, as one loop over the flat buffers.
public final class Adam<T: Scalar>: @unchecked Sendable {
    public struct Options: Sendable, Codable, Equatable {
        public var learningRate: Double
        public var beta1: Double
        public var beta2: Double
        public var epsilon: Double
        /// Linear learning-rate warm-up over this many steps (0: none).
        public var warmupSteps: Int
        /// Decoupled weight decay (AdamW, Loshchilov & Hutter 2019): every parameter is first
        /// multiplied by `1 - lr * weightDecay`, then the Adam step is taken (0: plain Adam).
        public var weightDecay: Double
        public init(learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999,
                    epsilon: Double = 1e-8, warmupSteps: Int = 0, weightDecay: Double = 0) {
            self.learningRate = learningRate
            self.weightDecay = weightDecay
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.warmupSteps = warmupSteps
        }
    }

    public let options: Options
    public let count: Int
    /// First and second moments, same layout as the parameters.
    public let m: UnsafeMutablePointer<T>
    public let v: UnsafeMutablePointer<T>
    /// Number of updates applied so far.
    public private(set) var step = 0

    public init(count: Int, options: Options) {
        self.count = count
        self.options = options
        m = .allocate(capacity: max(count, 1))
        zeroFill(m, max(count, 1))
        v = .allocate(capacity: max(count, 1))
        zeroFill(v, max(count, 1))
    }

    deinit {
        m.deallocate()
        v.deallocate()
    }

    /// The learning rate used for update number `step + 1`.
    public func learningRate(atStep s: Int) -> Double {
        let w = options.warmupSteps
        return w > 0 ? options.learningRate * min(1, Double(s + 1) / Double(w)) : options.learningRate
    }

    /// `params -= lr * mhat / (sqrt(vhat) + eps)`, elementwise, split over `threads` ranges
    /// (the result does not depend on the split), then `advance()`.
    public func update(params: UnsafeMutablePointer<T>, grads: UnsafePointer<T>, threads: Int = 1) {
        update(params: params, range: 0..<count, grads: grads, threads: threads)
        advance()
    }

    /// Update number `step + 1` on the parameters in `range` only, with `grads` pointing at the
    /// gradient of `range`'s first element. A step may be applied range by range (as the
    /// chunks of a reduced gradient arrive); `advance()` ends it. Elementwise, so the result
    /// is bitwise the same as one whole-buffer update.
    ///
    /// `blockDone`, if given, runs on each block of at most `fusedBlock` elements right after
    /// its update, on the same thread, while the block is still in cache (the EMA update of the
    /// same parameters and the parameter checksum's block hashes: one pass over memory instead of
    /// three). It receives the block's range in the whole buffer; blocks end at multiples of
    /// `fusedBlock` in the whole buffer (or at the end of a thread's part of `range`).
    public func update(params: UnsafeMutablePointer<T>, range: Range<Int>, grads: UnsafePointer<T>, threads: Int = 1,
                       blockDone: ((Range<Int>) -> Void)? = nil) {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "range \(range) outside 0..<\(count)")
        let k = coefficients()
        let base = range.lowerBound
        let (p, m, v) = (params + base, self.m + base, self.v + base)
        Parallel.forRanges(range.count, threads: threads) { r in
            guard let blockDone else {
                let o = r.lowerBound
                Self.decayAndUpdate(k, p + o, grads + o, m + o, v + o, r.count)
                return
            }
            var o = r.lowerBound
            while o < r.upperBound {
                // Blocks end on multiples of `fusedBlock` in the whole buffer, so a caller that
                // hashes blocks (ParameterChecksumCache) gets whole ones.
                let e = min((base + o) / Self.fusedBlock * Self.fusedBlock + Self.fusedBlock - base, r.upperBound)
                Self.decayAndUpdate(k, p + o, grads + o, m + o, v + o, e - o)   // the decay too, while the block is in cache
                blockDone((base + o)..<(base + e))
                o = e
            }
        }
    }

    /// Update number `step + 1` of `count` elements held by the caller: `params`, `m` and `v` are
    /// copies of a range's parameters and moments, updated in place (this optimiser's own moments
    /// are untouched; `advance()` is not called). The same arithmetic as the in-place update, so
    /// copying the results back gives its bits (a range owner updates its chunks this way and
    /// sends the new parameters, docs/design-optimizer-sharding.md).
    public func update(params p: UnsafeMutablePointer<T>, m: UnsafeMutablePointer<T>, v: UnsafeMutablePointer<T>,
                       grads: UnsafePointer<T>, count: Int) {
        Self.decayAndUpdate(coefficients(), p, grads, m, v, count)
    }

    /// The scalars of update number `step + 1`, shared by every range and block of it.
    private struct Coefficients {
        let b1, b2, stepSize, invSqrtC2, eps: T
        /// `1 - lr * weightDecay` (nil without weight decay).
        let shrink: T?
    }

    private func coefficients() -> Coefficients {
        let t = step + 1
        let lr = learningRate(atStep: step)
        let c1 = T(1 - pow(options.beta1, Double(t)))
        let c2 = T(1 - pow(options.beta2, Double(t)))
        return Coefficients(b1: T(options.beta1), b2: T(options.beta2), stepSize: T(lr) / c1, invSqrtC2: 1 / c2.squareRoot(),
                            eps: T(options.epsilon), shrink: options.weightDecay > 0 ? T(1 - lr * options.weightDecay) : nil)
    }

    /// The decoupled decay, then Adam, on `n` elements: elementwise, so any split of a range into
    /// pieces gives the bits of one pass.
    private static func decayAndUpdate(_ k: Coefficients, _ p: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, _ m: UnsafeMutablePointer<T>,
                             _ v: UnsafeMutablePointer<T>, _ n: Int) {
        if let shrink = k.shrink { for i in 0..<n { p[i] *= shrink } }
        T.adamUpdate(p, g, m, v, n, beta1: k.b1, beta2: k.b2, stepSize: k.stepSize, invSqrtC2: k.invSqrtC2, eps: k.eps)
    }

    /// Elements per block of a fused update (p, g, m, v and the EMA: 5 x 32 KiB, within L2).
    public static var fusedBlock: Int { 8192 }

    /// Ends a step applied with `update(params:range:grads:)`.
    public func advance() { step += 1 }

    /// Restores the optimiser state (for exact resume from a checkpoint).
    public func restore(step: Int, m source: [T], v sourceV: [T]) {
        precondition(source.count == count && sourceV.count == count)
        self.step = step
        source.withUnsafeBufferPointer { m.update(from: $0.baseAddress!, count: count) }
        sourceV.withUnsafeBufferPointer { v.update(from: $0.baseAddress!, count: count) }
    }
}

/// Exponential moving average of the parameters, `ema = d ema + (1 - d) params`, with the
/// warm-up `d_t = min(d, (1 + t) / (10 + t))` so early averages are not dominated by the
/// random initialisation.
public final class ParameterEMA<T: Scalar>: @unchecked Sendable {
    public let decay: Double
    public let count: Int
    public let values: UnsafeMutablePointer<T>
    public private(set) var updates = 0

    public init(copying params: UnsafePointer<T>, count: Int, decay: Double) {
        self.decay = decay
        self.count = count
        values = .allocate(capacity: max(count, 1))
        values.initialize(from: params, count: count)
    }

    deinit { values.deallocate() }

    public func update(from params: UnsafePointer<T>, threads: Int = 1) {
        update(from: params, range: 0..<count, threads: threads)
        advance()
    }

    /// Update number `updates + 1` on `range` only (`params` is the whole parameter buffer);
    /// `advance()` ends the step.
    public func update(from params: UnsafePointer<T>, range: Range<Int>, threads: Int = 1) {
        let t = Double(updates)
        let d = T(min(decay, (1 + t) / (10 + t)))
        let base = range.lowerBound
        let (e, p) = (values + base, params + base)
        Parallel.forRanges(range.count, threads: threads) { r in
            T.emaUpdate(e + r.lowerBound, p + r.lowerBound, decay: d, r.count)
        }
    }

    public func advance() { updates += 1 }

    /// The update of `range` on the calling thread (a block of a fused Adam + EMA pass).
    public func updateBlock(from params: UnsafePointer<T>, range: Range<Int>) {
        let t = Double(updates)
        let d = T(min(decay, (1 + t) / (10 + t)))
        T.emaUpdate(values + range.lowerBound, params + range.lowerBound, decay: d, range.count)
    }

    public func restore(updates: Int, values source: [T]) {
        precondition(source.count == count)
        self.updates = updates
        source.withUnsafeBufferPointer { values.update(from: $0.baseAddress!, count: count) }
    }

    public func snapshot() -> [T] { Array(UnsafeBufferPointer(start: values, count: count)) }
}

#if canImport(Glibc)
import Glibc
#endif
