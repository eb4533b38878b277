import Cluster
import Datasets
import Diffusion
import Foundation
import Logging
import TensorCore
import Wire

/// Ambient-Omni annotation (SPEC O5) of a dataset directory, distributed over cluster workers.
///
/// It reuses the training machinery unchanged (membership, deadlines, reassignment,
/// duplicate dropping, non-finite checks): the job is one "step" of S shards, and the
/// replicated state is the classifier's weights followed by one slot per dataset sample.
/// A shard's "gradient" is zero on the weights and holds the sigma_min of its share of the
/// corrupted samples in their slots; summing the shards (each slot written by exactly one
/// shard, the others adding +0) gives every annotation, which the coordinator writes into the
/// dataset directory. Workers receive the classifier weights with the state, so they need the
/// dataset but not the classifier's run directory.
public struct AnnotationSpec: Codable, Sendable, Equatable {
    public var dataset: String
    /// The classifier's run configuration (architecture and schedule).
    public var classifierConfig: RunConfig
    public var classifierRun: String
    public var classifierHash: String
    public var grid: Int
    /// Where the grid's levels lie (nil in specs written before it existed: log-spaced).
    public var gridDistribution: AnnotationGrid?
    public var draws: Int
    public var span: Double
    public var eps: Double
    public var seed: UInt64
    public var shards: Int
    /// Raise every annotation below this level to it (nil: none). Not the authors' method: a prior
    /// that no corrupted sample is trusted below a level known to be sound for its corruption
    /// (e.g. the paper's fixed annotation), with the classifier's levels above it kept.
    public var floor: Double?

    public init(dataset: String, classifierConfig: RunConfig, classifierRun: String, classifierHash: String,
                grid: Int, gridDistribution: AnnotationGrid, draws: Int, span: Double, eps: Double, seed: UInt64, shards: Int) {
        self.dataset = dataset
        self.classifierConfig = classifierConfig
        self.classifierRun = classifierRun
        self.classifierHash = classifierHash
        self.grid = grid
        self.gridDistribution = gridDistribution
        self.draws = draws
        self.span = span
        self.eps = eps
        self.seed = seed
        self.shards = shards
    }

    /// The grid's distribution; specs written before it was recorded used log-spaced levels.
    var gridLevels: AnnotationGrid { gridDistribution ?? .loguniform }

    func annotator(sigmaMax: Double) -> Annotator {
        Annotator(grid: gridLevels.levels(count: grid, schedule: classifierConfig.schedule, sigmaMax: sigmaMax),
                  draws: draws, span: span,
                  tau: 0.5 - eps, sigmaMax: sigmaMax)
    }

    /// The note recorded in the dataset manifest.
    public var note: String {
        "classifier \(classifierRun) (config hash \(classifierHash)), grid \(grid) \(gridLevels.description), \(draws) draws, EMA span \(span), tau \(0.5 - eps), seed \(seed), \(shards) shards"
            + (floor.map { ", floored at \($0)" } ?? "")
    }

    /// The annotation written for a classifier's level `sigma`: raised to the floor, if any.
    public func floored(_ sigma: Double) -> Double {
        guard let floor else { return sigma }
        return max(sigma, floor)
    }
}

/// The state every replica holds: classifier weights, then one annotation slot per sample.
public final class AnnotationState: ReplicatedState, @unchecked Sendable {
    let weights: Int
    let samples: Int
    /// Classifier weights, then one annotation per sample, at a stable address (`parameters`).
    let values: FlatBuffer<Float>
    var steps = 0

    init(weights: [Float], samples: Int) {
        self.weights = weights.count
        self.samples = samples
        values = FlatBuffer(copying: weights + [Float](repeating: 0, count: samples))
    }

    var count: Int { weights + samples }

    func add(_ g: UnsafePointer<Float>, range: Range<Int>) {
        Float.axpy(1, g, values.pointer + range.lowerBound, range.count)
    }

    func snapshot() -> StateSnapshot {
        StateSnapshot(sections: [.init(name: "state", values: values.array)], counters: ["step": steps])
    }

    func restore(_ s: StateSnapshot) throws {
        guard let v = s.section("state"), v.count == count, let st = s.counters["step"] else {
            throw TrainingError("the annotation state does not fit this job")
        }
        values.load(v)
        steps = st
    }

    // ReplicatedState: the classifier's weights and the annotations, summed over shards.
    public var parameterCount: Int { count }
    public var parameters: UnsafePointer<Float> { UnsafePointer(values.pointer) }
    public var version: Int { steps }
    public func apply(gradient: UnsafePointer<Float>, range: Range<Int>) { add(gradient, range: range) }
    public func finishStep() { steps += 1 }
    public func replicaSnapshot() -> StateSnapshot { snapshot() }
    public func restore(replica: StateSnapshot) throws { try restore(replica) }
}

/// The shard of the corrupted samples each of S shards annotates: a contiguous share.
func annotationShare(_ corrupted: [Int], shard k: Int, of s: Int) -> ArraySlice<Int> {
    corrupted[(corrupted.count * k / s)..<(corrupted.count * (k + 1) / s)]
}

/// The coordinator's side of an annotation job.
public final class AnnotationCoordinatorWorkload: CoordinatorWorkload, ForwardsReplicatedState, @unchecked Sendable {
    public let spec: AnnotationSpec
    let state: AnnotationState
    let directory: DatasetDirectory
    let sigmaMax: Double
    let corrupted: [Int]
    public let datasetHash: String
    let progress: ProgressReporter?
    public private(set) var annotations: [Double] = []

    public init(spec: AnnotationSpec, showProgress: Bool) throws {
        self.spec = spec
        directory = DatasetDirectory(path: spec.dataset)
        let contents = try directory.read()
        let trained = try TrainedClassifier.load(run: spec.classifierRun)
        guard trained.classifier.dimension == contents.samples.rowSize else {
            throw TrainingError("classifier \(spec.classifierRun) takes samples of \(trained.classifier.dimension) values, \(spec.dataset) has \(contents.samples.rowSize)")
        }
        sigmaMax = contents.manifest.sigmaMax
        let clean = contents.clean ?? [Bool](repeating: false, count: contents.count)
        corrupted = (0..<contents.count).filter { !clean[$0] }
        state = AnnotationState(weights: trained.store.snapshot(), samples: contents.count)
        datasetHash = AnnotationWorkerWorkload.hash(contents)
        progress = showProgress ? ProgressReporter(label: "annotate", total: 1, unit: "job") : nil
    }

    public var totalSteps: Int { 1 }
    public var shardCount: Int { spec.shards }
    public var workloadSpec: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(WorkloadSpec(annotation: spec))) ?? Data())
    }
    public var chunkRanges: [Range<Int>] {
        // The weights in one chunk, the annotations in another.
        [0..<state.weights, state.weights..<state.count].filter { !$0.isEmpty }
    }
    public var replica: AnnotationState { state }
    public func checkpointSnapshot() -> StateSnapshot { state.snapshot() }
    public func restore(checkpoint: StateSnapshot) throws { try state.restore(checkpoint) }
    public func stepCompleted(_ summary: StepSummary) throws { progress?.update(1) }

    public func finish() throws {
        var result = [Double](repeating: 0, count: state.samples)
        for i in corrupted { result[i] = spec.floored(Double(state.values[state.weights + i])) }
        annotations = result
        try directory.writeAnnotations(result, note: spec.note)
    }
}

/// A worker's side of an annotation job.
public final class AnnotationWorkerWorkload: WorkerWorkload, ForwardsReplicatedState, @unchecked Sendable {
    let spec: AnnotationSpec
    let state: AnnotationState
    let contents: DatasetDirectory.Contents
    let corrupted: [Int]
    let classifier: NoiseConditionedClassifier
    let classifierStore: ParameterStore<Float>
    /// One result buffer per compute slot.
    let buffers: [FlatBuffer<Float>]
    public let datasetHash: String

    public init(spec: AnnotationSpec, threads: Int = 1) throws {
        self.spec = spec
        contents = try DatasetDirectory(path: spec.dataset).read()
        let network = spec.classifierConfig.model.make()
        classifier = NoiseConditionedClassifier(network: network, schedule: spec.classifierConfig.schedule)
        classifierStore = ParameterStore<Float>(layout: network.layout)
        let clean = contents.clean ?? [Bool](repeating: false, count: contents.count)
        corrupted = (0..<contents.count).filter { !clean[$0] }
        state = AnnotationState(weights: [Float](repeating: 0, count: network.layout.count), samples: contents.count)
        let size = state.count
        buffers = (0..<max(1, threads)).map { _ in FlatBuffer(count: size) }
        datasetHash = Self.hash(contents)
    }

    /// XXH64 of the dataset's samples and clean flags.
    static func hash(_ c: DatasetDirectory.Contents) -> String {
        var h = XXH64()
        c.samples.storage.withUnsafeBytes { h.update($0) }
        let flags = (c.clean ?? []).map { UInt8($0 ? 1 : 0) }
        flags.withUnsafeBytes { h.update($0) }
        return String(h.finalize(), radix: 16)
    }

    public var replica: AnnotationState { state }
    public func restore(replica: StateSnapshot) throws {
        try state.restore(replica)
        classifierStore.values.update(from: state.values.pointer, count: classifierStore.count)
    }
    public var parallelism: Int { buffers.count }
    public func gradientBuffer(slot: Int) -> UnsafeBufferPointer<Float> { UnsafeBufferPointer(buffers[slot].buffer) }

    public func computeShard(step: Int, shard: Int, slot: Int, chunks: [Range<Int>], onChunkReady: (Int) -> Void) -> GradientMeta {
        let start = DispatchTime.now().uptimeNanoseconds
        buffers[slot].zero()
        let share = Array(annotationShare(corrupted, shard: shard, of: spec.shards))
        if !share.isEmpty {
            let d = contents.samples.rowSize
            let values = spec.annotator(sigmaMax: contents.manifest.sigmaMax)
                .annotate(classifier, classifierStore, samples: contents.samples.reshaped([contents.count, d]).gather(rows: share),
                          indices: share, seed: spec.seed)
            let b = buffers[slot]
            for (i, v) in zip(share, values) { b[state.weights + i] = Float(v) }
        }
        for c in chunks.indices.reversed() { onChunkReady(c) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return GradientMeta(loss: 0, terms: ["annotated": Double(share.count)], rows: share.count, computeSeconds: seconds)
    }
}

extension ClusterTraining {
    /// Runs the coordinator of an annotation job; writes the annotations into the dataset
    /// directory and returns them.
    @discardableResult
    public static func annotate(spec: AnnotationSpec, transport: any ServerTransport, options: Options, logger: Logger,
                                stop: StopSignal? = nil) throws -> [Double] {
        let workload = try AnnotationCoordinatorWorkload(spec: spec, showProgress: options.showProgress)
        var copts = options.coordinatorOptions(runID: XXH64.hash(workload.workloadSpec) | 1,
                                               limits: limits(parameters: workload.parameterCount))
        // Annotating a share takes much longer than a training shard: no timing yet for the deadline.
        copts.initialStepDeadline = max(options.coordinator.initialStepDeadline, 3600)
        let coordinator = try Coordinator(workload: workload, transport: transport, options: copts, checkpoints: nil,
                                          incarnation: 1, logger: logger)
        if let stop { coordinator.shouldStop = { stop.isSet } }
        logger.info("annotation job", metadata: ["dataset": "\(spec.dataset)", "classifier": "\(spec.classifierRun)",
                                                 "shards": "\(spec.shards)", "corrupted": "\(workload.corrupted.count)"])
        try coordinator.run()
        return workload.annotations
    }
}

extension AnnotationSpec {
    /// Runs the job in this process, shard by shard with the workers' code (so the result is
    /// the distributed one, bit for bit, at the same shard count), and writes the annotations.
    @discardableResult
    public func runLocally(progress: ProgressReporter? = nil) throws -> [Double] {
        let coordinator = try AnnotationCoordinatorWorkload(spec: self, showProgress: false)
        let worker = try AnnotationWorkerWorkload(spec: self)
        try worker.restore(replica: coordinator.replicaSnapshot())
        let chunks = coordinator.chunkRanges
        for k in 0..<shards {
            _ = worker.computeShard(step: 0, shard: k, slot: 0, chunks: chunks) { _ in }
            coordinator.apply(gradient: worker.gradientBuffer(slot: 0).baseAddress!, range: 0..<coordinator.parameterCount)
            progress?.update(k + 1)
        }
        coordinator.finishStep()
        try coordinator.finish()
        return coordinator.annotations
    }
}
