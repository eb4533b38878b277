import TensorCore

/// The convolutional U-Net F of the denoiser `D = c_skip x + c_out F(c_in x, c_noise)`, a
/// small version of the DDPM/ADM U-Net EDM trains (Karras et al. 2022), for square images:
///
///     input (C (1 + conditioning), s, s) -> conv3x3 -> c0
///     encoder: per resolution l, `blocksPerLevel` residual blocks -> c_l, kept as skips;
///              2x2 average pooling between resolutions
///     middle:  one residual block at the lowest resolution
///     decoder: per resolution, from the lowest: residual blocks on [h | skip] (channel
///              concatenation) -> c_l; nearest 2x up-sampling between resolutions
///     output:  conv3x3(silu(GroupNorm(h))) -> C, initialised to zero
///
/// Every residual block adds a projection of the noise embedding `silu(MLP(sinusoidal(c_noise)))`
/// per channel. Mask channels (SPEC O3) enter as extra input channels; `gated` makes the 3x3
/// convolutions gated, as ambient-diffusion does for masked data. All parameters are views
/// into the one flat `ParameterStore`.
public struct UNetNetwork: DenoiserNetwork {
    public let config: UNetConfig
    public let layout: ParameterLayout
    let encoder: UNetEncoder
    /// decoder[l][b]: block b at resolution l.
    let decoder: [[ResidualBlock]]
    let outputNorm: GroupNormLayer
    let output: ConvLayer

    /// The config must pass `validate()` (a precondition; `NetworkConfig.make` is called on
    /// validated configurations).
    public init(_ config: UNetConfig) {
        do { try config.validate() } catch { preconditionFailure("invalid U-Net configuration: \(error)") }
        self.config = config
        var l = ParameterLayout()
        encoder = UNetEncoder(&l, config)
        var shape = encoder.output
        var decoder = [[ResidualBlock]](repeating: [], count: config.channels.count)
        for level in stride(from: config.channels.count - 1, through: 0, by: -1) {
            let c = config.channels[level]
            for b in 0..<config.blocksPerLevel {
                let block = ResidualBlock(&l, "up.\(level).\(b)", input: shape.with(channels: shape.channels + c), outChannels: c,
                                          embeddingWidth: config.resolvedEmbeddingWidth, groups: config.groups, gated: config.gated)
                shape = block.output
                decoder[level].append(block)
            }
            if level > 0 { shape = shape.doubled }
        }
        self.decoder = decoder
        outputNorm = GroupNormLayer(&l, "output.norm", channels: shape.channels, groups: config.groups)
        output = ConvLayer(&l, "output", input: shape, outChannels: config.imageChannels, kernel: 3)
        layout = l
    }

    public var dataDimension: Int { config.dataDimension }
    public var conditioningChannels: Int { config.conditioningChannels }

    public var forwardMACsPerSample: Int {
        encoder.macsPerSample + decoder.joined().reduce(0) { $0 + $1.macsPerSample } + output.macsPerSample
    }

    public var trainingMACsPerSample: Int { 3 * forwardMACsPerSample - encoder.constantInputMACsPerSample }

    /// Every convolution of one forward pass, in order (a gated one twice): what `bench conv`
    /// times shape by shape.
    public var convolutions: [ConvShape] {
        encoder.convolutions + decoder.reversed().joined().flatMap(\.convolutions) + output.convolutions
    }

    /// PyTorch-style uniform initialisation, GroupNorm gain 1 and bias 0, the second
    /// convolution of every residual block and the output convolution zero (training starts
    /// from D = c_skip x, as the MLP does).
    public func initialize<T: Scalar>(_ store: ParameterStore<T>, seed: UInt64) {
        precondition(store.layout == layout, "parameter layout does not belong to this network")
        var rng = CounterRNG(seed: seed, purpose: .parameterInit)
        encoder.initialize(store, &rng)
        for block in decoder.reversed().joined() { block.initialize(store, &rng) }
        outputNorm.initialize(store)
        output.initialize(store, &rng, zero: true)
    }

    /// `F(input, c_noise)`; `input` is (rows, d (1 + conditioningChannels)), already scaled by c_in.
    public func forward<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, input: Var, cNoise: UnsafePointer<T>) -> Var {
        precondition(tape.shape(input).cols == config.inputShape.count,
                     "U-Net input has \(tape.shape(input).cols) columns, expected \(config.inputShape.count) = \(config.inputShape)")
        var (h, skips, emb) = encoder(tape, store, input: input, cNoise: cNoise)
        var shape = encoder.output
        for level in stride(from: decoder.count - 1, through: 0, by: -1) {
            for block in decoder[level] {
                let (skip, _) = skips.removeLast()
                h = block(tape, store, tape.concatColumns(h, skip), emb: emb)
                shape = block.output
            }
            if level > 0 {
                h = tape.upsample2x(h, input: shape)
                shape = shape.doubled
            }
        }
        return output(tape, store, tape.silu(outputNorm(tape, store, h)))
    }
}

/// The Ambient-Omni classifier (O, appendix: the "Half-Unet"): the U-Net's encoder and middle
/// block, then `silu(GroupNorm)`, global average pooling and a linear head of
/// `outputDimension` logits (zero at initialisation).
///
/// It is time-conditioned exactly like the denoiser's F: call `forward` with the c_in-scaled
/// input and c_noise, as for an `MLPNetwork` with `outputDimension` set. Conforms to
/// `DenoiserNetwork` so code written for either network takes it unchanged.
public struct UNetEncoderClassifier: DenoiserNetwork {
    public let config: UNetConfig
    public let layout: ParameterLayout
    let encoder: UNetEncoder
    let outputNorm: GroupNormLayer
    let head: DenseLayer

    public init(_ config: UNetConfig) {
        do { try config.validate() } catch { preconditionFailure("invalid U-Net configuration: \(error)") }
        self.config = config
        var l = ParameterLayout()
        encoder = UNetEncoder(&l, config)
        let c = encoder.output.channels
        outputNorm = GroupNormLayer(&l, "output.norm", channels: c, groups: config.groups)
        head = DenseLayer(&l, "head", inputs: c, outputs: config.outputDimension ?? 1)
        layout = l
    }

    /// Logits per sample.
    public var outputs: Int { head.outputs }
    public var dataDimension: Int { config.dataDimension }
    public var conditioningChannels: Int { config.conditioningChannels }
    public var forwardMACsPerSample: Int { encoder.macsPerSample + head.macsPerSample }
    public var trainingMACsPerSample: Int { 3 * forwardMACsPerSample - encoder.constantInputMACsPerSample }

    public func initialize<T: Scalar>(_ store: ParameterStore<T>, seed: UInt64) {
        precondition(store.layout == layout, "parameter layout does not belong to this network")
        var rng = CounterRNG(seed: seed, purpose: .parameterInit)
        encoder.initialize(store, &rng)
        outputNorm.initialize(store)
        head.initialize(store, &rng, zero: true)
    }

    /// Logits (rows, outputs) of `input` (rows, d (1 + conditioningChannels)), already scaled by c_in.
    public func forward<T: Scalar>(_ tape: Tape<T>, _ store: ParameterStore<T>, input: Var, cNoise: UnsafePointer<T>) -> Var {
        precondition(tape.shape(input).cols == config.inputShape.count,
                     "classifier input has \(tape.shape(input).cols) columns, expected \(config.inputShape.count) = \(config.inputShape)")
        let (h, _, _) = encoder(tape, store, input: input, cNoise: cNoise)
        let c = encoder.output.channels
        return head(tape, store, tape.channelMean(tape.silu(outputNorm(tape, store, h)), channels: c))
    }
}
