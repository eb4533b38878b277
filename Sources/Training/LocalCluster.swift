import Cluster
import Foundation
import Logging
import TensorCore
import Wire

/// `ambient train --workers N`: a coordinator in this process and N `ambient worker` processes
/// on this machine, and optionally some of the N as threads of this process (`colocated`),
/// whose traffic never touches a socket. By default the processes talk over a Unix socket
/// (`ipc://`) in a directory only this user can enter (0700), without CURVE: the bytes never
/// leave the kernel and no other user can connect, so encryption would only cost CPU on every
/// gradient byte. `link = .tcp` uses 127.0.0.1 with CURVE keys made for this run (or plaintext
/// when asked for). CURVE stays mandatory for TCP between hosts (`ambient coordinator`).
///
/// The reduction is sharded as between hosts (range owners, the coordinator's default): every
/// worker, in a process or colocated, gets a data endpoint at `ipc://DIR/data-I.sock` in the
/// same private directory, plaintext for the same reason, so each reduces a range of the
/// gradient and the coordinator receives it once instead of every shard's. With `link = .tcp`
/// the data endpoints are on 127.0.0.1 too (CURVE with a key pair made for the run, unless
/// plaintext), so every byte of the run crosses the loopback interface: a shaped `lo` then
/// shapes all of it (scripts/bench-vs-pytorch --scenario gbit).
public struct LocalCluster {
    /// How the coordinator and the worker processes of a local cluster are connected.
    public enum Link: String, Sendable, CaseIterable {
        case ipc, tcp
    }

    public let workers: Int
    public let logLevel: String
    public let logger: Logger
    /// The `ambient` executable the workers run.
    public let executable: String
    public var link = Link.ipc
    /// With `link = .tcp`: no CURVE on the loopback socket (encryption costs CPU on every byte
    /// of every gradient).
    public var plaintext = false
    /// How many of the workers run in this process (0 ... workers).
    public var colocated = 0

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
        return try withWorkers(limits: ClusterTraining.limits(parameters: n)) { server, dataKey in
            var opts = options
            opts.coordinator.minWorkers = max(opts.coordinator.minWorkers, workers)
            opts.coordinator.dataKey = dataKey
            return try ClusterTraining.coordinate(config: config, data: data, runPath: runPath, transport: server, options: opts,
                                                  logger: logger, stop: stop)
        }
    }

    /// An annotation job on local workers; returns the annotations (also written into the dataset).
    @discardableResult
    public func annotate(spec: AnnotationSpec, options: ClusterTraining.Options, stop: StopSignal? = nil) throws -> [Double] {
        let probe = try AnnotationCoordinatorWorkload(spec: spec, showProgress: false)
        return try withWorkers(limits: ClusterTraining.limits(parameters: probe.parameterCount)) { server, dataKey in
            var opts = options
            opts.coordinator.minWorkers = max(opts.coordinator.minWorkers, workers)
            opts.coordinator.dataKey = dataKey
            return try ClusterTraining.annotate(spec: spec, transport: server, options: opts, logger: logger, stop: stop)
        }
    }

    /// Makes the run's private directory (mode 0700, whatever the umask): the ipc socket or
    /// the CURVE keys live in it, and it is removed when the cluster stops.
    public static func makePrivateDirectory() throws -> String {
        let dir = NSTemporaryDirectory() + "ambient-local-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(dir, 0o700) == 0, chmod(dir, 0o700) == 0 else {
            throw ClusterError("cannot create the local cluster's directory \(dir): \(String(cString: strerror(errno))); set TMPDIR to a writable directory")
        }
        return dir
    }

    /// Starts the coordinator's server (ipc, or tcp on 127.0.0.1) and the worker processes,
    /// runs `body` (the coordinator, given the data links' key pair to hand out, if they use
    /// CURVE), then stops the workers.
    func withWorkers<R>(limits: WireLimits, _ body: (any ServerTransport, CurveKeyPair?) throws -> R) throws -> R {
        let runDir = try Self.makePrivateDirectory()
        defer { try? FileManager.default.removeItem(atPath: runDir) }
        let socketPath = runDir + "/coordinator.sock"
        func dataPath(_ i: Int) -> String { runDir + "/data-\(i).sock" }
        // Every socket on the same link: ipc in the private directory, or tcp on 127.0.0.1.
        func dataBind(_ i: Int) -> String { link == .ipc ? "ipc://" + dataPath(i) : "tcp://127.0.0.1:*" }
        for path in (link == .ipc ? [socketPath, dataPath(max(workers - 1, 0))] : []) where path.utf8.count > 100 {
            throw ClusterError("the local cluster's socket path \(path) is longer than a Unix socket allows: set TMPDIR to a shorter directory")
        }
        let security: TransportSecurity
        var workerSecurity = ["--plaintext"]
        var dataKey: CurveKeyPair?
        if link == .tcp && !plaintext {
            dataKey = try CurveKeyPair.generate()
            let coordinatorKeys = try CurveKeyPair.generate(), workerKeys = try CurveKeyPair.generate()
            try coordinatorKeys.write(directory: runDir, name: "coordinator")
            try workerKeys.write(directory: runDir, name: "worker")
            security = .curveServer(secret: coordinatorKeys, allowed: [workerKeys.publicKey])
            workerSecurity = ["--key", runDir + "/worker.key", "--server-key", runDir + "/coordinator.pub"]
        } else {
            security = .plaintext
        }
        let context = ZMQContext()
        let server = try ZeroMQServer(context: context, bind: link == .ipc ? "ipc://" + socketPath : "tcp://127.0.0.1:*",
                                      security: security,
                                      options: SocketOptions(maxMessageBytes: Int64(limits.maxPayloadBytes + (1 << 20))))
        let inProcess = max(0, min(colocated, workers))
        let network = InMemoryNetwork(queueLimit: 4096, sealed: true)   // in-process: nothing to check a payload against
        let transport: any ServerTransport = inProcess > 0 ? ColocatedServerTransport(remote: server, local: network) : server
        defer {
            server.close(flushingFor: 2)
            context.terminate()
        }
        // One BLAS thread per worker: the bits of a gradient must not depend on the thread count.
        let threads = 1
        BLAS.setThreads(1)
        var local: [ColocatedWorker] = []
        defer { for w in local { w.finish(within: 10, logger: logger) } }
        for i in 0..<inProcess {
            let name = "local-\(i)"
            var options = WorkerOptions(name: name, incarnation: UInt64.random(in: 1...UInt64.max), limits: limits)
            options.maxReconnectTime = 60
            var workerLogger = logger
            workerLogger[metadataKey: "worker"] = "\(name)"
            let client = network.connect(identity: "\(name)/\(options.incarnation)")
            let bind = dataBind(i), socketOptions = SocketOptions(maxMessageBytes: Int64(limits.maxPayloadBytes + (1 << 20)))
            let worker = Worker(transport: client, options: options, threads: threads, logger: workerLogger,
                                dataEndpoint: { key in try ZeroMQDataEndpoint(bind: bind, key: key, options: socketOptions) },
                                factory: DenoiserWorkerWorkload.factory(logger: workerLogger, threads: threads))
            local.append(ColocatedWorker(worker, network: network, peer: client.peer))
        }
        // Foundation's Process, not swift-subprocess (available here, 1.0.2): every `run` of
        // swift-subprocess is async and ties the child's life to that call, while these workers
        // must outlive the spawning call and run beside the synchronous coordinator in `body`;
        // an async bridge would add code without a stronger guarantee than `stopChildren`
        // (bounded wait, then SIGKILL, then reap).
        var children: [Process] = []
        defer { stopChildren(children) }
        for i in inProcess..<workers {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = ["worker", "--connect", server.endpoint] + workerSecurity + ["--name", "local-\(i)",
                           "--threads", String(threads), "--log-level", logLevel == "info" ? "notice" : logLevel,
                           "--max-reconnect", "60", "--data-bind", dataBind(i)]
            var env = ProcessInfo.processInfo.environment
            env["OPENBLAS_NUM_THREADS"] = String(threads)
            p.environment = env
            try p.run()
            children.append(p)
        }
        logger.notice("local cluster", metadata: ["endpoint": "\(server.endpoint)", "workers": "\(workers)",
                                                  "in-process": "\(inProcess)", "link": "\(link)", "curve": "\(workerSecurity != ["--plaintext"])"])
        return try body(transport, dataKey)
    }

    /// Waits (bounded) for workers to exit after the shutdown message, then kills the rest.
    private func stopChildren(_ children: [Process]) {
        let deadline = Date().addingTimeInterval(10)
        while children.contains(where: \.isRunning) && Date() < deadline { usleep(50_000) }
        for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in children { p.waitUntilExit() }
    }
}

/// A worker running on a thread of the coordinator's process (see `LocalCluster.colocated`).
final class ColocatedWorker: @unchecked Sendable {
    private let worker: Worker
    private let network: InMemoryNetwork
    private let peer: PeerID
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<WorkerExit, any Error>?

    init(_ worker: Worker, network: InMemoryNetwork, peer: PeerID) {
        self.worker = worker
        self.network = network
        self.peer = peer
        let thread = Thread { [self] in
            outcome = Result { try worker.run() }
            done.signal()
        }
        thread.name = "ambient-colocated-worker"
        thread.start()
    }

    /// Waits (bounded) for the worker to read the coordinator's shutdown and return; a worker
    /// that did not get one (the coordinator failed) is cut off, which ends its loop.
    func finish(within seconds: Double, logger: Logger) {
        if done.wait(timeout: .now() + seconds) == .timedOut {
            network.disconnect(peer)
            if done.wait(timeout: .now() + 5) == .timedOut {
                logger.warning("a colocated worker did not stop after the run")
            }
            return
        }
        if case let .failure(error) = outcome { logger.warning("colocated worker failed", metadata: ["error": "\(error)"]) }
    }
}
