import Foundation
import Logging
import TensorCore
import Wire

/// The coordinator's side of the sharded reduction (`CoordinatorOptions.rangeOwners` > 0):
/// it plans which workers own which ranges (`RangeOwnerMap`), sends the map in every assign,
/// counts each shard as done from the worker's `shardDone`, and takes each reduced chunk from
/// its owner into its own buffer: the step is complete when every chunk and every shard is in,
/// and its replica, checkpoints, joiners and repairs work as with its own reduction. An owner
/// that leaves mid-step moves its ranges to survivors and the step is computed again under the
/// new map (gradients are deterministic: the same bits).
extension Coordinator {
    var shardsGoToOwners: Bool { current?.ownerMap != nil }

    /// Shard k of the step in flight is in (its gradient reduced here, or reported done).
    func shardIsIn(_ k: Int, _ state: StepState) -> Bool {
        state.ownerMap != nil ? state.metaCounted[k] : reducer.isComplete(shard: k)
    }

    /// The owner map of a step: the previous one while its owners are all live and as many as
    /// wanted, else the first `rangeOwners` live workers. Nil (the coordinator reduces) when the
    /// option is 0 or some live worker has no data address (started without `--data-bind`: it
    /// could neither send chunks to owners nor take shards of an owned step).
    func planOwners(_ state: inout StepState, previous: RangeOwnerMap?) {
        state.ownerMap = nil
        state.ownersBody = nil
        state.updates = []
        guard options.rangeOwners > 0 else { return }
        let candidates = members.live
        if let plain = candidates.first(where: { $0.dataAddress == nil }) {
            if ownerMap != nil || !toldNoOwners {
                logger.notice("the coordinator reduces this step: a worker has no data endpoint (start every worker with --data-bind for range owners)",
                              metadata: ["worker": "\(plain.label)", "step": "\(state.step)"])
                toldNoOwners = true
            }
            ownerMap = nil
            return
        }
        let wanted = min(options.rangeOwners, candidates.count, plan.count)
        guard wanted > 0 else { return }
        let live = Set(candidates.map(\.id))
        var map = previous
        if map == nil || !map!.owners.allSatisfy(live.contains) || map!.owners.count != wanted {
            // Generations only grow: workers take a map only if it is newer than theirs.
            let next = max(previous?.generation ?? 0, ownerMap?.generation ?? 0) &+ 1
            map = try? RangeOwnerMap(plan: plan, owners: candidates.prefix(wanted).map(\.id), generation: next)
        }
        guard let map else { return }
        var addresses: [UInt32: String] = [:]
        for w in candidates { addresses[w.id] = w.dataAddress }
        // A worker on this coordinator's host relays every reduced chunk over that host's
        // loopback instead of each owner sending its range across its link.
        // Owners apply the optimiser when every worker can and the parameters they send keep
        // their bits (a lossless codec). Then the workers receive parameters, not reduced
        // gradients, and there is nothing to relay: each owner sends the coordinator its own.
        let ownersApply = options.ownersApply && codec.isLossless && candidates.allSatisfy(\.ownerOptimizer)
            && !map.owners.contains(0)
        let relay = ownersApply ? nil : options.host.flatMap { host in candidates.first { $0.dataAddress.flatMap(endpointHost) == host }?.id }
        if options.ownersApply && ownersAppliedLast != ownersApply {
            let why = ownersApply ? "each range owner applies it to its ranges and sends the workers the new parameters"
                : !codec.isLossless ? "the codec is lossy: every worker applies it to the reduced gradients"
                : "a worker cannot apply it to its ranges (an older build or the Python worker): every worker applies it to the reduced gradients"
            logger.notice("optimiser: \(why)", metadata: ["step": "\(state.step)"])
        }
        ownersAppliedLast = ownersApply
        state.ownerMap = map
        state.ownersBody = RangeOwnersBody(map: map, addresses: addresses, receivers: candidates.compactMap(\.dataAddress),
                                           relay: relay, ownersApply: ownersApply ? true : nil)
        state.updates = [Message?](repeating: nil, count: plan.count)
        ownerMap = map
    }

    /// A worker left before every reduced range of the step in flight reached this coordinator,
    /// and it owned a range, relayed them, or computed shards of the step: the step starts again
    /// under a new map without it (its ranges go to survivors). True if it did.
    ///
    /// A worker that only computed shards counts too: it reports a shard done once its chunks are
    /// handed to its data socket, not delivered, so a kill -9 can lose a chunk on its way to an
    /// owner after the report reached this coordinator. That owner then waits for the chunk
    /// forever while no shard is pending anywhere, so no deadline fires (a hang of
    /// scripts/fault-injection worker-restart, 2 runs in 32). The map's generation always changes,
    /// so every owner reduces the step afresh from the recomputed shards (the same bits).
    func restartStepWithout(_ record: WorkerRecord) -> Bool {
        guard var state = current, let map = state.ownerMap,
              map.owners.contains(record.id) || state.ownersBody?.relay == record.id || state.owner.contains(record.peer),
              state.updates.contains(where: { $0 == nil }) else {
            if let map = ownerMap, map.owners.contains(record.id) { ownerMap = map.forgetting(record.id) }
            return false
        }
        logger.warning("range owner left mid-step: its ranges move, the step is computed again", metadata: [
            "worker": "\(record.label)", "step": "\(state.step)", "generation": "\(map.generation)"])
        event(.reassign, worker: record.label, "range owner left: step \(state.step) computed again under a new owner map")
        count { $0.ownerRestarts += 1 }
        reducer.reset()
        let shards = workload.shardCount
        state.owner = [PeerID?](repeating: nil, count: shards)
        state.metaCounted = [Bool](repeating: false, count: shards)
        state.loss = 0
        state.terms = [:]
        state.computeSeconds = 0
        state.sumOfSquares = 0
        state.bytesIn = 0
        for w in members.all { w.pending = [] }
        // Not `map.forgetting(record.id)` as the previous map: for a worker that owned nothing it
        // is the same map, and owners that had already sent their ranges would not send them again.
        ownerMap = map.forgetting(record.id)
        planOwners(&state, previous: nil)
        current = state
        reassign(Array(0..<shards), reason: "\(record.label) owned a range")
        configureIdleOwners()
        return true
    }

    /// Every live worker that is not a receiver of the step's map (joined mid-step) gets the
    /// reduced chunks from here.
    func forwardUpdate(_ message: Message, state: StepState) {
        let receivers = Set(state.ownersBody?.receivers ?? [])
        for w in members.live where !(w.dataAddress.map(receivers.contains) ?? false) {
            if !send(message, to: w) { logger.debug("update not forwarded", metadata: ["worker": "\(w.label)"]) }
        }
    }

    /// A reduced chunk from its owner.
    func handleReducedChunk(_ peer: PeerID, _ message: Message) {
        let h = message.header
        guard let record = members[peer], record.joined else {
            count { $0.unknownPeers += 1 }
            return
        }
        guard var state = current, let map = state.ownerMap, h.step == UInt64(state.step),
              h.parameterVersion == UInt64(workload.version + 1), h.generation == map.generation else {
            count { $0.staleMessages += 1 }
            return
        }
        guard let c = plan.chunk(keyOffset: h.keyOffset, keyCount: h.keyCount) else {
            count { $0.framesRejected["keyRange", default: 0] += 1 }
            return
        }
        guard (state.ownersBody?.relay ?? map.owner(ofChunk: c)) == record.id, state.updates[c] == nil else {
            count { $0.duplicateGradients += 1 }
            return
        }
        let sum = reducer.reduced(chunk: c)
        do {
            try message.decodeTensor(into: sum)
        } catch {
            count { $0.framesRejected[error.kind, default: 0] += 1 }
            drop(record, reason: "sent an undecodable reduced chunk: \(error)")
            return
        }
        if let bad = firstNonFinite(sum.baseAddress!, sum.count) {
            count { $0.nonFiniteGradients += 1 }
            fatal = ClusterError("step \(state.step): the reduced gradient is not finite (element \(plan[c].lowerBound + bad)): the model diverged or the data holds extreme values; lower the learning rate or check the data")
            return
        }
        let norm = euclideanNorm(sum.baseAddress!, sum.count)
        state.sumOfSquares += norm * norm
        state.bytesIn += message.payload.count
        state.updates[c] = message
        if map.owner(ofChunk: c) != record.id { count { $0.relayedChunks += 1 } }
        current = state
        forwardUpdate(message, state: state)
        if ownedStepIsDone(state) { completeStep() }
    }

    /// A worker's report that it sent every chunk of a shard to the owners, with the shard's loss.
    func handleShardDone(_ peer: PeerID, _ message: Message) {
        let h = message.header
        guard let record = joinedMember(peer, sending: "report") else { return }
        guard var state = current, state.ownerMap != nil, h.step == UInt64(state.step), h.parameterVersion == UInt64(workload.version),
              h.shardCount == UInt64(workload.shardCount), h.shard < UInt32(workload.shardCount) else {
            count { $0.staleMessages += 1 }
            return
        }
        let k = Int(h.shard)
        guard state.owner[k] == peer, h.generation == state.assignedGeneration[k], !state.metaCounted[k] else {
            count { $0.staleMessages += 1 }
            return
        }
        guard let meta = try? message.decodeJSON(GradientMeta.self, limits: options.limits) else {
            count { $0.framesRejected["badShardDone", default: 0] += 1 }
            return
        }
        countMeta(meta, shard: k, state: &state)
        record.pending.remove(k)
        current = state
        if ownedStepIsDone(state) { completeStep() }
    }

    func ownedStepIsDone(_ state: StepState) -> Bool {
        state.ownerMap != nil && state.metaCounted.allSatisfy { $0 } && state.updates.allSatisfy { $0 != nil }
    }
}

/// The host of a `tcp://HOST:PORT` endpoint (nil for other schemes).
public func endpointHost(_ endpoint: String) -> String? {
    guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":") else { return nil }
    let host = endpoint[endpoint.index(endpoint.startIndex, offsetBy: 6)..<colon]
    return host.isEmpty ? nil : String(host)
}
