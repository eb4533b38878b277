@testable import Cluster
import Foundation
import Testing
import Wire

/// A joining worker gets the coordinator's full state only when its own replica differs. At the
/// start of a run every worker builds the same seeded state, so none is sent (at 8 simulated
/// hosts that was 8 x 40 MB on one link before the first step).
@Suite(.serialized, .timeLimit(.minutes(10))) struct JoinStateTests {
    let n = 2048, shards = 4, steps = 6

    @Test func freshWorkersKeepTheSeededStateTheyBuilt() throws {
        let net = InMemoryNetwork()
        let workload = ToyCoordinatorWorkload(n: n, steps: steps, shards: shards)
        let threads = (0..<2).map { WorkerThread(transport: net.connect(identity: "w\($0)/1"), name: "w\($0)", n: n, shards: shards) }
        let c = try Coordinator(workload: workload, transport: net.server(), options: coordinatorOptions(minWorkers: 2),
                                checkpoints: nil, incarnation: 1, logger: silentLogger())
        try c.run()
        for t in threads { #expect((try? t.wait()?.get()) == .finished) }
        #expect(c.stats.joins == 2 && c.stats.statesKept == 2 && c.stats.repairs == 0)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
    }

    @Test func aWorkerBuiltDifferentlyGetsTheFullState() throws {
        let net = InMemoryNetwork()
        let workload = ToyCoordinatorWorkload(n: n, steps: steps, shards: shards)
        let same = WorkerThread(transport: net.connect(identity: "same/1"), name: "same", n: n, shards: shards)
        let other = WorkerThread(transport: net.connect(identity: "other/1"), name: "other", n: n, shards: shards, startsElsewhere: true)
        let c = try Coordinator(workload: workload, transport: net.server(), options: coordinatorOptions(minWorkers: 2),
                                checkpoints: nil, incarnation: 1, logger: silentLogger())
        try c.run()
        #expect((try? same.wait()?.get()) == .finished)
        #expect((try? other.wait()?.get()) == .finished)
        // Had the differing worker kept its replica, its gradients would differ and the result with them.
        #expect(c.stats.joins == 2 && c.stats.statesKept == 1 && c.stats.repairs == 0)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
    }

    /// A "keep" that names a replica the worker does not hold (a bad or stale message) is not
    /// obeyed: the worker reports itself out of sync (which gets it the full state) instead of
    /// computing on parameters the coordinator does not have. Driven by hand as the coordinator.
    @Test func aKeepForAnotherReplicaIsAnsweredWithAChecksumReport() throws {
        let net = InMemoryNetwork()
        let server = net.server()
        let worker = WorkerThread(transport: net.connect(identity: "w/1"), name: "w", n: n, shards: shards)
        func next(_ type: MessageType) throws -> (PeerID, Message) {
            for _ in 0..<100 {
                guard let (peer, frames) = try server.receive(timeout: 0.1) else { continue }
                let m = try Message.decode(frames: frames, limits: toyLimits)
                if m.header.type == type { return (peer, m) }
            }
            throw ClusterError("no \(type) from the worker within 10 s")
        }
        func header(_ type: MessageType) -> MessageHeader {
            MessageHeader(type: type, runID: 42, coordinatorIncarnation: 1, senderID: 0, senderIncarnation: 1)
        }
        let (peer, _) = try next(.hello)
        let welcome = WelcomeBody(runID: 42, workerID: 1, workloadSpec: [], datasetHash: "toy-data", shardCount: shards, codec: "lz4",
                                  heartbeatInterval: 0.1, coordinatorTimeout: 3, chunkOffsets: toyChunks(n).map(\.lowerBound))
        try server.send(try Message.control(header(.welcome), body: welcome).frames(), to: peer)
        let (_, join) = try next(.hello)
        let held = try #require(try join.decodeJSON(HelloBody.self, limits: toyLimits).replica)
        #expect(held.version == 0)
        let wrong = ReplicaDigest(version: 0, digest: held.digest ^ 1)
        let keep = try #require(StateMeta.keepMessage(header(.parameters), digest: wrong, parameterChecksum: 0, limits: toyLimits))
        try server.send(keep.frames(), to: peer)
        let (_, report) = try next(.checksumReport)
        let body = try report.decodeJSON(ChecksumReportBody.self, limits: toyLimits)
        #expect(body.reason.contains("told to keep"), "\(body.reason)")
        try server.send(try Message.control(header(.shutdown), body: ShutdownBody(reason: "test over", success: true)).frames(), to: peer)
        #expect((try? worker.wait()?.get()) == .finished)
    }
}
