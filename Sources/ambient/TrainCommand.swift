import ArgumentParser
import Diffusion
import Foundation
import TensorCore
import Training

extension Ambient {
    /// `ambient train`: one process, all shards in order.
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Train a denoiser and write a run directory.",
            discussion: """
            Data sources: fashion-mnist (Debian package dataset-fashion-mnist), gmm[:dim=D,components=K,count=N,std=S,seed=Z]
            (synthetic Gaussian mixture), npy:PATH (float32 NPY of shape (N, d) or (N, C, H, W)).

            Noisy data: --data-sigma S declares that the data is ALREADY noisy at level S (the real use
            case); --corrupt noise:S simulates such data from clean data (noise fixed per sample).

            Objectives: dsm (denoising score matching, SPEC O1) and ambient (ambient DSM for noisy data,
            SPEC O2; learns E[X0 | X_sigma] for sigma above b*sigma_n from noisy data only).

            Networks: --arch mlp (default; --width, --blocks) or --arch unet, a convolutional U-Net for square
            images (--channels gives the feature channels per resolution, e.g. 32,64 at 28x28 and 14x14).

            The run directory gets config.json, metrics.jsonl and model.safetensors (EMA weights).

            Examples:
              ambient train --data fashion-mnist --corrupt noise:0.5 --objective ambient --steps 2000 --out runs/fm
              ambient train --arch unet --channels 32,64 --data fashion-mnist --corrupt noise:0.5 --steps 2000 --out runs/fm-unet
              ambient train --data npy:noisy.npy --data-sigma 0.3 --objective ambient --out runs/mine
              ambient train --data gmm:dim=8 --corrupt noise:0.7 --objective ambient --width 128 --blocks 2 --out runs/gmm
            """)

        @Option(help: "Training data: fashion-mnist, gmm[:...], or npy:PATH.")
        var data: String

        @Option(name: .customLong("data-sigma"), help: "Noise level the data already has (declares noisy data).")
        var dataSigma: Double?

        @Option(help: "Simulated corruption of clean data: noise:S.")
        var corrupt: String?

        @Option(help: "Objective: dsm or ambient.")
        var objective: String = "ambient"

        @Option(help: "Training steps.")
        var steps: Int = 1000

        @Option(help: "Global batch size (samples per step).")
        var batch: Int = 256

        @Option(help: "Fixed shards per step (the result depends on this, not on the process count).")
        var shards: Int = 1

        @Option(help: "Seed of every random draw.")
        var seed: UInt64 = 0

        @Option(help: "Adam learning rate.")
        var lr: Double = 1e-3

        @Option(help: "Linear learning-rate warm-up steps.")
        var warmup: Int = 100

        @Option(help: "EMA decay of the weights used for sampling.")
        var ema: Double = 0.999

        @Option(help: "Network: mlp or unet.")
        var arch: String = "mlp"

        @Option(help: "U-Net feature channels per resolution, comma-separated (default 32,64).")
        var channels: String?

        @Option(help: "Width of the MLP.")
        var width: Int = 1024

        @Option(help: "Residual blocks of the MLP.")
        var blocks: Int = 4

        @Option(name: .customLong("s-max"), help: "Ambient buffer: sigma > b sigma_n with b = sqrt(1 + 1/(s_max - 1)).")
        var sMax: Double = 4

        @Option(name: .customLong("log-every"), help: "Write a metrics line every N steps.")
        var logEvery: Int = 10

        @Option(help: "Run directory to create.")
        var out: String

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let dataSpec = try DataSpec.parse(data)
                let corruption = try corrupt.map(CorruptionSpec.parse)
                let unetChannels = try parseArchitecture()
                // The data dimension is known once the data is loaded; validate the rest first
                // (with the MLP of dimension 1 standing in for the network).
                var config = RunConfig(data: dataSpec, dataSigma: dataSigma, corruption: corruption, objective: objective,
                                       steps: steps, batch: batch, shards: shards, seed: seed, learningRate: lr,
                                       warmupSteps: warmup, emaDecay: ema, ambientSMax: sMax,
                                       model: .mlp(MLPConfig(dataDimension: 1, width: width, blocks: blocks)), logEvery: logEvery)
                try config.validate()
                let trainingData = try TrainingData.load(config)
                if let unetChannels {
                    config.model = .unet(UNetConfig(dataDimension: trainingData.dimension,
                                                    imageChannels: trainingData.imageShape?.first ?? 1, channels: unetChannels))
                    try config.model.validate()
                } else {
                    config.model.dataDimension = trainingData.dimension
                }
                let trainer = Trainer(config: config, runPath: out, logger: common.makeLogger("ambient.train"),
                                      showProgress: !quiet)
                try trainer.run(data: trainingData)
            }
        }

        /// The U-Net's channels for `--arch unet`, nil for `--arch mlp`.
        func parseArchitecture() throws -> [Int]? {
            switch arch {
            case "mlp":
                if channels != nil { throw ConfigurationError(message: "--channels applies to --arch unet (the MLP takes --width and --blocks)") }
                return nil
            case "unet":
                guard let channels else { return UNetConfig.defaultChannels }
                let parts = channels.split(separator: ",", omittingEmptySubsequences: false)
                let values = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard !parts.isEmpty, values.count == parts.count, values.allSatisfy({ $0 > 0 }) else {
                    throw ConfigurationError(message: "--channels needs positive integers separated by commas (e.g. 32,64), got '\(channels)'")
                }
                return values
            default:
                throw ConfigurationError(message: "unknown --arch '\(arch)'; choose mlp or unet")
            }
        }
    }
}
