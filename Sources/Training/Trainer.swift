import Diffusion
import Foundation
import Logging
import TensorCore
import Wire

/// Runs a training configuration to completion in one process and writes its run directory.
///
/// Order matters for "never a partial run directory on bad input": the configuration is
/// validated and the data loaded and checked before the directory is created. A run directory
/// of the same configuration that did not finish is resumed from its newest checkpoint, so an
/// interrupted command completes when run again, with the same weights as without the stop.
public struct Trainer {
    public let config: RunConfig
    public let runPath: String
    public var logger: Logger
    public var showProgress: Bool
    /// Shards computed at once (nil: the core count).
    public var threads: Int?
    /// Checkpoint every this many steps (0: only when interrupted).
    public var checkpointEvery: Int = 500
    public var keepCheckpoints: Int = 2
    /// Polled between steps: when set, the run checkpoints and throws `InterruptedError`.
    public var stop: StopSignal?
    /// Ends training after this many seconds (at a step boundary) and writes the final weights
    /// as if the run had reached its last step: for equal wall-clock comparisons. The number
    /// of steps then depends on the machine's speed, so such a run is not reproducible.
    public var timeLimit: Double?
    /// Continue a run of the same configuration with fewer steps to `config.steps`
    /// (`RunDirectory.prepare(config:data:extend:)`).
    public var extend = false

    public init(config: RunConfig, runPath: String, logger: Logger, showProgress: Bool = true, threads: Int? = nil) {
        self.config = config
        self.runPath = runPath
        self.logger = logger
        self.showProgress = showProgress
        self.threads = threads
    }

    /// Trains and returns the session (parameters, EMA) and the last step's report.
    @discardableResult
    public func run(data preloaded: TrainingData? = nil) throws -> TrainingSession {
        try config.validate()
        let data = try preloaded ?? TrainingData.load(config)
        BLAS.setThreads(1)   // bitwise reproducibility: parallel shards, never parallel BLAS (TensorCore.Parallel)
        let session = try TrainingSession(config: config, data: data, threads: threads)
        let dir = RunDirectory(path: runPath)
        let start = try dir.prepare(config: config, data: data, extend: extend)
        let store = try CheckpointStore(directory: dir.checkpointsPath, keep: keepCheckpoints)
        let metrics = try MetricsLog(path: dir.metricsPath)
        if start.resuming {
            if let found = store.loadNewest(skipped: { [logger] why in logger.warning("skipping checkpoint", metadata: ["reason": "\(why)"]) }) {
                do {
                    try session.state.resume(from: found.snapshot, of: config, alsoAccepting: start.checkpointHashes)
                } catch let error as TrainingError {
                    throw TrainingError("\(found.path): \(error.message)")
                }
                logger.notice("resumed", metadata: ["checkpoint": "\(found.path)", "step": "\(session.state.step)"])
            } else {
                // Stopped before its first checkpoint (killed, or a second Ctrl-C): the run is a
                // function of its configuration, so starting over gives the same weights.
                logger.notice("resumed", metadata: ["checkpoint": "none usable", "step": "0 (starting again)"])
            }
            try metrics.truncate(keepingStepsBelow: session.state.step)
        }
        logger.info("training", metadata: ["run": "\(runPath)", "data": "\(data.summary)",
                                           "objective": "\(config.objective.rawValue)", "steps": "\(config.steps)",
                                           "batch": "\(config.batch)", "parameters": "\(session.state.store.count)",
                                           "threads": "\(session.computers.count)", "blas": "\(BLASCore.name)"])
        func checkpoint() throws -> String {
            try store.write(session.state.checkpoint(of: config), step: session.state.step)
        }
        let progress = showProgress ? ProgressReporter(label: "train", total: config.steps, unit: "step") : nil
        var window: [Double] = []
        let started = DispatchTime.now().uptimeNanoseconds
        for _ in session.state.step..<config.steps {
            if let limit = timeLimit, Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 >= limit {
                logger.notice("time limit reached", metadata: ["seconds": "\(limit)", "steps": "\(session.state.step)"])
                break
            }
            if let stop, stop.isSet {
                let path = try checkpoint()
                try metrics.close()
                throw InterruptedError(step: session.state.step, runPath: runPath, checkpoint: path)
            }
            let report = try session.step()
            if checkpointEvery > 0, session.state.step % checkpointEvery == 0, session.state.step < config.steps {
                _ = try checkpoint()
            }
            window.append(report.loss)
            if window.count > 50 { window.removeFirst() }
            if report.step % config.logEvery == 0 || report.step == config.steps - 1 {
                try metrics.append(report, samplesPerSecond: Double(config.batch) / report.seconds)
            }
            progress?.update(report.step + 1, status: String(format: "loss %.4f", window.reduce(0, +) / Double(window.count)))
        }
        try metrics.close()
        let kind = config.objective == .classifier ? "classifier" : "denoiser"
        try dir.writeModel(session.network.layout, values: session.state.ema!.values, config: config, kind: kind,
                           step: session.state.step)
        logger.info("finished", metadata: ["run": "\(runPath)", "model": "\(dir.modelPath)"])
        return session
    }
}

/// The lines of metrics.jsonl, one per logged step (schema in docs/formats.md).
public final class MetricsLog {
    private let file: JSONLinesFile
    public var path: String { file.path }

    public init(path: String) throws { file = try JSONLinesFile(path: path) }

    public func append(_ r: StepReport, samplesPerSecond: Double, extra: [String: Double] = [:]) throws {
        var fields: [String] = [
            "\"step\":\(r.step)",
            "\"loss\":\(json(r.loss))",
            "\"grad_norm\":\(json(r.gradNorm))",
            "\"lr\":\(json(r.learningRate))",
            "\"step_seconds\":\(json(r.seconds))",
            "\"samples_per_second\":\(json(samplesPerSecond))",
        ]
        for (k, v) in r.terms.sorted(by: { $0.key < $1.key }) { fields.append("\"term.\(k)\":\(json(v))") }
        for (k, v) in extra.sorted(by: { $0.key < $1.key }) { fields.append("\"\(k)\":\(json(v))") }
        try file.append("{" + fields.joined(separator: ",") + "}")
    }

    /// Drops lines of steps >= `step` (a resumed run recomputes them), atomically.
    public func truncate(keepingStepsBelow step: Int) throws {
        try file.truncate { ($0["step"] as? Int).map { $0 < step } ?? false }
    }

    public func close() throws { try file.close() }

    private func json(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }
}
