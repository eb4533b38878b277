import Diffusion
import Foundation
import TensorCore
import Wire

/// The optimiser side of training: parameters, Adam moments, EMA, step counter. Applies one
/// reduced (batch-mean) gradient per step. The coordinator and every cluster worker hold one
/// (workers without the EMA, which only the coordinator needs), and so does the
/// single-process trainer; the same code on the same inputs keeps them bitwise identical.
public final class OptimizerState: @unchecked Sendable {
    public let store: ParameterStore<Float>
    public let adam: Adam<Float>
    public let ema: ParameterEMA<Float>?
    /// Threads of the elementwise optimiser loops (the bits do not depend on it).
    public var threads: Int
    /// Number of steps applied: the next step to compute.
    public private(set) var step = 0

    /// Block hashes of the parameters, taken as this type writes them (`parameterChecksum`).
    private let checksums: ParameterChecksumCache
    /// Someone asked for `parameterChecksum` (a cluster replica does every step): from then on
    /// the optimiser hashes the blocks it writes. The single-process trainer never asks, and
    /// pays nothing.
    private var checksumsWanted = false

    /// `store`'s parameters must from now on be written through this type's methods only (or
    /// `parametersChanged()` called after), or `parameterChecksum` goes stale.
    public init(store: ParameterStore<Float>, options: Adam<Float>.Options, emaDecay: Double?, threads: Int = 1) {
        self.store = store
        self.threads = threads
        adam = Adam(count: store.count, options: options)
        ema = emaDecay.map { ParameterEMA(copying: store.values, count: store.count, decay: $0) }
        checksums = ParameterChecksumCache(count: store.count)
    }

    /// Adam update of the parameters in `range` with `gradient` (the values for the range),
    /// then the EMA update of the same range; `finishStep()` ends the step.
    public func apply(gradient: UnsafePointer<Float>, range: Range<Int>) {
        checksums.invalidate(range)
        // One pass: each block's EMA update and checksum hash follow its Adam update while it is in cache.
        let values = UnsafePointer(store.values)
        let (ema, checksums) = (ema, checksumsWanted ? checksums : nil)
        if ema == nil && checksums == nil {
            adam.update(params: store.values, range: range, grads: gradient, threads: threads)
            return
        }
        adam.update(params: store.values, range: range, grads: gradient, threads: threads) { block in
            ema?.updateBlock(from: values, range: block)
            checksums?.record(values, range: block)
        }
    }

    /// `ParameterChecksum` of the parameters; blocks the optimiser hashed as it wrote them are not
    /// read again.
    public var parameterChecksum: UInt64 {
        checksumsWanted = true
        return checksums.checksum(store.values)
    }

    /// Call after writing `store`'s parameters other than through this type.
    public func parametersChanged() { checksums.invalidateAll() }

    public func finishStep() {
        adam.advance()
        ema?.advance()
        step += 1
    }

    // MARK: Replica state (what the cluster's ReplicatedState needs; conformance in ClusterWorkloads.swift)

    public var parameterCount: Int { store.count }
    public var parameters: UnsafePointer<Float> { UnsafePointer(store.values) }
    public var version: Int { step }

    public func replicaSnapshot() -> StateSnapshot {
        let n = store.count
        return StateSnapshot(sections: [.init(name: "params", values: store.snapshot()),
                                        .init(name: "adam.m", values: Array(UnsafeBufferPointer(start: adam.m, count: n))),
                                        .init(name: "adam.v", values: Array(UnsafeBufferPointer(start: adam.v, count: n)))],
                             counters: ["step": step, "adam.step": adam.step])
    }

    // MARK: The optimiser on one range into the caller's buffers (a range owner's, RangeOwnerOptimizer)

    public var momentCount: Int { 2 }

    /// Adam update number `step + 1` of `range` written to `parameters` and `moments` (m, then v,
    /// `range.count` each); this state is unchanged. No EMA: only the coordinator keeps one, and
    /// it applies whole gradients.
    public func update(range: Range<Int>, gradient: UnsafePointer<Float>, parameters: UnsafeMutablePointer<Float>,
                       moments: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= store.count, "range \(range) outside 0..<\(store.count)")
        let n = range.count, o = range.lowerBound
        parameters.update(from: store.values + o, count: n)
        moments.update(from: adam.m + o, count: n)
        (moments + n).update(from: adam.v + o, count: n)
        adam.update(params: parameters, m: moments, v: moments + n, grads: gradient, count: n)
    }

    public func assign(range: Range<Int>, parameters: UnsafePointer<Float>, moments: UnsafePointer<Float>?) {
        precondition(range.lowerBound >= 0 && range.upperBound <= store.count, "range \(range) outside 0..<\(store.count)")
        let n = range.count, o = range.lowerBound
        checksums.invalidate(range)
        (store.values + o).update(from: parameters, count: n)
        checksums.record(store.values, range: range)
        if let moments {
            (adam.m + o).update(from: moments, count: n)
            (adam.v + o).update(from: moments + n, count: n)
        }
    }

    /// The replica state plus the EMA: everything an exact resume needs.
    public func fullSnapshot() -> StateSnapshot {
        var s = replicaSnapshot()
        if let ema {
            s.sections.append(.init(name: "ema", values: ema.snapshot()))
            s.counters["ema.updates"] = ema.updates
        }
        return s
    }

    public func restore(replica s: StateSnapshot) throws {
        let n = store.count
        guard let p = s.section("params"), let m = s.section("adam.m"), let v = s.section("adam.v"),
              p.count == n, m.count == n, v.count == n,
              let st = s.counters["step"], let ast = s.counters["adam.step"], st >= 0, ast >= 0 else {
            throw TrainingError("the state does not fit this model (\(n) parameters): expected sections params, adam.m, adam.v of that size and counters step, adam.step")
        }
        store.load(p)
        checksums.invalidateAll()
        adam.restore(step: ast, m: m, v: v)
        step = st
    }

    /// Restores a full snapshot (EMA too, when this state keeps one).
    public func restore(full s: StateSnapshot) throws {
        try restore(replica: s)
        if let ema {
            guard let e = s.section("ema"), e.count == store.count, let u = s.counters["ema.updates"] else {
                throw TrainingError("the checkpoint has no EMA of this model's size")
            }
            ema.restore(updates: u, values: e)
        }
    }
}

/// One step's outcome, for logs and metrics.
public struct StepReport: Sendable, Codable {
    public var step: Int
    public var loss: Double
    public var terms: [String: Double]
    public var gradNorm: Double
    public var learningRate: Double
    public var seconds: Double
}

/// A training failure that must stop the run (the message says what happened and what to try).
public struct TrainingError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Single-process training: computes the S shard gradients of each step, up to `threads` at
/// once (one BLAS thread each), sums them in shard order and applies the optimiser. Bitwise
/// the same computation the cluster performs with the same shard count, for any thread count.
public final class TrainingSession: @unchecked Sendable {
    public let config: RunConfig
    public let data: TrainingData
    public let network: any DenoiserNetwork
    public let state: OptimizerState
    /// One computer per compute thread (the denoiser objective's, or the classifier's, SPEC O5);
    /// computer 0 writes into the state's own store, the others share its parameters.
    public let computers: [any ShardGradientComputing]
    public var computer: any ShardGradientComputing { computers[0] }
    /// Reduced gradient when the shards take more than one round (else shard 0's buffer holds it).
    private let sum: UnsafeMutablePointer<Float>

    /// - Parameter threads: shards computed at once (default: the core count, at most the shard count).
    public init(config: RunConfig, data: TrainingData, threads: Int? = nil) throws {
        try config.validate()
        // A crops classifier (SPEC O5) sees C*S*S values of each image.
        let expected = config.classifierCrop.map { s in (data.imageShape?.first ?? 1) * s * s } ?? data.dimension
        guard config.model.dataDimension == expected else {
            throw ConfigurationError(message: "model data dimension \(config.model.dataDimension) != data dimension \(expected)")
        }
        self.config = config
        self.data = data
        let t = max(1, min(threads ?? ProcessInfo.processInfo.activeProcessorCount, config.shards))
        (network, state) = OptimizerState.initial(config, emaDecay: config.emaDecay, threads: t)
        computers = try makeShardComputers(config: config, data: data, store: state.store, count: t)
        sum = .allocate(capacity: config.shards > t ? max(state.store.count, 1) : 1)
    }

    deinit { sum.deallocate() }

    /// Computes and applies one step.
    @discardableResult
    public func step() throws -> StepReport {
        let start = DispatchTime.now()
        let s = state.step
        let store = state.store
        let n = store.count
        var loss = 0.0
        var terms: [String: Double] = [:]
        let gradient: UnsafePointer<Float>
        var results = [ShardResult?](repeating: nil, count: config.shards)
        let computers = self.computers, sum = self.sum, t = computers.count
        if config.shards == 1 {
            results[0] = computers[0].compute(step: s, shard: 0)
            gradient = UnsafePointer(store.grads)
        } else {
            // Rounds of up to t shards in parallel, their gradients added in shard order. With a
            // single round the sum builds up in shard 0's own buffer (the same bits as a copy of
            // it plus the others, one copy fewer: the reference MLP's step 1.015x, docs/benchmarks.md).
            let total = config.shards <= t ? computers[0].store.grads : sum
            for first in stride(from: 0, to: config.shards, by: t) {
                let count = min(t, config.shards - first)
                results.withUnsafeMutableBufferPointer { out in
                    Parallel.forEach(count) { i in out[first + i] = computers[i].compute(step: s, shard: first + i) }
                }
                Parallel.forRanges(n, threads: t) { r in
                    let o = r.lowerBound
                    for i in 0..<count {
                        let g = computers[i].store.grads + o
                        if first + i > 0 { Float.axpy(1, g, total + o, r.count) } else if g != total + o { (total + o).update(from: g, count: r.count) }
                    }
                }
            }
            gradient = UnsafePointer(total)
        }
        for r in results.compactMap({ $0 }) {
            loss += r.loss
            for (key, v) in r.terms { terms[key, default: 0] += v }
        }
        let norm = euclideanNorm(gradient, n, threads: t)
        guard loss.isFinite, norm.isFinite else {
            throw TrainingError("step \(s): the loss or gradient is not finite (loss \(loss), gradient norm \(norm)); " +
                                "the parameters were not updated. Try a lower --lr or check the data for outliers.")
        }
        let lr = state.adam.learningRate(atStep: state.adam.step)
        state.apply(gradient: gradient)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        return StepReport(step: s, loss: loss, terms: terms, gradNorm: norm, learningRate: lr, seconds: seconds)
    }
}

extension TrainingSession {
    /// The denoiser being trained (not for a classifier session).
    public var denoiser: Denoiser { Denoiser(network: network, schedule: config.schedule) }

    /// Starts from given parameters (e.g. a trained O2 model before adding O4): sets the
    /// parameters and the EMA, keeps the optimiser's fresh moments.
    public func load(parameters: [Float]) {
        state.store.load(parameters)
        state.parametersChanged()
        state.ema?.restore(updates: 0, values: parameters)
    }

    /// A parameter store holding the EMA weights (what sampling and evaluation use).
    public func emaStore() -> ParameterStore<Float> {
        let s = ParameterStore<Float>(layout: network.layout)
        s.values.update(from: state.ema!.values, count: s.count)
        return s
    }
}

extension OptimizerState {
    /// A checkpoint of a run of `config`: the full state, tagged with the configuration's hash
    /// (and objective) so that a resume with another configuration is refused.
    public func checkpoint(of config: RunConfig) -> StateSnapshot {
        var s = fullSnapshot()
        s.metadata = ["config_hash": config.hash, "objective": config.objective.rawValue]
        return s
    }

    /// Restores a checkpoint written by `checkpoint(of:)` for the same configuration, or for one
    /// of `alsoAccepting` (the hashes of the shorter runs an extended run continues).
    public func resume(from s: StateSnapshot, of config: RunConfig, alsoAccepting: Set<String> = []) throws {
        let hash = s.metadata["config_hash"] ?? "?"
        guard hash == config.hash || alsoAccepting.contains(hash) else {
            throw TrainingError("the checkpoint was written by a run with config hash \(hash), this run has \(config.hash): resuming with a different configuration is refused")
        }
        try restore(full: s)
    }

    /// The network of `config`, its parameters initialised from the run's seed, and a fresh
    /// optimiser: the one setup of the single-process session, the coordinator and every worker,
    /// so that all of them start from the same bits.
    public static func initial(_ config: RunConfig, emaDecay: Double?, threads: Int) -> (network: any DenoiserNetwork, state: OptimizerState) {
        let network = config.model.make()
        let store = ParameterStore<Float>(layout: network.layout)
        network.initialize(store, seed: config.seed)
        return (network, OptimizerState(store: store, options: config.adamOptions, emaDecay: emaDecay, threads: threads))
    }
}

/// `count` shard computers over one set of parameters: the first accumulates into `store`'s own
/// gradient buffer, the others share its values with gradient buffers of their own.
public func makeShardComputers(config: RunConfig, data: TrainingData, store: ParameterStore<Float>,
                               count: Int) throws -> [any ShardGradientComputing] {
    try (0..<max(1, count)).map { i in
        try makeShardComputer(config: config, data: data, store: i == 0 ? store : ParameterStore(sharingValuesOf: store))
    }
}

/// The shard gradient computer of a configuration: the denoiser objective's, or the
/// classifier's (SPEC O5). The single-process trainer and every cluster worker build theirs
/// here, which is what makes them compute the same bits.
public func makeShardComputer(config: RunConfig, data: TrainingData, store: ParameterStore<Float>) throws -> any ShardGradientComputing {
    let kind = config.objective
    if let objective = kind.make(config) {
        // Rows with a sigma ceiling (SPEC O5 crops) are a use of annotated data even when clean.
        if [.ambient, .consistency].contains(kind) && !data.sigmaN.contains(where: { $0 > 0 }) && data.sigmaCeiling == nil
            && data.sigmaFloor == nil {
            throw ConfigurationError(message: "--objective \(kind.rawValue) needs noisy data, but every sample of \(data.summary) is clean (sigma_n = 0); use --objective dsm, or annotate the data")
        }
        if kind == .masked && data.masks == nil {
            throw ConfigurationError(message: "--objective masked needs masks: train on a dataset directory with masks.npy, or --corrupt mask:P / box:S")
        }
        // SPEC O5 "Draw order": on annotated data O2 draws sigma first, then a usable row.
        let buffer = (objective as? AmbientScoreMatching)?.buffer ?? (objective as? AmbientConsistency)?.ambient.buffer
        let rowDraw = try buffer.flatMap { try UsableRowDraw.forAnnotatedData(data, buffer: $0, schedule: config.schedule, seed: config.seed) }
        return ShardGradientComputer(denoiser: Denoiser(network: config.model.make(), schedule: config.schedule), objective: objective,
                                     store: store, data: data,
                                     plan: ShardPlan(datasetSize: data.count, globalBatch: config.batch, shards: config.shards, seed: config.seed),
                                     seed: config.seed, rowDraw: rowDraw)
    }
    let classifier = NoiseConditionedClassifier(network: config.model.make(), schedule: config.schedule,
                                                logUniformTraining: config.classifierSigma == .loguniform)
    return try ClassifierGradientComputer(classifier: classifier, store: store, data: data, globalBatch: config.batch,
                                          shards: config.shards, seed: config.seed, crop: config.classifierCrop)
}
