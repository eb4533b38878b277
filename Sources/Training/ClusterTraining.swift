import Cluster
import Foundation
import Logging
import TensorCore
import Wire

/// Runs the coordinator of a distributed run: prepares (or resumes) the run directory, takes
/// the coordinator lock, and drives `Coordinator` until the last step.
public enum ClusterTraining {
    public struct Options: Sendable {
        /// The coordinator's timing, limits and policies, as `Coordinator` takes them (its
        /// `runID` and `limits` are the run's, set when the run starts). Checkpoints every 100
        /// steps by default (they are enabled by passing a store to the coordinator).
        public var coordinator = CoordinatorOptions(runID: 0, limits: .default)
        public var keepCheckpoints: Int = 3
        public var showProgress = true
        /// Continue a run of the same configuration with fewer steps (`RunDirectory.prepare`).
        public var extend = false
        public init() { coordinator.checkpointEvery = 100 }

        /// The coordinator's options for a run with these settings.
        func coordinatorOptions(runID: UInt64, limits: WireLimits) -> CoordinatorOptions {
            var o = coordinator
            o.runID = runID
            o.limits = limits
            return o
        }
    }

    /// The coordinator's limits for a model of `parameters` values: a full state message holds
    /// three buffers (parameters and two Adam moments).
    public static func limits(parameters: Int) -> WireLimits {
        WireLimits.forModel(parameterCount: 3 * parameters)
    }

    /// Runs the coordinator to the end of the run; returns the workload (its final state).
    /// `onStep` and `onEvent` see every completed step (with the batch size) and every event
    /// (metrics: Monitoring.ClusterMetrics).
    @discardableResult
    public static func coordinate(config: RunConfig, data: TrainingData, runPath: String, transport: any ServerTransport,
                                  options: Options, logger: Logger, stop: StopSignal? = nil,
                                  started: ((Coordinator) -> Void)? = nil,
                                  onStep: ((StepSummary, Int) -> Void)? = nil,
                                  onEvent: (@Sendable (ClusterEvent) -> Void)? = nil) throws -> DenoiserCoordinatorWorkload {
        try config.validate()
        let dir = RunDirectory(path: runPath)
        let start = try dir.prepare(config: config, data: data, extend: options.extend)
        let lock = try CoordinatorLock(directory: runPath)
        defer { lock.release() }
        let store = try CheckpointStore(directory: dir.checkpointsPath, keep: options.keepCheckpoints)
        // A coordinator killed mid-checkpoint leaves its temporary file; we hold the lock now.
        for name in store.removeInterruptedWrites() {
            logger.notice("removed the temporary file of an interrupted checkpoint write", metadata: ["file": "\(name)"])
        }
        let workload = try DenoiserCoordinatorWorkload(config: config, data: data, directory: dir, logger: logger,
                                                       showProgress: options.showProgress)
        workload.acceptedCheckpointHashes = start.checkpointHashes
        var copts = options.coordinatorOptions(runID: config.runID, limits: limits(parameters: workload.parameterCount))
        // Lossy codecs: workers write their shards' error-feedback residuals next to the
        // checkpoints (an absolute path: workers on other hosts need the same shared mount).
        copts.residualDirectory = URL(fileURLWithPath: dir.checkpointsPath + "/residuals").standardizedFileURL.path
        let coordinator = try Coordinator(workload: workload, transport: transport, options: copts, checkpoints: store,
                                          incarnation: lock.incarnation, logger: logger)
        let events = try EventLog(path: dir.eventsPath)
        coordinator.onEvent = { e in
            events.append(e)
            onEvent?(e)
        }
        workload.onStep = onStep
        if let stop { coordinator.shouldStop = { stop.isSet } }
        logger.info("coordinator", metadata: ["run": "\(runPath)", "resuming": "\(start.resuming)", "incarnation": "\(lock.incarnation)",
                                              "parameters": "\(workload.parameterCount)", "shards": "\(config.shards)",
                                              "codec": "\(options.coordinator.codec)", "data": "\(data.summary)"])
        started?(coordinator)
        defer { events.close() }
        try coordinator.run()
        return workload
    }
}

/// The lines of events.jsonl, one per cluster event (docs/formats.md). Best effort: an event
/// that cannot be written is not a reason to stop training.
final class EventLog: @unchecked Sendable {
    private let file: JSONLinesFile
    private let lock = NSLock()   // the encoder and the order of lines
    private let encoder = JSONEncoder()

    init(path: String) throws {
        file = try JSONLinesFile(path: path)
        encoder.outputFormatting = [.sortedKeys]
    }

    func append(_ event: ClusterEvent) {
        lock.lock(); defer { lock.unlock() }
        guard let data = try? encoder.encode(event) else { return }
        try? file.append(String(decoding: data, as: UTF8.self))
    }

    func close() { try? file.close() }
}

extension RunDirectory {
    public var checkpointsPath: String { path + "/checkpoints" }
    public var eventsPath: String { path + "/events.jsonl" }
}
