import Diffusion
import Foundation
import Logging
import TensorCore

/// Runs a training configuration to completion in one process and writes its run directory.
///
/// Order matters for "never a partial run directory on bad input": the configuration is
/// validated and the data loaded and checked before the directory is created.
public struct Trainer {
    public let config: RunConfig
    public let runPath: String
    public var logger: Logger
    public var showProgress: Bool

    public init(config: RunConfig, runPath: String, logger: Logger, showProgress: Bool = true) {
        self.config = config
        self.runPath = runPath
        self.logger = logger
        self.showProgress = showProgress
    }

    /// Trains and returns the session (parameters, EMA) and the last step's report.
    @discardableResult
    public func run(data preloaded: TrainingData? = nil) throws -> TrainingSession {
        try config.validate()
        let data = try preloaded ?? TrainingData.load(config)
        let session = try TrainingSession(config: config, data: data)
        let dir = RunDirectory(path: runPath)
        try dir.create()
        try dir.writeConfig(config, dataSummary: data.summary, imageShape: data.imageShape)
        logger.info("training", metadata: ["run": "\(runPath)", "data": "\(data.summary)",
                                           "objective": "\(config.objective)", "steps": "\(config.steps)",
                                           "batch": "\(config.batch)", "parameters": "\(session.state.store.count)"])
        let metrics = try MetricsLog(path: dir.metricsPath)
        let progress = showProgress ? ProgressReporter(label: "train", total: config.steps, unit: "step") : nil
        var window: [Double] = []
        for _ in session.state.step..<config.steps {
            let report = try session.step()
            window.append(report.loss)
            if window.count > 50 { window.removeFirst() }
            if report.step % config.logEvery == 0 || report.step == config.steps - 1 {
                try metrics.append(report, samplesPerSecond: Double(config.batch) / report.seconds)
            }
            progress?.update(report.step + 1, status: String(format: "loss %.4f", window.reduce(0, +) / Double(window.count)))
        }
        try metrics.close()
        let kind = config.objective == ObjectiveKind.classifier.rawValue ? "classifier" : "denoiser"
        try dir.writeModel(session.network.layout, values: session.state.ema.values, config: config, kind: kind, step: config.steps)
        logger.info("finished", metadata: ["run": "\(runPath)", "model": "\(dir.modelPath)"])
        return session
    }
}

/// Appends one JSON object per line to metrics.jsonl (schema in docs/formats.md).
public final class MetricsLog {
    private let handle: FileHandle
    public let path: String

    public init(path: String) throws {
        self.path = path
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw RunDirectoryError("cannot create \(path)")
            }
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw RunDirectoryError("cannot open \(path) for writing") }
        h.seekToEndOfFile()
        handle = h
    }

    public func append(_ r: StepReport, samplesPerSecond: Double) throws {
        var fields: [String] = [
            "\"step\":\(r.step)",
            "\"loss\":\(json(r.loss))",
            "\"grad_norm\":\(json(r.gradNorm))",
            "\"lr\":\(json(r.learningRate))",
            "\"step_seconds\":\(json(r.seconds))",
            "\"samples_per_second\":\(json(samplesPerSecond))",
        ]
        for (k, v) in r.terms.sorted(by: { $0.key < $1.key }) { fields.append("\"term.\(k)\":\(json(v))") }
        let line = "{" + fields.joined(separator: ",") + "}\n"
        try handle.write(contentsOf: Data(line.utf8))
    }

    public func close() throws {
        try handle.synchronize()
        try handle.close()
    }

    private func json(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }
}
