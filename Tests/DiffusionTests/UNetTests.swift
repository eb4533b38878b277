import Foundation
import Testing
import Diffusion
import TensorCore

/// A tiny U-Net on 8x8 images so finite differences over its parameters stay fast.
func tinyUNetConfig(channels: [Int] = [4, 8], conditioning: Int = 0, gated: Bool = false,
                    outputDimension: Int? = nil) -> UNetConfig {
    UNetConfig(dataDimension: 64, conditioningChannels: conditioning, channels: channels, groups: 2,
               embeddingSize: 4, embeddingWidth: 6, gated: gated, outputDimension: outputDimension)
}

/// The network's own initialisation plus noise, so the zero-initialised layers (output, second
/// convolution of each block, classifier head) carry gradient along every path.
func perturbedStore(_ net: any DenoiserNetwork, seed: UInt64, scale: Double = 0.2) -> ParameterStore<Double> {
    let store = ParameterStore<Double>(layout: net.layout)
    net.initialize(store, seed: seed)
    var rng = CounterRNG(seed: seed, purpose: .evaluation)
    for i in 0..<store.count { store.values[i] += scale * rng.normal() }
    return store
}

@Suite struct UNetGradientTests {
    static let tolerance = 1e-6

    /// Every parameter tensor of the U-Net through the EDM denoiser and the ambient loss
    /// (SPEC O2), two and three resolutions.
    @Test(arguments: [[4, 8], [4, 4, 8]])
    func ambientLossGradients(channels: [Int]) {
        let net = UNetNetwork(tinyUNetConfig(channels: channels))
        let store = perturbedStore(net, seed: 1)
        let denoiser = Denoiser(network: net)
        let (rows, d) = (3, 64)
        var rng = CounterRNG(seed: 2, purpose: .evaluation)
        let x = (0..<(rows * d)).map { _ in rng.normal() }
        let sigmaN = [0.5, 0.3, 0.0]
        let r = GradientCheck.run(leaves: [], store: store, maxElementsPerTensor: 3) { t, _ in
            objectiveLoss(AmbientScoreMatching(), t, denoiser, store, data: x, sigmaN: sigmaN, rows: rows, d: d)
        }
        #expect(r.checked > 3 * net.layout.slots.count - 10)
        #expect(r.maxRelativeError < Self.tolerance, "\(channels): \(r)")
    }

    /// Gated convolutions and a mask channel (SPEC O3's network input), with the gradient
    /// also taken with respect to the noisy input x. The head is linear in D (a weighted dot
    /// with a fixed random tensor): a squared head makes the loss, and with it the rounding
    /// noise of the finite differences, large next to the smallest gate gradients. Even so the
    /// noise is ~3e-10 absolute against gate components of ~2e-5, so the relative error is
    /// taken against at least 1e-3 (a wrong rule errs by the size of the gradient itself).
    @Test func gatedWithMaskChannelGradients() {
        let net = UNetNetwork(tinyUNetConfig(conditioning: 1, gated: true))
        let store = perturbedStore(net, seed: 3)
        let denoiser = Denoiser(network: net)
        var rng = CounterRNG(seed: 4, purpose: .evaluation)
        let x = GradientCheck.Leaf("x", rows: 2, cols: 64, values: (0..<128).map { _ in rng.normal() })
        let mask = (0..<128).map { _ in rng.uniform() < 0.7 ? 1.0 : 0.0 }
        let probe = (0..<128).map { _ in rng.normal() }
        let r = GradientCheck.run(leaves: [x], store: store, floor: 1e-3, maxElementsPerTensor: 3) { t, v in
            let sigma = t.column(rows: 2) { [0.4, 1.7][$0] }
            let m = mask.withUnsafeBufferPointer { t.constant($0.baseAddress!, rows: 2, cols: 64) }
            let out = denoiser(t, store, x: v[0], sigma: sigma, conditioning: m)
            let p = probe.withUnsafeBufferPointer { t.constant($0.baseAddress!, rows: 2, cols: 64) }
            return t.weightedDot(out, p, weights: t.column(rows: 2) { [1.0, 0.5][$0] })
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }

    /// The encoder classifier's logits, time-conditioned like the denoiser: parameters and input.
    @Test func classifierGradients() {
        let net = UNetEncoderClassifier(tinyUNetConfig(outputDimension: 2))
        #expect(net.outputs == 2)
        let store = perturbedStore(net, seed: 5)
        var rng = CounterRNG(seed: 6, purpose: .evaluation)
        let x = GradientCheck.Leaf("x", rows: 3, cols: 64, values: (0..<192).map { _ in rng.normal() })
        let cNoise = [-0.3, 0.1, 0.6]
        let r = GradientCheck.run(leaves: [x], store: store, maxElementsPerTensor: 4) { t, v in
            let logits = cNoise.withUnsafeBufferPointer { net.forward(t, store, input: v[0], cNoise: $0.baseAddress!) }
            #expect(t.shape(logits) == (3, 2))
            let target = t.constant(rows: 3, cols: 2)
            for i in 0..<6 { t.value(target)[i] = Double(i % 2) }
            return t.weightedSumOfSquares(t.sub(logits, target), weights: t.column(rows: 3) { _ in 1 })
        }
        #expect(r.maxRelativeError < Self.tolerance, "\(r)")
    }
}

@Suite struct UNetShapeTests {
    /// Output shapes; the zero-initialised output gives F = 0, so D = c_skip x at step 0.
    @Test func freshNetworkIsTheSkipPath() {
        let config = UNetConfig(dataDimension: 784)
        let net = UNetNetwork(config)
        let store = ParameterStore<Float>(layout: net.layout)
        net.initialize(store, seed: 1)
        let tape = Tape<Float>(recordsGradients: false)
        let x = tape.constant(rows: 2, cols: 784)
        for i in 0..<(2 * 784) { tape.value(x)[i] = Float(i % 7) - 3 }
        let f = [Float(0.1), -0.4].withUnsafeBufferPointer { net.forward(tape, store, input: x, cNoise: $0.baseAddress!) }
        #expect(tape.shape(f) == (2, 784))
        #expect((0..<(2 * 784)).allSatisfy { tape.value(f)[$0] == 0 })
        let classifier = UNetEncoderClassifier(UNetConfig(dataDimension: 784, outputDimension: 3))
        let cstore = ParameterStore<Float>(layout: classifier.layout)
        classifier.initialize(cstore, seed: 1)
        let logits = [Float(0.1), -0.4].withUnsafeBufferPointer { classifier.forward(tape, cstore, input: x, cNoise: $0.baseAddress!) }
        #expect(tape.shape(logits) == (2, 3))
    }

    /// Parameter count and multiply-accumulates of the two-resolution 28x28 U-Net (channels
    /// 32,64), counted independently of the network code (docs/unet.md quotes these numbers).
    @Test func twoResolutionSizes() {
        let net = UNetNetwork(UNetConfig(dataDimension: 784, channels: [32, 64]))
        // conv: Cout Cin 9 + Cout; GroupNorm: 2 C; dense: in out + out; embedding width 128.
        func conv(_ i: Int, _ o: Int, _ k: Int = 3) -> Int { o * i * k * k + o }
        func block(_ i: Int, _ o: Int) -> Int {
            2 * i + conv(i, o) + (128 * o + o) + 2 * o + conv(o, o) + (i == o ? 0 : conv(i, o, 1))
        }
        let params = (64 * 128 + 128) + (128 * 128 + 128) + conv(1, 32)
            + block(32, 32) + block(32, 64) + block(64, 64)       // encoder, middle
            + block(128, 64) + block(96, 32)                      // decoder
            + 2 * 32 + conv(32, 1)
        #expect(net.layout.count == params)
        func macs(_ i: Int, _ o: Int, _ px: Int) -> Int {      // a block at px pixels
            (9 * i * o + 9 * o * o + (i == o ? 0 : i * o)) * px + 128 * o
        }
        let forward = 64 * 128 + 128 * 128 + 9 * 1 * 32 * 784
            + macs(32, 32, 784) + macs(32, 64, 196) + macs(64, 64, 196) + macs(128, 64, 196) + macs(96, 32, 784)
            + 9 * 32 * 784
        #expect(net.forwardMACsPerSample == forward)
        #expect(net.trainingMACsPerSample == 3 * forward - 9 * 32 * 784 - 64 * 128)
    }

    /// The same count for the default U-Net (channels 16,32,64 at 28, 14 and 7 pixels;
    /// embedding width 4 x 16 = 64), and its list of convolutions against the MAC count.
    @Test func defaultSizes() {
        let net = UNetNetwork(UNetConfig(dataDimension: 784))
        #expect(net.config.channels == [16, 32, 64])
        func conv(_ i: Int, _ o: Int, _ k: Int = 3) -> Int { o * i * k * k + o }
        func block(_ i: Int, _ o: Int) -> Int {
            2 * i + conv(i, o) + (64 * o + o) + 2 * o + conv(o, o) + (i == o ? 0 : conv(i, o, 1))
        }
        let params = (64 * 64 + 64) + (64 * 64 + 64) + conv(1, 16)
            + block(16, 16) + block(16, 32) + block(32, 64) + block(64, 64)   // encoder, middle
            + block(128, 64) + block(96, 32) + block(48, 16)                   // decoder
            + 2 * 16 + conv(16, 1)
        #expect(net.layout.count == params)
        func macs(_ i: Int, _ o: Int, _ px: Int) -> Int {
            (9 * i * o + 9 * o * o + (i == o ? 0 : i * o)) * px + 64 * o
        }
        let forward = 64 * 64 + 64 * 64 + 9 * 1 * 16 * 784
            + macs(16, 16, 784) + macs(16, 32, 196) + macs(32, 64, 49) + macs(64, 64, 49)
            + macs(128, 64, 49) + macs(96, 32, 196) + macs(48, 16, 784)
            + 9 * 16 * 784
        #expect(net.forwardMACsPerSample == forward)
        #expect(net.trainingMACsPerSample == 3 * forward - 9 * 1 * 16 * 784 - 64 * 64)
        // Convolutions: input, 7 blocks of two 3x3 (and a 1x1 skip where channels change), output.
        let convolutions = net.convolutions
        #expect(convolutions.count == 1 + 7 * 2 + 5 + 1)
        #expect(convolutions.first == ConvShape(input: ImageShape(channels: 1, height: 28, width: 28), outChannels: 16, kernel: 3))
        #expect(convolutions.last == ConvShape(input: ImageShape(channels: 16, height: 28, width: 28), outChannels: 1, kernel: 3))
        let dense = 64 * 64 + 64 * 64 + 64 * (16 + 32 + 64 + 64 + 64 + 32 + 16)
        #expect(convolutions.reduce(0) { $0 + $1.macsPerSample } == forward - dense)
        let gated = UNetNetwork(UNetConfig(dataDimension: 784, gated: true)).convolutions
        #expect(gated.count == convolutions.count + 1 + 7 * 2)   // every 3x3 but the output one has a gate
    }

    /// The default channels follow how often the image side halves.
    @Test func defaultChannelsFollowTheSide() {
        #expect(UNetConfig.defaultChannels(side: 28) == [16, 32, 64])
        #expect(UNetConfig.defaultChannels(side: 32) == [16, 32, 64])
        #expect(UNetConfig.defaultChannels(side: 30) == [16, 32])
        #expect(UNetConfig.defaultChannels(side: 15) == [16])
        #expect(UNetConfig.defaultChannels(side: 0) == [16])
        for side in [4, 6, 8, 14, 28, 30, 64] {
            var c = UNetConfig(dataDimension: side * side)
            c.channels = UNetConfig.defaultChannels(side: side)
            #expect(throws: Never.self) { try c.validate() }
        }
    }
}

@Suite struct UNetConfigTests {
    /// NetworkConfig with a U-Net survives JSON; omitted keys take their defaults.
    @Test func jsonRoundTrip() throws {
        let configs: [NetworkConfig] = [
            .unet(UNetConfig(dataDimension: 784)),
            .unet(UNetConfig(dataDimension: 3 * 64, imageChannels: 3, conditioningChannels: 1, channels: [16, 32, 64],
                             blocksPerLevel: 2, groups: 4, embeddingSize: 32, embeddingWidth: 48, gated: true, outputDimension: 1)),
        ]
        for c in configs {
            let data = try JSONEncoder().encode(c)
            #expect(try JSONDecoder().decode(NetworkConfig.self, from: data) == c)
            #expect(String(decoding: data, as: UTF8.self).contains("\"arch\":\"unet\""))
        }
        let short = #"{"arch": "unet", "unet": {"dataDimension": 784, "channels": [16, 32, 64]}}"#
        let decoded = try JSONDecoder().decode(NetworkConfig.self, from: Data(short.utf8))
        #expect(decoded == .unet(UNetConfig(dataDimension: 784, channels: [16, 32, 64])))
        #expect(decoded.make() is UNetNetwork)
        #expect(NetworkConfig.unet(UNetConfig(dataDimension: 784, outputDimension: 1)).make() is UNetEncoderClassifier)
        let unknown = #"{"arch": "resnet"}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(NetworkConfig.self, from: Data(unknown.utf8)) }
    }

    /// Configurations that cannot work are refused with a message that says why.
    @Test(arguments: [
        (UNetConfig(dataDimension: 785), "not 1 square image"),
        (UNetConfig(dataDimension: 3, channels: [8]), "square images"),
        (UNetConfig(dataDimension: 784, channels: [32, 64, 128, 256]), "halve only 2 time"),
        (UNetConfig(dataDimension: 784, channels: [32, 60]), "multiple of the 8 GroupNorm groups"),
        (UNetConfig(dataDimension: 784, channels: []), "at least one resolution"),
        (UNetConfig(dataDimension: 784, blocksPerLevel: 0), "blocks per level"),
        (UNetConfig(dataDimension: 784, embeddingSize: 5), "embedding size"),
        (UNetConfig(dataDimension: 784, outputDimension: 0), "output dimension"),
        (UNetConfig(dataDimension: 2 * 49, imageChannels: 3), "not 3 square image"),
    ])
    func badConfigurationsAreClearErrors(config: UNetConfig, message: String) {
        do {
            try NetworkConfig.unet(config).validate()
            Issue.record("\(config) was accepted")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test func validConfigurations() throws {
        try UNetConfig(dataDimension: 784, channels: [32, 64, 128]).validate()
        try UNetConfig(dataDimension: 3 * 32 * 32, imageChannels: 3, channels: [8, 16, 32, 64, 128, 256]).validate()
        #expect(UNetConfig(dataDimension: 784).side == 28)
        #expect(UNetConfig(dataDimension: 784).inputShape == ImageShape(channels: 1, height: 28, width: 28))
        #expect(UNetConfig(dataDimension: 784, conditioningChannels: 1).inputShape.channels == 2)
    }
}
