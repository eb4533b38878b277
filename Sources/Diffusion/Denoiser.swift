import TensorCore

/// A network F usable inside the EDM-preconditioned denoiser.
public protocol DenoiserNetwork: Sendable {
    var layout: ParameterLayout { get }
    /// d: size of one sample.
    var dataDimension: Int { get }
    /// Extra input channels of size d (masks) the network expects after the noisy input.
    var conditioningChannels: Int { get }
    /// Values F returns per sample: d for a denoiser, 1 for a classifier logit (SPEC O5).
    var outputDimension: Int { get }
    /// Multiply-accumulates of one forward pass per sample (throughput reports).
    var forwardMACsPerSample: Int { get }
    /// Multiply-accumulates of one training step per sample: the forward pass, and in the
    /// backward pass the weight gradient and input gradient of every GEMM, except the input
    /// gradient of layers fed by constants (the data, the noise embedding).
    var trainingMACsPerSample: Int { get }
    func initialize<T: Scalar>(_ store: ParameterStore<T>, seed: UInt64)
    /// `F(input, c_noise)`; `input` is (rows, d (1 + conditioningChannels)), already scaled by c_in.
    func forward<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, input: Var, cNoise: UnsafePointer<T>) -> Var
}

extension DenoiserNetwork {
    /// Forward plus two backward GEMMs per layer.
    public var trainingMACsPerSample: Int { 3 * forwardMACsPerSample }
    public var outputDimension: Int { dataDimension }
}

extension MLPNetwork: DenoiserNetwork {
    public var dataDimension: Int { config.dataDimension }
    public var conditioningChannels: Int { config.conditioningChannels }
    /// The input and embedding projections get no input gradient.
    public var trainingMACsPerSample: Int {
        3 * forwardMACsPerSample - (config.inputDimension + config.embeddingSize) * config.width
    }
    public var outputDimension: Int { config.outputSize }
}

/// `D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`: predicts x0 from x at noise level sigma.
public struct Denoiser: Sendable {
    public let network: any DenoiserNetwork
    public let schedule: EDMSchedule

    public init(network: any DenoiserNetwork, schedule: EDMSchedule = EDMSchedule()) {
        precondition(network.outputDimension == network.dataDimension, "a denoiser network returns one value per input value")
        self.network = network
        self.schedule = schedule
    }

    public var dimension: Int { network.dataDimension }

    /// D on the tape. `x` is (rows, d); `sigma` is (rows, 1); `conditioning` (rows, d c) if the
    /// network takes mask channels. Gradients flow to the parameters (and to x or sigma if they
    /// are variables).
    ///
    /// With a mask m (the first conditioning channel, 1 observed, 0 hidden; SPEC O3) the
    /// preconditioning is per pixel: observed pixels use EDM's `c_skip x + c_out F`, hidden ones,
    /// whose input carries no information (EDM's sigma -> infinity limit), `sd F`. Without this,
    /// `c_out -> 0` at low sigma would pin every hidden pixel of `D(Atil x, Atil, sigma)` to 0,
    /// where the fixed-mask sampler needs `E[x0_hidden | observed]`.
    public func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, x: Var, sigma: Var,
                                          conditioning: Var? = nil) -> Var {
        let rows = tape.shape(x).rows
        let d = dimension
        precondition(tape.shape(x).cols == d, "denoiser input has \(tape.shape(x).cols) columns, expected \(d)")
        precondition(tape.shape(sigma) == (rows, 1))
        let cSkip = tape.constant(rows: rows, cols: 1), cOut = tape.constant(rows: rows, cols: 1)
        let cIn = tape.constant(rows: rows, cols: 1), cNoise = tape.scratch(rows)
        let s = tape.value(sigma)
        for r in 0..<rows {
            let sr = Double(s[r])
            tape.value(cSkip)[r] = T(schedule.cSkip(sr))
            tape.value(cOut)[r] = T(schedule.cOut(sr))
            tape.value(cIn)[r] = T(schedule.cIn(sr))
            cNoise[r] = T(schedule.cNoise(sr))
        }
        var input = tape.scaleRows(x, cIn)
        if let conditioning { input = tape.concatColumns(input, conditioning) }
        let f = network.forward(tape, store, input: input, cNoise: cNoise)
        guard let conditioning else { return tape.add(tape.scaleRows(x, cSkip), tape.scaleRows(f, cOut)) }
        // Per-pixel output scale m c_out + (1 - m) sd, and skip m c_skip (x is 0 where m is).
        let (c, m) = (tape.shape(conditioning).cols, tape.value(conditioning))
        let outScale = tape.constant(rows: rows, cols: d), skip = tape.constant(rows: rows, cols: d)
        let sd = T(schedule.sigmaData)
        for r in 0..<rows {
            let co = tape.value(cOut)[r], cs = tape.value(cSkip)[r]
            for j in 0..<d {
                let mj = m[r * c + j]
                tape.value(outScale)[r * d + j] = mj * co + (1 - mj) * sd
                tape.value(skip)[r * d + j] = mj * cs
            }
        }
        return tape.add(tape.mul(x, skip), tape.mul(f, outScale))
    }

    /// Evaluates D without recording gradients: `out[r] = D(x[r], sigma[r])` for `rows` rows.
    /// `tape` is reset first and must have `recordsGradients == false`.
    public func evaluate<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, x: UnsafePointer<T>, rows: Int,
                                    sigma: UnsafePointer<Double>, conditioning: UnsafePointer<T>? = nil,
                                    into out: UnsafeMutablePointer<T>) {
        precondition(!tape.recordsGradients, "evaluate needs an inference tape")
        tape.reset()
        let xv = tape.constant(x, rows: rows, cols: dimension)
        let sv = tape.constant(rows: rows, cols: 1)
        for r in 0..<rows { tape.value(sv)[r] = T(sigma[r]) }
        let cv = conditioning.map { tape.constant($0, rows: rows, cols: dimension * network.conditioningChannels) }
        let d = self(tape, store, x: xv, sigma: sv, conditioning: cv)
        out.update(from: tape.value(d), count: rows * dimension)
    }
}
