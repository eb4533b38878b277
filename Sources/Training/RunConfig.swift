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
    /// "dsm" (SPEC O1) or "ambient" (SPEC O2).
    public var objective: String
    public var steps: Int
    public var batch: Int
    /// The global batch is cut into this many fixed shards (DESIGN, data flow); the result
    /// depends on the shard count, never on the number of processes.
    public var shards: Int
    public var seed: UInt64
    public var learningRate: Double
    public var warmupSteps: Int
    public var emaDecay: Double
    /// s_max of SPEC O2: the buffer is `b = sqrt(1 + 1/(s_max - 1))`.
    public var ambientSMax: Double
    public var model: NetworkConfig
    public var schedule: EDMSchedule
    /// Log a metrics line every this many steps.
    public var logEvery: Int

    public init(data: DataSpec, dataSigma: Double? = nil, corruption: CorruptionSpec? = nil,
                objective: String = "ambient", steps: Int = 1000, batch: Int = 256, shards: Int = 1,
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
        guard ObjectiveKind(rawValue: objective) != nil else {
            throw fail("unknown --objective '\(objective)'; choose one of: \(ObjectiveKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if objective == ObjectiveKind.ambient.rawValue && trainingSigmaN == 0 {
            throw fail("--objective ambient needs noisy data: declare its level with --data-sigma S or simulate it with --corrupt noise:S (for clean data use --objective dsm)")
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

/// The objectives the trainer knows.
public enum ObjectiveKind: String, CaseIterable, Codable, Sendable {
    case dsm, ambient

    public func make(_ config: RunConfig) -> any TrainingObjective {
        switch self {
        case .dsm: return DenoisingScoreMatching()
        case .ambient: return AmbientScoreMatching(buffer: AmbientScoreMatching.buffer(sMax: config.ambientSMax))
        }
    }
}

/// Where training data comes from.
public enum DataSpec: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Fashion-MNIST training set from the Debian package.
    case fashionMNIST
    /// A synthetic Gaussian mixture (SPEC Oracles).
    case gaussianMixture(GaussianMixtureSpec)
    /// A float32 NPY file of shape (N, d) or (N, 1, H, W).
    case npy(path: String)

    /// Parses `fashion-mnist`, `gmm[:dim=D,components=K,count=N,std=S,seed=Z]`, `npy:PATH`.
    public static func parse(_ s: String) throws -> DataSpec {
        if s == "fashion-mnist" { return .fashionMNIST }
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
        throw ConfigurationError(message: "unknown --data '\(s)'; use fashion-mnist, gmm[:dim=D,components=K,count=N], or npy:PATH")
    }

    public var description: String {
        switch self {
        case .fashionMNIST: return "fashion-mnist"
        case let .gaussianMixture(g): return "gmm:dim=\(g.dimension),components=\(g.components),count=\(g.count),std=\(g.std),seed=\(g.seed)"
        case let .npy(path): return "npy:\(path)"
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
}

/// Corruption the tool simulates on clean data.
public enum CorruptionSpec: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Gaussian noise of this standard deviation, drawn once per sample.
    case noise(Double)

    /// Parses `noise:S`.
    public static func parse(_ s: String) throws -> CorruptionSpec {
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        switch parts.first {
        case "noise":
            guard parts.count == 2, let v = Double(parts[1]) else {
                throw ConfigurationError(message: "--corrupt noise:S needs a number S, got '\(s)'")
            }
            guard v > 0, v.isFinite else { throw ConfigurationError(message: "--corrupt noise:S needs S > 0, got \(v)") }
            return .noise(v)
        default:
            throw ConfigurationError(message: "unknown corruption '\(s)'; supported: noise:S")
        }
    }

    public var description: String {
        switch self {
        case let .noise(s): return "noise:\(s)"
        }
    }
}

extension String {
    func leftPadded(to n: Int, with c: Character = "0") -> String {
        count >= n ? self : String(repeating: c, count: n - count) + self
    }
}
