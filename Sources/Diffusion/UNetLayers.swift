import TensorCore

// The layers of the U-Net and its encoder classifier. Each layer registers its parameters
// in the network's one `ParameterLayout` when built, knows its initialisation and its
// forward multiply-accumulates, and is applied on a tape by `callAsFunction`.

/// PyTorch's default initialisation: uniform in +-1/sqrt(fan_in).
func initializeUniform<T: Scalar>(_ store: ParameterStore<T>, _ slot: Int, fanIn: Int, _ rng: inout CounterRNG) {
    let bound = 1 / Double(fanIn).squareRoot()
    let p = store.value(slot)
    for i in 0..<store.layout.slots[slot].count { p[i] = T((2 * rng.uniform() - 1) * bound) }
}

func fill<T: Scalar>(_ store: ParameterStore<T>, _ slot: Int, _ v: T) {
    store.value(slot).update(repeating: v, count: store.layout.slots[slot].count)
}

/// `y = x W + b`, W stored (in, out) as in `MLPNetwork`.
struct DenseLayer: Sendable {
    let weight: Int, bias: Int
    let inputs: Int, outputs: Int

    init(_ layout: inout ParameterLayout, _ name: String, inputs: Int, outputs: Int) {
        weight = layout.add("\(name).weight", shape: [inputs, outputs])
        bias = layout.add("\(name).bias", shape: [outputs])
        self.inputs = inputs
        self.outputs = outputs
    }

    var macsPerSample: Int { inputs * outputs }

    func initialize<T: Scalar>(_ store: ParameterStore<T>, _ rng: inout CounterRNG, zero: Bool = false) {
        if zero {
            fill(store, weight, 0); fill(store, bias, 0)
        } else {
            initializeUniform(store, weight, fanIn: inputs, &rng); initializeUniform(store, bias, fanIn: inputs, &rng)
        }
    }

    func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, _ x: Var) -> Var {
        tape.linear(x, tape.parameter(store, weight, rows: inputs, cols: outputs),
                    tape.parameter(store, bias, rows: 1, cols: outputs))
    }
}

/// A k x k 'same' convolution with bias, optionally gated: `conv(x) * sigmoid(conv_g(x))`.
struct ConvLayer: Sendable {
    let weight: Int, bias: Int
    let gate: (weight: Int, bias: Int)?
    let shape: ConvShape

    init(_ layout: inout ParameterLayout, _ name: String, input: ImageShape, outChannels: Int, kernel: Int, gated: Bool = false) {
        shape = ConvShape(input: input, outChannels: outChannels, kernel: kernel)
        let w = [outChannels, input.channels, kernel, kernel]
        weight = layout.add("\(name).weight", shape: w)
        bias = layout.add("\(name).bias", shape: [outChannels])
        gate = gated ? (layout.add("\(name).gate.weight", shape: w), layout.add("\(name).gate.bias", shape: [outChannels])) : nil
    }

    var output: ImageShape { shape.output }
    var macsPerSample: Int { shape.macsPerSample * (gate == nil ? 1 : 2) }
    /// The convolutions it runs: its own, and the gate's.
    var convolutions: [ConvShape] { gate == nil ? [shape] : [shape, shape] }

    /// Uniform +-1/sqrt(fan_in), or zero (output layers: training starts from D = c_skip x).
    /// A gate is never zeroed: sigmoid(0) = 1/2 would just halve the feature.
    func initialize<T: Scalar>(_ store: ParameterStore<T>, _ rng: inout CounterRNG, zero: Bool = false) {
        let fanIn = shape.patchSize
        if zero {
            fill(store, weight, 0); fill(store, bias, 0)
        } else {
            initializeUniform(store, weight, fanIn: fanIn, &rng); initializeUniform(store, bias, fanIn: fanIn, &rng)
        }
        if let gate {
            initializeUniform(store, gate.weight, fanIn: fanIn, &rng); initializeUniform(store, gate.bias, fanIn: fanIn, &rng)
        }
    }

    func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, _ x: Var) -> Var {
        let (cout, k) = (shape.outChannels, shape.patchSize)
        let w = tape.parameter(store, weight, rows: cout, cols: k), b = tape.parameter(store, bias, rows: 1, cols: cout)
        guard let gate else { return tape.conv2d(x, w, b, input: shape.input, outChannels: cout, kernel: shape.kernel) }
        return tape.gatedConv2d(x, w, b, gate: tape.parameter(store, gate.weight, rows: cout, cols: k),
                                tape.parameter(store, gate.bias, rows: 1, cols: cout),
                                input: shape.input, outChannels: cout, kernel: shape.kernel)
    }
}

/// GroupNorm with a per-channel gain and bias.
struct GroupNormLayer: Sendable {
    let gamma: Int, beta: Int
    let channels: Int, groups: Int

    init(_ layout: inout ParameterLayout, _ name: String, channels: Int, groups: Int) {
        gamma = layout.add("\(name).weight", shape: [channels])
        beta = layout.add("\(name).bias", shape: [channels])
        self.channels = channels
        self.groups = groups
    }

    func initialize<T: Scalar>(_ store: ParameterStore<T>) { fill(store, gamma, 1); fill(store, beta, 0) }

    func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, _ x: Var) -> Var {
        tape.groupNorm(x, gamma: tape.parameter(store, gamma, rows: 1, cols: channels),
                       beta: tape.parameter(store, beta, rows: 1, cols: channels), channels: channels, groups: groups)
    }
}

/// The residual block of the DDPM/ADM U-Net:
///
///     h = conv1(silu(GN1(x))) + W_e emb        (emb added per channel)
///     y = skip(x) + conv2(silu(GN2(h)))        (skip: identity, or 1x1 conv when channels change)
///
/// conv2 starts at zero (as ADM's `zero_module`), so every block starts as its skip path.
struct ResidualBlock: Sendable {
    let norm1: GroupNormLayer, conv1: ConvLayer, embedding: DenseLayer
    let norm2: GroupNormLayer, conv2: ConvLayer
    let skip: ConvLayer?

    init(_ layout: inout ParameterLayout, _ name: String, input: ImageShape, outChannels: Int,
         embeddingWidth: Int, groups: Int, gated: Bool) {
        norm1 = GroupNormLayer(&layout, "\(name).norm1", channels: input.channels, groups: groups)
        conv1 = ConvLayer(&layout, "\(name).conv1", input: input, outChannels: outChannels, kernel: 3, gated: gated)
        embedding = DenseLayer(&layout, "\(name).embedding", inputs: embeddingWidth, outputs: outChannels)
        norm2 = GroupNormLayer(&layout, "\(name).norm2", channels: outChannels, groups: groups)
        conv2 = ConvLayer(&layout, "\(name).conv2", input: input.with(channels: outChannels), outChannels: outChannels,
                          kernel: 3, gated: gated)
        skip = input.channels == outChannels ? nil
            : ConvLayer(&layout, "\(name).skip", input: input, outChannels: outChannels, kernel: 1)
    }

    var output: ImageShape { conv2.output }
    var macsPerSample: Int {
        conv1.macsPerSample + conv2.macsPerSample + embedding.macsPerSample + (skip?.macsPerSample ?? 0)
    }
    var convolutions: [ConvShape] { conv1.convolutions + conv2.convolutions + (skip?.convolutions ?? []) }

    func initialize<T: Scalar>(_ store: ParameterStore<T>, _ rng: inout CounterRNG) {
        norm1.initialize(store)
        conv1.initialize(store, &rng)
        embedding.initialize(store, &rng)
        norm2.initialize(store)
        conv2.initialize(store, &rng, zero: true)
        skip?.initialize(store, &rng)
    }

    /// `emb` is the (rows, embeddingWidth) output of the noise-embedding MLP.
    func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, _ x: Var, emb: Var) -> Var {
        let h = tape.addPerChannel(conv1(tape, store, tape.silu(norm1(tape, store, x))), embedding(tape, store, emb))
        let r = conv2(tape, store, tape.silu(norm2(tape, store, h)))
        return tape.add(skip.map { $0(tape, store, x) } ?? x, r)
    }
}

/// The noise-level embedding of every block: `silu(W2 silu(W1 sinusoidal(c_noise)))`.
struct NoiseEmbeddingMLP: Sendable {
    let size: Int
    let fc1: DenseLayer, fc2: DenseLayer

    init(_ layout: inout ParameterLayout, size: Int, width: Int) {
        self.size = size
        fc1 = DenseLayer(&layout, "embedding.fc1", inputs: size, outputs: width)
        fc2 = DenseLayer(&layout, "embedding.fc2", inputs: width, outputs: width)
    }

    var width: Int { fc2.outputs }
    var macsPerSample: Int { fc1.macsPerSample + fc2.macsPerSample }

    func initialize<T: Scalar>(_ store: ParameterStore<T>, _ rng: inout CounterRNG) {
        fc1.initialize(store, &rng)
        fc2.initialize(store, &rng)
    }

    func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, cNoise: UnsafePointer<T>, rows: Int) -> Var {
        let e = sinusoidalEmbedding(tape, cNoise: cNoise, rows: rows, size: size)
        return tape.silu(fc2(tape, store, tape.silu(fc1(tape, store, e))))
    }
}

/// The encoder half of the U-Net, shared by the denoiser and the classifier: input
/// convolution, `blocksPerLevel` residual blocks per resolution with 2x2 average pooling
/// between resolutions, and one middle block at the lowest resolution.
struct UNetEncoder: Sendable {
    let embedding: NoiseEmbeddingMLP
    let input: ConvLayer
    /// levels[l][b]: block b at resolution l (side / 2^l).
    let levels: [[ResidualBlock]]
    let middle: ResidualBlock

    init(_ layout: inout ParameterLayout, _ config: UNetConfig) {
        let width = config.resolvedEmbeddingWidth
        embedding = NoiseEmbeddingMLP(&layout, size: config.embeddingSize, width: width)
        input = ConvLayer(&layout, "input", input: config.inputShape, outChannels: config.channels[0], kernel: 3,
                          gated: config.gated)
        var shape = input.output
        var levels: [[ResidualBlock]] = []
        for (l, c) in config.channels.enumerated() {
            if l > 0 { shape = shape.halved }
            var blocks: [ResidualBlock] = []
            for b in 0..<config.blocksPerLevel {
                let block = ResidualBlock(&layout, "down.\(l).\(b)", input: shape, outChannels: c, embeddingWidth: width,
                                          groups: config.groups, gated: config.gated)
                shape = block.output
                blocks.append(block)
            }
            levels.append(blocks)
        }
        self.levels = levels
        middle = ResidualBlock(&layout, "middle", input: shape, outChannels: shape.channels, embeddingWidth: width,
                               groups: config.groups, gated: config.gated)
    }

    var output: ImageShape { middle.output }
    var macsPerSample: Int {
        embedding.macsPerSample + input.macsPerSample + levels.joined().reduce(0) { $0 + $1.macsPerSample } + middle.macsPerSample
    }
    var convolutions: [ConvShape] {
        input.convolutions + levels.joined().flatMap(\.convolutions) + middle.convolutions
    }
    /// Multiply-accumulates of the layers whose input is a constant (the data, the sinusoidal
    /// embedding): their input gradient is never computed.
    var constantInputMACsPerSample: Int { input.macsPerSample + embedding.fc1.macsPerSample }

    func initialize<T: Scalar>(_ store: ParameterStore<T>, _ rng: inout CounterRNG) {
        embedding.initialize(store, &rng)
        input.initialize(store, &rng)
        for block in levels.joined() { block.initialize(store, &rng) }
        middle.initialize(store, &rng)
    }

    /// The middle block's output, the output of every encoder block (the skip connections, in
    /// order), and the noise embedding for the decoder's blocks.
    func callAsFunction<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, input x: Var,
                                   cNoise: UnsafePointer<T>) -> (h: Var, skips: [(Var, ImageShape)], emb: Var) {
        let emb = embedding(tape, store, cNoise: cNoise, rows: tape.shape(x).rows)
        var h = input(tape, store, x)
        var shape = input.output
        var skips: [(Var, ImageShape)] = []
        for (l, blocks) in levels.enumerated() {
            if l > 0 {
                h = tape.avgPool2x2(h, input: shape)
                shape = shape.halved
            }
            for block in blocks {
                h = block(tape, store, h, emb: emb)
                shape = block.output
                skips.append((h, shape))
            }
        }
        return (middle(tape, store, h, emb: emb), skips, emb)
    }
}
