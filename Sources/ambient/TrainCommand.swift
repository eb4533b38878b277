import ArgumentParser
import Datasets
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
            (synthetic Gaussian mixture), npy:PATH (float32 NPY of shape (N, d) or (N, C, H, W)), or a dataset
            directory written by `ambient dataset make` (DIR or dir:DIR; docs/dataset-format.md).

            Noisy data: --data-sigma S declares that the data is ALREADY noisy at level S (the real use
            case); --corrupt simulates corrupted data from clean data, fixed per sample (noise:S, mask:P, box:S, blur:S).

            Objectives: dsm (denoising score matching, SPEC O1); ambient (ambient DSM for noisy data, SPEC O2;
            on an annotated dataset directory each sample is used at its own sigma_min, SPEC O5); masked (further
            corruption for masked data, SPEC O3; masks become input channels); consistency (O2 plus the consistency
            term of SPEC O4, so the model also samples below sigma_n); split (the memorisation-reducing split of
            SPEC O6 on clean data, with --split-sigma); classifier (the noise-conditioned clean-vs-corrupted
            classifier of SPEC O5, on a dataset directory with clean flags).

            The run directory gets config.json, metrics.jsonl and model.safetensors (EMA weights).

            Examples:
              ambient train --data fashion-mnist --corrupt noise:0.5 --objective ambient --steps 2000 --out runs/fm
              ambient train --data npy:noisy.npy --data-sigma 0.3 --objective ambient --out runs/mine
              ambient train --data gmm:dim=8 --corrupt noise:0.7 --objective ambient --width 128 --blocks 2 --out runs/gmm
              ambient train --data data/fm-masked --objective masked --further-delta 0.1 --out runs/masked
              ambient train --data gmm:dim=8 --corrupt noise:0.7 --objective consistency --consistency-weight 1 --out runs/gmm-o4
              ambient train --data data/fm-300 --objective split --split-sigma 0.5 --out runs/split
              ambient train --data data/fm-blur --objective classifier --width 256 --blocks 2 --out runs/classifier
            """)

        @Option(help: "Training data: fashion-mnist, gmm[:...], or npy:PATH.")
        var data: String

        @Option(name: .customLong("data-sigma"), help: "Noise level the data already has (declares noisy data).")
        var dataSigma: Double?

        @Option(help: "Simulated corruption of clean data: noise:S.")
        var corrupt: String?

        @Option(help: "Objective: dsm, ambient, masked, consistency, split or classifier.")
        var objective: String = "ambient"

        @Option(name: .customLong("s-max"), help: "Ambient buffer: sigma > b sigma_n with b = sqrt(1 + 1/(s_max - 1)).")
        var sMax: Double = 4

        @Option(name: .customLong("further-delta"), help: "masked (O3): probability that the further mask hides an observed pixel (default 0.1; 0 = no further corruption).")
        var furtherDelta: Double?

        @Option(name: .customLong("consistency-weight"), help: "consistency (O4): weight lambda_c of the consistency term (default 1).")
        var consistencyWeight: Double?

        @Option(name: .customLong("split-sigma"), help: "split (O6): the level sigma_n above which each sample's fixed noisy copy is used.")
        var splitSigma: Double?

        @OptionGroup var training: TrainingOptions

        @OptionGroup var common: CommonOptions

        func run() throws {
            try reportingErrors {
                common.configureBLAS()
                let dataSpec = try DataSpec.parse(data)
                let corruption = try corrupt.map(CorruptionSpec.parse)
                // The data dimension is known once the data is loaded; validate the rest first.
                var model = MLPConfig(dataDimension: 1, width: training.width, blocks: training.blocks)
                if objective == ObjectiveKind.masked.rawValue { model.conditioningChannels = 1 }
                if objective == ObjectiveKind.classifier.rawValue { model.outputDimension = 1 }
                var config = RunConfig(data: dataSpec, dataSigma: dataSigma, corruption: corruption, objective: objective,
                                       steps: training.steps, batch: training.batch, shards: training.shards, seed: training.seed,
                                       learningRate: training.lr, warmupSteps: training.warmup, emaDecay: training.ema, ambientSMax: sMax,
                                       model: .mlp(model), logEvery: training.logEvery)
                config.furtherDelta = furtherDelta
                config.consistencyWeight = consistencyWeight
                config.splitSigma = splitSigma
                try config.validate()
                let trainingData = try TrainingData.load(config)
                config.model.dataDimension = trainingData.dimension
                if objective == ObjectiveKind.masked.rawValue { config.observedFraction = trainingData.observedFraction }
                if case .directory = config.data, objective == ObjectiveKind.ambient.rawValue {
                    config.samplingFloor = trainingData.samplingFloor(buffer: AmbientScoreMatching.buffer(sMax: sMax))
                }
                let trainer = Trainer(config: config, runPath: training.out, logger: common.makeLogger("ambient.train"),
                                      showProgress: !training.quiet)
                try trainer.run(data: trainingData)
            }
        }
    }
}

/// Options of every training command (`train`, `classifier train`).
struct TrainingOptions: ParsableArguments {
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

    @Option(help: "Width of the MLP.")
    var width: Int = 1024

    @Option(help: "Residual blocks of the MLP.")
    var blocks: Int = 4

    @Option(name: .customLong("log-every"), help: "Write a metrics line every N steps.")
    var logEvery: Int = 10

    @Option(help: "Run directory to create.")
    var out: String

    @Flag(help: "No progress bar.")
    var quiet = false
}
