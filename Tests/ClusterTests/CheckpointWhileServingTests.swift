@testable import Cluster
import Foundation
import Testing
import Wire

/// Checkpoints are written on a thread of their own: the coordinator keeps sending heartbeats
/// (and running the next step) meanwhile. A write slower than the workers' coordinator timeout
/// (3 s here) once made every worker decide the coordinator was gone and register again (the
/// 16 s final checkpoint at 8 simulated hosts, scripts/netsim).
@Suite(.serialized, .timeLimit(.minutes(10))) struct CheckpointWhileServingTests {
    let n = 96, shards = 2, steps = 4

    @Test func slowCheckpointWritesDoNotSilenceTheCoordinator() throws {
        let dir = NSTemporaryDirectory() + "ambient-slow-ckpt-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let net = InMemoryNetwork()
        let store = try CheckpointStore(directory: dir, keep: 3)
        var o = coordinatorOptions()
        o.checkpointEvery = 2
        let workload = ToyCoordinatorWorkload(n: n, steps: steps, shards: shards)
        let worker = WorkerThread(transport: net.connect(identity: "w/1"), name: "w", n: n, shards: shards, delay: 0.005)
        let c = try Coordinator(workload: workload, transport: net.server(), options: o, checkpoints: store, incarnation: 1,
                                logger: silentLogger())
        c.writeCheckpointFile = { store, snapshot, step in
            usleep(3_500_000)   // longer than the workers' coordinator timeout (3 s)
            return try store.write(snapshot, step: step)
        }
        let events = EventLog()
        c.onEvent = { events.append($0) }
        try c.run()
        #expect((try? worker.wait()?.get()) == .finished)
        let kinds = events.all.map(\.kind)
        #expect(!kinds.contains(.reject) && !kinds.contains(.drop), "\(events.all.map { "\($0.kind): \($0.detail)" })")
        #expect(c.stats.checkpoints == 2 && store.list().map(\.step).sorted() == [2, 4])
        #expect(events.all.filter { $0.kind == .checkpoint }.map(\.step) == [2, 4])
        #expect(c.stats.joins == 1)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
    }

    @Test func aFailedCheckpointStopsTheRunWithItsError() throws {
        let dir = NSTemporaryDirectory() + "ambient-failed-ckpt-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let net = InMemoryNetwork()
        let store = try CheckpointStore(directory: dir, keep: 3)
        var o = coordinatorOptions()
        o.checkpointEvery = 2
        let workload = ToyCoordinatorWorkload(n: n, steps: 8, shards: shards)
        let worker = WorkerThread(transport: net.connect(identity: "w/1"), name: "w", n: n, shards: shards, delay: 0.005)
        let c = try Coordinator(workload: workload, transport: net.server(), options: o, checkpoints: store, incarnation: 1,
                                logger: silentLogger())
        c.writeCheckpointFile = { _, _, step in throw ClusterError("disk full at step \(step)") }
        #expect(throws: ClusterError.self) { try c.run() }
        #expect((try? worker.wait()?.get()) == .stopped("disk full at step 2"))
        #expect(workload.version < 8)
    }
}

final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [ClusterEvent] = []
    func append(_ e: ClusterEvent) { lock.lock(); events.append(e); lock.unlock() }
    var all: [ClusterEvent] { lock.lock(); defer { lock.unlock() }; return events }
}
