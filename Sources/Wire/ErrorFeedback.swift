import TensorCore
/// Error feedback ("memory") for lossy codecs: what a lossy encoding drops at one step is added
/// to the next step's gradient instead of being lost (Seide et al., "1-bit SGD", 2014; Stich et al.,
/// "Sparsified SGD with memory", 2018).
///
/// One instance per (worker, shard stream, key range), holding a residual r (initially 0).
/// Each step t with gradient g_t:
///
///     c_t    = r_{t-1} + g_t                 (compensated gradient)
///     bytes  = codec.encode(c_t)             (what is sent)
///     sent_t = codec.decode(bytes)           (what every receiver will see, bit for bit)
///     r_t    = c_t − sent_t                  (what was not sent)
///
/// Guarantee: Σ_{s≤t} sent_s = Σ_{s≤t} g_s − r_t, exactly up to the Float32 rounding of the
/// additions r + g (the subtraction c − sent is exact for top-k, where sent equals c or 0, and
/// for bf16/fp16 rounding, whose error is representable). So the updates the coordinator
/// applies track the true gradient sum, lagging by the bounded residual; nothing is lost, only
/// delayed. With a lossless codec r stays 0. It does not promise the same training trajectory
/// as uncompressed training, nor bitwise reproducibility across different codec settings.
///
/// Non-finite input is refused (`WireError.nonFiniteValue`) before the residual changes, so one
/// bad gradient cannot poison every later step.
public struct ErrorFeedback: Sendable {
    /// The residual r: compensation carried to the next step, same layout as the gradient.
    public private(set) var residual: [Float]
    /// Decoded copy of the last message (reused).
    private var sent: [Float]

    /// Feedback state for gradients of `count` elements, residual 0.
    public init(count: Int) {
        residual = [Float](repeating: 0, count: count)
        sent = [Float](repeating: 0, count: count)
    }

    public var count: Int { residual.count }

    /// Sets the residual (from a checkpoint's residual file); `values.count` must equal `count`.
    public mutating func restore(_ values: [Float]) {
        precondition(values.count == residual.count, "residual of \(values.count) values for a state of \(residual.count)")
        residual = values
    }

    /// Drops the residual (for example after a membership change reassigned the key range).
    public mutating func reset() {
        residual.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    /// Adds the residual to `gradient`, encodes the sum with `codec` into `out`, and keeps what
    /// the encoding lost as the new residual.
    ///
    /// Throws `nonFiniteValue` if `gradient` (residual untouched) or the decoded message (the
    /// residual then holds the compensated gradient, so nothing is lost) is not finite, and
    /// `elementCountMismatch` if the gradient has another size than this state.
    public mutating func compensateAndEncode(_ gradient: UnsafeBufferPointer<Float>, codec: any GradientCodec,
                                             into out: inout [UInt8]) throws(WireError) {
        let n = residual.count
        guard gradient.count == n else { throw .elementCountMismatch(expected: n, found: UInt64(gradient.count)) }
        if let base = gradient.baseAddress, let bad = TensorCore.firstNonFinite(base, n) { throw .nonFiniteValue(index: bad) }
        residual.withUnsafeMutableBufferPointer { r in
            for i in 0..<n { r[i] += gradient[i] }
            codec.encode(UnsafeBufferPointer(r), into: &out)
        }
        let decoded: Result<Void, WireError> = out.withUnsafeBytes { bytes in
            sent.withUnsafeMutableBufferPointer { s in
                Result { () throws(WireError) in try codec.decode(bytes, into: s) }
            }
        }
        try decoded.get()
        let bad = sent.withUnsafeBufferPointer { s in s.baseAddress.flatMap { TensorCore.firstNonFinite($0, s.count) } }
        if let bad { throw .nonFiniteValue(index: bad) }
        sent.withUnsafeBufferPointer { s in
            residual.withUnsafeMutableBufferPointer { r in
                for i in 0..<n { r[i] -= s[i] }
            }
        }
    }
}
