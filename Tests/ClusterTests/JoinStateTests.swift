import Cluster
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
}
