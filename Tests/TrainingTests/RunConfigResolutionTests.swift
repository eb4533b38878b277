import Diffusion
import TensorCore
import Testing
@testable import Training

/// `RunConfig.resolved(for:_:)`: the half of the configuration that depends on the data, checked
/// without the command line (NetworkDefaultsTests checks the same through `--dry-run`).
@Suite struct RunConfigResolutionTests {
    static func images(_ n: Int = 8, side: Int = 8) -> TrainingData {
        TrainingData(samples: Tensor<Float>(zeros: [n, side * side]), sigmaN: [Double](repeating: 0.5, count: n),
                     imageShape: [1, side, side], summary: "\(n) images")
    }
    static let vectors = TrainingData(samples: Tensor<Float>(zeros: [8, 4]), sigmaN: [Double](repeating: 0.5, count: 8), summary: "vectors")

    static func config(_ objective: ObjectiveKind = .ambient) -> RunConfig {
        var c = RunConfig(data: .fashionMNIST, dataSigma: 0.5, model: .mlp(MLPConfig(dataDimension: 1)))
        c.objective = objective
        c.shards = 4
        return c
    }

    @Test func imagesGetTheUNetWithItsBatchAndRateUnlessChosen() throws {
        let c = try Self.config().resolved(for: Self.images(), .init())
        guard case let .unet(u) = c.model else { Issue.record("expected the U-Net, got \(c.model.arch)"); return }
        #expect(u.dataDimension == 64 && u.imageChannels == 1 && u.channels == UNetConfig.defaultChannels(side: 8))
        #expect(c.batch == NetworkDefaults.unetBatch && c.learningRate == NetworkDefaults.unetLearningRate && c.shards == 4)

        var chosen = RunConfig.Choices()
        chosen.batch = true
        chosen.learningRate = true
        var given = Self.config()
        given.batch = 8
        given.learningRate = 5e-4
        let kept = try given.resolved(for: Self.images(), chosen)
        #expect(kept.model.arch == "unet" && kept.batch == 8 && kept.learningRate == 5e-4)
    }

    @Test func vectorsTheClassifierAndAChosenNetworkKeepTheMLP() throws {
        let v = try Self.config().resolved(for: Self.vectors, .init())
        #expect(v.model.arch == "mlp" && v.model.dataDimension == 4 && v.batch == 256)
        let classifier = try Self.config(.classifier).resolved(for: Self.images(), .init())
        #expect(classifier.model.arch == "mlp" && classifier.model.dataDimension == 64)
        var chosen = RunConfig.Choices()
        chosen.network = true
        #expect(try Self.config().resolved(for: Self.images(), chosen).model.arch == "mlp")
        // --arch unet builds the U-Net even where the default is the MLP.
        chosen.unet = true
        chosen.unetChannels = [8, 16]
        let forced = try Self.config(.classifier).resolved(for: Self.images(), chosen)
        guard case let .unet(u) = forced.model else { Issue.record("expected the U-Net"); return }
        #expect(u.channels == [8, 16] && u.outputDimension == 1)
    }

    @Test func resolvingTwiceChangesNothing() throws {
        for (objective, data) in [(ObjectiveKind.ambient, Self.images()), (.dsm, Self.vectors), (.classifier, Self.images())] {
            let once = try Self.config(objective).resolved(for: data, .init())
            var all = RunConfig.Choices()
            all.network = true; all.batch = true; all.shards = true; all.learningRate = true
            #expect(try once.resolved(for: data, all) == once, "\(objective)")
        }
    }
}
