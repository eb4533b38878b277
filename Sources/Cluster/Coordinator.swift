import Foundation
import Logging
import TensorCore
import Wire

/// The coordinator: admits workers, cuts every step into fixed shards and assigns them,
/// reduces shard gradients in shard order, applies the optimiser, broadcasts the update,
/// detects dead and hung workers and reassigns their shards, and checkpoints.
///
/// Single-threaded: `run()` owns the transport. Everything it depends on is passed in
/// (transport, workload, clock, logger, checkpoint store), so tests run it in-process.
public final class Coordinator: @unchecked Sendable {
    public let workload: any CoordinatorWorkload
    let transport: any ServerTransport
    public let options: CoordinatorOptions
    let checkpoints: CheckpointStore?
    let incarnation: UInt64
    var logger: Logger
    let clock: any Clock
    let codec: any GradientCodec
    /// Called for every cluster event (from the coordinator's thread).
    public var onEvent: (@Sendable (ClusterEvent) -> Void)?
    /// Polled between messages: true stops the run gracefully (checkpoint of the last applied
    /// step, workers told to stop) and `run()` throws `CoordinatorStopped`.
    public var shouldStop: (@Sendable () -> Bool)?

    let members: Membership
    /// The assignment epoch: every `assign` message carries a new one, and a gradient counts
    /// only with the generation of the assignment that gave its shard to its sender.
    var generation: UInt32 = 0
    var current: StepState?
    /// The chunks gradients and updates travel in; the reducer sums them in shard order.
    let plan: ChunkPlan
    let reducer: ShardOrderReducer
    let scratch: UnsafeMutablePointer<Float>
    var deadlines: StepDeadlines
    /// The step this coordinator started (or resumed) at.
    var firstStep = 0
    var fatal: ClusterError?
    private var statsLock = NSLock()
    private var _stats = CoordinatorStats()
    /// Checksum of the master parameters at the current version (sent with assignments).
    var parameterChecksum: UInt64 = 0
    private var abortRequested = false
    private var nextHeartbeat = 0.0
    /// When the inbound queue was last found empty: every message sent before then has been read.
    var drainedAt = 0.0
    /// The newest message from any worker read before the queue was last found empty.
    var heardWhenDrained = 0.0
    /// The checkpoint being written on its own thread, whether one is due before the next
    /// step starts, and why the last one failed.
    var checkpointInFlight: CheckpointWriter?
    var checkpointDue = false
    var checkpointError: (any Error)?
    /// The parameters message of one version (see `parametersMessage`).
    var parametersCache: (version: Int, message: Message)?
    /// The replica digest of one version (see `replicaDigest`).
    var replicaDigestCache: ReplicaDigest?
    /// The range owner map of the sharded reduction, kept from step to step while its owners live.
    var ownerMap: RangeOwnerMap?
    /// The operator was told once that a worker without a data endpoint keeps the reduction here.
    var toldNoOwners = false
    /// Whether the last planned map had its owners apply the optimiser (logged when it changes).
    var ownersAppliedLast: Bool?
    /// Writes a snapshot into the store (on the checkpoint's thread); tests slow it down.
    var writeCheckpointFile: @Sendable (CheckpointStore, StateSnapshot, Int) throws -> String = { try $0.write($1, step: $2) }

    public init(workload: any CoordinatorWorkload, transport: any ServerTransport, options: CoordinatorOptions,
                checkpoints: CheckpointStore?, incarnation: UInt64, logger: Logger, clock: any Clock = MonotonicClock()) throws {
        self.workload = workload
        self.transport = transport
        self.options = options
        self.checkpoints = checkpoints
        self.incarnation = incarnation
        self.logger = logger
        self.clock = clock
        // The coordinator applies what the workers decode.
        codec = try broadcastCodec(uplink: options.codec, shardCount: workload.shardCount)
        plan = try ChunkPlan(ranges: workload.chunkRanges, parameterCount: workload.parameterCount)
        reducer = ShardOrderReducer(plan: plan, shardCount: workload.shardCount)
        scratch = .allocate(capacity: workload.parameterCount)
        deadlines = StepDeadlines(initial: options.initialStepDeadline, factor: options.deadlineFactor, minimum: options.minimumDeadline)
        members = Membership(now: clock.now())
    }

    deinit {
        scratch.deallocate()
    }

    /// Makes `run()` return at once, without checkpoint, final weights or shutdown messages, as
    /// if the process had died (workers keep running and re-register with the next coordinator).
    /// Safe from any thread. Fault-injection tests use it in-process; SIGKILL does the same to a
    /// real coordinator.
    public func requestAbort() {
        statsLock.lock()
        abortRequested = true
        statsLock.unlock()
    }

    var isAborting: Bool {
        statsLock.lock(); defer { statsLock.unlock() }
        return abortRequested
    }

    /// A copy of the counters (safe from any thread).
    public var stats: CoordinatorStats {
        statsLock.lock(); defer { statsLock.unlock() }
        return _stats
    }

    func count(_ change: (inout CoordinatorStats) -> Void) {
        statsLock.lock()
        change(&_stats)
        statsLock.unlock()
    }

    func event(_ kind: ClusterEvent.Kind, worker: String = "", step: Int? = nil, _ detail: String) {
        onEvent?(ClusterEvent(time: Date().timeIntervalSince1970, kind: kind, step: step ?? current?.step ?? workload.version,
                              worker: worker, detail: detail))
    }

    // MARK: Run

    /// Restores the newest verifying checkpoint, runs every remaining step, writes the final
    /// checkpoint and tells workers to shut down. Throws on a fatal condition.
    public func run() throws {
        if let store = checkpoints, let found = store.loadNewest(skipped: { [logger] why in
            logger.warning("skipping checkpoint", metadata: ["reason": "\(why)"])
        }) {
            try workload.restore(checkpoint: found.snapshot)
            parameterChecksum = workload.parameterChecksum
            logger.notice("resumed", metadata: ["checkpoint": "\(found.path)", "step": "\(workload.version)",
                                                 "incarnation": "\(incarnation)"])
            event(.restore, "resumed from \(found.path) at step \(workload.version)")
        }
        firstStep = workload.version
        event(.start, "coordinator incarnation \(incarnation), \(workload.totalSteps) steps, \(workload.shardCount) shards, codec \(codec.name)")
        nextHeartbeat = clock.now()
        drainedAt = clock.now()
        heardWhenDrained = members.lastHeard
        parameterChecksum = workload.parameterChecksum
        // The full state every joiner receives is built before any worker waits for it: built
        // on the first join, it kept this thread from its heartbeats for 17 s at 8 simulated
        // hosts (debug build, loaded machine), every worker's coordinatorTimeout (15 s) ran out
        // meanwhile, and all of them registered again.
        if workload.version < workload.totalSteps { _ = parametersMessage() }
        while workload.version < workload.totalSteps {
            if isAborting { return abandonCheckpoint() }
            if shouldStop?() == true {
                var path: String?
                if let store = checkpoints { try checkpointNow(store); path = store.list().first?.path }
                event(.fatal, "stopped on request at step \(workload.version)")
                shutdownWorkers(reason: "the coordinator was stopped; restart it to resume", success: false)
                throw CoordinatorStopped(step: workload.version, checkpoint: path)
            }
            if let fatal {
                event(.fatal, fatal.message)
                shutdownWorkers(reason: fatal.message, success: false)
                throw fatal
            }
            try serve()
            let now = clock.now()
            if current == nil {
                if checkpointDue, let store = checkpoints {
                    // Between steps, so the snapshot is of one version; written while the
                    // next step runs.
                    checkpointDue = false
                    try startCheckpoint(store)
                    continue
                }
                startStepIfPossible(now)
            } else {
                checkDeadline()
            }
            if members.live.isEmpty && now - members.lastHeard > options.noWorkerTimeout {
                fatal = ClusterError("no worker has been available for \(Int(options.noWorkerTimeout)) s; start workers with `ambient worker --connect ...` (or raise --no-worker-timeout)")
            }
        }
        if let store = checkpoints {
            try checkpointNow(store)
        }
        if isAborting { return abandonCheckpoint() }
        try workload.finish()
        event(.finish, "finished \(workload.totalSteps) steps")
        shutdownWorkers(reason: "run finished", success: true)
    }

    /// One turn of the loop's housekeeping: at most one message, queued sends, heartbeats,
    /// silent workers, and the end of a checkpoint being written.
    func serve() throws {
        let received: (peer: PeerID, frames: [[UInt8]])?
        do {
            received = try transport.receive(timeout: 0.05)
        } catch {
            throw ClusterError("coordinator transport failed: \(error)")
        }
        if let (peer, frames) = received { handle(peer, frames) }
        let now = clock.now()
        if received == nil {
            drainedAt = now
            heardWhenDrained = members.lastHeard
        }
        flushBacklogs(now)
        if now >= nextHeartbeat {
            sendHeartbeats()
            nextHeartbeat = now + options.heartbeatInterval
        }
        checkLiveness()
        finishCheckpointIfWritten()
    }

    // MARK: Messages

    /// A header from this coordinator; on sealed links its payloads go without checksums.
    func header(_ type: MessageType, step: Int = 0, version: Int = 0, shard: Int = 0) -> MessageHeader {
        MessageHeader(type: type, flags: transport.sealed ? .uncheckedPayload : [], generation: generation, runID: options.runID,
                      coordinatorIncarnation: incarnation,
                      senderID: 0, senderIncarnation: incarnation, step: UInt64(step), shard: UInt32(shard),
                      shardCount: UInt32(workload.shardCount), parameterVersion: UInt64(version))
    }

    @discardableResult
    func send(_ message: Message, to record: WorkerRecord) -> Bool {
        send(message, to: record.peer, label: record.label)
    }

    /// Sends or, when the worker's queue is full, keeps the message in its backlog (a worker
    /// that is slow to read is not a dead one). False only when the peer is gone.
    @discardableResult
    func send(_ message: Message, to peer: PeerID, label: String) -> Bool {
        let record = members[peer]
        if let record, !record.backlog.isEmpty {
            record.backlog.append(message.frames(), now: clock.now())
            return true
        }
        do {
            try transport.send(message.frames(), to: peer)
            return true
        } catch .full {
            guard let record else { return true }   // a reply to an unknown peer: not worth keeping
            record.backlog.append(message.frames(), now: clock.now())
            count { $0.backpressure += 1 }
            return true
        } catch {
            logger.debug("send failed", metadata: ["worker": "\(label)", "type": "\(message.header.type)", "error": "\(error)"])
            return false
        }
    }

    /// Sends what the workers' sockets would not take before. A backlog that stands still while
    /// its worker keeps talking is a busy path, not a dead reader (a worker reads in the loop that
    /// sends its heartbeats): at 8 simulated hosts every worker's queue stood behind the full
    /// state messages of the joins on host 0's link for 4 s, and all were dropped at once as
    /// "not reading". It is dropped when it stood still for `coordinatorTimeout`, the silence
    /// after which the worker itself gives this coordinator up and registers again; a worker
    /// that is silent too is dropped by `checkLiveness` at the heartbeat timeout.
    private func flushBacklogs(_ now: Double) {
        for w in members.all where !w.backlog.isEmpty {
            let outcome = w.backlog.flush(now: now) { (frames) throws(TransportError) in try transport.send(frames, to: w.peer) }
            if case .failed = outcome {
                w.backlog.clear()
                drop(w, reason: "unreachable while sending queued messages")
            } else if w.backlog.isStalled(now: now, timeout: options.coordinatorTimeout) {
                let n = w.backlog.count, waited = now - w.backlog.since
                w.backlog.clear()
                drop(w, reason: String(format: "not reading: %d messages queued for %.1f s", n, waited))
            }
        }
    }

    func sendControl<T: Encodable>(_ type: MessageType, _ body: T, to peer: PeerID, label: String) {
        guard let m = try? Message.control(header(type, step: current?.step ?? workload.version, version: workload.version), body: body) else { return }
        send(m, to: peer, label: label)
    }

    func reject(_ peer: PeerID, label: String, reason: String, rejoin: Bool) {
        sendControl(.reject, RejectBody(reason: reason, rejoin: rejoin), to: peer, label: label)
    }

    // MARK: Liveness

    /// Heartbeats to every worker; not behind a backlog, where one would tell the worker
    /// nothing the queued messages do not (and would grow the backlog of a slow path).
    private func sendHeartbeats() {
        let m = Message(header: header(.heartbeat, step: current?.step ?? workload.version, version: workload.version))
        for w in members.all where w.backlog.isEmpty && !send(m, to: w) {
            drop(w, reason: "unreachable (heartbeat send failed)")
        }
    }

    /// Silence is judged at the last moment the inbound queue was empty, not now: when this
    /// thread was busy (parameters for several joiners, a burst of gradients), the heartbeats of
    /// live workers wait unread in the queue, and judging them "now" dropped workers that had
    /// kept talking (found at 8 simulated hosts: "no message for 4.1 s" during the joins).
    ///
    /// And silence is a worker's alone: it is measured up to the newest message from any worker,
    /// not up to now. When nothing arrives from anybody, the fault is most likely on this side
    /// (this host's link or ZeroMQ's I/O thread busy with the full state of eight joiners, this
    /// process starved of CPU): at 8 simulated hosts on 2 loaded cores all eight workers were
    /// dropped at once, "no message for 4.0 s", again and again, and the first step never
    /// completed. A worker dead among live ones is still dropped at the heartbeat timeout
    /// (the others' heartbeats move the reference); when nobody has been heard from for
    /// `coordinatorTimeout` (after which live workers register again by themselves), silence is
    /// measured up to now again.
    private func checkLiveness() {
        let reference = judgedAt
        for w in members.silent(now: reference, timeout: options.heartbeatTimeout) {
            drop(w, reason: String(format: "no message for %.1f s while others were heard (heartbeat timeout %.1f s)",
                                   reference - w.lastSeen, options.heartbeatTimeout))
        }
    }

    /// The time up to which silence and lateness are judged (see `checkLiveness`): the newest
    /// message from any worker read before the inbound queue was last empty (messages read
    /// since may have others' heartbeats behind them), or when it was last empty if nobody had
    /// been heard from for `coordinatorTimeout` by then.
    var judgedAt: Double {
        drainedAt - heardWhenDrained > options.coordinatorTimeout ? drainedAt : min(drainedAt, heardWhenDrained)
    }

    /// Removes a worker and reassigns what it owed. It is told to register again in case it
    /// is alive after all (a paused process that resumes).
    func drop(_ record: WorkerRecord, reason: String) {
        guard members.isCurrent(record) else { return }
        forget(record, remove: true, reason: "dropped")
        count { $0.drops += 1 }
        logger.warning("dropped worker", metadata: ["worker": "\(record.label)", "step": "\(current?.step ?? workload.version)",
                                                    "reason": "\(reason)", "workers": "\(members.live.count)"])
        event(.drop, worker: record.label, reason)
        reject(record.peer, label: record.label, reason: "dropped: \(reason); register again", rejoin: true)
    }

    /// The one way a worker leaves the run or its membership: removed from the table
    /// (`remove`: drop, failed join) or only un-joined (it registers again on the same
    /// connection). Either way the shards it owed go back to the pool at once, so no shard is
    /// ever owned by a worker that will not compute it.
    func forget(_ record: WorkerRecord, remove: Bool, reason: String) {
        let owed = members.forget(record, remove: remove)
        if restartStepWithout(record) { return }   // every shard is assigned again
        if !owed.isEmpty { reassign(owed, reason: "\(record.label) \(reason)") }
    }

    private func shutdownWorkers(reason: String, success: Bool) {
        for w in members.all {
            sendControl(.shutdown, ShutdownBody(reason: reason, success: success), to: w.peer, label: w.label)
        }
        awaitDepartures()
    }

    /// Keeps the connections open after the shutdown until every worker has gone quiet (a worker
    /// exits as soon as it reads the shutdown; a live one sends a heartbeat every interval) or
    /// `shutdownGrace` has passed. A coordinator that closed right after sending lost the
    /// message now and then: the bytes reached the worker's socket, the connection closed
    /// 1-2 ms later, and the worker never saw them (packet capture, ~1 run in 6 on a loaded
    /// machine), so it waited for a coordinator that was gone: 15 s of silence, registration
    /// attempts for --max-reconnect seconds, exit 1. Letting the workers close first fixes it.
    private func awaitDepartures() {
        let start = clock.now()
        let quiet = 1.5 * options.heartbeatInterval
        var lastHeard = Dictionary(uniqueKeysWithValues: members.peers.map { ($0, start) })
        while !lastHeard.isEmpty && clock.now() - start < options.shutdownGrace {
            let received = try? transport.receive(timeout: min(0.05, quiet / 2))
            let now = clock.now()
            flushBacklogs(now)
            if let (peer, _) = received ?? nil, lastHeard[peer] != nil { lastHeard[peer] = now }
            lastHeard = lastHeard.filter { now - $0.value < quiet }
        }
    }
}
