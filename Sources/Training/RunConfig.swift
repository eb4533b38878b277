import Datasets
import Diffusion
import Foundation
import TensorCore

/// Everything that determines a training run. Written resolved to `config.json` in the run
/// directory; its hash identifies the run (a resume with another config is refused).
public struct RunConfig: Codable, Sendable, Equatable {
    /// Where the training data comes from (see `DataSpec`).
    public var data: DataSpec
    /// Noise level the given data *already* has (the real use case: only noisy data exists).
    public var dataSigma: Double?
    /// Corruption simulated by the tool on clean data (noise fixed per sample).
    public var corruption: CorruptionSpec?
    /// The objective (SPEC O1-O6); encoded as its name ("ambient"), so hashes and files are
    /// unchanged from when this was a string.
    public var objective: ObjectiveKind
    public var steps: Int
    public var batch: Int
    /// The global batch is cut into this many fixed shards (DESIGN, data flow); the result
    /// depends on the shard count, never on the number of processes.
    public var shards: Int
    public var seed: UInt64
    public var learningRate: Double
    /// Decoupled weight decay of Adam (AdamW); nil: none.
    public var weightDecay: Double?
    public var warmupSteps: Int
    public var emaDecay: Double
    /// s_max of SPEC O2: the buffer is `b = sqrt(1 + 1/(s_max - 1))`.
    public var ambientSMax: Double
    public var model: NetworkConfig
    public var schedule: EDMSchedule
    /// Log a metrics line every this many steps.
    public var logEvery: Int
    // Options of the later objectives; nil means the objective's default (and keeps the hash
    // of configurations that do not use them unchanged).
    /// SPEC O3: probability delta that the further mask B hides an observed pixel (default 0.1).
    public var furtherDelta: Double?
    /// SPEC O3: observed fraction (1 - p) of the training masks, measured when training starts;
    /// the fixed-mask sampler draws its masks with keep probability (1 - p)(1 - delta).
    public var observedFraction: Double?
    /// SPEC O4: weight lambda_c of the consistency term (default 1).
    public var consistencyWeight: Double?
    /// SPEC O6: the split level sigma_n (O1 below, O2 on the fixed noisy copy above).
    public var splitSigma: Double?
    /// Resolved when training starts from the data (SPEC, Sampling): the lowest level an O2
    /// model was trained at, `b min_i sigma_n,i`, when every sample is noisy; nil when some
    /// samples are clean (they are trained at every level) or the objective has no floor.
    public var samplingFloor: Double?
    /// SPEC O5 classifier: training sigmas "lognormal" (EDM, the default) or "loguniform" over
    /// [sigma_min, sigma_max] (the annotation grid's range).
    public var classifierSigma: ClassifierSigmaDistribution?
    /// SPEC O5 training: how an annotated corrupted sample is used above its sigma_min (nil:
    /// noisy-copy; encoded by name, absent when nil, so other configs keep their hash).
    public var annotatedRows: AnnotatedRows?
    /// SPEC O5 crops classifier: the classifier sees random `classifierCrop` x `classifierCrop`
    /// crops of the images instead of whole samples (nil: whole samples).
    public var classifierCrop: Int?

    public init(data: DataSpec, dataSigma: Double? = nil, corruption: CorruptionSpec? = nil,
                objective: ObjectiveKind = .ambient, steps: Int = 1000, batch: Int = 256, shards: Int = 1,
                seed: UInt64 = 0, learningRate: Double = 1e-3, warmupSteps: Int = 100, emaDecay: Double = 0.999,
                ambientSMax: Double = 4, model: NetworkConfig, schedule: EDMSchedule = EDMSchedule(), logEvery: Int = 10) {
        self.data = data
        self.dataSigma = dataSigma
        self.corruption = corruption
        self.objective = objective
        self.steps = steps
        self.batch = batch
        self.shards = shards
        self.seed = seed
        self.learningRate = learningRate
        self.warmupSteps = warmupSteps
        self.emaDecay = emaDecay
        self.ambientSMax = ambientSMax
        self.model = model
        self.schedule = schedule
        self.logEvery = logEvery
    }

    /// The noise level of the training data as the objective sees it: declared, or simulated.
    public var trainingSigmaN: Double {
        if let s = dataSigma { return s }
        if case let .noise(s)? = corruption { return s }
        return 0
    }

    /// Checks every value; the error names the option and says what would work.
    public func validate() throws {
        func fail(_ s: String) -> ConfigurationError { ConfigurationError(message: s) }
        if steps < 1 { throw fail("--steps must be >= 1, got \(steps)") }
        if batch < 1 { throw fail("--batch must be >= 1, got \(batch)") }
        if shards < 1 || shards > batch { throw fail("--shards must be in 1...batch (\(batch)), got \(shards)") }
        if !(learningRate > 0 && learningRate.isFinite) { throw fail("--lr must be a positive number, got \(learningRate)") }
        if let wd = weightDecay, !(wd >= 0 && wd * learningRate < 1) {
            throw fail("--weight-decay must be >= 0 with weight-decay x lr below 1, got \(wd)")
        }
        if warmupSteps < 0 { throw fail("--warmup must be >= 0, got \(warmupSteps)") }
        if !(emaDecay >= 0 && emaDecay < 1) { throw fail("--ema must be in [0, 1), got \(emaDecay)") }
        if !(ambientSMax > 1 && ambientSMax.isFinite) { throw fail("--s-max must be > 1, got \(ambientSMax)") }
        if let s = dataSigma, !(s > 0 && s.isFinite) {
            throw fail("--data-sigma must be a positive noise level, got \(s) (omit it for clean data)")
        }
        if dataSigma != nil && corruption != nil {
            throw fail("--data-sigma (the data is already noisy) and --corrupt (simulate noise on clean data) exclude each other")
        }
        if case let .noise(s)? = corruption, !(s > 0 && s.isFinite) {
            throw fail("--corrupt noise:S needs S > 0, got \(s)")
        }
        if logEvery < 1 { throw fail("--log-every must be >= 1") }
        let isDirectory: Bool
        if case .directory = data { isDirectory = true } else { isDirectory = false }
        let kind = objective
        if [.ambient, .consistency].contains(kind) && trainingSigmaN == 0 && !isDirectory {
            throw fail("--objective ambient needs noisy data: declare its level with --data-sigma S or simulate it with --corrupt noise:S (for clean data use --objective dsm)")
        }
        switch kind {
        case .masked where model.conditioningChannels != 1:
            throw fail("--objective masked needs a network with one mask channel (conditioning channels 1)")
        case .classifier where model.outputDimension != 1:
            throw fail("--objective classifier needs a network with one output")
        case .dsm, .ambient, .consistency, .split:
            if model.conditioningChannels != 0 || (model.outputDimension ?? model.dataDimension) != model.dataDimension {
                throw fail("--objective \(objective) trains a denoiser: the network takes no mask channels and returns d values")
            }
        default: break
        }
        if annotatedRows != nil && kind != .ambient {
            throw fail("--annotated-rows applies to --objective ambient on annotated data")
        }
        if let s = classifierCrop {
            if kind != .classifier { throw fail("--crops applies to the classifier (ambient classifier train)") }
            if s < 1 { throw fail("--crops must be >= 1, got \(s)") }
        }
        if let d = furtherDelta, !(d >= 0 && d < 1) { throw fail("--further-delta must be in [0, 1), got \(d)") }
        if let w = consistencyWeight, !(w >= 0 && w.isFinite) { throw fail("--consistency-weight must be >= 0, got \(w)") }
        if kind == .split {
            guard let s = splitSigma, s > 0, s.isFinite else { throw fail("--objective split needs --split-sigma S > 0 (the level above which the fixed noisy copy is used)") }
            if trainingSigmaN > 0 { throw fail("--objective split trains on clean data; drop --data-sigma / --corrupt noise") }
        }
        try model.validate()
    }

    /// A stable hash of the configuration (hex SHA-like FNV-1a over the canonical JSON).
    public var hash: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = (try? encoder.encode(self)) ?? Data()
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(h, radix: 16).leftPadded(to: 16)
    }
}

/// The objectives the trainer knows: dsm (O1), ambient (O2; with annotations, O5 training),
/// masked (O3), consistency (O2 + O4), split (O6), classifier (the O5 classifier).
public enum ObjectiveKind: String, CaseIterable, Codable, Sendable {
    case dsm, ambient, masked, consistency, split, classifier

    /// The names, comma-separated, for error messages and help.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// The denoiser objective (nil for the classifier, which is not a denoiser objective).
    public func make(_ config: RunConfig) -> (any TrainingObjective)? {
        let b = AmbientScoreMatching.buffer(sMax: config.ambientSMax)
        switch self {
        case .dsm: return DenoisingScoreMatching()
        case .ambient: return AmbientScoreMatching(buffer: b)
        case .masked: return FurtherCorruption(delta: config.furtherDelta ?? FurtherCorruption.defaultDelta)
        case .consistency:
            return AmbientConsistency(buffer: b, weight: config.consistencyWeight ?? AmbientConsistency.defaultWeight)
        case .split: return MemorizationSplit(sigmaN: config.splitSigma ?? 0, buffer: b)
        case .classifier: return nil
        }
    }
}

/// Where training data comes from.
public enum DataSpec: SpecStringCodable, Sendable, Equatable {
    /// Fashion-MNIST training set from the Debian package.
    case fashionMNIST
    /// A synthetic Gaussian mixture (SPEC Oracles).
    case gaussianMixture(GaussianMixtureSpec)
    /// A float32 NPY file of shape (N, d) or (N, 1, H, W).
    case npy(path: String)
    /// A dataset directory (docs/dataset-format.md): samples with masks, noise levels,
    /// annotations, labels and clean flags.
    case directory(path: String)

    /// Parses `fashion-mnist`, `gmm[:dim=D,components=K,count=N,std=S,seed=Z]`, `npy:PATH`.
    public static func parse(_ s: String) throws -> DataSpec {
        if s == "fashion-mnist" { return .fashionMNIST }
        if s.hasPrefix("dir:") { return .directory(path: String(s.dropFirst(4))) }
        if DatasetDirectory.exists(at: s) { return .directory(path: s) }
        if s.hasPrefix("npy:") {
            let path = String(s.dropFirst(4))
            if path.isEmpty { throw ConfigurationError(message: "--data npy:PATH needs a path") }
            return .npy(path: path)
        }
        if s == "gmm" || s.hasPrefix("gmm:") {
            var spec = GaussianMixtureSpec()
            let opts = s == "gmm" ? [] : s.dropFirst(4).split(separator: ",")
            for opt in opts {
                let kv = opt.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw ConfigurationError(message: "--data gmm: expected key=value, got '\(opt)'") }
                switch kv[0] {
                case "dim": spec.dimension = try parseInt(kv[1], "dim")
                case "components": spec.components = try parseInt(kv[1], "components")
                case "count": spec.count = try parseInt(kv[1], "count")
                case "std":
                    guard let v = Double(kv[1]), v > 0 else { throw ConfigurationError(message: "--data gmm: std must be > 0") }
                    spec.std = v
                case "seed": spec.seed = UInt64(try parseInt(kv[1], "seed"))
                default: throw ConfigurationError(message: "--data gmm: unknown key '\(kv[0])' (known: dim, components, count, std, seed)")
                }
            }
            if spec.dimension < 1 || spec.components < 1 || spec.count < 1 {
                throw ConfigurationError(message: "--data gmm: dim, components and count must be >= 1")
            }
            return .gaussianMixture(spec)
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: s, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ConfigurationError(message: "--data \(s) is a directory without \(DatasetDirectory.manifestName): not a dataset directory, or one whose writing was interrupted (ambient dataset make writes the manifest last); make it again with ambient dataset make --out \(s)")
        }
        throw ConfigurationError(message: "unknown --data '\(s)'; use fashion-mnist, gmm[:dim=D,components=K,count=N], npy:PATH, or a dataset directory (dir:PATH)")
    }

    // Encoded as the string `--data` takes ("fashion-mnist", "gmm:dim=8,...", "npy:PATH",
    // "dir:PATH"). Decoding also reads the synthesized form of earlier versions
    // (`{"fashionMNIST": {}}`, `{"npy": {"path": ...}}`), so older run directories still load.

    public static func decodeLegacy(from decoder: Decoder) throws -> DataSpec {
        try LegacyDataSpec(from: decoder).spec
    }

    public var description: String {
        switch self {
        case .fashionMNIST: return "fashion-mnist"
        case let .gaussianMixture(g): return "gmm:dim=\(g.dimension),components=\(g.components),count=\(g.count),std=\(g.std),seed=\(g.seed)"
        case let .npy(path): return "npy:\(path)"
        case let .directory(path): return "dir:\(path)"
        }
    }
}

/// The synthesized Codable form of `DataSpec` before it was encoded as a string.
private struct LegacyDataSpec: Decodable {
    let spec: DataSpec
    private enum Case: String, CodingKey { case fashionMNIST, gaussianMixture, npy, directory }
    private enum Payload: String, CodingKey { case value = "_0", path }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Case.self)
        guard let key = c.allKeys.first, c.allKeys.count == 1 else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "expected a data spec such as \"fashion-mnist\""))
        }
        switch key {
        case .fashionMNIST: spec = .fashionMNIST
        case .gaussianMixture:
            spec = .gaussianMixture(try c.nestedContainer(keyedBy: Payload.self, forKey: key).decode(GaussianMixtureSpec.self, forKey: .value))
        case .npy: spec = .npy(path: try c.nestedContainer(keyedBy: Payload.self, forKey: key).decode(String.self, forKey: .path))
        case .directory: spec = .directory(path: try c.nestedContainer(keyedBy: Payload.self, forKey: key).decode(String.self, forKey: .path))
        }
    }
}

func parseInt(_ s: String, _ name: String) throws -> Int {
    guard let v = Int(s) else { throw ConfigurationError(message: "\(name): '\(s)' is not an integer") }
    return v
}

/// Parameters of the synthetic Gaussian-mixture data source.
public struct GaussianMixtureSpec: Codable, Sendable, Equatable {
    public var dimension = 8
    public var components = 4
    public var count = 20_000
    public var std = 0.25
    public var seed: UInt64 = 1
    public init() {}

    /// The mixture this spec names: `GaussianMixture.standard` means and weights with `std`.
    public func mixture() throws -> GaussianMixture {
        let standard = GaussianMixture.standard(dimension: dimension, components: components, seed: seed)
        return try GaussianMixture(means: standard.means, weights: standard.weights, std: std)
    }
}

extension String {
    func leftPadded(to n: Int, with c: Character = "0") -> String {
        count >= n ? self : String(repeating: c, count: n - count) + self
    }
}
