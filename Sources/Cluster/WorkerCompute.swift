import Foundation
import Logging
import TensorCore
import Wire

/// A worker's compute thread: owns the workload and runs the tasks the I/O thread queues, in
/// order (build the workload from a welcome, load a full state, apply update chunks, compute
/// assigned shards and stream their gradient chunks), and hands back outcomes (messages to
/// send, joins, out-of-sync reports) through an outbox the I/O thread drains.
final class WorkerCompute: @unchecked Sendable {
    enum Task {
        case build(WelcomeBody)
        case load(Message)
        case apply(Message)
        /// The reduced gradient of a chunk this worker owns under a map whose owners apply the
        /// optimiser: update it, send the new parameters to the other workers, keep them for the update.
        case applyOwned(Message)
        case compute(step: Int, shards: [Int], version: Int, checksum: UInt64, header: MessageHeader, owners: RangeOwnersBody?)
        case stop
    }

    enum Outcome {
        case built(datasetHash: String, replica: ReplicaDigest, ownerOptimizer: Bool)
        case buildFailed(String)
        case loaded(version: Int)
        case send([[UInt8]])
        case outOfSync(ChecksumReportBody)
    }

    let options: WorkerOptions
    let logger: Logger
    let factory: Worker.Factory
    /// Ends the I/O thread's wait for the socket (an outcome is ready).
    let wake: @Sendable () -> Void

    // Shared with the I/O thread (under `lock`)
    private let lock = NSCondition()
    private var tasks: [(task: Task, epoch: Int)] = []
    private var outbox: [(outcome: Outcome, epoch: Int)] = []
    /// Counts registrations. Every task carries the epoch it was queued in and every outcome
    /// the epoch of its task: what a task of an earlier registration produces (a gradient for
    /// a coordinator that has since restarted, a load that raced with a reset) is discarded
    /// instead of reaching the coordinator this worker now talks to.
    private var epoch = 0

    // Compute thread only
    /// The epoch of the task the compute thread is running (read by its compute slots).
    private var taskEpoch = 0
    private var workload: (any WorkerWorkload)?
    /// The welcome of the registration the workload was built for.
    private var welcome: WelcomeBody?
    /// The chunks of the update to the next version received so far. They are applied
    /// together when the last one arrives: until then this worker may still be asked to
    /// (re)compute shards of the current step, which needs the parameters of the current version.
    private var updates = WorkerUpdates()
    private let feedbacks: FeedbackStore
    /// Sharded reduction: where gradient chunks go (set before the threads start), and
    /// assignments that arrived before this replica applied the previous step's update (updates
    /// and assignments travel on different connections then), run once it has.
    var dataPlane: WorkerDataPlane?
    private var deferred: [Task] = []
    private var builtFor: (runID: UInt64, datasetHash: String, spec: [UInt8])?
    /// The replica's parameter checksum at a version, taken right after the state changed (an
    /// update applied, a state loaded): the worker then waits for its next assignment anyway,
    /// where computing it when the assignment arrives put a pass over every parameter (7.7 ms of
    /// a 210 ms loopback step, scripts/step-timeline) ahead of the step's compute.
    private var checksumAtVersion: (version: Int, checksum: UInt64)?

    /// The worker's link to the coordinator is sealed (`ClientTransport.sealed`).
    let controlSealed: Bool

    /// Payloads may go without checksums: both of this worker's links, to the coordinator and (when
    /// it has one) its data endpoint, are sealed. One rule for all its messages, since a relay
    /// forwards data-plane frames to the coordinator.
    var linksSealed: Bool { controlSealed && (dataPlane?.sealed ?? true) }

    init(options: WorkerOptions, logger: Logger, factory: @escaping Worker.Factory, controlSealed: Bool,
         wake: @escaping @Sendable () -> Void) {
        self.options = options
        self.controlSealed = controlSealed
        self.logger = logger
        self.factory = factory
        self.wake = wake
        feedbacks = FeedbackStore(logger: logger)
    }

    func enqueue(_ task: Task) {
        lock.lock()
        tasks.append((task, epoch))
        lock.signal()
        lock.unlock()
    }

    /// A new registration: tasks queued for the earlier one are dropped (but not `stop`), and
    /// whatever they still produce is discarded.
    func clearPending() {
        lock.lock()
        epoch += 1
        tasks.removeAll { if case .stop = $0.task { return false } else { return true } }
        outbox.removeAll()
        lock.unlock()
    }

    /// The outcomes of tasks of the current registration, oldest first (for the I/O thread).
    func takeOutcomes() -> [Outcome] {
        lock.lock()
        defer { lock.unlock() }
        let current = epoch
        let items = outbox.filter { $0.epoch == current }.map(\.outcome)
        outbox.removeAll()
        return items
    }

    /// A message for the coordinator from another thread (the data plane's reduced chunks).
    func relay(_ frames: [[UInt8]]) {
        lock.lock()
        outbox.append((.send(frames), epoch))
        lock.unlock()
        wake()
    }

    private func post(_ outcome: Outcome) {
        lock.lock()
        outbox.append((outcome, taskEpoch))
        lock.unlock()
        wake()
    }

    /// The compute thread's loop: runs tasks in order until `stop`.
    func run() {
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
                welcome = body
                updates = WorkerUpdates()   // the welcome's chunk plan may differ
                if let b = builtFor, b.datasetHash == body.datasetHash, b.spec == body.workloadSpec, let workload {
                    if let plan = body.chunkPlan(parameterCount: workload.parameterCount) {
                        dataPlane?.submit(.plan(plan, codec: body.codec, shardCount: body.shardCount))
                    }
                    if let why = openDataEndpoint(body) {
                        post(.buildFailed(why))
                        continue
                    }
                    // The replica kept from the last registration: if it is still the
                    // coordinator's, the join needs no state transfer.
                    post(.built(datasetHash: b.datasetHash, replica: Self.digest(of: workload), ownerOptimizer: workload is any RangeOwnerOptimizer))
                    continue
                }
                do {
                    let w = try factory(body)
                    workload = w
                    checksumAtVersion = nil
                    builtFor = (body.runID, w.datasetHash, body.workloadSpec)
                    if let plan = body.chunkPlan(parameterCount: w.parameterCount) {
                        dataPlane?.submit(.plan(plan, codec: body.codec, shardCount: body.shardCount))
                    }
                    if let why = openDataEndpoint(body) {
                        post(.buildFailed(why))
                        continue
                    }
                    post(.built(datasetHash: w.datasetHash, replica: Self.digest(of: w), ownerOptimizer: w is any RangeOwnerOptimizer))
                } catch {
                    post(.buildFailed("\(error)"))
                }
            case let .load(message):
                load(message)
            case let .apply(message):
                apply(message)
            case let .applyOwned(message):
                apply(message, owned: true)
            case .compute:
                runCompute(task)
            }
        }
    }

    /// Opens the data endpoint for a welcome of the sharded reduction (nil), or says why not.
    private func openDataEndpoint(_ body: WelcomeBody) -> String? {
        guard body.owners != nil, let dataPlane else { return nil }
        if body.dataKey != nil && body.dataKey?.keyPair == nil { return "the welcome's data key is not a Z85 key pair" }
        do {
            try dataPlane.open(key: body.dataKey?.keyPair)
            return nil
        } catch {
            return "cannot open this worker's data endpoint: \(error)"
        }
    }

    static func digest(of workload: any WorkerWorkload) -> ReplicaDigest {
        ReplicaDigest(version: workload.version, digest: workload.replicaSnapshot().digest)
    }

    private func load(_ message: Message) {
        guard let workload else { return }
        checksumAtVersion = nil   // a restore that fails half-way leaves neither state
        do {
            guard let meta = try message.decodeMeta(StateMeta.self, limits: options.limits) else {
                throw ClusterError("parameters message without a valid state description")
            }
            if let keep = meta.keep {
                // No tensor: the coordinator holds what this replica held when it joined. It still
                // must (an update cannot have been applied in between: they follow this message).
                let mine = Self.digest(of: workload)
                guard mine == keep else {
                    throw ClusterError("told to keep replica version \(keep.version) digest \(keep.digest), but this worker holds version \(mine.version) digest \(mine.digest)")
                }
            } else {
                let flat = try message.decodeTensor()
                let ranges = try meta.sectionRanges(valueCount: flat.count).get()
                let sections = zip(meta.sections, ranges).map { StateSnapshot.Section(name: $0, values: Array(flat[$1])) }
                try workload.restore(replica: StateSnapshot(sections: sections, counters: meta.counters))
            }
            updates.reset()
            feedbacks.clear()
            guard refreshChecksum(workload) == meta.parameterChecksum else {
                throw ClusterError("parameters differ from the coordinator's checksum after loading")
            }
            post(.loaded(version: workload.version))
            runDeferred()
        } catch {
            logger.error("cannot load parameters", metadata: ["error": "\(error)"])
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: 0, expected: 0,
                                               reason: "could not load parameters: \(error)")))
        }
    }

    /// Takes one chunk of the update to the next version (`WorkerUpdates`; `owned`: the reduced
    /// gradient of a chunk this worker owns, whose new parameters go to the data plane); when every
    /// chunk of the welcome's plan is in, applies the whole update and advances the version.
    private func apply(_ message: Message, owned: Bool = false) {
        guard let workload, let welcome else { return }
        let outcome = updates.take(message, owned: owned, sharded: welcome.owners != nil, workload: workload,
                                   plan: welcome.chunkPlan(parameterCount: workload.parameterCount), codec: welcome.codec) {
            [dataPlane] header, parameters in dataPlane?.submit(.parameters(header, parameters.frames()))
        }
        switch outcome {
        case .ignored, .pending:
            break
        case let .refused(reason, versionMismatch):
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: versionMismatch ? replicaChecksum(of: workload) : 0,
                                               expected: 0, reason: reason)))
        case .complete:
            StepTrace.mark("worker \(welcome.workerID)", "update-complete", step: workload.version)
            updates.apply(to: workload)
            refreshChecksum(workload)
            StepTrace.mark("worker \(welcome.workerID)", "applied", step: workload.version - 1)
            runDeferred()
        }
    }

    /// The replica's parameter checksum, computed now and remembered for its version.
    @discardableResult
    private func refreshChecksum(_ workload: any WorkerWorkload) -> UInt64 {
        let c = workload.parameterChecksum
        checksumAtVersion = (workload.version, c)
        return c
    }

    /// The replica's parameter checksum: the one taken when it reached this version, if any.
    /// Only this thread changes the replica, and every change (apply, load, a new workload)
    /// refreshes or clears it.
    private func replicaChecksum(of workload: any WorkerWorkload) -> UInt64 {
        if let c = checksumAtVersion, c.version == workload.version { return c.checksum }
        return refreshChecksum(workload)
    }

    private func runCompute(_ task: Task) {
        guard case let .compute(step, shards, version, checksum, assignHeader, owners) = task, let workload, let welcome else { return }
        if welcome.owners != nil, version == workload.version + 1 {
            deferred.append(task)   // the previous step's update is still arriving from its owners
            return
        }
        compute(step: step, shards: shards, version: version, checksum: checksum, assignHeader: assignHeader, owners: owners)
    }

    /// Runs the assignments that waited for the update just applied (or the state just loaded).
    private func runDeferred() {
        let waiting = deferred
        deferred = []
        for task in waiting { runCompute(task) }
    }

    private func compute(step: Int, shards: [Int], version: Int, checksum: UInt64, assignHeader: MessageHeader, owners: RangeOwnersBody?) {
        guard let workload, let welcome else { return }
        StepTrace.mark("worker \(welcome.workerID)", "compute-start", step: step)
        guard version == workload.version else {
            post(.outOfSync(ChecksumReportBody(parameterVersion: workload.version, checksum: replicaChecksum(of: workload), expected: checksum,
                                               reason: "assigned step \(step) at version \(version), this worker holds version \(workload.version)")))
            return
        }
        let mine = replicaChecksum(of: workload)
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
        var map: RangeOwnerMap?
        if let owners, let plan = welcome.chunkPlan(parameterCount: workload.parameterCount) {
            switch owners.map(plan: plan) {
            case let .success(m): map = m
            case let .failure(error):
                post(.buildFailed("the coordinator's range owner map: \(error)"))
                return
            }
        }
        StepTrace.mark("worker \(welcome.workerID)", "checksum-checked", step: step)
        let t = max(1, workload.parallelism)
        // Up to t shards at once, one per compute slot; each slot streams its own chunks.
        for first in stride(from: 0, to: shards.count, by: t) {
            let round = Array(shards[first..<min(first + t, shards.count)])
            Parallel.forEach(round.count) { slot in
                computeAndSend(step: step, shard: round[slot], slot: slot, version: version, chunks: chunks,
                               codec: codec, welcome: welcome, workload: workload, assignHeader: assignHeader, map: map)
            }
        }
        StepTrace.mark("worker \(welcome.workerID)", "compute-end", step: step)
    }

    private func computeAndSend(step: Int, shard k: Int, slot: Int, version: Int, chunks: [Range<Int>], codec: any GradientCodec,
                                welcome: WelcomeBody, workload: any WorkerWorkload, assignHeader: MessageHeader, map: RangeOwnerMap?) {
        let buffer = workload.gradientBuffer(slot: slot)
        if !codec.isLossless, let dir = welcome.residualDirectory { feedbacks.restore(shard: k, step: step, chunks: chunks, directory: dir) }
        do {
            // Each chunk is sent as soon as the backward pass has finished it; the last one to
            // finish is held back a moment so it can carry the shard's loss and compute time.
            let messages = ShardMessages(welcome: welcome, assignment: assignHeader, ownerGeneration: map?.generation,
                                         senderIncarnation: options.incarnation, step: step, shard: k, version: version,
                                         sealed: linksSealed)
            func encode(_ c: Int, meta: GradientMeta?) -> [[UInt8]] {
                let values = UnsafeBufferPointer(rebasing: buffer[chunks[c]])
                let feedback = codec.isLossless ? nil : feedbacks.feedback(shard: k, chunk: c, step: step, count: values.count)
                return messages.gradient(offset: chunks[c].lowerBound, values: values, codec: codec, meta: meta, feedback: feedback)
            }
            // With range owners the chunks go to them and the shard's meta to the coordinator.
            func route(_ c: Int, _ frames: [[UInt8]]) {
                if map != nil, let dataPlane { dataPlane.submit(.chunk(c, frames)) } else { post(.send(frames)) }
            }
            func shardDone(_ meta: GradientMeta) {
                if let frames = messages.shardDone(meta) { post(.send(frames)) }
            }
            func send(_ c: Int, meta: GradientMeta?) {
                // A chunk this worker owns goes to its own reducer as it is (lossless: the same bits).
                if let map, let dataPlane, codec.isLossless, map.owner(ofChunk: c) == welcome.workerID {
                    let range = chunks[c]
                    let header = messages.ownGradientHeader(offset: range.lowerBound, count: range.count)
                    dataPlane.submit(.ownChunk(c, header, Array(UnsafeBufferPointer(rebasing: buffer[range]))))
                    return
                }
                route(c, encode(c, meta: map == nil ? meta : nil))
            }
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
                    let frames = encode(last, meta: map == nil ? meta : nil)
                    feedbacks.save(shard: k, step: step + 1, chunks: chunks, directory: dir)
                    route(last, frames)
                } else {
                    send(last, meta: meta)
                }
                if map != nil { shardDone(meta) }
            }
        }
    }
}
