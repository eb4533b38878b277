import Cluster
import Foundation
import Testing
import Wire

/// A gradient counts only under the assignment it answers: every `assign` carries a new header
/// generation, gradients echo it, and chunks of an earlier assignment of the same shard to the
/// same worker are stale. Scripted worker, in-memory transport, fake clock.
@Suite(.serialized, .timeLimit(.minutes(10))) struct StaleAssignmentTests {
    let n = 96, shards = 4, steps = 3

    /// One worker whose first computation of shard 0 is NaN in every chunk (a diverged
    /// computation is NaN everywhere). The coordinator rejects the first chunk and gives the
    /// shard back to the same worker, the only one. The other poisoned chunks, already on their
    /// way, answer the earlier assignment: they are stale, not two more failed attempts. (Before
    /// the generation was checked, the three chunks counted as three attempts and the run
    /// stopped with "the model diverged" after a single bad computation.)
    @Test func chunksOfAnEarlierAssignmentDoNotCountAsMoreAttempts() throws {
        let net = InMemoryNetwork(queueLimit: 10_000)
        let server = ScriptedServer(network: net, clock: FakeClock(), timeLimit: 60)
        let worker = ScriptedWorker(network: net, name: "w", n: n)
        server.workers = [worker]
        let (c, workload) = try scriptedCoordinator(steps: steps, shards: shards, n: n, network: net, server: server)
        var poisoned = false
        var generations: [UInt32] = []
        worker.onAssign = { w, body, header in
            generations.append(header.generation)
            guard !poisoned, body.shards.contains(0) else { return false }
            poisoned = true
            for m in w.gradientMessages(body, header) {
                guard m.header.shard == 0 else { w.send(m); continue }
                let nan = [Float](repeating: .nan, count: Int(m.header.keyCount))
                w.send(nan.withUnsafeBufferPointer { Message(header: m.header, tensor: $0, codec: RawCodec(), meta: m.meta) })
            }
            w.lastSentStep = body.step
            return true
        }
        worker.probe()
        try c.run()
        #expect(!server.stalled)
        #expect(c.stats.nonFiniteGradients == 1, "\(c.stats)")
        #expect(c.stats.staleMessages >= 2, "\(c.stats)")
        #expect(workload.version == steps)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
        // Every assignment had a generation of its own.
        #expect(Set(generations).count == generations.count && generations.count >= steps + 1)
    }
}
