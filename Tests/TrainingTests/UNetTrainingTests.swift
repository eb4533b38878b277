import Datasets
import Diffusion
import Foundation
import Logging
import TensorCore
import Testing
import Training

/// The U-Net in the training loop: a short run on 8x8 "images" (a 64-dimensional Gaussian
/// mixture) lowers the ambient loss, is deterministic, and its run directory reloads.
@Suite struct UNetTrainingTests {
    func config(steps: Int) -> RunConfig {
        var spec = GaussianMixtureSpec()
        spec.dimension = 64
        spec.count = 512
        spec.std = 0.1
        return RunConfig(data: .gaussianMixture(spec), corruption: .noise(0.3), objective: .ambient, steps: steps,
                         batch: 32, shards: 2, seed: 3, learningRate: 2e-3, warmupSteps: 5,
                         model: .unet(UNetConfig(dataDimension: 64, channels: [8, 16], embeddingSize: 16)), logEvery: 5)
    }

    @Test func shortRunLowersTheLossAndReloads() throws {
        let c = config(steps: 60)
        let data = try TrainingData.load(c)
        let session = try TrainingSession(config: c, data: data)
        var losses: [Double] = []
        for _ in 0..<c.steps { losses.append(try session.step().loss) }
        #expect(losses.allSatisfy { $0.isFinite })
        let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(10).reduce(0, +) / 10
        #expect(last < 0.8 * first, "mean loss of the first 10 steps \(first), of the last 10 \(last)")

        // Same seed and config: bitwise the same parameters.
        let again = try TrainingSession(config: c, data: data)
        for _ in 0..<c.steps { try again.step() }
        #expect(again.state.store.snapshot() == session.state.store.snapshot())

        // A run directory of a U-Net reloads into the same denoiser and samples finite values.
        let dir = temporaryDirectory("unet-run")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let short = config(steps: 3)
        let trained = try Trainer(config: short, runPath: dir, logger: Logger(label: "test"), showProgress: false).run()
        let model = try TrainedModel.load(run: dir)
        #expect(model.config.model == short.model)
        #expect(model.store.snapshot() == trained.state.ema!.snapshot())
        let samples = HeunSampler(steps: 4, stop: model.trainedFloor).sample(model.denoiser, model.store, count: 5, seed: 1)
        #expect(samples.shape == [5, 64] && samples.isFinite)

        // Test denoising error: one finite entry per sigma, reproducible, the same noisy inputs
        // for every model (keyed by seed and sigma index), and the grid starts at the model's floor.
        let images = data.samples.rows(0..<16)
        let sigmas = Evaluation.testDenoisingSigmas(floor: model.trainedFloor)
        #expect(sigmas.first == model.trainedFloor && sigmas.dropFirst().allSatisfy { $0 > model.trainedFloor! })
        #expect(Evaluation.testDenoisingSigmas(floor: nil).first == 0.05)
        let errors = Evaluation.testDenoising(model, images: images, sigmas: sigmas, seed: 2)
        #expect(errors.map(\.sigma) == sigmas && errors.allSatisfy { $0.mse.isFinite && $0.mse > 0 })
        #expect(Evaluation.testDenoising(model, images: images, sigmas: sigmas, seed: 2).map(\.mse) == errors.map(\.mse))
        let noisy = GaussianCorruption.apply(images, sigma: sigmas[1], seed: 2 + 1000 + 1)
        let d = model.denoise(noisy, sigma: sigmas[1])
        let manual = zip(d.storage, images.storage).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } / Double(images.count)
        #expect(abs(manual - errors[1].mse) <= 1e-9 * manual)

        // An edited config.json that no U-Net can have is an error, not a crash.
        let configPath = dir + "/config.json"
        let text = try String(contentsOfFile: configPath, encoding: .utf8)
        let edited = text.replacingOccurrences(of: "16\n", with: "12\n").replacingOccurrences(of: ",16]", with: ",12]")
        #expect(edited != text)
        try edited.write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(throws: TrainingError.self) { try TrainedModel.load(run: dir) }
    }
}
