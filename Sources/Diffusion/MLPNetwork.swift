import TensorCore

/// Architecture of the MLP network F (the reference model is 784 -> 1024 x 4 blocks -> 784).
public struct MLPConfig: Codable, Sendable, Equatable {
    /// Data dimension d (784 for 28x28 images).
    public var dataDimension: Int
    /// Extra input channels of size d appended to the input (mask channels of SPEC O3).
    public var conditioningChannels: Int = 0
    public var width: Int = 1024
    public var blocks: Int = 4
    /// Size of the sinusoidal embedding of c_noise (half sines, half cosines).
    public var embeddingSize: Int = 64
    /// Output size (defaults to d; 1 for a classifier head).
    public var outputDimension: Int?

    public init(dataDimension: Int, conditioningChannels: Int = 0, width: Int = 1024, blocks: Int = 4,
                embeddingSize: Int = 64, outputDimension: Int? = nil) {
        self.dataDimension = dataDimension
        self.conditioningChannels = conditioningChannels
        self.width = width
        self.blocks = blocks
        self.embeddingSize = embeddingSize
        self.outputDimension = outputDimension
    }

    public var inputDimension: Int { dataDimension * (1 + conditioningChannels) }
    public var outputSize: Int { outputDimension ?? dataDimension }

    /// Checks that every size is usable; the message says which is wrong.
    public func validate() throws {
        func bad(_ s: String) -> ConfigurationError { ConfigurationError(message: s) }
        if dataDimension < 1 { throw bad("data dimension must be positive, got \(dataDimension)") }
        if width < 1 { throw bad("network width must be positive, got \(width)") }
        if blocks < 0 { throw bad("block count must be >= 0, got \(blocks)") }
        if embeddingSize < 2 || embeddingSize % 2 != 0 { throw bad("embedding size must be even and >= 2, got \(embeddingSize)") }
        if conditioningChannels < 0 { throw bad("conditioning channels must be >= 0") }
        if let o = outputDimension, o < 1 { throw bad("output dimension must be positive, got \(o)") }
    }
}

/// The MLP network F of the denoiser `D = c_skip x + c_out F(c_in x, c_noise)`:
/// input projection plus an embedding of c_noise, residual blocks
/// `h + W2 silu(W1 silu(LayerNorm(h)))`, and an output projection of `silu(h)`.
///
/// Weights are stored (in, out) so `y = x W + b` is one row-major GEMM.
public struct MLPNetwork: Sendable {
    public let config: MLPConfig
    public let layout: ParameterLayout
    let inW: Int, inB: Int, embW: Int, embB: Int, outW: Int, outB: Int
    let blockSlots: [(norm: Int, normB: Int, w1: Int, b1: Int, w2: Int, b2: Int)]

    public init(_ config: MLPConfig) {
        self.config = config
        var l = ParameterLayout()
        let h = config.width
        inW = l.add("input.weight", shape: [config.inputDimension, h])
        inB = l.add("input.bias", shape: [h])
        embW = l.add("embedding.weight", shape: [config.embeddingSize, h])
        embB = l.add("embedding.bias", shape: [h])
        var bs: [(Int, Int, Int, Int, Int, Int)] = []
        for i in 0..<config.blocks {
            bs.append((l.add("blocks.\(i).norm.weight", shape: [h]), l.add("blocks.\(i).norm.bias", shape: [h]),
                       l.add("blocks.\(i).fc1.weight", shape: [h, h]), l.add("blocks.\(i).fc1.bias", shape: [h]),
                       l.add("blocks.\(i).fc2.weight", shape: [h, h]), l.add("blocks.\(i).fc2.bias", shape: [h])))
        }
        blockSlots = bs.map { (norm: $0.0, normB: $0.1, w1: $0.2, b1: $0.3, w2: $0.4, b2: $0.5) }
        outW = l.add("output.weight", shape: [h, config.outputSize])
        outB = l.add("output.bias", shape: [config.outputSize])
        layout = l
    }

    /// Multiply-accumulates of one forward pass per sample (for throughput reports).
    public var forwardMACsPerSample: Int {
        let h = config.width
        return config.inputDimension * h + config.embeddingSize * h + config.blocks * 2 * h * h + h * config.outputSize
    }

    /// PyTorch-style initialisation: weights and biases uniform in +-1/sqrt(fan_in), LayerNorm
    /// gain 1 and bias 0, the output projection zero (so training starts from D = c_skip x).
    public func initialize<T: Scalar>(_ store: ParameterStore<T>, seed: UInt64) {
        precondition(store.layout == layout, "parameter layout does not belong to this network")
        var rng = CounterRNG(seed: seed, purpose: .parameterInit)
        func uniform(_ slot: Int, fanIn: Int) {
            let bound = 1 / Double(fanIn).squareRoot()
            let p = store.value(slot)
            for i in 0..<layout.slots[slot].count { p[i] = T((2 * rng.uniform() - 1) * bound) }
        }
        func fill(_ slot: Int, _ v: T) { store.value(slot).update(repeating: v, count: layout.slots[slot].count) }
        let h = config.width
        uniform(inW, fanIn: config.inputDimension); uniform(inB, fanIn: config.inputDimension)
        uniform(embW, fanIn: config.embeddingSize); uniform(embB, fanIn: config.embeddingSize)
        for b in blockSlots {
            fill(b.norm, 1); fill(b.normB, 0)
            uniform(b.w1, fanIn: h); uniform(b.b1, fanIn: h)
            uniform(b.w2, fanIn: h); uniform(b.b2, fanIn: h)
        }
        fill(outW, 0); fill(outB, 0)
    }

    /// The sinusoidal embedding of each row's c_noise (`sinusoidalEmbedding`, shared with the U-Net).
    public func embedding<T: Scalar>(_ tape: Tape<T>, cNoise: UnsafePointer<T>, rows: Int) -> Var {
        sinusoidalEmbedding(tape, cNoise: cNoise, rows: rows, size: config.embeddingSize)
    }

    /// `F(input, c_noise)` for `rows` samples; `input` is (rows, inputDimension), already scaled by c_in.
    public func forward<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, input: Var, cNoise: UnsafePointer<T>) -> Var {
        output(tape, store, features: features(tape, store, input: input, cNoise: cNoise))
    }

    /// The output projection applied to `features` (what `forward` does after `features`).
    public func output<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, features: Var) -> Var {
        let h = config.width
        return tape.linear(features, tape.parameter(store, outW, rows: h, cols: config.outputSize),
                           tape.parameter(store, outB, rows: 1, cols: config.outputSize))
    }

    /// The (rows, width) activations `silu(h)` that the output projection reads: the feature
    /// space of the evaluator classifier's Frechet distance.
    public func features<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, input: Var, cNoise: UnsafePointer<T>) -> Var {
        let rows = tape.shape(input).rows
        let h = config.width
        func p(_ slot: Int, _ r: Int, _ c: Int) -> Var { tape.parameter(store, slot, rows: r, cols: c) }
        let e = embedding(tape, cNoise: cNoise, rows: rows)
        var x = tape.add(tape.linear(input, p(inW, config.inputDimension, h), p(inB, 1, h)),
                         tape.linear(e, p(embW, config.embeddingSize, h), p(embB, 1, h)))
        for b in blockSlots {
            let n = tape.silu(tape.layerNorm(x, gamma: p(b.norm, 1, h), beta: p(b.normB, 1, h)))
            let u = tape.silu(tape.linear(n, p(b.w1, h, h), p(b.b1, 1, h)))
            x = tape.add(x, tape.linear(u, p(b.w2, h, h), p(b.b2, 1, h)))
        }
        return tape.silu(x)
    }
}

import Foundation
