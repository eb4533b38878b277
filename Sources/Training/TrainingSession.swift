import Diffusion
import Foundation
import TensorCore

/// The optimiser side of training: master parameters, Adam moments, EMA, step counter.
/// Applies one reduced (batch-mean) gradient per step. The cluster coordinator owns one of
/// these; the single-process trainer too.
public final class OptimizerState: @unchecked Sendable {
    public let store: ParameterStore<Float>
    public let adam: Adam<Float>
    public let ema: ParameterEMA<Float>
    /// Number of steps applied: the next step to compute.
    public private(set) var step = 0

    public init(store: ParameterStore<Float>, options: Adam<Float>.Options, emaDecay: Double) {
        self.store = store
        adam = Adam(count: store.count, options: options)
        ema = ParameterEMA(copying: store.values, count: store.count, decay: emaDecay)
    }

    /// Adam update of the parameters with `gradient`, then the EMA update.
    public func apply(gradient: UnsafePointer<Float>) {
        adam.update(params: store.values, grads: gradient)
        ema.update(from: store.values)
        step += 1
    }

    public func restore(step: Int) { self.step = step }
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

/// Single-process training: computes the S shard gradients of each step in shard order,
/// sums them in that order, and applies the optimiser. Bitwise the same computation the
/// cluster performs with the same shard count.
public final class TrainingSession: @unchecked Sendable {
    public let config: RunConfig
    public let data: TrainingData
    public let network: any DenoiserNetwork
    public let state: OptimizerState
    /// The denoiser objective's computer, or the classifier's (SPEC O5).
    public let computer: any ShardGradientComputing
    /// Reduced gradient when there is more than one shard.
    private let sum: UnsafeMutablePointer<Float>

    public init(config: RunConfig, data: TrainingData) throws {
        try config.validate()
        guard config.model.dataDimension == data.dimension else {
            throw ConfigurationError(message: "model data dimension \(config.model.dataDimension) != data dimension \(data.dimension)")
        }
        self.config = config
        self.data = data
        network = config.model.make()
        let store = ParameterStore<Float>(layout: network.layout)
        network.initialize(store, seed: config.seed)
        state = OptimizerState(store: store, options: .init(learningRate: config.learningRate, warmupSteps: config.warmupSteps),
                               emaDecay: config.emaDecay)
        let kind = ObjectiveKind(rawValue: config.objective)!
        if let objective = kind.make(config) {
            if [.ambient, .consistency].contains(kind) && !data.sigmaN.contains(where: { $0 > 0 }) {
                throw ConfigurationError(message: "--objective \(kind.rawValue) needs noisy data, but every sample of \(data.summary) is clean (sigma_n = 0); use --objective dsm, or annotate the data")
            }
            if kind == .masked && data.masks == nil {
                throw ConfigurationError(message: "--objective masked needs masks: train on a dataset directory with masks.npy, or --corrupt mask:P / box:S")
            }
            let plan = ShardPlan(datasetSize: data.count, globalBatch: config.batch, shards: config.shards, seed: config.seed)
            computer = ShardGradientComputer(denoiser: Denoiser(network: network, schedule: config.schedule), objective: objective,
                                             store: store, data: data, plan: plan, seed: config.seed)
        } else {
            let classifier = NoiseConditionedClassifier(network: network, schedule: config.schedule,
                                                        logUniformTraining: config.classifierSigma == "loguniform")
            computer = try ClassifierGradientComputer(classifier: classifier,
                                                      store: store, data: data, globalBatch: config.batch, shards: config.shards,
                                                      seed: config.seed)
        }
        sum = .allocate(capacity: max(store.count, 1))
    }

    deinit { sum.deallocate() }

    /// Computes and applies one step.
    @discardableResult
    public func step() throws -> StepReport {
        let start = DispatchTime.now()
        let s = state.step
        let store = state.store
        var loss = 0.0
        var terms: [String: Double] = [:]
        let gradient: UnsafePointer<Float>
        if config.shards == 1 {
            let r = computer.compute(step: s, shard: 0)
            loss = r.loss
            terms = r.terms
            gradient = UnsafePointer(store.grads)
        } else {
            for k in 0..<config.shards {
                let r = computer.compute(step: s, shard: k)
                if k == 0 { sum.update(from: store.grads, count: store.count) }
                else { Float.axpy(1, store.grads, sum, store.count) }
                loss += r.loss
                for (key, v) in r.terms { terms[key, default: 0] += v }
            }
            gradient = UnsafePointer(sum)
        }
        let norm = gradientNorm(gradient, store.count)
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

/// Euclidean norm of a gradient, accumulated in Double.
func gradientNorm(_ g: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = 0.0
    var j = 0
    while j < n {
        let end = min(j + 4096, n)
        var part: Float = 0
        for i in j..<end { part += g[i] * g[i] }
        acc += Double(part)
        j = end
    }
    return acc.squareRoot()
}

extension TrainingSession {
    /// The denoiser being trained (not for a classifier session).
    public var denoiser: Denoiser { Denoiser(network: network, schedule: config.schedule) }

    /// Starts from given parameters (e.g. a trained O2 model before adding O4): sets the
    /// parameters and the EMA, keeps the optimiser's fresh moments.
    public func load(parameters: [Float]) {
        state.store.load(parameters)
        state.ema.restore(updates: 0, values: parameters)
    }

    /// A parameter store holding the EMA weights (what sampling and evaluation use).
    public func emaStore() -> ParameterStore<Float> {
        let s = ParameterStore<Float>(layout: network.layout)
        s.values.update(from: state.ema.values, count: s.count)
        return s
    }
}
