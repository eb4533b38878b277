import Foundation
import Logging
import TensorCore
import Wire

/// The coordinator's message handling: the byte layer's verdict, run and incarnation checks,
/// registration (probe, join) and the full-state messages that bring a worker in.
extension Coordinator {
    func handle(_ peer: PeerID, _ frames: [[UInt8]]) {
        let message: Message
        do {
            message = try Message.decode(frames: frames, limits: options.limits, sealedLink: transport.sealed)
        } catch {
            count { $0.framesRejected[error.kind, default: 0] += 1 }
            if case let .unsupportedVersion(found, supported) = error {
                // A worker of another build probes forever without an answer it can read: say why
                // where the operator looks (1st, 2nd, 4th, 8th ... such frame, not every probe).
                let seen = stats.framesRejected[error.kind] ?? 0
                if seen.nonzeroBitCount == 1 {
                    logger.warning("a peer speaks another wire protocol version: run the same ambient build on every machine",
                                   metadata: ["peer": "\(peer)", "its version": "\(found)", "this build": "\(supported)",
                                              "frames so far": "\(seen)"])
                }
            }
            logger.debug("rejected frame", metadata: ["peer": "\(peer)", "reason": "\(error)"])
            return
        }
        let h = message.header
        if h.type != .hello && h.runID != options.runID {
            count { $0.framesRejected["wrongRun", default: 0] += 1 }
            // Told to register again, a worker holds nothing: what it owed goes to others now.
            if let known = members[peer] { forget(known, remove: true, reason: "sent a message for another run") }
            reject(peer, label: peer.description, reason: "message for run \(h.runID), this coordinator runs \(options.runID)", rejoin: true)
            return
        }
        members.heard(from: peer, now: clock.now())
        // Gradients and reports answer an assignment of an earlier coordinator incarnation: they
        // were computed (or queued in the socket) before this coordinator started. Answering them
        // with "register again" would reset a worker that has already joined this incarnation,
        // so they are dropped without a reply.
        if [.gradient, .checksumReport, .update, .shardDone].contains(h.type) && h.coordinatorIncarnation != incarnation {
            count { $0.staleMessages += 1 }
            logger.debug("dropped a message for an earlier coordinator incarnation", metadata: [
                "peer": "\(peer)", "type": "\(h.type)", "incarnation": "\(h.coordinatorIncarnation)", "step": "\(h.step)"])
            return
        }
        switch h.type {
        case .hello:
            handleHello(peer, message)
        case .heartbeat:
            if members[peer] == nil {
                count { $0.unknownPeers += 1 }
                reject(peer, label: peer.description, reason: "unknown worker (coordinator restarted or worker dropped): register again", rejoin: true)
            }
        case .gradient:
            handleGradient(peer, message)
        case .update:
            handleReducedChunk(peer, message)
        case .shardDone:
            handleShardDone(peer, message)
        case .checksumReport:
            guard let record = members[peer], record.joined else {
                reject(peer, label: peer.description, reason: "unknown worker: register again", rejoin: true)
                return
            }
            let body = try? message.decodeJSON(ChecksumReportBody.self, limits: options.limits)
            logger.warning("worker out of sync: sending full parameters", metadata: [
                "worker": "\(record.label)", "step": "\(workload.version)", "reason": "\(body?.reason ?? "?")"])
            count { $0.repairs += 1 }
            // It did not compute what it was assigned: the full state first, then those shards
            // again (maybe to it). In that order a reassignment to this worker arrives behind the
            // parameters on its connection and is computed at the right version; reassigned first,
            // a worker that had applied an update the coordinator lacked (its owner died before the
            // coordinator's copy left) got the same shards back at once, was out of sync again,
            // and the two looped without end (scripts/fault-injection worker-kill, debug build).
            let owed = record.pending.sorted()
            record.pending = []
            sendParameters(to: record)
            if !owed.isEmpty { reassign(owed, reason: "\(record.label) is being repaired") }
        case .error:
            let text = String(decoding: message.payload.prefix(2000), as: UTF8.self)
            if let record = members[peer] { drop(record, reason: "worker reported an error: \(text)") }
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
            if let known = members[peer] { forget(known, remove: true, reason: "sent a malformed hello") }
            reject(peer, label: peer.description, reason: "malformed hello: \(error)", rejoin: false)
            return
        }
        guard body.protocolVersion == clusterProtocolVersion else {
            if let known = members[peer] { forget(known, remove: true, reason: "speaks another protocol version") }
            reject(peer, label: body.workerName, reason: "protocol version \(body.protocolVersion), coordinator speaks \(clusterProtocolVersion): use the same ambient build everywhere", rejoin: false)
            event(.reject, worker: body.workerName, "protocol version \(body.protocolVersion)")
            return
        }
        let now = clock.now()
        // A new incarnation of a worker we know under the same name replaces the old one.
        for old in members.namesakes(of: body.workerName, otherThan: peer) {
            drop(old, reason: "replaced by a new incarnation (\(peer))")
        }
        let record = members.admit(peer, name: body.workerName, incarnation: message.header.senderIncarnation, now: now)
        record.dataAddress = body.dataAddress.flatMap { RangeOwnersBody.isDataAddress($0) ? $0 : nil }
        if body.phase == .join { record.ownerOptimizer = body.ownerOptimizer ?? false }
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
                                      chunkOffsets: plan.offsets)
            if !codec.isLossless, options.checkpointEvery > 0, let dir = options.residualDirectory {
                welcome.residualDirectory = dir
                welcome.checkpointEvery = options.checkpointEvery
            }
            if options.rangeOwners > 0 {
                // The sharded reduction is on; the step's map comes with each assign.
                welcome.owners = current?.ownersBody ?? RangeOwnersBody(generation: 0, ranges: [])
                welcome.dataKey = options.dataKey.map { DataKeyBody(publicKey: $0.publicKey, secretKey: $0.secretKey) }
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
            // The worker already holds this coordinator's replica (at the start of a run every
            // worker builds the same seeded state): it is told to keep it.
            let keep = body.replica.flatMap { $0 == replicaDigest() ? $0 : nil }
            if sendParameters(to: record, keep: keep) {
                record.joined = true
                count { $0.joins += 1 }
                let state = keep == nil ? "sent" : "kept its own"
                logger.notice("worker joined", metadata: ["worker": "\(record.label)", "peer": "\(peer)", "host": "\(body.host)",
                                                          "pid": "\(body.pid)", "threads": "\(body.threads)", "step": "\(workload.version)",
                                                          "workers": "\(members.live.count)", "state": "\(state)"])
                event(.join, worker: record.label, "host \(body.host) pid \(body.pid) threads \(body.threads), state \(state)")
                assignOrphans()
            }
        }
    }

    /// Sends the full replica state (parameters and optimiser moments), or, with `keep` (the
    /// worker's join reported this coordinator's current replica), a parameters message without a
    /// tensor telling it to keep its own. At 8 hosts the full state was 8 x 40 MB on host 0's link
    /// before the first step, and a joiner queued behind the others went silent long enough to
    /// register again (docs/benchmarks.md).
    @discardableResult
    func sendParameters(to record: WorkerRecord, keep: ReplicaDigest? = nil) -> Bool {
        guard let m = keep.flatMap({ keepMessage($0) }) ?? parametersMessage() else { return false }
        if keep != nil { count { $0.statesKept += 1 } }
        if !send(m, to: record) {
            drop(record, reason: "unreachable while sending parameters")
            return false
        }
        record.staleMoments = []   // a kept replica has this coordinator's digest, moments included
        // Mid-step: the chunks of the update already broadcast follow, so this worker reaches
        // the next version with everyone else.
        if let state = current, state.ownerMap != nil {
            for m in state.updates.compactMap({ $0 }) where !send(m, to: record) {
                drop(record, reason: "unreachable while catching up")
                return false
            }
        } else if let state = current {
            for c in 0..<plan.count where reducer.isReduced(chunk: c) {
                if !send(updateMessage(chunk: c, step: state.step), to: record) {
                    drop(record, reason: "unreachable while catching up")
                    return false
                }
            }
        }
        return true
    }

    /// This coordinator's replica digest at the current version, computed once per version.
    func replicaDigest() -> ReplicaDigest {
        if let cached = replicaDigestCache, cached.version == workload.version { return cached }
        let d = ReplicaDigest(version: workload.version, digest: workload.replicaSnapshot().digest)
        replicaDigestCache = d
        return d
    }

    /// A parameters message without a tensor: keep the replica `digest` names.
    func keepMessage(_ digest: ReplicaDigest) -> Message? {
        StateMeta.keepMessage(header(.parameters, step: workload.version, version: workload.version), digest: digest,
                              parameterChecksum: workload.parameterChecksum, limits: options.limits)
    }

    /// The full replica state at the current version as one message, built once per version:
    /// joiners at the same version (8 at the start of a run at 8 hosts) get the same bytes
    /// without the state being copied, compressed and checksummed again for each.
    func parametersMessage() -> Message? {
        if let cached = parametersCache, cached.version == workload.version { return cached.message }
        let snapshot = workload.replicaSnapshot()
        var flat: [Float] = []
        flat.reserveCapacity(snapshot.elementCount)
        for s in snapshot.sections { flat += s.values }
        let meta = StateMeta(sections: snapshot.sections.map(\.name), counts: snapshot.sections.map(\.values.count),
                             counters: snapshot.counters, parameterChecksum: workload.parameterChecksum)
        guard let metaBytes = try? Message.jsonPayload(meta, maxBytes: options.limits.maxJSONBytes) else { return nil }
        let m = flat.withUnsafeBufferPointer {
            // Always lossless: a replica must start bitwise equal to the coordinator's state.
            Message(header: header(.parameters, step: workload.version, version: workload.version), tensor: $0,
                    codec: LZ4Codec(), meta: metaBytes)
        }
        parametersCache = (workload.version, m)
        return m
    }
}

extension Coordinator {
    /// The joined member behind `peer`; otherwise the message is counted as from an unknown peer,
    /// the peer is told to register again, and nil is returned.
    func joinedMember(_ peer: PeerID, sending what: String) -> WorkerRecord? {
        if let record = members[peer], record.joined { return record }
        count { $0.unknownPeers += 1 }
        reject(peer, label: peer.description, reason: "\(what) from an unregistered worker: register again", rejoin: true)
        return nil
    }
}

extension StateMeta {
    /// The parameters message that tells a joining worker to keep its replica (`digest`, as its
    /// join reported it): a tensor message of zero values (so it passes the same header checks
    /// as a full state) whose meta carries `keep`.
    public static func keepMessage(_ header: MessageHeader, digest: ReplicaDigest, parameterChecksum: UInt64,
                                   limits: WireLimits) -> Message? {
        let meta = StateMeta(sections: [], counts: [], counters: [:], parameterChecksum: parameterChecksum, keep: digest)
        guard let metaBytes = try? Message.jsonPayload(meta, maxBytes: limits.maxJSONBytes) else { return nil }
        return [Float]().withUnsafeBufferPointer { Message(header: header, tensor: $0, codec: LZ4Codec(), meta: metaBytes) }
    }
}
