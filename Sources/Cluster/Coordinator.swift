import Foundation
import Logging
import TensorCore
import Wire

/// Timing, limits and policies of a coordinator (docs/operations.md explains each).
public struct CoordinatorOptions: Sendable {
    public var runID: UInt64
    /// Codec of the update broadcast (workers choose theirs for gradients from the welcome).
    public var codec: String = "lz4"
    public var heartbeatInterval: Double = 0.5
    /// A worker silent for this long is dropped.
    public var heartbeatTimeout: Double = 4
    /// Told to workers: re-register after hearing nothing for this long.
    public var coordinatorTimeout: Double = 15
    /// Deadline of a step before shard timings exist.
    public var initialStepDeadline: Double = 60
    /// Deadline = max(minimumDeadline, factor x median shard time x shards held by the worker).
    public var deadlineFactor: Double = 10
    public var minimumDeadline: Double = 3
    /// Workers that must have joined before the first step starts.
    public var minWorkers: Int = 1
    /// Give up when no worker is available for this long.
    public var noWorkerTimeout: Double = 300
    /// Checkpoint every this many steps (0: only at the end).
    public var checkpointEvery: Int = 0
    /// Where workers write error-feedback residuals before checkpoint steps (lossy codecs
    /// only; see WelcomeBody.residualDirectory). Nil: residuals are not checkpointed.
    public var residualDirectory: String?
    /// A shard whose gradient is rejected (non-finite) this many times stops the run.
    public var maxShardAttempts: Int = 3
    /// After the shutdown messages, wait at most this long for the workers to leave.
    public var shutdownGrace: Double = 3
    public var limits: WireLimits

    public init(runID: UInt64, limits: WireLimits) {
        self.runID = runID
        self.limits = limits
    }
}

/// Something the coordinator did that an operator may want to know (events.jsonl, reports).
public struct ClusterEvent: Sendable, Codable {
    public enum Kind: String, Sendable, Codable {
        case start, restore, join, drop, reassign, reject, nonFinite, checkpoint, finish, fatal
    }
    public var time: Double
    public var kind: Kind
    public var step: Int
    public var worker: String
    public var detail: String
}

/// Counters of everything the coordinator rejected or recovered from.
public struct CoordinatorStats: Sendable {
    public var framesRejected: [String: Int] = [:]
    public var staleMessages = 0
    /// Sends that met a full queue and waited in a worker's backlog.
    public var backpressure = 0
    public var duplicateGradients = 0
    public var nonFiniteGradients = 0
    public var unknownPeers = 0
    public var joins = 0
    public var drops = 0
    public var reassignedShards = 0
    public var checkpoints = 0
    /// Full parameter copies sent to repair a worker that diverged or missed an update.
    public var repairs = 0
    public var stepsCompleted = 0
    public var totalRejected: Int { framesRejected.values.reduce(0, +) }
}

/// The coordinator stopped on request (Ctrl-C, SIGTERM) after checkpointing.
public struct CoordinatorStopped: Error, CustomStringConvertible, Sendable {
    public let step: Int
    public let checkpoint: String?
    public var description: String {
        "stopped at step \(step); " + (checkpoint.map { "checkpoint \($0) written: run the same command again to resume" } ?? "no checkpoint store")
    }
}

/// A fatal condition of the run.
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The coordinator: admits workers, cuts every step into fixed shards and assigns them,
/// reduces shard gradients in shard order, applies the optimiser, broadcasts the update,
/// detects dead and hung workers and reassigns their shards, and checkpoints.
///
/// Single-threaded: `run()` owns the transport. Everything it depends on is passed in
/// (transport, workload, clock, logger, checkpoint store), so tests run it in-process.
public final class Coordinator: @unchecked Sendable {
    final class WorkerRecord {
        let peer: PeerID
        let id: UInt32
        var name: String
        var incarnation: UInt64
        var joined = false
        var lastSeen: Double
        /// Shards of the current step this worker still owes.
        var pending: Set<Int> = []
        /// Messages its socket would not take yet (high-water mark), oldest first, and since
        /// when the oldest has waited. They go out in order before anything newer.
        var backlog: [[[UInt8]]] = []
        var backlogSince: Double = 0
        init(peer: PeerID, id: UInt32, name: String, incarnation: UInt64, now: Double) {
            self.peer = peer
            self.id = id
            self.name = name
            self.incarnation = incarnation
            lastSeen = now
        }
        var label: String { "\(name)#\(id)" }
    }

    /// One step in flight. Gradients arrive per (shard, chunk); each chunk of the reduced
    /// gradient is the sum of its shards in shard order, formed as soon as the shards before
    /// it are in, then broadcast and applied, while other chunks are still on their way.
    struct StepState {
        let step: Int
        let startedAt: Double
        var deadline: Double
        /// Current owner of each shard.
        var owner: [PeerID?]
        /// received[k][c]: chunk c of shard k is in (accepted).
        var received: [[Bool]]
        /// Chunks still missing per shard (0: the shard is complete).
        var missing: [Int]
        /// Per chunk: the next shard to add into the sum.
        var nextShard: [Int]
        /// Decoded chunks that arrived before their turn, by shard * chunkCount + chunk.
        var buffered: [Int: [Float]] = [:]
        var chunksDone = 0
        var attempts: [Int]
        var metaCounted: [Bool]
        /// When each shard was last assigned (for its turnaround time).
        var assignedAt: [Double]
        var loss = 0.0
        var terms: [String: Double] = [:]
        var computeSeconds = 0.0
        var bytesIn = 0
        var bytesOut = 0
        var sumOfSquares = 0.0
        var done: Bool { chunksDone == nextShard.count }
        func isComplete(_ k: Int) -> Bool { missing[k] == 0 }
    }

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

    private var workers: [PeerID: WorkerRecord] = [:]
    private var nextWorkerID: UInt32 = 1
    private var generation: UInt32 = 0
    private var current: StepState?
    private let sum: UnsafeMutablePointer<Float>
    private let scratch: UnsafeMutablePointer<Float>
    /// The chunks gradients and updates travel in, and their index by start offset.
    private let chunks: [Range<Int>]
    private let chunkIndex: [Int: Int]
    /// Chunks of the current step already broadcast (a joiner is sent them after the parameters).
    private var chunkDone: [Bool]
    private var shardTimes: [Double] = []
    /// The step this coordinator started (or resumed) at.
    private var firstStep = 0
    private var lastWorkerSeenAt: Double
    private var fatal: ClusterError?
    private var statsLock = NSLock()
    private var _stats = CoordinatorStats()
    /// Checksum of the master parameters at the current version (sent with assignments).
    private var parameterChecksum: UInt64 = 0
    private var abortRequested = false

    public init(workload: any CoordinatorWorkload, transport: any ServerTransport, options: CoordinatorOptions,
                checkpoints: CheckpointStore?, incarnation: UInt64, logger: Logger, clock: any Clock = MonotonicClock()) throws {
        self.workload = workload
        self.transport = transport
        self.options = options
        self.checkpoints = checkpoints
        self.incarnation = incarnation
        self.logger = logger
        self.clock = clock
        // The update is a sum of S shard gradients. With top-k on the uplink (fraction f) it has
        // at most S k non-zeros, so top-k with fraction min(1, S f) carries it exactly; other
        // codecs are used as they are (the coordinator applies what the workers decode).
        let uplink = try CodecRegistry.codec(named: options.codec)
        if let topk = uplink as? TopKCodec {
            self.codec = TopKCodec(fraction: min(1, topk.fraction * Double(workload.shardCount)))
        } else {
            self.codec = uplink
        }
        sum = .allocate(capacity: max(workload.parameterCount, 1))
        scratch = .allocate(capacity: max(workload.parameterCount, 1))
        let ranges = workload.chunkRanges
        guard !ranges.isEmpty, ranges.first!.lowerBound == 0, ranges.last!.upperBound == workload.parameterCount,
              zip(ranges, ranges.dropFirst()).allSatisfy({ $0.upperBound == $1.lowerBound }), ranges.allSatisfy({ !$0.isEmpty }) else {
            throw ClusterError("the workload's gradient chunks must cover 0..<\(workload.parameterCount) contiguously")
        }
        chunks = ranges
        chunkIndex = Dictionary(uniqueKeysWithValues: ranges.enumerated().map { ($1.lowerBound, $0) })
        chunkDone = [Bool](repeating: false, count: ranges.count)
        lastWorkerSeenAt = clock.now()
    }

    deinit {
        sum.deallocate()
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

    private var isAborting: Bool {
        statsLock.lock(); defer { statsLock.unlock() }
        return abortRequested
    }

    /// A copy of the counters (safe from any thread).
    public var stats: CoordinatorStats {
        statsLock.lock(); defer { statsLock.unlock() }
        return _stats
    }

    private func count(_ change: (inout CoordinatorStats) -> Void) {
        statsLock.lock()
        change(&_stats)
        statsLock.unlock()
    }

    private func event(_ kind: ClusterEvent.Kind, worker: String = "", _ detail: String) {
        onEvent?(ClusterEvent(time: Date().timeIntervalSince1970, kind: kind, step: current?.step ?? workload.version,
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
        var nextHeartbeat = clock.now()
        parameterChecksum = workload.parameterChecksum
        while workload.version < workload.totalSteps {
            if isAborting { return }
            if shouldStop?() == true {
                var path: String?
                if let store = checkpoints { try writeCheckpoint(store); path = store.list().first?.path }
                event(.fatal, "stopped on request at step \(workload.version)")
                shutdownWorkers(reason: "the coordinator was stopped; restart it to resume", success: false)
                throw CoordinatorStopped(step: workload.version, checkpoint: path)
            }
            if let fatal {
                event(.fatal, fatal.message)
                shutdownWorkers(reason: fatal.message, success: false)
                throw fatal
            }
            let received: (peer: PeerID, frames: [[UInt8]])?
            do {
                received = try transport.receive(timeout: 0.05)
            } catch {
                throw ClusterError("coordinator transport failed: \(error)")
            }
            if let (peer, frames) = received { handle(peer, frames) }
            let now = clock.now()
            flushBacklogs(now)
            if now >= nextHeartbeat {
                sendHeartbeats()
                nextHeartbeat = now + options.heartbeatInterval
            }
            checkLiveness(now)
            if current == nil { startStepIfPossible(now) } else { checkDeadline(now) }
            if liveWorkers.isEmpty && now - lastWorkerSeenAt > options.noWorkerTimeout {
                fatal = ClusterError("no worker has been available for \(Int(options.noWorkerTimeout)) s; start workers with `ambient worker --connect ...` (or raise --no-worker-timeout)")
            }
        }
        if let store = checkpoints {
            try writeCheckpoint(store)
        }
        try workload.finish()
        event(.finish, "finished \(workload.totalSteps) steps")
        shutdownWorkers(reason: "run finished", success: true)
    }

    private var liveWorkers: [WorkerRecord] {
        workers.values.filter(\.joined).sorted { $0.id < $1.id }
    }

    // MARK: Messages

    private func header(_ type: MessageType, step: Int = 0, version: Int = 0, shard: Int = 0) -> MessageHeader {
        MessageHeader(type: type, generation: generation, runID: options.runID, coordinatorIncarnation: incarnation,
                      senderID: 0, senderIncarnation: incarnation, step: UInt64(step), shard: UInt32(shard),
                      shardCount: UInt32(workload.shardCount), parameterVersion: UInt64(version))
    }

    @discardableResult
    private func send(_ message: Message, to record: WorkerRecord) -> Bool {
        send(message, to: record.peer, label: record.label)
    }

    /// Sends or, when the worker's queue is full, keeps the message in its backlog (a worker
    /// that is slow to read is not a dead one). False only when the peer is gone.
    @discardableResult
    private func send(_ message: Message, to peer: PeerID, label: String) -> Bool {
        let record = workers[peer]
        if let record, !record.backlog.isEmpty {
            record.backlog.append(message.frames())
            return true
        }
        do {
            try transport.send(message.frames(), to: peer)
            return true
        } catch .full {
            guard let record else { return true }   // a reply to an unknown peer: not worth keeping
            record.backlog.append(message.frames())
            record.backlogSince = clock.now()
            count { $0.backpressure += 1 }
            return true
        } catch {
            logger.debug("send failed", metadata: ["worker": "\(label)", "type": "\(message.header.type)", "error": "\(error)"])
            return false
        }
    }

    /// Sends what the workers' sockets would not take before. A worker whose backlog has not
    /// moved for the heartbeat timeout is not reading: it is dropped.
    private func flushBacklogs(_ now: Double) {
        for w in workers.values where !w.backlog.isEmpty {
            var sent = 0
            var gone = false
            for frames in w.backlog {
                do {
                    try transport.send(frames, to: w.peer)
                    sent += 1
                } catch .full {
                    break
                } catch {
                    gone = true
                    break
                }
            }
            if sent > 0 {
                w.backlog.removeFirst(sent)
                w.backlogSince = now
            }
            if gone {
                w.backlog = []
                drop(w, reason: "unreachable while sending queued messages")
            } else if !w.backlog.isEmpty && now - w.backlogSince > options.heartbeatTimeout {
                let n = w.backlog.count
                w.backlog = []
                drop(w, reason: String(format: "not reading: %d messages queued for %.1f s", n, now - w.backlogSince))
            }
        }
    }

    private func sendControl<T: Encodable>(_ type: MessageType, _ body: T, to peer: PeerID, label: String) {
        guard let m = try? Message.control(header(type, step: current?.step ?? workload.version, version: workload.version), body: body) else { return }
        send(m, to: peer, label: label)
    }

    private func reject(_ peer: PeerID, label: String, reason: String, rejoin: Bool) {
        sendControl(.reject, RejectBody(reason: reason, rejoin: rejoin), to: peer, label: label)
    }

    private func handle(_ peer: PeerID, _ frames: [[UInt8]]) {
        let message: Message
        do {
            message = try Message.decode(frames: frames, limits: options.limits)
        } catch {
            count { $0.framesRejected[error.kind, default: 0] += 1 }
            logger.debug("rejected frame", metadata: ["peer": "\(peer)", "reason": "\(error)"])
            return
        }
        let h = message.header
        if h.type != .hello && h.runID != options.runID {
            count { $0.framesRejected["wrongRun", default: 0] += 1 }
            // Told to register again, a worker holds nothing: what it owed goes to others now.
            if let known = workers[peer] { forget(known, remove: true, reason: "sent a message for another run") }
            reject(peer, label: peer.description, reason: "message for run \(h.runID), this coordinator runs \(options.runID)", rejoin: true)
            return
        }
        if let record = workers[peer] {
            record.lastSeen = clock.now()
            lastWorkerSeenAt = record.lastSeen
        }
        // Gradients and reports answer an assignment of an earlier coordinator incarnation: they
        // were computed (or queued in the socket) before this coordinator started. Answering them
        // with "register again" would reset a worker that has already joined this incarnation,
        // so they are dropped without a reply.
        if (h.type == .gradient || h.type == .checksumReport) && h.coordinatorIncarnation != incarnation {
            count { $0.staleMessages += 1 }
            logger.debug("dropped a message for an earlier coordinator incarnation", metadata: [
                "peer": "\(peer)", "type": "\(h.type)", "incarnation": "\(h.coordinatorIncarnation)", "step": "\(h.step)"])
            return
        }
        switch h.type {
        case .hello:
            handleHello(peer, message)
        case .heartbeat:
            if workers[peer] == nil {
                count { $0.unknownPeers += 1 }
                reject(peer, label: peer.description, reason: "unknown worker (coordinator restarted or worker dropped): register again", rejoin: true)
            }
        case .gradient:
            handleGradient(peer, message)
        case .checksumReport:
            guard let record = workers[peer], record.joined else {
                reject(peer, label: peer.description, reason: "unknown worker: register again", rejoin: true)
                return
            }
            let body = try? message.decodeJSON(ChecksumReportBody.self, limits: options.limits)
            logger.warning("worker out of sync: sending full parameters", metadata: [
                "worker": "\(record.label)", "step": "\(workload.version)", "reason": "\(body?.reason ?? "?")"])
            count { $0.repairs += 1 }
            // It did not compute what it was assigned: give those shards to others.
            let owed = record.pending.sorted()
            record.pending = []
            if !owed.isEmpty { reassign(owed, reason: "\(record.label) is being repaired") }
            sendParameters(to: record)
        case .error:
            let text = String(decoding: message.payload.prefix(2000), as: UTF8.self)
            if let record = workers[peer] { drop(record, reason: "worker reported an error: \(text)") }
        default:
            count { $0.framesRejected["unexpectedType", default: 0] += 1 }
        }
    }

    private func handleHello(_ peer: PeerID, _ message: Message) {
        let body: HelloBody
        do {
            body = try message.decodeJSON(HelloBody.self, limits: options.limits)
        } catch {
            count { $0.framesRejected["badHello", default: 0] += 1 }
            if let known = workers[peer] { forget(known, remove: true, reason: "sent a malformed hello") }
            reject(peer, label: peer.description, reason: "malformed hello: \(error)", rejoin: false)
            return
        }
        guard body.protocolVersion == clusterProtocolVersion else {
            if let known = workers[peer] { forget(known, remove: true, reason: "speaks another protocol version") }
            reject(peer, label: body.workerName, reason: "protocol version \(body.protocolVersion), coordinator speaks \(clusterProtocolVersion): use the same ambient build everywhere", rejoin: false)
            event(.reject, worker: body.workerName, "protocol version \(body.protocolVersion)")
            return
        }
        let now = clock.now()
        // A new incarnation of a worker we know under the same name replaces the old one.
        for old in workers.values where old.name == body.workerName && old.peer != peer {
            drop(old, reason: "replaced by a new incarnation (\(peer))")
        }
        let record: WorkerRecord
        if let r = workers[peer] {
            record = r
        } else {
            record = WorkerRecord(peer: peer, id: nextWorkerID, name: body.workerName,
                                  incarnation: message.header.senderIncarnation, now: now)
            nextWorkerID += 1
            workers[peer] = record
        }
        lastWorkerSeenAt = now
        switch body.phase {
        case .probe:
            if record.joined {
                // Messages on one connection arrive in order, so a probe behind the join was sent
                // after it: the worker has reset its registration (it saw a reject or a long
                // silence) and will not compute what it holds. Take its shards back and welcome
                // it again; it receives full parameters when it joins.
                logger.notice("joined worker registers again", metadata: [
                    "worker": "\(record.label)", "step": "\(current?.step ?? workload.version)"])
                event(.reject, worker: record.label, "registered again while joined")
                forget(record, remove: false, reason: "registers again")
            }
            var welcome = WelcomeBody(runID: options.runID, workerID: record.id, workloadSpec: workload.workloadSpec,
                                      datasetHash: workload.datasetHash, shardCount: workload.shardCount, codec: options.codec,
                                      heartbeatInterval: options.heartbeatInterval, coordinatorTimeout: options.coordinatorTimeout,
                                      chunkOffsets: chunks.map(\.lowerBound))
            if !codec.isLossless, options.checkpointEvery > 0, let dir = options.residualDirectory {
                welcome.residualDirectory = dir
                welcome.checkpointEvery = options.checkpointEvery
            }
            sendControl(.welcome, welcome, to: peer, label: record.label)
        case .join:
            // A join that fails validation forgets the worker, and with it the shards it held
            // if it had joined before on this connection (they once stayed owned by nobody
            // and the step waited forever).
            guard body.runID == options.runID else {
                forget(record, remove: true, reason: "joined another run")
                reject(peer, label: record.label, reason: "worker prepared run \(body.runID.map(String.init) ?? "none"), this is run \(options.runID): probe again", rejoin: true)
                return
            }
            guard body.datasetHash == workload.datasetHash else {
                forget(record, remove: true, reason: "joined with another dataset")
                let reason = "dataset hash \(body.datasetHash ?? "none") differs from the coordinator's \(workload.datasetHash): every worker must read the same data (same files, same corruption seed)"
                reject(peer, label: record.label, reason: reason, rejoin: false)
                event(.reject, worker: record.label, reason)
                logger.error("rejected worker", metadata: ["worker": "\(record.label)", "reason": "\(reason)"])
                return
            }
            if record.joined { return }
            if sendParameters(to: record) {
                record.joined = true
                generation &+= 1
                count { $0.joins += 1 }
                logger.notice("worker joined", metadata: ["worker": "\(record.label)", "peer": "\(peer)", "host": "\(body.host)",
                                                          "pid": "\(body.pid)", "step": "\(workload.version)", "workers": "\(liveWorkers.count)"])
                event(.join, worker: record.label, "host \(body.host) pid \(body.pid)")
                assignOrphans()
            }
        }
    }

    /// Sends the full replica state (parameters and optimiser moments).
    @discardableResult
    private func sendParameters(to record: WorkerRecord) -> Bool {
        let snapshot = workload.replicaSnapshot()
        var flat: [Float] = []
        flat.reserveCapacity(snapshot.elementCount)
        for s in snapshot.sections { flat += s.values }
        let meta = StateMeta(sections: snapshot.sections.map(\.name), counts: snapshot.sections.map(\.values.count),
                             counters: snapshot.counters, parameterChecksum: workload.parameterChecksum)
        guard let metaBytes = try? Message.jsonPayload(meta, maxBytes: options.limits.maxJSONBytes) else { return false }
        let m = flat.withUnsafeBufferPointer {
            // Always lossless: a replica must start bitwise equal to the coordinator's state.
            Message(header: header(.parameters, step: workload.version, version: workload.version), tensor: $0,
                    codec: LZ4Codec(), meta: metaBytes)
        }
        if !send(m, to: record) {
            drop(record, reason: "unreachable while sending parameters")
            return false
        }
        // Mid-step: the chunks of the update already broadcast follow, so this worker reaches
        // the next version with everyone else.
        if let state = current {
            for c in chunks.indices where chunkDone[c] {
                if !send(updateMessage(chunk: c, step: state.step), to: record) {
                    drop(record, reason: "unreachable while catching up")
                    return false
                }
            }
        }
        return true
    }

    // MARK: Steps

    private func startStepIfPossible(_ now: Double) {
        let live = liveWorkers
        let needed = workload.version == 0 ? options.minWorkers : 1
        guard live.count >= max(needed, 1) else { return }
        let s = workload.version
        let n = workload.shardCount, c = chunks.count
        current = StepState(step: s, startedAt: now, deadline: now + options.initialStepDeadline,
                            owner: [PeerID?](repeating: nil, count: n),
                            received: [[Bool]](repeating: [Bool](repeating: false, count: c), count: n),
                            missing: [Int](repeating: c, count: n), nextShard: [Int](repeating: 0, count: c),
                            attempts: [Int](repeating: 0, count: n), metaCounted: [Bool](repeating: false, count: n),
                            assignedAt: [Double](repeating: now, count: n))
        var plan: [PeerID: [Int]] = [:]
        for k in 0..<n {
            let w = live[k % live.count]
            plan[w.peer, default: []].append(k)
        }
        for w in live {
            guard let shards = plan[w.peer] else { continue }
            assign(shards, to: w)
        }
        updateDeadline(now)
    }

    private func assign(_ shards: [Int], to record: WorkerRecord) {
        guard workers[record.peer] === record, record.joined else {
            // Forgotten while this assignment was planned (a send to it failed): to the others.
            reassign(shards, reason: "\(record.label) left")
            return
        }
        guard var state = current else { return }
        let now = clock.now()
        for k in shards {
            state.owner[k] = record.peer
            state.assignedAt[k] = now
        }
        current = state
        record.pending.formUnion(shards)
        let body = AssignBody(step: state.step, shards: shards, parameterVersion: workload.version,
                              parameterChecksum: parameterChecksum)
        guard let m = try? Message.control(header(.assign, step: state.step, version: workload.version), body: body),
              send(m, to: record) else {
            drop(record, reason: "unreachable while assigning shards \(shards)")
            return
        }
    }

    /// Gives shards without a live owner to the least-loaded live workers.
    private func assignOrphans() {
        guard let state = current else { return }
        let orphans = (0..<state.owner.count).filter { k in
            !state.isComplete(k) && (state.owner[k].map { workers[$0]?.joined != true } ?? true)
        }
        guard !orphans.isEmpty else { return }
        reassign(orphans, reason: "no owner")
    }

    private func reassign(_ shards: [Int], reason: String, avoiding: PeerID? = nil) {
        var live = liveWorkers
        if live.count > 1, let avoid = avoiding { live.removeAll { $0.peer == avoid } }
        guard !live.isEmpty else {
            if var state = current {
                for k in shards { state.owner[k] = nil }
                current = state
            }
            logger.warning("no live worker to take shards", metadata: ["step": "\(current?.step ?? -1)", "shards": "\(shards)"])
            return
        }
        var plan: [PeerID: [Int]] = [:]
        var load = Dictionary(uniqueKeysWithValues: live.map { ($0.peer, $0.pending.count) })
        for k in shards {
            let target = live.min { (load[$0.peer]!, $0.id) < (load[$1.peer]!, $1.id) }!
            plan[target.peer, default: []].append(k)
            load[target.peer]! += 1
        }
        count { $0.reassignedShards += shards.count }
        for w in live {
            guard let ks = plan[w.peer] else { continue }
            logger.warning("reassigning shards", metadata: ["step": "\(current?.step ?? -1)", "shards": "\(ks)", "to": "\(w.label)", "reason": "\(reason)"])
            event(.reassign, worker: w.label, "shards \(ks): \(reason)")
            assign(ks, to: w)
        }
        updateDeadline(clock.now())
    }

    private func handleGradient(_ peer: PeerID, _ message: Message) {
        let h = message.header
        guard let record = workers[peer], record.joined else {
            count { $0.unknownPeers += 1 }
            reject(peer, label: peer.description, reason: "gradient from an unregistered worker: register again", rejoin: true)
            return
        }
        // Compared as the header's unsigned integers: nothing here converts a field that came
        // from the network (MessageHeader.decode also bounds them by 2^63 - 1).
        let k = Int(h.shard)
        guard var state = current, h.step == UInt64(state.step), h.parameterVersion == UInt64(workload.version),
              h.shardCount == UInt64(workload.shardCount), k < state.owner.count else {
            count { $0.staleMessages += 1 }
            logger.debug("dropped stale gradient", metadata: ["worker": "\(record.label)", "step": "\(h.step)", "shard": "\(h.shard)",
                                                              "version": "\(h.parameterVersion)"])
            return
        }
        guard let offset = Int(exactly: h.keyOffset), let c = chunkIndex[offset], h.keyCount == UInt64(chunks[c].count) else {
            count { $0.framesRejected["keyRange", default: 0] += 1 }
            return
        }
        guard !state.received[k][c], state.owner[k] == peer else {
            count { $0.duplicateGradients += 1 }
            logger.debug("dropped duplicate gradient", metadata: ["worker": "\(record.label)", "step": "\(h.step)", "shard": "\(k)", "chunk": "\(c)"])
            return
        }
        let range = chunks[c]
        do {
            try message.decodeTensor(into: UnsafeMutableBufferPointer(start: scratch, count: range.count))
        } catch {
            count { $0.framesRejected[error.kind, default: 0] += 1 }
            logger.warning("undecodable gradient", metadata: ["worker": "\(record.label)", "step": "\(h.step)", "shard": "\(k)", "error": "\(error)"])
            rejectShard(k, of: record, state: &state, reason: "undecodable gradient from \(record.label)")
            return
        }
        if let bad = firstNonFinite(scratch, range.count) {
            count { $0.nonFiniteGradients += 1 }
            let detail = "non-finite gradient (element \(range.lowerBound + bad)) for step \(state.step) shard \(k) from \(record.label): rejected, not applied"
            logger.error("rejected gradient", metadata: ["worker": "\(record.label)", "step": "\(state.step)", "shard": "\(k)",
                                                         "reason": "non-finite element \(range.lowerBound + bad)"])
            event(.nonFinite, worker: record.label, detail)
            rejectShard(k, of: record, state: &state, reason: "non-finite gradient from \(record.label)")
            return
        }
        logger.trace("accepted gradient chunk", metadata: ["worker": "\(record.label)", "peer": "\(peer)", "step": "\(state.step)",
                                                          "shard": "\(k)", "chunk": "\(c)", "codec": "\(h.codec)"])
        state.received[k][c] = true
        state.missing[k] -= 1
        if state.isComplete(k) { record.pending.remove(k) }
        state.bytesIn += message.payload.count
        // The meta frame travels on each shard's last chunk: the shard's loss, and its timing.
        if !state.metaCounted[k], let meta = try? message.decodeMeta(GradientMeta.self, limits: options.limits) {
            state.metaCounted[k] = true
            state.loss += meta.loss
            for (key, v) in meta.terms { state.terms[key, default: 0] += v }
            // The coordinator's own clock bounds what a worker reports: a compute time of 1e300
            // s (or NaN) from one peer would otherwise set every later deadline to infinity.
            let turnaround = clock.now() - state.assignedAt[k]
            let computeSeconds = meta.computeSeconds.isFinite ? min(max(meta.computeSeconds, 0), turnaround) : 0
            state.computeSeconds += computeSeconds
            // The deadline is derived from shard turnaround (assignment to its last chunk), not
            // compute time alone: a worker first applies the previous step's update, and that
            // share grows with the model and the load. With compute time only, healthy workers
            // of an 8.5M-parameter model on a loaded machine missed 3 s deadlines step after
            // step, were all dropped and re-synced, and the run stalled (cluster/compose.yaml's
            // defaults). The first step of this coordinator is not sampled: no worker applied
            // an update before it.
            if state.step > firstStep {
                shardTimes.append(turnaround)
                if shardTimes.count > 64 { shardTimes.removeFirst(shardTimes.count - 64) }
            }
            logger.debug("gradient", metadata: ["worker": "\(record.label)", "step": "\(state.step)", "shard": "\(k)",
                                                "since_start_ms": "\(Int((clock.now() - state.startedAt) * 1000))",
                                                "compute_ms": "\(Int(computeSeconds * 1000))"])
        }
        // Reduce in shard order, chunk by chunk.
        let chunkCount = chunks.count
        if k == state.nextShard[c] {
            accumulate(scratch, range: range, first: k == 0)
            state.nextShard[c] += 1
            while state.nextShard[c] < state.owner.count, let b = state.buffered.removeValue(forKey: state.nextShard[c] * chunkCount + c) {
                b.withUnsafeBufferPointer { accumulate($0.baseAddress!, range: range, first: false) }
                state.nextShard[c] += 1
            }
        } else {
            state.buffered[k * chunkCount + c] = Array(UnsafeBufferPointer(start: scratch, count: range.count))
        }
        let unreachable = state.nextShard[c] == state.owner.count ? completeChunk(c, state: &state) : []
        current = state
        // Dropped only now that the step's state is saved: a drop reassigns shards, and owners
        // changed inside completeChunk were overwritten by `state` above, so the new owner's
        // gradients counted as duplicates and it was dropped at the deadline too.
        for w in unreachable { drop(w, reason: "unreachable while sending the update of step \(state.step)") }
        if state.done { completeStep() }
    }

    /// A shard's gradient could not be used: the shard goes to another worker. Its chunks
    /// already accepted stay (gradients are deterministic); only the missing ones are taken.
    private func rejectShard(_ k: Int, of record: WorkerRecord, state: inout StepState, reason: String) {
        record.pending.remove(k)
        state.attempts[k] += 1
        current = state
        if state.attempts[k] >= options.maxShardAttempts {
            fatal = ClusterError("step \(state.step) shard \(k) produced a non-finite gradient \(state.attempts[k]) times: the model diverged or the data holds extreme values; lower the learning rate or check the data")
            return
        }
        reassign([k], reason: reason, avoiding: record.peer)
    }

    private func accumulate(_ g: UnsafePointer<Float>, range: Range<Int>, first: Bool) {
        let dst = sum + range.lowerBound
        if first { dst.update(from: g, count: range.count) } else { Float.axpy(1, g, dst, range.count) }
    }

    /// Chunk c of the reduced gradient is complete: broadcast it at once, so its transfer and
    /// the workers' optimiser step on it overlap the chunks still to come. (The coordinator
    /// applies the whole step at its end, so its own state is always at one version: joiners
    /// and checkpoints see a consistent state.)
    /// Returns the workers found unreachable, for the caller to drop once `state` is saved.
    private func completeChunk(_ c: Int, state: inout StepState) -> [WorkerRecord] {
        let range = chunks[c]
        let message = updateMessage(chunk: c, step: state.step)
        if !codec.isLossless {
            try? message.decodeTensor(into: UnsafeMutableBufferPointer(start: sum + range.lowerBound, count: range.count), codec: codec)
        }
        let norm = euclideanNorm(sum + range.lowerBound, range.count)
        state.sumOfSquares += norm * norm
        var unreachable: [WorkerRecord] = []
        for w in liveWorkers {
            if send(message, to: w) { state.bytesOut += message.payload.count } else { unreachable.append(w) }
        }
        state.chunksDone += 1
        chunkDone[c] = true
        return unreachable
    }

    /// The update message of chunk c of the current step (encoded from the reduced sum).
    private func updateMessage(chunk c: Int, step: Int) -> Message {
        let range = chunks[c]
        var h = header(.update, step: step, version: step + 1)
        h.keyOffset = UInt64(range.lowerBound)
        return Message(header: h, tensor: UnsafeBufferPointer(start: sum + range.lowerBound, count: range.count), codec: codec)
    }

    private func completeStep() {
        guard let state = current else { return }
        workload.apply(gradient: sum, range: 0..<workload.parameterCount)
        workload.finishStep()
        chunkDone = [Bool](repeating: false, count: chunks.count)
        parameterChecksum = workload.parameterChecksum
        let now = clock.now()
        logger.debug("step", metadata: ["step": "\(state.step)", "ms": "\(Int((now - state.startedAt) * 1000))"])
        count { $0.stepsCompleted += 1 }
        current = nil
        let summary = StepSummary(step: state.step, loss: state.loss, terms: state.terms, gradientNorm: state.sumOfSquares.squareRoot(),
                                  seconds: now - state.startedAt,
                                  computeSeconds: state.computeSeconds / Double(max(workload.shardCount, 1)),
                                  workers: liveWorkers.count, bytesIn: state.bytesIn, bytesOut: state.bytesOut)
        do {
            try workload.stepCompleted(summary)
        } catch {
            fatal = ClusterError("step \(state.step): \(error)")
            return
        }
        if let store = checkpoints, options.checkpointEvery > 0, workload.version % options.checkpointEvery == 0,
           workload.version < workload.totalSteps {
            do {
                try writeCheckpoint(store)
            } catch {
                fatal = ClusterError("\(error)")
            }
        }
    }

    private func writeCheckpoint(_ store: CheckpointStore) throws {
        let start = clock.now()
        let path = try store.write(workload.checkpointSnapshot(), step: workload.version)
        pruneResiduals(keeping: Set(store.list().map(\.step)))
        count { $0.checkpoints += 1 }
        logger.info("checkpoint", metadata: ["path": "\(path)", "step": "\(workload.version)",
                                             "seconds": "\(String(format: "%.2f", clock.now() - start))"])
        event(.checkpoint, "\(path)")
    }

    /// Removes the residual directories of checkpoints that are no longer kept (and of steps
    /// that never got a checkpoint, such as the step a crash interrupted).
    private func pruneResiduals(keeping steps: Set<Int>) {
        guard let dir = options.residualDirectory,
              let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix("step-") {
            guard let step = Int(name.dropFirst(5)), !steps.contains(step), step < workload.version else { continue }
            try? FileManager.default.removeItem(atPath: dir + "/" + name)
        }
    }

    // MARK: Liveness

    private func sendHeartbeats() {
        let m = Message(header: header(.heartbeat, step: current?.step ?? workload.version, version: workload.version))
        for w in workers.values where !send(m, to: w) {
            drop(w, reason: "unreachable (heartbeat send failed)")
        }
    }

    private func checkLiveness(_ now: Double) {
        for w in workers.values where now - w.lastSeen > options.heartbeatTimeout {
            drop(w, reason: String(format: "no message for %.1f s (heartbeat timeout %.1f s)", now - w.lastSeen, options.heartbeatTimeout))
        }
    }

    private func updateDeadline(_ now: Double) {
        guard var state = current else { return }
        guard shardTimes.count >= 3 else {
            state.deadline = max(state.deadline, now + options.initialStepDeadline)
            current = state
            return
        }
        let median = shardTimes.sorted()[shardTimes.count / 2]
        let maxLoad = liveWorkers.map(\.pending.count).max() ?? 1
        state.deadline = now + max(options.minimumDeadline, options.deadlineFactor * median * Double(max(maxLoad, 1)))
        current = state
    }

    private func checkDeadline(_ now: Double) {
        guard let state = current, now > state.deadline else { return }
        let late = workers.values.filter { !$0.pending.isEmpty }
        for w in late {
            drop(w, reason: String(format: "missed the deadline of step %d (%.1f s after start) with shards %@ pending",
                                   state.step, now - state.startedAt, "\(w.pending.sorted())"))
        }
        if late.isEmpty { updateDeadline(now) }
    }

    /// Removes a worker and reassigns what it owed. It is told to register again in case it
    /// is alive after all (a paused process that resumes).
    private func drop(_ record: WorkerRecord, reason: String) {
        guard workers[record.peer] === record else { return }
        forget(record, remove: true, reason: "dropped")
        count { $0.drops += 1 }
        logger.warning("dropped worker", metadata: ["worker": "\(record.label)", "step": "\(current?.step ?? workload.version)",
                                                    "reason": "\(reason)", "workers": "\(liveWorkers.count)"])
        event(.drop, worker: record.label, reason)
        reject(record.peer, label: record.label, reason: "dropped: \(reason); register again", rejoin: true)
    }

    /// The one way a worker leaves the run or its membership: removed from the table
    /// (`remove`: drop, failed join) or only un-joined (it registers again on the same
    /// connection). Either way the shards it owed go back to the pool at once, so no shard is
    /// ever owned by a worker that will not compute it.
    private func forget(_ record: WorkerRecord, remove: Bool, reason: String) {
        if remove {
            guard workers[record.peer] === record else { return }
            workers[record.peer] = nil
        }
        let wasJoined = record.joined
        record.joined = false
        if wasJoined || remove { generation &+= 1 }
        let owed = record.pending.sorted()
        record.pending = []
        if !owed.isEmpty { reassign(owed, reason: "\(record.label) \(reason)") }
    }

    private func shutdownWorkers(reason: String, success: Bool) {
        for w in workers.values {
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
        var lastHeard = Dictionary(uniqueKeysWithValues: workers.keys.map { ($0, start) })
        while !lastHeard.isEmpty && clock.now() - start < options.shutdownGrace {
            let received = try? transport.receive(timeout: min(0.05, quiet / 2))
            let now = clock.now()
            flushBacklogs(now)
            if let (peer, _) = received ?? nil, lastHeard[peer] != nil { lastHeard[peer] = now }
            lastHeard = lastHeard.filter { now - $0.value < quiet }
        }
    }
}
