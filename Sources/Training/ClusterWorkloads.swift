import Cluster
import Diffusion
import Foundation
import Logging
import TensorCore
import Wire

/// The optimiser state is what the cluster replicates: its parameters, Adam moments and step
/// (TrainingSession.swift implements the members).
extension OptimizerState: ReplicatedState, RangeOwnerOptimizer {}
extension DenoiserWorkerWorkload: RangeOwnerOptimizer {}

/// What a welcome carries for workers to build: a training run's resolved configuration, or
/// an annotation job.
struct WorkloadSpec: Codable {
    var formatVersion = 1
    var config: RunConfig?
    var annotation: AnnotationSpec?

    init(config: RunConfig) { self.config = config }
    init(annotation: AnnotationSpec) { self.annotation = annotation }
}

extension TrainingData {
    /// XXH64 over the samples and their noise levels: workers must hold the same data.
    public var contentHash: String {
        var h = XXH64()
        samples.storage.withUnsafeBytes { h.update($0) }
        sigmaN.withUnsafeBytes { h.update($0) }
        sigmaFloor?.withUnsafeBytes { h.update($0) }
        withUnsafeBytes(of: UInt64(samples.rows).littleEndian) { h.update($0) }
        return String(h.finalize(), radix: 16).leftPadded(to: 16)
    }
}

extension RunConfig {
    /// The run id in message headers, derived from the configuration hash.
    public var runID: UInt64 { UInt64(hash, radix: 16) ?? 1 }
}

/// A worker's side of a run (any objective, the classifier too): a replica of the optimiser
/// state (no EMA) and the shard gradient computer, the very one the single-process trainer uses.
public final class DenoiserWorkerWorkload: WorkerWorkload, ForwardsReplicatedState, @unchecked Sendable {
    let state: OptimizerState
    /// One computer per compute slot; slot 0 writes into the state's own store.
    let computers: [any ShardGradientComputing]
    public let datasetHash: String
    private var trackers: [(chunks: [Range<Int>], tracker: ChunkTracker)?]

    /// - Parameter threads: compute slots (shards computed at once).
    public init(config: RunConfig, data: TrainingData, threads: Int = 1) throws {
        try config.validate()
        state = OptimizerState.initial(config, emaDecay: nil, threads: ProcessInfo.processInfo.activeProcessorCount).state
        let t = max(1, threads)
        computers = try makeShardComputers(config: config, data: data, store: state.store, count: t)
        trackers = [(chunks: [Range<Int>], tracker: ChunkTracker)?](repeating: nil, count: t)
        datasetHash = data.contentHash
    }

    /// Builds the workload a welcome describes (a training run or an annotation job), loading
    /// the data locally.
    public static func factory(logger: Logger, threads: Int = 1) -> Worker.Factory {
        { welcome in
            let spec: WorkloadSpec
            do {
                spec = try JSONDecoder().decode(WorkloadSpec.self, from: Data(welcome.workloadSpec))
            } catch {
                throw TrainingError("the coordinator's run configuration is unreadable by this build: \(error)")
            }
            guard spec.formatVersion == 1 else { throw TrainingError("workload format \(spec.formatVersion) is newer than this build") }
            if let job = spec.annotation {
                logger.info("annotation job", metadata: ["dataset": "\(job.dataset)"])
                return try AnnotationWorkerWorkload(spec: job, threads: threads)
            }
            guard let config = spec.config else { throw TrainingError("the coordinator sent an empty workload") }
            logger.info("loading data", metadata: ["data": "\(config.data)"])
            let data = try TrainingData.load(config)
            return try DenoiserWorkerWorkload(config: config, data: data, threads: threads)
        }
    }

    public var replica: OptimizerState { state }

    public var parallelism: Int { computers.count }

    public func gradientBuffer(slot: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: computers[slot].store.grads, count: computers[slot].store.count)
    }

    public func computeShard(step: Int, shard: Int, slot: Int, chunks: [Range<Int>], onChunkReady: (Int) -> Void) -> GradientMeta {
        let computer = computers[slot]
        if trackers[slot]?.chunks != chunks { trackers[slot] = (chunks, ChunkTracker(layout: computer.store.layout, chunks: chunks)) }
        let t = trackers[slot]!.tracker
        t.reset()
        let start = DispatchTime.now().uptimeNanoseconds
        let r = withoutActuallyEscaping(onChunkReady) { ready -> ShardResult in
            computer.onParameterGradientReady = { slot in for c in t.slotReady(slot) { ready(c) } }
            defer { computer.onParameterGradientReady = nil }
            return computer.compute(step: step, shard: shard)
        }
        for c in t.unreported() { onChunkReady(c) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return GradientMeta(loss: r.loss, terms: r.terms, rows: r.rows, computeSeconds: seconds)
    }
}

/// The coordinator's side of a denoiser run: master state with EMA, the run directory's
/// metrics, and the final weights.
public final class DenoiserCoordinatorWorkload: CoordinatorWorkload, ForwardsReplicatedState, @unchecked Sendable {
    public let config: RunConfig
    let state: OptimizerState
    let network: any DenoiserNetwork
    let directory: RunDirectory
    let metrics: MetricsLog
    let progress: ProgressReporter?
    /// Called after every completed step with its summary and the batch size (metrics).
    public var onStep: ((StepSummary, Int) -> Void)?
    let logger: Logger
    public let datasetHash: String
    /// Seconds of compute and of everything else per step, for the report.
    public private(set) var timing: [(compute: Double, total: Double)] = []
    /// Config hashes whose checkpoints this run resumes from: its own and those of the shorter runs it extends.
    public var acceptedCheckpointHashes: Set<String> = []

    public init(config: RunConfig, data: TrainingData, directory: RunDirectory, logger: Logger, showProgress: Bool) throws {
        self.config = config
        (network, state) = OptimizerState.initial(config, emaDecay: config.emaDecay, threads: ProcessInfo.processInfo.activeProcessorCount)
        self.directory = directory
        metrics = try MetricsLog(path: directory.metricsPath)
        progress = showProgress ? ProgressReporter(label: "train", total: config.steps, unit: "step") : nil
        self.logger = logger
        datasetHash = data.contentHash
    }

    public var totalSteps: Int { config.steps }
    public var shardCount: Int { config.shards }
    public var workloadSpec: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(WorkloadSpec(config: config))) ?? Data())
    }

    public var replica: OptimizerState { state }
    public var chunkRanges: [Range<Int>] { GradientChunks.plan(network.layout) }

    public func checkpointSnapshot() -> StateSnapshot {
        state.checkpoint(of: config)
    }

    public func restore(checkpoint s: StateSnapshot) throws {
        try state.resume(from: s, of: config, alsoAccepting: acceptedCheckpointHashes)
        try metrics.truncate(keepingStepsBelow: state.step)
    }

    public func stepCompleted(_ summary: StepSummary) throws {
        timing.append((summary.computeSeconds, summary.seconds))
        if summary.step % config.logEvery == 0 || summary.step == config.steps - 1 {
            let report = StepReport(step: summary.step, loss: summary.loss, terms: summary.terms, gradNorm: summary.gradientNorm,
                                    learningRate: state.adam.learningRate(atStep: summary.step), seconds: summary.seconds)
            try metrics.append(report, samplesPerSecond: Double(config.batch) / summary.seconds,
                               extra: ["compute_seconds": summary.computeSeconds, "workers": Double(summary.workers),
                                       "bytes_in": Double(summary.bytesIn), "bytes_out": Double(summary.bytesOut)])
        }
        progress?.update(summary.step + 1, status: String(format: "loss %.4f, %d workers", summary.loss, summary.workers))
        onStep?(summary, config.batch)
    }

    public func finish() throws {
        try metrics.close()
        let kind = config.objective == .classifier ? "classifier" : "denoiser"
        try directory.writeModel(network.layout, values: state.ema!.values, config: config, kind: kind, step: config.steps)
    }

    /// The master parameters and EMA (tests compare them bitwise).
    public var optimizerState: OptimizerState { state }
}

extension RunConfig {
    var adamOptions: Adam<Float>.Options { .init(learningRate: learningRate, warmupSteps: warmupSteps, weightDecay: weightDecay ?? 0) }
}
