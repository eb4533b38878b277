import Diffusion
import Foundation
import TensorCore
import Wire

/// A finished run's denoiser, loaded from its run directory (EMA weights).
public struct TrainedModel: @unchecked Sendable {
    public let record: ConfigRecord
    public let denoiser: Denoiser
    public let store: ParameterStore<Float>

    public var config: RunConfig { record.config }

    /// Loads `model.safetensors` of a run and checks it against the run's configuration.
    public static func load(run path: String) throws -> TrainedModel {
        let (record, network, store) = try loadWeights(run: path, kind: "denoiser")
        return TrainedModel(record: record, denoiser: Denoiser(network: network, schedule: record.config.schedule), store: store)
    }

    /// The lowest noise level the model was trained at: `b sigma_n` for the ambient objective
    /// (SPEC, Sampling), nil when it was trained at every level (O1, O3, O4, O6, and annotated
    /// training, where clean samples cover every level).
    public var trainedFloor: Double? { config.trainedFloor }

    /// For a model trained with SPEC O3: the keep probability `(1 - p)(1 - delta)` of the
    /// fixed-mask sampler's masks.
    public var samplingMaskKeep: Double? { config.samplingMaskKeep }

    /// `D(x, sigma)` for every row of x (N, d), in batches.
    public func denoise(_ x: Tensor<Float>, sigma: Double, batchSize: Int = 256, progress: ((Int) -> Void)? = nil) -> Tensor<Float> {
        precondition(samplingMaskKeep == nil, "a masked model needs masks: use HeunSampler.posterior with maskKeep")
        let d = denoiser.dimension
        var out = [Float](repeating: 0, count: x.count)
        let tape = Tape<Float>(recordsGradients: false)
        var start = 0
        while start < x.rows {
            let rows = min(batchSize, x.rows - start)
            let sig = [Double](repeating: sigma, count: rows)
            x.storage.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer { op in
                    sig.withUnsafeBufferPointer { sp in
                        denoiser.evaluate(tape, store, x: xp.baseAddress! + start * d, rows: rows, sigma: sp.baseAddress!,
                                          into: op.baseAddress! + start * d)
                    }
                }
            }
            start += rows
            progress?(start)
        }
        return Tensor(shape: x.shape, storage: out)
    }
}

extension RunConfig {
    /// See `TrainedModel.trainedFloor`.
    public var trainedFloor: Double? {
        guard objective == .ambient else { return nil }
        if let floor = samplingFloor { return floor }
        guard trainingSigmaN > 0 else { return nil }
        return AmbientScoreMatching.buffer(sMax: ambientSMax) * trainingSigmaN
    }

    /// See `TrainedModel.samplingMaskKeep`.
    public var samplingMaskKeep: Double? {
        guard objective == .masked else { return nil }
        return (observedFraction ?? 1) * (1 - (furtherDelta ?? FurtherCorruption.defaultDelta))
    }
}

/// A finished classifier run (SPEC O5), loaded from its run directory (EMA weights).
public struct TrainedClassifier: @unchecked Sendable {
    public let record: ConfigRecord
    public let classifier: NoiseConditionedClassifier
    public let store: ParameterStore<Float>

    public static func load(run path: String) throws -> TrainedClassifier {
        let (record, network, store) = try loadWeights(run: path, kind: "classifier")
        return TrainedClassifier(record: record, classifier: NoiseConditionedClassifier(network: network, schedule: record.config.schedule),
                                 store: store)
    }
}

/// The configuration, network and EMA weights of a finished run whose model is a `kind`
/// ("denoiser" or "classifier", the safetensors metadata "ambient.kind").
func loadWeights(run path: String, kind expected: String) throws -> (ConfigRecord, any DenoiserNetwork, ParameterStore<Float>) {
    let dir = RunDirectory(path: path)
    let record = try dir.readConfig()
    guard FileManager.default.fileExists(atPath: dir.modelPath) else {
        throw TrainingError("\(path) has no model.safetensors: the run did not finish (train it to completion, or resume it)")
    }
    let (tensors, metadata) = try Safetensors.read(dir.modelPath)
    let kind = metadata["ambient.kind"] ?? "?"
    guard kind == expected else {
        throw TrainingError("\(dir.modelPath) holds a \(kind), not a \(expected); pass the run directory of a \(expected) training run")
    }
    if let h = metadata["ambient.config_hash"], h != record.hash {
        throw TrainingError("\(dir.modelPath) was written by a run with config hash \(h), but config.json has \(record.hash): the directory mixes two runs")
    }
    do { try record.config.model.validate() } catch {
        throw TrainingError("\(dir.configPath): the network configuration cannot be built: \(error)")
    }
    let network = record.config.model.make()
    let store = ParameterStore<Float>(layout: network.layout)
    let byName = Dictionary(tensors.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
    for slot in network.layout.slots {
        guard let t = byName[slot.name] else {
            throw TrainingError("\(dir.modelPath) lacks tensor \(slot.name) of the configured network")
        }
        guard t.shape == slot.shape else {
            throw TrainingError("\(dir.modelPath): tensor \(slot.name) has shape \(t.shape), the network needs \(slot.shape)")
        }
        guard t.isFinite else { throw TrainingError("\(dir.modelPath): tensor \(slot.name) contains NaN or infinity") }
        t.storage.withUnsafeBufferPointer { store.value(network.layout.index(of: slot.name)!).update(from: $0.baseAddress!, count: slot.count) }
    }
    return (record, network, store)
}
