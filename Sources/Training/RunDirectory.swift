import Diffusion
import FileIO
import Foundation
import TensorCore
import Wire

/// The files of a run (documented in docs/formats.md):
///
///     config.json        resolved configuration, its hash, format version, data summary
///     metrics.jsonl      one JSON object per logged step
///     model.safetensors  EMA weights of the denoiser, with the configuration in its metadata
///                        (written last, atomically: its presence means the run completed)
public struct RunDirectory: Sendable {
    public static let formatVersion = 1
    public let path: String

    public init(path: String) { self.path = path }

    public var configPath: String { path + "/config.json" }
    public var metricsPath: String { path + "/metrics.jsonl" }
    public var modelPath: String { path + "/model.safetensors" }

    /// Creates the run directory, or accepts an existing one of the same configuration
    /// (a restarted coordinator resumes from its newest checkpoint). The same for the
    /// single-process trainer and the coordinator.
    ///
    /// With `extend`, a run of the same configuration but fewer steps (finished or not) is
    /// continued to `config.steps`: the trajectory does not depend on the step count (the
    /// learning-rate schedule is a warm-up only, and every draw is a function of seed and step),
    /// so the result is the run of `config.steps` steps, bit for bit. Its earlier final weights
    /// are kept as `model-step-N.safetensors`, and config.json records the earlier lengths.
    public func prepare(config: RunConfig, data: TrainingData, extend: Bool = false) throws -> RunStart {
        guard FileManager.default.fileExists(atPath: configPath) else {
            if extend { throw TrainingError("--extend continues an existing run, but \(path) holds none (\(configPath) is missing); leave out --extend to start it") }
            try create()
            try writeConfig(config, dataSummary: data.summary, imageShape: data.imageShape)
            return RunStart(resuming: false, checkpointHashes: [config.hash])
        }
        let record = try readConfig()
        let earlier = record.earlierLengths ?? []
        if record.hash == config.hash {
            if FileManager.default.fileExists(atPath: modelPath) {
                throw TrainingError("\(path) holds a finished run of \(config.steps) steps (model.safetensors exists); to train it further, pass a larger --steps with --extend, or choose another --out")
            }
            return RunStart(resuming: true, checkpointHashes: Set([config.hash] + earlier.map(\.hash)))
        }
        var sameLength = config
        sameLength.steps = record.config.steps
        if sameLength.hash == record.hash {
            let had = record.config.steps
            guard extend else {
                throw TrainingError("\(path) holds a run of this configuration with \(had) steps, not \(config.steps): to continue it to \(config.steps) steps add --extend; otherwise choose another --out")
            }
            guard config.steps > had else {
                throw TrainingError("--extend continues a run to more steps: \(path) has \(had), --steps is \(config.steps)")
            }
            // Keep the earlier final weights (renamed before config.json changes, so that a crash in
            // between leaves a directory that the same command extends again).
            if FileManager.default.fileExists(atPath: modelPath) {
                // Named after the step the weights were written at: a run stopped by --time-limit
                // wrote them before reaching its configured length.
                let kept = path + "/model-step-\(Self.modelStep(at: modelPath) ?? had).safetensors"
                guard !FileManager.default.fileExists(atPath: kept) else {
                    throw TrainingError("cannot keep the earlier weights of \(path): \(kept) exists already; move it away first")
                }
                do {
                    try FileManager.default.moveItem(atPath: modelPath, toPath: kept)
                } catch {
                    throw TrainingError("cannot keep the earlier weights of \(path) as \(kept): \(error.localizedDescription)")
                }
            }
            let lengths = earlier + [EarlierLength(steps: had, hash: record.hash)]
            try writeConfig(config, dataSummary: data.summary, imageShape: data.imageShape, earlierLengths: lengths)
            return RunStart(resuming: true, checkpointHashes: Set([config.hash] + lengths.map(\.hash)))
        }
        if record.config == config {
            // Same options, hashed over the JSON of an earlier version (data and corruption
            // specs were objects before they became strings): its checkpoints carry that hash.
            throw TrainingError("\(path) holds a run of this configuration written by an earlier version of ambient (config hash \(record.hash), now \(config.hash)); its checkpoints cannot be resumed by this version: finish it with the version that started it, or choose another --out")
        }
        throw TrainingError("\(path) holds a run with config hash \(record.hash), not \(config.hash): resuming with a different configuration is refused; choose another --out")
    }

    /// Creates the directory for a new run. Refuses a directory that already holds a run, so
    /// a finished run is never overwritten by accident.
    public func create() throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw TrainingError("\(path) exists and is not a directory; choose another --out") }
            let contents = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            if !contents.isEmpty {
                throw TrainingError("\(path) already exists and is not empty (\(contents.sorted().prefix(3).joined(separator: ", "))); choose another --out or remove it")
            }
        }
        do {
            try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw TrainingError("cannot create run directory \(path): \(error.localizedDescription)")
        }
    }

    /// Writes the resolved configuration (atomically).
    public func writeConfig(_ config: RunConfig, dataSummary: String, imageShape: [Int]?,
                            earlierLengths: [EarlierLength]? = nil) throws {
        let record = ConfigRecord(formatVersion: Self.formatVersion, hash: config.hash, config: config,
                                  dataSummary: dataSummary, imageShape: imageShape, earlierLengths: earlierLengths)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileBytes.writeAtomically(Array(try encoder.encode(record)) + [10], to: configPath)
    }

    public func readConfig() throws -> ConfigRecord {
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw TrainingError("\(path) is not a run directory: \(configPath) is missing")
        }
        do {
            let record = try JSONDecoder().decode(ConfigRecord.self, from: data)
            guard record.formatVersion == Self.formatVersion else {
                throw TrainingError("\(configPath): run format version \(record.formatVersion), this ambient reads version \(Self.formatVersion)")
            }
            return record
        } catch let e as TrainingError {
            throw e
        } catch {
            throw TrainingError("\(configPath) is not a valid run configuration: \(error)")
        }
    }

    /// The step a model file was written at (its `ambient.step` metadata); nil if unreadable.
    static func modelStep(at path: String) -> Int? {
        (try? Safetensors.read(path, allowNonFinite: true))?.metadata["ambient.step"].flatMap { Int($0) }
    }

    /// Writes the EMA weights as safetensors with the configuration as metadata.
    public func writeModel(_ layout: ParameterLayout, values: UnsafePointer<Float>, config: RunConfig,
                           kind: String = "denoiser", step: Int) throws {
        let tensors: [(String, Tensor<Float>)] = layout.slots.map { slot in
            (slot.name, Tensor(shape: slot.shape, storage: Array(UnsafeBufferPointer(start: values + slot.offset, count: slot.count))))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = ["ambient.kind": kind,
                        "ambient.format_version": String(Self.formatVersion),
                        "ambient.config": String(decoding: try encoder.encode(config), as: UTF8.self),
                        "ambient.config_hash": config.hash,
                        "ambient.step": String(step),
                        "ambient.weights": "ema"]
        try Safetensors.write(tensors, metadata: metadata, to: modelPath)
    }
}

/// The content of config.json.
public struct ConfigRecord: Codable, Sendable {
    public var formatVersion: Int
    public var hash: String
    public var config: RunConfig
    public var dataSummary: String
    public var imageShape: [Int]?
    /// The lengths this run had before `--extend` continued it, oldest first (absent if never
    /// extended). Their checkpoints are this run's too.
    public var earlierLengths: [EarlierLength]?
}

/// A length a run had before it was extended: its step count and the config hash it had then.
public struct EarlierLength: Codable, Sendable, Equatable {
    public var steps: Int
    public var hash: String
    public init(steps: Int, hash: String) { self.steps = steps; self.hash = hash }
}

/// What `RunDirectory.prepare` found: whether the run resumes, and the config hashes whose
/// checkpoints belong to it (its own, and those of the shorter runs it extends).
public struct RunStart: Sendable {
    public var resuming: Bool
    public var checkpointHashes: Set<String>
}

