import Foundation
import Logging
import TensorCore
import Wire

/// How a worker behaves when the coordinator is away.
public struct WorkerOptions: Sendable {
    public var name: String
    /// Random per process start: a restarted worker is a new peer.
    public var incarnation: UInt64
    public var heartbeatInterval: Double = 0.5
    /// Re-register after hearing nothing for this long (the welcome may override it).
    public var coordinatorTimeout: Double = 15
    /// Give up after failing to (re)register for this long.
    public var maxReconnectTime: Double = 120
    public var limits: WireLimits
    /// Announce, when the workload can, that this worker applies the optimiser to the ranges it
    /// owns (`HelloBody.ownerOptimizer`); false: it asks for reduced gradients like older builds.
    public var ownerOptimizer = true

    public init(name: String, incarnation: UInt64, limits: WireLimits) {
        self.name = name
        self.incarnation = incarnation
        self.limits = limits
    }
}

/// How a worker's run ended.
public enum WorkerExit: Sendable, Equatable {
    /// The coordinator finished the run.
    case finished
    /// The coordinator stopped the run with an error.
    case stopped(String)
}

/// A worker: registers with the coordinator, builds its workload from the welcome, computes
/// the shards it is assigned, applies every update to stay bitwise in sync, re-registers by
/// itself when the coordinator restarts, and exits when told to.
///
/// Two threads: the caller's thread owns the transport (heartbeats never wait for compute);
/// a compute thread owns the workload and runs tasks in order.
public final class Worker: @unchecked Sendable {
    public typealias Factory = @Sendable (WelcomeBody) throws -> any WorkerWorkload

    enum Phase: Equatable {
        case probing
        case building
        case joining
        case ready
    }

    let transport: any ClientTransport
    let options: WorkerOptions
    let factory: Factory
    var logger: Logger
    let clock: any Clock
    let host = ProcessInfo.processInfo.hostName
    let threads: Int

    // I/O thread state
    private var phase = Phase.probing
    private var welcome: WelcomeBody?
    private var coordinatorIncarnation: UInt64 = 0
    private var lastHeard: Double
    private var lastProbe = -1e9
    private var probeBackoff = 0.25
    private var unregisteredSince: Double
    private var heartbeatTimeout: Double
    /// Messages the socket would not take yet (high-water mark reached while the coordinator
    /// was busy). Gradient chunks are never dropped for that: a lost chunk would stall the step
    /// until its deadline. Cleared when registration starts again.
    private var backlog = SendBacklog()
    /// The compute thread's side: the workload and the tasks queued for it.
    private let compute: WorkerCompute
    /// The sharded reduction's side (nil: this worker has no data endpoint and reduces nothing).
    private let dataPlane: WorkerDataPlane?

    /// `dataEndpoint`: opens this worker's data endpoint for the sharded reduction when a
    /// welcome arrives (with the run's data key, if any; its address goes into the join); nil:
    /// the worker sends every gradient to the coordinator.
    public init(transport: any ClientTransport, options: WorkerOptions, threads: Int, logger: Logger,
                clock: any Clock = MonotonicClock(), dataEndpoint: (@Sendable (CurveKeyPair?) throws -> any DataTransport)? = nil,
                factory: @escaping Factory) {
        self.transport = transport
        self.options = options
        self.factory = factory
        self.logger = logger
        self.clock = clock
        self.threads = threads
        lastHeard = clock.now()
        unregisteredSince = clock.now()
        heartbeatTimeout = options.coordinatorTimeout
        let compute = WorkerCompute(options: options, logger: logger, factory: factory, controlSealed: transport.sealed,
                                    wake: { [transport] in transport.wake() })
        self.compute = compute
        dataPlane = dataEndpoint.map { make in
            WorkerDataPlane(makeEndpoint: make, limits: options.limits, logger: logger,
                            toReplica: { compute.enqueue(.apply($0)) }, toCoordinator: { compute.relay($0) },
                            toOwnerOptimizer: { compute.enqueue(.applyOwned($0)) })
        }
        compute.dataPlane = dataPlane
    }

    /// Runs until the coordinator shuts the run down; throws if registration keeps failing or
    /// the coordinator refuses this worker for good.
    public func run() throws -> WorkerExit {
        let computeThread = Thread { [compute] in compute.run() }
        computeThread.name = "ambient-compute"
        computeThread.start()
        dataPlane?.start()
        defer {
            compute.enqueue(.stop)
            dataPlane?.stop()
        }
        var nextHeartbeat = 0.0
        // When the inbound queue was last found empty: silence is judged then, not now, so a
        // turn of this loop that waited for the CPU does not count the heartbeats still unread
        // in the queue as silence (as the coordinator does).
        var drainedAt = clock.now()
        while true {
            let now = clock.now()
            try drainOutbox()
            flushBacklog()
            if phase == .probing {
                if now - unregisteredSince > options.maxReconnectTime {
                    throw ClusterError("could not register with the coordinator for \(Int(options.maxReconnectTime)) s; is `ambient coordinator` running at the address given to --connect, and does it accept this worker's key?")
                }
                if now - lastProbe >= probeBackoff {
                    sendHello(.probe)
                    lastProbe = now
                    probeBackoff = min(probeBackoff * 2, 4)
                }
            } else {
                // A backlog already tells the coordinator this worker is alive once it moves.
                if now >= nextHeartbeat && backlog.isEmpty {
                    sendMessage(Message(header: header(.heartbeat)), keep: false)
                    nextHeartbeat = now + (welcome?.heartbeatInterval ?? options.heartbeatInterval)
                }
                if drainedAt - lastHeard > heartbeatTimeout {
                    logger.warning("coordinator silent: registering again", metadata: [
                        "silence": "\(String(format: "%.1f", drainedAt - lastHeard)) s"])
                    restartRegistration()
                }
            }
            let frames: [[UInt8]]?
            do {
                frames = try transport.receive(timeout: !backlog.isEmpty ? 0.005 : phase == .probing ? 0.05 : 0.1)
            } catch {
                throw ClusterError("worker transport failed: \(error)")
            }
            guard let frames else {
                drainedAt = clock.now()
                continue
            }
            if let exit = try handle(frames) { return exit }
        }
    }

    // MARK: I/O thread

    /// A header from this worker (it also starts the data plane's messages); payloads go without
    /// checksums when `WorkerCompute.linksSealed`.
    private func header(_ type: MessageType, step: Int = 0, shard: Int = 0, version: Int = 0) -> MessageHeader {
        MessageHeader(type: type, flags: compute.linksSealed ? .uncheckedPayload : [], runID: welcome?.runID ?? 0,
                      coordinatorIncarnation: coordinatorIncarnation,
                      senderID: welcome?.workerID ?? 0, senderIncarnation: options.incarnation, step: UInt64(step),
                      shard: UInt32(shard), shardCount: UInt32(welcome?.shardCount ?? 0), parameterVersion: UInt64(version))
    }

    /// Sends, or keeps the message in the backlog when the socket is full and `keep` is true.
    private func sendMessage(_ m: Message, keep: Bool = true) {
        sendFrames(m.frames(), keep: keep)
    }

    private func sendFrames(_ frames: [[UInt8]], keep: Bool = true) {
        if !backlog.isEmpty {
            if keep { backlog.append(frames, now: clock.now()) }
            return
        }
        do {
            try transport.send(frames)
        } catch .full where keep {
            backlog.append(frames, now: clock.now())
        } catch {
            logger.debug("send failed", metadata: ["error": "\(error)"])
        }
    }

    private func flushBacklog() {
        _ = backlog.flush(now: clock.now()) { [logger, transport] (frames) throws(TransportError) in
            do throws(TransportError) {
                try transport.send(frames)
            } catch {
                if case .full = error { throw error }
                // Not a full queue: this message cannot go out; move on.
                logger.debug("send failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func sendHello(_ phase: HelloBody.Phase, datasetHash: String? = nil, replica: ReplicaDigest? = nil, ownerOptimizer: Bool? = nil) {
        let body = HelloBody(phase: phase, workerName: options.name, host: host, pid: getpid(),
                             protocolVersion: clusterProtocolVersion, runID: phase == .join ? welcome?.runID : nil,
                             datasetHash: datasetHash, threads: threads, dataAddress: dataPlane?.address, replica: replica,
                             ownerOptimizer: ownerOptimizer)
        // Probes repeat by themselves; a join must arrive.
        if let m = try? Message.control(header(.hello), body: body) { sendMessage(m, keep: phase != .probe) }
    }

    private func restartRegistration() {
        phase = .probing
        probeBackoff = 0.25
        lastProbe = -1e9
        unregisteredSince = clock.now()
        lastHeard = clock.now()
        heartbeatTimeout = options.coordinatorTimeout
        backlog.clear()
        compute.clearPending()
    }

    /// Handles one message; returns an exit when the run is over.
    private func handle(_ frames: [[UInt8]]) throws -> WorkerExit? {
        let message: Message
        do {
            message = try Message.decode(frames: frames, limits: options.limits, sealedLink: transport.sealed)
        } catch {
            logger.warning("rejected frame from coordinator", metadata: ["reason": "\(error)"])
            return nil
        }
        let h = message.header
        lastHeard = clock.now()
        if coordinatorIncarnation != 0 && h.coordinatorIncarnation != coordinatorIncarnation && phase != .probing {
            logger.notice("coordinator restarted: registering again", metadata: [
                "old": "\(coordinatorIncarnation)", "new": "\(h.coordinatorIncarnation)"])
            coordinatorIncarnation = h.coordinatorIncarnation
            restartRegistration()
        }
        switch h.type {
        case .welcome:
            guard phase == .probing, let body = try? message.decodeJSON(WelcomeBody.self, limits: options.limits) else { return nil }
            if let problem = body.problem { throw ClusterError("the coordinator sent an invalid welcome: \(problem)") }
            welcome = body
            coordinatorIncarnation = h.coordinatorIncarnation
            heartbeatTimeout = body.coordinatorTimeout
            phase = .building
            compute.enqueue(.build(body))
        case .reject:
            let body = try? message.decodeJSON(RejectBody.self, limits: options.limits)
            let reason = body?.reason ?? "unreadable reason"
            if body?.rejoin ?? true {
                logger.notice("coordinator asked to register again", metadata: ["reason": "\(reason)"])
                restartRegistration()
            } else {
                throw ClusterError("the coordinator refused this worker: \(reason)")
            }
        case .parameters:
            guard phase == .joining || phase == .ready else { return nil }
            compute.enqueue(.load(message))
        // Updates and assignments may arrive right behind the parameters, before the compute
        // thread has loaded them: the task queue keeps them in order behind the load.
        case .update:
            guard phase == .joining || phase == .ready else { return nil }
            compute.enqueue(.apply(message))
        case .assign:
            guard phase == .joining || phase == .ready, let body = try? message.decodeJSON(AssignBody.self, limits: options.limits),
                  body.isValid(shardCount: welcome?.shardCount ?? 0) else { return nil }
            StepTrace.mark("worker \(welcome?.workerID ?? 0)", "assign", step: body.step)
            if let owners = body.owners, let welcome {
                guard let dataPlane else {
                    throw ClusterError("the coordinator runs the sharded reduction (range owners) but this worker has no data endpoint")
                }
                var template = header(.gradient)
                template.coordinatorIncarnation = h.coordinatorIncarnation
                // Before the compute task: the map routes this step's chunks.
                dataPlane.submit(.configure(step: body.step, version: body.parameterVersion, owners: owners,
                                            me: welcome.workerID, template: template))
            }
            compute.enqueue(.compute(step: body.step, shards: body.shards, version: body.parameterVersion,
                             checksum: body.parameterChecksum, header: h, owners: body.owners))
        case .shutdown:
            let body = try? message.decodeJSON(ShutdownBody.self, limits: options.limits)
            logger.notice("coordinator ended the run", metadata: ["reason": "\(body?.reason ?? "?")"])
            return body?.success == false ? .stopped(body?.reason ?? "stopped") : .finished
        case .heartbeat:
            break
        default:
            logger.debug("ignored message", metadata: ["type": "\(h.type)"])
        }
        return nil
    }

    private func drainOutbox() throws {
        for item in compute.takeOutcomes() {
            switch item {
            case let .built(hash, replica, ownerOptimizer):
                guard phase == .building else { continue }
                if hash != welcome?.datasetHash {
                    throw ClusterError("this worker's data has hash \(hash) but the coordinator's has \(welcome?.datasetHash ?? "?"): every worker must read the same data")
                }
                phase = .joining
                sendHello(.join, datasetHash: hash, replica: replica, ownerOptimizer: ownerOptimizer && options.ownerOptimizer)
            case let .buildFailed(why):
                throw ClusterError("cannot build the run's workload on this worker: \(why)")
            case let .loaded(version):
                if phase == .joining {
                    phase = .ready
                    logger.notice("joined", metadata: ["worker": "\(options.name)#\(welcome?.workerID ?? 0)", "version": "\(version)"])
                }
            case let .send(frames):
                sendFrames(frames)
            case let .outOfSync(body):
                if let m = try? Message.control(header(.checksumReport, version: body.parameterVersion), body: body) { sendMessage(m) }
            }
        }
    }
}
