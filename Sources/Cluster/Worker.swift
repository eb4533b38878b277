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

    enum Task {
        case build(WelcomeBody)
        case load(Message)
        case apply(Message)
        case compute(step: Int, shards: [Int], version: Int, checksum: UInt64, header: MessageHeader)
        case stop
    }

    enum Outcome {
        case built(datasetHash: String)
        case buildFailed(String)
        case loaded(version: Int)
        case send([[UInt8]])
        case outOfSync(ChecksumReportBody)
    }

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

    // Shared between threads (under `lock`)
    private let lock = NSCondition()
    private var tasks: [(task: Task, epoch: Int)] = []
    private var outbox: [(outcome: Outcome, epoch: Int)] = []
    /// Counts registrations. Every task carries the epoch it was queued in and every outcome
    /// the epoch of its task: what a task of an earlier registration produces (a gradient for
    /// a coordinator that has since restarted, a load that raced with a reset) is discarded
    /// instead of reaching the coordinator this worker now talks to.
    private var epoch = 0

    // Compute thread state
    /// The epoch of the task the compute thread is running (read by its compute slots).
    private var taskEpoch = 0

    private var workload: (any WorkerWorkload)?
    /// The chunks of the update to the next version received so far. They are applied
    /// together when the last one arrives: until then this worker may still be asked to
    /// (re)compute shards of the current step, which needs the parameters of the current version.
    private var updates: UpdateAssembler?
    private let feedbacks: FeedbackStore
    private var builtFor: (runID: UInt64, datasetHash: String, spec: [UInt8])?

    public init(transport: any ClientTransport, options: WorkerOptions, threads: Int, logger: Logger,
                clock: any Clock = MonotonicClock(), factory: @escaping Factory) {
        self.transport = transport
        self.options = options
        self.factory = factory
        self.logger = logger
        self.clock = clock
        self.threads = threads
        lastHeard = clock.now()
        unregisteredSince = clock.now()
        heartbeatTimeout = options.coordinatorTimeout
        feedbacks = FeedbackStore(logger: logger)
    }

    /// Runs until the coordinator shuts the run down; throws if registration keeps failing or
    /// the coordinator refuses this worker for good.
    public func run() throws -> WorkerExit {
        let computeThread = Thread { [self] in computeLoop() }
        computeThread.name = "ambient-compute"
        computeThread.start()
        defer { enqueue(.stop) }
        var nextHeartbeat = 0.0
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
                if now - lastHeard > heartbeatTimeout {
                    logger.warning("coordinator silent: registering again", metadata: [
                        "silence": "\(String(format: "%.1f", now - lastHeard)) s"])
                    restartRegistration()
                }
            }
            let frames: [[UInt8]]?
            do {
                frames = try transport.receive(timeout: !backlog.isEmpty ? 0.005 : phase == .probing ? 0.05 : 0.1)
            } catch {
                throw ClusterError("worker transport failed: \(error)")
            }
            if let frames, let exit = try handle(frames) { return exit }
        }
    }

    // MARK: I/O thread

    private func header(_ type: MessageType, step: Int = 0, shard: Int = 0, version: Int = 0) -> MessageHeader {
        MessageHeader(type: type, runID: welcome?.runID ?? 0, coordinatorIncarnation: coordinatorIncarnation,
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

    private func sendHello(_ phase: HelloBody.Phase, datasetHash: String? = nil) {
        let body = HelloBody(phase: phase, workerName: options.name, host: host, pid: getpid(),
                             protocolVersion: clusterProtocolVersion, runID: phase == .join ? welcome?.runID : nil,
                             datasetHash: datasetHash, threads: threads)
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
        clearPendingCompute()
    }

    /// Handles one message; returns an exit when the run is over.
    private func handle(_ frames: [[UInt8]]) throws -> WorkerExit? {
        let message: Message
        do {
            message = try Message.decode(frames: frames, limits: options.limits)
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
            enqueue(.build(body))
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
            enqueue(.load(message))
        // Updates and assignments may arrive right behind the parameters, before the compute
        // thread has loaded them: the task queue keeps them in order behind the load.
        case .update:
            guard phase == .joining || phase == .ready else { return nil }
            enqueue(.apply(message))
        case .assign:
            guard phase == .joining || phase == .ready, let body = try? message.decodeJSON(AssignBody.self, limits: options.limits),
                  body.isValid(shardCount: welcome?.shardCount ?? 0) else { return nil }
            enqueue(.compute(step: body.step, shards: body.shards, version: body.parameterVersion,
                             checksum: body.parameterChecksum, header: h))
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
        lock.lock()
        let current = epoch
        let items = outbox.filter { $0.epoch == current }.map(\.outcome)
        outbox.removeAll()
        lock.unlock()
        for item in items {
            switch item {
            case let .built(hash):
                guard phase == .building else { continue }
                if hash != welcome?.datasetHash {
                    throw ClusterError("this worker's data has hash \(hash) but the coordinator's has \(welcome?.datasetHash ?? "?"): every worker must read the same data")
                }
                phase = .joining
                sendHello(.join, datasetHash: hash)
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

    // MARK: Compute thread

    private func enqueue(_ task: Task) {
        lock.lock()
        tasks.append((task, epoch))
        lock.signal()
        lock.unlock()
    }

    private func clearPendingCompute() {
        lock.lock()
        epoch += 1
        tasks.removeAll { if case .stop = $0.task { return false } else { return true } }
        outbox.removeAll()
        lock.unlock()
    }

    private func post(_ outcome: Outcome) {
        lock.lock()
        outbox.append((outcome, taskEpoch))
        lock.unlock()
        transport.wake()
    }

    private func computeLoop() {
        while true {
            lock.lock()
            while tasks.isEmpty { lock.wait() }
            let (task, queuedIn) = tasks.removeFirst()
            taskEpoch = queuedIn
            lock.unlock()
            switch task {
            case .stop:
                return
            case let .build(body):
                updates = nil   // the welcome's chunk plan may differ
                if let b = builtFor, b.datasetHash == body.datasetHash, b.spec == body.workloadSpec, workload != nil {
                    post(.built(datasetHash: b.datasetHash))
                    continue
                }
                do {
                    let w = try factory(body)
                    workload = w
                    builtFor = (body.runID, w.datasetHash, body.workloadSpec)
                    post(.built(datasetHash: w.datasetHash))
                } catch {
                    post(.buildFailed("\(error)"))
                }
            case let .load(message):
                load(message)
            case let .apply(message):
                apply(message)
            case let .compute(step, shards, version, checksum, assignHeader):
                compute(step: step, shards: shards, version: version, checksum: checksum, assignHeader: assignHeader)
            }
        }
    }

    private func load(_ message: Message) {
        guard let workload else { return }
        do {
            guard let meta = try message.decodeMeta(StateMeta.self, limits: options.limits) else {
                throw ClusterError("parameters message without a valid state description")
            }
            let flat = try message.decodeTensor()
            let ranges = try meta.sectionRanges(valueCount: flat.count).get()
            let sections = zip(meta.sections, ranges).map { StateSnapshot.Section(name: $0, values: Array(flat[$1])) }
            try workload.restore(replica: StateSnapshot(sections: sections, counters: meta.counters))
            updates?.reset()
            feedbacks.clear()
            guard workload.parameterChecksum == meta.parameterChecksum else {
                throw ClusterError("parameters differ from the coordinator's checksum after loading")
            }
            post(.loaded(version: workload.version))
        } catch {
            logger.error("cannot load parameters", metadata: ["error": "\(error)"])
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: 0, expected: 0,
                                               reason: "could not load parameters: \(error)")))
        }
    }

    /// Takes one chunk of the update to the next version; when every chunk of the welcome's
    /// plan is in, applies the whole update and advances the version.
    private func apply(_ message: Message) {
        guard let workload, let welcome else { return }
        let h = message.header
        guard h.parameterVersion == UInt64(workload.version + 1) else {
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: workload.parameterChecksum, expected: 0,
                                               reason: "update to version \(h.parameterVersion) but this worker holds version \(workload.version)")))
            return
        }
        if updates == nil {
            guard let plan = welcome.chunkPlan(parameterCount: workload.parameterCount) else {
                post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: 0, expected: 0,
                                                   reason: "the welcome's chunk offsets do not fit the model's \(workload.parameterCount) parameters")))
                return
            }
            updates = UpdateAssembler(plan: plan)
        }
        switch updates!.accept(keyOffset: h.keyOffset, keyCount: h.keyCount, decode: { (out) throws(WireError) in try message.decodeTensor(into: out) }) {
        case .success(true):
            updates!.buffer.withUnsafeBufferPointer { workload.apply(gradient: $0.baseAddress!) }
        case .success(false):
            break
        case let .failure(refusal):
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: 0, expected: 0, reason: "\(refusal)")))
        }
    }

    private func compute(step: Int, shards: [Int], version: Int, checksum: UInt64, assignHeader: MessageHeader) {
        guard let workload, let welcome else { return }
        guard version == workload.version else {
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: workload.parameterChecksum, expected: checksum,
                                               reason: "assigned step \(step) at version \(version), this worker holds version \(workload.version)")))
            return
        }
        let mine = workload.parameterChecksum
        guard mine == checksum else {
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: mine, expected: checksum,
                                               reason: "parameter checksum differs from the coordinator's at version \(version)")))
            return
        }
        let codec: any GradientCodec
        do {
            codec = try CodecRegistry.codec(named: welcome.codec)
        } catch {
            post(.buildFailed("unknown codec \(welcome.codec)"))
            return
        }
        guard let chunks = welcome.chunkPlan(parameterCount: workload.parameterCount)?.ranges else {
            post(.buildFailed("the welcome's chunk offsets do not fit the model's \(workload.parameterCount) parameters"))
            return
        }
        let t = max(1, workload.parallelism)
        // Up to t shards at once, one per compute slot; each slot streams its own chunks.
        for first in stride(from: 0, to: shards.count, by: t) {
            let round = Array(shards[first..<min(first + t, shards.count)])
            Parallel.forEach(round.count) { slot in
                computeAndSend(step: step, shard: round[slot], slot: slot, version: version, chunks: chunks,
                               codec: codec, welcome: welcome, workload: workload, assignHeader: assignHeader)
            }
        }
    }

    private func computeAndSend(step: Int, shard k: Int, slot: Int, version: Int, chunks: [Range<Int>], codec: any GradientCodec,
                                welcome: WelcomeBody, workload: any WorkerWorkload, assignHeader: MessageHeader) {
        let buffer = workload.gradientBuffer(slot: slot)
        if !codec.isLossless, let dir = welcome.residualDirectory { feedbacks.restore(shard: k, step: step, chunks: chunks, directory: dir) }
        do {
            // Each chunk is sent as soon as the backward pass has finished it; the last one to
            // finish is held back a moment so it can carry the shard's loss and compute time.
            func encode(_ c: Int, meta: GradientMeta?) -> [[UInt8]] {
                var h = MessageHeader(type: .gradient, generation: assignHeader.generation, runID: welcome.runID,
                                      coordinatorIncarnation: assignHeader.coordinatorIncarnation, senderID: welcome.workerID,
                                      senderIncarnation: options.incarnation, step: UInt64(step), shard: UInt32(k),
                                      shardCount: UInt32(welcome.shardCount), parameterVersion: UInt64(version))
                h.keyOffset = UInt64(chunks[c].lowerBound)
                let values = UnsafeBufferPointer(rebasing: buffer[chunks[c]])
                let metaBytes = meta.flatMap { try? Message.jsonPayload($0) } ?? []
                var m = Message(header: h, tensor: values, codec: codec, meta: metaBytes)
                if !codec.isLossless {
                    // Error feedback: what the lossy codec drops now is added to this shard's next gradient.
                    let box = feedbacks.feedback(shard: k, chunk: c, step: step, count: values.count)
                    var bytes: [UInt8] = []
                    do {
                        try box.state.compensateAndEncode(values, codec: codec, into: &bytes)
                        h.codec = codec.id
                        h.keyCount = UInt64(values.count)
                        h.rawLength = UInt64(values.count) * 4
                        m = Message(header: h, payload: bytes, meta: metaBytes)
                    } catch {
                        // A non-finite gradient goes out as it is: the coordinator rejects it and the shard is recomputed.
                        box.state.reset()
                    }
                }
                return m.frames()
            }
            func send(_ c: Int, meta: GradientMeta?) { post(.send(encode(c, meta: meta))) }
            var held: Int?
            let meta = workload.computeShard(step: step, shard: k, slot: slot, chunks: chunks) { c in
                if let previous = held { send(previous, meta: nil) }
                held = c
            }
            if let last = held {
                if !codec.isLossless, let dir = welcome.residualDirectory, let every = welcome.checkpointEvery,
                   every > 0, (step + 1) % every == 0 {
                    // The last chunk's encoding finalises the shard's residuals; they are on disk
                    // before that chunk leaves, so a committed checkpoint always has them.
                    let frames = encode(last, meta: meta)
                    feedbacks.save(shard: k, step: step + 1, chunks: chunks, directory: dir)
                    post(.send(frames))
                } else {
                    send(last, meta: meta)
                }
            }
        }
    }
}

