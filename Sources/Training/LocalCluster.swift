import Cluster
import Foundation
import Logging
import TensorCore
import Wire

/// `ambient train --workers N`: a coordinator in this process and N `ambient worker`
/// processes on 127.0.0.1, authenticated with CURVE keys made for this run.
public struct LocalCluster {
    public let workers: Int
    public let logLevel: String
    public let logger: Logger
    /// The `ambient` executable the workers run.
    public let executable: String

    public init(workers: Int, logLevel: String, logger: Logger, executable: String) {
        self.workers = workers
        self.logLevel = logLevel
        self.logger = logger
        self.executable = executable
    }

    @discardableResult
    public func run(config: RunConfig, data: TrainingData, runPath: String, options: ClusterTraining.Options,
                    stop: StopSignal? = nil) throws -> DenoiserCoordinatorWorkload {
        let n = config.model.make().layout.count
        return try withWorkers(limits: ClusterTraining.limits(parameters: n)) { server in
            var opts = options
            opts.minWorkers = max(opts.minWorkers, workers)
            return try ClusterTraining.coordinate(config: config, data: data, runPath: runPath, transport: server, options: opts,
                                                  logger: logger, stop: stop)
        }
    }

    /// An annotation job on local workers; returns the annotations (also written into the dataset).
    @discardableResult
    public func annotate(spec: AnnotationSpec, options: ClusterTraining.Options, stop: StopSignal? = nil) throws -> [Double] {
        let probe = try AnnotationCoordinatorWorkload(spec: spec, showProgress: false)
        return try withWorkers(limits: ClusterTraining.limits(parameters: probe.parameterCount)) { server in
            var opts = options
            opts.minWorkers = max(opts.minWorkers, workers)
            return try ClusterTraining.annotate(spec: spec, transport: server, options: opts, logger: logger, stop: stop)
        }
    }

    /// Starts a CURVE-secured server on 127.0.0.1 and the worker processes, runs `body` (the
    /// coordinator), then stops the workers.
    func withWorkers<R>(limits: WireLimits, _ body: (ZeroMQServer) throws -> R) throws -> R {
        let keyDir = NSTemporaryDirectory() + "ambient-keys-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: keyDir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: keyDir) }
        let coordinatorKeys = try CurveKeyPair.generate(), workerKeys = try CurveKeyPair.generate()
        try coordinatorKeys.write(directory: keyDir, name: "coordinator")
        try workerKeys.write(directory: keyDir, name: "worker")
        let context = ZMQContext()
        let server = try ZeroMQServer(context: context, bind: "tcp://127.0.0.1:*",
                                      security: .curveServer(secret: coordinatorKeys, allowed: [workerKeys.publicKey]),
                                      options: SocketOptions(maxMessageBytes: Int64(limits.maxPayloadBytes + (1 << 20))))
        defer {
            server.close(flushingFor: 2)
            context.terminate()
        }
        // One BLAS thread per worker: the bits of a gradient must not depend on the thread count.
        let threads = 1
        BLAS.setThreads(1)
        var children: [Process] = []
        defer { stopChildren(children) }
        for i in 0..<workers {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = ["worker", "--connect", server.endpoint, "--key", keyDir + "/worker.key",
                           "--server-key", keyDir + "/coordinator.pub", "--name", "local-\(i)",
                           "--threads", String(threads), "--log-level", logLevel == "info" ? "notice" : logLevel,
                           "--max-reconnect", "60"]
            var env = ProcessInfo.processInfo.environment
            env["OPENBLAS_NUM_THREADS"] = String(threads)
            p.environment = env
            try p.run()
            children.append(p)
        }
        logger.notice("local cluster", metadata: ["endpoint": "\(server.endpoint)", "workers": "\(workers)"])
        return try body(server)
    }

    /// Waits (bounded) for workers to exit after the shutdown message, then kills the rest.
    private func stopChildren(_ children: [Process]) {
        let deadline = Date().addingTimeInterval(10)
        while children.contains(where: \.isRunning) && Date() < deadline { usleep(50_000) }
        for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in children { p.waitUntilExit() }
    }
}
