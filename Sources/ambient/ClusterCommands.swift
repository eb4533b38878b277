import ArgumentParser
import Cluster
import Foundation
import Logging
import Monitoring
import TensorCore
import Training
import Wire

extension Ambient {
    /// `ambient coordinator`: the coordinator of a multi-node run.
    struct CoordinatorCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "coordinator",
            abstract: "Run the coordinator of a distributed training run.",
            discussion: """
            Binds a ZeroMQ ROUTER socket, admits workers whose CURVE public key is on the allow-list, \
            assigns the shards of every step, reduces their gradients in shard order and checkpoints to \
            RUNDIR (a shared directory). Restarted with the same configuration and RUNDIR it resumes from \
            the newest checkpoint that verifies; workers reconnect by themselves. It takes the training \
            options of ambient train, including --config FILE (YAML or JSON). With --metrics-port it \
            serves Prometheus metrics (step, loss, samples/s, step time split, bytes per worker, codec \
            ratio, joins and drops, checkpoint age) at http://127.0.0.1:PORT/metrics. Operations: \
            docs/operations.md.

            Plaintext (--plaintext) is accepted only on loopback endpoints.

            The reduction is sharded by default: when every worker was started with --data-bind, each \
            (up to --range-owners N) sums one range of the gradient over the shards (in shard order: the \
            same bits) and sends it to every worker, so no link carries every gradient; this coordinator \
            keeps the control plane and a reference copy of the parameters. While some worker has no \
            --data-bind, or with --range-owners 0, this coordinator reduces every gradient itself. With \
            CURVE keys it makes a fresh key pair for the links between workers and hands it to the \
            workers it admits; with --plaintext those links are plaintext too (loopback only).

            Examples:
              ambient keys generate --name coordinator --dir keys
              ambient coordinator --config run.yaml --bind tcp://0.0.0.0:5555 --out /shared/runs/fm \\
                  --key keys/coordinator.key --allow keys/workers/
              ambient coordinator --data gmm --corrupt noise:0.5 --bind tcp://127.0.0.1:5555 \\
                  --plaintext --out runs/g
              ambient coordinator --data gmm --corrupt noise:0.5 --bind tcp://127.0.0.1:5555 \\
                  --plaintext --out runs/g-central --range-owners 0 --min-workers 2
            """)

        @OptionGroup var training: TrainingOptions

        @Option(help: "ZeroMQ endpoint to bind, e.g. tcp://0.0.0.0:5555.")
        var bind: String

        @Option(help: "Run directory (checkpoints, metrics, final weights); shared disk for restarts.")
        var out: String

        @Option(help: "This coordinator's CURVE key file (ambient keys generate).")
        var key: String?

        @Option(help: "Allowed worker public keys: a .pub file, a file of keys, or a directory of .pub files.")
        var allow: String?

        @Flag(help: "No authentication or encryption (only on a loopback endpoint).")
        var plaintext = false

        @OptionGroup var cluster: ClusterCommandOptions

        @Option(name: .customLong("range-owners"), help: "Sharded reduction: up to N workers (all: every worker) each reduce a range of the gradient, when every worker has --data-bind (0: this coordinator reduces everything).")
        var rangeOwners = RangeOwnerCount.all

        @OptionGroup var metricsOptions: MetricsOptions

        @Flag(help: "No progress bar.")
        var quiet = false

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if plaintext && (key != nil || allow != nil) { throw ValidationError("--plaintext excludes --key/--allow") }
            if !plaintext && (key == nil || allow == nil) {
                throw ValidationError("give --key and --allow (CURVE), or --plaintext on a loopback endpoint")
            }
            if plaintext && !isLoopback(endpoint: bind) {
                throw ValidationError("--plaintext is only allowed on loopback endpoints (tcp://127.0.0.1:PORT); use CURVE keys for \(bind)")
            }
        }

        func run() throws {
            try reportingErrors {
                BLAS.setThreads(1)
                let (config, data) = try training.resolve()
                let logger = common.makeLogger("ambient.coordinator")
                let n = config.model.make().layout.count
                let context = ZMQContext()
                let server = try makeCoordinatorServer(context: context, bind: bind, key: key, allow: allow, plaintext: plaintext,
                                                       limits: ClusterTraining.limits(parameters: n), logger: logger)
                // Deliver the last messages (shutdown) before the process exits: at most 2 s.
                defer {
                    server.close(flushingFor: 2)
                    context.terminate()
                }
                let stop = StopSignal()
                stop.installHandlers { sig in logger.notice("stopping after a checkpoint", metadata: ["signal": "\(sig)"]) }
                let monitoring = try metricsOptions.start(role: .coordinator, logger: logger)
                defer { monitoring?.server.stop() }
                var transport: any ServerTransport = server
                var onStep: ((StepSummary, Int) -> Void)?
                var onEvent: (@Sendable (ClusterEvent) -> Void)?
                if let metrics = monitoring?.metrics {
                    transport = MeteredServerTransport(server, metrics: metrics)
                    onStep = { summary, batch in metrics.stepCompleted(summary, samples: batch) }
                    onEvent = { event in metrics.event(event) }
                }
                var options = cluster.options(showProgress: !quiet)
                options.coordinator.rangeOwners = rangeOwners.value
                if rangeOwners.value > 0 && !plaintext { options.coordinator.dataKey = try CurveKeyPair.generate() }
                options.coordinator.host = endpointHost(bind)
                try ClusterTraining.coordinate(config: config, data: data, runPath: out, transport: transport,
                                               options: options, logger: logger, stop: stop,
                                               onStep: onStep, onEvent: onEvent)
            }
        }
    }

    /// `ambient worker`: a worker of a distributed run.
    struct WorkerCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "worker",
            abstract: "Run a training worker that connects to a coordinator.",
            discussion: """
            The worker learns the run from the coordinator, loads the same data locally (its content hash \
            must match), computes the gradients of the shards it is assigned with BLAS and sends them \
            back. It re-registers by itself when the coordinator restarts, and exits when the run ends \
            (status 0), when it is refused (1), or after --max-reconnect seconds without a coordinator (1). \
            With --metrics-port it serves its own Prometheus metrics (its step, compute/wait/apply time, \
            samples, bytes to and from the coordinator). With --data-bind it has a data endpoint and \
            owns a range of the gradient (the sharded reduction, used when every worker of the run has \
            one and the coordinator has not --range-owners 0).

            Examples:
              ambient worker --connect tcp://coordinator.example:5555 --key keys/worker1.key \\
                  --server-key keys/coordinator.pub
              OPENBLAS_NUM_THREADS=1 ambient worker --connect tcp://127.0.0.1:5555 --plaintext --name w1 \\
                  --data-bind 'tcp://127.0.0.1:*'
              ambient worker --connect tcp://127.0.0.1:5555 --plaintext --name w2 \\
                  --data-bind 'tcp://127.0.0.1:*'
              ambient worker --connect tcp://10.0.0.11:5555 --key k.key --server-key c.pub \\
                  --metrics-port 9401 --metrics-address 10.0.0.12
            """)

        @Option(help: "Coordinator endpoint, e.g. tcp://HOST:5555.")
        var connect: String

        @Option(help: "This worker's CURVE key file.")
        var key: String?

        @Option(name: .customLong("server-key"), help: "The coordinator's public key file.")
        var serverKey: String?

        @Flag(help: "No authentication or encryption (only to a loopback endpoint).")
        var plaintext = false

        @Option(help: "Worker name in logs (default: host-pid).")
        var name: String?

        @Option(name: .customLong("max-reconnect"), help: "Seconds to keep trying to (re)register before giving up.")
        var maxReconnect: Double = 120

        @Option(name: .customLong("data-bind"), help: "Bind this worker's data endpoint here (tcp://HOST:* with an address other workers reach, or ipc://PATH) so it can own a range of the sharded reduction; CURVE with the run's data key, plaintext only on loopback.")
        var dataBind: String?

        @OptionGroup var metricsOptions: MetricsOptions

        @OptionGroup var common: CommonOptions

        func validate() throws {
            if plaintext && (key != nil || serverKey != nil) { throw ValidationError("--plaintext excludes --key/--server-key") }
            if !plaintext && (key == nil || serverKey == nil) {
                throw ValidationError("give --key and --server-key (CURVE), or --plaintext to a loopback endpoint")
            }
            if plaintext && !isLoopback(endpoint: connect) {
                throw ValidationError("--plaintext is only allowed to loopback endpoints; use CURVE keys for \(connect)")
            }
            if !(maxReconnect > 0) { throw ValidationError("--max-reconnect must be > 0") }
            if let dataBind, plaintext, !isLoopback(endpoint: dataBind) {
                throw ValidationError("--data-bind \(dataBind) with --plaintext: plaintext data links are only allowed on loopback (ipc://PATH or tcp://127.0.0.1:*)")
            }
        }

        func run() throws {
            try reportingErrors {
                BLAS.setThreads(1)   // gradients with one BLAS thread: the same bits on every worker
                let workerName = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
                var logger = common.makeLogger("ambient.worker")
                logger[metadataKey: "worker"] = "\(workerName)"
                let security: TransportSecurity = plaintext ? .plaintext
                    : .curveClient(secret: try CurveKeyPair.read(key!), serverPublicKey: try readPublicKey(serverKey!))
                var incarnation: UInt64 = 0
                while incarnation == 0 { incarnation = UInt64.random(in: 1...UInt64.max) }
                let limits = WireLimits(maxPayloadBytes: 1 << 32, maxRawBytes: 1 << 32, maxJSONBytes: 1 << 24)
                let client = try ZeroMQClient(context: ZMQContext(), connect: connect, identity: "\(workerName)/\(String(incarnation, radix: 16))",
                                              security: security, options: SocketOptions(maxMessageBytes: Int64(limits.maxPayloadBytes)))
                defer { client.close() }
                let monitoring = try metricsOptions.start(role: .worker, logger: logger)
                defer { monitoring?.server.stop() }
                var transport: any ClientTransport = client
                if let metrics = monitoring?.metrics { transport = MeteredClientTransport(client, metrics: metrics) }
                var options = WorkerOptions(name: workerName, incarnation: incarnation, limits: limits)
                options.maxReconnectTime = maxReconnect
                let threads = common.threads ?? environmentThreads() ?? 1
                let socketOptions = SocketOptions(maxMessageBytes: Int64(limits.maxPayloadBytes))
                var dataEndpoint: (@Sendable (CurveKeyPair?) throws -> any DataTransport)?
                if let bind = dataBind {
                    dataEndpoint = { @Sendable key in try ZeroMQDataEndpoint(bind: bind, key: key, options: socketOptions) }
                }
                let worker = Worker(transport: transport, options: options, threads: threads, logger: logger, dataEndpoint: dataEndpoint,
                                    factory: DenoiserWorkerWorkload.factory(logger: logger, threads: threads))
                switch try worker.run() {
                case .finished: return
                case let .stopped(reason): throw ClusterError("the run stopped: \(reason)")
                }
            }
        }
    }

    /// `ambient keys`: CURVE key management.
    struct Keys: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "keys", abstract: "Manage CURVE keys.",
            discussion: """
            Coordinator and workers authenticate each other and encrypt their traffic with CurveZMQ key \
            pairs. Each host generates its own pair and hands out only the .pub file.

            Examples:
              ambient keys generate --name coordinator --dir keys
              ambient keys generate --name $(hostname) --dir keys
            """,
            subcommands: [Generate.self])

        struct Generate: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Generate a CURVE key pair: DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub.",
                discussion: """
                Give the coordinator its .key and a directory of the workers' .pub files (--allow); give \
                each worker its own .key and the coordinator's .pub (--server-key). An existing key is never \
                overwritten.

                Examples:
                  ambient keys generate --name coordinator --dir keys
                  ambient keys generate --name worker1 --dir keys/workers
                """)
            @Option(help: "Key name (file stem).") var name: String
            @Option(help: "Directory to write into.") var dir: String = "."

            func run() throws {
                try reportingErrors {
                    let pair = try CurveKeyPair.generate()
                    try writingOutputs { try pair.write(directory: dir, name: name) }
                    print("\(dir)/\(name).key (secret)\n\(dir)/\(name).pub \(pair.publicKey)")
                }
            }
        }
    }
}

/// The coordinator's ZeroMQ server: CURVE with the allow-list (rejected connections logged),
/// or plaintext on loopback.
func makeCoordinatorServer(context: ZMQContext, bind: String, key: String?, allow: String?, plaintext: Bool, limits: WireLimits,
                           logger: Logger) throws -> ZeroMQServer {
    let security: TransportSecurity = plaintext ? .plaintext
        : .curveServer(secret: try CurveKeyPair.read(key!), allowed: try readPublicKeys(allow!))
    let server = try ZeroMQServer(context: context, bind: bind, security: security,
                                  options: SocketOptions(maxMessageBytes: Int64(limits.maxPayloadBytes + (1 << 20)))) { event in
        if !event.accepted {
            logger.warning("rejected connection", metadata: ["address": "\(event.address)", "key": "\(event.publicKey)",
                                                             "reason": "public key not on the allow-list"])
        }
    }
    logger.notice("listening", metadata: ["endpoint": "\(server.endpoint)", "security": "\(plaintext ? "plaintext" : "curve")"])
    return server
}

/// Options of the distributed machinery, shared by `train --workers` and `coordinator`.
struct ClusterCommandOptions: ParsableArguments {
    @Option(name: .customLong("checkpoint-every"), help: "Checkpoint to RUNDIR/checkpoints every N steps (0: only at the end or when interrupted).")
    var checkpointEvery: Int = 200

    @Option(help: "Checkpoints to keep.")
    var keep: Int = 3

    @Option(help: "Gradient codec: raw, lz4, shuffle-lz4 (lossless), bf16, fp16, bf16-lz4, fp16-lz4, topk:F (lossy).")
    var codec: String = "lz4"

    @Option(name: .customLong("min-workers"), help: "Workers that must join before the first step.")
    var minWorkers: Int = 1

    @Option(name: .customLong("heartbeat-timeout"), help: "Seconds without a message before a worker is dropped.")
    var heartbeatTimeout: Double = 4

    @Option(name: .customLong("no-worker-timeout"), help: "Give up after this many seconds without any worker.")
    var noWorkerTimeout: Double = 300

    @Flag(help: "Continue the run in --out, finished or not, to a larger --steps (every other option as it was): it resumes from the newest checkpoint and ends with the weights a run of the larger --steps would have, bit for bit. The earlier final weights are kept as RUNDIR/model-step-N.safetensors.")
    var extend = false

    @Flag(name: .customLong("owners-apply"), help: "With range owners and a lossless codec: each owner applies Adam to its ranges and sends the workers the new parameters, instead of every worker applying it to every range (stage A of docs/design-optimizer-sharding.md). Bitwise the same weights. Off by default: no faster on one machine (0.95-1.00x on the loopback benchmark) and 1.46x the bytes on an owner's link between 2 simulated hosts (0.93x the samples/s), because this coordinator still takes every reduced gradient (docs/benchmarks.md).")
    var ownersApply = false

    func validate() throws {
        if checkpointEvery < 0 { throw ValidationError("--checkpoint-every must be >= 0") }
        if keep < 1 { throw ValidationError("--keep must be >= 1") }
        if minWorkers < 1 { throw ValidationError("--min-workers must be >= 1") }
        if !(heartbeatTimeout > 0) { throw ValidationError("--heartbeat-timeout must be > 0") }
    }

    func options(showProgress: Bool) -> ClusterTraining.Options {
        var o = ClusterTraining.Options()
        o.coordinator.checkpointEvery = checkpointEvery
        o.keepCheckpoints = keep
        o.coordinator.codec = codec
        o.coordinator.minWorkers = minWorkers
        o.coordinator.heartbeatTimeout = heartbeatTimeout
        o.coordinator.noWorkerTimeout = noWorkerTimeout
        o.coordinator.ownersApply = ownersApply
        o.showProgress = showProgress
        o.extend = extend
        return o
    }
}

/// `--range-owners`: a number of workers, or `all` (every worker).
struct RangeOwnerCount: ExpressibleByArgument, CustomStringConvertible {
    static let all = RangeOwnerCount(value: .max)
    var value: Int

    init(value: Int) { self.value = value }

    init?(argument: String) {
        if argument == "all" {
            value = .max
        } else if let n = Int(argument), n >= 0 {
            value = n
        } else {
            return nil
        }
    }

    var description: String { value == .max ? "all" : String(value) }
}
