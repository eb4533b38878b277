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
        let dir = RunDirectory(path: path)
        let record = try dir.readConfig()
        guard FileManager.default.fileExists(atPath: dir.modelPath) else {
            throw RunDirectoryError("\(path) has no model.safetensors: the run did not finish (train it to completion, or resume it)")
        }
        let (tensors, metadata) = try Safetensors.read(dir.modelPath)
        let kind = metadata["ambient.kind"] ?? "?"
        guard kind == "denoiser" else {
            throw RunDirectoryError("\(dir.modelPath) holds a \(kind), not a denoiser; pass the run directory of a denoiser training run")
        }
        if let h = metadata["ambient.config_hash"], h != record.hash {
            throw RunDirectoryError("\(dir.modelPath) was written by a run with config hash \(h), but config.json has \(record.hash): the directory mixes two runs")
        }
        do { try record.config.model.validate() } catch {
            throw RunDirectoryError("\(dir.configPath): the network configuration cannot be built: \(error)")
        }
        let network = record.config.model.make()
        let store = ParameterStore<Float>(layout: network.layout)
        let byName = Dictionary(tensors.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for slot in network.layout.slots {
            guard let t = byName[slot.name] else {
                throw RunDirectoryError("\(dir.modelPath) lacks tensor \(slot.name) of the configured network")
            }
            guard t.shape == slot.shape else {
                throw RunDirectoryError("\(dir.modelPath): tensor \(slot.name) has shape \(t.shape), the network needs \(slot.shape)")
            }
            guard t.isFinite else { throw RunDirectoryError("\(dir.modelPath): tensor \(slot.name) contains NaN or infinity") }
            t.storage.withUnsafeBufferPointer { store.value(network.layout.index(of: slot.name)!).update(from: $0.baseAddress!, count: slot.count) }
        }
        return TrainedModel(record: record, denoiser: Denoiser(network: network, schedule: record.config.schedule), store: store)
    }

    /// The lowest noise level the model was trained at: `b sigma_n` for the ambient objective
    /// (SPEC, Sampling), nil when it was trained at every level.
    public var trainedFloor: Double? {
        guard config.objective == ObjectiveKind.ambient.rawValue, config.trainingSigmaN > 0 else { return nil }
        return AmbientScoreMatching.buffer(sMax: config.ambientSMax) * config.trainingSigmaN
    }

    /// `D(x, sigma)` for every row of x (N, d), in batches.
    public func denoise(_ x: Tensor<Float>, sigma: Double, batchSize: Int = 256) -> Tensor<Float> {
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
        }
        return Tensor(shape: x.shape, storage: out)
    }
}
