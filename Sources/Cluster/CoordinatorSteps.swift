import Foundation
import Logging
import TensorCore
import Wire

/// The coordinator's step machine: assignment, reassignment, gradients into the shard-order
/// reducer, the chunk-by-chunk update broadcast, the end of a step, checkpoints and deadlines.
extension Coordinator {
    func startStepIfPossible(_ now: Double) {
        let needed = workload.version == 0 ? options.minWorkers : 1
        // Not past the last step: the loop that completed it used to assign one more step that
        // nobody waited for, and the workers computed it while the final checkpoint was written.
        guard workload.version < workload.totalSteps, members.live.count >= max(needed, 1) else { return }
        reducer.reset()
        var state = StepState(step: workload.version, shards: workload.shardCount, now: now, deadline: now + options.initialStepDeadline)
        planOwners(&state, previous: ownerMap)
        current = state
        for (w, shards) in members.roundRobin(shards: workload.shardCount) {
            assign(shards, to: w)
        }
        configureIdleOwners()
        StepTrace.mark("coordinator", "assigned", step: state.step)
        updateDeadline(now)
    }

    /// Owners (and the relay) of the step's map that compute no shard still need the map (an
    /// empty assign).
    func configureIdleOwners() {
        guard let map = current?.ownerMap else { return }
        let relay = current?.ownersBody?.relay
        for w in members.live where (map.owners.contains(w.id) || w.id == relay) && w.pending.isEmpty { assign([], to: w) }
    }

    /// Sends `shards` to `record` in one `assign` with a new generation, which its gradients
    /// must echo.
    func assign(_ shards: [Int], to record: WorkerRecord) {
        guard members.isCurrent(record), record.joined else {
            // Forgotten while this assignment was planned (a send to it failed): to the others.
            reassign(shards, reason: "\(record.label) left")
            return
        }
        guard var state = current else { return }
        let now = clock.now()
        generation &+= 1
        for k in shards {
            state.owner[k] = record.peer
            state.assignedAt[k] = now
            state.assignedGeneration[k] = generation
        }
        current = state
        record.pending.formUnion(shards)
        // Under owners that apply the optimiser, an owner needs current moments for its ranges:
        // the full state first (after a change of map; messages on its connection stay in order).
        if state.ownersBody?.ownersApply == true, let map = state.ownerMap,
           record.staleMoments.contains(where: { map.owner(ofChunk: $0) == record.id }) {
            count { $0.momentRefreshes += 1 }
            guard sendParameters(to: record) else { return }
        }
        let body = AssignBody(step: state.step, shards: shards, parameterVersion: workload.version,
                              parameterChecksum: parameterChecksum, owners: state.ownersBody)
        guard let m = try? Message.control(header(.assign, step: state.step, version: workload.version), body: body),
              send(m, to: record) else {
            drop(record, reason: "unreachable while assigning shards \(shards)")
            return
        }
    }

    /// Gives shards without a live owner to the least-loaded live workers.
    func assignOrphans() {
        guard let state = current else { return }
        let orphans = (0..<state.owner.count).filter { k in
            !shardIsIn(k, state) && (state.owner[k].map { members[$0]?.joined != true } ?? true)
        }
        guard !orphans.isEmpty else { return }
        reassign(orphans, reason: "no owner")
    }

    func reassign(_ shards: [Int], reason: String, avoiding: PeerID? = nil) {
        // A step reduced by range owners goes only to workers that can reach them (one that
        // joined mid-step without a data endpoint waits for the next step).
        let owned = current?.ownerMap != nil
        let plan = members.leastLoaded(shards, avoiding: avoiding) { !owned || $0.dataAddress != nil }
        guard !plan.isEmpty else {
            if var state = current {
                for k in shards { state.owner[k] = nil }
                current = state
            }
            logger.warning("no live worker to take shards", metadata: ["step": "\(current?.step ?? -1)", "shards": "\(shards)"])
            return
        }
        count { $0.reassignedShards += shards.count }
        for (w, ks) in plan {
            logger.warning("reassigning shards", metadata: ["step": "\(current?.step ?? -1)", "shards": "\(ks)", "to": "\(w.label)", "reason": "\(reason)"])
            event(.reassign, worker: w.label, "shards \(ks): \(reason)")
            assign(ks, to: w)
        }
        updateDeadline(clock.now())
    }

    func handleGradient(_ peer: PeerID, _ message: Message) {
        let h = message.header
        guard let record = joinedMember(peer, sending: "gradient") else { return }
        guard var state = current, state.ownerMap == nil else {
            count { $0.staleMessages += 1 }
            return
        }
        let k: Int, c: Int
        switch state.classify(h, from: peer, version: workload.version, plan: plan, reducer: reducer) {
        case .stale:
            count { $0.staleMessages += 1 }
            logger.debug("dropped stale gradient", metadata: ["worker": "\(record.label)", "step": "\(h.step)", "shard": "\(h.shard)",
                                                              "version": "\(h.parameterVersion)", "generation": "\(h.generation)"])
            return
        case .keyRange:
            count { $0.framesRejected["keyRange", default: 0] += 1 }
            return
        case .duplicate:
            count { $0.duplicateGradients += 1 }
            logger.debug("dropped duplicate gradient", metadata: ["worker": "\(record.label)", "step": "\(h.step)", "shard": "\(h.shard)"])
            return
        case let .accept(shard, chunk):
            (k, c) = (shard, chunk)
        }
        let range = plan[c]
        let values = UnsafeMutableBufferPointer(start: scratch, count: range.count)
        do {
            try message.decodeTensor(into: values)
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
        state.bytesIn += message.payload.count
        // The meta frame travels on each shard's last chunk: the shard's loss, and its timing.
        if !state.metaCounted[k], let meta = try? message.decodeMeta(GradientMeta.self, limits: options.limits) {
            countMeta(meta, shard: k, state: &state)
        }
        let chunkReduced = reducer.add(shard: k, chunk: c, UnsafeBufferPointer(values))
        if reducer.isComplete(shard: k) { record.pending.remove(k) }
        let unreachable = chunkReduced ? completeChunk(c, state: &state) : []
        current = state
        // Dropped only now that the step's state is saved: a drop reassigns shards, and owners
        // changed inside completeChunk were overwritten by `state` above, so the new owner's
        // gradients counted as duplicates and it was dropped at the deadline too.
        for w in unreachable { drop(w, reason: "unreachable while sending the update of step \(state.step)") }
        if reducer.isDone { completeStep() }
    }

    /// Counts a shard's meta (its loss and timing) once.
    func countMeta(_ meta: GradientMeta, shard k: Int, state: inout StepState) {
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
        if state.step > firstStep { deadlines.record(turnaround: turnaround) }
        logger.debug("shard done", metadata: ["step": "\(state.step)", "shard": "\(k)",
                                              "since_start_ms": "\(Int((clock.now() - state.startedAt) * 1000))",
                                              "compute_ms": "\(Int(computeSeconds * 1000))"])
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

    /// Chunk c of the reduced gradient is complete: broadcast it at once, so its transfer and
    /// the workers' optimiser step on it overlap the chunks still to come. (The coordinator
    /// applies the whole step at its end, so its own state is always at one version: joiners
    /// and checkpoints see a consistent state.)
    /// Returns the workers found unreachable, for the caller to drop once `state` is saved.
    private func completeChunk(_ c: Int, state: inout StepState) -> [WorkerRecord] {
        let message = updateMessage(chunk: c, step: state.step)
        let sum = reducer.reduced(chunk: c)
        if !codec.isLossless {
            try? message.decodeTensor(into: sum, codec: codec)
        }
        let norm = euclideanNorm(sum.baseAddress!, sum.count)
        state.sumOfSquares += norm * norm
        var unreachable: [WorkerRecord] = []
        for w in members.live {
            if send(message, to: w) { state.bytesOut += message.payload.count } else { unreachable.append(w) }
        }
        return unreachable
    }

    /// The update message of chunk c of the current step (encoded from the reduced sum).
    func updateMessage(chunk c: Int, step: Int) -> Message {
        var h = header(.update, step: step, version: step + 1)
        h.keyOffset = UInt64(plan[c].lowerBound)
        return Message(header: h, tensor: UnsafeBufferPointer(reducer.reduced(chunk: c)), codec: codec)
    }

    func completeStep() {
        guard let state = current else { return }
        StepTrace.mark("coordinator", "reduced", step: state.step)
        workload.apply(gradient: reducer.total, range: 0..<workload.parameterCount)
        workload.finishStep()
        StepTrace.mark("coordinator", "applied", step: state.step)
        parametersCache = nil
        replicaDigestCache = nil
        parameterChecksum = workload.parameterChecksum
        StepTrace.mark("coordinator", "checksummed", step: state.step)
        let now = clock.now()
        logger.debug("step", metadata: ["step": "\(state.step)", "ms": "\(Int((now - state.startedAt) * 1000))"])
        count { $0.stepsCompleted += 1 }
        if let body = state.ownersBody, body.ownersApply == true, let map = state.ownerMap {
            // The receivers took the new parameters of ranges they do not own, not their moments.
            let receivers = Set(body.receivers)
            for w in members.live where w.dataAddress.map(receivers.contains) ?? false {
                w.staleMoments.formUnion((0..<plan.count).filter { map.owner(ofChunk: $0) != w.id })
            }
        }
        current = nil
        let summary = StepSummary(step: state.step, loss: state.loss, terms: state.terms, gradientNorm: state.sumOfSquares.squareRoot(),
                                  seconds: now - state.startedAt,
                                  computeSeconds: state.computeSeconds / Double(max(workload.shardCount, 1)),
                                  workers: members.live.count, bytesIn: state.bytesIn, bytesOut: state.bytesOut)
        do {
            try workload.stepCompleted(summary)
        } catch {
            fatal = ClusterError("step \(state.step): \(error)")
            return
        }
        if checkpoints != nil, options.checkpointEvery > 0, workload.version % options.checkpointEvery == 0,
           workload.version < workload.totalSteps {
            checkpointDue = true   // started by the run loop before the next step
        }
    }

    // MARK: Checkpoints

    /// Takes a snapshot of the current state and writes it on the checkpoint's own thread, once
    /// the previous checkpoint has ended (serving the workers while it is waited for).
    func startCheckpoint(_ store: CheckpointStore) throws {
        try awaitCheckpoint()
        if isAborting { return }
        let snapshot = workload.checkpointSnapshot(), step = workload.version, write = writeCheckpointFile
        checkpointInFlight = CheckpointWriter(step: step, startedAt: clock.now()) { try write(store, snapshot, step) }
    }

    /// Serves the workers (messages, heartbeats, silence) until the checkpoint in flight ends.
    func awaitCheckpoint() throws {
        while checkpointInFlight != nil && !isAborting { try serve() }
    }

    /// Writes a checkpoint of the current state and returns once it is on disk (throws its
    /// error otherwise); the workers are served meanwhile.
    func checkpointNow(_ store: CheckpointStore) throws {
        try startCheckpoint(store)
        try awaitCheckpoint()
        if let error = checkpointError { throw error }
    }

    /// The bookkeeping of a checkpoint whose writing has ended: residual files of steps no
    /// checkpoint keeps are removed, and a failure stops the run.
    func finishCheckpointIfWritten() {
        guard let writer = checkpointInFlight, let outcome = writer.outcome else { return }
        checkpointInFlight = nil
        switch outcome {
        case let .success(path):
            if let dir = options.residualDirectory, let store = checkpoints {
                ResidualFile.prune(directory: dir, keeping: Set(store.list().map(\.step)), before: writer.step)
            }
            count { $0.checkpoints += 1 }
            logger.info("checkpoint", metadata: ["path": "\(path)", "step": "\(writer.step)",
                                                 "seconds": "\(String(format: "%.2f", clock.now() - writer.startedAt))"])
            event(.checkpoint, step: writer.step, "\(path)")
        case let .failure(error):
            checkpointError = error
            fatal = ClusterError("\(error)")
        }
    }

    /// An abort (a simulated crash) lets a write in flight end first, so no thread of this
    /// coordinator touches the store after `run()` has returned.
    func abandonCheckpoint() {
        let deadline = Date().addingTimeInterval(120)
        while let writer = checkpointInFlight, writer.outcome == nil, Date() < deadline { usleep(10_000) }
        checkpointInFlight = nil
    }

    // MARK: Deadlines

    func updateDeadline(_ now: Double) {
        guard var state = current else { return }
        state.deadline = deadlines.deadline(now: now, current: state.deadline, maxLoad: members.live.map(\.pending.count).max() ?? 1)
        current = state
    }

    /// Like silence, lateness is judged when the inbound queue was last empty (a gradient still
    /// unread behind other messages is not late), and not past the newest message from any
    /// worker (`judgedAt`): when nothing arrives from anybody, the step's workers are not late
    /// one by one (at 8 simulated hosts they were all dropped at once, and the step started over).
    func checkDeadline() {
        let now = judgedAt
        guard let state = current, now > state.deadline else { return }
        let late = members.all.filter { !$0.pending.isEmpty }
        for w in late {
            drop(w, reason: String(format: "missed the deadline of step %d (%.1f s after start) with shards %@ pending",
                                   state.step, now - state.startedAt, "\(w.pending.sorted())"))
        }
        if late.isEmpty { updateDeadline(now) }
    }
}
