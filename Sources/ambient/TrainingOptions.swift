import ArgumentParser
import Datasets
import Diffusion
import Foundation
import TensorCore
import Training

/// The options that define a training run, shared by `train` and `coordinator`. Each
/// overrides the `--config` file (or the built-in default) only when given.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Run configuration file, YAML or JSON (as `ambient train --dry-run` prints, or a run's config.json); options given here override it.")
    var config: String?

    @Option(help: "Training data: fashion-mnist, gmm[:dim=D,components=K,count=N,std=S,seed=Z], npy:PATH, or a dataset directory (DIR or dir:DIR).")
    var data: String?

    @Option(name: .customLong("data-sigma"), help: "Noise level the data already has (declares noisy data).")
    var dataSigma: Double?

    @Option(help: "Simulated corruption of clean data, fixed per sample: noise:S, mask:P, box:S or blur:S.")
    var corrupt: String?

    @Option(help: "Objective: dsm, ambient, masked, consistency or split (default ambient).")
    var objective: ObjectiveKind?

    @Option(help: "Training steps (default 1000).")
    var steps: Int?

    @Option(help: "Global batch size, samples per step (default 256 for the MLP, 32 for the U-Net).")
    var batch: Int?

    @Option(help: "Fixed shards per step: the unit of parallelism; the result depends on this, never on the number of workers or threads (default 4, at most the batch).")
    var shards: Int?

    @Option(help: "Seed of every random draw (default 0).")
    var seed: UInt64?

    @Option(help: "Adam learning rate (default 0.001 for the MLP, 0.002 for the U-Net).")
    var lr: Double?

    @Option(name: .customLong("weight-decay"), help: "Decoupled weight decay of Adam (AdamW): each step multiplies every parameter by 1 - lr x decay (default none).")
    var weightDecay: Double?

    @Option(help: "Linear learning-rate warm-up steps (default 100).")
    var warmup: Int?

    @Option(help: "EMA decay of the weights used for sampling (default 0.999).")
    var ema: Double?

    @Option(help: "Network: mlp or unet (default unet for square images with a denoiser objective, mlp for vectors, the classifier and --crops).")
    var arch: String?

    @Option(help: "U-Net feature channels per resolution, comma-separated (default 16,32,64: 28, 14 and 7 px for 28x28 images; fewer resolutions when the side does not halve).")
    var channels: String?

    @Option(help: "Width of the MLP (default 1024).")
    var width: Int?

    @Option(help: "Residual blocks of the MLP (default 4).")
    var blocks: Int?

    @Option(name: .customLong("s-max"), help: "Ambient buffer: sigma > b sigma_n with b = sqrt(1 + 1/(s_max - 1)) (default 4).")
    var sMax: Double?

    @Option(name: .customLong("log-every"), help: "Write a metrics line every N steps (default 10).")
    var logEvery: Int?

    @Option(name: .customLong("further-delta"), help: "masked (O3): probability that the further mask hides an observed pixel (default 0.1; 0 = no further corruption).")
    var furtherDelta: Double?

    @Option(name: .customLong("consistency-weight"), help: "consistency (O4): weight lambda_c of the consistency term (default 1).")
    var consistencyWeight: Double?

    @Option(name: .customLong("split-sigma"), help: "split (O6): the level above which each sample's fixed noisy copy is used.")
    var splitSigma: Double?

    @Option(name: .customLong("annotated-rows"), help: "How --objective ambient uses annotated data (O5): noisy-copy (SPEC O5, the paper: each corrupted sample's fixed copy w + sigma_min z, with O2 at sigma_n = sigma_min) or stored (the authors' pixel code: the sample as stored, with O1, only above b x sigma_min). Default noisy-copy.")
    var annotatedRows: AnnotatedRows?

    @Option(help: "classifier (O5 crops): train on one random S x S crop of each image instead of the whole image (MLP only).")
    var crops: Int?

    /// The resolved configuration: file (or defaults), then the options given, then the data
    /// dimension from the data itself. Returns the loaded data too (validated).
    func resolve() throws -> (RunConfig, TrainingData) {
        var config: RunConfig
        var fileKeys = Set<String>()
        if let path = self.config {
            (config, fileKeys) = try ConfigFile.loadDocument(path, dataGiven: data != nil)
        } else {
            guard let data else { throw ValidationError("--data is required (or --config FILE)") }
            config = RunConfig(data: try DataSpec.parse(data), model: .mlp(MLPConfig(dataDimension: 1)))
            config.shards = min(4, batch ?? config.batch)
        }
        for field in RunConfigField.all { try field.apply(self, &config) }
        let unetChannels = try parseArchitecture(configured: config.model.arch)
        if arch == "mlp", case .unet = config.model { config.model = .mlp(MLPConfig(dataDimension: 1)) }
        if width != nil || blocks != nil {
            guard (arch ?? config.model.arch) != "unet", case var .mlp(m) = config.model else {
                throw ConfigurationError(message: "--width/--blocks apply to --arch mlp (the U-Net takes --channels)")
            }
            if let width { m.width = width }
            if let blocks { m.blocks = blocks }
            config.model = .mlp(m)
        }
        if dataSigma != nil && corrupt != nil {
            throw ConfigurationError(message: "--data-sigma (the data is already noisy) and --corrupt (simulate noise on clean data) exclude each other")
        }
        func given(_ option: Any?, _ key: String) -> Bool { option != nil || fileKeys.contains(key) }
        return try config.loadingData(.init(network: given(arch, "model") || width != nil || blocks != nil, unet: arch == "unet",
                                            batch: given(batch, "batch"), shards: given(shards, "shards"),
                                            learningRate: given(lr, "learningRate"), unetChannels: unetChannels))
    }

    /// The U-Net's channels from --channels (nil when not given), checking --arch.
    func parseArchitecture(configured: String = "mlp") throws -> [Int]? {
        switch arch {
        case nil, "mlp"?, "unet"?: break
        default: throw ConfigurationError(message: "unknown --arch '\(arch!)'; choose mlp or unet")
        }
        guard let channels else { return nil }
        guard (arch ?? configured) == "unet" else {
            throw ConfigurationError(message: "--channels applies to --arch unet (the MLP takes --width and --blocks)")
        }
        let parts = channels.split(separator: ",", omittingEmptySubsequences: false)
        let values = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, values.count == parts.count, values.allSatisfy({ $0 > 0 }) else {
            throw ConfigurationError(message: "--channels needs positive integers separated by commas (e.g. 16,32,64), got '\(channels)'")
        }
        return values
    }
}

extension AnnotatedRows: ExpressibleByArgument {}
extension AnnotationGrid: ExpressibleByArgument {}
extension ClassifierSigmaDistribution: ExpressibleByArgument {}
extension ObjectiveKind: ExpressibleByArgument {
    /// The denoiser objectives (the classifier has its own command, `ambient classifier train`).
    public static var allValueStrings: [String] { allCases.filter { $0 != .classifier }.map(\.rawValue) }
}
