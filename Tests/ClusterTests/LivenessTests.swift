import Cluster
import Foundation
import Testing
import Wire

/// A worker is silent only if nothing from it was in the queue when the coordinator last read
/// the queue to the end: heartbeats that wait unread behind other messages (the coordinator was
/// busy) are not silence. Scripted workers, in-memory transport, fake clock (one tick of 1 ms
/// per message read).
@Suite(.serialized, .timeLimit(.minutes(10))) struct LivenessTests {
    let n = 96, shards = 4, steps = 4

    @Test func heartbeatsQueuedBehindABacklogOfMessagesAreNotSilence() throws {
        let net = InMemoryNetwork(queueLimit: 20_000)
        let server = ScriptedServer(network: net, clock: FakeClock(), timeLimit: 120)
        let a = ScriptedWorker(network: net, name: "a", n: n), b = ScriptedWorker(network: net, name: "b", n: n)
        server.workers = [a, b]
        let (c, workload) = try scriptedCoordinator(steps: steps, shards: shards, n: n, network: net, server: server, minWorkers: 2)
        // At step 2, b floods the queue with 5000 heartbeats: reading them takes 5 fake seconds,
        // five heartbeat timeouts, while a's heartbeats wait behind them.
        var flooded = false
        b.onAssign = { w, body, _ in
            if body.step == 2 && !flooded {
                flooded = true
                let beat = Message(header: w.header(.heartbeat))
                for _ in 0..<5000 { try? w.client.send(beat.frames()) }
            }
            return false
        }
        let events = EventLog()
        c.onEvent = { events.append($0) }
        a.probe()
        b.probe()
        try c.run()
        #expect(flooded && !server.stalled)
        #expect(c.stats.drops == 0, "\(events.all.filter { $0.kind == .drop }.map(\.detail))")
        #expect(workload.version == steps)
        #expect(bits(workload.state.p) == bits(toyReference(n: n, steps: steps, shards: shards)))
    }
}
