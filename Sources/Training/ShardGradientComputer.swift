import Diffusion
import TensorCore

/// Anything that turns (step, shard) into a gradient in its store's gradient buffer: the
/// denoiser objectives, the Ambient-Omni classifier, ... The single-process trainer and the
/// cluster workers drive any of them the same way, so every objective runs distributed.
public protocol ShardGradientComputing: AnyObject {
    /// Parameters (read) and gradient buffer (written) of the model being trained.
    var store: ParameterStore<Float> { get }
    /// Zeroes `store.grads` and fills it with the gradient of shard `shard` of step `step`
    /// (the shard's loss divided by the global batch). Must depend only on the parameters,
    /// the data and (seed, step, shard).
    func compute(step: Int, shard: Int) -> ShardResult
    /// Called with a parameter slot as soon as its gradient is final during the backward pass
    /// (the cluster streams finished chunks while the pass goes on).
    var onParameterGradientReady: ((Int) -> Void)? { get set }
}

/// Computes the gradient of one shard of one step into the parameter store's gradient
/// buffer. The same type runs in the single-process trainer and in every cluster worker,
/// which is what makes their results bitwise identical.
public final class ShardGradientComputer: ShardGradientComputing, @unchecked Sendable {
    public let denoiser: Denoiser
    public let objective: any TrainingObjective
    public let store: ParameterStore<Float>
    public let data: TrainingData
    public let plan: ShardPlan
    public let seed: UInt64
    /// For annotated data (SPEC O5 "Draw order"): each row's sigma is drawn first and the row
    /// among those usable at it; nil: rows from `plan`, sigmas drawn by the objective.
    public let rowDraw: UsableRowDraw?
    private let tape = Tape<Float>()
    /// Called with a parameter slot as soon as its gradient is final during the backward pass.
    public var onParameterGradientReady: ((Int) -> Void)? {
        get { tape.onParameterGradientReady }
        set { tape.onParameterGradientReady = newValue }
    }
    /// When set, the time of every tape primitive of the following steps is added to it
    /// (`bench step --profile`).
    public var profile: TapeProfile? {
        get { tape.profile }
        set { tape.profile = newValue }
    }
    /// The tape's im2col workspace limit (elements), for benchmarks.
    public var tapeWorkspaceLimit: Int {
        get { tape.convolutionWorkspaceLimit }
        set { tape.convolutionWorkspaceLimit = newValue }
    }
    /// Whether 3x3 convolutions use the direct kernel where available (false: im2col + GEMM),
    /// for benchmarks that compare the two.
    public var usesDirectConvolution: Bool {
        get { tape.usesDirectConvolution }
        set { tape.usesDirectConvolution = newValue; inferenceTape.usesDirectConvolution = newValue }
    }
    /// For the objectives' no-gradient passes (SPEC O4 sampler steps), kept across steps.
    private let inferenceTape = Tape<Float>(recordsGradients: false)
    private var rowsBuffer: [Float] = []
    private var maskBuffer: [Float] = []
    private var sigmaBuffer: [Double] = []
    private var ceilingBuffer: [Double] = []
    private var drawnSigmas: [Double] = []

    public init(denoiser: Denoiser, objective: any TrainingObjective, store: ParameterStore<Float>,
                data: TrainingData, plan: ShardPlan, seed: UInt64, rowDraw: UsableRowDraw? = nil) {
        self.rowDraw = rowDraw
        self.denoiser = denoiser
        self.objective = objective
        self.store = store
        self.data = data
        self.plan = plan
        self.seed = seed
    }

    /// Zeroes the gradient buffer and fills it with the gradient of shard `shard` of step
    /// `step` (the shard's loss divided by the global batch). Returns the shard's loss terms.
    public func compute(step: Int, shard: Int) -> ShardResult {
        let indices: [Int]
        if let rowDraw {
            (indices, drawnSigmas) = rowDraw.draw(step: step, rows: plan.rows(ofShard: shard))
        } else {
            indices = plan.indices(step: step, shard: shard)
        }
        let d = data.dimension, rows = indices.count
        if rowsBuffer.count != rows * d { rowsBuffer = [Float](repeating: 0, count: rows * d) }
        if sigmaBuffer.count != rows { sigmaBuffer = [Double](repeating: 0, count: rows) }
        data.samples.storage.withUnsafeBufferPointer { src in
            rowsBuffer.withUnsafeMutableBufferPointer { dst in
                for (r, i) in indices.enumerated() {
                    (dst.baseAddress! + r * d).update(from: src.baseAddress! + i * d, count: d)
                }
            }
        }
        for (r, i) in indices.enumerated() { sigmaBuffer[r] = data.sigmaN[i] }
        if let ceilings = data.sigmaCeiling {
            if ceilingBuffer.count != rows { ceilingBuffer = [Double](repeating: 0, count: rows) }
            for (r, i) in indices.enumerated() { ceilingBuffer[r] = ceilings[i] }
        }
        if let masks = data.masks {
            if maskBuffer.count != rows * d { maskBuffer = [Float](repeating: 0, count: rows * d) }
            masks.storage.withUnsafeBufferPointer { src in
                maskBuffer.withUnsafeMutableBufferPointer { dst in
                    for (r, i) in indices.enumerated() {
                        (dst.baseAddress! + r * d).update(from: src.baseAddress! + i * d, count: d)
                    }
                }
            }
        }

        store.zeroGrads()
        tape.reset()
        let result = rowsBuffer.withUnsafeBufferPointer { xp in
            sigmaBuffer.withUnsafeBufferPointer { sp in indices.withUnsafeBufferPointer { ip in maskBuffer.withUnsafeBufferPointer { mp in
              ceilingBuffer.withUnsafeBufferPointer { cp in drawnSigmas.withUnsafeBufferPointer { dp in
                let batch = ShardBatch(data: xp.baseAddress!, rows: rows, dimension: d, sigmaN: sp.baseAddress!,
                                       mask: data.masks == nil ? nil : mp.baseAddress!, sampleIndices: ip.baseAddress!,
                                       sigmaCeiling: data.sigmaCeiling == nil ? nil : cp.baseAddress!,
                                       sigma: rowDraw == nil ? nil : dp.baseAddress!, seed: seed, step: step, shard: shard, globalBatch: plan.globalBatch,
                                       inferenceTape: inferenceTape)
                let r = objective.loss(tape, denoiser: denoiser, store: store, batch: batch)
                tape.backward(r.loss)
                return ShardResult(loss: Double(tape.scalar(r.loss)), terms: r.terms, rows: rows)
              } }
            } } }
        }
        return result
    }
}

/// The loss of one shard (already divided by the global batch, so shard losses sum to the
/// batch loss) and its named terms.
public struct ShardResult: Sendable, Codable {
    public var loss: Double
    public var terms: [String: Double]
    public var rows: Int
}
